// OpenSSL for every part: errors as ga::Status, owners for its handles, and
// the PEM text of a memory BIO or a CSR.
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga {

// Drains this thread's OpenSSL error queue into a Status of code `code`:
// "<what>: <error 1>; <error 2>". Always call it right after the failing
// OpenSSL call, before anything else can push or clear errors. When the queue
// is empty the message says so, so the Status is never empty.
Status OpenSslError(std::string_view what, Code code = Code::kCrypto);

// Drains this thread's OpenSSL error queue: "<error 1>; <error 2>", with each
// error's data in parentheses; "" when the queue is empty. For callers that
// report the text in their own form; others use OpenSslError.
std::string DrainOpenSslErrors();

// Removes whatever an earlier, already handled failure left on the queue.
void ClearOpenSslErrors();

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct X509ReqDeleter {
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
};
struct X509NameDeleter {
  void operator()(X509_NAME* p) const { X509_NAME_free(p); }
};
struct SslCtxDeleter {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslDeleter {
  void operator()(SSL* p) const { SSL_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free_all(p); }
};

using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using X509ReqPtr = std::unique_ptr<X509_REQ, X509ReqDeleter>;
using X509NamePtr = std::unique_ptr<X509_NAME, X509NameDeleter>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// The bytes written to a memory BIO (BIO_s_mem) so far.
std::string MemoryBioText(BIO* bio);

// The PEM "CERTIFICATE REQUEST" block of `csr`.
Result<std::string> CsrToPem(const X509_REQ* csr);

}  // namespace ga
