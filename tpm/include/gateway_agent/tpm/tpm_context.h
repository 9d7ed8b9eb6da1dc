// One connection to a TPM through ESAPI, and every operation the agent does
// with it: the SRK, creating keys, signing digests.
//
// Thread safety: all methods may be called from any thread; they serialize on
// one internal lock (an ESYS context is not thread-safe, and swtpm or a TPM
// without resource manager serves one command at a time), taken in the order
// of the callers' TpmWork (tpm_scheduler.h: the gateway's handshake first,
// background work last). Share one TpmContext (std::shared_ptr) among all
// keys of the process.
//
// Lost TPM: when the TCTI reports a lost connection (swtpm, tpm2-abrmd or the
// kernel resource manager restarted), the context reopens its TCTI and ESYS
// context, finds the SRK again and retries the command once, transparently to
// callers. While the TPM stays away, reconnects are paced (100 ms doubling to
// 5 s): calls in between fail at once with Unavailable "TPM unreachable:
// <tcti>: <error>", and Health() says the same.
//
// Transient objects: every key is loaded, used and flushed within one call,
// also on failure. After any call returns, this context has left no transient
// object in the TPM (swtpm has 3 slots and no resource manager).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/status.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/tpm/tpm_key.h"
#include "gateway_agent/tpm/tpm_scheduler.h"
#include "gateway_agent/tpm_handle.h"

namespace ga::tpm {

struct TpmOptions {
  // Tss2_TctiLdr_Initialize string: "device:/dev/tpmrm0",
  // "swtpm:host=127.0.0.1,port=2321", "tabrmd:bus_type=system".
  std::string tcti = "device:/dev/tpmrm0";
  // Persistent handle of the SRK (0x81000000-0x81FFFFFF).
  uint32_t srk_handle = kDefaultSrkHandle;
};

struct TpmInfo {
  std::string tcti;
  std::string manufacturer;      // "IBM", "INTC", ...
  std::string vendor_string;     // TPM2_PT_VENDOR_STRING_1..4
  std::string firmware_version;  // "major.minor.x.y" from TPM2_PT_FIRMWARE_VERSION_1/2
  std::string spec_revision;     // "1.59"
  uint32_t srk_handle = 0;
  bool srk_present = false;  // a storage key is persisted at srk_handle
  std::string srk_problem;   // why the object at srk_handle cannot be the SRK
  uint32_t persistent_objects = 0;
  uint32_t free_persistent_slots = 0;
  uint32_t free_transient_slots = 0;
  uint32_t loaded_transient_objects = 0;
  bool in_lockout = false;  // dictionary-attack lockout
};

class TpmContext {
 public:
  // Connects and sends TPM2_Startup(CLEAR) (an already started TPM is fine).
  // Does not touch the SRK. Unavailable when no TPM answers at the TCTI.
  static Result<std::shared_ptr<TpmContext>> Open(const TpmOptions& options);

  ~TpmContext();
  TpmContext(const TpmContext&) = delete;
  TpmContext& operator=(const TpmContext&) = delete;

  const std::string& tcti() const { return options_.tcti; }
  uint32_t srk_handle() const { return options_.srk_handle; }

  Result<TpmInfo> Info();

  // Finds the SRK at the configured handle, or creates it from the TCG ECC
  // P-256 SRK template and persists it. Never replaces an existing object:
  // FailedPrecondition if the handle holds something that is not a storage
  // key. Returns true when it had to create it. Every key operation does this
  // implicitly (once per context).
  Result<bool> EnsureSrk();

  // Creates a signing key under the SRK (ECC P-256 ECDSA/SHA-256, or RSA-2048
  // RSASSA/SHA-256). The key file records the SRK's persistent handle as parent.
  Result<TpmKeyBlob> CreateKey(KeyAlgorithm algorithm = KeyAlgorithm::kEccP256);

  // Signs a precomputed digest (32, 48 or 64 bytes: SHA-256/384/512) in the TPM.
  // ECC: DER ECDSA-Sig-Value; RSA: PKCS#1 v1.5 signature. Loads, signs, flushes.
  Result<std::string> SignDigest(const TpmKeyBlob& key, std::string_view digest);

  // Loads `key` and signs once: OK when this TPM can use it; Unavailable or
  // Timeout when the TPM is away (nothing is known of the key); otherwise the
  // TPM's refusal (a blob from another TPM, or made under an SRK since
  // replaced).
  Status TryKey(const TpmKeyBlob& key);

  // Handles of the transient objects now loaded in the TPM (all clients).
  Result<std::vector<uint32_t>> TransientHandles();

  // Flushes every transient object this connection can see; returns how many.
  // For the agent's start: a process killed between loading a key and
  // flushing it (SIGKILL, power cut of the process, not of the TPM) leaves the
  // object in a TPM without resource manager (swtpm, /dev/tpm0), where the
  // agent is the only user. Under a resource manager (/dev/tpmrm0, abrmd) a
  // connection sees only its own objects, so this finds none.
  Result<int> FlushStaleTransientObjects();

  // OK while the TPM answers; Unavailable "TPM unreachable: <tcti>: <error>"
  // from the first lost command until a reconnect succeeds. Never waits for
  // a TPM command in progress.
  Status Health() GA_EXCLUDES(health_mu_);
  // One cheap command (a property read), reconnecting when the TPM was lost:
  // lets an idle agent notice the TPM leaving and coming back.
  Status Probe();

  // The low-level context; exists only inside the implementation.
  struct Esys;

 private:
  explicit TpmContext(TpmOptions options);
  Result<bool> EnsureSrkLocked() GA_REQUIRES(mu_);
  Result<TpmKeyBlob> CreateKeyLocked(KeyAlgorithm algorithm) GA_REQUIRES(mu_);
  Result<std::string> SignLocked(const TpmKeyBlob& key, std::string_view digest) GA_REQUIRES(mu_);
  Result<std::vector<uint32_t>> TransientHandlesLocked() GA_REQUIRES(mu_);
  Result<TpmInfo> InfoLocked() GA_REQUIRES(mu_);
  Result<uint32_t> ProbeLocked() GA_REQUIRES(mu_);
  // Closes the TCTI and ESYS contexts and opens them again; records the
  // outcome in unreachable_ and paces the next attempt.
  Status ReconnectLocked() GA_REQUIRES(mu_);
  void SetUnreachable(Status status) GA_REQUIRES(mu_) GA_EXCLUDES(health_mu_);
  // Runs op; when it fails because the TPM connection is lost, reconnects and
  // runs it once more. Waits out the reconnect pacing by failing at once.
  template <typename R, typename... P, typename... A>
  R WithReconnect(R (TpmContext::*op)(P...), A&&... args) GA_REQUIRES(mu_);

  const TpmOptions options_;
  // Who goes next: the most urgent caller (tpm_scheduler.h), before mu_.
  TpmScheduler scheduler_;
  // One TPM command at a time on the ESAPI context.
  Mutex mu_;
  const std::unique_ptr<Esys> esys_ GA_PT_GUARDED_BY(mu_);
  Status unreachable_ GA_GUARDED_BY(mu_);  // OK while the TPM answers
  // A copy of unreachable_ for Health(), which must not wait for mu_.
  Mutex health_mu_;
  Status health_ GA_GUARDED_BY(health_mu_);
  std::chrono::milliseconds reconnect_backoff_ GA_GUARDED_BY(mu_){0};
  std::chrono::steady_clock::time_point next_reconnect_ GA_GUARDED_BY(mu_);
};

}  // namespace ga::tpm
