#include "gateway_agent/bridge/outbox.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>

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

// An outbox bounded to `max_bytes`; null (and a failure) when it cannot open.
std::unique_ptr<Outbox> OpenLimited(const std::filesystem::path& db, uint64_t max_bytes,
                                    OnFull on_full = OnFull::kDropOldest) {
  OutboxLimits limits;
  limits.max_bytes = max_bytes;
  limits.on_full = on_full;
  auto box = Outbox::Open(db, limits);
  EXPECT_TRUE(box.ok()) << box.status().ToString();
  return box.ok() ? std::move(*box) : nullptr;
}

// The payloads of `identity` in the outbox, in order.
std::vector<std::string> Payloads(Outbox& box, const std::string& identity) {
  std::vector<std::string> out;
  auto next = box.Next(identity, 0, 100000);
  EXPECT_TRUE(next.ok()) << next.status().ToString();
  if (next.ok()) {
    for (const auto& m : *next) out.push_back(m.payload);
  }
  return out;
}

// "<identity>-<n>" for n in [from, to), each padded to 10 bytes.
std::vector<std::string> Numbered(const std::string& identity, int from, int to) {
  std::vector<std::string> out;
  for (int n = from; n < to; ++n) {
    std::string p = identity + "-" + std::to_string(n);
    p.resize(10, '.');
    out.push_back(p);
  }
  return out;
}

// Commits `payloads` of `identity`, `per_commit` at a time.
void Send(Outbox& box, const std::string& identity, const std::vector<std::string>& payloads,
          size_t per_commit = 10) {
  for (size_t i = 0; i < payloads.size(); i += per_commit) {
    std::vector<OutboxMessage> batch;
    for (size_t j = i; j < std::min(payloads.size(), i + per_commit); ++j) {
      batch.push_back(Msg(identity, payloads[j]));
    }
    ASSERT_TRUE(box.Commit(batch, {}).ok());
  }
}

int64_t Counter(const std::filesystem::path& db, const std::string& identity, const char* name) {
  auto stats = ReadOutboxStats(db);
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  if (!stats.ok()) return -1;
  auto& counters = (*stats)[identity].counters;
  auto it = counters.find(name);
  return it == counters.end() ? 0 : it->second;
}

// The sum of what each sensor holds is the outbox's total.
void ExpectHeldAddsUp(Outbox& box, const std::vector<std::string>& identities) {
  int64_t sum = 0;
  for (const auto& id : identities) {
    int64_t bytes = 0;
    for (const auto& p : Payloads(box, id)) bytes += static_cast<int64_t>(p.size());
    EXPECT_EQ(box.held(id), bytes) << id;
    sum += bytes;
  }
  EXPECT_EQ(box.total_bytes(), sum);
}

// s1 floods while s2 and s3 hold a few messages: only s1's oldest go, each
// counted, and what it keeps is its newest.
TEST(Outbox, AFloodingSensorLosesOnlyItsOwnOldestMessages) {
  testing::TempDir dir;
  auto box = OpenLimited(dir / "outbox.db", 1000);
  ASSERT_TRUE(box);
  Send(*box, "s2", Numbered("s2", 0, 3));
  Send(*box, "s3", Numbered("s3", 0, 3));
  Send(*box, "s1", Numbered("s1", 0, 150));
  Send(*box, "s2", Numbered("s2", 3, 6), 1);
  Send(*box, "s1", Numbered("s1", 150, 200), 25);

  EXPECT_EQ(Payloads(*box, "s2"), Numbered("s2", 0, 6));
  EXPECT_EQ(Payloads(*box, "s3"), Numbered("s3", 0, 3));
  auto s1 = Payloads(*box, "s1");
  int kept = static_cast<int>(s1.size());
  EXPECT_EQ(kept, (1000 - 90) / 10);
  EXPECT_EQ(s1, Numbered("s1", 200 - kept, 200));
  EXPECT_EQ(box->total_bytes(), 1000);
  ExpectHeldAddsUp(*box, {"s1", "s2", "s3"});

  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kDroppedFull), 200 - kept);
  EXPECT_EQ(Counter(dir / "outbox.db", "s2", kDroppedFull), 0);
  EXPECT_EQ(Counter(dir / "outbox.db", "s3", kDroppedFull), 0);
  auto losses = box->TakeFullLosses();
  ASSERT_EQ(losses.size(), 1u);
  EXPECT_EQ(losses["s1"].dropped, 200 - kept);
  EXPECT_EQ(losses["s1"].rejected, 0);
  EXPECT_TRUE(box->TakeFullLosses().empty());
}

// Two sensors flooding share what the others leave, evenly (to one message).
TEST(Outbox, TwoFloodingSensorsAreFairToEachOther) {
  testing::TempDir dir;
  auto box = OpenLimited(dir / "outbox.db", 1000);
  ASSERT_TRUE(box);
  Send(*box, "s3", Numbered("s3", 0, 4));
  Send(*box, "s1", Numbered("s1", 0, 120));
  Send(*box, "s2", Numbered("s2", 0, 120));
  EXPECT_EQ(Payloads(*box, "s3"), Numbered("s3", 0, 4));
  EXPECT_LE(std::abs(box->held("s1") - box->held("s2")), 10);
  EXPECT_EQ(box->held("s1") + box->held("s2"), 1000 - 40);
  EXPECT_EQ(Payloads(*box, "s2").back(), Numbered("s2", 119, 120)[0]);
  ExpectHeldAddsUp(*box, {"s1", "s2", "s3"});
  EXPECT_EQ(Counter(dir / "outbox.db", "s3", kDroppedFull), 0);
  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kDroppedFull) +
                Counter(dir / "outbox.db", "s2", kDroppedFull),
            240 - 96);
}

// A batch bigger than the bound keeps the newest of it: the messages dropped
// within the commit are not handed back as committed.
TEST(Outbox, ABatchOverTheBoundHandsBackOnlyWhatItKept) {
  testing::TempDir dir;
  auto box = OpenLimited(dir / "outbox.db", 100);
  ASSERT_TRUE(box);
  std::vector<OutboxMessage> batch;
  for (const auto& p : Numbered("s1", 0, 15)) batch.push_back(Msg("s1", p));
  ASSERT_TRUE(box->Commit(batch, {}).ok());
  ASSERT_EQ(batch.size(), 10u);
  EXPECT_EQ(batch.front().payload, Numbered("s1", 5, 6)[0]);
  EXPECT_EQ(Payloads(*box, "s1"), Numbered("s1", 5, 15));
  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kDroppedFull), 5);
}

// reject-new: s1 over its share has its new messages rejected; s2 under its
// share still gets in, in place of s1's newest.
TEST(Outbox, RejectNewRefusesTheFloodingSensorAndLetsTheOthersIn) {
  testing::TempDir dir;
  auto box = OpenLimited(dir / "outbox.db", 1000, OnFull::kRejectNew);
  ASSERT_TRUE(box);
  Send(*box, "s2", Numbered("s2", 0, 3));
  Send(*box, "s3", Numbered("s3", 0, 3));
  Send(*box, "s1", Numbered("s1", 0, 200));
  // s1 got in while there was room: 94 messages, then it was over its share.
  EXPECT_EQ(Payloads(*box, "s1"), Numbered("s1", 0, 94));
  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kRejectedFull), 106);
  Send(*box, "s2", Numbered("s2", 3, 8), 1);
  Send(*box, "s3", Numbered("s3", 3, 5));

  EXPECT_EQ(Payloads(*box, "s2"), Numbered("s2", 0, 8));
  EXPECT_EQ(Payloads(*box, "s3"), Numbered("s3", 0, 5));
  EXPECT_EQ(Payloads(*box, "s1"), Numbered("s1", 0, 87));
  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kDroppedFull), 7);
  EXPECT_EQ(Counter(dir / "outbox.db", "s2", kRejectedFull), 0);
  EXPECT_EQ(Counter(dir / "outbox.db", "s3", kRejectedFull), 0);
  EXPECT_EQ(box->total_bytes(), 1000);
  ExpectHeldAddsUp(*box, {"s1", "s2", "s3"});
  auto losses = box->TakeFullLosses();
  EXPECT_EQ(losses.size(), 1u);
  EXPECT_EQ(losses["s1"].rejected, 106);
  EXPECT_EQ(losses["s1"].dropped, 7);
}

// What each sensor holds is read back on open: after a restart the flood
// still costs only the flooding sensor.
TEST(Outbox, AReopenedOutboxKnowsWhatEachSensorHolds) {
  testing::TempDir dir;
  int64_t s1_before = 0;
  {
    auto box = OpenLimited(dir / "outbox.db", 1000);
    ASSERT_TRUE(box);
    Send(*box, "s2", Numbered("s2", 0, 5));
    Send(*box, "s1", Numbered("s1", 0, 120));
    auto s1 = box->Next("s1", 0, 10);
    ASSERT_TRUE(box->Acknowledge({(*s1)[0].seq, (*s1)[1].seq}).ok());
    s1_before = box->held("s1");
  }
  auto box = OpenLimited(dir / "outbox.db", 1000);
  ASSERT_TRUE(box);
  EXPECT_EQ(box->held("s1"), s1_before);
  EXPECT_EQ(box->held("s2"), 50);
  ExpectHeldAddsUp(*box, {"s1", "s2"});
  Send(*box, "s1", Numbered("s1", 120, 140));
  Send(*box, "s2", Numbered("s2", 5, 7));
  EXPECT_EQ(Payloads(*box, "s2"), Numbered("s2", 0, 7));
  EXPECT_EQ(Payloads(*box, "s1").back(), Numbered("s1", 139, 140)[0]);
  EXPECT_EQ(box->total_bytes(), 1000);
  ExpectHeldAddsUp(*box, {"s1", "s2"});
  ASSERT_TRUE(box->Forget("s1").ok());
  EXPECT_EQ(box->held("s1"), 0);
  EXPECT_EQ(box->total_bytes(), 70);
}

// An outbox written by an older version (seq AUTOINCREMENT, no fair share)
// opens with what each sensor holds, and the share applies to its messages.
TEST(Outbox, TheShareAppliesToAnOutboxFromAnOlderVersion) {
  testing::TempDir dir;
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "outbox.db").c_str(), &raw), SQLITE_OK);
    std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, sqlite3_close);
    std::string old = R"sql(
      CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL,
        topic TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
      CREATE INDEX messages_identity ON messages(identity, seq);
      CREATE TABLE counters (identity TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
        PRIMARY KEY (identity, name));
      INSERT INTO messages (identity, topic, payload, created_ms) VALUES
        ('s2', 'dt/s2/t', 's2-0......', 1000), ('s2', 'dt/s2/t', 's2-1......', 1000);
    )sql";
    for (const auto& p : Numbered("s1", 0, 60)) {
      old +=
          "INSERT INTO messages (identity, topic, payload, created_ms) VALUES ('s1', "
          "'dt/s1/t', '" +
          p + "', 1000);";
    }
    ASSERT_EQ(sqlite3_exec(raw, old.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(raw);
  }
  auto box = OpenLimited(dir / "outbox.db", 500);  // smaller than what is there
  ASSERT_TRUE(box);
  EXPECT_EQ(box->held("s1"), 600);
  EXPECT_EQ(box->held("s2"), 20);
  Send(*box, "s2", Numbered("s2", 2, 3));
  EXPECT_EQ(Payloads(*box, "s2"), Numbered("s2", 0, 3));
  EXPECT_EQ(Payloads(*box, "s1"), Numbered("s1", 13, 60));
  EXPECT_EQ(Counter(dir / "outbox.db", "s1", kDroppedFull), 13);
  EXPECT_EQ(box->total_bytes(), 500);
}

}  // namespace
}  // namespace ga::bridge
