// The log lines that name the sensors losing messages to a full outbox (a
// flooding sensor over its share, see outbox.h "When full"): one line at
// once, then at most one per kLogEvery, each summing what was lost since the
// last one, sensors losing the most first (at most kShown named). The counts
// themselves are in the outbox (dropped_full, rejected_full) for `status`.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "gateway_agent/bridge/outbox.h"

namespace ga::bridge {

class OutboxFullLog {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kLogEvery{60};
  static constexpr size_t kShown = 5;

  // Takes what `outbox` counted since the last call; logs it when due.
  void Tick(Outbox& outbox, Clock::time_point now);

  struct Line {
    std::string text;  // "" when there is nothing to log now
    std::string top;   // the sensor that lost the most
  };
  // What Tick would log now: nothing when nothing was lost or the last line
  // is too recent. A line returned counts as logged.
  Line Take(Outbox& outbox, Clock::time_point now);

 private:
  std::map<std::string, FullLoss> pending_;
  Clock::time_point next_log_{};
};

}  // namespace ga::bridge
