// The steps that take one identity from nothing to a certificate AWS IoT can
// register: a key made in the TPM, a certificate from the local CA, and one
// JITR connect with them. Each step changes the identity in memory only; the
// caller commits it before taking the next one.
//
// After a crash, a step is redone without making a second key or
// certificate: a saved key file is reused, and so is a saved certificate that
// matches the key.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

// The directory of an identity's key, certificate and chain files.
std::filesystem::path IdentityDir(const Config& config, const std::string& name);

// What the steps use. Everything is borrowed from the Enrollment.
struct StepContext {
  const Config& config;
  const std::shared_ptr<tpm::TpmContext>& tpm;
  const IssueFunction& issue;
  const Connector& connect;
  const CrashHook& crash;
};

// Whether the TPM will use the key in `key_file` (one signature): OK when it
// does or when the TPM is away (nothing can be told then); the TPM's refusal
// otherwise (a blob from another TPM, or made under an SRK since replaced),
// naming the identity and the file.
Status KeyUsableInTpm(const Identity& identity, const std::shared_ptr<tpm::TpmContext>& tpm);

// A TPM key for `identity` saved at `key_path` (0600, its directory 0700);
// a key saved there before a crash is reused.
Status EnsureKey(const Identity& identity, const std::filesystem::path& key_path,
                 const StepContext& ctx);

struct CertificateFiles {
  std::string cert_file;
  std::string chain_file;
  std::string cert_id;
  Millis not_after = 0;
  Millis issued_at = 0;
};

// A certificate from the local CA for the key in `key_file`, saved at
// `cert_path` with its chain at `chain_path`; one saved before a crash for
// this key is reused. `key_refused`: the TPM will not use the key (a new
// one is needed).
Result<CertificateFiles> EnsureCertificate(const Identity& identity, const std::string& key_file,
                                           const std::filesystem::path& cert_path,
                                           const std::filesystem::path& chain_path,
                                           const StepContext& ctx, bool* key_refused);

// NEW -> KEYED: a TPM key, its blob saved in the identity's directory.
Status MakeKey(Identity& identity, const StepContext& ctx);

// KEYED -> CERTIFIED: a CSR signed in the TPM, issued by the local CA; the
// certificate and chain saved beside the key. A key the TPM refuses is
// deleted and the identity goes back to NEW (with the error): a new key.
Status MakeCertificate(Identity& identity, const StepContext& ctx);

// One JITR connect with the identity's key and chain. An error means no
// connect was tried (the key could not be loaded).
Result<ConnectAttempt> ConnectOnce(const Identity& identity, const StepContext& ctx);

}  // namespace ga
