// One libmosquitto client on the bridge's event loop: the local broker's
// connection and each cloud connection. The loop drives libmosquitto itself
// (mosquitto_loop_read/write/misc on epoll readiness), so these functions are
// the only places that step a client's socket outside a handshake.
#pragma once

#include <mosquitto.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/bridge/outbox.h"
#include "send_budget.h"

namespace ga::bridge {

class LifecycleRequest;

using Clock = std::chrono::steady_clock;

struct MosqDeleter {
  void operator()(mosquitto* m) const { mosquitto_destroy(m); }
};
using MosqPtr = std::unique_ptr<mosquitto, MosqDeleter>;

struct MqttConnection {
  std::string name;  // identity name, or "local"
  bool local = false;
  MosqPtr mosq;
  int fd = -1;              // registered in epoll
  bool want_write = false;  // EPOLLOUT registered
  bool connected = false;
  bool connecting = false;
  Clock::time_point next_connect{};
  Clock::time_point last_attempt{};
  int failures = 0;
  // Why it is not connected (the last failure), for status; empty once up.
  std::string problem;
  // When the peer last sent anything (a half-open link sends nothing).
  Clock::time_point last_inbound{};
  bool write_marked = false;  // in the Agenda's write list
  int published = 0;          // PUBLISH packets queued since the last write
  // Local connection: PUBLISH bytes read (counted by the message callback),
  // which tell ReadPackets when the socket is empty.
  uint64_t bytes_read = 0;
};

// A cloud connection: one identity's own, or a shared-mode sensor's place on
// its carrier's connection (then it has no client of its own).
struct CloudConnection : MqttConnection {
  BridgeIdentity identity;
  // A handshake thread owns `mosq` while this is set: the loop leaves it alone.
  bool handshaking = false;
  // A QoS 1 publish waiting for its PUBACK: whose message (this
  // connection's or a sensor's it carries), its outbox seq and packet size.
  struct InFlight {
    CloudConnection* sender = nullptr;
    int64_t seq = 0;
    size_t bytes = 0;
  };
  std::map<int, InFlight> inflight;  // by mid
  std::deque<OutboxMessage> pending;
  int64_t last_queued = 0;  // highest seq handed to libmosquitto
  bool drained = false;     // the outbox had nothing more after last_queued
  std::unique_ptr<SendBudget> budget;
  // Shared mode. On a sensor: the connection that carries its messages (none
  // while that identity is not connected to the loop). On that connection:
  // the sensors it carries.
  CloudConnection* carrier = nullptr;
  std::vector<CloudConnection*> riders;
  size_t next_turn = 0;  // round robin over itself and its riders
  // Command filters of riders that left while it was offline: its persistent
  // session still holds them, so they are unsubscribed on the next CONNACK.
  std::vector<std::string> stale_filters;
  bool send_marked = false;    // in the Agenda's send list
  bool reread_marked = false;  // in the Agenda's reread list
  // TLS buffers: kept while the connection is busy (see TlsBufferPolicy).
  bool holds_tls_buffers = false;
  // When it lost a connection that was up (an outage, most often); cleared
  // by the next CONNACK.
  Clock::time_point lost_at{};
  bool sent_this_tick = false;
  // Its CONNECT went out and no CONNACK has come yet.
  bool connect_sent = false;
  // CONNECTs in a row that AWS IoT closed or refused instead of accepting
  // (the certificate INACTIVE, REVOKED or expired, the thing or policy
  // detached); a CONNACK 0 resets it.
  int refused = 0;
  // A lifecycle request asked over this connection, waiting for its answer,
  // and the id of its SUBSCRIBE until the SUBACK (cloud_lifecycle.cc).
  std::shared_ptr<LifecycleRequest> asked;
  int asked_subscribe_mid = -1;

  size_t in_flight() const { return inflight.size(); }
};

// Reads every packet the socket (and, for TLS, OpenSSL's buffer) holds, up to
// a bound per call. Returns MOSQ_ERR_SUCCESS, or the error that lost the
// connection.
int ReadPackets(MqttConnection& c);

// Whether OpenSSL holds whole records of `m` that no socket event will report.
bool HoldsWholeRecords(mosquitto* m);

// Writes what libmosquitto has queued (corked when it is more than one
// packet), on a client with a socket. Returns MOSQ_ERR_SUCCESS, or the error that lost the
// connection.
int WritePackets(MqttConnection& c);

// After a lost connection or failed attempt: the next attempt is due after
// an exponential backoff with full jitter (1 s to 15 s).
void ScheduleReconnect(MqttConnection& c, std::mt19937_64& rng);

}  // namespace ga::bridge
