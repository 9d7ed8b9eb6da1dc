// Enrollment: takes every identity (the gateway and each sensor) from nothing
// to an ACTIVE AWS IoT certificate.
//
//   NEW -> KEYED        a key is created in the TPM and its blob saved
//   KEYED -> CERTIFIED  a CSR signed in the TPM is issued by the local CA; the
//                       certificate and chain (certificate, CA) are saved
//   CERTIFIED -> REGISTERING -> ACTIVE
//                       connect until AWS IoT accepts the certificate (JITR)
//
// Each transition is committed to the IdentityStore before the next step.
// After a crash anywhere, the step is redone without making a second key or
// certificate: a saved key file is reused, and so is a saved certificate that
// matches the key.
//
// Connects are paced: an account-wide token bucket (aws.connect_rate), at
// most one CONNECT per second per client id, per-identity exponential backoff
// with full jitter, and at most enrollment.concurrency identities in progress.
#pragma once

#include <openssl/x509.h>

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/config.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

// What the local CA returns for a CSR.
struct IssuedPem {
  std::string certificate;  // PEM, the device certificate
  std::string chain;        // PEM, the device certificate then its CA certificate(s)
};
// `organizational_unit` is "gateway" for the gateway's own certificate, empty
// for sensors.
using IssueFunction = std::function<Result<IssuedPem>(X509_REQ* csr, const std::string& thing_name,
                                                      const std::string& organizational_unit)>;

struct EnrollmentCounts {
  int total = 0;
  int active = 0;
  int registering = 0;
  int parked = 0;
  int in_progress = 0;  // NEW, KEYED, CERTIFIED
  int shared = 0;       // sensors over the gateway's connection
  // "3/21 active, 18 registering"
  std::string ToString() const;
};

class Enrollment {
 public:
  struct Options {
    Config config;
    std::shared_ptr<tpm::TpmContext> tpm;
    IdentityStore* store = nullptr;
    IssueFunction issue;
    // Called (from a worker thread) after every committed state change.
    std::function<void(const Identity&)> on_change;
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
  // Returns the identity as it was (for its certificate id).
  Result<Identity> RemoveSensor(const std::string& id);

  std::vector<Identity> Snapshot();
  EnrollmentCounts Counts();

  // The directory of an identity's key, certificate and chain files.
  std::filesystem::path IdentityDir(const std::string& name) const;

 private:
  void Worker();
  // Runs the next step(s) of one identity; commits each state change.
  void Advance(Identity& identity);
  Status MakeKey(Identity& identity);
  Status MakeCertificate(Identity& identity);
  void Register(Identity& identity);
  // Commits `identity` unless it was removed meanwhile; false if removed.
  bool Commit(const Identity& identity);
  void Retry(Identity& identity, const std::string& error, bool counted,
             std::chrono::milliseconds cap_override = {});
  bool Actionable(const Identity& identity) const;
  Status CheckGatewayMayCarry(const std::string& thing, int more);

  Options options_;
  BackoffPolicy backoff_;
  SharedTokenBucket account_connects_;

  // Serializes sensor additions, removals and moves (control socket, reload).
  std::mutex changes_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::string, Identity> identities_;  // guarded by mu_
  std::set<std::string> in_flight_;             // guarded by mu_
  std::set<std::string> removed_;               // guarded by mu_
  std::set<std::string> moving_;  // SetConnection waits for their step; guarded by mu_
  std::map<std::string, int> network_failures_;                  // guarded by mu_
  std::map<std::string, SteadyClock::time_point> last_connect_;  // guarded by mu_
  std::mt19937_64 rng_;                                          // guarded by mu_
  std::vector<std::thread> workers_;
};

// Crash points for the fault-injection tests: when the environment variable
// GATEWAY_AGENT_CRASH_AT is "<point>" or "<point>:<identity>", the process
// kills itself with SIGKILL on reaching that point.
void CrashPoint(std::string_view point, std::string_view identity);

}  // namespace ga
