#include "gateway_agent/agent/agent_health.h"

#include <signal.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "gateway_agent/files.h"

namespace ga {

namespace {

// A report is a few lines per identity with a problem; this bounds what
// `status` reads whatever is in the file.
constexpr size_t kMaxHealthFile = 4u << 20;

bool ProcessExists(int64_t pid) {
  if (pid <= 0) return false;
  return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

std::string HealthToJson(const AgentHealth& health) {
  using Json = nlohmann::ordered_json;
  Json out = {{"pid", health.pid},
              {"updated", health.updated},
              {"problems", health.problems},
              {"identities", health.identities},
              {"warnings", health.warnings}};
  return out.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

Result<AgentHealth> HealthFromJson(std::string_view json, const std::string& source) {
  auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return InvalidArgument(source + ": " + what + " (the agent rewrites it within " +
                           std::to_string(kHealthHeartbeat.count()) + " s)");
  };
  if (!parsed.is_object()) return bad("not a JSON object");
  AgentHealth h;
  const auto& pid = parsed["pid"];
  const auto& updated = parsed["updated"];
  const auto& problems = parsed["problems"];
  const auto& identities = parsed["identities"];
  if (!pid.is_number_integer() || !updated.is_number_integer() || !problems.is_array() ||
      !identities.is_object()) {
    return bad("pid, updated, problems or identities missing or of the wrong type");
  }
  h.pid = pid.get<int64_t>();
  h.updated = updated.get<int64_t>();
  for (const auto& p : problems) {
    if (!p.is_string()) return bad("a problem is not a string");
    h.problems.push_back(p.get<std::string>());
  }
  for (const auto& [name, text] : identities.items()) {
    if (!text.is_string()) return bad("the problem of identity " + name + " is not a string");
    h.identities[name] = text.get<std::string>();
  }
  // Absent in a report of an agent from before warnings.
  if (auto w = parsed.find("warnings"); w != parsed.end()) {
    if (!w->is_array()) return bad("warnings is not an array");
    for (const auto& text : *w) {
      if (!text.is_string()) return bad("a warning is not a string");
      h.warnings.push_back(text.get<std::string>());
    }
  }
  return h;
}

Status WriteHealth(const std::filesystem::path& path, const AgentHealth& health) {
  return WriteFileAtomic(path, HealthToJson(health), 0600);
}

Result<std::optional<AgentHealth>> ReadHealth(const std::filesystem::path& path) {
  // One open: the agent may remove the file at any moment (it stops).
  auto text = ReadFile(path, kMaxHealthFile);
  if (!text.ok() && text.status().code() == Code::kNotFound) return std::optional<AgentHealth>();
  if (!text.ok()) return std::move(text).take_status();
  GA_ASSIGN_OR_RETURN(AgentHealth h, HealthFromJson(*text, path.string()));
  return std::optional<AgentHealth>(std::move(h));
}

LiveHealth JudgeHealth(const std::filesystem::path& path, Millis now) {
  LiveHealth live;
  auto read = ReadHealth(path);
  if (!read.ok()) {
    live.agent = LiveHealth::Agent::kNotReporting;
    live.agent_note = read.status().message();
    return live;
  }
  if (!read->has_value()) {
    live.agent_note = "the agent is not running (no " + path.string() + ")";
    return live;
  }
  const AgentHealth& h = **read;
  if (!ProcessExists(h.pid)) {
    live.agent_note = "the agent is not running (process " + std::to_string(h.pid) +
                      " that wrote " + path.string() + " is gone)";
    return live;
  }
  Millis age = now - h.updated;
  if (age > std::chrono::duration_cast<std::chrono::milliseconds>(kHealthStale).count()) {
    live.agent = LiveHealth::Agent::kNotReporting;
    live.agent_note = "the agent (pid " + std::to_string(h.pid) + ") has not reported for " +
                      std::to_string(age / 1000) +
                      " s: it may be stuck (journalctl -u gateway-agent)";
    return live;
  }
  live.agent = LiveHealth::Agent::kRunning;
  live.report = h;
  return live;
}

}  // namespace ga
