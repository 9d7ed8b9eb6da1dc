// The one place that steps an OpenSSL operation (SSL_connect, SSL_read,
// SSL_write) on a non-blocking socket: the agent's JITR connects and the
// bridge's cloud handshakes both use it.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

namespace ga::tls {

enum class StepEnd {
  kDone,     // the operation returned > 0
  kFailed,   // it failed: see ssl_error, rc and the OpenSSL error queue
  kTimeout,  // the deadline passed first
  kStopped,  // `stop` was set
  kSocket,   // the socket reported an error (refused, reset): see socket_error
};

struct StepResult {
  StepEnd end = StepEnd::kDone;
  int rc = 0;            // the operation's last return value
  int ssl_error = 0;     // SSL_get_error of a kFailed operation
  int socket_error = 0;  // errno of kSocket, or of a kFailed SSL_ERROR_SYSCALL (0: none)
};

// Waits for `events` (POLLIN, POLLOUT) on `fd`: kDone when ready (also when
// the peer closed: the next read sees the alert or the end of stream), kSocket
// when the socket has an error (a refused connect, a reset), kTimeout, kStopped.
StepResult WaitFd(int fd, short events, std::chrono::steady_clock::time_point deadline,
                  const std::atomic<bool>* stop = nullptr);

// Repeats `op` while it wants to read or write, waiting on `fd` in between,
// until it completes, fails, `deadline` passes or `stop` (may be null) is set.
// Leaves the OpenSSL error queue of a failure for the caller to read.
StepResult Step(SSL* ssl, int fd, std::chrono::steady_clock::time_point deadline,
                const std::function<int()>& op, const std::atomic<bool>* stop = nullptr);

// One line for a failed step: the socket's errno text, "timed out", or the
// OpenSSL error queue (drained) with the SSL_get_error code.
std::string Describe(const StepResult& r);

}  // namespace ga::tls
