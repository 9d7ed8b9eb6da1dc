// The agent as a service: the parts wired together, the signal loop and the
// sd_notify protocol.
#include "gateway_agent/daemon.h"

#include <signal.h>
#include <systemd/sd-daemon.h>

#include <mutex>

#include "gateway_agent/control.h"
#include "gateway_agent/enrollment.h"
#include "gateway_agent/files.h"
#include "gateway_agent/identity_store.h"
#include "gateway_agent/log.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/status_report.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {

namespace {

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

}  // namespace

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

}  // namespace ga
