// The agent as a service: the parts wired together, the signal loop and the
// sd_notify protocol.
#include "gateway_agent/agent/daemon.h"

#include <signal.h>
#include <systemd/sd-daemon.h>

#include <chrono>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <utility>

#include "bridge_feed.h"
#include "control_commands.h"
#include "gateway_agent/agent/agent_health.h"
#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/current_ca.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/sensor_ca.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "health_monitor.h"
#include "process.h"
#include "sensor_roster.h"

namespace ga {

namespace {

// The service side of the sd_notify protocol: readiness, status, reloading,
// stopping and the watchdog. Without NOTIFY_SOCKET every message is dropped
// by libsystemd, so the same code runs in a terminal.
class ServiceNotifier {
 public:
  ServiceNotifier() {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
      watchdog_interval_ = std::chrono::microseconds(usec / 2);
      next_watchdog_ = SteadyClock::now();
    }
  }

  // READY=1 with the current status; also ends a reload.
  void Ready(const std::string& status) {
    status_ = status;
    sd_notifyf(0, "READY=1\nSTATUS=%s", status_.c_str());
  }

  // RELOADING=1 with the monotonic time, as systemd (253+ notify-reload) wants it.
  void Reloading() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t usec =
        static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
    sd_notifyf(0, "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%llu",
               static_cast<unsigned long long>(usec));
  }

  void Stopping() { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

  // STATUS= when it differs from the last one sent; logged too.
  void UpdateStatus(const std::string& status) {
    if (status == status_) return;
    status_ = status;
    sd_notifyf(0, "STATUS=%s", status_.c_str());
    log::Info("enrollment: " + status_);
  }

  // Waits for one of `signals` for at most a status poll interval, and sends
  // WATCHDOG=1 whenever half of WATCHDOG_USEC has passed since the last one.
  // Returns the signal, or 0 when the wait timed out. The watchdog is fed only
  // from here: a main loop that stops coming back here gets restarted.
  int WaitForSignal(const sigset_t& signals,
                    std::chrono::milliseconds max_wait = std::chrono::milliseconds(1000)) {
    auto now = SteadyClock::now();
    auto wake = now + max_wait;
    if (watchdog_interval_.count() > 0) wake = std::min(wake, next_watchdog_);
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now);
    if (wait.count() < 0) wait = std::chrono::nanoseconds(0);
    timespec ts{static_cast<time_t>(wait.count() / 1000000000),
                static_cast<long>(wait.count() % 1000000000)};
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (watchdog_interval_.count() > 0 && SteadyClock::now() >= next_watchdog_) {
      sd_notify(0, "WATCHDOG=1");
      next_watchdog_ = SteadyClock::now() + watchdog_interval_;
    }
    return sig > 0 ? sig : 0;
  }

 private:
  std::string status_;
  std::chrono::microseconds watchdog_interval_{0};
  SteadyClock::time_point next_watchdog_;
};

// The sections of FormatConfig's output, by header ("[aws]"), for telling
// which sections a reload changed.
std::map<std::string, std::string> ConfigSections(const Config& config) {
  std::map<std::string, std::string> sections;
  std::string current;
  std::istringstream in(FormatConfig(config));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.front() == '[') current = line;
    sections[current] += line + "\n";
  }
  return sections;
}

// What a reload can change besides the sensors and the log level.
struct ReloadParts {
  Enrollment& enrollment;
  CurrentCa& ca;
  std::shared_ptr<tpm::TpmContext> tpm;
};

// The CA [ca] names, opened as at start (its files may have been replaced
// where they are): another CA than the running one (a rollover) issues every
// certificate from now on and each identity renews onto it. Returns false
// (the running CA stays, logged) when it cannot be opened.
bool ReopenCa(const CaConfig& next, ReloadParts& parts) {
  auto ca = pki::OpenLocalCa(next, parts.tpm);
  if (!ca.ok()) {
    log::Error("reload: the running CA stays, [ca] cannot be opened: " +
               std::move(ca).take_status().With("opening the local CA").message());
    return false;
  }
  const bool another = pki::AwsCertificateId((*ca)->certificate()) != parts.ca.id();
  parts.ca.Replace(std::move(*ca));
  if (another) parts.enrollment.CaReplaced();
  return true;
}

// SIGHUP: re-reads and validates the file the running configuration came
// from. An unreadable or invalid file is refused with every problem logged,
// and the running configuration stays. Otherwise sensor additions, removals,
// the log level and [ca] (a new CA: identities renew onto it) take effect
// now; other changes need a restart, which is logged. Returns the
// configuration in effect afterwards.
Config ReloadConfig(const Config& running, ReloadParts parts) {
  Enrollment& enrollment = parts.enrollment;
  log::Info("reloading the configuration from " + running.source.string());
  auto loaded = LoadConfig(running.source);
  if (!loaded.ok()) {
    log::Error("reload refused, the running configuration stays: " + loaded.status().message());
    return running;
  }
  if (!loaded->ok()) {
    for (const auto& p : loaded->problems) log::Error("reload: " + p.ToString());
    log::Error("reload refused: " + running.source.string() + " has " +
               std::to_string(loaded->problems.size()) +
               " problem(s); the running configuration stays");
    return running;
  }
  const Config& next = loaded->config;

  Config effective = running;
  effective.agent.log_level = next.agent.log_level;
  log::SetLevel(next.agent.log_level);
  effective.sensors = ApplySensorChanges(running, next, enrollment);
  if (ReopenCa(next.ca, parts)) effective.ca = next.ca;

  // Everything else (endpoint, TPM, directories, enrollment pacing, bridge)
  // is wired into running parts: it takes a restart.
  Config unapplied = next;
  unapplied.sensors = effective.sensors;
  unapplied.agent.log_level = effective.agent.log_level;
  auto now = ConfigSections(effective), wanted = ConfigSections(unapplied);
  std::string changed;
  for (const auto& [header, text] : wanted) {
    if (now[header] != text) changed += (changed.empty() ? "" : ", ") + header;
  }
  if (!changed.empty()) {
    log::Warning("reload: changes to " + changed +
                 " take effect only after a restart (systemctl restart gateway-agent)");
  }
  log::Info("configuration reloaded: " + std::to_string(next.sensors.size()) +
            " sensor(s) in the file, log level " +
            std::string(log::LevelName(next.agent.log_level)));
  return effective;
}
// Waits (feeding the watchdog) until the bridge is connected to the local
// broker; false when asked to stop meanwhile. A SIGHUP meanwhile sets
// `reload` (applied once the service is ready).
bool WaitForLocalBroker(bridge::Bridge& bridge, const Config& config, ServiceNotifier& notifier,
                        const sigset_t& signals, bool* reload, const std::function<void()>& tick) {
  const std::string where = config.local.unix_socket.empty()
                                ? config.local.host + ":" + std::to_string(config.local.port)
                                : config.local.unix_socket.string();
  bool logged = false;
  auto started = SteadyClock::now();
  auto next_tick = started + std::chrono::seconds(1);
  while (!bridge.local_connected()) {
    if (SteadyClock::now() >= next_tick) {
      tick();
      next_tick = SteadyClock::now() + std::chrono::seconds(1);
    }
    notifier.UpdateStatus("waiting for the local broker at " + where);
    if (!logged && SteadyClock::now() - started > std::chrono::seconds(5)) {
      log::Warning("still waiting for the local MQTT broker at " + where +
                   " (is mosquitto running? [local] in the config)");
      logged = true;
    }
    int sig = notifier.WaitForSignal(signals, std::chrono::milliseconds(50));
    if (sig == SIGTERM || sig == SIGINT) return false;
    if (sig == SIGHUP && !*reload) {
      log::Info(
          "reload asked for before the service is ready: applied once the local broker "
          "is reached");
      *reload = true;
    }
  }
  return true;
}

// STATUS=: the enrollment counts, and the first thing that needs attention
// (else the first warning).
std::string StatusLine(const EnrollmentCounts& counts, const AgentHealth& health) {
  std::vector<std::string> problems = health.problems;
  for (const auto& [name, why] : health.identities) problems.push_back(name + ": " + why);
  std::string line = counts.ToString();
  const std::vector<std::string>& shown = problems.empty() ? health.warnings : problems;
  if (shown.empty()) return line;
  line += (problems.empty() ? "; warning: " : "; needs attention: ") + shown.front();
  const size_t more = problems.size() + health.warnings.size() - 1;
  if (more > 0) line += " (+" + std::to_string(more) + " more: gateway-agent status)";
  return line;
}

// Whether a restart could get past a start-up failure of this kind.
int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Code::kInvalidArgument:
    case Code::kNotFound:
    case Code::kAlreadyExists:
    case Code::kPermissionDenied:
    case Code::kFailedPrecondition: return kExitNeedsOperator;
    default: return kExitTransient;
  }
}

}  // namespace

Status CheckStartupFiles(const Config& config) {
  GA_RETURN_IF_ERROR(pki::CheckLocalCa(config.ca).With("[ca] in " + config.source.string()));
  return CheckSensorCa(config);
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
    int code = ExitCodeFor(s);
    std::string message = s.message();
    if (const Millis now = NowMillis(); now < BuildEpochMillis()) {
      // A file judged by a wrong clock (a CA "not valid yet") is fine once
      // NTP has set it: a restart can get past this.
      code = kExitTransient;
      message += "; " + ClockProblem(now);
    }
    log::Error(message + (code == kExitNeedsOperator
                              ? " (not retried: fix this, then start the agent again)"
                              : ""));
    sd_notifyf(0, "STATUS=failed: %s", message.c_str());
    return code;
  };
  Status s = CheckStartupFiles(config);
  if (!s.ok()) return fail(s);
  s = EnsureDirectory(config.agent.state_dir, 0700);
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

  RaiseOpenFileLimit();
  bridge::Bridge::Options bridge_options;
  bridge_options.local = config.local;
  bridge_options.bridge = config.bridge;
  bridge_options.aws = config.aws;
  bridge_options.state_dir = config.agent.state_dir;
  bridge_options.connect_interrupt_signal = InstallConnectInterruptSignal();
  std::optional<LocalCredentials> credentials;
  if (config.local.manage_clients) {
    credentials.emplace(config.agent.state_dir);
    auto probe = credentials->PasswordOf(bridge::kBoundaryProbeUser);
    if (!probe.ok())
      return fail(std::move(probe).take_status().With("the boundary probe's password"));
    bridge_options.boundary_probe_password = std::move(*probe);
  }
  bridge_options.release_free_memory = ReleaseFreeHeap;
  bridge_options.tpm_problem = [tpm = *tpm] {
    Status h = tpm->Health();
    return h.ok() ? std::string() : h.message();
  };
  auto bridge = bridge::Bridge::Create(std::move(bridge_options));
  if (!bridge.ok()) return fail(bridge.status());
  HealthMonitor health({*tpm, bridge->get(), config.agent.runtime_dir / kHealthFile,
                        credentials ? &*credentials : nullptr, config.local});

  Enrollment::Options options;
  options.config = config;
  options.tpm = *tpm;
  options.store = store->get();
  auto current_ca = std::make_shared<CurrentCa>(std::move(*ca));
  options.ca = current_ca;
  options.on_change = [&health](const Identity& id) { health.Feed(id); };
  options.ask = [&bridge = **bridge](
                    const Identity& id,
                    const aws::LifecycleAsk& ask) -> std::optional<LifecycleAnswer> {
    // As long as a connect of its own would wait for the answer.
    bridge::LifecycleReply r = bridge.Ask(id.name, ask, ConnectOptions().timeout);
    if (!r.sent) return std::nullopt;
    return LifecycleAnswer{r.answered, r.accepted, std::move(r.detail)};
  };
  Enrollment enrollment(std::move(options));
  if (Status l = enrollment.Load(); !l.ok()) return fail(l);
  for (const Identity& id : enrollment.Snapshot()) health.Feed(id);

  ControlParts control_parts{enrollment, config, credentials ? &*credentials : nullptr,
                             [&health](const Identity& id) { health.Feed(id); }};
  auto control = ControlServer::Start(config.agent.runtime_dir / kControlSocket,
                                      [&control_parts](const ControlCommand& request) {
                                        return HandleControl(control_parts, request);
                                      });
  if (!control.ok()) return fail(control.status());

  if (Status b = (*bridge)->Start(); !b.ok()) return fail(b);
  enrollment.Start();

  // READY=1 means: configuration, state, TPM, CA and control socket are up,
  // and the bridge is connected to the local broker.
  ServiceNotifier notifier;
  bool reload = false;
  (void)health.Tick(enrollment);  // `status` sees the agent from now on
  if (!WaitForLocalBroker(**bridge, config, notifier, signals, &reload,
                          [&] { (void)health.Tick(enrollment); })) {
    notifier.Stopping();
    control->reset();
    (*bridge)->Stop();
    enrollment.Stop();
    return 0;
  }
  notifier.Ready(enrollment.Counts().ToString());
  log::Info("gateway-agent running: " + enrollment.Counts().ToString(),
            {{"THING", config.agent.thing_name}});

  Config running = config;
  int sig = 0;
  while (reload || ((sig = notifier.WaitForSignal(signals)) != SIGTERM && sig != SIGINT)) {
    if (std::exchange(reload, false) || sig == SIGHUP) {
      notifier.Reloading();
      running = ReloadConfig(running, {enrollment, *current_ca, *tpm});
      notifier.Ready(StatusLine(enrollment.Counts(), health.Tick(enrollment)));
    } else {
      notifier.UpdateStatus(StatusLine(enrollment.Counts(), health.Tick(enrollment)));
    }
  }

  notifier.Stopping();
  log::Info(std::string("stopping on ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
            ": finishing the enrollment steps in progress");
  control->reset();
  (*bridge)->Stop();
  enrollment.Stop();
  log::Info("gateway-agent stopped: " + enrollment.Counts().ToString(),
            {{"THING", config.agent.thing_name}});
  return 0;
}

}  // namespace ga
