// Certificate renewal of an ACTIVE identity, step by step like enrollment:
// each step is committed before the next, so a restart resumes it.
//
// The next key (a new one in the TPM unless renewal.rekey is false) and
// certificate are made beside the ones in use, which keep serving. Then the
// bridge lets go of the identity's connection (AWS IoT allows one per client
// id) and one connect is made with the next certificate: AWS IoT registers it
// (JITR; the Lambda attaches it to the same thing) and closes that connect,
// and the bridge goes back to the certificate in use; once a connect is
// accepted, the same connection asks for the previous certificate to be
// retired, the identity switches to the next key and certificate, and the
// bridge connects with them. The previous files are deleted last.
#include <filesystem>

#include "enrollment_steps.h"
#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/connect_scheduler.h"
#include "gateway_agent/agent/connect_verdict.h"
#include "gateway_agent/agent/current_ca.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_key.h"
#include "gateway_agent/tpm/tpm_scheduler.h"
#include "identity_table.h"

namespace ga {

namespace fs = std::filesystem;

namespace {

constexpr Millis kClockRecheck = 60'000;
// Identities at most without their connection for a renewal's connect at a
// time, and how long one waits for its turn before it looks again.
constexpr int kProvingAtOnce = 8;
constexpr Millis kProvingWait = 500;
// A retirement or CA hand-over waiting for the identity's bridge connection
// to be up.
constexpr Millis kRetireWhenConnected = 2'000;
// A sensor waiting for the gateway to move onto a new CA first (its thing's
// namespace belongs to the gateway's CA: cloud/jitr-lambda).
constexpr Millis kGatewayFirstWait = 5'000;
// An identity whose certificate ends with its CA: looked at again this
// often (a reload naming a new CA wakes it at once).
constexpr Millis kCaEndingRecheck = 3'600'000;

std::string RetiredNote(const std::string& old_id, const LifecycleAnswer& answer) {
  return answer.accepted
             ? "certificate " + old_id + " retired in AWS IoT"
             : "certificate " + old_id + " not retired yet (" +
                   (answer.answered ? "refused: " : "") + answer.detail + "): asked again later";
}

void Say(log::Level level, const Identity& id, const std::string& message) {
  log::Write(
      level, "identity " + id.name + ": " + message,
      {{"IDENTITY", id.name}, {"THING", id.thing}, {"RENEWAL", RenewalStepName(id.renewal)}});
}

// Deletes key, certificate and chain files in the identity's directory that
// it no longer uses (left by a renewal that stopped between its commit and
// its clean-up).
void RemoveUnusedFiles(const Identity& id, const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    bool ours =
        name.rfind("key", 0) == 0 || name.rfind("cert", 0) == 0 || name.rfind("chain", 0) == 0;
    if (!ours || path == id.key_file || path == id.cert_file || path == id.chain_file ||
        path == id.next_key_file || path == id.next_cert_file || path == id.next_chain_file) {
      continue;
    }
    std::error_code ignored;
    fs::remove(entry.path(), ignored);
  }
}

}  // namespace

Millis RenewAt(const Identity& id, const RenewalConfig& renewal) {
  if (id.cert_not_after == 0) return 0;
  Millis start = id.cert_issued_at      ? id.cert_issued_at
                 : id.registering_since ? id.registering_since
                                        : id.active_since;
  Millis lifetime = std::max<Millis>(0, id.cert_not_after - start);
  Millis at = start + static_cast<Millis>(static_cast<double>(lifetime) * renewal.threshold);
  if (renewal.before.count() > 0) at = std::min(at, id.cert_not_after - renewal.before.count());
  return at;
}

Millis Enrollment::RenewalRetryAt(const Identity& identity) {
  auto delay = scheduler_->RetryDelay(
      identity.name, identity.attempts, /*counted=*/true,
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.config.renewal.retry_max));
  delay = std::max(delay, std::chrono::duration_cast<std::chrono::milliseconds>(
                              options_.config.renewal.retry_initial));
  return options_.clock->WallMillis() + delay.count();
}

Status Enrollment::RenewalFailed(Identity& identity, const std::string& error) {
  identity.renewal_error = error;
  ++identity.attempts;
  identity.next_attempt = RenewalRetryAt(identity);
  Say(log::Level::kError, identity, "renewal: " + error);
  return Commit(identity);
}

Enrollment::CaVerdict Enrollment::JudgeCa(const Identity& identity) {
  const std::string ca = options_.ca->id();
  const std::string issuer = IssuerIdOf(identity.chain_file);
  if (!issuer.empty() && issuer != ca) {
    if (identity.kind == IdentityKind::kSensor) {
      std::optional<Identity> gateway = table_->Get("gateway");
      if (gateway && gateway->state == EnrollmentState::kActive &&
          IssuerIdOf(gateway->chain_file) != ca) {
        return CaVerdict::kGatewayFirst;
      }
    }
    return CaVerdict::kOtherCa;
  }
  // A certificate from it cannot end later than this one: renewing brings
  // nothing (and ever shorter certificates) until a new CA is configured.
  if (identity.cert_not_after >= options_.ca->not_after()) return CaVerdict::kEndsWithCa;
  return CaVerdict::kSame;
}

Status Enrollment::Renew(Identity& identity) {
  const Config& config = options_.config;
  const Millis now = options_.clock->WallMillis();
  const fs::path dir = IdentityDir(identity.name);
  if (identity.renewal == RenewalStep::kNone) {
    // A clock before this build is wrong: nothing is decided by it.
    const bool clock_ok = now >= BuildEpochMillis();
    const Millis at = RenewAt(identity, config.renewal);
    const CaVerdict ca = JudgeCa(identity);
    const bool asked = identity.renewal_asked != 0;
    if (clock_ok && !asked && ca == CaVerdict::kGatewayFirst) {
      identity.next_attempt = now + kGatewayFirstWait;
      return Status::Ok();
    }
    if (clock_ok && !asked && ca == CaVerdict::kEndsWithCa && at != 0 && now >= at) {
      const std::string why = "certificate ends with CA " + options_.ca->subject() + " on " +
                              FormatUtc(options_.ca->not_after(), "%Y-%m-%d") +
                              ": it renews once [ca] names a new CA (gateway-agent ca init, "
                              "register it with AWS IoT, reload)";
      identity.next_attempt = now + kCaEndingRecheck;
      if (identity.renewal_error == why) return Status::Ok();
      identity.renewal_error = why;
      Say(log::Level::kWarning, identity, why);
      return Commit(identity);
    }
    const bool due = clock_ok && (asked || ca == CaVerdict::kOtherCa || (at != 0 && now >= at));
    // A renewal that is due goes first: a working certificate matters more
    // than retiring an old one.
    if (!identity.retiring_cert_id.empty() && !due) return RetirePrevious(identity);
    if (!due) {
      if (identity.retiring_cert_id.empty()) RemoveUnusedFiles(identity, dir);
      if (!clock_ok || at == 0) {
        identity.next_attempt = now + kClockRecheck;
        return Status::Ok();
      }
      if (identity.next_attempt == at) return Status::Ok();
      identity.next_attempt = at;  // saved: status shows when it renews
      return Commit(identity);
    }
    const bool rekey = config.renewal.rekey || identity.renewal_asked == 2;
    std::string why = identity.renewal_asked           ? " (asked for)"
                      : now >= identity.cert_not_after ? " (expired)"
                      : ca == CaVerdict::kOtherCa ? " (onto CA " + options_.ca->subject() + ", " +
                                                        options_.ca->id().substr(0, 12) + ")"
                                                  : "";
    Say(log::Level::kInfo, identity,
        "renewing certificate " + identity.cert_id + why + " with a new " +
            (rekey ? "key and certificate" : "certificate"));
    const std::string generation = std::to_string(identity.renewals + 1);
    fs::path key = rekey ? dir / ("key-" + generation + ".tss2") : fs::path(identity.key_file);
    if (rekey) {
      if (Status s = EnsureKey(identity, key, Steps()); !s.ok()) {
        return RenewalFailed(identity, "key: " + s.message());
      }
    }
    identity.next_key_file = key.string();
    identity.renewal_asked = 0;
    identity.renewal = RenewalStep::kKeyed;
    identity.renewal_error.clear();
    GA_RETURN_IF_ERROR(Commit(identity));
    options_.crash("renew-keyed", identity.name);
  }
  if (identity.renewal == RenewalStep::kKeyed) {
    if (now < BuildEpochMillis()) {
      identity.next_attempt = now + kClockRecheck;
      return Status::Ok();
    }
    const std::string generation = std::to_string(identity.renewals + 1);
    bool key_refused = false;
    auto files =
        EnsureCertificate(identity, identity.next_key_file, dir / ("cert-" + generation + ".pem"),
                          dir / ("chain-" + generation + ".pem"), Steps(), &key_refused);
    if (!files.ok()) {
      if (key_refused && identity.next_key_file != identity.key_file) {
        std::error_code ignored;
        fs::remove(identity.next_key_file, ignored);
        identity.next_key_file.clear();
        identity.renewal = RenewalStep::kNone;
      }
      return RenewalFailed(identity, "certificate: " + files.status().message());
    }
    identity.next_cert_file = files->cert_file;
    identity.next_chain_file = files->chain_file;
    identity.next_cert_id = files->cert_id;
    identity.next_cert_not_after = files->not_after;
    identity.next_cert_issued_at = files->issued_at;
    identity.renewal = RenewalStep::kCertified;
    identity.attempts = 0;
    GA_RETURN_IF_ERROR(Commit(identity));
    options_.crash("renew-certified", identity.name);
  }
  return Prove(identity);
}

Result<Identity> Enrollment::ChangeSaved(const std::string& name,
                                         const std::function<Status(Identity&)>& change,
                                         const std::string& what) {
  // A pass over this identity in progress finishes first.
  table_->HoldForMove(name);
  auto current = options_.store->Get(name);
  Status saved = current.status();
  Identity next;
  if (current.ok()) {
    next = *current;
    saved = change(next);
    if (saved.ok()) saved = options_.store->Update(next).With(what + " " + name);
  }
  table_->EndMove(name, saved.ok() ? std::optional<Identity>(next) : std::nullopt);
  GA_RETURN_IF_ERROR(saved);
  return next;
}

Result<Identity> Enrollment::AskRenewal(const std::string& name, bool rekey, bool force) {
  auto asked = ChangeSaved(
      name,
      [&](Identity& next) {
        const bool was_active = ParkedOnceActive(next);
        if (next.state != EnrollmentState::kActive && !(force && was_active)) {
          return FailedPrecondition(
              "identity " + name + " is " + std::string(StateName(next.state)) +
              (was_active ? " (" + next.park_reason + "): --force renews it"
                          : ": only an ACTIVE identity renews (a shared sensor renews with the "
                            "gateway)"));
        }
        if (next.renewal != RenewalStep::kNone) {
          return FailedPrecondition("identity " + name + " is already renewing (" +
                                    std::string(RenewalStepName(next.renewal)) + ")");
        }
        next.state = EnrollmentState::kActive;
        next.park_reason.clear();
        next.renewal_asked = rekey ? 2 : 1;
        next.next_attempt = options_.clock->WallMillis();
        return Status::Ok();
      },
      "asking to renew identity");
  if (asked.ok()) {
    log::Info("identity " + name + ": renewal asked for" + (rekey ? " with a new key" : ""),
              {{"IDENTITY", name}, {"THING", asked->thing}});
  }
  return asked;
}

Result<Identity> Enrollment::ParkRefused(const std::string& name, const std::string& reason) {
  auto parked = ChangeSaved(
      name,
      [&](Identity& next) {
        if (next.state != EnrollmentState::kActive || next.renewal != RenewalStep::kNone ||
            next.renewal_asked != 0) {
          return FailedPrecondition("identity " + name + " is not ACTIVE without a renewal");
        }
        next.state = EnrollmentState::kParked;
        next.park_reason = reason;
        return Status::Ok();
      },
      "parking identity");
  if (parked.ok()) {
    log::Error("identity " + name + " PARKED: " + reason,
               {{"IDENTITY", name}, {"THING", parked->thing}, {"STATE", "PARKED"}});
  }
  return parked;
}

Status Enrollment::RetirePrevious(Identity& identity) {
  std::optional<LifecycleAnswer> answer;
  if (options_.ask) answer = options_.ask(identity, aws::RetireAsk(identity.retiring_cert_id));
  if (!answer) {
    // Its connection is not up (after a switch the bridge reconnects with the
    // new certificate first): again shortly, nothing counted.
    identity.next_attempt = options_.clock->WallMillis() + kRetireWhenConnected;
    return Status::Ok();
  }
  const std::string note = RetiredNote(identity.retiring_cert_id, *answer);
  if (answer->accepted) identity.retiring_cert_id.clear();
  identity.renewal_error = answer->accepted ? "" : note;
  identity.attempts = answer->accepted ? 0 : identity.attempts + 1;
  identity.next_attempt =
      answer->accepted ? options_.clock->WallMillis() : RenewalRetryAt(identity);
  Say(answer->accepted ? log::Level::kInfo : log::Level::kWarning, identity, note);
  GA_RETURN_IF_ERROR(Commit(identity));
  if (answer->accepted) RemoveUnusedFiles(identity, IdentityDir(identity.name));
  return Status::Ok();
}

std::optional<Status> Enrollment::HandOver(Identity& identity) {
  const std::string from = IssuerIdOf(identity.chain_file);
  const std::string to = IssuerIdOf(identity.next_chain_file);
  if (from.empty() || to.empty() || from == to || !options_.ask) return std::nullopt;
  const Millis now = options_.clock->WallMillis();
  std::optional<LifecycleAnswer> answer = options_.ask(identity, aws::HandOverAsk(to));
  if (!answer) {
    // Its connection is not up: wait for it, unless its certificate expired
    // (then only an operator can hand the thing over, cloud/README.md: the
    // connect below tells whether that was done).
    if (now < identity.cert_not_after) {
      identity.next_attempt = now + kRetireWhenConnected;
      return Status::Ok();
    }
    Say(log::Level::kWarning, identity,
        "its certificate expired, so it cannot ask for thing " + identity.thing +
            " to be handed over to CA " + to +
            ": the new certificate is accepted only once an "
            "operator has done so (cloud/README.md, CA hand-over)");
    return std::nullopt;
  }
  if (!answer->accepted) {
    return RenewalFailed(identity, "handing thing " + identity.thing + " over to CA " +
                                       to.substr(0, 12) + ": " +
                                       (answer->answered ? "refused: " : "") + answer->detail);
  }
  Say(log::Level::kInfo, identity,
      "thing " + identity.thing + " handed over to CA " + to.substr(0, 12) + " in AWS IoT");
  return std::nullopt;
}

Status Enrollment::Prove(Identity& identity) {
  if (identity.renewal != RenewalStep::kProving) {
    // A few identities at a time go without their connection: on a slow TPM
    // each waits for its handshake behind the others' (renewing 200 at once
    // on a discrete TPM left sensors 40 s without one, median).
    if (table_->Counts().proving >= kProvingAtOnce) {
      identity.next_attempt = options_.clock->WallMillis() + kProvingWait;
      return Status::Ok();
    }
    if (std::optional<Status> waiting = HandOver(identity)) return *waiting;
    // The bridge lets go of the connection (bridge_feed), then a CONNECT a
    // second after its last one (AWS: one per second per client id); the
    // worker serves others meanwhile.
    identity.renewal = RenewalStep::kProving;
    identity.next_attempt = options_.clock->WallMillis() +
                            std::chrono::milliseconds(aws::kConnectSpacingPerClientId).count();
    GA_RETURN_IF_ERROR(Commit(identity));
    options_.crash("renew-proving", identity.name);
    return Status::Ok();
  }
  for (;;) {
    std::chrono::nanoseconds wait = scheduler_->TryAdmit(identity.name);
    if (wait.count() == 0) break;
    if (!table_->SleepFor(wait)) return Status::Ok();
  }
  if (table_->Stopped() || table_->IsRemoved(identity.name)) return Status::Ok();

  Result<ConnectAttempt> attempt = [&]() -> Result<ConnectAttempt> {
    // The identity is without a connection until this one is done: its TPM
    // work goes before other enrollments' and renewals' keys, as a bridge
    // reconnect with messages waiting would (tpm_scheduler.h).
    tpm::TpmWorkScope urgent(identity.kind == IdentityKind::kSensor
                                 ? tpm::TpmWork::kWaitingHandshake
                                 : tpm::TpmWork::kGatewayHandshake);
    GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(identity.next_key_file));
    GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(options_.tpm, blob));
    ConnectOptions o = CloudConnectOptions(options_.config.aws, identity.thing, key.get(),
                                           identity.next_chain_file);
    o.keep_session = true;  // the bridge's session, its subscriptions and queued commands
    return options_.connect(o);
  }();
  scheduler_->AttemptDone(identity.name);
  identity.renewal = RenewalStep::kCertified;
  if (!attempt.ok()) return RenewalFailed(identity, "key: " + attempt.status().message());
  ConnectVerdict verdict =
      Classify(*attempt, {options_.config.aws, identity.next_cert_id, scheduler_->backoff().max});
  if (verdict.action != ConnectVerdict::Action::kActive) {
    // Back to the certificate in use: the bridge reconnects with it.
    std::string why =
        "certificate " + identity.next_cert_id + " not accepted yet: " + verdict.error;
    if (verdict.level == log::Level::kInfo) {
      Say(log::Level::kInfo, identity, why);
      identity.renewal_error = why;
      if (verdict.counted) ++identity.attempts;
      identity.next_attempt =
          options_.clock->WallMillis() +
          scheduler_->RetryDelay(identity.name, identity.attempts, verdict.counted, verdict.cap)
              .count();
      return Commit(identity);
    }
    return RenewalFailed(identity, why);
  }
  options_.crash("renew-connected", identity.name);
  // The switch: the next key and certificate are the ones in use from here.
  if (!identity.retiring_cert_id.empty()) {
    Say(log::Level::kWarning, identity,
        "certificate " + identity.retiring_cert_id +
            " was never retired (no answer from the retire Lambda): set it INACTIVE in AWS IoT "
            "by hand (aws iot update-certificate --new-status INACTIVE)");
  }
  identity.retiring_cert_id = identity.cert_id;
  identity.key_file = identity.next_key_file;
  identity.cert_file = identity.next_cert_file;
  identity.chain_file = identity.next_chain_file;
  identity.cert_id = identity.next_cert_id;
  identity.cert_not_after = identity.next_cert_not_after;
  identity.cert_issued_at = identity.next_cert_issued_at;
  identity.next_key_file.clear();
  identity.next_cert_file.clear();
  identity.next_chain_file.clear();
  identity.next_cert_id.clear();
  identity.next_cert_not_after = 0;
  identity.next_cert_issued_at = 0;
  identity.renewal = RenewalStep::kNone;
  ++identity.renewals;
  identity.attempts = 0;
  identity.renewal_error.clear();
  identity.active_since = options_.clock->WallMillis();
  // The next pass (at once, also after a restart) asks, over the bridge's
  // connection with the new certificate, for the previous one to be retired.
  identity.next_attempt = identity.active_since;
  GA_RETURN_IF_ERROR(Commit(identity));
  options_.crash("renew-switched", identity.name);
  Say(log::Level::kInfo, identity,
      "now uses certificate " + identity.cert_id + " (renewal " +
          std::to_string(identity.renewals) + ", valid until " +
          FormatUtc(identity.cert_not_after, "%Y-%m-%dT%H:%M:%SZ") + ")");
  RemoveUnusedFiles(identity, IdentityDir(identity.name));
  return Status::Ok();
}

}  // namespace ga
