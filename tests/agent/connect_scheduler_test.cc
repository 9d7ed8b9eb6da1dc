// The connect scheduler driven by a fake clock: nothing here sleeps.
#include "gateway_agent/agent/connect_scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "fake_clock.h"

namespace ga {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using testing::FakeClock;

ConnectPacing Pacing(double account_rate) {
  ConnectPacing p;
  p.backoff = {1000ms, 60000ms, 2.0};
  p.account_rate = account_rate;
  return p;
}

TEST(ConnectScheduler, CountedRetriesStayUnderTheGrowingCappedCeiling) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 1);
  for (int attempt = 1; attempt <= 12; ++attempt) {
    milliseconds ceiling = BackoffCeiling(s.backoff(), attempt);
    milliseconds longest{0};
    for (int i = 0; i < 200; ++i) {
      milliseconds d = s.RetryDelay("s1", attempt, /*counted=*/true);
      EXPECT_GE(d, 0ms);
      EXPECT_LE(d, ceiling) << "attempt " << attempt;
      longest = std::max(longest, d);
    }
    // Full jitter: the draws spread over the whole range.
    EXPECT_GT(longest, ceiling / 2) << "attempt " << attempt;
  }
  EXPECT_EQ(BackoffCeiling(s.backoff(), 12), 60000ms);
}

TEST(ConnectScheduler, UncountedFailuresHaveTheirOwnCountThatACountedOneResets) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 2);
  // The n-th consecutive uncounted failure of a client draws under 2^(n-1) s,
  // whatever its persisted attempt count says; the ceiling is reached by some
  // client among many.
  std::vector<milliseconds> longest(6, 0ms);
  for (int c = 0; c < 200; ++c) {
    std::string client = "s" + std::to_string(c);
    for (int n = 1; n <= 5; ++n) {
      milliseconds d = s.RetryDelay(client, /*attempts=*/40, /*counted=*/false);
      EXPECT_LE(d, BackoffCeiling(s.backoff(), n)) << client << " failure " << n;
      longest[n] = std::max(longest[n], d);
    }
  }
  for (int n = 2; n <= 5; ++n) EXPECT_GT(longest[n], BackoffCeiling(s.backoff(), n - 1));

  // A counted attempt starts the uncounted count again.
  for (int c = 0; c < 200; ++c) {
    std::string client = "s" + std::to_string(c);
    EXPECT_LE(s.RetryDelay(client, 1, /*counted=*/true), 1000ms);
    EXPECT_LE(s.RetryDelay(client, 1, /*counted=*/false), 1000ms);
  }
}

TEST(ConnectScheduler, ACapOverrideReplacesTheBackoffMax) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 3);
  milliseconds longest{0};
  for (int i = 0; i < 400; ++i) {
    milliseconds d = s.RetryDelay("s1", 30, /*counted=*/true, 240000ms);
    EXPECT_LE(d, 240000ms);
    longest = std::max(longest, d);
  }
  EXPECT_GT(longest, 60000ms);
}

TEST(ConnectScheduler, OneConnectPerClientIdPerSpacingOthersUnaffected) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 4);
  EXPECT_EQ(s.TryAdmit("s1"), 0ns);
  EXPECT_EQ(s.TryAdmit("s1"), nanoseconds(kPerClientIdSpacing));
  EXPECT_EQ(s.TryAdmit("s2"), 0ns);
  clock.Advance(kPerClientIdSpacing - 1ms);
  EXPECT_EQ(s.TryAdmit("s1"), nanoseconds(1ms));
  clock.Advance(1ms);
  EXPECT_EQ(s.TryAdmit("s1"), 0ns);
  EXPECT_EQ(s.TryAdmit("s1"), nanoseconds(kPerClientIdSpacing));
}

// After a restart: the process before may have connected any client id just
// before it ended.
TEST(ConnectScheduler, AfterAssumingAllConnectedEveryClientIdWaitsOneSpacing) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 1);
  s.AssumeAllConnectedNow();
  EXPECT_EQ(s.TryAdmit("s1"), nanoseconds(kPerClientIdSpacing));
  clock.Advance(kPerClientIdSpacing - 100ms);
  EXPECT_EQ(s.TryAdmit("s2"), nanoseconds(100ms));
  clock.Advance(100ms);
  EXPECT_EQ(s.TryAdmit("s1"), 0ns);
  EXPECT_EQ(s.TryAdmit("s2"), 0ns);
}

TEST(ConnectScheduler, TheSpacingCountsFromTheEndOfASlowAttempt) {
  FakeClock clock;
  ConnectScheduler s(Pacing(100), clock, 5);
  EXPECT_EQ(s.TryAdmit("s1"), 0ns);
  // The handshake waited 700 ms for the TPM: the CONNECT left about then.
  clock.Advance(700ms);
  s.AttemptDone("s1");
  clock.Advance(kPerClientIdSpacing - 700ms);
  EXPECT_EQ(s.TryAdmit("s1"), nanoseconds(700ms));
  clock.Advance(700ms);
  EXPECT_EQ(s.TryAdmit("s1"), 0ns);
}

TEST(ConnectScheduler, TheAccountRateAllowsItsBurstThenOneSlotPerInterval) {
  FakeClock clock;
  ConnectScheduler s(Pacing(5), clock, 5);
  for (int c = 0; c < 5; ++c) EXPECT_EQ(s.TryAdmit("s" + std::to_string(c)), 0ns) << c;
  // The next ones each get a slot 200 ms after the previous one.
  for (int c = 5; c < 10; ++c) {
    EXPECT_EQ(s.TryAdmit("s" + std::to_string(c)), nanoseconds(200ms) * (c - 4)) << c;
  }
  // Asking early again does not move a client forward or back.
  EXPECT_EQ(s.TryAdmit("s7"), 600ms);
  clock.Advance(600ms);
  EXPECT_EQ(s.TryAdmit("s7"), 0ns);
  EXPECT_EQ(s.TryAdmit("s8"), 200ms);
}

TEST(ConnectScheduler, NoMoreThanTheAccountRateOverTime) {
  FakeClock clock;
  ConnectScheduler s(Pacing(10), clock, 6);
  std::map<std::string, nanoseconds> due;  // client -> when it asks next
  for (int c = 0; c < 100; ++c) due["s" + std::to_string(c)] = 0ns;
  int admitted = 0;
  for (nanoseconds t = 0ns; t <= 20s; t += 10ms) {
    for (auto& [client, at] : due) {
      if (at > t) continue;
      nanoseconds wait = s.TryAdmit(client);
      if (wait == 0ns) ++admitted;
      at = t + (wait == 0ns ? nanoseconds(kPerClientIdSpacing) : wait);
    }
    clock.Advance(10ms);
  }
  // A burst of 10, then 10 per second.
  EXPECT_LE(admitted, 10 + 200 + 1);
  EXPECT_GE(admitted, 10 + 200 - 2);
}

TEST(ConnectScheduler, ClientsHeldByTheAccountRateAreServedInTurn) {
  FakeClock clock;
  ConnectScheduler s(Pacing(1), clock, 7);
  // Three clients asking every 10 ms, always in the same order: the first in
  // line would win every free slot if slots were not booked.
  const std::vector<std::string> clients = {"a", "b", "c"};
  std::map<std::string, int> admitted;
  std::string order;
  for (int step = 0; step < 3000; ++step) {  // 30 s
    for (const auto& c : clients) {
      if (s.TryAdmit(c) == 0ns) {
        ++admitted[c];
        order += c;
      }
    }
    clock.Advance(10ms);
  }
  EXPECT_EQ(order.substr(0, 9), "abcabcabc");
  for (const auto& c : clients) {
    EXPECT_GE(admitted[c], 9) << c << " in " << order;
    EXPECT_LE(admitted[c], 11) << c << " in " << order;
  }
}

}  // namespace
}  // namespace ga
