// When an identity may try its next JITR connect: exponential backoff with
// full jitter after a failure, at most one CONNECT per second per client id
// (AWS IoT's limit), and the account-wide connect rate (aws.connect_rate)
// shared by every identity.
//
// Time comes from a Clock, so a test drives the scheduler with a fake one.
// Thread-safe: the enrollment workers share one scheduler.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>

#include "gateway_agent/agent/clock.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/thread_annotations.h"

namespace ga {

inline constexpr std::chrono::milliseconds kPerClientIdSpacing = aws::kConnectSpacingPerClientId;

struct ConnectPacing {
  BackoffPolicy backoff;
  double account_rate = 1.0;  // CONNECTs per second for the whole account
  std::chrono::milliseconds per_client_spacing = kPerClientIdSpacing;
};

class ConnectScheduler {
 public:
  // `clock` must outlive the scheduler; `seed` seeds the jitter.
  ConnectScheduler(const ConnectPacing& pacing, Clock& clock, uint64_t seed);
  ConnectScheduler(const ConnectScheduler&) = delete;
  ConnectScheduler& operator=(const ConnectScheduler&) = delete;

  // The delay before `client` tries again after a failure: uniformly random
  // in [0, min(cap, initial * multiplier^(n-1))]. A `counted` failure (a
  // registration attempt) uses n = `attempts`, the identity's persisted count
  // that the caller has just increased, and resets the uncounted ones; any
  // other failure (network, key, CA, state database) uses its own count of
  // consecutive uncounted failures. `cap` replaces the backoff's max when
  // non-zero.
  std::chrono::milliseconds RetryDelay(const std::string& client, int attempts, bool counted,
                                       std::chrono::milliseconds cap = {}) GA_EXCLUDES(mu_);

  // Admits one CONNECT by `client` now when both its per-client-id spacing
  // and the account's rate allow it, and records it; returns zero then.
  // Otherwise admits nothing and returns how long to wait before asking
  // again. A client held back by the account's rate is given the next free
  // slot, which no one else can take: clients are served in the order they
  // first asked, however often each one asks.
  std::chrono::nanoseconds TryAdmit(const std::string& client) GA_EXCLUDES(mu_);

  // The admitted attempt of `client` is over. Its CONNECT went out some time
  // after the admission (TCP, then a TLS handshake that waits for the TPM),
  // so the spacing of the next one counts from now: AWS counts from the
  // CONNECT it received, and a slow handshake followed by a fast one would
  // otherwise bring two within a second.
  void AttemptDone(const std::string& client) GA_EXCLUDES(mu_);

  // Every client id counts as having connected now: a process that starts
  // cannot know when the one before it (killed, restarted) last did.
  void AssumeAllConnectedNow() GA_EXCLUDES(mu_);

  const BackoffPolicy& backoff() const { return pacing_.backoff; }

 private:
  const ConnectPacing pacing_;
  Clock& clock_;
  Mutex mu_;
  // The account's rate as a schedule (a token bucket kept as "the time the
  // next slot frees up", so that a slot can be booked ahead): slots are
  // `interval_` apart, and up to `burst` of them may be taken at once.
  const std::chrono::nanoseconds interval_;
  const std::chrono::nanoseconds tolerance_;  // (burst - 1) * interval_
  SteadyClock::time_point next_free_ GA_GUARDED_BY(mu_);
  std::map<std::string, SteadyClock::time_point> booked_ GA_GUARDED_BY(mu_);
  std::map<std::string, SteadyClock::time_point> last_connect_ GA_GUARDED_BY(mu_);
  // The last connect of a client id not in last_connect_ (AssumeAllConnectedNow).
  std::optional<SteadyClock::time_point> everyone_connected_ GA_GUARDED_BY(mu_);
  std::map<std::string, int> uncounted_failures_ GA_GUARDED_BY(mu_);
  std::mt19937_64 rng_ GA_GUARDED_BY(mu_);
};

}  // namespace ga
