// `gateway-agent status`: the identities as a table for people and as JSON
// for programs.
#pragma once

#include <string>
#include <vector>

#include "gateway_agent/identity_store.h"

namespace ga {

std::string StatusTable(const std::vector<Identity>& identities, Millis now);

// {"identities":[{"name":…,"kind":…,"thing":…,"state":…,…}],"counts":{…}}
std::string StatusJson(const std::vector<Identity>& identities);

// A JSON string literal for `s`.
std::string JsonString(std::string_view s);

}  // namespace ga
