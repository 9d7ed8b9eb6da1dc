#include "gateway_agent/agent/health_checks.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/current_ca.h"
#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/bridge/outbox.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/tpm/tpm_key.h"
#include "local_credentials.h"

#ifndef GATEWAY_AGENT_BUILD_EPOCH
#define GATEWAY_AGENT_BUILD_EPOCH 0
#endif

namespace ga {

namespace {

constexpr Millis kDay = 24LL * 3600 * 1000;
// A certificate is renewed when this close to its end, or past 80% of its life.
constexpr Millis kExpiringWithin = 30 * kDay;
constexpr uint64_t kMiB = 1ull << 20;
// The account the service runs as (systemd/sysusers.d); files it must own.
constexpr const char* kServiceUser = "gateway-agent";

HealthCheck Ok(std::string name, std::string detail) {
  return {std::move(name), CheckLevel::kOk, std::move(detail), ""};
}
HealthCheck Warn(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckLevel::kWarning, std::move(detail), std::move(fix)};
}
HealthCheck Error(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckLevel::kError, std::move(detail), std::move(fix)};
}

Millis ToMillis(const ASN1_TIME* time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             pki::ToTimePoint(time).time_since_epoch())
      .count();
}

std::string FormatMillis(Millis ms) {
  return FormatUtc(ms, "%Y-%m-%d %H:%M:%S UTC");
}

std::string FormatAge(Millis ms) {
  if (ms < 120 * 1000) return std::to_string(ms / 1000) + " s";
  if (ms < 2 * 3600 * 1000) return std::to_string(ms / 60000) + " min";
  if (ms < 2 * kDay) return std::to_string(ms / 3600000) + " h";
  return std::to_string(ms / kDay) + " days";
}

// Where `cert` stands at `now`: kNone, kCertExpired, kCertNotYetValid or
// kCertExpiringSoon, with its window in the detail.
IdentityFileCheck JudgeValidity(const X509* cert, const std::string& what, Millis now) {
  const Millis not_before = ToMillis(X509_get0_notBefore(cert));
  const Millis not_after = ToMillis(X509_get0_notAfter(cert));
  IdentityFileCheck c;
  if (now < not_before) {
    c.problem = IdentityFileCheck::kCertNotYetValid;
    c.detail = what + " is not valid before " + FormatMillis(not_before);
  } else if (now >= not_after) {
    c.problem = IdentityFileCheck::kCertExpired;
    c.detail = what + " expired " + FormatMillis(not_after);
  } else {
    const Millis left = not_after - now;
    const Millis eighty_percent = not_before + (not_after - not_before) / 5 * 4;
    c.detail = what + " valid until " + FormatMillis(not_after) + " (" + FormatAge(left) + " left)";
    if (left < kExpiringWithin || now >= eighty_percent) {
      c.problem = IdentityFileCheck::kCertExpiringSoon;
    }
  }
  return c;
}

IdentityFileCheck Found(IdentityFileCheck::Problem problem, std::string detail) {
  return {problem, std::move(detail)};
}

bool ExpectsCertificate(const Identity& id) {
  return !id.cert_file.empty() || id.state == EnrollmentState::kCertified ||
         id.state == EnrollmentState::kRegistering || id.state == EnrollmentState::kActive;
}

bool HasFiles(const Identity& id) {
  return id.state != EnrollmentState::kNew && id.state != EnrollmentState::kRemoved &&
         id.state != EnrollmentState::kShared && !id.key_file.empty();
}

// The uid files of the service must belong to: the service user when the
// system has one, else whoever runs this.
struct Owner {
  uid_t uid;
  std::string name;
};
Owner ExpectedOwner() {
  if (const passwd* pw = getpwnam(kServiceUser)) return {pw->pw_uid, kServiceUser};
  const passwd* me = getpwuid(geteuid());
  return {geteuid(), me ? me->pw_name : "uid " + std::to_string(geteuid())};
}

std::string ModeText(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// The identities with files, from the state database (read-only). Empty
// when the agent has not made the database yet.
Result<std::vector<Identity>> StoredIdentities(const Config& config) {
  const auto path = config.agent.state_dir / kStateDb;
  if (!std::filesystem::exists(path)) return std::vector<Identity>{};
  GA_ASSIGN_OR_RETURN(auto store, IdentityStore::OpenReadOnly(path));
  return store->List();
}

HealthCheck CheckClock(const Config& config, const std::vector<Identity>& identities, Millis now) {
  const Millis built = BuildEpochMillis();
  if (now < built) {
    return Error(
        "clock",
        "the clock says " + FormatMillis(now) + ", before this build (" + FormatMillis(built) + ")",
        "set the time: timedatectl set-ntp true, or timedatectl set-time");
  }
  std::vector<std::filesystem::path> files = {config.ca.cert, config.aws.root_ca};
  for (const Identity& id : identities) {
    if (HasFiles(id) && !id.cert_file.empty()) files.emplace_back(id.cert_file);
  }
  std::string past;
  for (const auto& file : files) {
    auto cert = pki::ReadCertificateFile(file);
    if (!cert.ok()) continue;  // the check of that file says why
    const Millis not_after = ToMillis(X509_get0_notAfter(cert->get()));
    if (now >= not_after) {
      past += (past.empty() ? "" : ", ") + file.string() + " (" + FormatMillis(not_after) + ")";
    }
  }
  ClearOpenSslErrors();
  if (!past.empty()) {
    return Error("clock", "the clock says " + FormatMillis(now) + ", after the end of " + past,
                 "if the time is right these certificates expired (see their checks); otherwise "
                 "set the time (timedatectl)");
  }
  return Ok("clock", FormatMillis(now) + ", after this build (" + FormatMillis(built) +
                         ") and within every stored certificate's validity");
}

// The TPM check; sets *tpm when it answers and holds the SRK (a key
// operation without one would create it), else *why_not says why not.
HealthCheck CheckTpm(const Config& config, std::shared_ptr<tpm::TpmContext>* tpm,
                     std::string* why_not) {
  *why_not = "the TPM does not answer";
  auto opened = tpm::TpmContext::Open({config.tpm.tcti, config.tpm.srk_handle});
  if (!opened.ok()) {
    return Error("tpm", opened.status().message(),
                 "check tpm.tcti; start the TPM service (swtpm, tpm2-abrmd) or check /dev/tpmrm0 "
                 "and that the user is in group tss");
  }
  auto info = (*opened)->Info();
  if (!info.ok()) {
    return Error("tpm", info.status().message(), "check the TPM with tpm2_getcap properties-fixed");
  }
  char handle[16];
  std::snprintf(handle, sizeof handle, "0x%08x", config.tpm.srk_handle);
  const std::string what = "TPM at " + config.tpm.tcti + " (" + info->manufacturer + ")";
  *why_not = std::string("no usable SRK at ") + handle;
  if (!info->srk_problem.empty()) {
    return Error("tpm", what + ": " + info->srk_problem,
                 std::string("tpm.srk_handle names an object that is not a storage key: choose a "
                             "free handle, or evict it (tpm2_evictcontrol -c ") +
                     handle + ") if nothing else uses it");
  }
  if (!info->srk_present) {
    return Warn("tpm", what + ": no SRK at " + handle,
                "the agent creates it when it starts, from the standard template: keys made "
                "before load again unless the TPM was cleared since");
  }
  *tpm = std::move(*opened);
  if (info->in_lockout) {
    return Warn("tpm", what + ": in dictionary-attack lockout",
                "wait for the lockout to expire or clear it (tpm2_dictionarylockout -c)");
  }
  return Ok("tpm", what + ", SRK at " + handle);
}

std::string FixFor(IdentityFileCheck::Problem problem, const Identity& id) {
  const std::string again = id.kind == IdentityKind::kSensor
                                ? "enroll it again (gateway-agent sensor remove " + id.name +
                                      ", then sensor add " + id.name + ")"
                                : "the gateway needs a new key and certificate (enroll it again)";
  switch (problem) {
    case IdentityFileCheck::kNone: return "";
    case IdentityFileCheck::kKeyMissing:
      return "restore the key file from a backup, otherwise " + again;
    case IdentityFileCheck::kKeyUnusable:
      return "the key was made in another TPM or under an SRK that is gone: " + again;
    case IdentityFileCheck::kCertMissing:
    case IdentityFileCheck::kCertMismatch:
      return "restore the identity's own certificate and chain, otherwise " + again;
    case IdentityFileCheck::kCertExpired:
      return "check the clock (timedatectl); if it is right, the running agent renews it by "
             "itself (see the renewal lines; gateway-agent renew --identity " +
             id.name + " starts one now)";
    case IdentityFileCheck::kCertNotYetValid:
      return "check the clock (timedatectl); if it is right, " + again;
    case IdentityFileCheck::kCertExpiringSoon:
      return "the running agent renews it by itself (see the renewal lines; gateway-agent renew "
             "--identity " +
             id.name + " starts one now)";
  }
  return "";
}

std::vector<HealthCheck> CheckIdentities(const Result<std::vector<Identity>>& identities,
                                         const std::shared_ptr<tpm::TpmContext>& tpm,
                                         const std::string& no_tpm, Millis now) {
  if (!identities.ok()) {
    return {Error("identities", identities.status().message(),
                  "check agent.state_dir and its state.db")};
  }
  std::vector<HealthCheck> out;
  for (const Identity& id : *identities) {
    if (!HasFiles(id)) continue;
    const std::string name = "identity " + id.name;
    if (!tpm) {
      out.push_back(Warn(name, "key not checked: " + no_tpm, "see the tpm check"));
      continue;
    }
    auto inspected = InspectIdentityFiles(id, tpm, now);
    if (!inspected.ok()) {
      out.push_back(
          Warn(name, "not checked: " + inspected.status().message(), "see the tpm check"));
      continue;
    }
    const std::string state = std::string(StateName(id.state));
    if (inspected->problem == IdentityFileCheck::kNone) {
      out.push_back(Ok(name, state + ", key loads in the TPM, " + inspected->detail));
    } else if (inspected->problem == IdentityFileCheck::kCertExpiringSoon) {
      out.push_back(Warn(name, state + ", " + inspected->detail, FixFor(inspected->problem, id)));
    } else {
      out.push_back(Error(name, state + ", " + inspected->detail, FixFor(inspected->problem, id)));
    }
  }
  if (out.empty()) out.push_back(Ok("identities", "no identity has a key yet"));
  return out;
}

// A file the service reads secrets from: 0600 or stricter, owned by the service user.
std::optional<HealthCheck> CheckSecretFile(const std::string& name,
                                           const std::filesystem::path& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Error(name, ErrnoStatus("stat " + path.string(), errno).message(),
                 "check ca.key, or create the CA with gateway-agent ca init");
  }
  const Owner owner = ExpectedOwner();
  if ((st.st_mode & 077) != 0) {
    return Error(name, path.string() + " has mode " + ModeText(st.st_mode),
                 "chmod 0600 " + path.string());
  }
  if (st.st_uid != owner.uid) {
    return Warn(
        name,
        path.string() + " is owned by uid " + std::to_string(st.st_uid) + ", not " + owner.name,
        "chown " + owner.name + " " + path.string());
  }
  return std::nullopt;
}

// [local] password_file holds the agent's password on the local broker: a
// warning when group or others may read it (run accepts it: the broker
// confines that user; the proxy's password file is refused).
std::optional<HealthCheck> CheckLocalPassword(const LocalConfig& local) {
  struct stat st {};
  if (local.password_file.empty() || stat(local.password_file.c_str(), &st) != 0 ||
      (st.st_mode & 077) == 0) {
    return std::nullopt;  // unreadable: the config check says so
  }
  const std::string path = local.password_file.string();
  return Warn("local password",
              path + " has mode " + ModeText(st.st_mode) +
                  ": others than the service may read the agent's password on the local broker",
              "chmod 0600 " + path);
}

HealthCheck CheckLocalCa(const Config& config, Millis now) {
  const std::string name = "local ca";
  auto cert = pki::ReadCertificateFile(config.ca.cert);
  if (!cert.ok()) {
    ClearOpenSslErrors();
    if (config.ca.backend == CaBackend::kCommand) {
      return Ok(name, "command CA; no certificate at " + config.ca.cert.string());
    }
    return Error(name, cert.status().message(),
                 "check ca.cert, or create the CA with gateway-agent ca init");
  }
  IdentityFileCheck validity = JudgeValidity(cert->get(), config.ca.cert.string(), now);
  if (validity.problem == IdentityFileCheck::kCertExpired ||
      validity.problem == IdentityFileCheck::kCertNotYetValid) {
    return Error(name, validity.detail,
                 "check the clock; an expired CA cannot issue: make a new one (ca init) and "
                 "register it with AWS IoT");
  }
  if (config.ca.backend == CaBackend::kFile) {
    if (auto bad = CheckSecretFile(name, config.ca.key)) return *bad;
  }
  // What run refuses to start with (and check-config reports).
  if (Status files = CheckStartupFiles(config); !files.ok()) {
    return Error(name, files.message(), "fix [ca] or its files: run refuses to start without");
  }
  const char* kNewCa =
      "set up a new CA (gateway-agent ca init, register it with AWS IoT), name it in [ca] and "
      "reload: every identity renews onto it";
  if (validity.problem == IdentityFileCheck::kCertExpiringSoon)
    return Warn(name, validity.detail, kNewCa);
  // A certificate issued now would be due for renewal after the CA ends:
  // it is cut short to the CA's end, and so is every renewal after it.
  const Millis ca_ends = ToMillis(X509_get0_notAfter(cert->get()));
  const Millis next_renewal =
      now +
      static_cast<Millis>(
          static_cast<double>(
              std::chrono::duration_cast<std::chrono::milliseconds>(config.ca.validity).count()) *
          config.renewal.threshold);
  if (ca_ends < next_renewal) {
    return Warn(name,
                "it ends on " + FormatUtc(ca_ends, "%Y-%m-%d") +
                    ", before certificates issued now would renew: they end with it",
                kNewCa);
  }
  return Ok(name, "backend " +
                      std::string(config.ca.backend == CaBackend::kFile  ? "file"
                                  : config.ca.backend == CaBackend::kTpm ? "tpm"
                                                                         : "command") +
                      ", " + validity.detail);
}

std::vector<HealthCheck> CheckStateDir(const Config& config, Millis now) {
  const auto& dir = config.agent.state_dir;
  std::vector<HealthCheck> out;
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    out.push_back(Error("state_dir", dir.string() + " is not a directory",
                        "create it (systemd-tmpfiles --create) or check agent.state_dir"));
    return out;
  }
  const Owner owner = ExpectedOwner();
  if ((st.st_mode & 077) != 0) {
    out.push_back(Warn("state_dir", dir.string() + " has mode " + ModeText(st.st_mode),
                       "chmod 0700 " + dir.string()));
  } else if (st.st_uid != owner.uid) {
    out.push_back(
        Warn("state_dir",
             dir.string() + " is owned by uid " + std::to_string(st.st_uid) + ", not " + owner.name,
             "chown -R " + owner.name + " " + dir.string()));
  } else {
    out.push_back(
        Ok("state_dir", dir.string() + ", mode " + ModeText(st.st_mode) + ", owner " + owner.name));
  }

  struct statvfs fs {};
  if (statvfs(dir.c_str(), &fs) != 0) {
    out.push_back(Error("free space", ErrnoStatus("statvfs " + dir.string(), errno).message(),
                        "check the file system of agent.state_dir"));
  } else {
    const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    const double ratio = fs.f_blocks == 0 ? 0 : static_cast<double>(fs.f_bavail) / fs.f_blocks;
    char text[96];
    std::snprintf(text, sizeof text, "%.1f MiB free (%.0f%%)",
                  static_cast<double>(free_bytes) / kMiB, ratio * 100);
    const std::string fix = "free space on the file system of " + dir.string() +
                            " (the outbox grows while the cloud is away)";
    if (free_bytes < kMiB) {
      out.push_back(Error("free space", text, fix));
    } else if (free_bytes < 100 * kMiB || ratio < 0.10) {
      out.push_back(Warn("free space", text, fix));
    } else {
      out.push_back(Ok("free space", text));
    }
  }

  auto stats = bridge::ReadOutboxStats(dir / bridge::kOutboxDb);
  if (!stats.ok()) {
    const std::string path = (dir / bridge::kOutboxDb).string();
    out.push_back(Error(
        "outbox", stats.status().message(),
        stats.status().code() == Code::kInvalidArgument
            ? "not a database any more: stop the agent and move " + path +
                  " aside (with its -wal file); the agent makes a new one, the messages in the "
                  "old one are not sent"
            : "check " + path + " and its permissions"));
    return out;
  }
  int64_t messages = 0;
  Millis oldest = 0;
  for (const auto& [identity, s] : *stats) {
    messages += s.messages;
    if (s.oldest_ms != 0 && (oldest == 0 || s.oldest_ms < oldest)) oldest = s.oldest_ms;
  }
  out.push_back(
      Ok("outbox",
         std::to_string(messages) + " message" + (messages == 1 ? "" : "s") + " waiting" +
             (oldest != 0 ? ", the oldest " + FormatAge(now - oldest) + " old" : std::string())));
  return out;
}

}  // namespace

Millis BuildEpochMillis() {
  return static_cast<Millis>(GATEWAY_AGENT_BUILD_EPOCH) * 1000;
}

std::string ClockProblem(Millis now) {
  return "waiting for a trustworthy clock: it says " + FormatMillis(now) + ", before this build (" +
         FormatMillis(BuildEpochMillis()) +
         "); no certificate is issued or renewed until it is set (timedatectl set-ntp true; "
         "on a gateway without a battery-backed clock, systemctl enable "
         "systemd-time-wait-sync)";
}

std::string_view ProblemName(IdentityFileCheck::Problem problem) {
  switch (problem) {
    case IdentityFileCheck::kNone: return "none";
    case IdentityFileCheck::kKeyMissing: return "key-missing";
    case IdentityFileCheck::kKeyUnusable: return "key-unusable";
    case IdentityFileCheck::kCertMissing: return "cert-missing";
    case IdentityFileCheck::kCertMismatch: return "cert-mismatch";
    case IdentityFileCheck::kCertExpired: return "cert-expired";
    case IdentityFileCheck::kCertNotYetValid: return "cert-not-yet-valid";
    case IdentityFileCheck::kCertExpiringSoon: return "cert-expiring-soon";
  }
  return "unknown";
}

std::string_view LevelName(CheckLevel level) {
  switch (level) {
    case CheckLevel::kOk: return "ok";
    case CheckLevel::kWarning: return "warning";
    case CheckLevel::kError: return "error";
  }
  return "error";
}

Result<IdentityFileCheck> InspectIdentityFiles(const Identity& identity,
                                               const std::shared_ptr<tpm::TpmContext>& tpm,
                                               Millis now) {
  if (tpm == nullptr) return FailedPrecondition("no TPM to load the key of " + identity.name);
  if (identity.key_file.empty()) {
    return Found(IdentityFileCheck::kKeyMissing, "no key file recorded");
  }
  if (!std::filesystem::exists(identity.key_file)) {
    return Found(IdentityFileCheck::kKeyMissing, "key file " + identity.key_file + " is missing");
  }
  auto blob = tpm::TpmKeyBlob::ReadFile(identity.key_file);
  if (!blob.ok()) return Found(IdentityFileCheck::kKeyUnusable, blob.status().message());
  // A signature proves the TPM can load the key (same TPM, same SRK).
  if (Status tried = tpm->TryKey(*blob); !tried.ok()) {
    if (tried.code() == Code::kUnavailable || tried.code() == Code::kTimeout) {
      return tried;  // the TPM, not the key
    }
    return Found(IdentityFileCheck::kKeyUnusable,
                 "key " + identity.key_file + " does not load in this TPM: " + tried.message());
  }
  auto key = tpm::MakeEvpPkey(tpm, *blob);
  if (!key.ok()) return Found(IdentityFileCheck::kKeyUnusable, key.status().message());
  if (!ExpectsCertificate(identity)) return Found(IdentityFileCheck::kNone, "no certificate yet");

  if (identity.cert_file.empty() || !std::filesystem::exists(identity.cert_file)) {
    return Found(IdentityFileCheck::kCertMissing,
                 "certificate " +
                     (identity.cert_file.empty() ? "(none recorded)" : identity.cert_file) +
                     " is missing");
  }
  auto cert = pki::ReadCertificateFile(identity.cert_file);
  if (!cert.ok()) {
    ClearOpenSslErrors();
    return Found(IdentityFileCheck::kCertMissing, cert.status().message());
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ClearOpenSslErrors();
    return Found(IdentityFileCheck::kCertMismatch,
                 "certificate " + identity.cert_file + " (" +
                     pki::NameToString(X509_get_subject_name(cert->get())) + ") is not for key " +
                     identity.key_file);
  }
  // The chain is what the connections present: its leaf must match too.
  if (identity.chain_file.empty() || !std::filesystem::exists(identity.chain_file)) {
    return Found(IdentityFileCheck::kCertMissing,
                 "certificate chain " +
                     (identity.chain_file.empty() ? "(none recorded)" : identity.chain_file) +
                     " is missing");
  }
  EVP_PKEY_up_ref(key->get());
  auto chain = tpm::LoadClientIdentity(EvpPkeyPtr(key->get()), identity.chain_file);
  if (!chain.ok()) {
    ClearOpenSslErrors();
    return Found(chain.status().code() == Code::kInvalidArgument ? IdentityFileCheck::kCertMismatch
                                                                 : IdentityFileCheck::kCertMissing,
                 chain.status().message());
  }
  return JudgeValidity(cert->get(),
                       "certificate " + pki::AwsCertificateId(cert->get()).substr(0, 12), now);
}

// The renewals: per identity, what keeps its certificate from renewing or
// its previous one from being retired. One line when nothing does.
std::vector<HealthCheck> CheckRenewals(const Config& config,
                                       const Result<std::vector<Identity>>& identities,
                                       Millis now) {
  if (!identities.ok()) return {};
  auto ca = pki::ReadCertificateFile(config.ca.cert);
  ClearOpenSslErrors();
  const std::string ca_id = ca.ok() ? pki::AwsCertificateId(ca->get()) : "";
  const Millis ca_ends = ca.ok() ? ToMillis(X509_get0_notAfter(ca->get())) : 0;
  std::vector<HealthCheck> out;
  int onto_new_ca = 0;
  for (const Identity& id : *identities) {
    if (id.state != EnrollmentState::kActive || id.cert_not_after == 0) continue;
    const std::string name = "renewal " + id.name;
    const std::string issuer = IssuerIdOf(id.chain_file);
    if (!ca_id.empty() && !issuer.empty() && issuer != ca_id) ++onto_new_ca;
    if (!id.retiring_cert_id.empty() && !id.renewal_error.empty()) {
      out.push_back(Warn(name,
                         "previous certificate " + id.retiring_cert_id.substr(0, 12) +
                             " not retired yet: " + id.renewal_error,
                         "check the retire rule and Lambda (cloud/README.md); the agent asks "
                         "again by itself"));
    } else if (id.renewal != RenewalStep::kNone && !id.renewal_error.empty()) {
      out.push_back((id.cert_not_after <= now ? Error : Warn)(
          name,
          "renewing (" + std::string(RenewalStepName(id.renewal)) + "), certificate ends " +
              FormatUtc(id.cert_not_after, "%Y-%m-%dT%H:%M:%SZ") + ": " + id.renewal_error,
          "see the error; the agent tries again by itself"));
    } else if (ca_ends != 0 && issuer == ca_id && id.cert_not_after >= ca_ends) {
      out.push_back(Warn(name,
                         "certificate ends with the CA on " + FormatUtc(ca_ends, "%Y-%m-%d") +
                             ": no renewal from it can outlive it",
                         "set up a new CA (gateway-agent ca init, register it with AWS IoT), "
                         "name it in [ca] and reload"));
    }
  }
  if (out.empty()) {
    out.push_back(Ok("renewal", onto_new_ca == 0
                                    ? "nothing keeps a certificate from renewing"
                                    : std::to_string(onto_new_ca) + " identit" +
                                          (onto_new_ca == 1 ? "y renews" : "ies renew") +
                                          " onto the CA of [ca]"));
  }
  return out;
}

std::vector<HealthCheck> RunHealthChecks(const std::filesystem::path& config_file) {
  std::vector<HealthCheck> out;
  auto loaded = LoadConfig(config_file);
  if (!loaded.ok()) {
    out.push_back(
        Error("config", loaded.status().message(), "check --config and the file's permissions"));
    return out;
  }
  if (!loaded->ok()) {
    std::string problems;
    for (const auto& p : loaded->problems)
      problems += (problems.empty() ? "" : "; ") + p.ToString();
    out.push_back(Error("config", problems,
                        "fix the file (gateway-agent check-config lists every "
                        "problem); the other checks need a valid file"));
    return out;
  }
  const Config& config = loaded->config;
  out.push_back(Ok("config", config_file.string() + ": valid (gateway " + config.agent.thing_name +
                                 ", " + std::to_string(config.sensors.size()) + " sensor" +
                                 (config.sensors.size() == 1 ? ")" : "s)")));
  const Millis now = NowMillis();
  auto identities = StoredIdentities(config);
  out.push_back(CheckClock(config, identities.ok() ? *identities : std::vector<Identity>{}, now));
  std::shared_ptr<tpm::TpmContext> tpm;
  std::string no_tpm;
  out.push_back(CheckTpm(config, &tpm, &no_tpm));
  for (auto& c : CheckIdentities(identities, tpm, no_tpm, now)) out.push_back(std::move(c));
  out.push_back(CheckLocalCa(config, now));
  for (auto& c : CheckRenewals(config, identities, now)) out.push_back(std::move(c));
  for (auto& c : CheckAwsEndpoint(config.aws)) out.push_back(std::move(c));
  std::string probe_password;
  if (config.local.manage_clients) {
    auto pw = LocalCredentials(config.agent.state_dir).Existing(bridge::kBoundaryProbeUser);
    if (pw.ok()) probe_password = std::move(*pw);
  }
  if (auto open = CheckLocalPassword(config.local)) out.push_back(std::move(*open));
  out.push_back(CheckLocalBroker(config.local, probe_password));
  for (auto& c : CheckStateDir(config, now)) out.push_back(std::move(c));
  return out;
}

}  // namespace ga
