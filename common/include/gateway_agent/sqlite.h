// The one way the project uses SQLite: a database opened with the project's
// flags and pragmas, statements owned from the line they are prepared, and
// errors carrying SQLite's own text. Used by the identity store (agent/) and
// the outbox (bridge/); their public headers only name sqlite::Database.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga::sqlite {

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// "<what>: <sqlite's message for db>" as an I/O error; InvalidArgument when
// the file is not a database or is corrupt (a restart does not fix that).
Status Error(sqlite3* db, std::string_view what);

// Every prepare is checked: "prepare <sql>: <sqlite's message>".
Result<Stmt> Prepare(sqlite3* db, const char* sql);

void BindText(sqlite3_stmt* s, int i, std::string_view v);
// Column `col` as text; "" for NULL.
std::string Text(sqlite3_stmt* s, int col);

// What a commit survives (PRAGMA synchronous in WAL mode).
enum class Durability {
  kProcessCrash,  // NORMAL: the process being killed
  kPowerLoss,     // FULL: also a power cut (an fsync per commit)
};

struct OpenOptions {
  // Read-only opens an existing file and sets no pragma. Read-write creates
  // the file if needed (it and its -wal/-shm files with mode 0600) and puts
  // it in WAL mode with `durability`.
  bool read_only = false;
  Durability durability = Durability::kProcessCrash;
  // SQLITE_OPEN_FULLMUTEX, for a connection used from several threads.
  bool serialized = false;
  // How long a statement waits for another connection's lock.
  std::chrono::milliseconds busy_timeout{5000};
};

// An open connection. Not thread-safe unless opened `serialized`, and even
// then a Cached statement belongs to one caller at a time.
class Database {
 public:
  // Fails with "open <path>: <sqlite's message>": NotFound when the file (or
  // its directory) does not exist, Io otherwise.
  static Result<std::unique_ptr<Database>> Open(const std::filesystem::path& path,
                                                const OpenOptions& options);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs SQL without results (several statements allowed). The error is
  // SQLite's message after the file's path (Io; InvalidArgument as for Error).
  Status Exec(const char* sql);
  Status Exec(const std::string& sql) { return Exec(sql.c_str()); }

  Result<Stmt> Prepare(const char* sql) { return sqlite::Prepare(db_, sql); }
  Result<Stmt> Prepare(const std::string& sql) { return Prepare(sql.c_str()); }

  // A statement prepared on first use and kept until the Database closes,
  // keyed by the address of `sql` (a constant); handed out reset, with its
  // bindings cleared. For statements on a hot path.
  Result<sqlite3_stmt*> Cached(const char* sql);

  // "<what> (<file>): <sqlite's message for the last failure>", coded as for
  // sqlite::Error.
  Status Error(std::string_view what) const { return sqlite::Error(db_, what); }

  // Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t changes() const { return sqlite3_changes64(db_); }

 private:
  explicit Database(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  std::map<const char*, Stmt> cache_;
};

// BEGIN IMMEDIATE when built; rolled back when destroyed uncommitted.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // The outcome of BEGIN ("begin: ..."): check it before using the transaction.
  const Status& begun() const { return begun_; }
  Status Commit();

 private:
  Database& db_;
  Status begun_;
  bool done_ = false;
};

}  // namespace ga::sqlite
