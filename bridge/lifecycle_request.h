// One lifecycle request (aws::LifecycleAsk: a retirement, a CA hand-over)
// asked over an identity's bridge connection: the caller (an enrollment
// worker) waits on it, the loop completes it once the Lambda answers, or the
// connection ends first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <string>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/thread_annotations.h"

namespace ga::bridge {

class LifecycleRequest {
 public:
  explicit LifecycleRequest(aws::LifecycleAsk ask) : ask_(std::move(ask)) {}

  const aws::LifecycleAsk& ask() const { return ask_; }

  // The first completion counts; later ones are ignored.
  void Complete(LifecycleReply reply) GA_EXCLUDES(mu_) {
    {
      MutexLock lock(mu_);
      if (done_) return;
      done_ = true;
      reply_ = std::move(reply);
    }
    cv_.notify_all();
  }

  // The reply, or after `timeout` one that says no answer came.
  LifecycleReply Wait(std::chrono::milliseconds timeout) GA_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!done_ && cv_.wait_until(mu_, until) == std::cv_status::no_timeout) {
    }
    if (done_) return reply_;
    LifecycleReply none;
    none.sent = true;
    none.detail = "no answer within " + std::to_string(timeout.count()) + " ms";
    return none;
  }

 private:
  const aws::LifecycleAsk ask_;
  Mutex mu_;
  std::condition_variable_any cv_;
  bool done_ GA_GUARDED_BY(mu_) = false;
  LifecycleReply reply_ GA_GUARDED_BY(mu_);
};

}  // namespace ga::bridge
