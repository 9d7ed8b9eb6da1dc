// On a TPM as slow as a discrete chip (tests/fixtures/tpm_latency.h), after a
// cloud outage: the gateway's connection comes back first, the messages that
// waited flow before the keys of new enrollments are created, and the
// watchdog is pinged all along.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bridge_harness.h"
#include "notify_socket.h"
#include "tpm_latency.h"

namespace ga::testing {
namespace {

using SystemClock = std::chrono::system_clock;

int64_t MillisOf(SystemClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

TEST(TpmScheduling, AfterAnOutageTheGatewayAndWaitingMessagesGoBeforeNewKeys) {
  constexpr int kSensors = 20;
  constexpr int kWaiting = 5;  // s1..s5 have a message waiting when the cloud is back
  constexpr int kNew = 5;
  constexpr auto kWatchdog = std::chrono::seconds(2);
  HarnessOptions o;
  o.sensors = kSensors;
  o.tpm_profile = "discrete";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  AgentHarness& harness = **h;

  // The service manager's end: pings collected as they come.
  NotifySocket notify(harness.dir() / "notify.sock");
  ASSERT_TRUE(notify.bound());
  std::atomic<bool> stop{false};
  std::vector<std::chrono::steady_clock::time_point> pings;
  std::mutex pings_mu;
  std::thread listener([&] {
    while (!stop) {
      auto note = notify.Receive(std::chrono::milliseconds(100));
      if (note && note->Has("WATCHDOG=1")) {
        std::lock_guard lock(pings_mu);
        pings.push_back(note->at);
      }
    }
  });
  struct Join {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop = true;
      t.join();
    }
  } join{stop, listener};

  ASSERT_TRUE(harness
                  .StartAgent({{"NOTIFY_SOCKET", notify.path().string()},
                               {"WATCHDOG_USEC",
                                std::to_string(std::chrono::microseconds(kWatchdog).count())}})
                  .ok());
  ASSERT_TRUE(harness.WaitForState("ACTIVE", kSensors + 1, 240s)) << Log(harness);
  const auto all_connected = [&](int n) {
    return WaitUntil([&] { return static_cast<int>(SimClients(harness.sim()).size()) == n; }, 120s);
  };
  ASSERT_TRUE(all_connected(kSensors + 1)) << Log(harness);

  // The outage: messages of s1..s5 wait in the outbox meanwhile.
  ASSERT_TRUE(harness.sim().process().Signal(SIGTERM, 10s).has_value());
  LocalClient sensors(harness.broker().port(), "tpm-scheduling-sensors");
  ASSERT_TRUE(sensors.connected());
  for (int i = 1; i <= kWaiting; ++i) {
    ASSERT_TRUE(
        sensors.Publish("sensors/s" + std::to_string(i) + "/live", "live-" + std::to_string(i)));
  }
  ASSERT_TRUE(sensors.WaitAcked(kWaiting, 30s));
  std::this_thread::sleep_for(3s);  // every connection has failed at least once

  const auto storm_start = std::chrono::steady_clock::now();
  ASSERT_TRUE(harness.sim().Restart().ok());
  // The storm is under way once the gateway is back: new sensors come now.
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const auto& c : SimClients(harness.sim())) {
          if (c.value("clientId", "") == "gw-test") return true;
        }
        return false;
      },
      60s))
      << Log(harness);
  const auto added_at = SystemClock::now();
  for (int i = 1; i <= kNew; ++i) {
    CommandResult r = harness.Cli({"sensor", "add", "n" + std::to_string(i)});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  ASSERT_TRUE(harness.WaitForState("ACTIVE", kSensors + kNew + 1, 240s)) << Log(harness);
  ASSERT_TRUE(all_connected(kSensors + kNew + 1)) << Log(harness);
  const auto storm_end = std::chrono::steady_clock::now();

  // The gateway connected before every sensor that was there before.
  Json clients = SimClients(harness.sim());
  int64_t gateway_at = -1, first_sensor_at = INT64_MAX;
  for (const auto& c : clients) {
    const std::string id = c.value("clientId", "");
    const int64_t at = c.value("connectedAt", int64_t{0});
    if (id == "gw-test") gateway_at = at;
    if (id.rfind("gw-test:s", 0) == 0) first_sensor_at = std::min(first_sensor_at, at);
  }
  ASSERT_GT(gateway_at, 0) << clients.dump();
  EXPECT_LE(gateway_at, first_sensor_at) << clients.dump();

  // The messages that waited arrived before the first new key was begun.
  Json log = Parse(harness.sim().Http("GET", "/_sim/publishes").body);
  int64_t last_waiting_at = 0;
  int waiting_arrived = 0;
  for (const auto& p : log["publishes"]) {
    const std::string payload = p.value("payload", "");
    for (int i = 1; i <= kWaiting; ++i) {
      if (payload == Base64("live-" + std::to_string(i))) {
        ++waiting_arrived;
        last_waiting_at = std::max(last_waiting_at, p.value("time", int64_t{0}));
      }
    }
  }
  EXPECT_EQ(waiting_arrived, kWaiting) << log.dump();
  int64_t first_create_began = INT64_MAX;
  int creates = 0;
  const auto create_time = harness.tpm_relay()->profile().DelayOf(kTpmCcCreate);
  for (const auto& done : harness.tpm_relay()->Timeline()) {
    if (done.code != kTpmCcCreate || done.at < added_at) continue;
    ++creates;
    first_create_began = std::min(
        first_create_began,
        MillisOf(done.at - std::chrono::duration_cast<SystemClock::duration>(create_time)));
  }
  EXPECT_EQ(creates, kNew);
  EXPECT_LT(last_waiting_at, first_create_began)
      << "the messages that waited arrived at " << last_waiting_at
      << " ms, the first new key was begun at " << first_create_began << " ms\n"
      << Log(harness);

  // WATCHDOG=1 every WATCHDOG_USEC / 2 throughout.
  {
    std::lock_guard lock(pings_mu);
    std::chrono::steady_clock::duration longest{};
    for (size_t i = 1; i < pings.size(); ++i) {
      if (pings[i] < storm_start || pings[i - 1] > storm_end) continue;
      longest = std::max(longest, pings[i] - pings[i - 1]);
    }
    EXPECT_GT(pings.size(), 3u);
    EXPECT_LT(longest, kWatchdog) << "the watchdog would have fired";
  }
  ExpectNoViolations(harness);
  EXPECT_TRUE(harness.agent().Signal(SIGTERM, 30s).has_value());
}

}  // namespace
}  // namespace ga::testing
