// Private to pki/: the `command` backend and the child-process runner it uses.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/config.h"
#include "gateway_agent/pki/local_ca.h"

namespace ga::pki::internal {

struct ChildOutput {
  int wait_status = 0;  // as from waitpid
  std::string out;
  std::string err;  // at most kMaxStderr bytes
};

inline constexpr size_t kMaxStdout = 1 << 20;
inline constexpr size_t kMaxStderr = 4096;

// Runs argv (no shell, PATH lookup) in its own process group with `input` on
// stdin, collecting stdout and stderr. Timeout when it has not exited within
// `timeout`; the whole process group is then killed. The process group is
// also killed once the command itself has exited, so nothing it started
// outlives it.
Result<ChildOutput> RunChild(const std::vector<std::string>& argv, std::string_view input,
                             std::chrono::milliseconds timeout);

Result<std::unique_ptr<LocalCa>> OpenCommandCa(const CaConfig& config);

}  // namespace ga::pki::internal
