// Local-broker benchmark: N sensors (default 1000) added to a running agent
// with local.manage_clients on a broker set up by `gateway-agent local-broker
// init` (mosquitto + dynamic security plugin), against a plain MQTT client
// that makes the same clients and roles on a second broker set up the same
// way, one $CONTROL/dynamic-security/v1 batch per sensor. One run, one
// process tree.
//
//   bench_local_clients [--sensors N] [--ctrl-sample M]
//
// Agent side: each `sensor-add` goes over the control socket as the CLI sends
// it; its latency is the request's round trip. A prober follows the adds in
// order and connects to the local broker with each sensor's credentials
// (the password file `sensor credentials` reads) until the CONNACK accepts
// it: "ready" is add sent -> first accepted connect. The sensors enroll into
// iot-sim meanwhile (own connection, TPM keys on swtpm), as they would.
// Peer: the same per sensor (createClient, createRole, 3 addRoleACL,
// addClientRole: what mosquitto_ctrl sends, one batch) from a plain client,
// waiting for the answer, then the same connect. --ctrl-sample M also times
// M sensors made with mosquitto_ctrl processes (one per command).
// Then: broker state sizes, the agent's RSS, a restart of both mosquitto and
// the agent with listClients/listRoles counted (no duplicates), and zero AWS
// limit violations in the sim. Exits non-zero when a check fails.
#include <mosquitto.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "agent_harness.h"
#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/daemon.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using ga::testing::AgentHarness;
using ga::testing::HarnessOptions;
namespace fs = std::filesystem;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "bench_local_clients: %s\n", what.c_str());
  return 1;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

struct MosqDeleter {
  void operator()(mosquitto* m) const { mosquitto_destroy(m); }
};
using MosqPtr = std::unique_ptr<mosquitto, MosqDeleter>;

// One connect with `user`/`password` (client id = user name, as the broker
// forces): true when the CONNACK accepts it.
bool ConnectsWith(int port, const std::string& user, const std::string& password) {
  struct State {
    int rc = -1;
  } state;
  MosqPtr owned(mosquitto_new(user.c_str(), true, &state));
  mosquitto* m = owned.get();
  if (m == nullptr) return false;
  mosquitto_username_pw_set(m, user.c_str(), password.c_str());
  mosquitto_connect_callback_set(
      m, [](mosquitto*, void* self, int rc) { static_cast<State*>(self)->rc = rc; });
  bool ok = false;
  if (mosquitto_connect(m, "127.0.0.1", port, 30) == MOSQ_ERR_SUCCESS) {
    auto deadline = Clock::now() + 5s;
    while (state.rc < 0 && Clock::now() < deadline) {
      if (mosquitto_loop(m, 50, 1) != MOSQ_ERR_SUCCESS) break;
    }
    ok = state.rc == 0;
    mosquitto_disconnect(m);
  }
  return ok;
}

// A plain client of $CONTROL/dynamic-security/v1 (the broker's admin): one
// batch at a time, its answer awaited.
class DynsecClient {
 public:
  ~DynsecClient() {
    if (m_ != nullptr) {
      mosquitto_disconnect(m_);
      mosquitto_loop_stop(m_, true);
    }
  }
  ga::Status Connect(int port, const std::string& user, const std::string& password) {
    owned_.reset(mosquitto_new(user.c_str(), true, this));
    m_ = owned_.get();
    if (m_ == nullptr) return ga::Internal("mosquitto_new for the admin client failed");
    mosquitto_username_pw_set(m_, user.c_str(), password.c_str());
    // No Nagle delay between a batch and its answer: the peer at its best.
    mosquitto_int_option(m_, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(m_, [](mosquitto* m, void* self, int rc) {
      auto* c = static_cast<DynsecClient*>(self);
      if (rc == 0) mosquitto_subscribe(m, nullptr, "$CONTROL/dynamic-security/v1/response", 1);
      std::lock_guard lock(c->mu_);
      c->connack_ = rc;
      c->cv_.notify_all();
    });
    mosquitto_subscribe_callback_set(m_, [](mosquitto*, void* self, int, int, const int*) {
      auto* c = static_cast<DynsecClient*>(self);
      std::lock_guard lock(c->mu_);
      c->subscribed_ = true;
      c->cv_.notify_all();
    });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto* c = static_cast<DynsecClient*>(self);
      std::lock_guard lock(c->mu_);
      c->answers_.emplace_back(static_cast<const char*>(msg->payload),
                               static_cast<size_t>(msg->payloadlen));
      c->cv_.notify_all();
    });
    if (mosquitto_connect(m_, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) {
      return ga::Internal("admin connect to 127.0.0.1:" + std::to_string(port) + " failed");
    }
    mosquitto_loop_start(m_);
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return connack_ == 0 && subscribed_; })) {
      return ga::Internal("admin connect: no CONNACK 0 / SUBACK (connack " +
                          std::to_string(connack_) + ")");
    }
    return ga::Status::Ok();
  }
  // Sends `commands` as one batch; the answer's "responses", or nullopt.
  std::optional<Json> Send(Json commands) {
    const std::string id = "b" + std::to_string(++next_);
    for (auto& c : commands) c["correlationData"] = id;
    const std::string payload = Json{{"commands", std::move(commands)}}.dump();
    mosquitto_publish(m_, nullptr, "$CONTROL/dynamic-security/v1", static_cast<int>(payload.size()),
                      payload.data(), 1, false);
    std::unique_lock lock(mu_);
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      for (auto it = answers_.begin(); it != answers_.end(); ++it) {
        Json j = Json::parse(*it, nullptr, false);
        if (!j.contains("responses") || j["responses"].empty()) continue;
        if (j["responses"][0].value("correlationData", "") != id) continue;
        answers_.erase(it);
        return j["responses"];
      }
      cv_.wait_for(lock, 100ms);
    }
    return std::nullopt;
  }
  // totalCount of listClients / listRoles, or -1.
  int Count(const char* command) {
    auto r = Send(Json::array({Json{{"command", command}, {"verbose", false}, {"count", -1}}}));
    if (!r || r->empty() || !(*r)[0].contains("data")) return -1;
    return (*r)[0]["data"].value("totalCount", -1);
  }

 private:
  MosqPtr owned_;
  mosquitto* m_ = nullptr;  // owned_
  std::mutex mu_;
  std::condition_variable cv_;
  int connack_ = -1;
  bool subscribed_ = false;
  std::deque<std::string> answers_;
  uint64_t next_ = 0;
};

// The commands that give `sensor` the client and role the agent gives it,
// as mosquitto_ctrl's dynsec subcommands send them.
Json PeerCommands(const std::string& sensor, const std::string& password) {
  const std::string role = "sensor-" + sensor;
  auto acl = [&](const char* type, const std::string& topic, bool allow, int priority) {
    return Json{{"command", "addRoleACL"}, {"rolename", role}, {"acltype", type},
                {"topic", topic},          {"allow", allow},   {"priority", priority}};
  };
  return Json::array({
      Json{{"command", "createClient"}, {"username", sensor}, {"password", password}},
      Json{{"command", "createRole"}, {"rolename", role}},
      acl("publishClientSend", "sensors/" + sensor + "/cmd/#", false, 2),
      acl("publishClientSend", "sensors/" + sensor + "/#", true, 1),
      acl("subscribePattern", "sensors/" + sensor + "/cmd/#", true, 1),
      Json{{"command", "addClientRole"}, {"username", sensor}, {"rolename", role}},
  });
}

std::string SensorName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "b%04d", i);
  return buf;
}

struct Figures {
  std::vector<double> add_ms;    // request round trip (agent) / batch answer (peer)
  std::vector<double> ready_ms;  // add sent -> first accepted connect
  double total_ms = 0;           // first add sent -> last sensor ready
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double Mean(const std::vector<double>& v, size_t from, size_t to) {
  double sum = 0;
  for (size_t i = from; i < to; ++i) sum += v[i];
  return to > from ? sum / static_cast<double>(to - from) : 0;
}

void PrintSide(const char* side, const Figures& f) {
  const size_t n = f.add_ms.size();
  const size_t tenth = std::max<size_t>(1, n / 10);
  std::printf(
      "%s: %zu sensors ready in %.2f s (%.2f ms/sensor); add p50 %.2f ms, p99 %.2f ms, max "
      "%.2f ms; ready p50 %.2f ms, p99 %.2f ms, max %.2f ms; add mean first %zu %.2f ms, "
      "last %zu %.2f ms\n",
      side, n, f.total_ms / 1000, f.total_ms / static_cast<double>(n), Quantile(f.add_ms, 0.5),
      Quantile(f.add_ms, 0.99), Quantile(f.add_ms, 1), Quantile(f.ready_ms, 0.5),
      Quantile(f.ready_ms, 0.99), Quantile(f.ready_ms, 1), tenth, Mean(f.add_ms, 0, tenth), tenth,
      Mean(f.add_ms, n - tenth, n));
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

long FileSize(const fs::path& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? -1 : static_cast<long>(n);
}

// VmRSS of `pid` in KiB, or -1.
long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// A broker as `gateway-agent local-broker init` sets it up, for the peer.
struct PeerBroker {
  ga::testing::TempDir dir;
  std::unique_ptr<ga::testing::Mosquitto> broker;
  std::string admin_password;
};

ga::Result<std::unique_ptr<PeerBroker>> StartPeerBroker() {
  auto p = std::make_unique<PeerBroker>();
  ga::testing::MosquittoOptions mo;
  mo.port = ga::testing::FreePort();
  const fs::path dir = p->dir / "broker";
  auto init = ga::testing::RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir",
                                       dir.string(), "--port", std::to_string(mo.port)});
  if (init.exit_code != 0) return ga::Internal("local-broker init: " + init.output);
  mo.config_file = dir / "mosquitto.conf";
  if (geteuid() == 0) std::ofstream(mo.config_file, std::ios::app) << "\nuser root\n";
  GA_ASSIGN_OR_RETURN(p->broker, ga::testing::Mosquitto::Start(mo));
  p->admin_password = Trimmed(ga::testing::ReadText(dir / "admin.password"));
  return p;
}

int Usage() {
  std::fprintf(stderr, "usage: bench_local_clients [--sensors N] [--ctrl-sample M]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int sensors = 1000;
  int ctrl_sample = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    if (a == "--sensors") {
      sensors = std::atoi(argv[++i]);
    } else if (a == "--ctrl-sample") {
      ctrl_sample = std::atoi(argv[++i]);
    } else {
      return Usage();
    }
  }
  if (sensors < 10 || ctrl_sample < 0) return Usage();
  mosquitto_lib_init();

  // ---- The peer: a plain client, one batch per sensor, on its own broker. ----
  auto peer_started = StartPeerBroker();
  if (!peer_started.ok()) return Fail("peer broker: " + peer_started.status().ToString());
  PeerBroker& peer = **peer_started;
  const int peer_port = peer.broker->port();
  const fs::path peer_dir = peer.dir / "broker";
  Figures pf;
  {
    DynsecClient admin;
    if (auto s = admin.Connect(peer_port, "admin", peer.admin_password); !s.ok()) {
      return Fail("peer: " + s.ToString());
    }
    std::printf("peer: %d clients + roles, one batch each from a plain client...\n", sensors);
    std::fflush(stdout);
    auto start = Clock::now();
    for (int i = 1; i <= sensors; ++i) {
      const std::string name = SensorName(i);
      const std::string password = "peer-password-" + name;
      auto t0 = Clock::now();
      auto r = admin.Send(PeerCommands(name, password));
      auto t1 = Clock::now();
      if (!r) return Fail("peer: no answer for " + name);
      for (const auto& c : *r) {
        if (!c.value("error", "").empty()) return Fail("peer: " + name + ": " + c.dump());
      }
      while (!ConnectsWith(peer_port, name, password)) {
        if (Clock::now() - t1 > 10s) return Fail("peer: " + name + " cannot connect");
      }
      auto t2 = Clock::now();
      pf.add_ms.push_back(Ms(t1 - t0));
      pf.ready_ms.push_back(Ms(t2 - t0));
    }
    pf.total_ms = Ms(Clock::now() - start);
  }
  // mosquitto_ctrl, one process per command, for a sample.
  double ctrl_ms_per_sensor = -1;
  if (ctrl_sample > 0) {
    auto start = Clock::now();
    for (int i = 1; i <= ctrl_sample; ++i) {
      const std::string name = "c" + SensorName(i), role = "sensor-" + name;
      std::vector<std::string> base = {"mosquitto_ctrl",          "-h",    "127.0.0.1", "-p",
                                       std::to_string(peer_port), "-u",    "admin",     "-P",
                                       peer.admin_password,       "dynsec"};
      std::vector<std::vector<std::string>> steps = {
          {"createClient", name, "-p", "peer-password-" + name},
          {"createRole", role},
          {"addRoleACL", role, "publishClientSend", "sensors/" + name + "/cmd/#", "deny", "2"},
          {"addRoleACL", role, "publishClientSend", "sensors/" + name + "/#", "allow", "1"},
          {"addRoleACL", role, "subscribePattern", "sensors/" + name + "/cmd/#", "allow", "1"},
          {"addClientRole", name, role},
      };
      for (auto& step : steps) {
        std::vector<std::string> args = base;
        args.insert(args.end(), step.begin(), step.end());
        auto r = ga::testing::RunCommand(args, 30s);
        if (r.exit_code != 0) return Fail("mosquitto_ctrl " + step[0] + ": " + r.output);
      }
      if (!ConnectsWith(peer_port, name, "peer-password-" + name)) {
        return Fail("mosquitto_ctrl sample: " + name + " cannot connect");
      }
    }
    ctrl_ms_per_sensor = Ms(Clock::now() - start) / ctrl_sample;
  }
  const long peer_dynsec = FileSize(peer_dir / "dynamic-security.json");
  if (auto s = peer.broker->Restart(); !s.ok()) return Fail("peer restart: " + s.ToString());
  const long peer_db = FileSize(peer_dir / "mosquitto.db");
  peer.broker.reset();

  // ---- The agent: the managed broker, the sim, the TPM. ----
  HarnessOptions o;
  o.sensors = 0;  // all of them added at run time
  o.managed_local_broker = true;
  o.backoff_initial = "1s";  // the agent's defaults, not the tests' fast ones
  o.backoff_max = "5m";
  auto started = AgentHarness::Start(o);
  if (!started.ok()) return Fail("harness: " + started.status().ToString());
  AgentHarness& h = **started;
  h.RewriteConfig([](std::string& text) {
    text = std::regex_replace(text, std::regex("connect_rate = [0-9.]+\n"), "");
  });
  if (auto s = h.StartAgent(); !s.ok()) return Fail("start agent: " + s.ToString());
  if (!h.WaitForState("ACTIVE", 1, 120s)) return Fail("the gateway did not get ACTIVE");
  const long rss_before = RssKib(h.agent().pid());
  const int port = h.broker().port();
  const fs::path socket = h.dir() / "run" / ga::kControlSocket;
  const fs::path passwords = h.state_dir() / "local-clients";

  std::printf("agent: adding %d sensors through the control socket...\n", sensors);
  std::fflush(stdout);
  Figures af;
  std::vector<Clock::time_point> sent(static_cast<size_t>(sensors));
  std::atomic<int> added{0};
  std::atomic<bool> prober_failed{false};
  std::vector<double> ready(static_cast<size_t>(sensors));
  Clock::time_point last_ready;
  std::thread prober([&] {
    for (int i = 0; i < sensors; ++i) {
      while (added.load() <= i) std::this_thread::sleep_for(200us);
      const std::string name = SensorName(i + 1);
      auto deadline = sent[static_cast<size_t>(i)] + 60s;
      for (;;) {
        std::string password = Trimmed(ga::testing::ReadText(passwords / name));
        if (!password.empty() && ConnectsWith(port, name, password)) break;
        if (Clock::now() > deadline) {
          prober_failed = true;
          return;
        }
        std::this_thread::sleep_for(1ms);
      }
      last_ready = Clock::now();
      ready[static_cast<size_t>(i)] = Ms(last_ready - sent[static_cast<size_t>(i)]);
    }
  });
  const auto agent_start = Clock::now();
  std::string add_error;
  for (int i = 0; i < sensors && add_error.empty(); ++i) {
    ga::ControlCommand add{"sensor-add", {{"id", SensorName(i + 1)}}};
    sent[static_cast<size_t>(i)] = Clock::now();
    auto reply = ga::ControlRequest(socket, add, 30s);
    af.add_ms.push_back(Ms(Clock::now() - sent[static_cast<size_t>(i)]));
    if (!reply.ok()) {
      add_error = reply.status().ToString();
    } else if (!reply->ok) {
      add_error = reply->body;
    }
    added = i + 1;
  }
  prober.join();
  if (!add_error.empty()) return Fail("sensor-add: " + add_error);
  if (prober_failed) return Fail("a sensor's local client did not work within 60 s");
  af.ready_ms = ready;
  af.total_ms = Ms(last_ready - agent_start);
  const long rss_added = RssKib(h.agent().pid());
  const long agent_dynsec = FileSize(h.BrokerDir() / "dynamic-security.json");
  auto counts = [&](int* clients, int* roles) {
    DynsecClient admin;
    if (!admin
             .Connect(port, "admin",
                      Trimmed(ga::testing::ReadText(h.BrokerDir() / "admin.password")))
             .ok()) {
      *clients = *roles = -1;
      return;
    }
    *clients = admin.Count("listClients");
    *roles = admin.Count("listRoles");
  };
  int clients_before = 0, roles_before = 0;
  counts(&clients_before, &roles_before);

  // ---- The sensors enroll meanwhile: wait for all of them. ----
  std::printf("agent: waiting for %d identities to get ACTIVE in iot-sim...\n", sensors + 1);
  std::fflush(stdout);
  const bool all_active = h.WaitForState("ACTIVE", sensors + 1, 900s);
  const double enroll_s = Ms(Clock::now() - agent_start) / 1000;
  const long rss_active = RssKib(h.agent().pid());

  // ---- Restart mosquitto, then the agent: no duplicate clients or roles. ----
  if (auto s = h.broker().Restart(); !s.ok()) return Fail("broker restart: " + s.ToString());
  const long agent_db = FileSize(h.BrokerDir() / "mosquitto.db");
  if (!h.agent().Signal(SIGTERM, 30s)) return Fail("the agent did not stop on SIGTERM");
  const size_t log_before = ga::testing::ReadText(h.dir() / "agent.log").size();
  if (auto s = h.StartAgent(); !s.ok()) return Fail("restart agent: " + s.ToString());
  // The agent sends every sensor's batch again once connected: wait for the
  // last sensor's client to work through it, then count.
  bool again = WaitUntil(
      [&] {
        return ConnectsWith(port, SensorName(sensors),
                            Trimmed(ga::testing::ReadText(passwords / SensorName(sensors))));
      },
      60s);
  // Then until the new agent has connected to the broker (its log after the
  // restart says so) and its resent batches had time to be answered.
  WaitUntil(
      [&] {
        std::string log_text = ga::testing::ReadText(h.dir() / "agent.log");
        size_t from = log_text.size() >= log_before ? log_before : 0;
        return log_text.find("connected to the local broker", from) != std::string::npos;
      },
      60s);
  std::this_thread::sleep_for(3s);  // its resent batches answered
  int clients_after = 0, roles_after = 0;
  counts(&clients_after, &roles_after);
  h.agent().Signal(SIGTERM, 30s);

  auto violations = h.sim().Http("GET", "/_sim/violations");
  const bool clean =
      violations.status == 200 &&
      std::regex_search(violations.body, std::regex("\"clients\"\\s*:\\s*\\{\\s*\\}"));

  // ---- Report. ----
  std::printf(
      "config: local-broker init (mosquitto %s + dynamic security), [local] manage_clients; "
      "sensors added one after the other over the control socket, own connection (each "
      "enrolls into iot-sim meanwhile: TPM key on swtpm, JITR, [aws] connect_rate default)\n",
      "2.0");
  PrintSide("agent", af);
  PrintSide("peer (plain client, one batch per sensor)", pf);
  if (ctrl_ms_per_sensor >= 0) {
    std::printf(
        "mosquitto_ctrl (6 processes per sensor, %d sensors sampled): %.1f ms/sensor, %.1f s "
        "for %d extrapolated\n",
        ctrl_sample, ctrl_ms_per_sensor, ctrl_ms_per_sensor * sensors / 1000, sensors);
  }
  std::printf("ratio: %.2f (agent %.2f s / peer %.2f s, first add -> last sensor's client works)\n",
              af.total_ms / pf.total_ms, af.total_ms / 1000, pf.total_ms / 1000);
  std::printf(
      "broker state: agent's dynamic-security.json %ld bytes (%.0f B/sensor), mosquitto.db "
      "%ld bytes; peer's %ld / %ld bytes\n",
      agent_dynsec, static_cast<double>(agent_dynsec) / sensors, agent_db, peer_dynsec, peer_db);
  std::printf("agent RSS: %ld KiB before the adds, %ld KiB after, %ld KiB with all ACTIVE\n",
              rss_before, rss_added, rss_active);
  std::printf("enrollment: %s %d identities ACTIVE %.1f s after the first add\n",
              all_active ? "all" : "NOT all", sensors + 1, enroll_s);
  std::printf(
      "restart check: clients %d / roles %d before, %d / %d after mosquitto and the agent "
      "restarted (expected %d / %d); last sensor connects again: %s\n",
      clients_before, roles_before, clients_after, roles_after, sensors + 2, sensors + 2,
      again ? "yes" : "NO");
  std::printf("AWS limit violations: %s\n", clean ? "none" : violations.body.c_str());
  const bool ok = all_active && again && clean && clients_before == sensors + 2 &&
                  roles_before == sensors + 2 && clients_after == clients_before &&
                  roles_after == roles_before;
  return ok ? 0 : 1;
}
