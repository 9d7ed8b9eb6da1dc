#include "agent_harness.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "gateway_agent/agent/status_report.h"
#include "gateway_agent/config.h"

namespace ga::testing {

Status AgentHarness::NoViolations() {
  GA_ASSIGN_OR_RETURN(int count, sim().ViolationCount());
  if (count == 0) return Status::Ok();
  return Internal("iot-sim counted " + std::to_string(count) +
                  " AWS limit violation(s): " + sim().Http("GET", "/_sim/violations").body);
}

AgentHarness::~AgentHarness() {
  if (sim_ == nullptr || !sim_->process().running()) return;
  if (::testing::UnitTest::GetInstance()->current_test_info() == nullptr) return;
  if (Status held = NoViolations(); !held.ok()) ADD_FAILURE() << held.ToString();
}

using namespace std::chrono_literals;

Result<std::unique_ptr<AgentHarness>> AgentHarness::Start(const HarnessOptions& options) {
  std::unique_ptr<AgentHarness> h(new AgentHarness());
  h->options_ = options;
  GA_ASSIGN_OR_RETURN(h->tpm_, Swtpm::Start());
  if (!options.tpm_profile.empty()) {
    GA_ASSIGN_OR_RETURN(TpmProfile profile, TpmProfileNamed(options.tpm_profile));
    GA_ASSIGN_OR_RETURN(h->tpm_relay_, TpmLatencyRelay::Start(h->tpm_->port(), profile));
  }
  IotSimOptions so;
  so.lambda_delay_ms = options.lambda_delay_ms;
  so.extra_args = options.sim_args;
  // Keep every routed message, so tests can count duplicates.
  so.extra_args.insert(so.extra_args.end(), {"--publish-log-size", "200000"});
  GA_ASSIGN_OR_RETURN(h->sim_, IotSim::Start(so));
  std::string managed_local;  // the [local] keys `local-broker init` printed
  if (options.managed_local_broker) {
    MosquittoOptions mo;
    // With TLS, two listeners: two ports free together.
    mo.port = FreePort(options.local_broker_tls ? 2 : 1);
    std::vector<std::string> args = {
        GA_AGENT_BINARY, "local-broker",         "init", "--dir", h->BrokerDir().string(),
        "--port",        std::to_string(mo.port)};
    if (options.local_broker_tls) {
      h->broker_tls_port_ = mo.port + 1;
      args.insert(args.end(), {"--tls", "--tls-port", std::to_string(h->broker_tls_port_)});
    }
    auto init = RunCommand(args);
    if (init.exit_code != 0) return Internal("local-broker init: " + init.output);
    std::istringstream printed(init.output);
    for (std::string line; std::getline(printed, line);) {
      if (!line.empty() && line[0] != '#' && line.find(" = ") != std::string::npos) {
        managed_local += line + "\n";
      }
    }
    mo.config_file = h->BrokerDir() / "mosquitto.conf";
    // As root, mosquitto would drop to user mosquitto, who cannot read it.
    if (geteuid() == 0) std::ofstream(mo.config_file, std::ios::app) << "\nuser root\n";
    GA_ASSIGN_OR_RETURN(h->broker_, Mosquitto::Start(mo));
  } else if (options.local_broker) {
    MosquittoOptions mo;
    if (options.local_unix_socket) mo.extra_config = "listener 0 " + h->LocalSocket().string();
    GA_ASSIGN_OR_RETURN(h->broker_, Mosquitto::Start(mo));
  }

  auto init = RunCommand({GA_AGENT_BINARY, "ca", "init", "--backend", "file", "--subject",
                          "CN=Test Gateway CA,O=gateway-agent tests", "--days",
                          std::to_string(options.ca_days), "--out-dir", h->ca_dir().string()});
  if (init.exit_code != 0) return Internal("ca init: " + init.output);
  GA_ASSIGN_OR_RETURN(h->ca_id_, h->sim_->RegisterCa(h->ca_dir()));
  GA_RETURN_IF_ERROR(h->sim_->CreateJitrRule(h->ca_id_));

  h->config_ = h->dir_ / "agent.toml";
  std::ofstream out(h->config_);
  out << "[agent]\n"
      << "thing_name = \"gw-test\"\n"
      << "state_dir = \"" << h->state_dir().string() << "\"\n"
      << "runtime_dir = \"" << (h->dir_ / "run").string() << "\"\n"
      << "log_level = \"debug\"\n"
      << "[tpm]\n"
      << "tcti = \"" << (h->tpm_relay_ ? h->tpm_relay_->tcti() : h->tpm_->tcti()) << "\"\n"
      << "[ca]\n"
      << "backend = \"file\"\n"
      << "cert = \"" << (h->ca_dir() / "ca.pem").string() << "\"\n"
      << "key = \"" << (h->ca_dir() / "ca.key").string() << "\"\n"
      << "validity = \"" << options.validity << "\"\n"
      << "[aws]\n"
      << "endpoint = \"" << h->sim_->endpoint() << "\"\n"
      << "port = " << h->sim_->mqtt_port() << "\n"
      << "root_ca = \"" << h->sim_->root_ca().string() << "\"\n"
      << "connect_rate = 100.0\n"
      << "[enrollment]\n"
      << "backoff_initial = \"" << options.backoff_initial << "\"\n"
      << "backoff_max = \"" << options.backoff_max << "\"\n"
      << "concurrency = 8\n"
      << options.extra_config << "\n";
  if (!managed_local.empty()) {
    out << "[local]\n" << managed_local;
  } else if (h->broker_ && options.local_unix_socket) {
    out << "[local]\nunix_socket = \"" << h->LocalSocket().string() << "\"\n";
  } else if (h->broker_) {
    out << "[local]\nhost = \"127.0.0.1\"\nport = " << h->broker_->port() << "\n";
  } else {
    out << "[local]\nhost = \"127.0.0.1\"\nport = " << FreePort() << "\n";
  }
  for (int i = 1; i <= options.sensors; ++i) {
    out << "[[sensor]]\nid = \"s" << i << "\"\n";
    if (options.over_gateway.count(i)) out << "connection = \"gateway\"\n";
  }
  return h;
}

Status AgentHarness::StartAgent(const std::map<std::string, std::string>& env) {
  ProcessOptions po;
  po.env = env;
  po.stderr_file = dir_ / "agent.log";
  po.stdout_file = dir_ / "agent.log";
  GA_ASSIGN_OR_RETURN(agent_,
                      Process::Start({GA_AGENT_BINARY, "run", "--config", config_.string()}, po));
  return Status::Ok();
}

CommandResult AgentHarness::Cli(std::vector<std::string> args) {
  args.insert(args.begin(), GA_AGENT_BINARY);
  args.push_back("--config");
  args.push_back(config_.string());
  return RunCommand(args);
}

std::string AgentHarness::StatusJson() {
  // What `status --json` prints, read in this process: tests poll it several
  // times a second, and a process per poll (of a sanitizer build: 0.15 s of
  // CPU each) cost more than the tests themselves. The command's own output
  // is tested where it matters (Cli).
  auto config = LoadConfig(config_);
  if (!config.ok() || !config->ok()) return "";
  auto s = ReadStatus(config->config);
  if (!s.ok()) return "";
  return ga::StatusJson(s->identities, s->now, s->bridge.traffic, s->bridge.unknown, &s->live);
}

bool AgentHarness::WaitForState(const std::string& state, int count, std::chrono::seconds timeout,
                                std::string* last) {
  return WaitForStatus(
      [&](const std::string& json) { return JsonCount(json, "state", state) >= count; }, timeout,
      last);
}

bool AgentHarness::WaitForStatus(const std::function<bool(const std::string& json)>& done,
                                 std::chrono::seconds timeout, std::string* last) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string json;
  while (std::chrono::steady_clock::now() < deadline) {
    json = StatusJson();
    if (done(json)) {
      if (last) *last = json;
      return true;
    }
    std::this_thread::sleep_for(250ms);
  }
  if (last) *last = json;
  return false;
}

void AgentHarness::RewriteConfig(const std::function<void(std::string&)>& edit) {
  std::ifstream in(config_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  edit(text);
  std::ofstream(config_, std::ios::trunc) << text;
}

Result<std::string> AgentHarness::MakeSecondCa() {
  auto init = RunCommand({GA_AGENT_BINARY, "ca", "init", "--backend", "file", "--subject",
                          "CN=Second Gateway CA,O=gateway-agent tests", "--days", "60", "--out-dir",
                          second_ca_dir().string()});
  if (init.exit_code != 0) return Internal("ca init: " + init.output);
  GA_ASSIGN_OR_RETURN(std::string id, sim_->RegisterCa(second_ca_dir()));
  GA_RETURN_IF_ERROR(sim_->CreateJitrRule(id));
  return id;
}

void AgentHarness::UseSecondCa() {
  const std::string from = (ca_dir() / "ca.").string(), to = (second_ca_dir() / "ca.").string();
  RewriteConfig([&](std::string& text) {
    for (size_t at; (at = text.find(from)) != std::string::npos;) text.replace(at, from.size(), to);
  });
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::seconds timeout) {
  // One evaluation decides: asking again after a success could see a
  // passing state (an enrollment's accepted connect closing) already gone.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(200ms);
  }
}

}  // namespace ga::testing
