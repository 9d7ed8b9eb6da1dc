// The local side as a trust boundary: a broker set up by `gateway-agent
// local-broker init` (a real mosquitto with its dynamic security plugin), on
// which the agent gives each sensor its own user and ACL (manage_clients).
// No client speaks for a sensor it is not; removal and rotation take effect.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "bridge_harness.h"

namespace ga::testing {
namespace {

// How many clients named `user` the plugin's state file holds.
int ClientsNamed(AgentHarness& h, const std::string& user) {
  std::ifstream in(h.BrokerDir() / "dynamic-security.json");
  auto j = nlohmann::json::parse(in, nullptr, false);
  int n = 0;
  if (j.is_object() && j.contains("clients")) {
    for (const auto& c : j["clients"]) n += c.value("username", "") == user;
  }
  return n;
}

// A client of the local broker with a user name: the CONNACK is kept.
class Session {
 public:
  Session(int port, const std::string& client_id, const std::string& user,
          const std::string& password) {
    mosquitto_lib_init();
    m_ = mosquitto_new(client_id.c_str(), true, this);
    if (!user.empty()) mosquitto_username_pw_set(m_, user.c_str(), password.c_str());
    mosquitto_connect_callback_set(
        m_, [](mosquitto*, void* self, int rc) { static_cast<Session*>(self)->connack_ = rc; });
    mosquitto_disconnect_callback_set(
        m_, [](mosquitto*, void* self, int) { static_cast<Session*>(self)->dropped_ = true; });
    mosquitto_publish_callback_set(
        m_, [](mosquitto*, void* self, int) { static_cast<Session*>(self)->acked_++; });
    mosquitto_connect(m_, "127.0.0.1", port, 30);
    mosquitto_loop_start(m_);
  }
  ~Session() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  // The CONNACK code (0: accepted), or -1 when none came in 10 s.
  int Connack() {
    WaitUntil([&] { return connack_ >= 0 || dropped_; }, std::chrono::seconds(10));
    return connack_;
  }
  bool dropped() const { return dropped_; }
  void Publish(const std::string& topic, const std::string& payload) {
    mosquitto_publish(m_, nullptr, topic.c_str(), static_cast<int>(payload.size()), payload.data(),
                      1, false);
  }
  bool WaitAcked(int n) {
    return WaitUntil([&] { return acked_ >= n; }, std::chrono::seconds(20));
  }

 private:
  mosquitto* m_;
  std::atomic<int> connack_{-1};
  std::atomic<bool> dropped_{false};
  std::atomic<int> acked_{0};
};

struct Credentials {
  std::string username, password;
};

Credentials CredentialsOf(AgentHarness& h, const std::string& sensor, bool rotate = false) {
  std::vector<std::string> args = {"sensor", "credentials", sensor, "--json"};
  if (rotate) args.push_back("--rotate");
  auto r = h.Cli(args);
  Json j = Parse(r.output);
  EXPECT_TRUE(j.is_object()) << r.output;
  return {Str(j, "username"), Str(j, "password")};
}

// Payloads the sim routed for `thing` under dt/<thing>/...
std::set<std::string> CloudPayloads(IotSim& sim, const std::string& thing) {
  std::set<std::string> out;
  for (const auto& m : CloudPublishes(sim)) {
    if (m.topic.rfind("dt/" + thing + "/", 0) == 0) out.insert(m.payload_b64);
  }
  return out;
}

TEST(LocalClients, EachSensorSpeaksOnlyForItselfAndRemovalAndRotationTakeEffect) {
  HarnessOptions o;
  o.sensors = 1;  // s1 from the file; s2 added at run time (so it can be removed)
  o.managed_local_broker = true;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  auto added = (*h)->Cli({"sensor", "add", "s2"});
  ASSERT_EQ(added.exit_code, 0) << added.output;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 90s)) << Log(**h);
  const int port = (*h)->broker().port();
  Credentials s1 = CredentialsOf(**h, "s1");
  Credentials s2 = CredentialsOf(**h, "s2");
  ASSERT_EQ(s1.username, "s1");
  ASSERT_GE(s1.password.size(), 24u);
  EXPECT_EQ(Log(**h).find(s1.password), std::string::npos) << "a password in the log";
  EXPECT_EQ(Log(**h).find("lets anonymous clients in"), std::string::npos) << Log(**h);
  // Every command of the sensors' batches was carried out (or found done):
  // nothing needs attention.
  EXPECT_EQ(ReadText((*h)->dir() / "agent.log").find("the local broker refused"), std::string::npos)
      << Log(**h);
  CommandResult status = (*h)->Cli({"status"});
  EXPECT_EQ(status.exit_code, 0) << status.output;

  // Anonymous: refused at CONNECT.
  Session anonymous(port, "anon", "", "");
  EXPECT_NE(anonymous.Connack(), 0);
  // The sensor's client is made when the agent enrolls it: it may take a moment.
  std::unique_ptr<Session> s1_session;
  ASSERT_TRUE(WaitUntil(
      [&] {
        s1_session = std::make_unique<Session>(port, "s1", s1.username, s1.password);
        return s1_session->Connack() == 0;
      },
      30s))
      << Log(**h);
  for (int n = 0; n < 10; ++n) s1_session->Publish("sensors/s1/seq", std::to_string(n));

  // s2 writes under s1's topics: the broker drops it; its own arrive.
  Session s2_session(port, "s2", s2.username, s2.password);
  ASSERT_EQ(s2_session.Connack(), 0);
  s2_session.Publish("sensors/s1/seq", "forged-by-s2");
  s2_session.Publish("sensors/s2/seq", "s2-own");
  // s1's credentials with the agent's client id: the broker makes it s1's
  // session, not the agent's.
  Session thief(port, "gateway-agent", s1.username, s1.password);
  EXPECT_EQ(thief.Connack(), 0);
  for (int n = 10; n < 20; ++n) thief.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(thief.WaitAcked(10));
  std::set<std::string> want;
  for (int n = 0; n < 20; ++n) want.insert(Base64(std::to_string(n)));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto got = CloudPayloads((*h)->sim(), "gw-test:s1");
        return std::includes(got.begin(), got.end(), want.begin(), want.end()) &&
               CloudPayloads((*h)->sim(), "gw-test:s2").count(Base64("s2-own")) == 1;
      },
      30s))
      << Log(**h);
  EXPECT_EQ(CloudPayloads((*h)->sim(), "gw-test:s1").count(Base64("forged-by-s2")), 0u);

  // Rotation: the old password stops working, the new one works.
  Credentials rotated = CredentialsOf(**h, "s2", /*rotate=*/true);
  ASSERT_NE(rotated.password, s2.password);
  ASSERT_TRUE(
      WaitUntil([&] { return Session(port, "s2", "s2", s2.password).Connack() != 0; }, 30s));
  EXPECT_TRUE(
      WaitUntil([&] { return Session(port, "s2", "s2", rotated.password).Connack() == 0; }, 30s));
  EXPECT_TRUE(s2_session.dropped()) << "the session made with the old password goes on";

  // Removal: its credentials are refused.
  auto removed = (*h)->Cli({"sensor", "remove", "s2"});
  ASSERT_EQ(removed.exit_code, 0) << removed.output;
  EXPECT_TRUE(
      WaitUntil([&] { return Session(port, "s2", "s2", rotated.password).Connack() != 0; }, 30s));

  // The broker and then the agent restart: s1's client works, made once.
  ASSERT_TRUE((*h)->broker().Restart().ok());
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  EXPECT_TRUE(
      WaitUntil([&] { return Session(port, "s1", "s1", s1.password).Connack() == 0; }, 30s));
  EXPECT_EQ(ClientsNamed(**h, "s1"), 1);
  // The batches sent again after each connect found everything done.
  EXPECT_EQ(ReadText((*h)->dir() / "agent.log").find("the local broker refused"), std::string::npos)
      << Log(**h);
  EXPECT_EQ(ClientsNamed(**h, "s2"), 0);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
