// The persistent record of every identity (the gateway and each sensor) and
// its enrollment state: a SQLite database in WAL mode in the state directory.
//
// Every state change is committed (durably) before the caller takes the next
// step, so a restart resumes exactly where the process stopped.
//
// Thread safety: one IdentityStore may be used from several threads; calls
// serialize on an internal lock. Other processes (`gateway-agent status`) may
// open the same database read-only at the same time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/status.h"
#include "gateway_agent/thread_annotations.h"

namespace ga::sqlite {
class Database;
}  // namespace ga::sqlite

namespace ga {

enum class IdentityKind { kGateway, kSensor };

// NEW -> KEYED -> CERTIFIED -> REGISTERING -> ACTIVE, plus states that retrying
// cannot leave on its own (parked: the operator must act; see `reason`).
enum class EnrollmentState {
  kNew,          // known, nothing made yet
  kKeyed,        // TPM key created and saved
  kCertified,    // certificate issued by the local CA and saved with its chain
  kRegistering,  // connecting until AWS IoT accepts the certificate (JITR)
  kActive,       // AWS IoT accepted a connection with this certificate
  kParked,       // stopped: retrying cannot fix it (reason says what to do)
  kRemoved,      // removed by the operator
  kShared,       // a sensor over the gateway's connection: nothing to enroll
};
inline constexpr int kEnrollmentStateCount = 8;

// How far an ACTIVE identity's renewal has come: the next key and
// certificate are made beside the ones in use, proven with one connect, and
// only then take their place.
enum class RenewalStep {
  kNone,       // no renewal under way
  kKeyed,      // the next key is made and saved (the current one when not re-keying)
  kCertified,  // the next certificate is issued and saved with its chain
  kProving,    // the bridge's connection is let go; connecting with the next certificate
};

std::string_view RenewalStepName(RenewalStep step);

std::string_view StateName(EnrollmentState state);
std::optional<EnrollmentState> ParseState(std::string_view name);
std::string_view KindName(IdentityKind kind);

using Millis = int64_t;  // milliseconds since the Unix epoch

struct Identity {
  std::string name;  // "gateway" or the sensor id
  IdentityKind kind = IdentityKind::kSensor;
  std::string thing;  // AWS thing name = certificate CN = MQTT client id
  EnrollmentState state = EnrollmentState::kNew;
  std::string key_file;    // TSS2 PRIVATE KEY PEM (usable only in this TPM)
  std::string cert_file;   // the device certificate
  std::string chain_file;  // device certificate, then the CA certificate
  std::string cert_id;     // AWS certificate id (SHA-256 of DER, hex)
  Millis cert_not_after = 0;
  int attempts = 0;         // JITR connect attempts (network failures not counted)
  Millis next_attempt = 0;  // not before this time
  std::string last_error;   // the last classified outcome, for operators
  std::string park_reason;  // kParked: what happened and what to do
  bool long_pending_reported = false;
  Millis created = 0;
  Millis updated = 0;
  Millis registering_since = 0;
  Millis active_since = 0;
  // When the certificate in use was issued to the agent (0: not known, its
  // notBefore counts): renewal is timed from here.
  Millis cert_issued_at = 0;
  // Renewal: the step reached, and the next key and certificate until they
  // replace the ones above.
  RenewalStep renewal = RenewalStep::kNone;
  std::string next_key_file;
  std::string next_cert_file;
  std::string next_chain_file;
  std::string next_cert_id;
  Millis next_cert_not_after = 0;
  Millis next_cert_issued_at = 0;
  int renewals = 0;  // certificates that replaced an earlier one
  // `gateway-agent renew` asked for a renewal now: 1, with a new key: 2.
  int renewal_asked = 0;
  std::string retiring_cert_id;  // the previous certificate, until AWS IoT retired it
  std::string renewal_error;     // the last failure of the renewal under way, or of a retirement
};

// PARKED after it had been ACTIVE (its certificate turned away by AWS IoT):
// `renew --force` may bring it back.
inline bool ParkedOnceActive(const Identity& id) {
  return id.state == EnrollmentState::kParked && id.active_since != 0;
}

class IdentityStore {
 public:
  // Opens (creating if needed, mode 0600) and migrates the database.
  static Result<std::unique_ptr<IdentityStore>> Open(const std::filesystem::path& path);
  // Opens an existing database read-only (for status from another process).
  static Result<std::unique_ptr<IdentityStore>> OpenReadOnly(const std::filesystem::path& path);

  ~IdentityStore();
  IdentityStore(const IdentityStore&) = delete;
  IdentityStore& operator=(const IdentityStore&) = delete;

  static constexpr int kSchemaVersion = 2;
  int schema_version() GA_EXCLUDES(mu_);

  // Inserts a new identity (state NEW). AlreadyExists when the name or thing
  // is taken by an identity that is not removed; a removed one is replaced.
  Status Add(const Identity& identity) GA_EXCLUDES(mu_);
  // Writes every field of `identity` (by name) in one transaction.
  Status Update(const Identity& identity) GA_EXCLUDES(mu_);
  Result<Identity> Get(std::string_view name) GA_EXCLUDES(mu_);
  // All identities, the gateway first, then sensors by name.
  Result<std::vector<Identity>> List(bool include_removed = false) GA_EXCLUDES(mu_);

 private:
  IdentityStore(std::unique_ptr<sqlite::Database> db, std::filesystem::path path);
  int SchemaVersion() GA_REQUIRES(mu_);
  Status Migrate() GA_EXCLUDES(mu_);

  Mutex mu_;
  const std::unique_ptr<sqlite::Database> db_ GA_PT_GUARDED_BY(mu_);
  const std::filesystem::path path_;
};

Millis NowMillis();

}  // namespace ga
