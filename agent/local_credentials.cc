#include "local_credentials.h"

#include <openssl/rand.h>

#include "gateway_agent/files.h"
#include "gateway_agent/openssl.h"

namespace ga {

namespace {

// 24 random bytes as 32 URL-safe base64 characters: any MQTT client and
// shell can carry it unquoted.
Result<std::string> NewPassword() {
  unsigned char bytes[24];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return Internal("RAND_bytes for a local broker password: " + DrainOpenSslErrors());
  }
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  for (size_t i = 0; i < sizeof bytes; i += 3) {
    unsigned v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    for (int shift = 18; shift >= 0; shift -= 6) out += kAlphabet[(v >> shift) & 63];
  }
  return out;
}

}  // namespace

Result<std::string> LocalCredentials::Create(const std::string& sensor) {
  GA_RETURN_IF_ERROR(EnsureDirectory(dir_, 0700));
  GA_ASSIGN_OR_RETURN(std::string password, NewPassword());
  GA_RETURN_IF_ERROR(WriteFileAtomic(dir_ / sensor, password + "\n", 0600));
  return password;
}

Result<std::string> LocalCredentials::PasswordOf(const std::string& sensor) {
  auto password = ReadSecretFile(dir_ / sensor, 4096);
  if (!password.ok() && password.status().code() != Code::kNotFound) return password;
  if (!password.ok() || password->empty()) return Create(sensor);
  return password;
}

Result<std::string> LocalCredentials::Existing(const std::string& name) const {
  return ReadSecretFile(dir_ / name, 4096);
}

Result<std::string> LocalCredentials::Rotate(const std::string& sensor) {
  return Create(sensor);
}

void LocalCredentials::Forget(const std::string& sensor) {
  std::error_code ec;
  std::filesystem::remove(dir_ / sensor, ec);
}

}  // namespace ga
