// The send scheduler's rules, driven by a fake clock: AWS IoT's
// per-connection publish and byte rates, bursts, the in-flight window, room
// at the server whatever a link holds back, and turns between a carrier and
// the sensors it carries.
#include "send_budget.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <vector>

#include "gateway_agent/aws_iot.h"

namespace ga::bridge {
namespace {

using std::chrono::milliseconds;

const SteadyClock::time_point kStart{};

// Offers a 100-byte message every millisecond for `ms` milliseconds, each
// acknowledged at once; returns the times (ms since kStart) at which one was
// taken.
std::vector<int> TakeEveryMs(SendBudget& budget, int ms, size_t bytes = 100) {
  std::vector<int> taken;
  for (int t = 0; t < ms; ++t) {
    while (budget.TryTake(bytes, kStart + milliseconds(t))) {
      budget.Acknowledged(bytes, kStart + milliseconds(t));
      taken.push_back(t);
    }
  }
  return taken;
}

// A link that delivers a publish sent at ms t at ms arrive(t) (never before
// one sent earlier), to a server with AWS IoT's buckets: 100 publishes and
// 512 KiB a second, each holding a second's worth, as iot-sim models them.
// Its PUBACK comes back at once. For `ms` ms a message of `bytes` is offered
// whenever the window has room; returns the publishes the server refused,
// and in *sent how many went.
int RefusedByTheServer(SendBudget& budget, int ms, const std::function<int(int)>& arrive,
                       size_t bytes, int* sent) {
  TokenBucket publishes(100, 100, kStart);
  TokenBucket throughput(512 * 1024, 512 * 1024, kStart);
  std::multimap<int, size_t> on_the_way;  // arrival ms -> bytes
  int refused = 0;
  *sent = 0;
  for (int t = 0; t < ms; ++t) {
    auto now = kStart + milliseconds(t);
    for (auto it = on_the_way.begin(); it != on_the_way.end() && it->first <= t;) {
      if (!publishes.TryTake(1, now) || !throughput.TryTake(static_cast<double>(it->second), now)) {
        ++refused;
      }
      budget.Acknowledged(it->second, now);
      it = on_the_way.erase(it);
    }
    while (!budget.WindowFull(on_the_way.size()) && budget.TryTake(bytes, now)) {
      on_the_way.emplace(arrive(t), bytes);
      ++*sent;
    }
  }
  return refused;
}

TEST(SendBudget, TheServerHasRoomForEveryPublishWhateverTheLinkHoldsBack) {
  struct Link {
    const char* name;
    std::function<int(int)> arrive;
  };
  const std::vector<Link> links = {
      {"20 ms away", [](int t) { return t + 20; }},
      {"600 ms away (satellite)", [](int t) { return t + 600; }},
      // Holds everything for 2 s, then delivers it at once.
      {"stalled 2 s", [](int t) { return t >= 1000 && t < 3000 ? 3000 : t + 20; }},
      // Drops off for 0.7 s in every 1.5 s.
      {"stalling often", [](int t) { return t % 1500 < 700 ? t - t % 1500 + 700 : t + 20; }},
  };
  for (const Link& link : links) {
    for (size_t bytes : {size_t{100}, size_t{20 * 1024}}) {
      SendBudget budget(100, 512 * 1024, 100, false, kStart);
      int sent = 0;
      EXPECT_EQ(RefusedByTheServer(budget, 10'000, link.arrive, bytes, &sent), 0)
          << link.name << ", " << bytes << "-byte messages";
      // The rates are used (909 and 262 when nothing stalls): 90 a second
      // after a burst of 10, or 25 of 20 KiB (512 KiB/s), 600 ms away too.
      EXPECT_GE(sent, bytes == 100 ? 800 : 230) << link.name << ", " << bytes << " bytes";
      std::printf("[ figures  ] %s, %zu-byte messages: %d sent in 10 s, 0 refused\n", link.name,
                  bytes, sent);
    }
  }
}

TEST(SendBudget, WithoutPubacksASecondsWorthGoesAndANewConnectionStartsAfresh) {
  SendBudget budget(100, 512 * 1024, 100, false, kStart);
  int taken = 0;
  for (int t = 0; t < 3000; ++t) {
    while (budget.TryTake(100, kStart + milliseconds(t))) ++taken;
  }
  // All of them may reach the server at once: its bucket holds 100.
  EXPECT_EQ(taken, 100);
  // A new connection: nothing of the old one is in flight on it.
  budget.NewConnection(kStart + milliseconds(3000));
  int again = 0;
  while (budget.TryTake(100, kStart + milliseconds(3000))) ++again;
  EXPECT_EQ(again, 10);  // the burst
}

TEST(SendBudget, AQos0PublishCountsAtTheServer) {
  SendBudget budget(100, 512 * 1024, 100, false, kStart);
  for (int i = 0; i < 95; ++i) budget.SentWithoutAck(100, kStart);
  int taken = 0;
  while (budget.TryTake(100, kStart)) ++taken;
  EXPECT_EQ(taken, 5);
}

// The most publishes in any one-second window.
int MostInOneSecond(const std::vector<int>& times) {
  int most = 0;
  for (size_t i = 0, j = 0; i < times.size(); ++i) {
    while (times[i] - times[j] >= 1000) ++j;
    most = std::max(most, static_cast<int>(i - j + 1));
  }
  return most;
}

TEST(SendBudget, NoOneSecondWindowExceedsThePublishRate) {
  for (double rate : {1.0, 5.0, 10.0, 100.0}) {
    SendBudget budget(rate, 512 * 1024, 100, false, kStart);
    auto taken = TakeEveryMs(budget, 10'000);
    EXPECT_LE(MostInOneSecond(taken), static_cast<int>(rate)) << "rate " << rate;
    // ...and most of it is used (a rate of 1 refills at 0.5/s after its burst).
    EXPECT_GE(static_cast<double>(taken.size()), 10 * rate / 2) << "rate " << rate;
  }
}

TEST(SendBudget, ATenthOfTheRateGoesAtOnceAfterAQuietTime) {
  SendBudget budget(100, 512 * 1024, 100, false, kStart);
  int burst = 0;
  while (budget.TryTake(100, kStart)) ++burst;
  EXPECT_EQ(burst, 10);
}

TEST(SendBudget, TheByteRateHoldsAndTheLargestMessageStillGoes) {
  const double byte_rate = 16 * 1024;  // below one maximal message
  SendBudget budget(100, byte_rate, 100, false, kStart);
  // A 128 KiB message goes at once: the byte burst holds one.
  EXPECT_TRUE(budget.TryTake(aws::kMaxPayloadBytes, kStart));
  budget.Acknowledged(aws::kMaxPayloadBytes, kStart);
  // Then the bytes must be earned again at byte_rate.
  EXPECT_FALSE(budget.TryTake(1024, kStart + milliseconds(10)));
  EXPECT_TRUE(budget.TryTake(1024, kStart + milliseconds(8500)));
}

TEST(SendBudget, APublishIsNotSpentOnAMessageWhoseBytesMustWait) {
  SendBudget budget(100, 1000, 100, false, kStart);  // 10 publishes at once
  // One maximal message spends the byte burst and one publish.
  ASSERT_TRUE(budget.TryTake(aws::kMaxPayloadBytes, kStart));
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(budget.TryTake(2000, kStart));
  // The refused messages took no publish: the other 9 are still there.
  int empty = 0;
  while (budget.TryTake(0, kStart)) ++empty;
  EXPECT_EQ(empty, 9);
}

TEST(SendBudget, TheWindowBoundsWhatIsInFlight) {
  SendBudget budget(100, 512 * 1024, 3, false, kStart);
  EXPECT_FALSE(budget.WindowFull(0));
  EXPECT_FALSE(budget.WindowFull(2));
  EXPECT_TRUE(budget.WindowFull(3));
  EXPECT_TRUE(budget.WindowFull(4));
}

TEST(SendBudget, UnlimitedLiftsTheRatesNotTheWindow) {
  SendBudget budget(1, 1, 5, true, kStart);
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(budget.TryTake(aws::kMaxPayloadBytes, kStart));
  EXPECT_TRUE(budget.WindowFull(5));
}

// Senders with queues of messages, all on one carrier's budget.
struct Carried {
  std::vector<std::deque<int>> queues;
  std::vector<int> order;  // which sender each sent message came from
  SendBudget* budget = nullptr;
  SteadyClock::time_point now = kStart;
  bool Send(size_t i) {
    if (queues[i].empty() || !budget->TryTake(100, now)) return false;
    budget->Acknowledged(100, now);
    queues[i].pop_front();
    order.push_back(static_cast<int>(i));
    return true;
  }
};

TEST(SendInTurns, SendersTakeTurnsWithinTheCarriersRate) {
  SendBudget budget(30, 512 * 1024, 100, false, kStart);  // a burst of 3
  Carried c{{std::deque<int>(10), std::deque<int>(10), std::deque<int>(10)}, {}, &budget};
  size_t next_turn = 0;
  EXPECT_EQ(SendInTurns(3, &next_turn, [&](size_t i) { return c.Send(i); }), 3u);
  EXPECT_EQ(c.order, (std::vector<int>{0, 1, 2}));
  // A sender that has nothing is skipped; over 10 s of calls every 100 ms,
  // the two others share the rate about evenly.
  c.queues[0].resize(1000);
  c.queues[1].clear();
  c.queues[2].resize(1000);
  for (int t = 1; t <= 100; ++t) {
    c.now = kStart + milliseconds(100 * t);
    SendInTurns(3, &next_turn, [&](size_t i) { return c.Send(i); });
  }
  std::vector<int> later(c.order.begin() + 3, c.order.end());
  EXPECT_GE(later.size(), 240u);  // 27/s after the burst
  EXPECT_EQ(std::count(later.begin(), later.end(), 1), 0);
  for (int s : {0, 2}) {
    EXPECT_GE(std::count(later.begin(), later.end(), s), static_cast<long>(later.size() * 2 / 5))
        << "sender " << s;
  }
}

TEST(SendInTurns, EachCallStartsWhereTheLastLeftOff) {
  // One message per call: without the rotation, sender 0 would always win.
  SendBudget budget(100, 512 * 1024, 100, false, kStart);
  Carried c{{std::deque<int>(100), std::deque<int>(100), std::deque<int>(100)}, {}, &budget};
  size_t next_turn = 0;
  for (int call = 0; call < 9; ++call) {
    bool once = false;
    SendInTurns(3, &next_turn, [&](size_t i) {
      if (once) return false;
      once = c.Send(i);
      return once;
    });
  }
  EXPECT_EQ(c.order, (std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1, 2}));
}

TEST(SendInTurns, AManySensorCarrierStaysFairUnderItsWindow) {
  // 50 senders (the gateway and 49 carried sensors, AWS's subscription bound)
  // share one connection's window: each round, everyone with a message gets
  // one before anyone gets a second.
  SendBudget budget(100, 512 * 1024, 100, true, kStart);
  Carried c;
  c.queues.assign(50, std::deque<int>(5));
  c.budget = &budget;
  size_t in_flight = 0;
  size_t next_turn = 0;
  SendInTurns(50, &next_turn, [&](size_t i) {
    if (budget.WindowFull(in_flight) || !c.Send(i)) return false;
    ++in_flight;
    return true;
  });
  ASSERT_EQ(c.order.size(), 100u);
  for (int s = 0; s < 50; ++s) {
    EXPECT_EQ(std::count(c.order.begin(), c.order.end(), s), 2) << "sender " << s;
  }
}

}  // namespace
}  // namespace ga::bridge
