#include "bridge_harness.h"

#include <algorithm>
#include <set>

namespace ga::testing {

std::string Base64(std::string_view in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// `text` as JSON; discarded (is_discarded()) when it is not.
Json Parse(const std::string& text) {
  return Json::parse(text, nullptr, /*allow_exceptions=*/false);
}

// The string at `key`, or "" when it is absent or not a string (null).
std::string Str(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// The publishes the sim has routed that match `query`, in order.
Json SimPublishes(IotSim& sim, const std::string& query) {
  Json r = Parse(sim.Http("GET", "/_sim/publishes?" + query).body);
  return r.is_object() ? r.value("publishes", Json::array()) : Json::array();
}

// Every device publish the sim has routed, in order.
std::vector<CloudMessage> CloudPublishes(IotSim& sim) {
  std::vector<CloudMessage> out;
  for (const Json& p : SimPublishes(sim)) {
    out.push_back({Str(p, "topic"), Str(p, "clientId"), Str(p, "payload")});
  }
  return out;
}

// The entry of identity `name` in `status --json` output; {} when absent.
Json StatusOf(const std::string& status, const std::string& name) {
  Json s = Parse(status);
  if (!s.is_object()) return Json::object();
  for (const Json& id : s.value("identities", Json::array())) {
    if (Str(id, "name") == name) return id;
  }
  return Json::object();
}

void ExpectNoViolations(AgentHarness& h) {
  auto count = h.sim().ViolationCount();
  ASSERT_TRUE(count.ok()) << count.status().ToString();
  EXPECT_EQ(*count, 0) << h.sim().Http("GET", "/_sim/violations").body << Log(h) << "iot-sim:\n"
                       << RunCommand({"tail", "-n", "60", h.sim().log_path().string()}).output;
}

bool WaitForCloudCount(IotSim& sim, size_t n, std::chrono::seconds timeout,
                       std::vector<CloudMessage>* out, bool distinct) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<CloudMessage> got;
  std::set<std::pair<std::string, std::string>> different;
  auto count = [&] { return distinct ? different.size() : got.size(); };
  while (std::chrono::steady_clock::now() < deadline) {
    got.clear();
    different.clear();
    for (auto& m : CloudPublishes(sim)) {
      if (m.topic.rfind("dt/", 0) != 0) continue;
      different.insert({m.topic, m.payload_b64});
      got.push_back(m);
    }
    if (count() >= n) break;
    std::this_thread::sleep_for(200ms);
  }
  if (out) *out = got;
  return count() >= n;
}

std::string Log(AgentHarness& h) {
  return RunCommand({"tail", "-n", "40", (h.dir() / "agent.log").string()}).output;
}

// True once the sim lists every one of `things` as a connected client.
// The clients connected to iot-sim, from its control API.
nlohmann::json SimClients(IotSim& sim) {
  auto r = nlohmann::json::parse(sim.Http("GET", "/_sim/clients").body, nullptr, false);
  return r.is_object() && r.contains("clients") ? r["clients"] : nlohmann::json::array();
}

bool WaitForSimClients(IotSim& sim, const std::vector<std::string>& things,
                       std::chrono::seconds timeout) {
  return WaitUntil(
      [&] {
        auto clients = SimClients(sim);
        for (const auto& thing : things) {
          bool up = std::any_of(clients.begin(), clients.end(),
                                [&](const auto& c) { return c.value("clientId", "") == thing; });
          if (!up) return false;
        }
        return true;
      },
      timeout);
}

// Waits until iot-sim has stored `client_id`'s subscription to `filter`.
bool WaitForSimSubscription(IotSim& sim, const std::string& client_id, const std::string& filter,
                            std::chrono::seconds timeout) {
  return WaitUntil(
      [&] {
        for (const auto& c : SimClients(sim)) {
          if (c.value("clientId", "") != client_id || !c.contains("subscriptions")) continue;
          for (const auto& f : c["subscriptions"]) {
            if (f == filter) return true;
          }
        }
        return false;
      },
      timeout);
}

bool WaitForLocalMessage(LocalClient& client, size_t n, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (client.received().size() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  return client.received().size() >= n;
}

}  // namespace ga::testing
