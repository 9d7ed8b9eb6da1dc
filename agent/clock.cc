#include "gateway_agent/agent/clock.h"

#include <ctime>

#include "gateway_agent/agent/identity_store.h"

namespace ga {

namespace {

class RealClock final : public Clock {
 public:
  SteadyClock::time_point Now() override { return SteadyClock::now(); }
  int64_t WallMillis() override { return NowMillis(); }
};

}  // namespace

std::string FormatUtc(int64_t millis, const char* format) {
  std::time_t t = static_cast<std::time_t>(millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  return std::strftime(buf, sizeof buf, format, &tm) > 0 ? buf : "";
}

Clock& SystemClock() {
  static RealClock* clock = new RealClock();
  return *clock;
}

}  // namespace ga
