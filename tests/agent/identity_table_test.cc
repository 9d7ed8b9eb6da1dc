// The enrollment workers' table of identities.
#include "identity_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "fake_clock.h"

namespace ga {
namespace {

using namespace std::chrono_literals;

Identity Named(const std::string& name) {
  Identity id;
  id.name = name;
  id.state = EnrollmentState::kActive;
  return id;
}

// A renewal spaces its CONNECT from the bridge's with SleepFor: another
// identity's change must not cut that sleep short (AWS IoT refuses a second
// CONNECT by a client id within a second).
TEST(IdentityTable, SleepForLastsItsWholeTimeWhateverElseChanges) {
  testing::FakeClock clock;
  IdentityTable table(clock);
  table.Reset({Named("gateway"), Named("s1")});
  table.Start();
  std::atomic<bool> sleeping{true};
  std::thread other([&] {
    while (sleeping) {
      table.Add(Named("gateway"));  // wakes everyone waiting on the table
      std::this_thread::sleep_for(5ms);
    }
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(table.SleepFor(300ms));
  auto slept = std::chrono::steady_clock::now() - start;
  sleeping = false;
  other.join();
  EXPECT_GE(slept, 300ms);
}

TEST(IdentityTable, StopEndsASleepAtOnce) {
  testing::FakeClock clock;
  IdentityTable table(clock);
  table.Start();
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    table.Stop();
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(table.SleepFor(60s));
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  EXPECT_FALSE(table.SleepFor(1s));  // already stopped: no sleep at all
}

}  // namespace
}  // namespace ga
