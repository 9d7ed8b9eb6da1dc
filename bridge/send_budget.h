// The send scheduler's rules: what one cloud connection may send now.
//
// AWS IoT limits each connection to bridge.publish_rate publishes and
// bridge.byte_rate bytes per second, and the bridge keeps at most
// bridge.inflight_window QoS 1 messages unacknowledged on it. A connection
// that carries shared-mode sensors serves itself and them in turns.
//
// The rates must hold at the server too when a link delays packets and then
// delivers them at once (a modem that drops off and comes back): every
// publish in flight may arrive together, and the PUBACKs of such a batch free
// the window at once. So the budget also keeps the server's view: token
// buckets like AWS IoT's (a second's worth, refilled at the rate), charged
// when a PUBACK comes (the latest its publish can have been counted), and a
// publish goes only while that view, less everything still in flight, has
// room for it. Whatever the delays, the server's own bucket then has room
// for every publish when it arrives.
//
// The limits are AWS IoT Core's quotas, "Publish requests per second per
// connection" (100) and "Throughput per second per connection" (512 KiB),
// https://docs.aws.amazon.com/general/latest/gr/iot-core.html#message-broker-limits.
// How AWS measures a second is not documented: at sending time no one-second
// window exceeds the rate (the stricter reading); the server's view is a
// bucket of a second's worth, as iot-sim enforces it (StalledLink.* and
// SendBudget.TheServerHasRoom... fail if either side is wrong).
//
// Time is an input: every call takes `now`, so tests drive it with a fake clock.
#pragma once

#include <cstddef>
#include <cstdint>
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
  // (a publish is never spent on a message whose bytes must wait). What it
  // takes is in flight until Acknowledged.
  bool TryTake(size_t bytes, SteadyClock::time_point now);
  // The PUBACK of a publish of `bytes` came (or it was given up on).
  void Acknowledged(size_t bytes, SteadyClock::time_point now);
  // A publish that has no PUBACK (QoS 0), sent outside TryTake.
  void SentWithoutAck(size_t bytes, SteadyClock::time_point now);
  // The connection is gone: AWS counts per connection, so the next one starts
  // with nothing in flight and the server's buckets full.
  void NewConnection(SteadyClock::time_point now);

 private:
  // A token bucket that may go below zero: the server's, as seen from here.
  struct ServerBucket {
    double rate = 0, capacity = 0, tokens = 0;
    SteadyClock::time_point last{};
    double Tokens(SteadyClock::time_point now);
  };

  size_t window_;
  std::unique_ptr<TokenBucket> publishes_;  // both null when unlimited
  std::unique_ptr<TokenBucket> bytes_;
  ServerBucket server_publishes_, server_bytes_;
  uint64_t in_flight_publishes_ = 0;
  uint64_t in_flight_bytes_ = 0;
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
