#include "gateway_agent/rate.h"

#include <gtest/gtest.h>

namespace ga {
namespace {

using namespace std::chrono_literals;

TEST(TokenBucket, RateAndBurst) {
  auto t0 = SteadyClock::time_point{} + 1h;
  TokenBucket b(100, 100, t0);
  int taken = 0;
  while (b.TryTake(1, t0)) ++taken;
  EXPECT_EQ(taken, 100);
  EXPECT_FALSE(b.TryTake(1, t0 + 5ms));
  EXPECT_TRUE(b.TryTake(1, t0 + 10ms));
  // One second later at most `burst` tokens, however long it waited.
  taken = 0;
  while (b.TryTake(1, t0 + 10s)) ++taken;
  EXPECT_EQ(taken, 100);
  EXPECT_EQ(b.TimeUntil(50, t0 + 10s), std::chrono::nanoseconds(500000001));
}

TEST(Backoff, FullJitterStaysUnderTheGrowingCappedCeiling) {
  BackoffPolicy p{1000ms, 60000ms, 2.0};
  EXPECT_EQ(BackoffCeiling(p, 1), 1000ms);
  EXPECT_EQ(BackoffCeiling(p, 4), 8000ms);
  EXPECT_EQ(BackoffCeiling(p, 30), 60000ms);
  std::mt19937_64 rng(7);
  for (int attempt = 1; attempt < 40; ++attempt) {
    std::chrono::milliseconds max_seen{0};
    for (int i = 0; i < 200; ++i) {
      auto d = FullJitterDelay(p, attempt, rng);
      ASSERT_GE(d.count(), 0);
      ASSERT_LE(d, BackoffCeiling(p, attempt));
      max_seen = std::max(max_seen, d);
    }
    // Spread over the whole range, not bunched at the start.
    EXPECT_GT(max_seen, BackoffCeiling(p, attempt) / 2);
  }
}

}  // namespace
}  // namespace ga
