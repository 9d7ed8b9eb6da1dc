// libFuzzer target: any input to the config loader yields a result or a list
// of problems, never a crash, hang or sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway_agent/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  ga::ParsedConfig parsed = ga::ParseConfig(text, "fuzz.toml");
  if (parsed.ok()) {
    // What was accepted must print and parse back to the same configuration.
    std::string printed = ga::FormatConfig(parsed.config);
    ga::ParsedConfig again = ga::ParseConfig(printed, "printed.toml");
    if (!again.ok() || ga::FormatConfig(again.config) != printed) __builtin_trap();
  }
  return 0;
}
