#include "outbox_staging.h"

namespace ga::bridge {

namespace {

// PUBACKed messages are deleted from the outbox in batches of this many (or
// once per tick), with the iteration's new messages when there are any.
constexpr size_t kAckBatch = 1024;

}  // namespace

Status OutboxStaging::Commit(bool flush_acks) {
  committed_.clear();
  bool acks_due = !acked_.empty() && (flush_acks || acked_.size() >= kAckBatch);
  if (!has_accepted() && !acks_due) return Status::Ok();
  static const std::vector<int64_t> kNone;
  Status s = outbox_.Commit(staged_, counts_, acks_due ? acked_ : kNone);
  counts_.clear();
  if (!s.ok()) {
    staged_.clear();
    return s;
  }
  if (acks_due) acked_.clear();
  committed_.swap(staged_);  // staged_ keeps the old buffer for the next batch
  return Status::Ok();
}

}  // namespace ga::bridge
