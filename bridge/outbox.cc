#include "gateway_agent/bridge/outbox.h"

#include <algorithm>
#include <string_view>

#include "gateway_agent/log.h"
#include "gateway_agent/sqlite.h"
#include "outbox_holdings.h"

namespace ga::bridge {

namespace {

using sqlite::BindText;
using sqlite::Stmt;
using sqlite::Text;
using sqlite::Transaction;

Status SqliteError(const sqlite::Database& db, std::string_view what) {
  return db.Error("outbox: " + std::string(what));
}

// The outcome of BEGIN, named as the outbox's.
Status Begun(const Transaction& tx) {
  return tx.begun().ok() ? Status::Ok() : Status(tx.begun()).With("outbox");
}

// seq is handed out by Outbox (next_seq_), not by AUTOINCREMENT, which would
// write sqlite_sequence once more for every message.
#define GA_MESSAGES_COLUMNS                                                 \
  "(seq INTEGER PRIMARY KEY, identity TEXT NOT NULL, topic TEXT NOT NULL, " \
  "payload BLOB NOT NULL, created_ms INTEGER NOT NULL)"

constexpr const char* kSchema = "CREATE TABLE IF NOT EXISTS messages " GA_MESSAGES_COLUMNS
                                ";"
                                R"sql(
  CREATE INDEX IF NOT EXISTS messages_identity ON messages(identity, seq);
  CREATE TABLE IF NOT EXISTS counters (
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (identity, name)
  );
  CREATE TABLE IF NOT EXISTS connections (
    identity TEXT PRIMARY KEY,
    connected INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS unknown_senders (
    id TEXT PRIMARY KEY,
    messages INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS last_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
  );
)sql";

}  // namespace

Outbox::Outbox(std::unique_ptr<sqlite::Database> db, OutboxLimits limits)
    : db_(std::move(db)), limits_(limits), holdings_(std::make_unique<OutboxHoldings>()) {}

Result<std::unique_ptr<Outbox>> Outbox::Open(const std::filesystem::path& path,
                                             const OutboxLimits& limits) {
  sqlite::OpenOptions options;
  options.durability = limits.fsync_every_commit ? sqlite::Durability::kPowerLoss
                                                 : sqlite::Durability::kProcessCrash;
  GA_ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                      sqlite::Database::Open(path, options).With("outbox"));
  std::unique_ptr<Outbox> box(new Outbox(std::move(db), limits));
  GA_ASSIGN_OR_RETURN(int64_t sequence, box->ReadSqliteSequence());
  // In one transaction: `check` reading the file meanwhile sees every table
  // or none.
  GA_RETURN_IF_ERROR(box->Exec((std::string("BEGIN IMMEDIATE;") + kSchema + "COMMIT;").c_str()));
  if (Status m = box->DropAutoincrement(sequence); !m.ok()) {
    // Not fatal: seqs given by the Outbox go into the old table as well.
    log::Warning("outbox " + path.string() + ": keeping the old messages table (" + m.message() +
                 "); the agent runs with it, a little slower");
  }
  GA_RETURN_IF_ERROR(box->Exec("DELETE FROM connections"));
  {
    GA_ASSIGN_OR_RETURN(
        Stmt m, box->db_->Prepare("SELECT MAX(COALESCE((SELECT MAX(seq) FROM messages), 0), "
                                  "COALESCE((SELECT seq FROM last_seq), 0))"));
    if (sqlite3_step(m.get()) == SQLITE_ROW)
      sequence = std::max<int64_t>(sequence, sqlite3_column_int64(m.get(), 0));
    box->next_seq_ = sequence + 1;
  }
  GA_RETURN_IF_ERROR(box->LoadHoldings());
  return box;
}

// What each identity holds is not stored: it is read back on open.
Status Outbox::LoadHoldings() {
  holdings_->ClearAll();
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT identity, SUM(LENGTH(payload)) FROM messages "
                                           "GROUP BY identity"));
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    holdings_->Add(Text(s.get(), 0), sqlite3_column_int64(s.get(), 1));
  }
  if (rc != SQLITE_DONE) return SqliteError(*db_, "read what each sensor holds");
  return Status::Ok();
}

// The last seq AUTOINCREMENT handed out, in an outbox written before seq was
// handed out by Outbox (0 if none): seqs stay increasing across the change.
Result<int64_t> Outbox::ReadSqliteSequence() {
  GA_ASSIGN_OR_RETURN(Stmt t,
                      db_->Prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                                   "AND name = 'sqlite_sequence'"));
  if (sqlite3_step(t.get()) != SQLITE_ROW || sqlite3_column_int64(t.get(), 0) == 0) return 0;
  GA_ASSIGN_OR_RETURN(Stmt s,
                      db_->Prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'"));
  return sqlite3_step(s.get()) == SQLITE_ROW ? sqlite3_column_int64(s.get(), 0) : 0;
}

// An outbox written before seq was handed out by Outbox declares it
// AUTOINCREMENT: its messages move to a table without, once, in one
// transaction (order and seqs kept), and `sequence`, the last seq
// AUTOINCREMENT handed out (its sqlite_sequence row goes with the table),
// is kept in last_seq.
Status Outbox::DropAutoincrement(int64_t sequence) {
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                                           "name = 'messages'"));
  if (sqlite3_step(s.get()) != SQLITE_ROW ||
      Text(s.get(), 0).find("AUTOINCREMENT") == std::string::npos) {
    return Status::Ok();
  }
  s.reset();
  Transaction tx(*db_);
  GA_RETURN_IF_ERROR(Begun(tx));
  GA_RETURN_IF_ERROR(Exec("CREATE TABLE messages_new " GA_MESSAGES_COLUMNS));
  GA_ASSIGN_OR_RETURN(
      Stmt last, db_->Prepare("INSERT INTO last_seq (id, seq) VALUES (1, MAX(?1, COALESCE((SELECT "
                              "MAX(seq) FROM messages), 0))) ON CONFLICT(id) DO UPDATE SET seq = "
                              "MAX(seq, excluded.seq)"));
  sqlite3_bind_int64(last.get(), 1, sequence);
  if (sqlite3_step(last.get()) != SQLITE_DONE) return SqliteError(*db_, "store the last seq");
  last.reset();
  GA_RETURN_IF_ERROR(Exec(
      "INSERT INTO messages_new SELECT seq, identity, topic, payload, created_ms FROM messages;"
      "DROP TABLE messages;"
      "ALTER TABLE messages_new RENAME TO messages;"
      "CREATE INDEX messages_identity ON messages(identity, seq);"));
  return tx.Commit();
}

Outbox::~Outbox() = default;

Status Outbox::Exec(const char* sql) {
  return db_->Exec(sql).With("outbox");
}

constexpr const char* kCountSql =
    "INSERT INTO counters (identity, name, value) VALUES (?1, ?2, ?3) ON CONFLICT(identity, "
    "name) DO UPDATE SET value = value + excluded.value";
constexpr const char* kInsertSql =
    "INSERT INTO messages (seq, identity, topic, payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
constexpr const char* kLastSeqSql =
    "INSERT INTO last_seq (id, seq) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET seq = "
    "excluded.seq";
constexpr const char* kNextSql =
    "SELECT seq, topic, payload, created_ms FROM messages WHERE identity = ?1 AND seq > ?2 "
    "ORDER BY seq LIMIT ?3";
// Read, then deleted: cheaper than DELETE ... RETURNING, which first copies
// the rows it returns into a temporary table.
constexpr const char* kAckedSql =
    "SELECT identity, LENGTH(payload) FROM messages WHERE seq BETWEEN ?1 AND ?2";
constexpr const char* kDeleteSql = "DELETE FROM messages WHERE seq BETWEEN ?1 AND ?2";

Status Outbox::Count(const std::string& identity, const char* name, int64_t n) {
  if (n == 0) return Status::Ok();
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * s, db_->Cached(kCountSql));
  BindText(s, 1, identity);
  BindText(s, 2, name);
  sqlite3_bind_int64(s, 3, n);
  if (sqlite3_step(s) != SQLITE_DONE) return SqliteError(*db_, "count");
  return Status::Ok();
}

Status Outbox::Commit(std::vector<OutboxMessage>& messages,
                      const std::map<std::pair<std::string, std::string>, int64_t>& counts,
                      const std::vector<int64_t>& acked) {
  if (messages.empty() && counts.empty() && acked.empty()) return Status::Ok();
  Transaction tx(*db_);
  GA_RETURN_IF_ERROR(Begun(tx));
  holdings_->Begin();
  std::map<std::string, FullLoss> losses;
  Status s = Write(messages, counts, acked, &losses);
  if (s.ok()) s = tx.Commit();
  if (!s.ok()) {
    holdings_->Undo();
    return s;
  }
  holdings_->Keep();
  for (const auto& [identity, loss] : losses) {
    FullLoss& all = full_losses_[identity];
    all.dropped += loss.dropped;
    all.rejected += loss.rejected;
  }
  return Status::Ok();
}

Status Outbox::Write(std::vector<OutboxMessage>& messages,
                     const std::map<std::pair<std::string, std::string>, int64_t>& counts,
                     const std::vector<int64_t>& acked, std::map<std::string, FullLoss>* losses) {
  // Acknowledged messages go first: their room counts for the size bound.
  GA_RETURN_IF_ERROR(DeleteAcked(acked));
  uint64_t incoming = 0;
  for (const auto& m : messages) incoming += m.payload.size();
  if (limits_.on_full == OnFull::kRejectNew &&
      static_cast<uint64_t>(holdings_->total()) + incoming > limits_.max_bytes) {
    Admit(messages, losses);
  } else {
    for (const auto& m : messages) {
      holdings_->Add(m.identity, static_cast<int64_t>(m.payload.size()));
    }
  }
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * insert, db_->Cached(kInsertSql));
  for (auto& m : messages) {
    sqlite3_reset(insert);
    sqlite3_bind_int64(insert, 1, next_seq_);
    // SQLITE_STATIC: m outlives the step, and the next use rebinds.
    sqlite3_bind_text(insert, 2, m.identity.data(), static_cast<int>(m.identity.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(insert, 3, m.topic.data(), static_cast<int>(m.topic.size()), SQLITE_STATIC);
    sqlite3_bind_blob(insert, 4, m.payload.data(), static_cast<int>(m.payload.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(insert, 5, m.created_ms);
    if (sqlite3_step(insert) != SQLITE_DONE) {
      Status error = SqliteError(*db_, "append");
      sqlite3_reset(insert);
      sqlite3_clear_bindings(insert);
      return error;
    }
    m.seq = next_seq_++;  // a rolled-back commit leaves a gap: seqs only increase
  }
  // Its SQLITE_STATIC bindings point into `messages`.
  sqlite3_reset(insert);
  sqlite3_clear_bindings(insert);
  if (!messages.empty()) {
    // Once per commit: seqs keep increasing after a restart, also once every
    // message has been deleted.
    GA_ASSIGN_OR_RETURN(sqlite3_stmt * last, db_->Cached(kLastSeqSql));
    sqlite3_bind_int64(last, 1, next_seq_ - 1);
    if (sqlite3_step(last) != SQLITE_DONE) return SqliteError(*db_, "store the last seq");
  }
  if (static_cast<uint64_t>(holdings_->total()) > limits_.max_bytes) {
    GA_RETURN_IF_ERROR(DropOverShare(messages, losses));
  }
  for (const auto& [identity, loss] : *losses) {
    GA_RETURN_IF_ERROR(Count(identity, kDroppedFull, loss.dropped));
    GA_RETURN_IF_ERROR(Count(identity, kRejectedFull, loss.rejected));
  }
  for (const auto& [key, n] : counts) GA_RETURN_IF_ERROR(Count(key.first, key.second.c_str(), n));
  return Status::Ok();
}

Result<std::vector<OutboxMessage>> Outbox::Next(const std::string& identity, int64_t after,
                                                int limit) {
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * s, db_->Cached(kNextSql));
  BindText(s, 1, identity);
  sqlite3_bind_int64(s, 2, after);
  sqlite3_bind_int(s, 3, limit);
  std::vector<OutboxMessage> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    OutboxMessage m;
    m.seq = sqlite3_column_int64(s, 0);
    m.identity = identity;
    m.topic = Text(s, 1);
    const void* blob = sqlite3_column_blob(s, 2);
    int len = sqlite3_column_bytes(s, 2);
    if (blob && len > 0) m.payload.assign(static_cast<const char*>(blob), static_cast<size_t>(len));
    m.created_ms = sqlite3_column_int64(s, 3);
    out.push_back(std::move(m));
  }
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) return SqliteError(*db_, "read next messages of " + identity);
  return out;
}

Status Outbox::DeleteAcked(const std::vector<int64_t>& seqs) {
  if (seqs.empty()) return Status::Ok();
  // One DELETE per run of consecutive seqs: every seq of a run is
  // acknowledged, so a range never takes a message still unacknowledged.
  // Runs are long: seqs are handed out in order, PUBACKs come in order per
  // connection, and a batch holds the acks of every connection.
  std::vector<int64_t> sorted(seqs);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * s, db_->Cached(kAckedSql));
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * d, db_->Cached(kDeleteSql));
  std::map<std::string, std::pair<int64_t, int64_t>, std::less<>> sent;  // messages, bytes
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, sorted[i]);
    sqlite3_bind_int64(s, 2, sorted[j - 1]);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      const auto* id = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
      std::string_view identity = id ? std::string_view(id) : std::string_view();
      auto it = sent.find(identity);
      if (it == sent.end()) it = sent.emplace(std::string(identity), std::pair{0, 0}).first;
      ++it->second.first;
      it->second.second += sqlite3_column_int64(s, 1);
    }
    if (rc == SQLITE_DONE) {
      sqlite3_reset(s);
      sqlite3_reset(d);
      sqlite3_bind_int64(d, 1, sorted[i]);
      sqlite3_bind_int64(d, 2, sorted[j - 1]);
      rc = sqlite3_step(d);
    }
    if (rc != SQLITE_DONE) {
      Status error = SqliteError(*db_, "acknowledge");  // before a reset clears the message
      sqlite3_reset(s);
      sqlite3_reset(d);
      return error;
    }
    sqlite3_reset(d);
    i = j;
  }
  for (const auto& [identity, nb] : sent) {
    GA_RETURN_IF_ERROR(Count(identity, kSent, nb.first));
    holdings_->Add(identity, -nb.second);
  }
  return Status::Ok();
}

Status Outbox::Acknowledge(const std::vector<int64_t>& seqs) {
  std::vector<OutboxMessage> none;
  return Commit(none, {}, seqs);
}

Result<int64_t> Outbox::Expire(int64_t now_ms) {
  int64_t cutoff = now_ms - limits_.max_age.count();
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT identity, COUNT(*), SUM(LENGTH(payload)) FROM "
                                           "messages WHERE created_ms < ?1 GROUP BY identity"));
  sqlite3_bind_int64(s.get(), 1, cutoff);
  std::map<std::string, std::pair<int64_t, int64_t>> expired;
  while (sqlite3_step(s.get()) == SQLITE_ROW) {
    expired[Text(s.get(), 0)] = {sqlite3_column_int64(s.get(), 1),
                                 sqlite3_column_int64(s.get(), 2)};
  }
  s.reset();
  if (expired.empty()) return int64_t{0};
  Transaction tx(*db_);
  GA_RETURN_IF_ERROR(Begun(tx));
  GA_ASSIGN_OR_RETURN(Stmt d, db_->Prepare("DELETE FROM messages WHERE created_ms < ?1"));
  sqlite3_bind_int64(d.get(), 1, cutoff);
  if (sqlite3_step(d.get()) != SQLITE_DONE) return SqliteError(*db_, "expire");
  int64_t total = 0;
  for (const auto& [identity, nb] : expired) {
    GA_RETURN_IF_ERROR(Count(identity, kDroppedAge, nb.first));
    total += nb.first;
  }
  GA_RETURN_IF_ERROR(tx.Commit());
  for (const auto& [identity, nb] : expired) holdings_->Add(identity, -nb.second);
  return total;
}

Status Outbox::Forget(const std::string& identity) {
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare("DELETE FROM messages WHERE identity = ?1"));
  BindText(s.get(), 1, identity);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return SqliteError(*db_, "forget " + identity);
  holdings_->Clear(identity);
  return Status::Ok();
}

Status Outbox::RecordUnknownSenders(int64_t dropped, const std::vector<UnknownSender>& recent) {
  sqlite::Transaction tx(*db_);
  GA_RETURN_IF_ERROR(tx.begun());
  GA_RETURN_IF_ERROR(Count(kUnknownSenders, kDroppedUnknown, dropped));
  GA_ASSIGN_OR_RETURN(Stmt up, db_->Prepare("INSERT INTO unknown_senders (id, messages, last_ms) "
                                            "VALUES (?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET "
                                            "messages = messages + excluded.messages, "
                                            "last_ms = excluded.last_ms"));
  for (const UnknownSender& u : recent) {
    BindText(up.get(), 1, u.id);
    sqlite3_bind_int64(up.get(), 2, u.messages);
    sqlite3_bind_int64(up.get(), 3, u.last_ms);
    if (sqlite3_step(up.get()) != SQLITE_DONE) return SqliteError(*db_, "record unknown senders");
    sqlite3_reset(up.get());
  }
  GA_ASSIGN_OR_RETURN(Stmt trim,
                      db_->Prepare("DELETE FROM unknown_senders WHERE id NOT IN (SELECT id FROM "
                                   "unknown_senders ORDER BY last_ms DESC LIMIT ?1)"));
  sqlite3_bind_int64(trim.get(), 1, static_cast<int64_t>(kUnknownSendersKept));
  if (sqlite3_step(trim.get()) != SQLITE_DONE) return SqliteError(*db_, "trim unknown senders");
  return tx.Commit();
}

Status Outbox::SetConnected(const std::string& identity, bool connected) {
  GA_ASSIGN_OR_RETURN(Stmt s,
                      db_->Prepare("INSERT INTO connections (identity, connected) VALUES "
                                   "(?1, ?2) ON CONFLICT(identity) DO UPDATE SET connected = "
                                   "excluded.connected"));
  BindText(s.get(), 1, identity);
  sqlite3_bind_int(s.get(), 2, connected ? 1 : 0);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return SqliteError(*db_, "connection state");
  return Status::Ok();
}

Result<std::map<std::string, IdentityOutboxStats>> ReadOutboxStats(
    const std::filesystem::path& path) {
  std::map<std::string, IdentityOutboxStats> out;
  auto db = sqlite::Database::Open(path, {.read_only = true});
  if (!db.ok()) {
    if (db.status().code() == Code::kNotFound) return out;  // no outbox yet: nothing bridged
    return std::move(db).take_status().With("outbox " + path.string());
  }
  {
    GA_ASSIGN_OR_RETURN(Stmt s, (*db)->Prepare("SELECT identity, COUNT(*), SUM(LENGTH(payload)), "
                                               "MIN(created_ms) FROM messages GROUP BY identity"));
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      auto& st = out[Text(s.get(), 0)];
      st.messages = sqlite3_column_int64(s.get(), 1);
      st.bytes = sqlite3_column_int64(s.get(), 2);
      st.oldest_ms = sqlite3_column_int64(s.get(), 3);
    }
  }
  {
    GA_ASSIGN_OR_RETURN(Stmt s, (*db)->Prepare("SELECT identity, name, value FROM counters"));
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      out[Text(s.get(), 0)].counters[Text(s.get(), 1)] = sqlite3_column_int64(s.get(), 2);
    }
  }
  {
    GA_ASSIGN_OR_RETURN(Stmt s, (*db)->Prepare("SELECT identity, connected FROM connections"));
    while (sqlite3_step(s.get()) == SQLITE_ROW) {
      out[Text(s.get(), 0)].connected = sqlite3_column_int(s.get(), 1) != 0;
    }
  }
  return out;
}

Result<UnknownSenderReport> ReadUnknownSenders(const std::filesystem::path& path) {
  UnknownSenderReport out;
  auto db = sqlite::Database::Open(path, {.read_only = true});
  if (!db.ok()) {
    if (db.status().code() == Code::kNotFound) return out;  // no outbox yet
    return std::move(db).take_status().With("outbox " + path.string());
  }
  {
    GA_ASSIGN_OR_RETURN(Stmt s, (*db)->Prepare("SELECT value FROM counters WHERE identity = ?1 "
                                               "AND name = ?2"));
    BindText(s.get(), 1, kUnknownSenders);
    BindText(s.get(), 2, kDroppedUnknown);
    if (sqlite3_step(s.get()) == SQLITE_ROW) out.dropped = sqlite3_column_int64(s.get(), 0);
  }
  // An outbox from before the table existed has none.
  GA_ASSIGN_OR_RETURN(Stmt t, (*db)->Prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = "
                                             "'table' AND name = 'unknown_senders'"));
  if (sqlite3_step(t.get()) != SQLITE_ROW || sqlite3_column_int64(t.get(), 0) == 0) return out;
  GA_ASSIGN_OR_RETURN(Stmt s, (*db)->Prepare("SELECT id, messages, last_ms FROM unknown_senders "
                                             "ORDER BY last_ms DESC, id"));
  while (sqlite3_step(s.get()) == SQLITE_ROW) {
    out.recent.push_back(
        {Text(s.get(), 0), sqlite3_column_int64(s.get(), 1), sqlite3_column_int64(s.get(), 2)});
  }
  return out;
}

}  // namespace ga::bridge
