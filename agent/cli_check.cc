// `gateway-agent check`: the self-diagnosis of a gateway.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_commands.h"
#include "gateway_agent/agent/health_checks.h"

namespace ga {

namespace {

const char* Mark(CheckLevel level) {
  switch (level) {
    case CheckLevel::kOk: return "\u2713";
    case CheckLevel::kWarning: return "\u26a0";
    case CheckLevel::kError: return "\u2717";
  }
  return "?";
}

std::string Json(const std::vector<HealthCheck>& checks, bool ok) {
  nlohmann::json doc;
  doc["checks"] = nlohmann::json::array();
  for (const auto& c : checks) {
    doc["checks"].push_back({{"name", c.name},
                             {"result", std::string(LevelName(c.level))},
                             {"detail", c.detail},
                             {"fix", c.fix}});
  }
  doc["ok"] = ok;
  // Replace invalid UTF-8 (from a file name, say) rather than throw.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

void RegisterCheckCommands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "check",
      "Check the gateway: configuration, clock, TPM, identities, local CA, AWS IoT endpoint, "
      "local broker, state directory; exit 0 without errors, 1 otherwise");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON instead of one line per check");
  cmd->callback([&global, &exit_code, json] {
    std::vector<HealthCheck> checks = RunHealthChecks(global.ConfigFile());
    bool ok = true;
    for (const auto& c : checks) ok = ok && c.level != CheckLevel::kError;
    if (*json) {
      std::cout << Json(checks, ok);
    } else {
      for (const auto& c : checks) {
        std::cout << Mark(c.level) << ' ' << c.name << ": " << c.detail;
        if (c.level != CheckLevel::kOk && !c.fix.empty()) std::cout << " -> " << c.fix;
        std::cout << '\n';
      }
    }
    exit_code = ok ? 0 : 1;
  });
}

}  // namespace ga
