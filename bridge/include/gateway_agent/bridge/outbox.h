// The durable outbox: sensor messages accepted from the local broker, kept in
// SQLite (WAL) until the cloud acknowledges them.
//
// A message is acknowledged to the local broker only after the transaction
// that holds it has committed (group commit: one transaction per batch of
// messages read in one loop iteration). Messages leave in order per identity
// and are deleted on the cloud's PUBACK, so a crash at any point loses nothing
// acknowledged; it may send a message twice (at least once).
//
// Bounded by total bytes and by age. Every drop is counted with its reason,
// per identity.
//
// When full, each sensor (identity: a sensor in shared mode is its own, not
// its carrier's) has a fair share of max_bytes: max_bytes / the number of
// sensors holding messages, counting the sender. One sensor flooding its
// topics cannot evict the others' messages:
// - drop-oldest: the oldest messages of the sensor holding the most bytes are
//   dropped, one at a time, until the new messages fit. While the outbox is
//   full, that sensor is over its share (the shares add up to max_bytes), so
//   a sensor at or under its share loses nothing to another one's flood.
// - reject-new: a new message whose sensor would go over its share is
//   rejected; a sensor under its share still gets in, in place of the newest
//   messages of the sensor holding the most bytes (counted as dropped).
//
// Not thread-safe: owned by the bridge's event loop. Other processes may read
// it (`gateway-agent status`) through OutboxStats.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"

namespace ga::sqlite {
class Database;
}  // namespace ga::sqlite

namespace ga::bridge {

class OutboxHoldings;

struct OutboxMessage {
  int64_t seq = 0;  // order of acceptance, unique
  std::string identity;
  std::string topic;  // the cloud topic
  std::string payload;
  int64_t created_ms = 0;
};

// Counter names, per identity.
inline constexpr const char* kSent = "sent";                     // acknowledged by the cloud
inline constexpr const char* kDroppedFull = "dropped_full";      // on_full = drop-oldest
inline constexpr const char* kDroppedAge = "dropped_age";        // older than outbox_max_age
inline constexpr const char* kRejectedFull = "rejected_full";    // on_full = reject-new
inline constexpr const char* kRejectedLimit = "rejected_limit";  // payload/topic over AWS limits
inline constexpr const char* kDroppedUnknown = "dropped_unknown_sensor";
inline constexpr const char* kRejectedTopic = "rejected_topic";  // nothing after the sensor id

// Messages from sensor ids the bridge does not know are counted under this
// name (no sensor id contains '*'), and the most recent ids kept, at most
// kUnknownSendersKept of them, each cut short: a LAN client choosing random
// ids cannot grow the outbox.
inline constexpr const char* kUnknownSenders = "*";
inline constexpr size_t kUnknownSendersKept = 16;

struct UnknownSender {
  std::string id;  // as shown (escaped, cut)
  int64_t messages = 0;
  int64_t last_ms = 0;
};

struct UnknownSenderReport {
  int64_t dropped = 0;
  std::vector<UnknownSender> recent;  // most recent first
};

struct IdentityOutboxStats {
  int64_t messages = 0;
  int64_t bytes = 0;
  int64_t oldest_ms = 0;  // created_ms of the oldest, 0 when empty
  std::map<std::string, int64_t> counters;
  bool connected = false;
};

// Messages an identity lost to the size bound (kDroppedFull, kRejectedFull).
struct FullLoss {
  int64_t dropped = 0;
  int64_t rejected = 0;
};

struct OutboxLimits {
  uint64_t max_bytes = 256ull << 20;
  std::chrono::milliseconds max_age = std::chrono::hours(24 * 7);
  OnFull on_full = OnFull::kDropOldest;
  bool fsync_every_commit = false;
};

class Outbox {
 public:
  static Result<std::unique_ptr<Outbox>> Open(const std::filesystem::path& path,
                                              const OutboxLimits& limits);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Deletes the messages with seq in `acked` (the cloud acknowledged them;
  // counted as sent), then appends `messages` (seq is assigned) and counts
  // under `counts`, in one committed transaction. Applies the size bound
  // (see "When full" above): `messages` keeps those committed, in order, and
  // loses those rejected or dropped at once. On failure nothing is changed.
  Status Commit(std::vector<OutboxMessage>& messages,
                const std::map<std::pair<std::string, std::string>, int64_t>& counts,
                const std::vector<int64_t>& acked = {});

  // Up to `limit` messages of `identity` with seq > after, in order.
  Result<std::vector<OutboxMessage>> Next(const std::string& identity, int64_t after, int limit);

  // Deletes acknowledged messages (by seq) and counts them as sent, in one
  // transaction. A seq no longer there (dropped meanwhile) is skipped.
  Status Acknowledge(const std::vector<int64_t>& seqs);

  // Drops messages older than the age bound; returns how many.
  Result<int64_t> Expire(int64_t now_ms);

  // Deletes everything of an identity (a removed sensor).
  Status Forget(const std::string& identity);

  Status SetConnected(const std::string& identity, bool connected);

  // Adds `dropped` to the unknown-sender counter and records `recent` (ids
  // with the messages since the last record), keeping the newest
  // kUnknownSendersKept ids; one transaction.
  Status RecordUnknownSenders(int64_t dropped, const std::vector<UnknownSender>& recent);

  int64_t total_bytes() const;
  // Payload bytes `identity` holds.
  int64_t held(const std::string& identity) const;
  uint64_t max_bytes() const { return limits_.max_bytes; }

  // The messages each identity lost to the size bound since the last call.
  std::map<std::string, FullLoss> TakeFullLosses();

 private:
  Outbox(std::unique_ptr<sqlite::Database> db, OutboxLimits limits);
  Status Exec(const char* sql);
  Result<int64_t> ReadSqliteSequence();
  Status DropAutoincrement(int64_t sequence);
  Status Count(const std::string& identity, const char* name, int64_t n);
  // Commit's work, within its transaction.
  Status Write(std::vector<OutboxMessage>& messages,
               const std::map<std::pair<std::string, std::string>, int64_t>& counts,
               const std::vector<int64_t>& acked, std::map<std::string, FullLoss>* losses);
  // Within a transaction.
  Status DeleteAcked(const std::vector<int64_t>& seqs);
  Status LoadHoldings();
  // reject-new, full: removes from `messages` those whose sensor would go
  // over its share, counting them in *losses; holdings include the rest.
  void Admit(std::vector<OutboxMessage>& messages, std::map<std::string, FullLoss>* losses);
  // Drops messages of the largest holders until the bound holds again;
  // `messages` (just appended) loses those dropped.
  Status DropOverShare(std::vector<OutboxMessage>& messages,
                       std::map<std::string, FullLoss>* losses);
  // Drops the oldest (or newest) messages of `identity` while it holds the
  // most and the outbox is over its bound; `dropped` gets the seqs dropped.
  Status DropFrom(const std::string& identity, bool newest, std::vector<int64_t>* dropped);

  std::unique_ptr<sqlite::Database> db_;
  OutboxLimits limits_;
  std::unique_ptr<OutboxHoldings> holdings_;
  std::map<std::string, FullLoss> full_losses_;
  int64_t next_seq_ = 1;
};

// For `gateway-agent status`, from another process: per identity. Empty when
// there is no outbox yet (nothing bridged); an error when it exists but
// cannot be read.
Result<std::map<std::string, IdentityOutboxStats>> ReadOutboxStats(
    const std::filesystem::path& path);

// For `gateway-agent status`: messages dropped from unknown sensor ids.
Result<UnknownSenderReport> ReadUnknownSenders(const std::filesystem::path& path);

}  // namespace ga::bridge
