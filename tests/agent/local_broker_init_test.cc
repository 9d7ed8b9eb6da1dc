// `gateway-agent local-broker init`, run as a user would, with a real
// mosquitto started from the configuration it writes.
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fixtures.h"

namespace ga::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr auto kWait = 10s;  // a bound on waiting for the broker, not a timing assertion

// An MQTT client with credentials on its own libmosquitto thread, which
// records what the broker answers.
class BrokerClient {
 public:
  BrokerClient(int port, const std::string& client_id, const std::string& user,
               const std::string& password, bool clean_session = true)
      : port_(port) {
    mosquitto_lib_init();
    m_.reset(mosquitto_new(client_id.c_str(), clean_session, this));
    if (!user.empty()) mosquitto_username_pw_set(m_.get(), user.c_str(), password.c_str());
    mosquitto_connect_callback_set(m_.get(), [](mosquitto*, void* self, int rc) {
      static_cast<BrokerClient*>(self)->Update([&](BrokerClient& c) {
        if (!c.connack_) c.connack_ = rc;
      });
    });
    mosquitto_disconnect_callback_set(m_.get(), [](mosquitto*, void* self, int) {
      static_cast<BrokerClient*>(self)->Update([](BrokerClient& c) { ++c.disconnects_; });
    });
    mosquitto_subscribe_callback_set(
        m_.get(), [](mosquitto*, void* self, int, int count, const int* granted) {
          static_cast<BrokerClient*>(self)->Update(
              [&](BrokerClient& c) { c.granted_.push_back(count > 0 ? granted[0] : -1); });
        });
    mosquitto_publish_callback_set(m_.get(), [](mosquitto*, void* self, int) {
      static_cast<BrokerClient*>(self)->Update([](BrokerClient& c) { ++c.acked_; });
    });
    mosquitto_message_callback_set(
        m_.get(), [](mosquitto*, void* self, const mosquitto_message* msg) {
          static_cast<BrokerClient*>(self)->Update([&](BrokerClient& c) {
            c.received_.emplace_back(msg->topic, std::string(static_cast<const char*>(msg->payload),
                                                             static_cast<size_t>(msg->payloadlen)));
          });
        });
  }
  ~BrokerClient() {
    mosquitto_disconnect(m_.get());
    mosquitto_loop_stop(m_.get(), true);
  }

  // Connects and waits for the CONNACK: its return code (0: accepted), or -1
  // when none came.
  int Connect() {
    if (mosquitto_connect_async(m_.get(), "127.0.0.1", port_, 30) != MOSQ_ERR_SUCCESS) return -1;
    mosquitto_loop_start(m_.get());
    std::optional<int> rc;
    WaitFor([&] {
      rc = connack_;
      return connack_.has_value();
    });
    return rc.value_or(-1);
  }
  // Subscribes and waits for the SUBACK: the granted QoS (0x80: refused).
  int Subscribe(const std::string& filter) {
    size_t before = Locked([&] { return granted_.size(); });
    if (mosquitto_subscribe(m_.get(), nullptr, filter.c_str(), 1) != MOSQ_ERR_SUCCESS) return -1;
    int granted = -1;
    WaitFor([&] {
      if (granted_.size() <= before) return false;
      granted = granted_[before];
      return true;
    });
    return granted;
  }
  // Publishes at QoS 1 and waits for the broker's PUBACK (which it also
  // sends for a message its ACLs drop).
  bool Publish(const std::string& topic, const std::string& payload) {
    int before = Locked([&] { return acked_; });
    if (mosquitto_publish(m_.get(), nullptr, topic.c_str(), static_cast<int>(payload.size()),
                          payload.data(), 1, false) != MOSQ_ERR_SUCCESS) {
      return false;
    }
    return WaitFor([&] { return acked_ > before; });
  }
  // The first message received on `topic`.
  std::optional<std::string> WaitMessage(const std::string& topic) {
    std::optional<std::string> payload;
    WaitFor([&] {
      for (const auto& [t, p] : received_) {
        if (t == topic) payload = p;
      }
      return payload.has_value();
    });
    return payload;
  }
  std::vector<std::pair<std::string, std::string>> received() {
    return Locked([&] { return received_; });
  }
  int disconnects() {
    return Locked([&] { return disconnects_; });
  }

 private:
  struct Deleter {
    void operator()(mosquitto* m) const { mosquitto_destroy(m); }
  };
  void Update(const std::function<void(BrokerClient&)>& change) {
    {
      std::lock_guard lock(mu_);
      change(*this);
    }
    cv_.notify_all();
  }
  template <typename F>
  std::invoke_result_t<F> Locked(F f) {
    std::lock_guard lock(mu_);
    return f();
  }
  bool WaitFor(const std::function<bool()>& done) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, done);
  }

  int port_;
  std::unique_ptr<mosquitto, Deleter> m_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<int> connack_;
  int disconnects_ = 0;
  int acked_ = 0;
  std::vector<int> granted_;
  std::vector<std::pair<std::string, std::string>> received_;
};

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  if (stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class LocalBrokerInit : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_ / "broker";  // missing: init creates it
    port_ = FreePort();
    init_ = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir_.string(), "--port",
                        std::to_string(port_)});
    ASSERT_EQ(init_.exit_code, 0) << init_.output;
    agent_password_ = Trimmed(ReadText(dir_ / "agent.password"));
    admin_password_ = Trimmed(ReadText(dir_ / "admin.password"));
    ASSERT_EQ(agent_password_.size(), 64u);
    ASSERT_EQ(admin_password_.size(), 64u);
    ASSERT_NO_FATAL_FAILURE(StartBroker());
  }

  // mosquitto from the written configuration; as root it must not drop to
  // the `mosquitto` user, who cannot read this 0700 directory.
  void StartBroker() {
    std::string conf = ReadText(dir_ / "mosquitto.conf");
    if (geteuid() == 0 && conf.find("\nuser root\n") == std::string::npos) {
      WriteText(dir_ / "mosquitto.conf", conf + "user root\n");
    }
    ProcessOptions po;
    po.stdout_file = tmp_ / "mosquitto.out";
    po.stderr_file = tmp_ / "mosquitto.out";
    auto p = Process::Start({"mosquitto", "-c", (dir_ / "mosquitto.conf").string()}, po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    broker_ = std::move(*p);
    ASSERT_TRUE(WaitForPort(port_, kWait).ok()) << ReadText(tmp_ / "mosquitto.out");
  }

  std::unique_ptr<BrokerClient> Agent() {
    auto c = std::make_unique<BrokerClient>(port_, "gateway-agent", "gateway-agent",
                                            agent_password_, /*clean_session=*/false);
    EXPECT_EQ(c->Connect(), 0) << ReadText(tmp_ / "mosquitto.out");
    return c;
  }

  // Sends dynamic security commands as `client` and returns the response.
  Json Control(BrokerClient& client, Json commands) {
    EXPECT_LT(client.Subscribe("$CONTROL/dynamic-security/v1/response"), 3);
    Json request{{"commands", std::move(commands)}};
    EXPECT_TRUE(client.Publish("$CONTROL/dynamic-security/v1", request.dump()));
    auto reply = client.WaitMessage("$CONTROL/dynamic-security/v1/response");
    if (!reply) return Json();
    return Json::parse(*reply);
  }

  // Creates the client of sensor `id`, confined as the agent will confine it.
  void CreateSensor(BrokerClient& agent, const std::string& id, const std::string& password) {
    const std::string role = "sensor-" + id;
    Json reply = Control(agent, Json::array({
                                    {{"command", "createRole"}, {"rolename", role}},
                                    {{"command", "addRoleACL"},
                                     {"rolename", role},
                                     {"acltype", "publishClientSend"},
                                     {"topic", "sensors/" + id + "/#"},
                                     {"allow", true}},
                                    {{"command", "addRoleACL"},
                                     {"rolename", role},
                                     {"acltype", "subscribePattern"},
                                     {"topic", "sensors/" + id + "/cmd/#"},
                                     {"allow", true}},
                                    {{"command", "createClient"},
                                     {"username", id},
                                     {"password", password},
                                     {"roles", Json::array({{{"rolename", role}}})}},
                                }));
    ASSERT_TRUE(reply.contains("responses")) << reply.dump();
    ASSERT_EQ(reply["responses"].size(), 4u) << reply.dump();
    for (const Json& r : reply["responses"]) EXPECT_FALSE(r.contains("error")) << reply.dump();
  }

  TempDir tmp_;
  fs::path dir_;
  int port_ = 0;
  CommandResult init_;
  std::string agent_password_;
  std::string admin_password_;
  Process broker_;
};

TEST_F(LocalBrokerInit, WritesPrivateFilesAndPrintsTheLocalSectionWithoutPasswords) {
  EXPECT_EQ(ModeOf(dir_), 0700u);
  for (const char* f :
       {"mosquitto.conf", "dynamic-security.json", "admin.password", "agent.password"}) {
    EXPECT_EQ(ModeOf(dir_ / f), 0600u) << f;
  }
  const std::string& out = init_.output;
  EXPECT_NE(out.find("[local]\nhost = \"127.0.0.1\"\nport = " + std::to_string(port_) +
                     "\nusername = \"gateway-agent\"\npassword_file = \"" +
                     (dir_ / "agent.password").string() + "\"\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("client_id = \"gateway-agent\""), std::string::npos) << out;
  EXPECT_NE(out.find("\nmanage_clients = true\n"), std::string::npos) << out;
  EXPECT_NE(out.find("mosquitto -c " + (dir_ / "mosquitto.conf").string()), std::string::npos)
      << out;
  EXPECT_NE(out.find((dir_ / "admin.password").string()), std::string::npos) << out;
  EXPECT_EQ(out.find(agent_password_), std::string::npos);
  EXPECT_EQ(out.find(admin_password_), std::string::npos);

  const std::string conf = ReadText(dir_ / "mosquitto.conf");
  for (const std::string line :
       {"per_listener_settings false", "allow_anonymous false", "use_username_as_clientid true",
        "persistence true", "max_queued_messages 100000", "max_queued_bytes 268435456"}) {
    EXPECT_NE(conf.find("\n" + line + "\n"), std::string::npos) << line << "\n" << conf;
  }
}

// The plugin's state has the shape `mosquitto_ctrl dynsec init` gives it:
// the same admin role and default access, the same fields per client.
TEST_F(LocalBrokerInit, WritesThePluginStateAsMosquittoCtrlDoes) {
  auto reference_file = tmp_ / "reference.json";
  auto ctrl = RunCommand(
      {"mosquitto_ctrl", "dynsec", "init", reference_file.string(), "admin", "some-password"});
  ASSERT_EQ(ctrl.exit_code, 0) << ctrl.output;
  Json reference = Json::parse(ReadText(reference_file));
  Json state = Json::parse(ReadText(dir_ / "dynamic-security.json"));
  EXPECT_EQ(state["defaultACLAccess"], reference["defaultACLAccess"]);
  ASSERT_EQ(state["roles"].size(), 2u);
  EXPECT_EQ(state["roles"][0], reference["roles"][0]);
  ASSERT_EQ(state["clients"].size(), 2u);
  for (const Json& client : state["clients"]) {
    ASSERT_EQ(client.size(), reference["clients"][0].size()) << client.dump();
    for (const auto& [key, value] : reference["clients"][0].items()) {
      EXPECT_TRUE(client.contains(key)) << key;
    }
  }
  EXPECT_EQ(state["clients"][1]["username"], "gateway-agent");
  EXPECT_EQ(state["clients"][1]["roles"], Json::parse(R"([{"rolename":"gateway-agent"}])"));
}

TEST_F(LocalBrokerInit, RefusesAnonymousClientsAndWrongPasswords) {
  BrokerClient anonymous(port_, "anyone", "", "");
  EXPECT_NE(anonymous.Connect(), 0);
  BrokerClient wrong(port_, "gateway-agent", "gateway-agent", "not-the-password");
  EXPECT_NE(wrong.Connect(), 0);
}

TEST_F(LocalBrokerInit, TheAgentConfinesSensorsItCreatesThroughControl) {
  auto agent = Agent();
  EXPECT_LT(agent->Subscribe("sensors/+/#"), 3);
  ASSERT_NO_FATAL_FAILURE(CreateSensor(*agent, "t1", "t1-password"));

  BrokerClient sensor(port_, "t1", "t1", "t1-password");
  ASSERT_EQ(sensor.Connect(), 0);
  EXPECT_LT(sensor.Subscribe("sensors/t1/cmd/#"), 3);
  // Another sensor's topic first: had it got through, it would arrive first.
  ASSERT_TRUE(sensor.Publish("sensors/t2/x", "as t2"));
  ASSERT_TRUE(sensor.Publish("sensors/t1/x", "as t1"));
  EXPECT_EQ(agent->WaitMessage("sensors/t1/x"), "as t1");
  for (const auto& [topic, payload] : agent->received()) EXPECT_NE(topic, "sensors/t2/x");

  // The agent delivers a command to the sensor.
  ASSERT_TRUE(agent->Publish("sensors/t1/cmd/reboot", "now"));
  EXPECT_EQ(sensor.WaitMessage("sensors/t1/cmd/reboot"), "now");
}

// A client with a sensor's credentials that asks for the agent's client id
// gets its user name as client id: the agent's session is not taken over.
TEST_F(LocalBrokerInit, NoClientTakesOverTheAgentsSession) {
  auto agent = Agent();
  EXPECT_LT(agent->Subscribe("sensors/+/#"), 3);
  ASSERT_NO_FATAL_FAILURE(CreateSensor(*agent, "t1", "t1-password"));

  BrokerClient impostor(port_, "gateway-agent", "t1", "t1-password", /*clean_session=*/false);
  ASSERT_EQ(impostor.Connect(), 0);
  ASSERT_TRUE(impostor.Publish("sensors/t1/after", "1"));
  EXPECT_EQ(agent->WaitMessage("sensors/t1/after"), "1");
  EXPECT_EQ(agent->disconnects(), 0);
  EXPECT_EQ(impostor.received().size(), 0u);
}

TEST_F(LocalBrokerInit, RefusesToReplaceASetupWithoutForce) {
  auto again = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir_.string()});
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_NE(again.output.find((dir_ / "mosquitto.conf").string() + " exists"), std::string::npos)
      << again.output;
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
  EXPECT_EQ(Trimmed(ReadText(dir_ / "agent.password")), agent_password_);

  auto forced =
      RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir_.string(), "--force"});
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_NE(Trimmed(ReadText(dir_ / "agent.password")), agent_password_);
  EXPECT_EQ(ModeOf(dir_ / "agent.password"), 0600u);
}

TEST_F(LocalBrokerInit, ClientsSurviveABrokerRestart) {
  {
    auto agent = Agent();
    ASSERT_NO_FATAL_FAILURE(CreateSensor(*agent, "t1", "t1-password"));
  }
  ASSERT_TRUE(broker_.Signal(SIGTERM, kWait).has_value());
  ASSERT_NO_FATAL_FAILURE(StartBroker());

  auto agent = Agent();
  EXPECT_LT(agent->Subscribe("sensors/+/#"), 3);
  BrokerClient sensor(port_, "t1", "t1", "t1-password");
  ASSERT_EQ(sensor.Connect(), 0);
  ASSERT_TRUE(sensor.Publish("sensors/t1/x", "after restart"));
  EXPECT_EQ(agent->WaitMessage("sensors/t1/x"), "after restart");
}

// --tls: a local-only CA of its own, the broker's server certificate from it,
// and a listener that requires a client certificate from that CA only.
TEST(LocalBrokerInitTls, WritesALocalOnlyCaAndAListenerRequiringItsCertificates) {
  TempDir tmp;
  const fs::path dir = tmp / "b";
  const int port = FreePort(2);
  const std::string tls_port = std::to_string(port + 1);
  std::vector<std::string> init = {
      GA_AGENT_BINARY,      "local-broker", "init",       "--dir",  dir.string(), "--port",
      std::to_string(port), "--tls",        "--tls-port", tls_port, "--tls-host", "gw.example"};
  auto r = RunCommand(init);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("sensor_ca_dir = \"" + (dir / "sensor-ca").string() + "\""),
            std::string::npos)
      << r.output;
  EXPECT_EQ(ModeOf(dir / "sensor-ca"), 0700u);
  EXPECT_EQ(ModeOf(dir / "sensor-ca" / "ca.key"), 0600u);
  EXPECT_EQ(ModeOf(dir / "broker-tls.key"), 0600u);
  const std::string conf = ReadText(dir / "mosquitto.conf");
  for (const std::string& line : std::vector<std::string>{
           "listener " + tls_port + " 127.0.0.1", "cafile " + (dir / "sensor-ca/ca.pem").string(),
           "certfile " + (dir / "broker-tls.pem").string(), "require_certificate true",
           "use_identity_as_username true"}) {
    EXPECT_NE(conf.find("\n" + line + "\n"), std::string::npos) << line << "\n" << conf;
  }
  // The client id rule holds on the TLS listener too.
  EXPECT_NE(conf.find("use_username_as_clientid true", conf.find("listener " + tls_port)),
            std::string::npos)
      << conf;

  auto ca = RunCommand(
      {"openssl", "x509", "-in", (dir / "sensor-ca/ca.pem").string(), "-noout", "-subject"});
  EXPECT_NE(ca.output.find("gateway-agent local sensor CA gw.example"), std::string::npos)
      << ca.output;
  auto server = RunCommand({"openssl", "x509", "-in", (dir / "broker-tls.pem").string(), "-noout",
                            "-subject", "-ext", "subjectAltName,extendedKeyUsage"});
  for (const char* want : {"CN = gw.example", "DNS:gw.example", "IP Address:127.0.0.1",
                           "DNS:localhost", "TLS Web Server Authentication"}) {
    EXPECT_NE(server.output.find(want), std::string::npos) << want << "\n" << server.output;
  }
  auto verified = RunCommand({"openssl", "verify", "-CAfile", (dir / "sensor-ca/ca.pem").string(),
                              (dir / "broker-tls.pem").string()});
  EXPECT_EQ(verified.exit_code, 0) << verified.output;

  // Again: refused; with --force the CA is kept (the sensors' certificates
  // stay valid) and the broker's certificate is new.
  const std::string ca_pem = ReadText(dir / "sensor-ca/ca.pem");
  const std::string server_pem = ReadText(dir / "broker-tls.pem");
  r = RunCommand(init);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  init.push_back("--force");
  r = RunCommand(init);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadText(dir / "sensor-ca/ca.pem"), ca_pem);
  EXPECT_NE(ReadText(dir / "broker-tls.pem"), server_pem);

  r = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", (tmp / "c").string(), "--port",
                  "1883", "--tls", "--tls-port", "1883"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--tls-port 1883"), std::string::npos) << r.output;
}

// The snippet for a system mosquitto (Debian: include_dir /etc/mosquitto/conf.d),
// in a throwaway root: written only where nothing clashes, loaded by a real
// mosquitto from the system's main file, the same text `local-broker conf`
// prints (what the .deb ships as its example).
TEST(LocalBrokerConfD, WritesASnippetTheSystemBrokerLoadsAndRefusesAClash) {
  TempDir tmp;
  const fs::path etc = tmp / "etc-mosquitto", conf_d = etc / "conf.d", dir = tmp / "gateway";
  fs::create_directories(conf_d);
  std::string main_conf = "persistence true\npersistence_location " + (tmp / "").string() +
                          "\ninclude_dir " + conf_d.string() + "\n";
  if (geteuid() == 0) main_conf += "user root\n";  // it could not read the 0700 dir
  WriteText(etc / "mosquitto.conf", main_conf);
  const int port = FreePort();
  const std::string port_text = std::to_string(port);

  // Another file listening on the same port: refused, naming it; nothing written.
  WriteText(conf_d / "site.conf", "listener " + port_text + "\n");
  auto clash = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir.string(),
                           "--conf-d", conf_d.string(), "--port", port_text});
  EXPECT_EQ(clash.exit_code, 1) << clash.output;
  EXPECT_NE(clash.output.find((conf_d / "site.conf").string() + ":1"), std::string::npos)
      << clash.output;
  EXPECT_FALSE(fs::exists(conf_d / "gateway-agent.conf"));
  EXPECT_FALSE(fs::exists(dir / "agent.password"));
  fs::remove(conf_d / "site.conf");

  auto init = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir.string(),
                          "--conf-d", conf_d.string(), "--port", port_text});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  EXPECT_NE(init.output.find("systemctl restart mosquitto"), std::string::npos) << init.output;
  const std::string snippet = ReadText(conf_d / "gateway-agent.conf");
  EXPECT_EQ(ModeOf(conf_d / "gateway-agent.conf"), 0644u);
  EXPECT_FALSE(fs::exists(dir / "mosquitto.conf"));
  EXPECT_EQ(snippet.find("\npersistence"), std::string::npos) << snippet;  // the main file's
  auto shown = RunCommand({GA_AGENT_BINARY, "local-broker", "conf", "--dir", dir.string(),
                           "--conf-d", conf_d.string(), "--port", port_text});
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_EQ(shown.output, snippet);

  ProcessOptions po;
  po.stdout_file = tmp / "mosquitto.out";
  po.stderr_file = tmp / "mosquitto.out";
  auto broker = Process::Start({"mosquitto", "-c", (etc / "mosquitto.conf").string()}, po);
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();
  ASSERT_TRUE(WaitForPort(port, kWait).ok()) << ReadText(tmp / "mosquitto.out");
  BrokerClient anonymous(port, "anyone", "", "");
  EXPECT_NE(anonymous.Connect(), 0);
  BrokerClient agent(port, "gateway-agent", "gateway-agent",
                     Trimmed(ReadText(dir / "agent.password")));
  EXPECT_EQ(agent.Connect(), 0) << ReadText(tmp / "mosquitto.out");

  // A second run refuses: the snippet exists.
  auto again = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", dir.string(),
                           "--conf-d", conf_d.string(), "--port", port_text});
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_NE(again.output.find("exists"), std::string::npos) << again.output;
}

TEST(LocalBrokerInitOptions, RejectsAnAgentUserThatCannotBeAClientId) {
  TempDir tmp;
  auto r = RunCommand({GA_AGENT_BINARY, "local-broker", "init", "--dir", (tmp / "b").string(),
                       "--agent-user", "sensors/#"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--agent-user"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "b" / "mosquitto.conf"));
}

}  // namespace
}  // namespace ga::testing
