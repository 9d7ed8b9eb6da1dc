// What the running agent knows stands in its way, as it tells
// `gateway-agent status`: a small JSON file in the runtime directory,
// rewritten by the agent when anything changes and at least every
// kHealthHeartbeat, so that a report older than kHealthStale means the agent
// is stopped or stuck.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/status.h"

namespace ga {

inline constexpr const char* kHealthFile = "health.json";
inline constexpr std::chrono::seconds kHealthHeartbeat{10};
inline constexpr std::chrono::seconds kHealthStale{35};

struct AgentHealth {
  int64_t pid = 0;
  Millis updated = 0;
  // The agent as a whole: "TPM unreachable: ...", the local broker, the
  // state directory's disk. Each says what to do.
  std::vector<std::string> problems;
  // Identity name -> what stops it from working (its cloud connection, its
  // key or certificate).
  std::map<std::string, std::string> identities;
  // In no traffic's way, but unsafe: the local broker lets anonymous clients
  // in. Shown by `status` and STATUS=, logged; they do not make ok() false.
  std::vector<std::string> warnings;

  bool ok() const { return problems.empty() && identities.empty(); }
  // Everything but `updated` (for telling whether to write it again).
  bool SameAs(const AgentHealth& other) const {
    return pid == other.pid && problems == other.problems && identities == other.identities &&
           warnings == other.warnings;
  }
};

std::string HealthToJson(const AgentHealth& health);
// `source` names the file in errors.
Result<AgentHealth> HealthFromJson(std::string_view json, const std::string& source);

// Atomically (0600).
Status WriteHealth(const std::filesystem::path& path, const AgentHealth& health);
// nullopt when there is no file (the agent is not running, or never ran).
Result<std::optional<AgentHealth>> ReadHealth(const std::filesystem::path& path);

// The agent as `status` sees it: running and reporting, or not.
struct LiveHealth {
  enum class Agent { kRunning, kNotRunning, kNotReporting };
  Agent agent = Agent::kNotRunning;
  std::string agent_note;  // for kNotRunning / kNotReporting: what was seen
  AgentHealth report;      // empty unless kRunning
};
// Reads `path` and judges it at `now`: a report older than kHealthStale, or
// from a process that no longer exists, is not the running agent's.
LiveHealth JudgeHealth(const std::filesystem::path& path, Millis now);

}  // namespace ga
