#include "gateway_agent/agent/connect_scheduler.h"

#include <algorithm>

namespace ga {

namespace {

std::chrono::nanoseconds Interval(double rate) {
  return std::chrono::nanoseconds(static_cast<int64_t>(1e9 / rate));
}

}  // namespace

ConnectScheduler::ConnectScheduler(const ConnectPacing& pacing, Clock& clock, uint64_t seed)
    : pacing_(pacing),
      clock_(clock),
      interval_(Interval(pacing.account_rate)),
      tolerance_(static_cast<int64_t>((std::max(1.0, pacing.account_rate) - 1) * 1e9 /
                                      pacing.account_rate)),
      next_free_(clock.Now()),
      rng_(seed) {}

std::chrono::milliseconds ConnectScheduler::RetryDelay(const std::string& client, int attempts,
                                                       bool counted,
                                                       std::chrono::milliseconds cap) {
  BackoffPolicy policy = pacing_.backoff;
  if (cap.count() > 0) policy.max = cap;
  MutexLock lock(mu_);
  int n = attempts;
  if (counted) {
    uncounted_failures_.erase(client);
  } else {
    n = ++uncounted_failures_[client];
  }
  return std::max(FullJitterDelay(policy, n, rng_), std::chrono::milliseconds(0));
}

std::chrono::nanoseconds ConnectScheduler::TryAdmit(const std::string& client) {
  MutexLock lock(mu_);
  auto now = clock_.Now();
  auto booked = booked_.find(client);
  if (booked != booked_.end()) {
    if (now < booked->second) return booked->second - now;
    booked_.erase(booked);
    last_connect_[client] = now;
    return std::chrono::nanoseconds(0);
  }
  auto last = last_connect_.find(client);
  std::optional<SteadyClock::time_point> previous =
      last != last_connect_.end() ? std::optional(last->second) : everyone_connected_;
  if (previous && now < *previous + pacing_.per_client_spacing) {
    return *previous + pacing_.per_client_spacing - now;
  }
  auto slot = std::max(now, next_free_ - tolerance_);
  next_free_ = std::max(slot, next_free_) + interval_;
  if (slot > now) {
    booked_[client] = slot;
    return slot - now;
  }
  last_connect_[client] = now;
  return std::chrono::nanoseconds(0);
}

void ConnectScheduler::AssumeAllConnectedNow() {
  MutexLock lock(mu_);
  everyone_connected_ = clock_.Now();
}

void ConnectScheduler::AttemptDone(const std::string& client) {
  MutexLock lock(mu_);
  last_connect_[client] = clock_.Now();
}

}  // namespace ga
