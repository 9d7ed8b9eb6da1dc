// Messages to invented sensor ids on a running agent whose real sensors are
// flowing: the real traffic all arrives, and what the agent keeps about the
// invented ids (disk, log) stays bounded while they are counted.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bridge_harness.h"

namespace ga::testing {
namespace {

// Bytes of every regular file under `dir` (the databases, their WAL, the
// identities' files).
uint64_t TreeBytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const auto size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

uint64_t FileBytes(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  return ec ? 0 : size;
}

std::string RandomId(std::mt19937_64& rng, size_t bytes) {
  std::string id(bytes, 'a');
  for (char& c : id) c = static_cast<char>('a' + rng() % 26);
  return id;
}

int64_t UnknownDropped(const std::string& status) {
  Json j = Parse(status);
  if (!j.is_object() || !j.contains("unknownSensors")) return -1;
  return j["unknownSensors"].value("dropped", int64_t{-1});
}

TEST(UnknownSendersFlood, RandomIdsWhileASensorFlowsEveryMessageArrivesAndUsageStaysBounded) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 120s)) << Log(**h);
  std::string status;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) {
        return StatusOf(json, "s1").value("connected", false) &&
               StatusOf(json, "s2").value("connected", false);
      },
      60s, &status))
      << status << Log(**h);

  // s1's numbered messages, 50 a second, from before the flood until after it.
  LocalClient s1((*h)->broker().port(), "sensor-s1");
  ASSERT_TRUE(s1.connected());
  std::atomic<int> numbered{0};
  std::atomic<bool> stop{false}, publish_failed{false};
  std::thread sender([&] {
    auto next = std::chrono::steady_clock::now();
    while (!stop) {
      if (!s1.Publish("sensors/s1/seq", std::to_string(numbered.load()))) {
        publish_failed = true;
        return;
      }
      ++numbered;
      next += 20ms;
      std::this_thread::sleep_until(next);
    }
  });
  // An assertion that ends the test early stops the sender first.
  struct StopAndJoin {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~StopAndJoin() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } stop_sender{stop, sender};
  while (numbered < 100 && !publish_failed) std::this_thread::sleep_for(10ms);

  // The outbox's WAL grows with s1's traffic alone until SQLite's first
  // checkpoint (1,000 pages, about 4 MiB), then keeps its size: the flood is
  // measured from there, so what it adds is not hidden in that growth.
  const auto wal = (*h)->state_dir() / "outbox.db-wal";
  const auto warm_start = std::chrono::steady_clock::now();
  for (uint64_t was = 0, is = FileBytes(wal); is == 0 || is != was; is = FileBytes(wal)) {
    ASSERT_LT(std::chrono::steady_clock::now() - warm_start, 90s)
        << "the outbox's WAL still grows: " << is << " bytes";
    was = is;
    std::this_thread::sleep_for(1500ms);
  }
  const auto warm_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - warm_start)
                           .count();

  const auto log_file = (*h)->dir() / "agent.log";
  const uint64_t state_before = TreeBytes((*h)->state_dir());
  const uint64_t log_before = FileBytes(log_file);
  uint64_t state_peak = state_before;

  // The flood: 500 messages at QoS 0 and 50 at QoS 1 (one after every
  // tenth), each to a random 2 KB id, about 55 a second.
  LocalClient flood((*h)->broker().port(), "flooder");
  ASSERT_TRUE(flood.connected());
  std::mt19937_64 rng(20240611);
  constexpr int kQos0 = 500, kQos1 = 50;
  auto next = std::chrono::steady_clock::now();
  const int numbered_at_flood = numbered;
  for (int i = 0; i < kQos0; ++i) {
    ASSERT_TRUE(flood.Publish("sensors/" + RandomId(rng, 2048) + "/x", "flood", 0));
    if (i % 10 == 9) {
      ASSERT_TRUE(flood.Publish("sensors/" + RandomId(rng, 2048) + "/x", "flood", 1));
    }
    if (i % 50 == 49) state_peak = std::max(state_peak, TreeBytes((*h)->state_dir()));
    next += 20ms;
    std::this_thread::sleep_until(next);
  }
  // QoS 1 is acknowledged in order after the QoS 0 published before it.
  ASSERT_TRUE(flood.WaitAcked(kQos1, 30s));
  ASSERT_TRUE((*h)->WaitForStatus(
      [&](const std::string& json) { return UnknownDropped(json) >= kQos0 + kQos1; }, 30s, &status))
      << "unknown ids counted: " << UnknownDropped(status) << "\n"
      << status << Log(**h);
  const int numbered_after_flood = numbered;
  EXPECT_TRUE(StatusOf(status, "s1").value("connected", false)) << status;
  state_peak = std::max(state_peak, TreeBytes((*h)->state_dir()));
  const uint64_t log_after = FileBytes(log_file);

  // s1 goes on a second more, then every numbered message must arrive.
  std::this_thread::sleep_for(1s);
  stop = true;
  sender.join();
  ASSERT_FALSE(publish_failed);
  const int total = numbered;
  EXPECT_GT(numbered_after_flood, numbered_at_flood) << "s1 was not flowing during the flood";
  ASSERT_TRUE(s1.WaitAcked(total, 30s));
  std::vector<CloudMessage> got;
  EXPECT_TRUE(WaitForCloudCount((*h)->sim(), static_cast<size_t>(total), 60s, &got))
      << got.size() << " of " << total << " arrived\n"
      << Log(**h);
  std::set<std::string> arrived;
  for (const auto& m : got) {
    EXPECT_EQ(m.topic, "dt/gw-test:s1/seq");
    EXPECT_EQ(m.client_id, "gw-test:s1");
    arrived.insert(m.payload_b64);
  }
  int missing = 0;
  for (int n = 0; n < total; ++n) missing += arrived.count(Base64(std::to_string(n))) == 0;
  EXPECT_EQ(missing, 0) << "of " << total << " numbered messages of s1";

  const double state_grown_kib = (static_cast<double>(state_peak) - state_before) / 1024;
  const double log_grown_kib = (static_cast<double>(log_after) - log_before) / 1024;
  EXPECT_LT(state_peak, state_before + (2u << 20)) << state_grown_kib << " KiB";
  EXPECT_LT(log_after, log_before + (1u << 20)) << log_grown_kib << " KiB";
  // One line for the whole flood (one a minute at most), the id in it cut.
  std::ifstream log_in(log_file);
  int unknown_lines = 0;
  for (std::string line; std::getline(log_in, line);) {
    if (line.find("from unknown sensor") == std::string::npos) continue;
    ++unknown_lines;
    EXPECT_LT(line.size(), 512u) << line.substr(0, 600);
  }
  EXPECT_EQ(unknown_lines, 1) << Log(**h);
  std::printf(
      "flood of %d unknown-id messages while s1 sent %d (%d during the flood; the WAL steady "
      "after %.1f s, %.2f MiB): state_dir grew %.1f KiB (peak), the log %.1f KiB\n",
      kQos0 + kQos1, total, numbered_after_flood - numbered_at_flood, warm_ms / 1000.0,
      static_cast<double>(FileBytes(wal)) / (1 << 20), state_grown_kib, log_grown_kib);

  // status (the command itself): s1 still connected, the flood counted.
  auto cli = (*h)->Cli({"status", "--json"});
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_TRUE(StatusOf(cli.output, "s1").value("connected", false)) << cli.output;
  EXPECT_EQ(UnknownDropped(cli.output), kQos0 + kQos1) << cli.output;
  Json unknown = Parse(cli.output).value("unknownSensors", Json::object());
  ASSERT_TRUE(unknown.contains("recent")) << cli.output;
  EXPECT_EQ(unknown["recent"].size(), 16u) << cli.output;
  for (const auto& u : unknown["recent"]) {
    // Kept cut to 64 bytes (and a mark that it was cut), not 2 KB.
    EXPECT_LE(Str(u, "id").size(), 64u + 32u) << Str(u, "id");
  }
  auto table = (*h)->Cli({"status"});
  EXPECT_NE(table.output.find("unknown sensor ids: " + std::to_string(kQos0 + kQos1) +
                              " message(s) dropped"),
            std::string::npos)
      << table.output;
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
