#include "gateway_agent/tls_step.h"

#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "gateway_agent/openssl.h"

namespace ga::tls {

namespace {

using Clock = std::chrono::steady_clock;

// How often a wait looks at `stop`.
constexpr std::chrono::milliseconds kStopCheck(200);

}  // namespace

StepResult WaitFd(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* stop) {
  while (true) {
    if (stop != nullptr && stop->load()) return {StepEnd::kStopped};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return {StepEnd::kTimeout};
    if (stop != nullptr) left = std::min(left, kStopCheck);
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return {StepEnd::kSocket, 0, 0, errno};
    if (n <= 0) continue;
    if (p.revents & POLLERR) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return {StepEnd::kSocket, 0, 0, err};
    }
    return {StepEnd::kDone};
  }
}

StepResult Step(SSL* ssl, int fd, Clock::time_point deadline, const std::function<int()>& op,
                const std::atomic<bool>* stop) {
  while (true) {
    ERR_clear_error();
    errno = 0;
    int rc = op();
    int saved_errno = errno;
    if (rc > 0) return {StepEnd::kDone, rc};
    int err = SSL_get_error(ssl, rc);
    short events;
    if (err == SSL_ERROR_WANT_READ) {
      events = POLLIN;
    } else if (err == SSL_ERROR_WANT_WRITE) {
      events = POLLOUT;
    } else {
      return {StepEnd::kFailed, rc, err, err == SSL_ERROR_SYSCALL ? saved_errno : 0};
    }
    StepResult w = WaitFd(fd, events, deadline, stop);
    if (w.end != StepEnd::kDone) return w;
  }
}

std::string Describe(const StepResult& r) {
  switch (r.end) {
    case StepEnd::kDone: return "done";
    case StepEnd::kTimeout: return "timed out";
    case StepEnd::kStopped: return "stopped";
    case StepEnd::kSocket: return std::strerror(r.socket_error);
    case StepEnd::kFailed: break;
  }
  std::string errors = DrainOpenSslErrors();
  if (!errors.empty()) return errors;
  if (r.socket_error != 0) return std::strerror(r.socket_error);
  if (r.ssl_error == SSL_ERROR_SYSCALL || r.ssl_error == SSL_ERROR_ZERO_RETURN) {
    return "the connection was closed";
  }
  return "TLS error " + std::to_string(r.ssl_error);
}

}  // namespace ga::tls
