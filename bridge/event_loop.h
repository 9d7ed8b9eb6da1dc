// The bridge's epoll set: the sockets of its MQTT connections, and a wake-up
// for work posted from other threads (identity changes, finished handshakes,
// stop). Level-triggered; one thread waits on it.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "gateway_agent/status.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/unique_fd.h"
#include "mqtt_connection.h"

namespace ga::bridge {

class EventLoop {
 public:
  static Result<std::unique_ptr<EventLoop>> Create();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Thread-safe: `fn` runs on the loop's thread, after the current batch.
  void Post(std::function<void()> fn) GA_EXCLUDES(mu_);

  // Registers the client's current socket (and its wish to write); a changed
  // socket replaces the old one.
  void Watch(MqttConnection& c);
  void Unwatch(MqttConnection& c);

  // One event: a connection ready to read and/or write, or the wake-up
  // (connection null).
  struct Event {
    MqttConnection* connection;
    bool readable;
    bool writable;
  };
  // Waits up to `timeout` for events; fills `events`. Returns false on an
  // epoll failure (logged).
  bool Wait(std::chrono::milliseconds timeout, std::vector<Event>* events);

  // Runs the work posted so far.
  void RunPosted() GA_EXCLUDES(mu_);

 private:
  EventLoop(UniqueFd epoll, UniqueFd wake) : epoll_(std::move(epoll)), wake_(std::move(wake)) {}

  UniqueFd epoll_;
  UniqueFd wake_;
  std::vector<epoll_event> ready_ = std::vector<epoll_event>(256);
  Mutex mu_;
  std::vector<std::function<void()>> posted_ GA_GUARDED_BY(mu_);
};

}  // namespace ga::bridge
