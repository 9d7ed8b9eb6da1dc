// Messages from unknown sensor ids: whatever ids a LAN client invents, the
// outbox, the recent-id set and the log stay bounded.
#include "unknown_senders.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "fixtures.h"
#include "gateway_agent/log.h"

namespace ga::bridge {
namespace {

using namespace std::chrono_literals;

std::string RandomId(std::mt19937_64& rng, size_t bytes) {
  std::string id(bytes, 'a');
  for (char& c : id) c = static_cast<char>('a' + rng() % 26);
  return id;
}

uint64_t DirBytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

class UnknownSendersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log::SetWriterForTest([this](log::Level, std::string_view line, auto) {
      log_bytes_ += line.size() + 1;
      lines_.emplace_back(line);
    });
  }
  void TearDown() override { log::SetWriterForTest(nullptr); }

  size_t log_bytes_ = 0;
  std::vector<std::string> lines_;
};

TEST_F(UnknownSendersTest, AFloodOfRandomIdsStaysBoundedOnDiskAndInTheLog) {
  testing::TempDir dir;
  auto box = Outbox::Open(dir / "outbox.db", {});
  ASSERT_TRUE(box.ok()) << box.status().ToString();
  const uint64_t before = DirBytes(dir.path());
  UnknownSenders unknown;
  std::mt19937_64 rng(7);
  auto now = UnknownSenders::Clock::now();
  // 500 messages to random 2 KB ids over 50 s of loop time (a flush every 2 s).
  for (int i = 0; i < 500; ++i) {
    std::string id = RandomId(rng, 2048);
    unknown.Note(id, "sensors/" + id + "/x", now, 1000 + i);
    ASSERT_TRUE(unknown.Flush(**box, now).ok());
    now += 100ms;
  }
  ASSERT_TRUE(unknown.Flush(**box, now, /*force=*/true).ok());
  const uint64_t grown = DirBytes(dir.path()) - before;
  EXPECT_LT(grown, 2u << 20) << grown << " bytes";
  EXPECT_LT(log_bytes_, 1u << 20);
  // One line a minute at most: 50 s of flood, one line.
  EXPECT_EQ(lines_.size(), 1u);
  ASSERT_FALSE(lines_.empty());
  EXPECT_NE(lines_[0].find("unknown sensor \""), std::string::npos) << lines_[0];
  EXPECT_LT(lines_[0].size(), 512u) << "ids are cut in the log";

  auto report = ReadUnknownSenders(dir / "outbox.db");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->dropped, 500);
  ASSERT_EQ(report->recent.size(), kUnknownSendersKept);
  for (const auto& u : report->recent) {
    EXPECT_LT(u.id.size(), UnknownSenders::kShownBytes + 32) << u.id;
    EXPECT_EQ(u.messages, 1);
  }
  // Most recent first.
  EXPECT_EQ(report->recent.front().last_ms, 1000 + 499);
}

TEST_F(UnknownSendersTest, CountsARepeatedIdOnceInTheRecentSetAndEscapesControlCharacters) {
  testing::TempDir dir;
  auto box = Outbox::Open(dir / "outbox.db", {});
  ASSERT_TRUE(box.ok()) << box.status().ToString();
  UnknownSenders unknown;
  auto now = UnknownSenders::Clock::now();
  for (int i = 0; i < 3; ++i) unknown.Note("nobody", "sensors/nobody/t", now, 10 + i);
  unknown.Note(std::string("evil\n\x1b[2J", 10), "sensors/evil/t", now, 20);
  ASSERT_TRUE(unknown.Flush(**box, now).ok());
  // Within kFlushEvery nothing more is written; forced, it is.
  unknown.Note("nobody", "sensors/nobody/t", now + 1s, 30);
  ASSERT_TRUE(unknown.Flush(**box, now + 1s).ok());
  EXPECT_EQ(ReadUnknownSenders(dir / "outbox.db")->dropped, 4);
  ASSERT_TRUE(unknown.Flush(**box, now + 3s).ok());

  auto report = ReadUnknownSenders(dir / "outbox.db");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->dropped, 5);
  ASSERT_EQ(report->recent.size(), 2u);
  EXPECT_EQ(report->recent[0].id, "nobody");
  EXPECT_EQ(report->recent[0].messages, 4);
  EXPECT_EQ(report->recent[1].id, "evil\\x0a\\x1b[2J\\x00");  // the NUL too
  for (const auto& line : lines_) {
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << "no raw escape in the log";
  }
}

}  // namespace
}  // namespace ga::bridge
