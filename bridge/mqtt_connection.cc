#include "mqtt_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "gateway_agent/rate.h"

namespace ga::bridge {

namespace {

// Packets read from one connection per readiness event: a bound on one batch
// (epoll is level-triggered, so the rest is read in the next iteration).
constexpr int kMaxReadsPerEvent = 1000;
constexpr std::chrono::milliseconds kReconnectMin{1000};
// Short enough that a fleet is back soon after an outage; aws.connect_rate
// still paces the reconnects.
constexpr std::chrono::milliseconds kReconnectMax{15000};

}  // namespace

// mosquitto_loop_read handles one packet per call when nothing of ours is in
// flight (the local connection), so one call per event would commit one
// message per transaction.
//
// Whether the socket is empty: a cloud connection's loop_read reads until its
// read() fails with EAGAIN. With TLS read-ahead, OpenSSL may hold whole
// records the socket no longer has (SSL_has_pending sees them, SSL_pending
// does not): they are read before epoll is asked again, and a connection that
// stops at the cap with records held is read again by the loop (the Agenda's
// reread list), as epoll would not report it.
//
// On the local connection errno cannot tell (queueing a PUBACK writes to
// libmosquitto's unused wake-up socket pair, which leaves EAGAIN once full),
// so FIONREAD says how many bytes wait and the sizes of the PUBLISH packets
// read count them down; any other packet asks FIONREAD again.
int ReadPackets(MqttConnection& c) {
  mosquitto* m = c.mosq.get();
  int64_t waiting = -1;  // local: bytes in the socket not read yet, -1 unknown
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    const uint64_t before = c.bytes_read;
    errno = 0;
    int rc = mosquitto_loop_read(m, 1);
    if (rc != MOSQ_ERR_SUCCESS) return rc;
    // libmosquitto may close the socket (and free its SSL) and still report
    // success: a CONNACK refused after the connect callback disconnected.
    if (mosquitto_socket(m) < 0) return MOSQ_ERR_CONN_LOST;
    if (HoldsWholeRecords(m)) continue;
    if (!c.local) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return MOSQ_ERR_SUCCESS;
    } else {
      auto got = static_cast<int64_t>(c.bytes_read - before);
      if (got > 0 && got < waiting) {
        waiting -= got;
        continue;
      }
    }
    int fd = mosquitto_socket(m);
    int available = 0;
    if (fd < 0 || ioctl(fd, FIONREAD, &available) != 0 || available <= 0) return MOSQ_ERR_SUCCESS;
    waiting = available;
  }
  return MOSQ_ERR_SUCCESS;
}

// SSL_has_pending is also 1 for a partial record, which waits for the rest
// from the socket (the last read wanted more: SSL_want_read), and epoll
// reports that rest.
bool HoldsWholeRecords(mosquitto* m) {
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(m));
  return ssl != nullptr && SSL_has_pending(ssl) == 1 && !SSL_want_read(ssl);
}

int WritePackets(MqttConnection& c) {
  int fd = mosquitto_socket(c.mosq.get());
  if (fd < 0 || !mosquitto_want_write(c.mosq.get())) return MOSQ_ERR_SUCCESS;
  // libmosquitto writes each queued packet (a batch of PUBACKs, a cloud
  // connection's PUBLISHes) with its own write(): corked, they leave as one
  // segment, which the peer takes in with one wake-up.
  int on = 1, off = 0;
  bool corked =
      (c.local || c.published > 1) && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0;
  c.published = 0;
  int rc = mosquitto_loop_write(c.mosq.get(), 1);
  if (corked && mosquitto_socket(c.mosq.get()) == fd) {
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  }
  return rc;
}

void ScheduleReconnect(MqttConnection& c, std::mt19937_64& rng) {
  ++c.failures;
  BackoffPolicy policy{kReconnectMin, kReconnectMax, 2.0};
  c.next_connect = Clock::now() + std::max(kReconnectMin, FullJitterDelay(policy, c.failures, rng));
}

}  // namespace ga::bridge
