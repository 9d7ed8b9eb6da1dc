#include "gateway_agent/agent/cli.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli_commands.h"
#include "gateway_agent/log.h"

namespace ga {

void PrintError(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
}

std::filesystem::path GlobalOptions::ConfigFile() const {
  return config_path.empty() ? std::filesystem::path(kDefaultConfigPath)
                             : std::filesystem::path(config_path);
}

int Fail(const Status& status) {
  PrintError(status);
  return 1;
}

int RunCli(int argc, char** argv) {
  CLI::App app{
      "gateway-agent: enrolls a Linux gateway and its sensors into AWS IoT with TPM-held keys\n"
      "(Just-in-Time Registration) and bridges their MQTT traffic durably.",
      "gateway-agent"};
  app.set_version_flag("--version", "gateway-agent " GATEWAY_AGENT_VERSION);
  app.require_subcommand(1);
  // --config and --log-level may also follow the command name.
  app.fallthrough();
  GlobalOptions global;
  app.add_option("-c,--config", global.config_path,
                 "Configuration file (default /etc/gateway-agent/agent.toml)");
  app.add_option("--log-level", global.log_level, "debug, info, warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  app.add_option("--timeout", global.timeout_seconds,
                 "Seconds to wait for the running agent's answer (sensor commands; default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  app.parse_complete_callback([&] {
    log::Level level;
    if (!global.log_level.empty() && log::ParseLevel(global.log_level, &level)) {
      log::SetLevel(level);
    }
  });

  int exit_code = 0;
  RegisterConfigCommands(app, global, exit_code);
  RegisterRunCommands(app, global, exit_code);
  RegisterCheckCommands(app, global, exit_code);
  RegisterTpmCommands(app, exit_code);
  RegisterCaCommands(app, global, exit_code);
  RegisterLocalBrokerCommands(app, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    // CLI11 returns 0 for --help/--version and a positive code for usage errors.
    return rc == 0 ? 0 : 2;
  }
  return exit_code;
}

}  // namespace ga
