// What the bridge's end-to-end tests share: a sensor-side MQTT client on the
// local broker, and readers of what iot-sim routed and what status says.
#pragma once

#include <gtest/gtest.h>
#include <mosquitto.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "agent_harness.h"

namespace ga::testing {

using namespace std::chrono_literals;

// A sensor-side MQTT client on the local broker (libmosquitto's own thread).
class LocalClient {
 public:
  LocalClient(int port, const std::string& id) {
    mosquitto_lib_init();
    m_ = mosquitto_new(id.c_str(), true, this);
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto* c = static_cast<LocalClient*>(self);
      std::lock_guard lock(c->mu_);
      c->received_.emplace_back(msg->topic, std::string(static_cast<const char*>(msg->payload),
                                                        static_cast<size_t>(msg->payloadlen)));
    });
    mosquitto_publish_callback_set(
        m_, [](mosquitto*, void* self, int) { static_cast<LocalClient*>(self)->acked_++; });
    mosquitto_subscribe_callback_set(m_, [](mosquitto*, void* self, int, int, const int*) {
      static_cast<LocalClient*>(self)->subscribed_++;
    });
    mosquitto_max_inflight_messages_set(m_, 1000);
    connected_ = mosquitto_connect(m_, "127.0.0.1", port, 30) == MOSQ_ERR_SUCCESS;
    mosquitto_loop_start(m_);
  }
  ~LocalClient() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  bool connected() const { return connected_; }
  // Subscribes and waits for the broker's SUBACK.
  bool Subscribe(const std::string& filter) {
    int before = subscribed_;
    if (mosquitto_subscribe(m_, nullptr, filter.c_str(), 1) != MOSQ_ERR_SUCCESS) return false;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (subscribed_ == before && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    return subscribed_ > before;
  }
  bool Publish(const std::string& topic, const std::string& payload, int qos = 1,
               bool retain = false) {
    return mosquitto_publish(m_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), qos, retain) == MOSQ_ERR_SUCCESS;
  }
  bool WaitAcked(int n, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (acked_ < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    return acked_ >= n;
  }
  std::vector<std::pair<std::string, std::string>> received() {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  mosquitto* m_;
  bool connected_ = false;
  std::atomic<int> acked_{0};
  std::atomic<int> subscribed_{0};
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> received_;
};

// Payloads as iot-sim reports them.
std::string Base64(std::string_view in);

struct CloudMessage {
  std::string topic;
  std::string client_id;
  std::string payload_b64;
};

using Json = nlohmann::json;

// `text` as JSON; discarded (is_discarded()) when it is not.
Json Parse(const std::string& text);

// The string at `key`, or "" when it is absent or not a string (null).
std::string Str(const Json& j, const char* key);

// The publishes the sim has routed that match `query`, in order.
Json SimPublishes(IotSim& sim, const std::string& query = "limit=100000");

// Every device publish the sim has routed, in order.
std::vector<CloudMessage> CloudPublishes(IotSim& sim);

// The entry of identity `name` in `status --json` output; {} when absent.
Json StatusOf(const std::string& status, const std::string& name);

// Asserts that iot-sim recorded no AWS limit violation.
void ExpectNoViolations(AgentHarness& h);

// Waits until the sim has routed `n` publishes on dt/ topics; with
// `distinct`, `n` different ones (topic and payload: a message sent again
// after a reconnect counts once).
bool WaitForCloudCount(IotSim& sim, size_t n, std::chrono::seconds timeout,
                       std::vector<CloudMessage>* out, bool distinct = false);

// The last 40 lines of the agent's log.
std::string Log(AgentHarness& h);

// The clients connected to iot-sim, from its control API.
nlohmann::json SimClients(IotSim& sim);

// True once the sim lists every one of `things` as a connected client.
bool WaitForSimClients(IotSim& sim, const std::vector<std::string>& things,
                       std::chrono::seconds timeout);

// Waits until iot-sim has stored `client_id`'s subscription to `filter`.
bool WaitForSimSubscription(IotSim& sim, const std::string& client_id, const std::string& filter,
                            std::chrono::seconds timeout);

// Waits until `client` has received `n` messages.
bool WaitForLocalMessage(LocalClient& client, size_t n, std::chrono::seconds timeout);

}  // namespace ga::testing
