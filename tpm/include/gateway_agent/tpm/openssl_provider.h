// TPM keys as OpenSSL 3 EVP_PKEYs, through an in-process provider ("ga-tpm")
// registered in the project's own OSSL_LIB_CTX.
//
// Signing goes to the TPM (hashing stays in software); the private half can
// never be exported or encoded: EVP_PKEY_todata(KEYPAIR), PEM private-key
// writers and EVP_PKEY_dup all fail. Such an EVP_PKEY works with
// EVP_DigestSign*, X509_REQ_sign_ctx, X509_sign_ctx and libssl client auth
// (TLS 1.2 and 1.3) for objects created in LibCtx(). Verification with such
// a key (X509_verify, EVP_DigestVerify) runs in software on its public half;
// X509_check_private_key / EVP_PKEY_eq compare public halves.
//
// An EVP_PKEY keeps only the key blob and a reference to its TpmContext: each
// signature loads the key, signs and flushes under the context's lock, so
// hundreds of keys can be held at once.
#pragma once

#include <openssl/types.h>

#include <memory>

#include "gateway_agent/openssl.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "gateway_agent/tpm/tpm_key.h"

namespace ga::tpm {

// The project's library context: the "default" provider plus "ga-tpm", with
// default properties "?provider=default" so software keys, digests and
// verification stay on the default provider. Created on first use, thread
// safe, lives until process exit. Create every SSL_CTX, X509, X509_REQ and
// software EVP_PKEY that meets a TPM key in this context (SSL_CTX_new_ex,
// X509_new_ex, EVP_PKEY_Q_keygen(LibCtx(), ...)).
Result<OSSL_LIB_CTX*> LibCtx();

// A TPM key as an EVP_PKEY. Does not touch the TPM. ECC P-256 keys only for
// now (RSA keys give FailedPrecondition).
Result<EvpPkeyPtr> MakeEvpPkey(std::shared_ptr<TpmContext> tpm, const TpmKeyBlob& key);

// True when `pkey` is backed by the TPM provider.
bool IsTpmKey(const EVP_PKEY* pkey);

}  // namespace ga::tpm
