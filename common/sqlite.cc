#include "gateway_agent/sqlite.h"

#include <sys/stat.h>

#include <cerrno>

namespace ga::sqlite {

namespace {

// A file that is not a database, or a corrupt one, stays so: a bad file (a
// restart does not help). Anything else: an I/O error.
Code CodeOf(int rc) {
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: return Code::kInvalidArgument;
    default: return Code::kIo;
  }
}

}  // namespace

Status Error(sqlite3* db, std::string_view what) {
  // Every error names the file: "file is not a database" alone says not which.
  const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
  std::string where;
  if (file != nullptr && *file != '\0' && what.find(file) == std::string_view::npos) {
    where = std::string(" (") + file + ")";
  }
  return {CodeOf(sqlite3_errcode(db)), std::string(what) + where + ": " + sqlite3_errmsg(db)};
}

Result<Stmt> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return Error(db, std::string("prepare ") + sql);
  }
  return Stmt(raw);
}

void BindText(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

std::string Text(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t ? reinterpret_cast<const char*>(t) : "";
}

Result<std::unique_ptr<Database>> Database::Open(const std::filesystem::path& path,
                                                 const OpenOptions& options) {
  int flags = options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if (options.serialized) flags |= SQLITE_OPEN_FULLMUTEX;
  sqlite3* raw = nullptr;
  mode_t old = umask(077);  // a new database and its -wal/-shm files: 0600
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  umask(old);
  // Even a failed open returns a handle (for its message) to be closed.
  std::unique_ptr<Database> db(new Database(raw));
  if (rc != SQLITE_OK) {
    Status s = sqlite::Error(raw, "open " + path.string());
    if (sqlite3_system_errno(raw) == ENOENT) return Status(Code::kNotFound, s.message());
    return s;
  }
  sqlite3_busy_timeout(raw, static_cast<int>(options.busy_timeout.count()));
  if (!options.read_only) {
    GA_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
    GA_RETURN_IF_ERROR(db->Exec(options.durability == Durability::kPowerLoss
                                    ? "PRAGMA synchronous=FULL"
                                    : "PRAGMA synchronous=NORMAL"));
  }
  return db;
}

Database::~Database() {
  cache_.clear();  // statements first: close_v2 would keep the connection for them
  sqlite3_close_v2(db_);
}

Status Database::Exec(const char* sql) {
  char* err = nullptr;
  if (int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err); rc != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    const char* file = sqlite3_db_filename(db_, "main");
    if (file != nullptr && *file != '\0') m = std::string(file) + ": " + m;
    return {CodeOf(rc), m};
  }
  return Status::Ok();
}

Result<sqlite3_stmt*> Database::Cached(const char* sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    GA_ASSIGN_OR_RETURN(Stmt s, Prepare(sql));
    it = cache_.emplace(sql, std::move(s)).first;
  }
  sqlite3_reset(it->second.get());
  sqlite3_clear_bindings(it->second.get());
  return it->second.get();
}

Transaction::Transaction(Database& db) : db_(db) {
  if (!db_.Exec("BEGIN IMMEDIATE").ok()) begun_ = db_.Error("begin");
}

Transaction::~Transaction() {
  if (begun_.ok() && !done_) db_.Exec("ROLLBACK").IgnoreError();
}

Status Transaction::Commit() {
  done_ = true;
  if (!db_.Exec("COMMIT").ok()) return db_.Error("commit");
  return Status::Ok();
}

}  // namespace ga::sqlite
