// What `gateway-agent check` verifies on a gateway, as a library: the
// configuration, the clock, the TPM, every identity's key and certificate
// files, the local CA, the AWS IoT endpoint, the local broker and the state
// directory.
//
// Every check is read-only and safe while the agent runs: the state
// databases are opened read-only, no key or SRK is created, and the local
// broker sees a client id of the check's own (never an identity's).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

// What is wrong with an identity's key and certificate files, if anything.
struct IdentityFileCheck {
  enum Problem {
    kNone,
    kKeyMissing,        // no key file: the key must be made again (re-enroll)
    kKeyUnusable,       // the key file does not parse or does not load in this TPM
    kCertMissing,       // the certificate or chain file is missing or unreadable
    kCertMismatch,      // the certificate (or the chain's leaf) is not for this key
    kCertExpired,       // past notAfter
    kCertNotYetValid,   // before notBefore (or the clock is wrong)
    kCertExpiringSoon,  // within 30 days of notAfter, or past 80% of its validity
  };
  Problem problem = kNone;
  std::string detail;  // what was found, naming the file
};

std::string_view ProblemName(IdentityFileCheck::Problem problem);

// When this binary was built: a clock before it is wrong (no certificate is
// issued and no renewal decided by it).
Millis BuildEpochMillis();
// "waiting for a trustworthy clock: ..." with what to do, for a clock at `now`
// before BuildEpochMillis().
std::string ClockProblem(Millis now);

// Inspects the files of `identity` (its key from KEYED on, its certificate
// and chain once it has them): the key blob parses and, when `tpm` is given,
// loads and signs in it; the certificate and the chain's leaf match the key
// (X509_check_private_key); the certificate is valid at `now`, not close to
// its end. An error means it could not tell (the TPM is unreachable): nothing
// about the files follows from it.
Result<IdentityFileCheck> InspectIdentityFiles(const Identity& identity,
                                               const std::shared_ptr<tpm::TpmContext>& tpm,
                                               Millis now);

enum class CheckLevel { kOk, kWarning, kError };
std::string_view LevelName(CheckLevel level);  // "ok", "warning", "error"

// One line of the report.
struct HealthCheck {
  std::string name;  // "config", "tpm", "identity gateway", "aws tcp", ...
  CheckLevel level = CheckLevel::kOk;
  std::string detail;  // what was checked and found
  std::string fix;     // what to do (warnings and errors)
};

// Timeouts of the network checks: each of resolve+connect, TLS handshake,
// MQTT CONNACK.
inline constexpr std::chrono::seconds kCheckNetworkTimeout{5};

// Every check, in order, for the configuration file at `config_file`. An
// invalid or unreadable configuration gives one error line with every
// problem and no further checks.
std::vector<HealthCheck> RunHealthChecks(const std::filesystem::path& config_file);

// The checks that need the network: DNS, TCP and TLS to the AWS IoT endpoint
// (the server's certificate verified against aws.root_ca, host name
// included; no client certificate is sent), and an MQTT CONNECT to the local
// broker with the agent's credentials and the client id
// "gateway-agent-check-<pid>".
std::vector<HealthCheck> CheckAwsEndpoint(const AwsConfig& aws);
// With local.manage_clients it does not log in as the agent (that would take
// over its session) but tests the ACLs as the boundary probe's client, with
// `probe_password` (empty: not made yet, a warning).
HealthCheck CheckLocalBroker(const LocalConfig& local, const std::string& probe_password = "");
// What to say when the local broker lets an anonymous client in (any LAN
// client could then publish as any sensor); nullopt when it refuses one; an
// error when it cannot be reached. Connects once, with a timeout.
Result<std::optional<std::string>> LocalBrokerOpenWarning(const LocalConfig& local);
// What to say when the local broker lets bridge::kBoundaryProbeUser (logged
// in with `password`), whose role grants nothing, publish to a sensor's topic
// under local.ingest_filter (BoundaryProbeTopic): then it does not confine
// sensors to their own topics. nullopt when its PUBACK refuses (MQTT v5
// reason code >= 0x80); an error when the probe could not log in or got no
// answer in time.
Result<std::optional<std::string>> LocalBrokerConfinementWarning(const LocalConfig& local,
                                                                 const std::string& password);
// A topic under local.ingest_filter for a sensor id no sensor can have.
std::string BoundaryProbeTopic(const LocalConfig& local);

}  // namespace ga
