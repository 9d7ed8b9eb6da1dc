// Time as an input. The enrollment scheduler and its workers read the time
// from a Clock instead of the system clocks, so a unit test can drive them
// with a fake one.
#pragma once

#include <cstdint>
#include <string>

#include "gateway_agent/rate.h"

namespace ga {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time: waits, per-client-id spacing, token buckets.
  virtual SteadyClock::time_point Now() = 0;
  // Wall-clock milliseconds since the Unix epoch: times that are persisted
  // (an identity's next attempt) or shown to people.
  virtual int64_t WallMillis() = 0;
};

// std::chrono::steady_clock and system_clock. Thread-safe; never destroyed.
Clock& SystemClock();

// Wall-clock milliseconds since the Unix epoch, in UTC, formatted by
// strftime's `format` ("%Y-%m-%dT%H:%M:%SZ").
std::string FormatUtc(int64_t millis, const char* format);

}  // namespace ga
