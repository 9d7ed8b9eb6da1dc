#include "gateway_agent/openssl.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <string>

namespace ga {

std::string DrainOpenSslErrors() {
  std::string text;
  const char* data = nullptr;
  int flags = 0;
  while (unsigned long err = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    if (!text.empty()) text += "; ";
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    text += buf;
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') {
      text += " (";
      text += data;
      text += ")";
    }
  }
  return text;
}

Status OpenSslError(std::string_view what, Code code) {
  std::string errors = DrainOpenSslErrors();
  return {code, std::string(what) + ": " + (errors.empty() ? "no OpenSSL error recorded" : errors)};
}

void ClearOpenSslErrors() {
  ERR_clear_error();
}

std::string MemoryBioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

Result<std::string> CsrToPem(const X509_REQ* csr) {
  if (csr == nullptr) return InvalidArgument("CsrToPem: no CSR");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), csr) != 1) {
    return OpenSslError("PEM_write_bio_X509_REQ");
  }
  return MemoryBioText(bio.get());
}

}  // namespace ga
