// `gateway-agent local-broker init`: the gateway's local mosquitto set up so
// that every client authenticates, each sensor can be confined to its own
// topics, and the agent's own session cannot be taken over.
#include <cstdio>
#include <memory>
#include <string>

#include "cli_commands.h"
#include "gateway_agent/agent/local_broker_setup.h"

namespace ga {
namespace {

struct LocalBrokerInitOptions {
  std::string dir;
  std::string conf_d;
  std::string plugin;
  LocalBrokerSetupOptions setup;

  LocalBrokerSetupOptions Setup() const {
    LocalBrokerSetupOptions s = setup;
    s.dir = dir;
    s.conf_d = conf_d;
    s.plugin = plugin;
    return s;
  }
};

int RunLocalBrokerInit(const LocalBrokerInitOptions& o) {
  auto written = WriteLocalBrokerSetup(o.Setup());
  if (!written.ok()) return Fail(written.status());
  std::fprintf(stderr,
               "Wrote %s, %s and the passwords of \"%s\" and \"%s\" (mode 0600) in %s.\n"
               "Put this in agent.toml:\n\n",
               written->config_file.c_str(), written->dynsec_file.filename().c_str(),
               kLocalBrokerAdminUser, written->agent_user.c_str(), written->dir.c_str());
  if (written->tls_port != 0) {
    std::fprintf(stderr,
                 "The TLS listener on port %d takes sensors' certificates from the local-only "
                 "CA in %s.\n",
                 written->tls_port, written->sensor_ca_dir.c_str());
  }
  std::fputs(LocalSectionToml(*written).c_str(), stdout);
  return 0;
}

// The configuration init would write, on stdout; nothing written.
int RunLocalBrokerConf(const LocalBrokerInitOptions& o) {
  auto conf = LocalBrokerConf(o.Setup());
  if (!conf.ok()) return Fail(conf.status());
  std::fputs(conf->c_str(), stdout);
  return 0;
}

void AddSetupOptions(CLI::App* cmd, LocalBrokerInitOptions& o) {
  cmd->add_option("--dir", o.dir, "Directory for the broker's files (created 0700)")->required();
  cmd->add_option("--port", o.setup.port, "Listener port (default 1883)")
      ->check(CLI::Range(1, 65535));
  cmd->add_option("--bind", o.setup.bind_address, "Listener address (default 127.0.0.1)");
  cmd->add_option("--conf-d", o.conf_d,
                  "The system mosquitto's include_dir (e.g. /etc/mosquitto/conf.d): the "
                  "configuration goes there as gateway-agent.conf, a snippet; refused when "
                  "the system's configuration already has a plugin, password or ACL file, or "
                  "a listener on the port");
  cmd->add_option("--plugin", o.plugin,
                  "mosquitto_dynamic_security.so (default: found under /usr/lib)");
}

}  // namespace

void RegisterLocalBrokerCommands(CLI::App& app, int& exit_code) {
  CLI::App* group = app.add_subcommand(
      "local-broker", "Set up the gateway's local mosquitto broker (dynamic security plugin)");
  group->require_subcommand(1);

  auto init = std::make_shared<LocalBrokerInitOptions>();
  CLI::App* cmd = group->add_subcommand(
      "init",
      "Write DIR/mosquitto.conf (no anonymous access, client id = user name, the dynamic "
      "security plugin, persistence, queues sized for an agent restart), the plugin's users "
      "(admin, and the agent's own) with random passwords, and print the [local] section "
      "for agent.toml");
  AddSetupOptions(cmd, *init);
  cmd->add_option("--agent-user", init->setup.agent_user,
                  "The agent's user name on the broker (default gateway-agent)");
  cmd->add_flag("--tls", init->setup.tls,
                "Also a TLS listener for sensors with certificates: a local-only CA in "
                "DIR/sensor-ca (never the CA registered with AWS) and the broker's certificate");
  cmd->add_option("--tls-port", init->setup.tls_port, "The TLS listener's port (default 8883)")
      ->check(CLI::Range(1, 65535));
  cmd->add_option("--tls-host", init->setup.tls_host,
                  "The name sensors reach the broker by, for its certificate (default: this "
                  "host's name)");
  cmd->add_flag(
      "--force", init->setup.force,
      "Replace an existing setup in DIR: new users and passwords (stop its broker first)");
  cmd->callback([init, &exit_code] { exit_code = RunLocalBrokerInit(*init); });

  auto show = std::make_shared<LocalBrokerInitOptions>();
  CLI::App* conf = group->add_subcommand(
      "conf", "Print the mosquitto configuration init would write (with --conf-d: the snippet)");
  AddSetupOptions(conf, *show);
  conf->callback([show, &exit_code] { exit_code = RunLocalBrokerConf(*show); });
}

}  // namespace ga
