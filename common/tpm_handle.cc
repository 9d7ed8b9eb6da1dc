#include "gateway_agent/tpm_handle.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace ga {

bool IsPersistentHandle(int64_t handle) {
  return handle >= 0x81000000 && handle <= 0x81FFFFFF;
}

std::string HandleHex(uint32_t handle) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", handle);
  return buf;
}

Result<uint32_t> ParsePersistentHandle(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  unsigned long long value = std::strtoull(s.c_str(), &end, 0);
  if (s.empty() || *end != '\0' || errno != 0 || s[0] == '-' || value > 0xffffffffULL) {
    return InvalidArgument("\"" + s + "\" is not a number");
  }
  uint32_t handle = static_cast<uint32_t>(value);
  if (!IsPersistentHandle(handle)) {
    return InvalidArgument(HandleHex(handle) +
                           " is not a persistent handle (0x81000000-0x81ffffff)");
  }
  return handle;
}

}  // namespace ga
