// PKCS#10 certificate requests signed with an EVP_PKEY (a TPM key in practice).
#pragma once

#include <string>
#include <string_view>

#include "gateway_agent/openssl.h"
#include "gateway_agent/status.h"

namespace ga::tpm {

// Parses a subject: "CN=thing-1,O=Acme,C=DE" or OpenSSL's "/CN=thing-1/O=Acme".
// A backslash escapes the separator. InvalidArgument names the bad part.
Result<X509NamePtr> ParseSubject(std::string_view subject);

// A CSR for `subject` carrying `key`'s public key, signed by `key` with
// SHA-256 in LibCtx(). CsrToPem (gateway_agent/openssl.h) gives its PEM.
Result<X509ReqPtr> MakeCsr(EVP_PKEY* key, std::string_view subject);

}  // namespace ga::tpm
