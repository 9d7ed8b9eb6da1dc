// Pacing: token buckets (AWS IoT's per-connection and per-account rates) and
// exponential backoff with full jitter (retries that do not synchronise
// across a fleet).
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

#include "gateway_agent/thread_annotations.h"

namespace ga {

using SteadyClock = std::chrono::steady_clock;

// Wall-clock milliseconds since the Unix epoch (times that are stored or shown).
int64_t UnixMillis();

// A token bucket: `rate` tokens per second, holding at most `burst`.
// Not thread-safe; see SharedTokenBucket.
class TokenBucket {
 public:
  TokenBucket(double rate, double burst, SteadyClock::time_point now = SteadyClock::now());

  // Takes `n` tokens if available now.
  bool TryTake(double n, SteadyClock::time_point now = SteadyClock::now());
  // How long until `n` tokens are available (zero if they are).
  std::chrono::nanoseconds TimeUntil(double n, SteadyClock::time_point now = SteadyClock::now());
  double rate() const { return rate_; }

 private:
  void Refill(SteadyClock::time_point now);
  double rate_;
  double burst_;
  double tokens_;
  SteadyClock::time_point last_;
};

// A TokenBucket shared by threads; Take() blocks until the tokens are there.
class SharedTokenBucket {
 public:
  SharedTokenBucket(double rate, double burst) : bucket_(rate, burst) {}
  void Take(double n = 1);

 private:
  Mutex mu_;
  TokenBucket bucket_ GA_GUARDED_BY(mu_);
};

struct BackoffPolicy {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds max{300000};
  double multiplier = 2.0;
};

// The delay before retry number `attempt` (1 = the first retry): uniformly
// random in [0, min(max, initial * multiplier^(attempt-1))] ("full jitter").
std::chrono::milliseconds FullJitterDelay(const BackoffPolicy& policy, int attempt,
                                          std::mt19937_64& rng);

// The upper bound FullJitterDelay draws from.
std::chrono::milliseconds BackoffCeiling(const BackoffPolicy& policy, int attempt);

}  // namespace ga
