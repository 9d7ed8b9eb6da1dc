#include "gateway_agent/enrollment.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>

#include <cstdlib>

#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace ga {

namespace {

using std::chrono::milliseconds;

// AWS allows 1 CONNECT per second per client id; a margin keeps clock jitter
// from ever making two fall into the same second.
constexpr milliseconds kPerClientIdSpacing{1100};

struct CertFacts {
  std::string id;  // SHA-256 of DER, lowercase hex
  Millis not_after = 0;
  X509Ptr cert;
};

Result<CertFacts> ReadCertificate(const std::string& pem, std::string_view what) {
  GA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, pki::ParseCertificatesPem(pem, what));
  CertFacts f;
  f.cert = std::move(certs.front());
  f.id = pki::AwsCertificateId(f.cert.get());
  f.not_after = std::chrono::duration_cast<std::chrono::milliseconds>(
                    pki::ToTimePoint(X509_get0_notAfter(f.cert.get())).time_since_epoch())
                    .count();
  return f;
}

std::string CrashSpec() {
  const char* v = std::getenv("GATEWAY_AGENT_CRASH_AT");
  return v ? v : "";
}

}  // namespace

void CrashPoint(std::string_view point, std::string_view identity) {
  static const std::string spec = CrashSpec();
  if (spec.empty()) return;
  std::string_view s = spec;
  std::string_view want_point = s.substr(0, s.find(':'));
  std::string_view want_identity =
      s.find(':') == std::string_view::npos ? std::string_view() : s.substr(s.find(':') + 1);
  if (want_point != point) return;
  if (!want_identity.empty() && want_identity != identity) return;
  log::Warning("crash point reached: killing the process", {{"IDENTITY", identity}});
  raise(SIGKILL);
}

std::string EnrollmentCounts::ToString() const {
  std::string s = std::to_string(active) + "/" + std::to_string(total) + " active";
  if (registering) s += ", " + std::to_string(registering) + " registering";
  if (in_progress) s += ", " + std::to_string(in_progress) + " enrolling";
  if (parked) s += ", " + std::to_string(parked) + " parked";
  if (shared) s += ", " + std::to_string(shared) + " over the gateway's connection";
  return s;
}

Enrollment::Enrollment(Options options)
    : options_(std::move(options)),
      account_connects_(options_.config.aws.connect_rate,
                        std::max(1.0, options_.config.aws.connect_rate)),
      rng_(std::random_device{}()) {
  backoff_.initial = options_.config.enrollment.backoff_initial;
  backoff_.max = options_.config.enrollment.backoff_max;
  backoff_.multiplier = options_.config.enrollment.backoff_multiplier;
}

Enrollment::~Enrollment() {
  Stop();
}

std::filesystem::path Enrollment::IdentityDir(const std::string& name) const {
  return options_.config.agent.state_dir / "identities" / name;
}

namespace {

// `identity` moved onto the gateway's connection (SHARED) or back onto its own
// (NEW: a new key and certificate, then JITR).
Identity Reconnected(Identity identity, EnrollmentState state) {
  Identity out;
  out.name = identity.name;
  out.kind = identity.kind;
  out.thing = identity.thing;
  out.state = state;
  out.created = identity.created;
  return out;
}

}  // namespace

Status Enrollment::Load() {
  const Config& c = options_.config;
  std::vector<Identity> wanted;
  Identity gw;
  gw.name = "gateway";
  gw.kind = IdentityKind::kGateway;
  gw.thing = c.agent.thing_name;
  wanted.push_back(gw);
  for (const auto& s : c.sensors) {
    Identity id;
    id.name = s.id;
    id.kind = IdentityKind::kSensor;
    id.thing = c.SensorThingName(s);
    if (s.connection == SensorConnection::kGateway) id.state = EnrollmentState::kShared;
    wanted.push_back(id);
  }
  for (const auto& w : wanted) {
    auto existing = options_.store->Get(w.name);
    if (existing.ok() && existing->state != EnrollmentState::kRemoved) {
      if (existing->thing != w.thing) {
        log::Warning("identity " + w.name + " keeps its enrolled thing name " + existing->thing +
                         "; the config now says " + w.thing +
                         " (remove and add the sensor to change it)",
                     {{"IDENTITY", w.name}});
      }
      bool shared_now = existing->state == EnrollmentState::kShared;
      if (shared_now != (w.state == EnrollmentState::kShared)) {
        GA_RETURN_IF_ERROR(options_.store->Update(Reconnected(*existing, w.state))
                               .With("changing the connection of " + w.name));
      }
      continue;
    }
    if (existing.ok() && w.kind == IdentityKind::kSensor) continue;  // removed at run time
    GA_RETURN_IF_ERROR(options_.store->Add(w).With("adding identity " + w.name));
  }
  GA_ASSIGN_OR_RETURN(std::vector<Identity> all, options_.store->List());
  std::lock_guard lock(mu_);
  identities_.clear();
  size_t shared = 0;
  for (auto& id : all) {
    if (id.state == EnrollmentState::kShared) ++shared;
    identities_[id.name] = std::move(id);
  }
  if (shared > kMaxGatewayConnectionSensors) {
    log::Warning(std::to_string(shared) +
                 " sensors travel over the gateway's connection (some added with sensor add); "
                 "AWS IoT allows 50 subscriptions per connection, so commands for the last " +
                 std::to_string(shared - kMaxGatewayConnectionSensors) +
                 " will be refused: give them connection = \"own\"");
  }
  return Status::Ok();
}

void Enrollment::Start() {
  std::lock_guard lock(mu_);
  stop_ = false;
  for (int i = 0; i < options_.config.enrollment.concurrency; ++i) {
    workers_.emplace_back([this] { Worker(); });
  }
}

void Enrollment::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

bool Enrollment::Actionable(const Identity& identity) const {
  switch (identity.state) {
    case EnrollmentState::kNew:
    case EnrollmentState::kKeyed:
    case EnrollmentState::kCertified:
    case EnrollmentState::kRegistering: return true;
    default: return false;
  }
}

void Enrollment::Worker() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    const Identity* next = nullptr;
    for (const auto& [name, id] : identities_) {
      // A sensor being removed is never picked again: its entry is not updated
      // any more, so it would look due forever and starve RemoveSensor's wait.
      if (!Actionable(id) || in_flight_.count(name) || removed_.count(name) ||
          moving_.count(name)) {
        continue;
      }
      if (next == nullptr || id.next_attempt < next->next_attempt) next = &id;
    }
    if (next == nullptr) {
      cv_.wait(lock);
      continue;
    }
    Millis now = NowMillis();
    if (next->next_attempt > now) {
      cv_.wait_for(lock, milliseconds(next->next_attempt - now));
      continue;
    }
    Identity work = *next;
    in_flight_.insert(work.name);
    lock.unlock();
    Advance(work);
    lock.lock();
    in_flight_.erase(work.name);
    if (!removed_.count(work.name)) identities_[work.name] = work;
    cv_.notify_all();
  }
}

bool Enrollment::Commit(const Identity& identity) {
  {
    std::lock_guard lock(mu_);
    if (removed_.count(identity.name)) return false;
  }
  Status s = options_.store->Update(identity);
  if (!s.ok()) {
    // The state database is the source of truth: without it, stop advancing
    // this identity and let the next round retry from what was committed.
    log::Error("committing identity state failed: " + s.message(), {{"IDENTITY", identity.name}});
    return false;
  }
  {
    std::lock_guard lock(mu_);
    if (!removed_.count(identity.name)) identities_[identity.name] = identity;
  }
  if (options_.on_change) options_.on_change(identity);
  return true;
}

void Enrollment::Retry(Identity& identity, const std::string& error, bool counted,
                       milliseconds cap_override) {
  int n;
  milliseconds delay;
  {
    std::lock_guard lock(mu_);
    if (counted) {
      n = ++identity.attempts;
      network_failures_.erase(identity.name);
    } else {
      n = ++network_failures_[identity.name];
    }
    BackoffPolicy policy = backoff_;
    if (cap_override.count() > 0) policy.max = cap_override;
    delay = FullJitterDelay(policy, n, rng_);
  }
  identity.last_error = error;
  identity.next_attempt = NowMillis() + std::max<int64_t>(delay.count(), 0);
  Millis pending_for = identity.registering_since ? NowMillis() - identity.registering_since : 0;
  if (identity.state == EnrollmentState::kRegistering && !identity.long_pending_reported &&
      pending_for >= options_.config.enrollment.pending_report_after.count()) {
    identity.long_pending_reported = true;
    log::Warning(
        "identity " + identity.name + " (thing " + identity.thing +
            ") is still not accepted by AWS IoT after " +
            FormatDuration(milliseconds(pending_for)) + " and " +
            std::to_string(identity.attempts) +
            " attempts: check that the CA is registered, ACTIVE and has auto-registration "
            "enabled, that the JITR rule and Lambda are deployed, and the certificate's "
            "state (aws iot describe-certificate --certificate-id " +
            identity.cert_id + "); last outcome: " + error,
        {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "REGISTERING"}});
  }
  Commit(identity);
}

void Enrollment::Advance(Identity& identity) {
  if (identity.state == EnrollmentState::kNew) {
    Status s = MakeKey(identity);
    if (!s.ok()) {
      log::Error("creating the TPM key failed: " + s.message(), {{"IDENTITY", identity.name}});
      return Retry(identity, "key: " + s.message(), false);
    }
    CrashPoint("keyed", identity.name);
  }
  if (identity.state == EnrollmentState::kKeyed) {
    Status s = MakeCertificate(identity);
    if (!s.ok()) {
      log::Error("getting a certificate failed: " + s.message(), {{"IDENTITY", identity.name}});
      return Retry(identity, "certificate: " + s.message(), false);
    }
    CrashPoint("certified", identity.name);
  }
  if (identity.state == EnrollmentState::kCertified) {
    identity.state = EnrollmentState::kRegistering;
    identity.registering_since = NowMillis();
    identity.attempts = 0;
    if (!Commit(identity)) return;
    CrashPoint("registering", identity.name);
  }
  if (identity.state == EnrollmentState::kRegistering) Register(identity);
}

Status Enrollment::MakeKey(Identity& identity) {
  auto dir = IdentityDir(identity.name);
  GA_RETURN_IF_ERROR(EnsureDirectory(dir, 0700));
  auto key_path = dir / "key.tss2";
  // A key saved before a crash (state still NEW) is reused, never replaced.
  auto existing = tpm::TpmKeyBlob::ReadFile(key_path);
  if (!existing.ok()) {
    auto algorithm = options_.config.tpm.key_type == KeyType::kRsa2048
                         ? tpm::KeyAlgorithm::kRsa2048
                         : tpm::KeyAlgorithm::kEccP256;
    GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob key, options_.tpm->CreateKey(algorithm));
    CrashPoint("key-created", identity.name);
    GA_RETURN_IF_ERROR(key.WriteFile(key_path, /*overwrite=*/true));
    CrashPoint("key-saved", identity.name);
    log::Info("created TPM key " + key_path.string(),
              {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "KEYED"}});
  }
  identity.key_file = key_path.string();
  identity.state = EnrollmentState::kKeyed;
  identity.last_error.clear();
  if (!Commit(identity)) return FailedPrecondition("identity removed");
  return Status::Ok();
}

Status Enrollment::MakeCertificate(Identity& identity) {
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(identity.key_file));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(options_.tpm, blob));
  auto dir = IdentityDir(identity.name);
  auto cert_path = dir / "cert.pem";
  auto chain_path = dir / "chain.pem";

  // A certificate saved before a crash is reused when it is for this key.
  auto cert_pem = ReadFile(cert_path);
  auto chain_pem = ReadFile(chain_path);
  bool reuse = false;
  if (cert_pem.ok() && chain_pem.ok()) {
    auto facts = ReadCertificate(*cert_pem, cert_path.string());
    if (facts.ok() && EVP_PKEY_eq(X509_get0_pubkey(facts->cert.get()), key.get()) == 1) {
      reuse = true;
      identity.cert_id = facts->id;
      identity.cert_not_after = facts->not_after;
    }
    ClearOpenSslErrors();
  }
  if (!reuse) {
    // The gateway's certificate says so (OU=gateway): the JITR Lambda gives
    // it the policy that lets it publish for sensors over its connection.
    std::string ou = identity.kind == IdentityKind::kGateway ? "gateway" : "";
    std::string subject = (ou.empty() ? "" : "OU=" + ou + ",") + "CN=" + identity.thing;
    GA_ASSIGN_OR_RETURN(X509ReqPtr csr, tpm::MakeCsr(key.get(), subject));
    GA_ASSIGN_OR_RETURN(IssuedPem issued,
                        options_.issue(csr.get(), identity.thing, ou).With("the local CA"));
    CrashPoint("cert-issued", identity.name);
    GA_ASSIGN_OR_RETURN(CertFacts facts, ReadCertificate(issued.certificate, "issued certificate"));
    GA_RETURN_IF_ERROR(WriteFileAtomic(chain_path, issued.chain, 0600));
    GA_RETURN_IF_ERROR(WriteFileAtomic(cert_path, issued.certificate, 0600));
    CrashPoint("cert-saved", identity.name);
    identity.cert_id = facts.id;
    identity.cert_not_after = facts.not_after;
    log::Info("certificate " + facts.id + " issued for thing " + identity.thing,
              {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "CERTIFIED"}});
  }
  identity.cert_file = cert_path.string();
  identity.chain_file = chain_path.string();
  identity.state = EnrollmentState::kCertified;
  identity.last_error.clear();
  if (!Commit(identity)) return FailedPrecondition("identity removed");
  return Status::Ok();
}

void Enrollment::Register(Identity& identity) {
  const Config& c = options_.config;
  // At most one CONNECT per second per client id, whatever the backoff says.
  {
    std::unique_lock lock(mu_);
    auto it = last_connect_.find(identity.name);
    if (it != last_connect_.end()) {
      auto earliest = it->second + kPerClientIdSpacing;
      while (!stop_ && SteadyClock::now() < earliest) cv_.wait_until(lock, earliest);
    }
    if (stop_) return;
  }
  account_connects_.Take();
  {
    std::lock_guard lock(mu_);
    if (stop_ || removed_.count(identity.name)) return;
    last_connect_[identity.name] = SteadyClock::now();
  }

  auto blob = tpm::TpmKeyBlob::ReadFile(identity.key_file);
  Result<EvpPkeyPtr> key =
      blob.ok() ? tpm::MakeEvpPkey(options_.tpm, *blob) : Result<EvpPkeyPtr>(blob.status());
  if (!key.ok()) return Retry(identity, "key: " + key.status().message(), false);

  ConnectAttempt a =
      AttemptConnect(CloudConnectOptions(c.aws, identity.thing, key->get(), identity.chain_file));
  std::initializer_list<log::Field> fields = {
      {"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "REGISTERING"}};

  switch (a.outcome) {
    case ConnectOutcome::kAccepted:
      CrashPoint("connected", identity.name);
      identity.state = EnrollmentState::kActive;
      identity.active_since = NowMillis();
      identity.last_error.clear();
      ++identity.attempts;
      if (Commit(identity)) {
        log::Info("identity " + identity.name + " is ACTIVE in AWS IoT as thing " + identity.thing +
                      " after " + std::to_string(identity.attempts) + " connect attempt(s)",
                  {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "ACTIVE"}});
      }
      return;
    case ConnectOutcome::kServerUntrusted:
      identity.state = EnrollmentState::kParked;
      identity.last_error = a.detail;
      identity.park_reason = "the server at " + c.aws.endpoint + ":" + std::to_string(c.aws.port) +
                             " is not trusted (" + a.detail + "): check [aws] endpoint and " +
                             "root_ca (" + c.aws.root_ca.string() +
                             "), then restart the agent or run gateway-agent probe";
      log::Error("identity " + identity.name + " parked: " + identity.park_reason,
                 {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "PARKED"}});
      Commit(identity);
      return;
    case ConnectOutcome::kTlsAlert:
      if (a.tls_alert == SSL_AD_CERTIFICATE_REVOKED) {
        identity.state = EnrollmentState::kParked;
        identity.last_error = a.detail;
        identity.park_reason = "AWS IoT refuses certificate " + identity.cert_id +
                               " as revoked: remove and add the sensor to enroll a new one";
        log::Error("identity " + identity.name + " parked: " + identity.park_reason,
                   {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "PARKED"}});
        Commit(identity);
        return;
      }
      log::Info("identity " + identity.name + ": registration pending (" + a.detail + ")", fields);
      return Retry(identity, a.detail, true);
    case ConnectOutcome::kClosed:
      log::Info("identity " + identity.name + ": registration pending (" + a.detail + ")", fields);
      return Retry(identity, a.detail, true);
    case ConnectOutcome::kRefused:
      // Typically activated before its policy was attached: retry, with a
      // longer cap, since only someone fixing the policy can help now.
      log::Warning("identity " + identity.name + ": " + a.detail, fields);
      return Retry(identity, a.detail, true, backoff_.max * 4);
    case ConnectOutcome::kNetworkError:
      if (a.name_not_found) {
        a.detail += " (check [aws] endpoint)";
      }
      log::Warning("identity " + identity.name + ": " + a.detail, fields);
      return Retry(identity, a.detail, false);
  }
}

Result<Identity> Enrollment::AddSensor(const std::string& id, const std::string& thing_name,
                                       SensorConnection connection) {
  std::lock_guard changes(changes_mu_);
  if (!IsValidSensorId(id) || id == "gateway") {
    return InvalidArgument("\"" + id +
                           "\" is not a valid sensor id (1-64 characters of a-z A-Z 0-9 _ -, "
                           "not \"gateway\")");
  }
  Identity identity;
  identity.name = id;
  identity.kind = IdentityKind::kSensor;
  identity.thing = options_.config.SensorThingName({.id = id, .thing_name = thing_name});
  if (!IsEnrollableThingName(identity.thing)) {
    return InvalidArgument("\"" + identity.thing +
                           "\" is not a valid thing name: 1-64 characters of a-z A-Z 0-9 : _ - "
                           "(it becomes the certificate's CN)");
  }
  if (connection == SensorConnection::kGateway) {
    GA_RETURN_IF_ERROR(CheckGatewayMayCarry(identity.thing, 1));
    identity.state = EnrollmentState::kShared;
  }
  {
    std::lock_guard lock(mu_);
    if (in_flight_.count(id)) {
      return FailedPrecondition("sensor " + id + " is still being removed; try again");
    }
  }
  GA_RETURN_IF_ERROR(options_.store->Add(identity));
  GA_ASSIGN_OR_RETURN(Identity stored, options_.store->Get(id));
  {
    std::lock_guard lock(mu_);
    removed_.erase(id);
    identities_[id] = stored;
  }
  cv_.notify_all();
  if (options_.on_change) options_.on_change(stored);
  log::Info("sensor " + id + " added as thing " + identity.thing,
            {{"IDENTITY", id},
             {"THING", identity.thing},
             {"STATE", std::string(StateName(identity.state))}});
  return stored;
}

Status Enrollment::CheckGatewayMayCarry(const std::string& thing, int more) {
  if (!options_.config.GatewayMayCarry(thing)) {
    return InvalidArgument("thing \"" + thing + "\" cannot travel over the gateway's connection: " +
                           "its name must start with \"" + options_.config.agent.thing_name +
                           "-\" (the gateway's policy allows those)");
  }
  std::lock_guard lock(mu_);
  size_t shared = 0;
  for (const auto& [name, id] : identities_) {
    if (id.state == EnrollmentState::kShared && !removed_.count(name)) ++shared;
  }
  if (shared + static_cast<size_t>(more) > kMaxGatewayConnectionSensors) {
    return FailedPrecondition("the gateway's connection already carries " + std::to_string(shared) +
                              " sensors, the most AWS IoT's 50 " +
                              "subscriptions per connection allow");
  }
  return Status::Ok();
}

Result<Identity> Enrollment::SetConnection(const std::string& id, SensorConnection connection) {
  std::lock_guard changes(changes_mu_);
  GA_ASSIGN_OR_RETURN(Identity identity, options_.store->Get(id));
  if (identity.kind != IdentityKind::kSensor || identity.state == EnrollmentState::kRemoved) {
    return NotFound("no sensor \"" + id + "\"");
  }
  bool to_gateway = connection == SensorConnection::kGateway;
  if (to_gateway == (identity.state == EnrollmentState::kShared)) return identity;
  if (to_gateway) GA_RETURN_IF_ERROR(CheckGatewayMayCarry(identity.thing, 1));
  {
    // A step in progress finishes first; no worker picks the sensor meanwhile.
    std::unique_lock lock(mu_);
    moving_.insert(id);
    cv_.wait(lock, [&] { return in_flight_.count(id) == 0; });
  }
  auto current = options_.store->Get(id);  // that step may have advanced it
  Status saved = current.status();
  Identity next;
  if (current.ok()) {
    next = Reconnected(*current, to_gateway ? EnrollmentState::kShared : EnrollmentState::kNew);
    saved = options_.store->Update(next);
  }
  {
    std::lock_guard lock(mu_);
    moving_.erase(id);
    if (saved.ok()) identities_[id] = next;
  }
  cv_.notify_all();
  GA_RETURN_IF_ERROR(saved.With("changing the connection of sensor " + id));
  if (options_.on_change) options_.on_change(next);
  log::Info(to_gateway ? "sensor " + id + " now travels over the gateway's connection"
                       : "sensor " + id + " now enrolls for its own connection",
            {{"IDENTITY", id}, {"STATE", std::string(StateName(next.state))}});
  return next;
}

Result<Identity> Enrollment::RemoveSensor(const std::string& id) {
  std::lock_guard changes(changes_mu_);
  GA_ASSIGN_OR_RETURN(Identity identity, options_.store->Get(id));
  if (identity.kind != IdentityKind::kSensor) {
    return InvalidArgument("\"" + id + "\" is the gateway itself, not a sensor");
  }
  if (identity.state == EnrollmentState::kRemoved) {
    return NotFound("sensor " + id + " is already removed");
  }
  {
    std::unique_lock lock(mu_);
    removed_.insert(id);
    // Wait for a step in progress to finish: it will not commit any more.
    cv_.wait(lock, [&] { return in_flight_.count(id) == 0; });
    identities_.erase(id);
  }
  Identity removed = identity;
  removed.state = EnrollmentState::kRemoved;
  removed.key_file.clear();
  GA_RETURN_IF_ERROR(options_.store->Update(removed));
  if (options_.on_change) options_.on_change(removed);
  std::error_code ec;
  std::filesystem::remove_all(IdentityDir(id), ec);
  if (ec) {
    log::Warning("removing " + IdentityDir(id).string() + ": " + ec.message(), {{"IDENTITY", id}});
  }
  log::Info("sensor " + id + " removed; its key blob is deleted",
            {{"IDENTITY", id}, {"THING", identity.thing}, {"STATE", "REMOVED"}});
  return identity;
}

std::vector<Identity> Enrollment::Snapshot() {
  std::lock_guard lock(mu_);
  std::vector<Identity> out;
  for (const auto& [name, id] : identities_) out.push_back(id);
  return out;
}

EnrollmentCounts Enrollment::Counts() {
  std::lock_guard lock(mu_);
  EnrollmentCounts c;
  for (const auto& [name, id] : identities_) {
    ++c.total;
    switch (id.state) {
      case EnrollmentState::kActive: ++c.active; break;
      case EnrollmentState::kRegistering: ++c.registering; break;
      case EnrollmentState::kParked: ++c.parked; break;
      case EnrollmentState::kShared: ++c.shared; break;
      default: ++c.in_progress; break;
    }
  }
  return c;
}

}  // namespace ga
