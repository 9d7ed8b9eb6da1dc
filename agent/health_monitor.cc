#include "health_monitor.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "enrollment_steps.h"
#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/log.h"
#include "gateway_agent/tpm/tpm_scheduler.h"

namespace ga {

namespace {

// On its way to ACTIVE (enrolling, or enrolling again).
bool Enrolling(EnrollmentState state) {
  return state == EnrollmentState::kNew || state == EnrollmentState::kKeyed ||
         state == EnrollmentState::kCertified || state == EnrollmentState::kRegistering;
}

// The same state and files: nothing was fed for it in between.
bool SameCredentials(const Identity& a, const Identity& b) {
  return a.state == b.state && a.renewal == b.renewal && a.key_file == b.key_file &&
         a.chain_file == b.chain_file && a.cert_id == b.cert_id;
}

}  // namespace

HealthMonitor::HealthMonitor(Parts parts) : parts_(std::move(parts)) {
  probe_ = std::thread([this] { ProbeTpm(); });
  boundary_ = std::thread([this] { ProbeBoundary(); });
}

HealthMonitor::~HealthMonitor() {
  {
    MutexLock lock(probe_mu_);
    stop_ = true;
  }
  probe_cv_.notify_all();
  probe_.join();
  boundary_.join();
  std::error_code ignored;
  std::filesystem::remove(parts_.report, ignored);
}

bool HealthMonitor::Stopped(std::chrono::steady_clock::duration period) {
  MutexLock lock(probe_mu_);
  if (!stop_) probe_cv_.wait_for(probe_mu_, period);
  return stop_;
}

void HealthMonitor::ProbeTpm() {
  // Key tests (one signature each) never hold up a handshake.
  tpm::TpmWorkScope tpm_work(tpm::TpmWork::kBackground);
  while (!Stopped(kTpmProbeEvery)) {
    // Fails at once while reconnects are paced; its outcome shows in Health().
    if (parts_.tpm->Probe().ok()) TestKeysOfFailingConnections();
  }
}

void HealthMonitor::ProbeBoundary() {
  std::chrono::steady_clock::time_point due{};  // at once
  uint64_t probed_session = 0;
  for (auto wait = std::chrono::seconds(0); !Stopped(wait); wait = kBoundaryRetry) {
    // Again after each new connection of the bridge to the broker: it may
    // have restarted with another configuration.
    const uint64_t session = parts_.bridge->Health().local_sessions;
    const auto now = std::chrono::steady_clock::now();
    if (now < due && session == probed_session) continue;
    auto open = BoundaryWarning();
    // The bridge shows an unreachable broker, and a probe client it refused.
    due = now + (open.ok() ? std::chrono::steady_clock::duration(kBoundaryProbeEvery)
                           : std::chrono::steady_clock::duration(kBoundaryRetry));
    if (!open.ok()) continue;
    probed_session = session;
    MutexLock lock(mu_);
    open_broker_ = std::move(*open);
  }
}

Result<std::optional<std::string>> HealthMonitor::BoundaryWarning() {
  GA_ASSIGN_OR_RETURN(std::optional<std::string> open, LocalBrokerOpenWarning(parts_.local));
  if (open || parts_.credentials == nullptr) return open;
  GA_ASSIGN_OR_RETURN(std::string password,
                      parts_.credentials->Existing(bridge::kBoundaryProbeUser));
  return LocalBrokerConfinementWarning(parts_.local, password);
}

void HealthMonitor::TestKeysOfFailingConnections() {
  bridge::BridgeHealth b = parts_.bridge->Health();
  // With no connection up, the endpoint is what fails (an outage): the keys
  // are not suspects, and a slow TPM has better things to do.
  if (b.cloud_connected == 0) return;
  auto now = std::chrono::steady_clock::now();
  std::vector<Identity> due;
  {
    MutexLock lock(mu_);
    for (auto& [name, w] : watched_) {
      if (due.size() >= kKeyTestsPerProbe) break;
      if (w.check.fault != CredentialFault::kNone || !b.cloud_problems.count(name)) continue;
      if (now < w.next_key_test) continue;
      w.next_key_test = now + kKeyTestEvery;
      due.push_back(w.identity);
    }
  }
  for (const Identity& id : due) {
    auto refused = KeyRefusedByTpm(id);
    if (!refused) continue;
    log::Error(*refused, {{"IDENTITY", id.name}});
    MutexLock lock(mu_);
    auto it = watched_.find(id.name);
    if (it == watched_.end() || !SameCredentials(it->second.identity, id)) continue;
    it->second.check = {CredentialFault::kKey, *refused, nullptr};
  }
}

HealthMonitor::FileStamp HealthMonitor::Stamp(const std::string& path) {
  FileStamp stamp;
  struct stat st {};
  if (path.empty() || stat(path.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.size = st.st_size;
  stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  stamp.inode = static_cast<int64_t>(st.st_ino);
  return stamp;
}

std::optional<std::string> HealthMonitor::KeyRefusedByTpm(const Identity& id) {
  Status usable = KeyUsableInTpm(id, parts_.tpm);
  if (usable.ok() || usable.code() == Code::kNotFound) return std::nullopt;
  return usable.message();
}

void HealthMonitor::Feed(const Identity& id) {
  MutexLock feeding(feed_mu_);
  FeedLocked(id);
}

void HealthMonitor::FeedLocked(const Identity& id) {
  // Stamped before loading: a change made while loading is seen next time.
  FileStamp key = Stamp(id.key_file), chain = Stamp(id.chain_file);
  // The same files, unchanged and good when last loaded (each commit of an
  // ACTIVE identity feeds it again): the bridge keeps what it has, not a
  // second copy of the key and chain (13 KiB an identity).
  std::shared_ptr<const tpm::ClientIdentity> loaded;
  {
    MutexLock lock(mu_);
    auto it = watched_.find(id.name);
    if (it != watched_.end() && SameCredentials(it->second.identity, id) &&
        it->second.check.fault == CredentialFault::kNone && it->second.key == key &&
        it->second.chain == chain) {
      loaded = it->second.check.credentials;
    }
  }
  CredentialCheck check = TellBridge(*parts_.bridge, parts_.tpm, id, parts_.credentials, loaded);
  if (check.fault == CredentialFault::kCertificate) {
    // A certificate that does not fit may be a key that was replaced: a key
    // this TPM cannot use needs a new key, not a new certificate.
    if (auto refused = KeyRefusedByTpm(id)) {
      check.fault = CredentialFault::kKey;
      check.problem = *refused;
    }
  }
  MutexLock lock(mu_);
  if (!Enrolling(id.state)) reenrolling_.erase(id.name);
  if (id.state != EnrollmentState::kActive) {
    watched_.erase(id.name);
    return;
  }
  watched_[id.name] = {id, key, chain, std::move(check)};
}

void HealthMonitor::RecheckFiles() {
  std::vector<Watched> now;
  {
    MutexLock lock(mu_);
    for (const auto& [name, w] : watched_) now.push_back(w);
  }
  for (const Watched& w : now) {
    if (Stamp(w.identity.key_file) == w.key && Stamp(w.identity.chain_file) == w.chain) continue;
    MutexLock feeding(feed_mu_);
    {
      // Fed again since the copy (a renewal's switch, which also deletes the
      // previous files): that feed loaded what the identity uses now.
      MutexLock lock(mu_);
      auto it = watched_.find(w.identity.name);
      if (it == watched_.end() || !SameCredentials(it->second.identity, w.identity)) continue;
    }
    log::Warning("the key or certificate files of identity " + w.identity.name +
                     " changed on disk: loading them again",
                 {{"IDENTITY", w.identity.name}});
    FeedLocked(w.identity);
  }
}

void HealthMonitor::Repair(Enrollment& enrollment) {
  std::vector<Watched> faulty;
  {
    MutexLock lock(mu_);
    for (const auto& [name, w] : watched_) {
      if (w.check.fault != CredentialFault::kNone) faulty.push_back(w);
    }
  }
  auto now = std::chrono::steady_clock::now();
  for (const Watched& w : faulty) {
    auto last = repaired_.find(w.identity.name);
    if (last != repaired_.end() && now - last->second < kRepairSpacing) continue;
    repaired_[w.identity.name] = now;
    EnrollmentState from =
        w.check.fault == CredentialFault::kKey ? EnrollmentState::kNew : EnrollmentState::kKeyed;
    // Shown until it is ACTIVE again: enrolling again forgets the fault
    // (the identity is no longer watched) and takes seconds to minutes.
    {
      MutexLock lock(mu_);
      reenrolling_[w.identity.name] = w.check.problem + "; enrolling it again";
    }
    auto again = enrollment.Reenroll(w.identity.name, from, w.check.problem);
    if (!again.ok()) {
      {
        MutexLock lock(mu_);
        reenrolling_.erase(w.identity.name);
      }
      log::Error("identity " + w.identity.name +
                     " cannot connect and was not enrolled again: " + again.status().message(),
                 {{"IDENTITY", w.identity.name}});
    }
  }
}

void HealthMonitor::ParkRefused(Enrollment& enrollment) {
  bridge::BridgeHealth b = parts_.bridge->Health();
  // With no connection up the endpoint is what fails (an outage).
  if (b.cloud_connected == 0 || b.cloud_refusals.empty()) return;
  const Millis now = NowMillis();
  std::vector<std::pair<Identity, int>> refused;
  {
    MutexLock lock(mu_);
    for (const auto& [name, w] : watched_) {
      auto r = b.cloud_refusals.find(name);
      const Identity& id = w.identity;
      // An expired certificate is turned away too: that one renews by itself.
      if (r == b.cloud_refusals.end() || r->second < kRefusalsToPark || id.cert_not_after <= now ||
          id.renewal != RenewalStep::kNone || id.renewal_asked != 0) {
        continue;
      }
      refused.emplace_back(id, r->second);
    }
  }
  for (const auto& [id, count] : refused) {
    std::string reason = "AWS IoT turns certificate " + id.cert_id + " away (" +
                         std::to_string(count) +
                         " connects in a row closed without CONNACK while other identities "
                         "connect): an operator may have made it INACTIVE or REVOKED, or "
                         "detached it from thing " +
                         id.thing +
                         " or from its policy; it is not renewed behind the operator's back. "
                         "Once that is settled in AWS IoT: gateway-agent renew --identity " +
                         id.name + " --force";
    auto parked = enrollment.ParkRefused(id.name, reason);
    if (parked.ok()) Feed(*parked);  // the bridge lets go of it
  }
}

AgentHealth HealthMonitor::Gather() {
  AgentHealth h;
  h.pid = getpid();
  h.updated = NowMillis();
  if (Status tpm = parts_.tpm->Health(); !tpm.ok()) {
    h.problems.push_back(tpm.message() + " (every TLS handshake and enrollment needs the TPM)");
  }
  bridge::BridgeHealth b = parts_.bridge->Health();
  if (!b.local_problem.empty()) {
    h.problems.push_back(b.local_problem + " (is mosquitto running? [local] in the config)");
  }
  if (!b.outbox_problem.empty()) h.problems.push_back(b.outbox_problem);
  h.identities = std::move(b.cloud_problems);
  for (auto& [name, why] : b.local_client_problems) {
    std::string& shown = h.identities[name];
    shown = shown.empty() ? why : shown + "; " + why;
  }
  MutexLock lock(mu_);
  for (const auto& [name, why] : reenrolling_) h.identities[name] = why;
  for (const auto& [name, w] : watched_) {
    if (w.check.fault == CredentialFault::kNone) continue;
    h.identities[name] = w.check.problem + "; enrolling it again";
  }
  if (open_broker_) h.warnings.push_back(*open_broker_);
  if (h.updated < BuildEpochMillis()) h.problems.push_back(ClockProblem(h.updated));
  return h;
}

const AgentHealth& HealthMonitor::Tick(Enrollment& enrollment) {
  auto now = std::chrono::steady_clock::now();
  if (now >= next_files_check_) {
    next_files_check_ = now + kFilesCheckEvery;
    RecheckFiles();
  }
  Repair(enrollment);
  ParkRefused(enrollment);
  AgentHealth h = Gather();
  for (const auto& p : h.problems) {
    if (std::find(last_.problems.begin(), last_.problems.end(), p) == last_.problems.end()) {
      log::Warning("needs attention: " + p);
    }
  }
  for (const auto& p : last_.problems) {
    if (std::find(h.problems.begin(), h.problems.end(), p) == h.problems.end()) {
      log::Info("resolved: " + p);
    }
  }
  for (const auto& w : h.warnings) {
    if (std::find(last_.warnings.begin(), last_.warnings.end(), w) == last_.warnings.end()) {
      log::Warning(w);
    }
  }
  if (!h.SameAs(last_) || now >= next_write_) {
    next_write_ = now + kHealthHeartbeat;
    if (Status s = WriteHealth(parts_.report, h); !s.ok()) {
      log::Warning("writing the health report for gateway-agent status: " + s.message());
    }
  }
  last_ = std::move(h);
  return last_;
}

}  // namespace ga
