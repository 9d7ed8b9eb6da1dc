// `gateway-agent check-config`.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli_commands.h"
#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/config.h"

namespace ga {

void RegisterConfigCommands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "check-config",
      "Validate the configuration file; exit 0 when valid, 2 when not, 1 when unreadable");
  auto print = std::make_shared<bool>(false);
  auto no_files = std::make_shared<bool>(false);
  cmd->add_flag("--print", *print, "Print the effective configuration (defaults filled in)");
  cmd->add_flag("--no-files", *no_files,
                "Check the text only, not the CA files it names (a template checked away "
                "from the gateway); run checks them");
  cmd->callback([&global, &exit_code, print, no_files] {
    std::filesystem::path path = global.ConfigFile();
    auto loaded = LoadConfig(path);
    if (!loaded.ok()) {
      PrintError(loaded.status());
      exit_code = 1;
      return;
    }
    if (!loaded->ok()) {
      for (const auto& p : loaded->problems) std::fprintf(stderr, "%s\n", p.ToString().c_str());
      std::fprintf(stderr, "%s: %zu problem%s; the configuration is not valid\n", path.c_str(),
                   loaded->problems.size(), loaded->problems.size() == 1 ? "" : "s");
      exit_code = 2;
      return;
    }
    if (Status files = *no_files ? Status::Ok() : CheckStartupFiles(loaded->config); !files.ok()) {
      std::fprintf(stderr, "%s\n%s: the configuration is valid, but run would refuse to start\n",
                   files.message().c_str(), path.c_str());
      exit_code = 2;
      return;
    }
    if (*print) {
      std::cout << FormatConfig(loaded->config);
    } else {
      std::printf("%s: valid (gateway %s, %zu sensor%s)\n", path.c_str(),
                  loaded->config.agent.thing_name.c_str(), loaded->config.sensors.size(),
                  loaded->config.sensors.size() == 1 ? "" : "s");
    }
    exit_code = 0;
  });
}

}  // namespace ga
