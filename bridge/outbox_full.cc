// Outbox, when full: each sensor's fair share of max_bytes (outbox.h, "When
// full"). The shares add up to max_bytes, so while the outbox is over its
// bound the sensor holding the most is over its share: trimming the largest
// holder first is what keeps every other sensor's messages.
#include <algorithm>

#include "gateway_agent/bridge/outbox.h"
#include "gateway_agent/sqlite.h"
#include "outbox_holdings.h"

namespace ga::bridge {

namespace {

// Messages of one identity read per statement while dropping.
constexpr int kDropBatch = 256;

constexpr const char* kOldestSql =
    "SELECT seq, LENGTH(payload) FROM messages WHERE identity = ?1 ORDER BY seq LIMIT ?2";
constexpr const char* kNewestSql =
    "SELECT seq, LENGTH(payload) FROM messages WHERE identity = ?1 ORDER BY seq DESC LIMIT ?2";
constexpr const char* kDropOldestSql = "DELETE FROM messages WHERE identity = ?1 AND seq <= ?2";
constexpr const char* kDropNewestSql = "DELETE FROM messages WHERE identity = ?1 AND seq >= ?2";

}  // namespace

int64_t Outbox::total_bytes() const {
  return holdings_->total();
}

int64_t Outbox::held(const std::string& identity) const {
  return holdings_->of(identity);
}

std::map<std::string, FullLoss> Outbox::TakeFullLosses() {
  return std::exchange(full_losses_, {});
}

void Outbox::Admit(std::vector<OutboxMessage>& messages, std::map<std::string, FullLoss>* losses) {
  const auto max = static_cast<int64_t>(limits_.max_bytes);
  std::vector<OutboxMessage> kept;
  kept.reserve(messages.size());
  for (auto& m : messages) {
    const auto size = static_cast<int64_t>(m.payload.size());
    if (holdings_->total() + size > max) {
      int64_t held = holdings_->of(m.identity);
      size_t holders = holdings_->holders() + (held == 0 && size > 0 ? 1 : 0);
      if (held + size > max / static_cast<int64_t>(std::max<size_t>(holders, 1))) {
        ++(*losses)[m.identity].rejected;
        continue;
      }
    }
    holdings_->Add(m.identity, size);
    kept.push_back(std::move(m));
  }
  messages = std::move(kept);
}

Status Outbox::DropOverShare(std::vector<OutboxMessage>& messages,
                             std::map<std::string, FullLoss>* losses) {
  const bool newest = limits_.on_full == OnFull::kRejectNew;
  std::vector<int64_t> dropped;
  while (static_cast<uint64_t>(holdings_->total()) > limits_.max_bytes) {
    std::string victim(holdings_->largest());
    if (victim.empty()) break;
    size_t before = dropped.size();
    GA_RETURN_IF_ERROR(DropFrom(victim, newest, &dropped));
    (*losses)[victim].dropped += static_cast<int64_t>(dropped.size() - before);
  }
  // Those of this commit's messages dropped at once are not handed back.
  if (!messages.empty() && !dropped.empty()) {
    const int64_t first = messages.front().seq;
    std::sort(dropped.begin(), dropped.end());
    if (dropped.back() >= first) {
      std::erase_if(messages, [&](const OutboxMessage& m) {
        return std::binary_search(dropped.begin(), dropped.end(), m.seq);
      });
    }
  }
  return Status::Ok();
}

Status Outbox::DropFrom(const std::string& identity, bool newest, std::vector<int64_t>* dropped) {
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * s, db_->Cached(newest ? kNewestSql : kOldestSql));
  sqlite::BindText(s, 1, identity);
  sqlite3_bind_int(s, 2, kDropBatch);
  int64_t last = -1;
  int rc = SQLITE_ROW;
  while (static_cast<uint64_t>(holdings_->total()) > limits_.max_bytes &&
         holdings_->largest() == identity && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    last = sqlite3_column_int64(s, 0);
    dropped->push_back(last);
    holdings_->Add(identity, -sqlite3_column_int64(s, 1));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    Status error = db_->Error("outbox: read the messages of " + identity + " to drop");
    sqlite3_reset(s);  // after: a reset clears the message
    return error;
  }
  sqlite3_reset(s);
  if (last < 0) {
    // Holdings and table disagree: a bug, not a state to loop in.
    return Internal("outbox: " + identity + " holds " + std::to_string(holdings_->of(identity)) +
                    " bytes but has no message to drop");
  }
  GA_ASSIGN_OR_RETURN(sqlite3_stmt * d, db_->Cached(newest ? kDropNewestSql : kDropOldestSql));
  sqlite::BindText(d, 1, identity);
  sqlite3_bind_int64(d, 2, last);
  Status result = sqlite3_step(d) == SQLITE_DONE
                      ? Status::Ok()
                      : db_->Error("outbox: drop messages of " + identity);
  sqlite3_reset(d);
  return result;
}

}  // namespace ga::bridge
