// Private to pki/: building, signing and checking certificates. Every X509
// is created in tpm::LibCtx() and signed through EVP_DigestSignInit_ex in that
// context, so the signing key may be a TPM key.
#pragma once

#include <openssl/x509.h>

#include <string>
#include <string_view>

#include "gateway_agent/openssl.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/status.h"

namespace ga::pki::internal {

// How far notBefore lies in the past, for clocks that are a little behind.
inline constexpr long kClockSkewSeconds = 5 * 60;

// The digest for signatures by `key`: SHA-384 for P-384, SHA-512 for P-521,
// otherwise SHA-256.
const char* DigestFor(EVP_PKEY* key);

// Signs `cert` with `key` in LibCtx().
Status SignCertificate(X509* cert, EVP_PKEY* key);

// The CSR's signature verifies, and its key is one AWS accepts. Returns its key
// (owned by the CSR).
Result<EVP_PKEY*> CheckCsr(X509_REQ* csr);

// A certificate of `request.profile` for the CSR's key, issued by `ca_cert`
// (its subject, SKI, notAfter as cap) and signed by `ca_key`.
Result<X509Ptr> BuildCertificate(const CertificateRequest& request, const X509* ca_cert,
                                 EVP_PKEY* ca_key);

// A self-signed CA certificate for `key`.
Result<X509Ptr> BuildSelfSignedCa(EVP_PKEY* key, const X509_NAME* subject, int days);

// A CA certificate that may sign: basicConstraints CA:TRUE, keyUsage (when
// present) allows keyCertSign, valid now. Errors name `source`.
Status CheckCaCertificate(const X509* cert, std::string_view source);

// A certificate `issuer` signed: names chain and the signature verifies.
Status CheckIssuedBy(const X509* cert, const X509* issuer);

// [ca] validity in whole seconds; at least a minute.
std::chrono::seconds ValidityOf(const CaConfig& config);
Status CheckValidity(const CaConfig& config);

}  // namespace ga::pki::internal
