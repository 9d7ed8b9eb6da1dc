#include "gateway_agent/tpm/csr.h"

#include <openssl/pem.h>

#include <string>
#include <vector>

#include "gateway_agent/tpm/openssl_provider.h"

namespace ga::tpm {
namespace {

// Splits at unescaped `sep`, removing the escaping backslashes.
std::vector<std::string> SplitEscaped(std::string_view s, char sep) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      parts.back().push_back(s[++i]);
    } else if (s[i] == sep) {
      parts.emplace_back();
    } else {
      parts.back().push_back(s[i]);
    }
  }
  return parts;
}

std::string Trim(std::string s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

Result<X509NamePtr> ParseSubject(std::string_view subject) {
  std::string_view body = subject;
  char sep = ',';
  if (!body.empty() && body[0] == '/') {
    sep = '/';
    body.remove_prefix(1);
  }
  X509NamePtr name(X509_NAME_new());
  if (!name) return OpenSslError("X509_NAME_new");
  for (std::string& part : SplitEscaped(body, sep)) {
    part = Trim(part);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == part.size()) {
      return InvalidArgument("subject \"" + std::string(subject) + "\": \"" + part +
                             "\" is not FIELD=value");
    }
    std::string field = Trim(part.substr(0, eq));
    std::string value = Trim(part.substr(eq + 1));
    if (X509_NAME_add_entry_by_txt(name.get(), field.c_str(), MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                   0) != 1) {
      return OpenSslError("subject \"" + std::string(subject) + "\": field \"" + field + "\"",
                          Code::kInvalidArgument);
    }
  }
  if (X509_NAME_entry_count(name.get()) == 0) {
    return InvalidArgument("subject \"" + std::string(subject) + "\" is empty");
  }
  return name;
}

Result<X509ReqPtr> MakeCsr(EVP_PKEY* key, std::string_view subject) {
  if (key == nullptr) return InvalidArgument("MakeCsr: no key");
  GA_ASSIGN_OR_RETURN(X509NamePtr name, ParseSubject(subject));
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, LibCtx());
  X509ReqPtr req(X509_REQ_new_ex(libctx, nullptr));
  if (!req) return OpenSslError("X509_REQ_new_ex");
  if (X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_REQ_set_subject_name(req.get(), name.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key) != 1) {
    return OpenSslError("filling the CSR");
  }
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  if (!md) return OpenSslError("EVP_MD_CTX_new");
  if (EVP_DigestSignInit_ex(md.get(), nullptr, "SHA256", libctx, nullptr, key, nullptr) != 1) {
    return OpenSslError("EVP_DigestSignInit_ex for the CSR");
  }
  if (X509_REQ_sign_ctx(req.get(), md.get()) <= 0) {
    return OpenSslError("signing the CSR (subject \"" + std::string(subject) + "\")");
  }
  return req;
}

}  // namespace ga::tpm
