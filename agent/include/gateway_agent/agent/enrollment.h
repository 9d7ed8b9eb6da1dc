// Enrollment: takes every identity (the gateway and each sensor) from nothing
// to an ACTIVE AWS IoT certificate.
//
//   NEW -> KEYED        a key is created in the TPM and its blob saved
//   KEYED -> CERTIFIED  a CSR signed in the TPM is issued by the local CA; the
//                       certificate and chain (certificate, CA) are saved
//   CERTIFIED -> REGISTERING -> ACTIVE
//                       connect until AWS IoT accepts the certificate (JITR)
//
// Each transition is committed to the IdentityStore before the next step; a
// step whose commit fails is not followed by the next one, and is retried
// from the state last committed. After a crash anywhere, the step is redone
// without making a second key or certificate (enrollment_steps.h).
//
// The parts: the steps (enrollment_steps.h), what a connect outcome means
// (connect_verdict.h), when the next connect may happen (connect_scheduler.h:
// per-identity exponential backoff with full jitter, at most one CONNECT per
// second per client id, the account-wide aws.connect_rate), and the sensor
// roster (sensor_roster.h: sensors added, moved and removed at run time).
// At most enrollment.concurrency identities are in progress at once.
#pragma once

#include <openssl/x509.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

class ConnectScheduler;
class CurrentCa;
class IdentityTable;
class SensorRoster;
struct StepContext;

// What the local CA returns for a CSR.
struct IssuedPem {
  std::string certificate;  // PEM, the device certificate
  std::string chain;        // PEM, the device certificate then its CA certificate(s)
};
// `organizational_unit` is "gateway" for the gateway's own certificate, empty
// for sensors.
using IssueFunction = std::function<Result<IssuedPem>(X509_REQ* csr, const std::string& thing_name,
                                                      const std::string& organizational_unit)>;

// One JITR connect attempt (AttemptConnect; a test may pass a fake).
using Connector = std::function<ConnectAttempt(const ConnectOptions&)>;

// Called at each named point of a step ("key-created", "cert-saved", ...)
// with the identity's name; the fault-injection tests kill the process there.
using CrashHook = std::function<void(std::string_view point, std::string_view identity)>;

// Crash points for the fault-injection tests: when the environment variable
// GATEWAY_AGENT_CRASH_AT is "<point>" or "<point>:<identity>", the process
// kills itself with SIGKILL on reaching that point.
void CrashPoint(std::string_view point, std::string_view identity);

struct EnrollmentCounts {
  int total = 0;
  int active = 0;
  int registering = 0;
  int parked = 0;
  int in_progress = 0;  // NEW, KEYED, CERTIFIED
  int shared = 0;       // sensors over the gateway's connection
  int proving = 0;      // ACTIVE ones whose renewal's connect has the bridge let go
  // "3/21 active, 18 registering"
  std::string ToString() const;
};

// When an ACTIVE identity's certificate is due for renewal (0: unknown):
// once renewal.threshold of its life has passed, or renewal.before is left.
Millis RenewAt(const Identity& id, const RenewalConfig& renewal);

// AWS IoT's answer to a lifecycle request (aws::LifecycleAsk: retire a
// certificate, hand the thing over to a new CA), answered by the JITR Lambda
// on lifecycle/<thing>/<action>/accepted or /rejected.
struct LifecycleAnswer {
  bool answered = false;  // false: no answer in time (the rule or Lambda may be down)
  bool accepted = false;
  std::string detail;  // the rejection's reason, or why there was no answer
};

class Enrollment {
 public:
  struct Options {
    Config config;
    std::shared_ptr<tpm::TpmContext> tpm;
    IdentityStore* store = nullptr;
    // Issues the certificates; a reload may replace the CA it holds (every
    // identity then renews onto the new one).
    std::shared_ptr<CurrentCa> ca;
    // Called (from a worker thread) after every committed state change.
    std::function<void(const Identity&)> on_change;
    Connector connect = AttemptConnect;
    // Must outlive the Enrollment.
    Clock* clock = &SystemClock();
    CrashHook crash = CrashPoint;
    // Asks over the identity's bridge connection (with the certificate in
    // use), which keeps carrying its messages: for its previous certificate
    // to be retired, for its thing to be handed over to a new CA. nullopt
    // when that connection is not up.
    std::function<std::optional<LifecycleAnswer>(const Identity&, const aws::LifecycleAsk&)> ask;
  };

  explicit Enrollment(Options options);
  ~Enrollment();
  Enrollment(const Enrollment&) = delete;
  Enrollment& operator=(const Enrollment&) = delete;

  // Adds the gateway and every [[sensor]] of the config that the store does
  // not know yet, then loads all identities.
  Status Load();
  void Start();
  void Stop();

  // Run-time sensor management (the control socket).
  Result<Identity> AddSensor(const std::string& id, const std::string& thing_name,
                             SensorConnection connection = SensorConnection::kOwn);
  // Moves a sensor onto the gateway's connection (SHARED: nothing to enroll)
  // or back onto its own (NEW: it enrolls from the start).
  Result<Identity> SetConnection(const std::string& id, SensorConnection connection);
  // Stops the identity, deletes its key blob and files, marks it REMOVED.
  // Returns the identity as it was (for its certificate id). A sensor of the
  // configuration file ([[sensor]]) is refused: the file would bring it back
  // at the next reload, so it is removed from the file and reloaded.
  Result<Identity> RemoveSensor(const std::string& id);
  // `gateway-agent renew`: an ACTIVE identity renews its certificate now
  // (with a new TPM key when `rekey`, whatever renewal.rekey says), paced
  // like every connect.
  // `force`: also an identity PARKED after it was ACTIVE (ParkRefused), which
  // becomes ACTIVE again and renews.
  Result<Identity> AskRenewal(const std::string& name, bool rekey, bool force = false);
  // The CA was replaced (Options::ca, a reload): every ACTIVE identity looks
  // at its certificate now, and those of another CA renew onto this one.
  void CaReplaced();
  // An ACTIVE identity whose certificate AWS IoT turns away while others
  // connect: PARKED with `reason`, not renewed behind the operator's back
  // (AskRenewal with `force` undoes it). Refused while a renewal is asked for
  // or in progress.
  Result<Identity> ParkRefused(const std::string& name, const std::string& reason);
  // An ACTIVE identity whose key is gone (from kNew) or whose certificate
  // does not fit its key (from kKeyed) enrolls again (SensorRoster::Reenroll).
  Result<Identity> Reenroll(const std::string& name, EnrollmentState from,
                            const std::string& reason);
  // The [[sensor]]s of the configuration file in effect (a reload sets them
  // before it removes the sensors that left the file).
  void SetFileSensors(const std::vector<SensorConfig>& sensors);

  std::vector<Identity> Snapshot();
  EnrollmentCounts Counts();

  // The directory of an identity's key, certificate and chain files.
  std::filesystem::path IdentityDir(const std::string& name) const;

 private:
  void Worker();
  // Runs the next step(s) of one identity; commits each state change. A step
  // that fails is handled (a retry is scheduled and committed); an error
  // returned means a commit failed or the identity was removed.
  Status Advance(Identity& identity);
  // Takes a step that makes something (a key, a certificate) and commits it;
  // a failed step is retried later, uncounted, with `error_prefix` in its
  // last error. `done` names the crash point after the commit.
  using StepFunction = Status (*)(Identity&, const StepContext&);
  Status MakeAndCommit(Identity& identity, StepFunction step, std::string_view what,
                       std::string_view error_prefix, std::string_view done);
  Status Register(Identity& identity);
  // An ACTIVE identity: renews its certificate when due (renewal.cc).
  Status Renew(Identity& identity);
  // The identity's certificate against the CA that issues now: the same
  // one; another (it renews onto this one), but a sensor waits for the
  // gateway to be on it first; or the same and the certificate ends with it
  // (renewing from it gains nothing).
  enum class CaVerdict { kSame, kOtherCa, kGatewayFirst, kEndsWithCa };
  CaVerdict JudgeCa(const Identity& identity);
  // Wakes the ACTIVE identities whose certificate is from another CA than
  // the one that issues now (they renew onto it); the others keep their
  // schedule (a start need not look at every certificate again).
  void WakeThoseOfAnotherCa();
  // One connect with the next certificate while the bridge lets go of the
  // identity's connection; once it is accepted, the switch to it.
  Status Prove(Identity& identity);
  // Before a certificate of another CA than the one in use is proven: asks,
  // over the connection with the certificate in use, for the thing to be
  // handed over to that CA (Options::ask). nullopt: go on; else the pass
  // ends there (waiting for the connection, or the refusal saved).
  std::optional<Status> HandOver(Identity& identity);
  // Asks for the previous certificate to be retired (Options::ask) and
  // saves the answer: the old files deleted once retired, else asked again.
  Status RetirePrevious(Identity& identity);
  // Changes the saved state of `name` by `change` (an error refuses it) while
  // no worker holds it; `what` names the change in a database error.
  Result<Identity> ChangeSaved(const std::string& name,
                               const std::function<Status(Identity&)>& change,
                               const std::string& what);
  Status RenewalFailed(Identity& identity, const std::string& error);
  // When a renewal step that failed is tried again: the backoff between
  // renewal.retry_initial and renewal.retry_max, after identity.attempts.
  Millis RenewalRetryAt(const Identity& identity);
  // Commits `identity`, unless it was removed meanwhile (an error then).
  Status Commit(const Identity& identity);
  // Records a failed step and when to try again, and commits that.
  Status Retry(Identity& identity, const std::string& error, bool counted,
               std::chrono::milliseconds cap_override = {});
  StepContext Steps() const;

  Options options_;
  IssueFunction issue_;  // options_.ca's
  std::unique_ptr<ConnectScheduler> scheduler_;
  std::unique_ptr<IdentityTable> table_;
  std::unique_ptr<SensorRoster> roster_;
  // Started and joined by the thread that owns the Enrollment.
  std::vector<std::thread> workers_;
};

}  // namespace ga
