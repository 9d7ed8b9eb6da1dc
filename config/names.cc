// The names the configuration and the control socket accept: thing names
// and sensor ids.
#include <algorithm>
#include <cctype>

#include "gateway_agent/config.h"

namespace ga {

bool IsValidThingName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == '_' || c == '-';
  });
}

bool IsEnrollableThingName(std::string_view name) {
  return IsValidThingName(name) && name.size() <= kMaxEnrollableThingName;
}

bool IsValidSensorId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

}  // namespace ga
