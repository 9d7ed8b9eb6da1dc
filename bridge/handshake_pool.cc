#include "handshake_pool.h"

#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>

#include "gateway_agent/tls_step.h"

namespace ga::bridge {

namespace {

// The interrupt signal of the pool whose job runs on this thread.
thread_local int current_interrupt_signal = 0;

// Blocks or unblocks `sig` (0: none) on the calling thread.
void MaskSignal(int sig, int how) {
  if (sig == 0) return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(how, &set, nullptr);
}

}  // namespace

HandshakePool::HandshakePool(int threads, int interrupt_signal)
    : threads_(threads), interrupt_signal_(interrupt_signal) {}

void HandshakePool::MaskInterrupt(int how) const {
  MaskSignal(interrupt_signal_, how);
}

void HandshakePool::ShieldCurrentThread() {
  MaskSignal(current_interrupt_signal, SIG_BLOCK);
}

int HandshakePool::InterruptibleConnect(const std::function<int()>& connect) {
  {
    MutexLock lock(connecting_mu_);
    if (stopping_) return MOSQ_ERR_CONN_LOST;
    connecting_.insert(pthread_self());
  }
  // The certificate callback of this thread's previous handshake blocked it.
  MaskInterrupt(SIG_UNBLOCK);
  int rc = connect();
  int saved = errno;
  {
    MutexLock lock(connecting_mu_);
    connecting_.erase(pthread_self());
  }
  // Blocked if this handshake already reached the certificate callback: no
  // signal is sent from here on, and one still pending is harmless now.
  MaskInterrupt(SIG_UNBLOCK);
  errno = saved;
  return rc;
}

void HandshakePool::Submit(std::function<void()> job, int priority) {
  {
    MutexLock lock(mu_);
    if (stopped_) return;
    jobs_.emplace(std::make_pair(priority, submitted_++), std::move(job));
    if (workers_.size() < static_cast<size_t>(threads_)) {
      workers_.emplace_back([this] { Work(); });
    }
  }
  cv_.notify_one();
}

void HandshakePool::Stop() {
  stopping_ = true;
  std::vector<std::thread> workers;
  {
    MutexLock lock(mu_);
    stopped_ = true;
    jobs_.clear();
    workers.swap(workers_);
  }
  cv_.notify_all();
  // Only threads inside a TCP connect are signalled: never one using the TPM.
  while (interrupt_signal_ != 0) {
    {
      MutexLock lock(connecting_mu_);
      if (connecting_.empty()) break;
      for (pthread_t t : connecting_) pthread_kill(t, interrupt_signal_);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : workers) t.join();
}

void HandshakePool::Work() {
  current_interrupt_signal = interrupt_signal_;
  mu_.lock();
  while (true) {
    cv_.wait(mu_, [&] {
      mu_.AssertHeld();
      return stopped_ || !jobs_.empty();
    });
    if (jobs_.empty()) break;  // stopped and drained
    auto job = std::move(jobs_.begin()->second);
    jobs_.erase(jobs_.begin());
    mu_.unlock();
    job();
    mu_.lock();
  }
  mu_.unlock();
}

HandshakeEnd FinishTlsHandshake(mosquitto* m, const std::atomic<bool>& stop) {
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(m));
  if (ssl == nullptr) return {MOSQ_ERR_SUCCESS, ""};  // not TLS
  const int fd = mosquitto_socket(m);
  if (fd < 0) return {MOSQ_ERR_CONN_LOST, mosquitto_strerror(MOSQ_ERR_CONN_LOST)};
  tls::StepResult r = tls::Step(
      ssl, fd, std::chrono::steady_clock::now() + kTlsHandshakeTimeout,
      [ssl] { return SSL_connect(ssl); }, &stop);
  if (r.end == tls::StepEnd::kDone) {
    // libmosquitto still waits for its own SSL_connect to finish before it
    // sends CONNECT: one read step lets it see the handshake is over.
    int rc = mosquitto_loop_read(m, 1);
    return {rc, rc == MOSQ_ERR_SUCCESS ? "" : mosquitto_strerror(rc)};
  }
  // The socket stays with libmosquitto until the next connect; close the
  // connection itself now so the server does not wait on it.
  shutdown(fd, SHUT_RDWR);
  switch (r.end) {
    case tls::StepEnd::kTimeout: return {MOSQ_ERR_TIMEOUT, "TLS handshake timed out"};
    case tls::StepEnd::kStopped: return {MOSQ_ERR_CONN_LOST, "stopping"};
    case tls::StepEnd::kSocket: return {MOSQ_ERR_ERRNO, tls::Describe(r)};
    default: return {MOSQ_ERR_TLS, "TLS handshake: " + tls::Describe(r)};
  }
}

}  // namespace ga::bridge
