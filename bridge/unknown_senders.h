// Messages on the local broker from sensor ids the bridge does not know (or
// from the gateway's own id). A LAN client can send to any number of ids, so
// everything kept about them is bounded whatever the ids: one counter, the
// few most recent ids (each cut to kShownBytes), one log line per kLogEvery,
// and an outbox write at most every kFlushEvery (not one per message).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/bridge/outbox.h"

namespace ga::bridge {

class UnknownSenders {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kRecent = 16;
  static constexpr size_t kShownBytes = 64;
  static constexpr std::chrono::seconds kFlushEvery{2};
  static constexpr std::chrono::seconds kLogEvery{60};

  // A message from `sensor` on `topic` was dropped.
  void Note(std::string_view sensor, std::string_view topic, Clock::time_point now,
            int64_t wall_ms);

  // Writes what was noted since the last flush to the outbox when due (or
  // now, with `force`). On failure the counts are kept for the next try.
  Status Flush(Outbox& outbox, Clock::time_point now, bool force = false);

  // What a flush would write (tests).
  int64_t pending() const { return pending_; }
  const std::vector<UnknownSender>& recent() const { return recent_; }

 private:
  int64_t pending_ = 0;
  std::vector<UnknownSender> recent_;  // most recent last, at most kRecent
  Clock::time_point next_flush_{};
  Clock::time_point next_log_{};
  int64_t unlogged_ = 0;  // dropped since the last line
};

}  // namespace ga::bridge
