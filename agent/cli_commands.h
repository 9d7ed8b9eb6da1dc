// Registration of the command groups of the `gateway-agent` command line.
// Each Register* adds a CLI11 subcommand whose callbacks set `exit_code`.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace ga {

// Options shared by every command.
struct GlobalOptions {
  std::string config_path;  // --config; empty: the default path
  std::string log_level;    // --log-level; empty: from the config or "info"
};

void RegisterConfigCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterTpmCommands(CLI::App& app, int& exit_code);
void RegisterCaCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterRunCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace ga
