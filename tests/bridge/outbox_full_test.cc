// The parts of the outbox's fair share: what each sensor holds (and undoing
// it with a rolled-back commit), and the log line naming who lost messages.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "fixtures.h"
#include "outbox_full_log.h"
#include "outbox_holdings.h"

namespace ga::bridge {
namespace {

using namespace std::chrono_literals;

TEST(OutboxHoldings, KnowsTheLargestHolderAndHowManyHold) {
  OutboxHoldings h;
  EXPECT_EQ(h.largest(), "");
  h.Add("s1", 30);
  h.Add("s2", 50);
  h.Add("s3", 50);
  EXPECT_EQ(h.total(), 130);
  EXPECT_EQ(h.holders(), 3u);
  EXPECT_EQ(h.largest(), "s2");  // as much as s3: the name sorting first
  h.Add("s2", -40);
  EXPECT_EQ(h.largest(), "s3");
  h.Add("s3", -50);
  EXPECT_EQ(h.holders(), 2u);
  EXPECT_EQ(h.of("s3"), 0);
  EXPECT_EQ(h.largest(), "s1");
  h.Clear("s1");
  EXPECT_EQ(h.largest(), "s2");
  EXPECT_EQ(h.total(), 10);
}

TEST(OutboxHoldings, UndoRestoresWhatWasHeldAtBegin) {
  OutboxHoldings h;
  h.Add("s1", 100);
  h.Add("s2", 20);
  h.Begin();
  h.Add("s1", -100);  // dropped, then
  h.Add("s3", 500);   // a new sensor
  h.Add("s2", 5);
  EXPECT_EQ(h.largest(), "s3");
  EXPECT_EQ(h.holders(), 2u);
  h.Undo();
  EXPECT_EQ(h.of("s1"), 100);
  EXPECT_EQ(h.of("s2"), 20);
  EXPECT_EQ(h.of("s3"), 0);
  EXPECT_EQ(h.total(), 120);
  EXPECT_EQ(h.holders(), 2u);
  EXPECT_EQ(h.largest(), "s1");

  h.Begin();
  h.Add("s1", -100);
  h.Add("s4", 7);
  h.Keep();
  h.Undo();  // nothing begun: nothing undone
  EXPECT_EQ(h.of("s1"), 0);
  EXPECT_EQ(h.largest(), "s2");
  EXPECT_EQ(h.total(), 27);
}

class OutboxFullLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OutboxLimits limits;
    limits.max_bytes = 100;
    auto box = Outbox::Open(dir_ / "outbox.db", limits);
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    box_ = std::move(*box);
  }
  void Flood(const std::string& identity, int messages) {
    for (int i = 0; i < messages; ++i) {
      std::vector<OutboxMessage> batch(1);
      batch[0].identity = identity;
      batch[0].topic = "dt/" + identity + "/t";
      batch[0].payload = std::string(10, 'x');
      ASSERT_TRUE(box_->Commit(batch, {}).ok());
    }
  }

  testing::TempDir dir_;
  std::unique_ptr<Outbox> box_;
};

// One line at once, then at most one per kLogEvery summing what came between.
TEST_F(OutboxFullLogTest, NamesTheFloodingSensorAtMostOncePerInterval) {
  OutboxFullLog log;
  auto t0 = OutboxFullLog::Clock::time_point{} + 1h;
  EXPECT_EQ(log.Take(*box_, t0).text, "");  // nothing lost yet
  Flood("s2", 2);
  Flood("s1", 10);
  auto first = log.Take(*box_, t0);
  EXPECT_EQ(first.top, "s1");
  EXPECT_NE(first.text.find("sensor s1 2 dropped, 0 rejected (holds 80 bytes)"), std::string::npos)
      << first.text;
  EXPECT_EQ(first.text.find("s2"), std::string::npos) << first.text;
  EXPECT_NE(first.text.find("bridge.outbox_max_bytes = 100"), std::string::npos) << first.text;

  Flood("s1", 3);
  EXPECT_EQ(log.Take(*box_, t0 + 30s).text, "");
  Flood("s1", 4);
  EXPECT_EQ(log.Take(*box_, t0 + OutboxFullLog::kLogEvery - 1s).text, "");
  auto second = log.Take(*box_, t0 + OutboxFullLog::kLogEvery);
  EXPECT_NE(second.text.find("sensor s1 7 dropped"), std::string::npos) << second.text;
  EXPECT_EQ(log.Take(*box_, t0 + 10 * OutboxFullLog::kLogEvery).text, "");
}

// However many sensors lose messages, the line names the kShown losing most.
TEST_F(OutboxFullLogTest, NamesAtMostAFewSensors) {
  OutboxFullLog log;
  for (int s = 0; s < 20; ++s) Flood("s" + std::to_string(s), 1);
  Flood("big", 5);
  auto line = log.Take(*box_, OutboxFullLog::Clock::time_point{} + 1h);
  EXPECT_EQ(line.top, "big");
  EXPECT_NE(line.text.find("and "), std::string::npos) << line.text;
  size_t named = 0;
  for (size_t at = 0; (at = line.text.find(" dropped, ", at)) != std::string::npos; ++at) ++named;
  EXPECT_EQ(named, OutboxFullLog::kShown) << line.text;
}

}  // namespace
}  // namespace ga::bridge
