// End to end: sensors publish on a real local mosquitto, `gateway-agent run`
// bridges to iot-sim over per-sensor TLS connections with TPM keys (swtpm),
// and commands come back.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "bridge_harness.h"

namespace ga::testing {
namespace {

TEST(Bridge, FiftySensorsPublishAndEachMessageArrivesOnItsOwnIdentity) {
  HarnessOptions o;
  o.sensors = 50;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 51, 180s)) << Log(**h);

  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_TRUE(sensors.connected());
  constexpr int kPerSensor = 4;
  for (int n = 0; n < kPerSensor; ++n) {
    for (int s = 1; s <= 50; ++s) {
      ASSERT_TRUE(sensors.Publish("sensors/s" + std::to_string(s) + "/temp",
                                  "s" + std::to_string(s) + "-" + std::to_string(n)));
    }
  }
  ASSERT_TRUE(sensors.WaitAcked(50 * kPerSensor, 30s));

  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 50 * kPerSensor, 120s, &got))
      << got.size() << " arrived\n"
      << Log(**h);
  std::map<std::string, std::vector<std::string>> by_thing;
  for (const auto& m : got) {
    // Each message travels on its own sensor's identity, under its own topic.
    EXPECT_EQ(m.topic, "dt/" + m.client_id + "/temp");
    by_thing[m.client_id].push_back(m.payload_b64);
  }
  ASSERT_EQ(by_thing.size(), 50u);
  for (int s = 1; s <= 50; ++s) {
    auto& list = by_thing["gw-test:s" + std::to_string(s)];
    ASSERT_EQ(list.size(), static_cast<size_t>(kPerSensor));
    for (int n = 0; n < kPerSensor; ++n) {
      EXPECT_EQ(list[n], Base64("s" + std::to_string(s) + "-" + std::to_string(n)));
    }
  }

  // A cloud command reaches the sensor's local topic.
  LocalClient device((*h)->broker().port(), "device-s7");
  ASSERT_TRUE(device.Subscribe("sensors/s7/cmd/#"));
  auto sent = (*h)->sim().Http("POST", "/_sim/publish",
                               R"({"topic":"cmd/gw-test:s7/led","payload":"on","qos":1})");
  ASSERT_EQ(sent.status, 200) << sent.body;
  ASSERT_TRUE(WaitForLocalMessage(device, 1, 20s)) << Log(**h);
  auto received = device.received();
  ASSERT_EQ(received.size(), 1u) << Log(**h);
  EXPECT_EQ(received[0].first, "sensors/s7/cmd/led");
  EXPECT_EQ(received[0].second, "on");

  auto status = (*h)->Cli({"status", "--json"});
  EXPECT_NE(status.output.find("\"connected\":true"), std::string::npos) << status.output;
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// Publishes `rounds` messages "<sensor>-<n>" for each of sensors s1..s<count>.
void PublishRounds(LocalClient& client, int count, int from, int to) {
  for (int n = from; n < to; ++n) {
    for (int s = 1; s <= count; ++s) {
      std::string id = "s" + std::to_string(s);
      ASSERT_TRUE(client.Publish("sensors/" + id + "/temp", id + "-" + std::to_string(n)));
    }
  }
}

// Which client id carried each sensor thing's messages, with the payloads in order.
std::map<std::string, std::pair<std::set<std::string>, std::vector<std::string>>> ByThing(
    const std::vector<CloudMessage>& got) {
  std::map<std::string, std::pair<std::set<std::string>, std::vector<std::string>>> out;
  for (const auto& m : got) {
    std::string thing = m.topic.substr(3, m.topic.rfind('/') - 3);  // dt/<thing>/temp
    out[thing].first.insert(m.client_id);
    out[thing].second.push_back(m.payload_b64);
  }
  return out;
}

TEST(Bridge, SensorsOverTheGatewaysConnectionKeepTheirOwnTopics) {
  HarnessOptions o;
  o.sensors = 4;
  o.over_gateway = {3, 4};
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 90s)) << Log(**h);
  ASSERT_TRUE((*h)->WaitForState("SHARED", 2, 10s)) << (*h)->StatusJson();

  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_TRUE(sensors.connected());
  PublishRounds(sensors, 4, 0, 5);
  ASSERT_TRUE(sensors.WaitAcked(20, 30s));
  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 20, 60s, &got)) << got.size() << "\n" << Log(**h);
  auto by_thing = ByThing(got);
  ASSERT_EQ(by_thing.size(), 4u);
  for (int s = 1; s <= 4; ++s) {
    std::string thing = "gw-test:s" + std::to_string(s);
    // s1 and s2 on their own identities; s3 and s4 on the gateway's, under their own topics.
    std::string carrier = s <= 2 ? thing : "gw-test";
    EXPECT_EQ(by_thing[thing].first, std::set<std::string>{carrier}) << thing;
    std::vector<std::string> want;
    for (int n = 0; n < 5; ++n)
      want.push_back(Base64("s" + std::to_string(s) + "-" + std::to_string(n)));
    EXPECT_EQ(by_thing[thing].second, want) << thing;
  }

  // Commands for a carried sensor come back over the gateway's connection.
  LocalClient device((*h)->broker().port(), "device-s4");
  ASSERT_TRUE(device.Subscribe("sensors/s4/cmd/#"));
  auto sent = (*h)->sim().Http("POST", "/_sim/publish",
                               R"({"topic":"cmd/gw-test:s4/led","payload":"on","qos":1})");
  ASSERT_EQ(sent.status, 200) << sent.body;
  ASSERT_TRUE(WaitForLocalMessage(device, 1, 20s)) << Log(**h);
  EXPECT_EQ(device.received()[0].first, "sensors/s4/cmd/led");

  auto status = (*h)->StatusJson();
  Json s3 = StatusOf(status, "s3");
  ASSERT_FALSE(s3.empty()) << status;
  EXPECT_EQ(Str(s3, "kind"), "sensor") << status;
  EXPECT_EQ(Str(s3, "thing"), "gw-test:s3") << status;
  EXPECT_EQ(Str(s3, "state"), "SHARED") << status;
  EXPECT_TRUE(s3.value("connected", false)) << status;

  // Reload: s2 moves onto the gateway's connection, s3 onto its own (it enrolls).
  (*h)->RewriteConfig([](std::string& text) {
    auto s2 = text.find("id = \"s2\"\n");
    text.insert(s2 + 10, "connection = \"gateway\"\n");
    auto s3 = text.find("id = \"s3\"\nconnection = \"gateway\"\n");
    text.erase(s3 + 10, 23);
  });
  ASSERT_TRUE((*h)->agent().Signal(SIGHUP, 0s) == std::nullopt);
  // The counts were 3 and 2 before the reload too: wait for its outcome.
  std::string json;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& j) {
        return Str(StatusOf(j, "s2"), "state") == "SHARED" &&
               Str(StatusOf(j, "s3"), "state") == "ACTIVE";
      },
      60s, &json))
      << json << "\n"
      << Log(**h);
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->WaitForState("SHARED", 2, 10s, &json)) << json;
  // A sensor added at run time over the gateway's connection.
  auto added = (*h)->Cli({"sensor", "add", "s5", "--connection", "gateway"});
  ASSERT_EQ(added.exit_code, 0) << added.output;
  EXPECT_NE(added.output.find("travels over the gateway's connection"), std::string::npos)
      << added.output;
  auto refused =
      (*h)->Cli({"sensor", "add", "s6", "--thing-name", "elsewhere", "--connection", "gateway"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("must start with \"gw-test:\""), std::string::npos)
      << refused.output;
  ASSERT_TRUE((*h)->WaitForState("SHARED", 3, 10s, &json)) << json;
  // Wait until s3 is connected on its own before publishing again.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!StatusOf((*h)->StatusJson(), "s3").value("connected", false) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  PublishRounds(sensors, 5, 5, 7);
  ASSERT_TRUE(sensors.WaitAcked(30, 30s));
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 30, 60s, &got)) << got.size() << "\n" << Log(**h);
  std::vector<CloudMessage> later(got.begin() + 20, got.end());
  by_thing = ByThing(later);
  EXPECT_EQ(by_thing["gw-test:s1"].first, std::set<std::string>{"gw-test:s1"});
  EXPECT_EQ(by_thing["gw-test:s2"].first, std::set<std::string>{"gw-test"});
  EXPECT_EQ(by_thing["gw-test:s3"].first, std::set<std::string>{"gw-test:s3"});
  EXPECT_EQ(by_thing["gw-test:s4"].first, std::set<std::string>{"gw-test"});
  EXPECT_EQ(by_thing["gw-test:s5"].first, std::set<std::string>{"gw-test"});
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// The inodes of the sockets process `pid` holds (/proc/PID/fd/* -> "socket:[N]").
std::set<std::string> SocketInodes(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  return inodes;
}

// How many sockets of process `pid` wait in SYN-SENT for 127.0.0.1:`port`
// (/proc/net/tcp: remote address 0100007F:<port hex>, state 02, the inode in
// the tenth column). Only the process's own: another test's client may be
// connecting to a port that the kernel has just handed to this test.
size_t SynSentFrom(pid_t pid, int port) {
  char remote[32];
  std::snprintf(remote, sizeof remote, "0100007F:%04X", port);
  const std::set<std::string> mine = SocketInodes(pid);
  std::istringstream table(RunCommand({"cat", "/proc/net/tcp"}).output);
  size_t n = 0;
  for (std::string line; std::getline(table, line);) {
    std::istringstream fields(line);
    std::string slot, local, rem, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> slot >> local >> rem >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode))
      continue;
    if (rem == remote && state == "02" && mine.count(inode) > 0) ++n;
  }
  return n;
}

// True once process `pid` has a socket in SYN-SENT for `port`.
bool WaitForSynSent(pid_t pid, int port, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (SynSentFrom(pid, port) > 0) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// A loopback listener that never accepts, its queue full: further connects
// get no SYN-ACK, like an endpoint behind a firewall that drops packets.
class UnansweringEndpoint {
 public:
  UnansweringEndpoint() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    listen(listener_, 0);
    socklen_t len = sizeof addr;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    for (int i = 0; i < 4; ++i) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      fillers_.push_back(fd);
    }
    std::this_thread::sleep_for(200ms);
  }
  ~UnansweringEndpoint() {
    for (int fd : fillers_) close(fd);
    close(listener_);
  }
  int port() const { return port_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

TEST(Bridge, StopDoesNotWaitForAConnectToAnEndpointThatDropsPackets) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  // Both identities are ACTIVE: the bridge connects them, to a dead endpoint.
  UnansweringEndpoint dead;
  std::string port_line = "port = " + std::to_string((*h)->sim().mqtt_port()) + "\n";
  (*h)->RewriteConfig([&](std::string& text) {
    text.replace(text.find(port_line), port_line.size(),
                 "port = " + std::to_string(dead.port()) + "\n");
  });
  ASSERT_TRUE((*h)->StartAgent().ok());
  // The cloud connects are under way: the agent's SYNs wait unanswered.
  ASSERT_TRUE(WaitForSynSent((*h)->agent().pid(), dead.port(), 60s)) << Log(**h);
  // A TCP connect left alone would take ~2 minutes to give up; stopping must
  // not wait for it (systemd's TimeoutStopSec is 45 s).
  auto status = (*h)->agent().Signal(SIGTERM, 20s);
  ASSERT_TRUE(status.has_value()) << "still running 20 s after SIGTERM\n" << Log(**h);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status << "\n" << Log(**h);
}

TEST(Bridge, LimitsUnknownSensorsAndQos2AreHandledWithoutTrippingAws) {
  HarnessOptions o;
  o.sensors = 1;
  o.local_unix_socket = true;  // [local] unix_socket
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_TRUE(sensors.Publish("sensors/s1/big", std::string(128 * 1024 + 1, 'x')));
  ASSERT_TRUE(sensors.Publish("sensors/s1/a/b/c/d/e/f/g", "too deep"));
  ASSERT_TRUE(sensors.Publish("sensors/nobody/temp", "unknown"));
  ASSERT_TRUE(sensors.Publish("sensors/s1", "no level after the id"));
  ASSERT_TRUE(sensors.Publish("sensors/s1/q2", "qos2", 2));
  ASSERT_TRUE(sensors.Publish("sensors/s1/ok", "fine"));
  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 2, 60s, &got)) << Log(**h);
  // Every message was classified (the counts commit with the messages).
  auto deadline = std::chrono::steady_clock::now() + 30s;
  std::string counted;
  auto rejected = [](const std::string& status) {
    Json s1 = StatusOf(status, "s1");
    return s1.value("rejected", -1);
  };
  while (rejected(counted = (*h)->Cli({"status", "--json"}).output) != 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(rejected(counted), 3) << counted;
  WaitForCloudCount((*h)->sim(), 2, 1s, &got);
  ASSERT_EQ(got.size(), 2u);
  // QoS 2 completes its handshake with the local broker later than the QoS 1
  // publish after it, so the two may arrive in either order; QoS 2 goes on as QoS 1.
  std::set<std::string> topics = {got[0].topic, got[1].topic};
  EXPECT_EQ(topics, (std::set<std::string>{"dt/gw-test:s1/q2", "dt/gw-test:s1/ok"}));
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  auto status = (*h)->Cli({"status", "--json"});
  EXPECT_EQ(rejected(status.output), 3) << status.output;
  // The unknown id is counted apart from every identity (flushed at the latest on stop).
  Json unknown = Json::parse(status.output, nullptr, false).value("unknownSensors", Json());
  EXPECT_EQ(unknown.value("dropped", -1), 1) << status.output;
  ASSERT_TRUE(unknown.contains("recent")) << status.output;
  ASSERT_EQ(unknown["recent"].size(), 1u) << status.output;
  EXPECT_EQ(unknown["recent"][0].value("id", ""), "nobody");
  auto log = Log(**h);
  EXPECT_NE(log.find("not sent: sensor s1, topic sensors/s1/big"), std::string::npos) << log;
  EXPECT_NE(log.find("not sent: sensor s1, topic sensors/s1: nothing follows the sensor id"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("unknown sensor \"nobody\""), std::string::npos) << log;
  ExpectNoViolations(**h);
}

// A retained message is bridged once: the agent's reconnects to the local
// broker (restarts here) bring its retained copy again, and it is not re-sent.
TEST(Bridge, ARetainedMessageIsBridgedOnceNotOnEveryReconnect) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_TRUE(sensors.Publish("sensors/s1/state", "on", 1, /*retain=*/true));
  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 1, 60s, &got)) << Log(**h);
  for (int restart = 0; restart < 2; ++restart) {
    ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
    ASSERT_TRUE((*h)->StartAgent().ok());
    ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  }
  // A live message after the restarts: once it is in, the retained copies
  // (delivered at subscription time, before it) would be too.
  ASSERT_TRUE(sensors.Publish("sensors/s1/live", "1"));
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 2, 60s, &got)) << Log(**h);
  int retained = 0;
  for (const auto& m : CloudPublishes((*h)->sim())) retained += m.topic == "dt/gw-test:s1/state";
  EXPECT_EQ(retained, 1) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

TEST(Bridge, ACloudOutageLosesNothingAndKeepsOrder) {
  HarnessOptions o;
  o.sensors = 3;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 4, 90s)) << Log(**h);
  LocalClient sensors((*h)->broker().port(), "sensors");
  auto publish_round = [&](int from, int to) {
    for (int n = from; n < to; ++n) {
      for (int s = 1; s <= 3; ++s) {
        sensors.Publish("sensors/s" + std::to_string(s) + "/seq", std::to_string(n));
      }
    }
  };
  publish_round(0, 20);
  (*h)->sim().process().Stop();  // the cloud goes away
  publish_round(20, 120);
  ASSERT_TRUE(sensors.WaitAcked(360, 30s));
  std::this_thread::sleep_for(30s);  // the outage
  ASSERT_TRUE((*h)->sim().Restart().ok());
  // The sim kept its registry but not its publish log: what arrives now is
  // everything not acknowledged before the outage, in order per sensor.
  std::map<std::string, int> number_of;
  for (int n = 0; n < 120; ++n) number_of[Base64(std::to_string(n))] = n;
  std::map<std::string, std::vector<int>> firsts;  // per thing, first arrivals in order
  std::map<std::string, std::set<int>> seen;
  auto complete = [&] {
    for (int s = 1; s <= 3; ++s) {
      auto& got = seen["gw-test:s" + std::to_string(s)];
      for (int n = 20; n < 120; ++n) {
        if (!got.count(n)) return false;
      }
    }
    return true;
  };
  auto deadline = std::chrono::steady_clock::now() + 120s;
  do {
    std::this_thread::sleep_for(500ms);
    firsts.clear();
    seen.clear();
    for (const auto& m : CloudPublishes((*h)->sim())) {
      if (m.topic.rfind("dt/", 0) != 0) continue;
      int n = number_of.at(m.payload_b64);
      if (seen[m.client_id].insert(n).second) firsts[m.client_id].push_back(n);
    }
  } while (!complete() && std::chrono::steady_clock::now() < deadline);
  if (!complete()) ADD_FAILURE() << Log(**h);
  for (int s = 1; s <= 3; ++s) {
    std::string thing = "gw-test:s" + std::to_string(s);
    for (int n = 20; n < 120; ++n) {
      EXPECT_TRUE(seen[thing].count(n)) << thing << " lost message " << n;
    }
    EXPECT_TRUE(std::is_sorted(firsts[thing].begin(), firsts[thing].end())) << thing;
  }
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// Messages acknowledged to the local broker survive the agent being killed:
// every one reaches the cloud at least once.
TEST(Bridge, SigkillTenTimesDuringTenThousandMessagesLosesNothing) {
  HarnessOptions o;
  o.sensors = 10;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 11, 120s)) << Log(**h);

  constexpr int kPerSensor = 1000;
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    LocalClient sensors((*h)->broker().port(), "stream");
    for (int n = 0; n < kPerSensor; ++n) {
      for (int s = 1; s <= 10; ++s) {
        sensors.Publish("sensors/s" + std::to_string(s) + "/seq", std::to_string(n));
      }
      if (n % 50 == 49) std::this_thread::sleep_for(100ms);
    }
    sensors.WaitAcked(10 * kPerSensor, 60s);
    done = true;
  });
  for (int kill = 0; kill < 10; ++kill) {
    std::this_thread::sleep_for(1500ms);
    auto status = (*h)->agent().Signal(SIGKILL, 10s);
    ASSERT_TRUE(status.has_value());
    ASSERT_TRUE((*h)->StartAgent().ok());
  }
  publisher.join();
  ASSERT_TRUE(done);

  std::map<std::string, int> number_of;
  for (int n = 0; n < kPerSensor; ++n) number_of[Base64(std::to_string(n))] = n;
  std::map<std::string, std::set<int>> seen;
  size_t total = 0;
  auto complete = [&] {
    for (int s = 1; s <= 10; ++s) {
      if (seen["gw-test:s" + std::to_string(s)].size() != kPerSensor) return false;
    }
    return true;
  };
  auto deadline = std::chrono::steady_clock::now() + 180s;
  do {
    std::this_thread::sleep_for(1s);
    seen.clear();
    total = 0;
    for (const auto& m : CloudPublishes((*h)->sim())) {
      if (m.topic.rfind("dt/", 0) != 0) continue;
      ++total;
      seen[m.client_id].insert(number_of.at(m.payload_b64));
    }
  } while (!complete() && std::chrono::steady_clock::now() < deadline);
  for (int s = 1; s <= 10; ++s) {
    EXPECT_EQ(seen["gw-test:s" + std::to_string(s)].size(), static_cast<size_t>(kPerSensor))
        << "sensor s" << s << "\n"
        << Log(**h);
  }
  std::printf("[ figures  ] 10 SIGKILLs, %d messages: %zu arrivals, %zu duplicates\n",
              10 * kPerSensor, total, total - 10 * static_cast<size_t>(kPerSensor));
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

TEST(Bridge, ALocalBrokerRestartLosesNothing) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 90s)) << Log(**h);
  {
    LocalClient sensors((*h)->broker().port(), "before");
    for (int n = 0; n < 50; ++n) sensors.Publish("sensors/s1/seq", std::to_string(n));
    ASSERT_TRUE(sensors.WaitAcked(50, 20s));
  }
  ASSERT_TRUE((*h)->broker().Restart().ok());
  {
    LocalClient sensors((*h)->broker().port(), "after");
    ASSERT_TRUE(sensors.connected());
    for (int n = 50; n < 100; ++n) sensors.Publish("sensors/s1/seq", std::to_string(n));
    ASSERT_TRUE(sensors.WaitAcked(50, 20s));
  }
  std::map<std::string, int> number_of;
  for (int n = 0; n < 100; ++n) number_of[Base64(std::to_string(n))] = n;
  std::set<int> seen;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (seen.size() < 100 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(300ms);
    for (const auto& m : CloudPublishes((*h)->sim())) {
      if (m.topic == "dt/gw-test:s1/seq") seen.insert(number_of.at(m.payload_b64));
    }
  }
  EXPECT_EQ(seen.size(), 100u) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// Commands queued in the cloud for an offline identity (persistent session)
// arrive back to back on its reconnect: OpenSSL reads many of their records
// at once (read-ahead), and every one must reach the sensor without waiting
// for more traffic on that connection.
TEST(Bridge, CommandsQueuedWhileOfflineAllArriveOnReconnect) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  ASSERT_TRUE(WaitForSimSubscription((*h)->sim(), "gw-test:s1", "cmd/gw-test:s1/#", 30s))
      << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  constexpr int kCommands = 300;
  for (int n = 0; n < kCommands; ++n) {
    auto sent = (*h)->sim().Http(
        "POST", "/_sim/publish",
        R"({"topic":"cmd/gw-test:s1/n","payload":")" + std::to_string(n) + R"(","qos":1})");
    ASSERT_EQ(sent.status, 200) << sent.body;
  }
  LocalClient device((*h)->broker().port(), "device-s1");
  ASSERT_TRUE(device.Subscribe("sensors/s1/cmd/#"));
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE(WaitForLocalMessage(device, kCommands, 30s))
      << device.received().size() << " of " << kCommands << " commands arrived\n"
      << Log(**h);
  auto got = device.received();
  for (int n = 0; n < kCommands; ++n) {
    EXPECT_EQ(got[static_cast<size_t>(n)].second, std::to_string(n));
  }
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
}

// A slow TPM (real chips take 40-200 ms per signature) must not hold up the
// traffic of connections that are up while another one does its handshake.
TEST(Bridge, ASlowTpmHandshakeDoesNotStallOtherConnections) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent({{"GATEWAY_AGENT_TEST_SIGN_DELAY_MS", "1500"}}).ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 120s)) << Log(**h);
  // Wait until both sensors' cloud connections are up.
  ASSERT_TRUE(WaitForSimClients((*h)->sim(), {"gw-test:s1", "gw-test:s2"}, 60s)) << Log(**h);

  // s2 is thrown off; while it reconnects (a 1.5 s signature), s1 streams.
  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_EQ((*h)->sim().Http("DELETE", "/_sim/clients/gw-test:s2").status, 200);
  auto start = std::chrono::steady_clock::now();
  for (int n = 0; n < 60; ++n) {
    sensors.Publish("sensors/s1/tick", std::to_string(n));
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(sensors.WaitAcked(60, 20s));
  // Arrival times of s1's messages at the cloud: no gap as long as a handshake.
  std::vector<int64_t> times;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (times.size() < 60 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
    times.clear();
    for (const Json& p : SimPublishes((*h)->sim(), "topic=dt/gw-test:s1/tick&limit=1000")) {
      times.push_back(p.value("time", int64_t{0}));
    }
  }
  ASSERT_EQ(times.size(), 60u) << Log(**h);
  int64_t max_gap = 0;
  for (size_t i = 1; i < times.size(); ++i) max_gap = std::max(max_gap, times[i] - times[i - 1]);
  std::printf(
      "[ figures  ] s1 streamed 60 messages over %lld ms while s2 reconnected with a "
      "1500 ms TPM signature; largest gap between arrivals %lld ms\n",
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count()),
      static_cast<long long>(max_gap));
  EXPECT_LT(max_gap, 1000);
  // And s2 came back.
  EXPECT_TRUE(WaitForSimClients((*h)->sim(), {"gw-test:s2"}, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 30s).has_value());
}

// AWS IoT's port 443 speaks MQTT only to a client that offers the ALPN
// protocol x-amzn-mqtt-ca (iot-sim --port-443 models it): without aws.alpn
// nothing gets through; with it (forced on by aws.port = 443) the gateway and
// its sensor enroll and bridge.
TEST(Bridge, Port443NeedsAlpnAndEnrollsAndBridgesWithIt) {
  HarnessOptions o;
  o.sensors = 1;
  o.sim_args = {"--port-443"};
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  auto refused = [&] {
    return (*h)->sim().Http("GET", "/_sim/refusals").body.find("without ALPN x-amzn-mqtt-ca") !=
           std::string::npos;
  };
  ASSERT_TRUE(WaitUntil(refused, 30s)) << Log(**h);
  EXPECT_EQ(JsonCount((*h)->StatusJson(), "state", "ACTIVE"), 0);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  (*h)->RewriteConfig(
      [](std::string& text) { text.replace(text.find("[aws]\n"), 6, "[aws]\nalpn = true\n"); });
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  LocalClient sensor((*h)->broker().port(), "alpn");
  ASSERT_TRUE(sensor.Publish("sensors/s1/t", "over 443"));
  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 1, 30s, &got)) << Log(**h);
  EXPECT_EQ(got[0].topic, "dt/gw-test:s1/t");
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
