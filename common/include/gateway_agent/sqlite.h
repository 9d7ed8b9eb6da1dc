// Small owners and helpers for the SQLite C API, shared by the databases of
// the agent (identities) and the bridge (outbox). Header-only: only the
// parts that use SQLite link it.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga::sqlite {

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// "<what>: <sqlite's message for db>" as an I/O error.
inline Status Error(sqlite3* db, std::string_view what) {
  return {Code::kIo, std::string(what) + ": " + sqlite3_errmsg(db)};
}

inline Result<Stmt> Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return Error(db, std::string("prepare ") + sql);
  }
  return Stmt(raw);
}

inline void BindText(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

inline std::string Text(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t ? reinterpret_cast<const char*>(t) : "";
}

}  // namespace ga::sqlite
