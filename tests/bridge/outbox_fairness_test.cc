// The outbox's fair share, end to end: with the cloud away, one sensor
// flooding its topics past bridge.outbox_max_bytes loses its own oldest
// messages, counted in `status`, and none of another sensor's. Both sensors
// travel over the gateway's connection (shared mode): the share is per
// sensor, not per cloud connection.
#include <signal.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "bridge_harness.h"

namespace ga::testing {
namespace {

constexpr int kFlood = 200;  // s1's messages, 8 KiB each: 1.6 MiB in all
constexpr size_t kFloodBytes = 8192;
constexpr int kSteady = 50;  // s2's messages, a few bytes each

std::string FloodPayload(int n) {
  std::string p = "s1-" + std::to_string(n) + "-";
  p.resize(kFloodBytes, 'x');
  return p;
}

TEST(OutboxFairness, AFloodingSensorLosesOnlyItsOwnOldestMessages) {
  HarnessOptions o;
  o.sensors = 2;
  o.over_gateway = {1, 2};
  o.extra_config = "[bridge]\noutbox_max_bytes = \"1MiB\"\n";  // the least allowed
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 1, 90s)) << Log(**h);
  ASSERT_TRUE((*h)->WaitForState("SHARED", 2, 10s)) << (*h)->StatusJson();
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) { return StatusOf(json, "s2").value("connected", false); }, 30s))
      << Log(**h);

  (*h)->sim().process().Stop();  // the cloud goes away
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) { return !StatusOf(json, "s2").value("connected", true); }, 30s))
      << Log(**h);
  LocalClient sensors((*h)->broker().port(), "sensors");
  ASSERT_TRUE(sensors.connected());
  auto steady = [&](int from, int to) {
    for (int n = from; n < to; ++n)
      ASSERT_TRUE(sensors.Publish("sensors/s2/seq", std::to_string(n)));
  };
  auto flood = [&](int from, int to) {
    for (int n = from; n < to; ++n)
      ASSERT_TRUE(sensors.Publish("sensors/s1/flood", FloodPayload(n)));
  };
  steady(0, 20);
  flood(0, kFlood / 2);
  steady(20, 40);
  flood(kFlood / 2, kFlood);
  steady(40, kSteady);
  // Acknowledged by the agent: committed to the outbox, the bound applied.
  ASSERT_TRUE(sensors.WaitAcked(kFlood + kSteady, 60s)) << Log(**h);

  // The counters reach status with the bridge's next report.
  std::string json;
  EXPECT_TRUE((*h)->WaitForStatus(
      [&](const std::string& j) {
        json = j;
        Json s1 = StatusOf(j, "s1"), s2 = StatusOf(j, "s2");
        return s1.is_object() && s1.value("dropped", int64_t{0}) > 0 && s2.is_object() &&
               s2.contains("outbox") && s2["outbox"].value("messages", int64_t{0}) == kSteady;
      },
      30s))
      << json;
  Json s1 = StatusOf(json, "s1"), s2 = StatusOf(json, "s2");
  int64_t dropped = s1.value("dropped", int64_t{-1});
  EXPECT_GT(dropped, 0) << json;
  EXPECT_LE(s1["outbox"].value("bytes", int64_t{0}), int64_t{1} << 20) << json;
  EXPECT_EQ(s2.value("dropped", int64_t{-1}), 0) << json;
  EXPECT_EQ(s2.value("rejected", int64_t{-1}), 0) << json;
  EXPECT_EQ(s2["outbox"].value("messages", int64_t{0}), kSteady) << json;
  // Logged by the loop once the batch is committed: maybe after the acks.
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::ifstream log_file((*h)->dir() / "agent.log");
        std::stringstream log;
        log << log_file.rdbuf();
        return log.str().find("messages lost by sensors over their fair share: sensor s1 ") !=
               std::string::npos;
      },
      10s))
      << Log(**h);

  ASSERT_TRUE((*h)->sim().Restart().ok());
  // Every s2 message arrives; of s1's, those the outbox kept: its newest.
  std::set<int> s2_seen, s1_seen;
  std::map<std::string, int> flood_number, steady_number;
  for (int n = 0; n < kFlood; ++n) flood_number[Base64(FloodPayload(n))] = n;
  for (int n = 0; n < kSteady; ++n) steady_number[Base64(std::to_string(n))] = n;
  auto all_arrived = [&] {
    s2_seen.clear();
    s1_seen.clear();
    for (const auto& m : CloudPublishes((*h)->sim())) {
      if (m.topic == "dt/gw-test:s2/seq") {
        s2_seen.insert(steady_number.at(m.payload_b64));
      } else if (m.topic == "dt/gw-test:s1/flood") {
        s1_seen.insert(flood_number.at(m.payload_b64));
      }
    }
    return s2_seen.size() == static_cast<size_t>(kSteady) &&
           s1_seen.size() == static_cast<size_t>(kFlood - dropped);
  };
  ASSERT_TRUE(WaitUntil(all_arrived, 120s))
      << s2_seen.size() << " of s2's and " << s1_seen.size() << " of s1's arrived\n"
      << Log(**h);
  EXPECT_EQ(*s2_seen.begin(), 0);
  EXPECT_EQ(*s2_seen.rbegin(), kSteady - 1);
  EXPECT_EQ(*s1_seen.begin(), dropped);  // the oldest went
  EXPECT_EQ(*s1_seen.rbegin(), kFlood - 1);

  json = (*h)->StatusJson();
  EXPECT_EQ(StatusOf(json, "s1").value("dropped", int64_t{-1}), dropped) << json;
  EXPECT_EQ(StatusOf(json, "s2").value("dropped", int64_t{-1}), 0) << json;
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
