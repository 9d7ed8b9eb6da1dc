#include "gateway_agent/agent/identity_store.h"

#include <chrono>

#include "gateway_agent/rate.h"
#include "gateway_agent/sqlite.h"

namespace ga {

namespace {

using sqlite::BindText;
using sqlite::Stmt;
using sqlite::Text;

// Schema migrations, in order; migration i takes the schema from version i to
// i+1. Never edit one that has shipped: append.
const char* const kMigrations[] = {
    R"sql(
    CREATE TABLE identities (
      name TEXT PRIMARY KEY,
      kind TEXT NOT NULL,
      thing TEXT NOT NULL,
      state TEXT NOT NULL,
      key_file TEXT NOT NULL DEFAULT '',
      cert_file TEXT NOT NULL DEFAULT '',
      chain_file TEXT NOT NULL DEFAULT '',
      cert_id TEXT NOT NULL DEFAULT '',
      cert_not_after INTEGER NOT NULL DEFAULT 0,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt INTEGER NOT NULL DEFAULT 0,
      last_error TEXT NOT NULL DEFAULT '',
      park_reason TEXT NOT NULL DEFAULT '',
      long_pending_reported INTEGER NOT NULL DEFAULT 0,
      created INTEGER NOT NULL,
      updated INTEGER NOT NULL,
      registering_since INTEGER NOT NULL DEFAULT 0,
      active_since INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX identities_thing ON identities(thing);
    )sql",
    R"sql(
    ALTER TABLE identities ADD COLUMN cert_issued_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE identities ADD COLUMN renewal TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN next_key_file TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN next_cert_file TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN next_chain_file TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN next_cert_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN next_cert_not_after INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE identities ADD COLUMN next_cert_issued_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE identities ADD COLUMN renewals INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE identities ADD COLUMN renewal_asked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE identities ADD COLUMN retiring_cert_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE identities ADD COLUMN renewal_error TEXT NOT NULL DEFAULT '';
    )sql",
};

constexpr const char* kColumns =
    "name, kind, thing, state, key_file, cert_file, chain_file, cert_id, "
    "cert_not_after, attempts, next_attempt, last_error, park_reason, long_pending_reported, "
    "created, updated, registering_since, active_since, cert_issued_at, renewal, next_key_file, "
    "next_cert_file, next_chain_file, next_cert_id, next_cert_not_after, next_cert_issued_at, "
    "renewals, renewal_asked, "
    "retiring_cert_id, renewal_error";

RenewalStep ParseRenewalStep(std::string_view name) {
  for (auto s : {RenewalStep::kKeyed, RenewalStep::kCertified, RenewalStep::kProving}) {
    if (RenewalStepName(s) == name) return s;
  }
  return RenewalStep::kNone;
}

Identity Row(sqlite3_stmt* s) {
  Identity id;
  id.name = Text(s, 0);
  id.kind = Text(s, 1) == "gateway" ? IdentityKind::kGateway : IdentityKind::kSensor;
  id.thing = Text(s, 2);
  id.state = ParseState(Text(s, 3)).value_or(EnrollmentState::kNew);
  id.key_file = Text(s, 4);
  id.cert_file = Text(s, 5);
  id.chain_file = Text(s, 6);
  id.cert_id = Text(s, 7);
  id.cert_not_after = sqlite3_column_int64(s, 8);
  id.attempts = sqlite3_column_int(s, 9);
  id.next_attempt = sqlite3_column_int64(s, 10);
  id.last_error = Text(s, 11);
  id.park_reason = Text(s, 12);
  id.long_pending_reported = sqlite3_column_int(s, 13) != 0;
  id.created = sqlite3_column_int64(s, 14);
  id.updated = sqlite3_column_int64(s, 15);
  id.registering_since = sqlite3_column_int64(s, 16);
  id.active_since = sqlite3_column_int64(s, 17);
  id.cert_issued_at = sqlite3_column_int64(s, 18);
  id.renewal = ParseRenewalStep(Text(s, 19));
  id.next_key_file = Text(s, 20);
  id.next_cert_file = Text(s, 21);
  id.next_chain_file = Text(s, 22);
  id.next_cert_id = Text(s, 23);
  id.next_cert_not_after = sqlite3_column_int64(s, 24);
  id.next_cert_issued_at = sqlite3_column_int64(s, 25);
  id.renewals = sqlite3_column_int(s, 26);
  id.renewal_asked = sqlite3_column_int(s, 27);
  id.retiring_cert_id = Text(s, 28);
  id.renewal_error = Text(s, 29);
  return id;
}

void BindAll(sqlite3_stmt* s, const Identity& id) {
  BindText(s, 1, id.name);
  BindText(s, 2, KindName(id.kind));
  BindText(s, 3, id.thing);
  BindText(s, 4, StateName(id.state));
  BindText(s, 5, id.key_file);
  BindText(s, 6, id.cert_file);
  BindText(s, 7, id.chain_file);
  BindText(s, 8, id.cert_id);
  sqlite3_bind_int64(s, 9, id.cert_not_after);
  sqlite3_bind_int(s, 10, id.attempts);
  sqlite3_bind_int64(s, 11, id.next_attempt);
  BindText(s, 12, id.last_error);
  BindText(s, 13, id.park_reason);
  sqlite3_bind_int(s, 14, id.long_pending_reported);
  sqlite3_bind_int64(s, 15, id.created);
  sqlite3_bind_int64(s, 16, id.updated);
  sqlite3_bind_int64(s, 17, id.registering_since);
  sqlite3_bind_int64(s, 18, id.active_since);
  sqlite3_bind_int64(s, 19, id.cert_issued_at);
  BindText(s, 20, id.renewal == RenewalStep::kNone ? "" : RenewalStepName(id.renewal));
  BindText(s, 21, id.next_key_file);
  BindText(s, 22, id.next_cert_file);
  BindText(s, 23, id.next_chain_file);
  BindText(s, 24, id.next_cert_id);
  sqlite3_bind_int64(s, 25, id.next_cert_not_after);
  sqlite3_bind_int64(s, 26, id.next_cert_issued_at);
  sqlite3_bind_int(s, 27, id.renewals);
  sqlite3_bind_int(s, 28, id.renewal_asked);
  BindText(s, 29, id.retiring_cert_id);
  BindText(s, 30, id.renewal_error);
}

}  // namespace

std::string_view StateName(EnrollmentState state) {
  switch (state) {
    case EnrollmentState::kNew: return "NEW";
    case EnrollmentState::kKeyed: return "KEYED";
    case EnrollmentState::kCertified: return "CERTIFIED";
    case EnrollmentState::kRegistering: return "REGISTERING";
    case EnrollmentState::kActive: return "ACTIVE";
    case EnrollmentState::kParked: return "PARKED";
    case EnrollmentState::kRemoved: return "REMOVED";
    case EnrollmentState::kShared: return "SHARED";
  }
  return "NEW";
}

std::optional<EnrollmentState> ParseState(std::string_view name) {
  for (auto s : {EnrollmentState::kNew, EnrollmentState::kKeyed, EnrollmentState::kCertified,
                 EnrollmentState::kRegistering, EnrollmentState::kActive, EnrollmentState::kParked,
                 EnrollmentState::kRemoved, EnrollmentState::kShared}) {
    if (StateName(s) == name) return s;
  }
  return std::nullopt;
}

std::string_view RenewalStepName(RenewalStep step) {
  switch (step) {
    case RenewalStep::kNone: return "none";
    case RenewalStep::kKeyed: return "keyed";
    case RenewalStep::kCertified: return "certified";
    case RenewalStep::kProving: return "proving";
  }
  return "none";
}

std::string_view KindName(IdentityKind kind) {
  return kind == IdentityKind::kGateway ? "gateway" : "sensor";
}

Millis NowMillis() {
  return UnixMillis();
}

IdentityStore::IdentityStore(std::unique_ptr<sqlite::Database> db, std::filesystem::path path)
    : db_(std::move(db)), path_(std::move(path)) {}

IdentityStore::~IdentityStore() = default;

Result<std::unique_ptr<IdentityStore>> IdentityStore::Open(const std::filesystem::path& path) {
  GA_ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
                      sqlite::Database::Open(path, {.serialized = true}).With("state database"));
  std::unique_ptr<IdentityStore> store(new IdentityStore(std::move(db), path));
  GA_RETURN_IF_ERROR(store->Migrate().With("migrating " + path.string()));
  return store;
}

Result<std::unique_ptr<IdentityStore>> IdentityStore::OpenReadOnly(
    const std::filesystem::path& path) {
  auto db = sqlite::Database::Open(path, {.read_only = true, .serialized = true});
  if (!db.ok()) {
    return Status(Code::kNotFound, "state database: " + db.status().message() +
                                       " (has the agent run with this state_dir?)");
  }
  std::unique_ptr<IdentityStore> store(new IdentityStore(std::move(*db), path));
  int version = store->schema_version();
  if (version > kSchemaVersion) {
    return FailedPrecondition(path.string() + " has schema version " + std::to_string(version) +
                              ", newer than this gateway-agent understands (" +
                              std::to_string(kSchemaVersion) + ")");
  }
  return store;
}

int IdentityStore::schema_version() {
  MutexLock lock(mu_);
  return SchemaVersion();
}

int IdentityStore::SchemaVersion() {
  auto s = db_->Prepare("PRAGMA user_version");
  if (!s.ok()) return -1;
  return sqlite3_step(s->get()) == SQLITE_ROW ? sqlite3_column_int(s->get(), 0) : -1;
}

Status IdentityStore::Migrate() {
  MutexLock lock(mu_);
  int version = SchemaVersion();
  constexpr int kCount = static_cast<int>(std::size(kMigrations));
  static_assert(kCount == kSchemaVersion);
  if (version > kCount) {
    return FailedPrecondition("schema version " + std::to_string(version) +
                              " is newer than this gateway-agent understands (" +
                              std::to_string(kCount) + "); install the newer version again");
  }
  for (int v = version; v < kCount; ++v) {
    sqlite::Transaction tx(*db_);
    GA_RETURN_IF_ERROR(tx.begun());
    Status s = db_->Exec(kMigrations[v]);
    if (s.ok()) s = db_->Exec("PRAGMA user_version=" + std::to_string(v + 1));
    // Not committed: the transaction rolls back.
    if (!s.ok()) return std::move(s).With("migration to schema version " + std::to_string(v + 1));
    GA_RETURN_IF_ERROR(tx.Commit());
  }
  return Status::Ok();
}

Status IdentityStore::Add(const Identity& identity) {
  MutexLock lock(mu_);
  {
    GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT name FROM identities WHERE (name = ?1 OR "
                                             "thing = ?2) AND state != 'REMOVED'"));
    BindText(s.get(), 1, identity.name);
    BindText(s.get(), 2, identity.thing);
    if (sqlite3_step(s.get()) == SQLITE_ROW) {
      return {Code::kAlreadyExists, "identity \"" + Text(s.get(), 0) +
                                        "\" already uses the name or thing name \"" +
                                        identity.thing + "\""};
    }
  }
  std::string sql =
      std::string("INSERT OR REPLACE INTO identities (") + kColumns +
      ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,"
      "?23,?24,?25,?26,?27,?28,?29,?30)";
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare(sql));
  Identity row = identity;
  row.created = row.updated = NowMillis();
  BindAll(s.get(), row);
  if (sqlite3_step(s.get()) != SQLITE_DONE) {
    return db_->Error("add identity " + identity.name);
  }
  return Status::Ok();
}

Status IdentityStore::Update(const Identity& identity) {
  MutexLock lock(mu_);
  const char* sql =
      "UPDATE identities SET kind=?2, thing=?3, state=?4, key_file=?5, "
      "cert_file=?6, chain_file=?7, cert_id=?8, cert_not_after=?9, attempts=?10, "
      "next_attempt=?11, last_error=?12, park_reason=?13, long_pending_reported=?14, "
      "created=?15, updated=?16, registering_since=?17, active_since=?18, cert_issued_at=?19, "
      "renewal=?20, next_key_file=?21, next_cert_file=?22, next_chain_file=?23, next_cert_id=?24, "
      "next_cert_not_after=?25, next_cert_issued_at=?26, renewals=?27, renewal_asked=?28, "
      "retiring_cert_id=?29, renewal_error=?30 WHERE name=?1";
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare(sql));
  Identity row = identity;
  row.updated = NowMillis();
  BindAll(s.get(), row);
  if (sqlite3_step(s.get()) != SQLITE_DONE) {
    return db_->Error("update identity " + identity.name);
  }
  if (db_->changes() != 1) return NotFound("identity \"" + identity.name + "\"");
  return Status::Ok();
}

Result<Identity> IdentityStore::Get(std::string_view name) {
  MutexLock lock(mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM identities WHERE name = ?1";
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare(sql));
  BindText(s.get(), 1, name);
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return Row(s.get());
  if (rc == SQLITE_DONE) return NotFound("no identity named \"" + std::string(name) + "\"");
  return db_->Error("read identity " + std::string(name));
}

Result<std::vector<Identity>> IdentityStore::List(bool include_removed) {
  MutexLock lock(mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM identities" +
                    (include_removed ? "" : " WHERE state != 'REMOVED'") +
                    " ORDER BY kind = 'sensor', name";
  GA_ASSIGN_OR_RETURN(Stmt s, db_->Prepare(sql).With("list identities in " + path_.string()));
  std::vector<Identity> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(Row(s.get()));
  if (rc != SQLITE_DONE) return db_->Error("list identities in " + path_.string());
  return out;
}

}  // namespace ga
