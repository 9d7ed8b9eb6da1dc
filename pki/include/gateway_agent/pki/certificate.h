// Certificates and CSRs as the agent handles them: PEM/DER conversion, the
// AWS certificate id, the checks AWS applies to client keys, and the chain
// file a device presents (leaf, then the CA that AWS has registered).
//
// Every function is thread-safe; none keeps state.
#pragma once

#include <openssl/x509.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/openssl.h"
#include "gateway_agent/status.h"

namespace ga::pki {

// The AWS IoT certificate id: SHA-256 of the DER encoding, 64 lowercase hex
// characters. Also the id AWS gives a registered CA certificate. Empty only
// when `cert` cannot be encoded (nullptr).
std::string AwsCertificateId(const X509* cert);

Result<std::string> CertificateToPem(const X509* cert);
Result<std::string> CertificateToDer(const X509* cert);

// Parses every certificate of a PEM text, in order. InvalidArgument (naming
// `source`) when there is none, when a block is not a certificate, or when
// text other than whitespace surrounds the blocks.
Result<std::vector<X509Ptr>> ParseCertificatesPem(std::string_view pem, std::string_view source);
// The first certificate of a PEM file (further blocks are ignored).
Result<X509Ptr> ReadCertificateFile(const std::filesystem::path& path);
// A single "CERTIFICATE REQUEST" (or "NEW CERTIFICATE REQUEST") PEM block.
Result<X509ReqPtr> ParseCsrPem(std::string_view pem, std::string_view source);
Result<X509ReqPtr> ReadCsrFile(const std::filesystem::path& path);

// The subject's commonName, or "" when the name has none. InvalidArgument
// when the name holds more than one CN or one that is not valid UTF-8.
Result<std::string> CommonName(const X509_NAME* name);

// OpenSSL's one-line form: "CN = gw-1, O = Acme".
std::string NameToString(const X509_NAME* name);

// Whether the name holds an organizationalUnitName equal to `ou`.
bool HasOrganizationalUnit(const X509_NAME* name, std::string_view ou);

// Time as "2026-11-27 15:11:07 UTC".
std::string FormatTime(const ASN1_TIME* time);
std::chrono::system_clock::time_point ToTimePoint(const ASN1_TIME* time);

// AWS IoT's client key rules: EC P-256, P-384 or P-521, or RSA of at least
// 2048 bits. InvalidArgument says what the key is and what is allowed.
Status CheckClientKey(EVP_PKEY* key);

// "device certificate, then CA certificate(s)" as PEM.
Result<std::string> ChainPem(const X509* leaf, const std::vector<X509Ptr>& chain);

// The file AWS's docs call deviceCertAndCACert.crt: the PEM of `leaf` then
// `chain`, written atomically with mode 0644 (certificates are public).
Status WriteChainFile(const std::filesystem::path& path, const X509* leaf,
                      const std::vector<X509Ptr>& chain);

}  // namespace ga::pki
