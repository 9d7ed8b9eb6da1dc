// A Clock that moves only when a test says so.
#pragma once

#include <chrono>

#include "gateway_agent/agent/clock.h"

namespace ga::testing {

class FakeClock : public Clock {
 public:
  SteadyClock::time_point Now() override { return steady_; }
  int64_t WallMillis() override { return wall_ms_; }

  void Advance(std::chrono::nanoseconds d) {
    steady_ += d;
    wall_ms_ += std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  }

 private:
  SteadyClock::time_point steady_ = SteadyClock::time_point{} + std::chrono::hours(1);
  int64_t wall_ms_ = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
};

}  // namespace ga::testing
