// What the bridge benchmarks share: a libmosquitto client with its own
// thread, waiting for a condition, the sim's counters, and failing a run
// (Fail() throws Failure; main prints it and exits 1).
#pragma once

#include <mosquitto.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent_harness.h"

namespace ga::bench {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ga::testing::AgentHarness;
using ga::testing::IotSim;
using ga::testing::JsonField;
using ga::testing::RunCommand;

inline double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

inline int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Failure {
  std::string what;
};
[[noreturn]] inline void Fail(const std::string& what) {
  throw Failure{what};
}

// Fails the benchmark when iot-sim counted an AWS limit violation (`when`:
// after which figure).
inline void RequireNoViolations(AgentHarness& h, const std::string& when) {
  if (ga::Status held = h.NoViolations(); !held.ok()) Fail(when + ": " + held.ToString());
  std::printf("  AWS limit violations %s: none\n", when.c_str());
}

// A payload of `size` bytes starting with the publish time in microseconds.
inline std::string Payload(size_t size) {
  std::string p = std::to_string(NowUs()) + " ";
  if (p.size() < size) p.append(size - p.size(), 'x');
  return p;
}

// An MQTT client with libmosquitto's own thread (publisher or subscriber).
class Client {
 public:
  Client(int port, const std::string& id) {
    m_ = mosquitto_new(id.c_str(), true, this);
    mosquitto_publish_callback_set(
        m_, [](mosquitto*, void* self, int) { ++static_cast<Client*>(self)->acked_; });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      static_cast<Client*>(self)->OnMessage(msg);
    });
    mosquitto_subscribe_callback_set(m_, [](mosquitto*, void* self, int, int, const int*) {
      ++static_cast<Client*>(self)->subacks_;
    });
    mosquitto_max_inflight_messages_set(m_, 1000);
    if (mosquitto_connect(m_, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
      Fail("client " + id + " cannot connect to port " + std::to_string(port));
    }
    mosquitto_loop_start(m_);
  }
  ~Client() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  void Subscribe(const std::vector<std::string>& filters, int qos) {
    int before = subacks_;
    for (const auto& f : filters) mosquitto_subscribe(m_, nullptr, f.c_str(), qos);
    auto deadline = Clock::now() + 10s;
    while (subacks_ < before + static_cast<int>(filters.size()) && Clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
  }
  void Publish(const std::string& topic, const std::string& payload) {
    int rc = mosquitto_publish(m_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                               payload.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS) Fail(std::string("publish: ") + mosquitto_strerror(rc));
  }
  int64_t acked() const { return acked_; }
  int64_t received() const { return received_; }
  void RecordLatency(bool on) {
    std::lock_guard lock(mu_);
    record_ = on;
    latencies_us_.clear();
  }
  std::vector<int64_t> latencies_us() {
    std::lock_guard lock(mu_);
    return latencies_us_;
  }

 private:
  void OnMessage(const mosquitto_message* msg) {
    int64_t now = NowUs();
    ++received_;
    std::lock_guard lock(mu_);
    if (record_ && msg->payloadlen > 0) {
      std::string p(static_cast<const char*>(msg->payload), static_cast<size_t>(msg->payloadlen));
      latencies_us_.push_back(now - std::atoll(p.c_str()));
    }
  }
  mosquitto* m_;
  std::atomic<int64_t> acked_{0};
  std::atomic<int64_t> received_{0};
  std::atomic<int> subacks_{0};
  std::mutex mu_;
  bool record_ = false;
  std::vector<int64_t> latencies_us_;
};

inline bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds poll = 20ms) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(poll);
  }
  return done();
}

// The sim's publish log: the sequence number of the last routed message.
inline int64_t SimLastSeq(IotSim& sim) {
  auto r = sim.Http("GET", "/_sim/publishes?since=999999999999&limit=1");
  return std::atoll(JsonField(r.body, "lastSeq").c_str());
}

inline int SimClients(IotSim& sim) {
  auto r = sim.Http("GET", "/_sim/clients");
  int n = 0;
  for (size_t p = 0; (p = r.body.find("\"clientId\"", p)) != std::string::npos; ++p) ++n;
  return n;
}

// When iot-sim accepted `client_id`'s connection (Unix ms), from /_sim/clients;
// 0 when it is not connected.
inline int64_t ConnectedAt(IotSim& sim, const std::string& client_id) {
  auto r = sim.Http("GET", "/_sim/clients");
  size_t at = r.body.find("\"clientId\":\"" + client_id + "\"");
  if (at == std::string::npos) return 0;
  size_t field = r.body.find("\"connectedAt\":", at);
  return field == std::string::npos ? 0 : std::atoll(r.body.c_str() + field + 14);
}

// Every client's connectedAt (Unix ms), from /_sim/clients.
inline std::vector<int64_t> ConnectTimes(IotSim& sim) {
  auto r = sim.Http("GET", "/_sim/clients");
  std::vector<int64_t> out;
  for (size_t p = 0; (p = r.body.find("\"connectedAt\":", p)) != std::string::npos; p += 14) {
    out.push_back(std::atoll(r.body.c_str() + p + 14));
  }
  return out;
}

inline int CountConnected(const std::string& status_json) {
  int n = 0;
  for (size_t p = 0; (p = status_json.find("\"connected\":true", p)) != std::string::npos; ++p) ++n;
  return n;
}

inline std::string Tail(const std::filesystem::path& file, int lines = 30) {
  return RunCommand({"tail", "-n", std::to_string(lines), file.string()}).output;
}

inline std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  auto p = text.find(from);
  if (p == std::string::npos) Fail("config has no \"" + from + "\"");
  return text.replace(p, from.size(), to);
}

inline void WaitAgentCloud(AgentHarness& h, int identities, std::chrono::seconds timeout,
                           bool sim) {
  bool ok = WaitFor(
      [&] {
        return sim ? SimClients(h.sim()) >= identities
                   : CountConnected(h.StatusJson()) >= identities;
      },
      timeout, 250ms);
  if (!ok)
    Fail("the agent's cloud connections did not all come up\n" + Tail(h.dir() / "agent.log"));
}

// Scenario 5: the agent's cloud connections through a link with `rtt` round
// trip time (a delaying relay in front of iot-sim): throughput of `messages`
// QoS 1 messages from one sensor against the in-flight window's bound, and
// the enrollment time of the gateway and `sensors` sensors through the link.
void SlowLink(std::chrono::milliseconds rtt, int messages, int sensors);

}  // namespace ga::bench
