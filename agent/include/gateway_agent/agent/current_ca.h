// The local CA that issues the identities' certificates: the one [ca] names,
// replaced when a reload names another (a CA rollover: every identity then
// renews onto it, renewal.cc). Thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/thread_annotations.h"

namespace ga {

class CurrentCa {
 public:
  explicit CurrentCa(std::unique_ptr<pki::LocalCa> ca);

  // One CSR at a time: a backend may keep state between calls (a serial
  // number file, a TPM session).
  Result<IssuedPem> Issue(X509_REQ* csr, const std::string& thing_name,
                          const std::string& organizational_unit) GA_EXCLUDES(mu_);
  // From the next certificate on, `ca` issues them.
  void Replace(std::unique_ptr<pki::LocalCa> ca) GA_EXCLUDES(mu_);

  // Its certificate's AWS IoT id (the registered CA's certificateId), when
  // it expires, and its subject ("CN=...").
  std::string id() const GA_EXCLUDES(mu_);
  Millis not_after() const GA_EXCLUDES(mu_);
  std::string subject() const GA_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::unique_ptr<pki::LocalCa> ca_ GA_GUARDED_BY(mu_);
  std::string id_ GA_GUARDED_BY(mu_);
  Millis not_after_ GA_GUARDED_BY(mu_) = 0;
  std::string subject_ GA_GUARDED_BY(mu_);
};

// The AWS IoT id of the CA certificate that follows the device certificate
// in `chain_file` (its issuer, as the local CA writes chains); "" when the
// file cannot be read or has no second certificate.
std::string IssuerIdOf(const std::filesystem::path& chain_file);

}  // namespace ga
