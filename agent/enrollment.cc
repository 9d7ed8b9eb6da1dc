#include "gateway_agent/agent/enrollment.h"

#include <algorithm>
#include <random>
#include <set>

#include "enrollment_steps.h"
#include "gateway_agent/agent/connect_scheduler.h"
#include "gateway_agent/agent/connect_verdict.h"
#include "gateway_agent/agent/current_ca.h"
#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/log.h"
#include "gateway_agent/tpm/tpm_scheduler.h"
#include "identity_table.h"
#include "sensor_roster.h"

namespace ga {

using std::chrono::milliseconds;

std::string EnrollmentCounts::ToString() const {
  std::string s = std::to_string(active) + "/" + std::to_string(total) + " active";
  if (registering) s += ", " + std::to_string(registering) + " registering";
  if (in_progress) s += ", " + std::to_string(in_progress) + " enrolling";
  if (parked) s += ", " + std::to_string(parked) + " parked";
  if (shared) s += ", " + std::to_string(shared) + " over the gateway's connection";
  return s;
}

Enrollment::Enrollment(Options options) : options_(std::move(options)) {
  issue_ = [ca = options_.ca](X509_REQ* csr, const std::string& thing, const std::string& ou) {
    return ca->Issue(csr, thing, ou);
  };
  ConnectPacing pacing;
  pacing.backoff.initial = options_.config.enrollment.backoff_initial;
  pacing.backoff.max = options_.config.enrollment.backoff_max;
  pacing.backoff.multiplier = options_.config.enrollment.backoff_multiplier;
  pacing.account_rate = options_.config.aws.connect_rate;
  scheduler_ = std::make_unique<ConnectScheduler>(pacing, *options_.clock, std::random_device{}());
  scheduler_->AssumeAllConnectedNow();
  table_ = std::make_unique<IdentityTable>(*options_.clock);
  roster_ =
      std::make_unique<SensorRoster>(options_.config, *options_.store, *table_, options_.on_change);
}

Enrollment::~Enrollment() {
  Stop();
}

std::filesystem::path Enrollment::IdentityDir(const std::string& name) const {
  return ga::IdentityDir(options_.config, name);
}

Status Enrollment::Load() {
  GA_RETURN_IF_ERROR(roster_->Load());
  // [ca] may name another CA than the one before the restart.
  WakeThoseOfAnotherCa();
  return Status::Ok();
}

void Enrollment::CaReplaced() {
  log::Info("identities now get their certificates from CA " + options_.ca->subject() + " (" +
                options_.ca->id().substr(0, 12) + "): those of another CA renew onto it",
            {{"CA_CERTIFICATE_ID", options_.ca->id()}});
  WakeThoseOfAnotherCa();
}

void Enrollment::WakeThoseOfAnotherCa() {
  const std::string ca = options_.ca->id();
  std::set<std::string> names;
  for (const Identity& id : table_->Snapshot()) {
    if (id.state != EnrollmentState::kActive) continue;
    const std::string issuer = IssuerIdOf(id.chain_file);
    if (!issuer.empty() && issuer != ca) names.insert(id.name);
  }
  table_->WakeActive(names);
}

void Enrollment::Start() {
  table_->Start();
  for (int i = 0; i < options_.config.enrollment.concurrency; ++i) {
    workers_.emplace_back([this] { Worker(); });
  }
}

void Enrollment::Stop() {
  table_->Stop();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

Result<Identity> Enrollment::AddSensor(const std::string& id, const std::string& thing_name,
                                       SensorConnection connection) {
  return roster_->Add(id, thing_name, connection);
}

Result<Identity> Enrollment::SetConnection(const std::string& id, SensorConnection connection) {
  return roster_->SetConnection(id, connection);
}

Result<Identity> Enrollment::RemoveSensor(const std::string& id) {
  return roster_->Remove(id);
}

Result<Identity> Enrollment::Reenroll(const std::string& name, EnrollmentState from,
                                      const std::string& reason) {
  GA_ASSIGN_OR_RETURN(Identity again, roster_->Reenroll(name, from, reason));
  // The bridge's connection of this client id may have sent a CONNECT just
  // now: the JITR connect keeps AWS's second after it.
  scheduler_->AttemptDone(name);
  return again;
}

void Enrollment::SetFileSensors(const std::vector<SensorConfig>& sensors) {
  roster_->SetFileSensors(sensors);
}

std::vector<Identity> Enrollment::Snapshot() {
  return table_->Snapshot();
}

EnrollmentCounts Enrollment::Counts() {
  return table_->Counts();
}

StepContext Enrollment::Steps() const {
  return {options_.config, options_.tpm, issue_, options_.connect, options_.crash};
}

void Enrollment::Worker() {
  // Key creation, CSR signing and JITR connects wait for the handshakes of
  // running connections on a slow TPM (tpm_scheduler.h).
  tpm::TpmWorkScope tpm_work(tpm::TpmWork::kBackground);
  while (std::optional<Identity> work = table_->TakeDue()) {
    Status s = Advance(*work);
    if (s.ok() || table_->IsRemoved(work->name)) {
      table_->Finish(*work);
      continue;
    }
    // A commit failed: the database still has the state before this step.
    // Nothing goes on from a state that is not saved; the step is taken again
    // later, from the saved state (which reuses a saved key or certificate).
    log::Error(s.message(), {{"IDENTITY", work->name}});
    milliseconds delay = scheduler_->RetryDelay(work->name, 0, /*counted=*/false);
    table_->FinishUncommitted(work->name, s.message(),
                              options_.clock->WallMillis() + delay.count());
  }
}

Status Enrollment::Commit(const Identity& identity) {
  if (table_->IsRemoved(identity.name)) {
    return FailedPrecondition("identity " + identity.name + " was removed");
  }
  GA_RETURN_IF_ERROR(
      options_.store->Update(identity).With("saving the state of identity " + identity.name));
  table_->Keep(identity);
  if (options_.on_change) options_.on_change(identity);
  return Status::Ok();
}

Status Enrollment::Retry(Identity& identity, const std::string& error, bool counted,
                         milliseconds cap_override) {
  if (counted) ++identity.attempts;
  milliseconds delay =
      scheduler_->RetryDelay(identity.name, identity.attempts, counted, cap_override);
  Millis now = options_.clock->WallMillis();
  identity.last_error = error;
  identity.next_attempt = now + delay.count();
  Millis pending_for = identity.registering_since ? now - identity.registering_since : 0;
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
  return Commit(identity);
}

Status Enrollment::MakeAndCommit(Identity& identity, StepFunction step, std::string_view what,
                                 std::string_view error_prefix, std::string_view done) {
  Status s = step(identity, Steps());
  if (!s.ok()) {
    log::Error(std::string(what) + " failed: " + s.message(), {{"IDENTITY", identity.name}});
    return Retry(identity, std::string(error_prefix) + ": " + s.message(), false);
  }
  GA_RETURN_IF_ERROR(Commit(identity));
  options_.crash(done, identity.name);
  return Status::Ok();
}

Status Enrollment::Advance(Identity& identity) {
  // Not accepted yet, with a certificate of a CA that no longer issues (a CA
  // rollover; the JITR rule may take only the new CA's events): one of the
  // current CA instead, for the same key. Saved before the files go, so a
  // crash between them only issues again.
  if (identity.state == EnrollmentState::kCertified ||
      identity.state == EnrollmentState::kRegistering) {
    const std::string issuer = IssuerIdOf(identity.chain_file);
    if (!issuer.empty() && issuer != options_.ca->id()) {
      log::Warning("identity " + identity.name + ": its certificate " +
                       identity.cert_id.substr(0, 12) + " is from CA " + issuer.substr(0, 12) +
                       ", not yet accepted; the CA is now " + options_.ca->id().substr(0, 12) +
                       ": a certificate from it instead",
                   {{"IDENTITY", identity.name}, {"THING", identity.thing}});
      const Identity before = identity;
      identity.state = EnrollmentState::kKeyed;
      identity.cert_id.clear();
      identity.cert_file.clear();
      identity.chain_file.clear();
      identity.cert_not_after = 0;
      identity.cert_issued_at = 0;
      GA_RETURN_IF_ERROR(Commit(identity));
      std::error_code ignored;
      std::filesystem::remove(before.cert_file, ignored);
      std::filesystem::remove(before.chain_file, ignored);
    }
  }
  // A step that failed leaves the state as it was: no later step runs.
  if (identity.state == EnrollmentState::kNew) {
    GA_RETURN_IF_ERROR(MakeAndCommit(identity, MakeKey, "creating the TPM key", "key", "keyed"));
  }
  if (identity.state == EnrollmentState::kKeyed &&
      options_.clock->WallMillis() < BuildEpochMillis()) {
    // A certificate's validity is counted from now: not from a wrong clock.
    return Retry(identity, ClockProblem(options_.clock->WallMillis()), false,
                 std::chrono::minutes(1));
  }
  if (identity.state == EnrollmentState::kKeyed) {
    GA_RETURN_IF_ERROR(MakeAndCommit(identity, MakeCertificate, "getting a certificate",
                                     "certificate", "certified"));
  }
  if (identity.state == EnrollmentState::kCertified) {
    identity.state = EnrollmentState::kRegistering;
    identity.registering_since = options_.clock->WallMillis();
    identity.attempts = 0;
    GA_RETURN_IF_ERROR(Commit(identity));
    options_.crash("registering", identity.name);
  }
  if (identity.state == EnrollmentState::kRegistering) return Register(identity);
  if (identity.state == EnrollmentState::kActive) return Renew(identity);
  return Status::Ok();
}

Status Enrollment::Register(Identity& identity) {
  // At most one CONNECT per second per client id and the account's rate,
  // whatever the backoff says.
  for (;;) {
    std::chrono::nanoseconds wait = scheduler_->TryAdmit(identity.name);
    if (wait.count() == 0) break;
    if (!table_->SleepFor(wait)) return Status::Ok();
  }
  if (table_->Stopped() || table_->IsRemoved(identity.name)) return Status::Ok();

  StepContext steps = Steps();
  Result<ConnectAttempt> attempt = ConnectOnce(identity, steps);
  scheduler_->AttemptDone(identity.name);
  if (!attempt.ok()) return Retry(identity, "key: " + attempt.status().message(), false);
  const ConnectAttempt& a = *attempt;
  ConnectVerdict verdict =
      Classify(a, {options_.config.aws, identity.cert_id, scheduler_->backoff().max});

  switch (verdict.action) {
    case ConnectVerdict::Action::kActive:
      options_.crash("connected", identity.name);
      identity.state = EnrollmentState::kActive;
      identity.active_since = options_.clock->WallMillis();
      identity.last_error.clear();
      ++identity.attempts;
      GA_RETURN_IF_ERROR(Commit(identity));
      log::Info("identity " + identity.name + " is ACTIVE in AWS IoT as thing " + identity.thing +
                    " after " + std::to_string(identity.attempts) + " connect attempt(s)",
                {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "ACTIVE"}});
      return Status::Ok();
    case ConnectVerdict::Action::kPark:
      identity.state = EnrollmentState::kParked;
      identity.last_error = verdict.error;
      identity.park_reason = verdict.park_reason;
      log::Error("identity " + identity.name + " parked: " + identity.park_reason,
                 {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "PARKED"}});
      return Commit(identity);
    case ConnectVerdict::Action::kRetry: break;
  }
  std::string message =
      "identity " + identity.name + ": " +
      (verdict.level == log::Level::kInfo ? "registration pending (" + verdict.error + ")"
                                          : verdict.error);
  log::Write(verdict.level, message,
             {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "REGISTERING"}});
  return Retry(identity, verdict.error, verdict.counted, verdict.cap);
}

}  // namespace ga
