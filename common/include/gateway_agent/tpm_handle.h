// TPM persistent handles as the configuration, the command line and the CA
// directory spell them. Here, not in tpm/, so that config/ can check them
// without linking the TSS.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga {

// Where the agent keeps its SRK unless configured otherwise.
inline constexpr uint32_t kDefaultSrkHandle = 0x81000001;

// TPM2_HT_PERSISTENT: 0x81000000-0x81FFFFFF.
bool IsPersistentHandle(int64_t handle);

// "0x81000001".
std::string HandleHex(uint32_t handle);

// Parses a persistent handle written as C does (0x81000001, or decimal).
// InvalidArgument "\"<text>\" is not a number" or "0x00001234 is not a
// persistent handle (0x81000000-0x81ffffff)"; the caller adds which option
// or key it came from.
Result<uint32_t> ParsePersistentHandle(std::string_view text);

}  // namespace ga
