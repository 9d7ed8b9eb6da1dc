// Registration of the command groups of the `gateway-agent` command line.
// Each Register* adds a CLI11 subcommand whose callbacks set `exit_code`.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"

namespace ga {

// Options shared by every command.
struct GlobalOptions {
  std::string config_path;      // --config; empty: the default path
  std::string log_level;        // --log-level; empty: from the config or "info"
  double timeout_seconds = 10;  // --timeout: how long to wait for the running agent

  // --config, or the default configuration file.
  std::filesystem::path ConfigFile() const;
};

// How every command reports a failure: "error: <message>" on stderr.
void PrintError(const Status& status);
// PrintError, then 1: the exit code of a command that failed.
int Fail(const Status& status);

void RegisterConfigCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterTpmCommands(CLI::App& app, int& exit_code);
void RegisterCaCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterRunCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterCheckCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void RegisterLocalBrokerCommands(CLI::App& app, int& exit_code);

}  // namespace ga
