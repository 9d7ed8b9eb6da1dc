// `gateway-agent run`, `status`, `probe` and `sensor ...`.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli_commands.h"
#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/agent/sensor_ca.h"
#include "gateway_agent/agent/status_report.h"
#include "gateway_agent/config.h"
#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

namespace {

// Loads and validates the configuration; prints the problems and sets
// exit_code (2 invalid, 1 unreadable) when it cannot be used.
std::optional<Config> LoadUsableConfig(const GlobalOptions& global, int& exit_code) {
  std::filesystem::path path = global.ConfigFile();
  auto loaded = LoadConfig(path);
  if (!loaded.ok()) {
    PrintError(loaded.status());
    exit_code = 1;
    return std::nullopt;
  }
  if (!loaded->ok()) {
    for (const auto& p : loaded->problems) std::fprintf(stderr, "%s\n", p.ToString().c_str());
    std::fprintf(stderr, "%s is not valid: see gateway-agent check-config\n", path.c_str());
    exit_code = 2;
    return std::nullopt;
  }
  if (global.log_level.empty()) log::SetLevel(loaded->config.agent.log_level);
  return std::move(loaded->config);
}

}  // namespace

void RegisterRunCommands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* run = app.add_subcommand("run", "Run the agent in the foreground (what systemd starts)");
  run->callback([&global, &exit_code] {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    exit_code = RunAgent(*config);
  });

  auto* status = app.add_subcommand("status", "Show every identity and its enrollment state");
  auto json = std::make_shared<bool>(false);
  status->add_flag("--json", *json, "Print JSON instead of a table");
  status->callback([&global, &exit_code, json] {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    auto s = ReadStatus(*config);
    if (!s.ok()) {
      exit_code = Fail(s.status());
      return;
    }
    const BridgeReport& bridge = s->bridge;
    std::cout << (*json
                      ? StatusJson(s->identities, s->now, bridge.traffic, bridge.unknown, &s->live)
                      : StatusTable(s->identities, s->now, bridge.traffic, bridge.unknown,
                                    &s->live));
    // Something needs attention: exit 1, like a failure, after the report.
    exit_code = !bridge.problem.ok()                             ? Fail(bridge.problem)
                : NeedsAttention(s->identities, s->now, s->live) ? 1
                                                                 : 0;
  });

  auto* probe = app.add_subcommand(
      "probe", "Try one connect to AWS IoT with an identity and print the classified outcome");
  auto identity_name = std::make_shared<std::string>();
  probe->add_option("--identity", *identity_name, "\"gateway\" or a sensor id")->required();
  probe->callback([&global, &exit_code, identity_name] {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    exit_code = 1;
    auto store = IdentityStore::OpenReadOnly(config->agent.state_dir / kStateDb);
    if (!store.ok()) return PrintError(store.status());
    auto id = (*store)->Get(*identity_name);
    if (!id.ok()) return PrintError(id.status());
    // AWS IoT keeps one connection per client id: a probe would drop the
    // running agent's connection (or its enrollment's attempt) of this thing.
    LiveHealth live = JudgeHealth(config->agent.runtime_dir / kHealthFile, NowMillis());
    if (live.agent != LiveHealth::Agent::kNotRunning) {
      std::string who = live.agent == LiveHealth::Agent::kRunning
                            ? "the agent is running (pid " + std::to_string(live.report.pid) + ")"
                            : "the agent may be running (" + live.agent_note + ")";
      return PrintError(FailedPrecondition(
          who + " and connects as thing " + id->thing +
          ": a probe with the same client id would drop that connection (AWS IoT keeps one "
          "per client id). See gateway-agent status, or stop the agent to probe"));
    }
    if (id->chain_file.empty()) {
      return PrintError(FailedPrecondition("identity " + id->name + " is " +
                                           std::string(StateName(id->state)) +
                                           ": it has no certificate to connect with yet"));
    }
    auto tpm = tpm::TpmContext::Open({config->tpm.tcti, config->tpm.srk_handle});
    if (!tpm.ok()) return PrintError(tpm.status());
    auto blob = tpm::TpmKeyBlob::ReadFile(id->key_file);
    if (!blob.ok()) return PrintError(blob.status());
    auto key = tpm::MakeEvpPkey(*tpm, *blob);
    if (!key.ok()) return PrintError(key.status());
    ConnectOptions co = CloudConnectOptions(config->aws, id->thing, key->get(), id->chain_file);
    ConnectAttempt a = AttemptConnect(co);
    std::printf("identity:  %s (thing %s, certificate %s)\n", id->name.c_str(), id->thing.c_str(),
                id->cert_id.c_str());
    std::printf("endpoint:  %s:%d%s\n", co.host.c_str(), co.port, co.alpn ? " (ALPN)" : "");
    std::printf("outcome:   %s\n", std::string(OutcomeName(a.outcome)).c_str());
    std::printf("detail:    %s\n", a.detail.c_str());
    const char* meaning = "";
    switch (a.outcome) {
      case ConnectOutcome::kAccepted: meaning = "AWS IoT accepts this identity"; break;
      case ConnectOutcome::kClosed:
      case ConnectOutcome::kTlsAlert:
        meaning =
            "registration pending (JITR) or certificate not accepted: check aws iot "
            "describe-certificate";
        break;
      case ConnectOutcome::kRefused:
        meaning = "certificate accepted, but the policy refuses";
        break;
      case ConnectOutcome::kServerUntrusted: meaning = "check [aws] endpoint and root_ca"; break;
      case ConnectOutcome::kNetworkError: meaning = "the endpoint cannot be reached"; break;
    }
    std::printf("meaning:   %s\n", meaning);
    exit_code = a.outcome == ConnectOutcome::kAccepted ? 0 : 1;
  });

  auto* renew = app.add_subcommand(
      "renew", "Renew a certificate now through the running agent (e.g. a suspected key leak)");
  auto renew_identity = std::make_shared<std::string>();
  auto renew_all = std::make_shared<bool>(false);
  auto renew_rekey = std::make_shared<bool>(false);
  auto* renew_one =
      renew->add_option("--identity", *renew_identity, "The identity: \"gateway\" or a sensor id");
  auto* renew_every = renew->add_flag("--all", *renew_all, "Every ACTIVE identity, paced");
  renew_one->excludes(renew_every);
  renew->add_flag("--rekey", *renew_rekey, "A new TPM key too, whatever renewal.rekey says");
  auto renew_force = std::make_shared<bool>(false);
  renew->add_flag("--force", *renew_force,
                  "Also an identity PARKED because AWS IoT turned its certificate away (once "
                  "an operator has settled it in AWS IoT)");

  auto* sensor =
      app.add_subcommand("sensor", "Add, remove, list or certify the sensors of the agent");
  sensor->require_subcommand(1);
  auto send = [&global, &exit_code](const ControlCommand& request) {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    auto timeout = std::chrono::milliseconds(std::llround(global.timeout_seconds * 1000));
    auto reply = ControlRequest(config->agent.runtime_dir / kControlSocket, request, timeout);
    if (!reply.ok()) {
      exit_code = Fail(reply.status());
      return;
    }
    if (!reply->ok) {
      std::fprintf(stderr, "error: %s\n", reply->body.c_str());
      exit_code = 1;
      return;
    }
    std::cout << reply->body;
    exit_code = 0;
  };
  renew->callback([send, renew_identity, renew_all, renew_rekey, renew_force] {
    ControlCommand request{"renew", {}};
    if (*renew_force) request.fields["force"] = "yes";
    if (*renew_all) request.fields["all"] = "yes";
    if (!renew_identity->empty()) request.fields["identity"] = *renew_identity;
    if (*renew_rekey) request.fields["rekey"] = "yes";
    send(request);
  });
  auto* add = sensor->add_subcommand("add", "Enroll a new sensor");
  auto add_id = std::make_shared<std::string>();
  auto add_thing = std::make_shared<std::string>();
  auto add_connection = std::make_shared<std::string>("own");
  add->add_option("ID", *add_id, "The sensor id (its topic level sensors/<ID>/...)")->required();
  add->add_option("--thing-name", *add_thing, "AWS thing name (default <gateway thing>:<ID>)");
  add->add_option("--connection", *add_connection,
                  "own: its own TPM key, certificate and connection; gateway: over the "
                  "gateway's connection")
      ->check(CLI::IsMember({"own", "gateway"}));
  add->callback([send, add_id, add_thing, add_connection] {
    ControlCommand request{"sensor-add", {{"id", *add_id}, {"connection", *add_connection}}};
    if (!add_thing->empty()) request.fields["thing"] = *add_thing;
    send(request);
  });
  auto* remove = sensor->add_subcommand("remove", "Stop a sensor and delete its key");
  auto remove_id = std::make_shared<std::string>();
  remove->add_option("ID", *remove_id, "The sensor id")->required();
  remove->callback([send, remove_id] { send({"sensor-remove", {{"id", *remove_id}}}); });
  auto* list = sensor->add_subcommand("list", "List the sensors of the running agent");
  list->callback([send] { send({"sensor-list", {}}); });
  auto* creds = sensor->add_subcommand(
      "credentials", "A sensor's user name and password on the local broker (manage_clients)");
  auto creds_id = std::make_shared<std::string>();
  auto rotate = std::make_shared<bool>(false);
  auto creds_json = std::make_shared<bool>(false);
  creds->add_option("ID", *creds_id, "The sensor id")->required();
  creds->add_flag("--rotate", *rotate, "Give it a new password; the old one stops working");
  creds->add_flag("--json", *creds_json, "Print {\"username\": ..., \"password\": ...}");
  creds->callback([send, creds_id, rotate, creds_json] {
    ControlCommand request{"sensor-credentials", {{"id", *creds_id}}};
    if (*rotate) request.fields["rotate"] = "yes";
    if (*creds_json) request.fields["json"] = "yes";
    send(request);
  });

  auto* certify = sensor->add_subcommand(
      "certify",
      "Issue a sensor a client certificate (CN = its id) from the local-only CA "
      "([local] sensor_ca_dir) for the local broker's TLS listener");
  auto certify_request = std::make_shared<SensorCertifyRequest>();
  certify->add_option("ID", certify_request->sensor, "The sensor id")->required();
  certify->add_option("--csr", certify_request->csr, "The sensor's CSR (PEM)")->required();
  certify->add_option("--out", certify_request->out, "Where to write the certificate (PEM)")
      ->required();
  certify
      ->add_option("--days", certify_request->validity_days,
                   "Validity (default: validity_days of the local-only CA's ca.toml)")
      ->check(CLI::Range(1, 36500));
  certify->callback([&global, &exit_code, certify_request] {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    auto pem = CertifySensor(*config, *certify_request);
    if (!pem.ok()) {
      exit_code = Fail(pem.status());
      return;
    }
    std::printf(
        "Wrote the certificate of sensor %s to %s.\nThe sensor connects to the broker's TLS "
        "listener with it and its key; it checks the broker with --cafile %s.\n",
        certify_request->sensor.c_str(), certify_request->out.c_str(),
        (config->local.sensor_ca_dir / pki::kCaCertFile).c_str());
    exit_code = 0;
  });
}

}  // namespace ga
