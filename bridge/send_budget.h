// The send scheduler's rules: what one cloud connection may send now.
//
// AWS IoT limits each connection to bridge.publish_rate publishes and
// bridge.byte_rate bytes per second, and the bridge keeps at most
// bridge.inflight_window QoS 1 messages unacknowledged on it. A connection
// that carries shared-mode sensors serves itself and them in turns.
//
// Time is an input: every call takes `now`, so tests drive it with a fake clock.
#pragma once

#include <cstddef>
#include <memory>

#include "gateway_agent/rate.h"

namespace ga::bridge {

class SendBudget {
 public:
  // `unlimited` lifts both rates (a benchmark against a test broker); the
  // window stays.
  SendBudget(double publish_rate, double byte_rate, size_t window, bool unlimited,
             SteadyClock::time_point now);

  bool WindowFull(size_t in_flight) const { return in_flight >= window_; }

  // Takes one publish and `bytes` when both are there now; nothing otherwise
  // (a publish is never spent on a message whose bytes must wait).
  bool TryTake(size_t bytes, SteadyClock::time_point now);

 private:
  size_t window_;
  std::unique_ptr<TokenBucket> publishes_;  // both null when unlimited
  std::unique_ptr<TokenBucket> bytes_;
};

// Round robin over `n` senders (a connection, then the sensors it carries):
// starting at `*next_turn`, each sender in turn is offered one send, round
// after round, until a whole round sends nothing. `send(i)` returns whether
// sender i sent one. Each send advances `*next_turn`, so the next call starts
// with another sender. Returns how many were sent.
template <typename Send>
size_t SendInTurns(size_t n, size_t* next_turn, Send&& send) {
  if (n == 0) return 0;
  const size_t first = *next_turn % n;
  size_t sent = 0;
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t k = 0; k < n; ++k) {
      if (send((first + k) % n)) {
        progress = true;
        ++*next_turn;
        ++sent;
      }
    }
  }
  return sent;
}

}  // namespace ga::bridge
