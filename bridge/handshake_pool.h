// The blocking part of connecting a cloud connection (the TCP connect, the
// TLS handshake whose signature is made in the TPM: 40-200 ms on a real chip)
// runs on a few threads, so that it never holds up the traffic of the
// connections the loop already carries. Jobs run by priority (lowest
// first: a tpm::TpmWork), in submission order within one.
#pragma once

#include <mosquitto.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gateway_agent/thread_annotations.h"

namespace ga::bridge {

class HandshakePool {
 public:
  // A blocking TCP connect to an endpoint that drops SYNs takes about two
  // minutes to fail. Stop() interrupts the threads still in one with
  // `interrupt_signal`, whose handler must do nothing and be installed
  // without SA_RESTART (so connect() returns EINTR); 0: not interrupted, Stop()
  // waits for them.
  HandshakePool(int threads, int interrupt_signal);
  ~HandshakePool() { Stop(); }
  HandshakePool(const HandshakePool&) = delete;
  HandshakePool& operator=(const HandshakePool&) = delete;

  // Runs `connect` (blocking) on a handshake thread so that Stop() can
  // interrupt it; MOSQ_ERR_CONN_LOST once stopping.
  int InterruptibleConnect(const std::function<int()>& connect) GA_EXCLUDES(connecting_mu_);

  void Submit(std::function<void()> job, int priority = 0) GA_EXCLUDES(mu_);

  // Set once Stop() begins: running jobs should give up.
  const std::atomic<bool>& stopping() const { return stopping_; }

  // Drops the jobs not started yet and waits for the running ones.
  void Stop() GA_EXCLUDES(mu_, connecting_mu_);

  // On a handshake thread whose TCP connect is over and that uses the TPM
  // next: no interrupt reaches it from here on, as a TPM command must never
  // be interrupted.
  static void ShieldCurrentThread();

 private:
  void Work() GA_EXCLUDES(mu_);
  void MaskInterrupt(int how) const;

  const int threads_;
  const int interrupt_signal_;
  Mutex mu_;
  std::condition_variable_any cv_;
  // (priority, submission number) -> job.
  std::map<std::pair<int, uint64_t>, std::function<void()>> jobs_ GA_GUARDED_BY(mu_);
  uint64_t submitted_ GA_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_ GA_GUARDED_BY(mu_);
  bool stopped_ GA_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};
  Mutex connecting_mu_;
  std::set<pthread_t> connecting_ GA_GUARDED_BY(connecting_mu_);  // threads inside a TCP connect
};

inline constexpr std::chrono::seconds kTlsHandshakeTimeout(30);

struct HandshakeEnd {
  int rc;           // MOSQ_ERR_*
  std::string why;  // what failed, for the log ("" on success)
};

// Drives the TLS handshake that mosquitto_connect started on its (by then
// non-blocking) socket to the end, within kTlsHandshakeTimeout or until
// `stop`. Until libmosquitto sees the handshake finished it reads no packet
// and runs no callback, so this is safe on a thread other than the loop's.
HandshakeEnd FinishTlsHandshake(mosquitto* m, const std::atomic<bool>& stop);

}  // namespace ga::bridge
