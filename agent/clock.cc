#include "gateway_agent/agent/clock.h"

#include "gateway_agent/agent/identity_store.h"

namespace ga {

namespace {

class RealClock final : public Clock {
 public:
  SteadyClock::time_point Now() override { return SteadyClock::now(); }
  int64_t WallMillis() override { return NowMillis(); }
};

}  // namespace

Clock& SystemClock() {
  static RealClock* clock = new RealClock();
  return *clock;
}

}  // namespace ga
