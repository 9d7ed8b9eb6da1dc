// `gateway-agent run`, `status`, `probe` and `sensor ...`.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "cli_commands.h"
#include "gateway_agent/config.h"
#include "gateway_agent/control.h"
#include "gateway_agent/enrollment.h"
#include "gateway_agent/files.h"
#include "gateway_agent/identity_store.h"
#include "gateway_agent/jitr_connect.h"
#include "gateway_agent/log.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/status_report.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

namespace {

constexpr const char* kStateDb = "state.db";
constexpr const char* kControlSocket = "control.sock";

void PrintError(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
}

// Loads and validates the configuration; prints the problems and sets
// exit_code (2 invalid, 1 unreadable) when it cannot be used.
std::optional<Config> LoadUsableConfig(const GlobalOptions& global, int& exit_code) {
  std::filesystem::path path = global.config_path.empty()
                                   ? std::filesystem::path(kDefaultConfigPath)
                                   : std::filesystem::path(global.config_path);
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

IssueFunction MakeIssuer(std::shared_ptr<pki::LocalCa> ca) {
  auto mu = std::make_shared<std::mutex>();
  return [ca, mu](X509_REQ* csr, const std::string& thing) -> Result<IssuedPem> {
    std::lock_guard lock(*mu);
    GA_ASSIGN_OR_RETURN(pki::IssuedCertificate issued, ca->Issue(csr, thing));
    IssuedPem out;
    GA_ASSIGN_OR_RETURN(out.certificate, issued.CertPem());
    GA_ASSIGN_OR_RETURN(out.chain, issued.ChainPem());
    return out;
  };
}

ControlReply HandleControl(Enrollment& enrollment, const std::vector<std::string>& words) {
  if (words.empty()) return {false, "empty request"};
  const std::string& verb = words[0];
  if (verb == "sensor-add" && (words.size() == 2 || words.size() == 3)) {
    auto added = enrollment.AddSensor(words[1], words.size() == 3 ? words[2] : "");
    if (!added.ok()) return {false, added.status().message()};
    return {true, "sensor " + added->name + " added as thing " + added->thing +
                      "; it enrolls now (gateway-agent status)\n"};
  }
  if (verb == "sensor-remove" && words.size() == 2) {
    auto removed = enrollment.RemoveSensor(words[1]);
    if (!removed.ok()) return {false, removed.status().message()};
    std::string body = "sensor " + removed->name + " (thing " + removed->thing +
                       ") removed; its TPM key blob is deleted.\n";
    if (!removed->cert_id.empty()) {
      body +=
          "Its certificate still exists in AWS IoT; deactivate it with:\n  aws iot "
          "update-certificate --certificate-id " +
          removed->cert_id + " --new-status INACTIVE\n";
    }
    return {true, body};
  }
  if (verb == "sensor-list" && words.size() == 1) {
    std::vector<Identity> sensors;
    for (auto& id : enrollment.Snapshot()) {
      if (id.kind == IdentityKind::kSensor) sensors.push_back(id);
    }
    return {true, StatusTable(sensors, NowMillis())};
  }
  return {false, "unknown request \"" + verb + "\""};
}

int RunAgent(const Config& config) {
  // Signals are taken synchronously by the main thread; every thread started
  // from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto fail = [](const Status& s) {
    log::Error(s.message());
    sd_notifyf(0, "STATUS=failed: %s", s.message().c_str());
    return 1;
  };
  Status s = EnsureDirectory(config.agent.state_dir, 0700);
  if (!s.ok()) return fail(std::move(s).With("state directory"));
  s = EnsureDirectory(config.agent.runtime_dir, 0700);
  if (!s.ok()) return fail(std::move(s).With("runtime directory"));
  auto store = IdentityStore::Open(config.agent.state_dir / kStateDb);
  if (!store.ok()) return fail(store.status());
  auto tpm = tpm::TpmContext::Open({config.tpm.tcti, config.tpm.srk_handle});
  if (!tpm.ok()) return fail(tpm.status());
  if (auto flushed = (*tpm)->FlushStaleTransientObjects(); !flushed.ok()) {
    return fail(flushed.status());
  } else if (*flushed > 0) {
    log::Warning("flushed " + std::to_string(*flushed) +
                 " transient object(s) left in the TPM by a process that was killed");
  }
  if (auto srk = (*tpm)->EnsureSrk(); !srk.ok()) return fail(srk.status());
  auto ca = pki::OpenLocalCa(config.ca, *tpm);
  if (!ca.ok()) return fail(std::move(ca).take_status().With("opening the local CA"));

  Enrollment::Options options;
  options.config = config;
  options.tpm = *tpm;
  options.store = store->get();
  options.issue = MakeIssuer(std::shared_ptr<pki::LocalCa>(std::move(*ca)));
  Enrollment enrollment(std::move(options));
  if (Status l = enrollment.Load(); !l.ok()) return fail(l);

  auto control = ControlServer::Start(config.agent.runtime_dir / kControlSocket,
                                      [&enrollment](const std::vector<std::string>& words) {
                                        return HandleControl(enrollment, words);
                                      });
  if (!control.ok()) return fail(control.status());

  enrollment.Start();
  std::string status = enrollment.Counts().ToString();
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
  log::Info("gateway-agent running: " + status, {{"THING", config.agent.thing_name}});

  uint64_t watchdog_usec = 0;
  bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  auto tick = std::chrono::milliseconds(1000);
  if (watchdog) {
    tick = std::min(tick, std::chrono::milliseconds(watchdog_usec / 2000));
  }
  int exit_code = 0;
  while (true) {
    timespec ts{static_cast<time_t>(tick.count() / 1000),
                static_cast<long>((tick.count() % 1000) * 1000000)};
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (watchdog) sd_notify(0, "WATCHDOG=1");
    if (sig == SIGTERM || sig == SIGINT) {
      sd_notify(0, "STOPPING=1");
      log::Info(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
      break;
    }
    if (sig == SIGHUP) {
      log::Info("SIGHUP: configuration reload is not supported yet; restart to apply changes");
    }
    std::string now = enrollment.Counts().ToString();
    if (now != status) {
      status = now;
      sd_notifyf(0, "STATUS=%s", status.c_str());
      log::Info("enrollment: " + status);
    }
  }
  control->reset();
  enrollment.Stop();
  return exit_code;
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
    auto store = IdentityStore::OpenReadOnly(config->agent.state_dir / kStateDb);
    if (!store.ok()) {
      PrintError(store.status());
      exit_code = 1;
      return;
    }
    auto list = (*store)->List();
    if (!list.ok()) {
      PrintError(list.status());
      exit_code = 1;
      return;
    }
    std::cout << (*json ? StatusJson(*list) : StatusTable(*list, NowMillis()));
    exit_code = 0;
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
    ConnectOptions co;
    co.host = config->aws.endpoint;
    co.port = config->aws.port;
    co.client_id = id->thing;
    co.key = key->get();
    co.chain_file = id->chain_file;
    co.root_ca = config->aws.root_ca;
    co.alpn = config->aws.alpn;
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

  auto* sensor = app.add_subcommand("sensor", "Add, remove or list sensors of the running agent");
  sensor->require_subcommand(1);
  auto send = [&global, &exit_code](std::vector<std::string> words) {
    auto config = LoadUsableConfig(global, exit_code);
    if (!config) return;
    auto reply = ControlRequest(config->agent.runtime_dir / kControlSocket, words);
    if (!reply.ok()) {
      PrintError(reply.status());
      exit_code = 1;
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
  auto* add = sensor->add_subcommand("add", "Enroll a new sensor");
  auto add_id = std::make_shared<std::string>();
  auto add_thing = std::make_shared<std::string>();
  add->add_option("ID", *add_id, "The sensor id (its topic level sensors/<ID>/...)")->required();
  add->add_option("--thing-name", *add_thing, "AWS thing name (default <gateway thing>-<ID>)");
  add->callback([send, add_id, add_thing] {
    std::vector<std::string> words = {"sensor-add", *add_id};
    if (!add_thing->empty()) words.push_back(*add_thing);
    send(words);
  });
  auto* remove = sensor->add_subcommand("remove", "Stop a sensor and delete its key");
  auto remove_id = std::make_shared<std::string>();
  remove->add_option("ID", *remove_id, "The sensor id")->required();
  remove->callback([send, remove_id] { send({"sensor-remove", *remove_id}); });
  auto* list = sensor->add_subcommand("list", "List the sensors of the running agent");
  list->callback([send] { send({"sensor-list"}); });
}

}  // namespace ga
