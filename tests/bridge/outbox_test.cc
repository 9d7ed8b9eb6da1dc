#include "gateway_agent/bridge/outbox.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "fixtures.h"
#include "gateway_agent/sqlite.h"

namespace ga::bridge {
namespace {

OutboxMessage Msg(const std::string& identity, const std::string& payload, int64_t created = 1000) {
  OutboxMessage m;
  m.identity = identity;
  m.topic = "dt/" + identity + "/t";
  m.payload = payload;
  m.created_ms = created;
  return m;
}

TEST(Outbox, KeepsOrderPerIdentityAndDeletesOnAcknowledge) {
  testing::TempDir dir;
  auto box = Outbox::Open(dir / "outbox.db", {});
  ASSERT_TRUE(box.ok()) << box.status().ToString();
  std::vector<OutboxMessage> batch = {Msg("a", "1"), Msg("b", "x"), Msg("a", "2"), Msg("a", "3")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  EXPECT_LT(batch[0].seq, batch[2].seq);
  auto a = (*box)->Next("a", 0, 10);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 3u);
  EXPECT_EQ((*a)[0].payload, "1");
  EXPECT_EQ((*a)[2].payload, "3");
  auto after = (*box)->Next("a", (*a)[0].seq, 10);
  ASSERT_EQ(after->size(), 2u);
  ASSERT_TRUE((*box)->Acknowledge({(*a)[0].seq, (*a)[1].seq}).ok());
  EXPECT_EQ((*box)->Next("a", 0, 10)->size(), 1u);
  EXPECT_EQ((*box)->total_bytes(), 2);  // "3" and "x"

  auto stats = ReadOutboxStats(dir / "outbox.db");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["a"].messages, 1);
  EXPECT_EQ((*stats)["a"].counters[kSent], 2);
  EXPECT_EQ((*stats)["b"].bytes, 1);
}

TEST(Outbox, SurvivesReopen) {
  testing::TempDir dir;
  {
    auto box = Outbox::Open(dir / "outbox.db", {});
    std::vector<OutboxMessage> batch = {Msg("a", "kept")};
    ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  }
  auto box = Outbox::Open(dir / "outbox.db", {});
  auto a = (*box)->Next("a", 0, 10);
  ASSERT_EQ(a->size(), 1u);
  EXPECT_EQ((*a)[0].payload, "kept");
  EXPECT_EQ((*box)->total_bytes(), 4);
}

// Seqs keep increasing across a reopen, also after every message was
// acknowledged (the table is empty then).
TEST(Outbox, SeqsKeepIncreasingAcrossAReopen) {
  testing::TempDir dir;
  int64_t last = 0;
  {
    auto box = Outbox::Open(dir / "outbox.db", {});
    std::vector<OutboxMessage> batch = {Msg("a", "1"), Msg("a", "2")};
    ASSERT_TRUE((*box)->Commit(batch, {}).ok());
    last = batch[1].seq;
    ASSERT_TRUE((*box)->Acknowledge({batch[1].seq}).ok());
  }
  auto box = Outbox::Open(dir / "outbox.db", {});
  std::vector<OutboxMessage> batch = {Msg("a", "3")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  EXPECT_GT(batch[0].seq, last);
}

// An outbox written when seq was AUTOINCREMENT moves to the plain table on
// open: its messages, their order and bytes kept, and new seqs come after
// every seq handed out before (sqlite_sequence), not only the ones left.
TEST(Outbox, OpensAnOutboxWithAnAutoincrementSeq) {
  testing::TempDir dir;
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "outbox.db").c_str(), &raw), SQLITE_OK);
    std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, sqlite3_close);
    const char* old = R"sql(
      CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL,
        topic TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
      CREATE INDEX messages_identity ON messages(identity, seq);
      INSERT INTO messages (identity, topic, payload, created_ms) VALUES
        ('a', 'dt/a/t', 'a1', 1000), ('b', 'dt/b/t', 'b1', 1000), ('a', 'dt/a/t', 'a2', 1000),
        ('a', 'dt/a/t', 'gone', 1000);
      DELETE FROM messages WHERE payload = 'gone';
    )sql";
    ASSERT_EQ(sqlite3_exec(raw, old, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(raw);
  }
  {
    // Moved on this open; closed before any new message (sqlite_sequence,
    // dropped with the old table, must not be needed after).
    auto moved = Outbox::Open(dir / "outbox.db", {});
    ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  }
  auto box = Outbox::Open(dir / "outbox.db", {});
  ASSERT_TRUE(box.ok()) << box.status().ToString();
  auto a = (*box)->Next("a", 0, 10);
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].payload, "a1");
  EXPECT_EQ((*a)[1].payload, "a2");
  EXPECT_EQ((*box)->total_bytes(), 6);
  std::vector<OutboxMessage> batch = {Msg("a", "a3")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  EXPECT_EQ(batch[0].seq, 5);  // 4 was handed out before (and deleted)
  ASSERT_TRUE((*box)->Acknowledge({(*a)[0].seq, (*a)[1].seq}).ok());
  EXPECT_EQ((*box)->Next("a", 0, 10)->size(), 1u);

  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "outbox.db").c_str(), &raw), SQLITE_OK);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, sqlite3_close);
  auto s = sqlite::Prepare(raw, "SELECT sql FROM sqlite_master WHERE name = 'messages'");
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(sqlite3_step(s->get()), SQLITE_ROW);
  EXPECT_EQ(sqlite::Text(s->get(), 0).find("AUTOINCREMENT"), std::string::npos);
}

TEST(Outbox, WhenFullDropOldestCountsEveryDrop) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 10;
  auto box = Outbox::Open(dir / "outbox.db", limits);
  std::vector<OutboxMessage> batch = {Msg("a", "12345"), Msg("b", "12345")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  std::vector<OutboxMessage> more = {Msg("a", "abc")};
  ASSERT_TRUE((*box)->Commit(more, {}).ok());
  auto a = (*box)->Next("a", 0, 10);
  ASSERT_EQ(a->size(), 1u);
  EXPECT_EQ((*a)[0].payload, "abc");
  auto stats = ReadOutboxStats(dir / "outbox.db");
  EXPECT_EQ((*stats)["a"].counters[kDroppedFull], 1);
  EXPECT_LE((*box)->total_bytes(), 10);
}

TEST(Outbox, WhenFullRejectNewKeepsWhatIsThere) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 10;
  limits.on_full = OnFull::kRejectNew;
  auto box = Outbox::Open(dir / "outbox.db", limits);
  std::vector<OutboxMessage> batch = {Msg("a", "12345"), Msg("a", "12345"), Msg("a", "x")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  auto a = (*box)->Next("a", 0, 10);
  ASSERT_EQ(a->size(), 2u);
  auto stats = ReadOutboxStats(dir / "outbox.db");
  EXPECT_EQ((*stats)["a"].counters[kRejectedFull], 1);
}

TEST(Outbox, ExpiresByAgeAndCounts) {
  testing::TempDir dir;
  OutboxLimits limits;
  limits.max_age = std::chrono::minutes(1);
  auto box = Outbox::Open(dir / "outbox.db", limits);
  std::vector<OutboxMessage> batch = {Msg("a", "old", 1000), Msg("a", "new", 100000)};
  ASSERT_TRUE((*box)->Commit(batch, {{{"a", kRejectedLimit}, 2}}).ok());
  auto expired = (*box)->Expire(100000);
  ASSERT_TRUE(expired.ok());
  EXPECT_EQ(*expired, 1);
  auto stats = ReadOutboxStats(dir / "outbox.db");
  EXPECT_EQ((*stats)["a"].counters[kDroppedAge], 1);
  EXPECT_EQ((*stats)["a"].counters[kRejectedLimit], 2);
  EXPECT_EQ((*stats)["a"].messages, 1);
}

// Acknowledged seqs are deleted by runs: a message between two acknowledged
// ones that is not acknowledged itself stays, and so does a gone seq's room.
TEST(Outbox, AcknowledgesWithNewMessagesInOneCommitAndKeepsTheUnacknowledged) {
  testing::TempDir dir;
  auto box = Outbox::Open(dir / "outbox.db", {});
  std::vector<OutboxMessage> batch = {Msg("a", "a1"), Msg("b", "b1"), Msg("a", "a2"),
                                      Msg("b", "b2"), Msg("a", "a3")};
  ASSERT_TRUE((*box)->Commit(batch, {}).ok());
  std::vector<OutboxMessage> more = {Msg("c", "c1")};
  // b2 is still in flight; a3 twice and a seq that never existed change nothing.
  std::vector<int64_t> acked = {batch[4].seq, batch[0].seq, batch[1].seq,
                                batch[2].seq, batch[4].seq, batch[4].seq + 100};
  ASSERT_TRUE((*box)->Commit(more, {}, acked).ok());
  EXPECT_EQ((*box)->Next("a", 0, 10)->size(), 0u);
  auto b = (*box)->Next("b", 0, 10);
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0].payload, "b2");
  EXPECT_EQ((*box)->Next("c", 0, 10)->size(), 1u);
  EXPECT_EQ((*box)->total_bytes(), 4);  // "b2" and "c1"
  auto stats = ReadOutboxStats(dir / "outbox.db");
  EXPECT_EQ((*stats)["a"].counters[kSent], 3);
  EXPECT_EQ((*stats)["b"].counters[kSent], 1);
  EXPECT_EQ((*stats)["b"].messages, 1);
}

}  // namespace
}  // namespace ga::bridge
