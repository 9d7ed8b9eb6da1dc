// What one iteration of the loop hands to the outbox: the messages read from
// the local broker, counts of those not accepted, and the seqs the cloud
// acknowledged. Everything is committed in one transaction before any PUBACK
// goes back to the local broker (group commit).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gateway_agent/bridge/outbox.h"

namespace ga::bridge {

class OutboxStaging {
 public:
  explicit OutboxStaging(Outbox& outbox) : outbox_(outbox) {}

  void Stage(OutboxMessage message) { staged_.push_back(std::move(message)); }
  // A message not accepted, counted under `counter` (kDroppedUnknown, ...).
  void Count(std::string identity, const char* counter) {
    ++counts_[{std::move(identity), counter}];
  }
  // The cloud acknowledged `seq`: deleted in a batch (see Commit).
  void Acknowledged(int64_t seq) { acked_.push_back(seq); }

  // Whether Commit would commit messages or counts whose PUBACKs wait.
  bool has_accepted() const { return !staged_.empty() || !counts_.empty(); }

  // Commits the staged messages and counts and, when due (`flush_acks`, or a
  // full batch), the acknowledged deletions, in one transaction; committed()
  // then holds the messages committed (with their seqs), in order, for the
  // caller to take. A PUBACKed message is
  // deleted late at worst: a crash before that re-sends it (at least once),
  // it never loses one.
  //
  // On failure nothing is committed: the staged messages and counts are
  // discarded (their PUBACKs must not reach the broker, which then
  // redelivers them) and the acknowledged seqs are kept for the next commit.
  Status Commit(bool flush_acks);
  std::vector<OutboxMessage>& committed() { return committed_; }

 private:
  Outbox& outbox_;
  std::vector<OutboxMessage> staged_;
  std::vector<OutboxMessage> committed_;
  std::map<std::pair<std::string, std::string>, int64_t> counts_;
  std::vector<int64_t> acked_;  // PUBACKed, not yet deleted
};

}  // namespace ga::bridge
