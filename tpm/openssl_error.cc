#include "gateway_agent/tpm/openssl_error.h"

#include <openssl/err.h>

#include <string>

namespace ga {

Status OpenSslError(std::string_view what, Code code) {
  std::string message(what);
  message += ": ";
  bool any = false;
  const char* data = nullptr;
  int flags = 0;
  while (unsigned long err = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    if (any) message += "; ";
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    message += buf;
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') {
      message += " (";
      message += data;
      message += ")";
    }
    any = true;
  }
  if (!any) message += "no OpenSSL error recorded";
  return {code, std::move(message)};
}

void ClearOpenSslErrors() {
  ERR_clear_error();
}

}  // namespace ga
