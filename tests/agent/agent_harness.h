// Everything an end-to-end test of the agent needs, all real: a swtpm, the
// iot-sim with the shipped JITR Lambda, a file CA made by `gateway-agent ca
// init` and registered with the sim through the aws CLI, a config file, and
// the `gateway-agent run` process.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fixtures.h"
#include "iot_sim.h"
#include "tpm_latency.h"

namespace ga::testing {

struct HarnessOptions {
  int sensors = 3;
  std::set<int> over_gateway;  // sensors (by number) with connection = "gateway"
  int lambda_delay_ms = 0;
  std::string backoff_initial = "200ms";
  std::string backoff_max = "2s";
  std::string extra_config;  // appended to agent.toml
  std::vector<std::string> sim_args;
  bool local_broker = true;  // a real mosquitto as the gateway's local broker
  // The agent reaches the local broker through a unix socket listener
  // ([local] unix_socket) instead of TCP on loopback.
  bool local_unix_socket = false;
  // The local broker as `gateway-agent local-broker init` sets it up (the
  // dynamic security plugin, no anonymous access), the agent managing the
  // sensors' clients on it (local.manage_clients).
  bool managed_local_broker = false;
  // With managed_local_broker: `local-broker init --tls`, a TLS listener for
  // sensors with certificates (broker_tls_port()), and [local] sensor_ca_dir.
  bool local_broker_tls = false;
  // Validity of the local CA's certificate and of the certificates it issues.
  int ca_days = 30;
  std::string validity = "30d";  // [ca] validity
  // The agent's TPM behind the latency model (tpm_latency.h): "swtpm",
  // "discrete"; empty: swtpm directly.
  std::string tpm_profile;
};

class AgentHarness {
 public:
  static Result<std::unique_ptr<AgentHarness>> Start(const HarnessOptions& options);
  // In a GoogleTest test, fails it when iot-sim (still running) counted an
  // AWS limit violation: every test with a harness asserts that AWS's limits
  // held, whatever else it checked. Benchmarks check NoViolations() themselves.
  ~AgentHarness();

  // Starts `gateway-agent run`; `env` adds variables (e.g. GATEWAY_AGENT_CRASH_AT).
  Status StartAgent(const std::map<std::string, std::string>& env = {});
  Process& agent() { return agent_; }

  // `gateway-agent <args...> --config <this config>`.
  CommandResult Cli(std::vector<std::string> args);
  // The agent's status JSON (from `gateway-agent status --json`).
  std::string StatusJson();
  // Waits until `count` identities are in `state`; returns the last status.
  bool WaitForState(const std::string& state, int count, std::chrono::seconds timeout,
                    std::string* last = nullptr);
  // Waits until `done` holds for the status JSON; returns the last status.
  bool WaitForStatus(const std::function<bool(const std::string& json)>& done,
                     std::chrono::seconds timeout, std::string* last = nullptr);

  // Rewrites agent.toml; `edit` may change the text.
  void RewriteConfig(const std::function<void(std::string&)>& edit);
  // A CA rollover's first steps: a second CA made by `ca init` in
  // second_ca_dir(), registered with AWS IoT and given the topic rules (its
  // registration events only, as deploy.sh --ca-id does); returns its id.
  Result<std::string> MakeSecondCa();
  // [ca] names the second CA (a reload or restart then applies it).
  void UseSecondCa();
  std::filesystem::path second_ca_dir() const { return dir_ / "ca2"; }

  IotSim& sim() { return *sim_; }
  // OK when iot-sim counted no AWS limit violation; else what it counted.
  Status NoViolations();
  Mosquitto& broker() { return *broker_; }
  Swtpm& tpm() { return *tpm_; }
  // The latency model in front of the TPM (HarnessOptions::tpm_profile), or null.
  TpmLatencyRelay* tpm_relay() { return tpm_relay_.get(); }
  const std::filesystem::path& config() const { return config_; }
  std::filesystem::path state_dir() const { return dir_ / "state"; }
  std::filesystem::path ca_dir() const { return dir_ / "ca"; }
  const std::string& ca_id() const { return ca_id_; }
  std::filesystem::path dir() const { return dir_.path(); }
  std::filesystem::path LocalSocket() const { return dir_ / "local.sock"; }
  // managed_local_broker: the directory `local-broker init` wrote.
  std::filesystem::path BrokerDir() const { return dir_ / "broker"; }
  // local_broker_tls: the TLS listener's port.
  int broker_tls_port() const { return broker_tls_port_; }
  int identities() const { return options_.sensors + 1; }

 private:
  AgentHarness() = default;
  HarnessOptions options_;
  TempDir dir_;
  std::unique_ptr<Swtpm> tpm_;
  std::unique_ptr<TpmLatencyRelay> tpm_relay_;
  std::unique_ptr<IotSim> sim_;
  std::unique_ptr<Mosquitto> broker_;
  std::filesystem::path config_;
  std::string ca_id_;
  int broker_tls_port_ = 0;
  Process agent_;
};

// Polls `done` every 200 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& done, std::chrono::seconds timeout);

}  // namespace ga::testing
