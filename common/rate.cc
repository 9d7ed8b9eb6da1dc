#include "gateway_agent/rate.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace ga {

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TokenBucket::TokenBucket(double rate, double burst, SteadyClock::time_point now)
    : rate_(rate), burst_(std::max(burst, 1.0)), tokens_(std::max(burst, 1.0)), last_(now) {}

void TokenBucket::Refill(SteadyClock::time_point now) {
  if (now <= last_) return;
  double seconds = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(burst_, tokens_ + seconds * rate_);
  last_ = now;
}

bool TokenBucket::TryTake(double n, SteadyClock::time_point now) {
  Refill(now);
  if (tokens_ + 1e-9 < n) return false;
  tokens_ -= n;
  return true;
}

std::chrono::nanoseconds TokenBucket::TimeUntil(double n, SteadyClock::time_point now) {
  Refill(now);
  if (tokens_ + 1e-9 >= n) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(static_cast<int64_t>((n - tokens_) / rate_ * 1e9) + 1);
}

void SharedTokenBucket::Take(double n) {
  while (true) {
    std::chrono::nanoseconds wait;
    {
      MutexLock lock(mu_);
      if (bucket_.TryTake(n)) return;
      wait = bucket_.TimeUntil(n);
    }
    std::this_thread::sleep_for(wait);
  }
}

std::chrono::milliseconds BackoffCeiling(const BackoffPolicy& policy, int attempt) {
  double ceiling = static_cast<double>(policy.initial.count()) *
                   std::pow(policy.multiplier, std::max(0, attempt - 1));
  ceiling = std::min(ceiling, static_cast<double>(policy.max.count()));
  return std::chrono::milliseconds(static_cast<int64_t>(ceiling));
}

std::chrono::milliseconds FullJitterDelay(const BackoffPolicy& policy, int attempt,
                                          std::mt19937_64& rng) {
  int64_t ceiling = BackoffCeiling(policy, attempt).count();
  std::uniform_int_distribution<int64_t> dist(0, std::max<int64_t>(0, ceiling));
  return std::chrono::milliseconds(dist(rng));
}

}  // namespace ga
