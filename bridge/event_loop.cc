#include "event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gateway_agent/log.h"

namespace ga::bridge {

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return ErrnoStatus("epoll_create1", errno);
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl", errno);
  }
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(epoll), std::move(wake)));
}

void EventLoop::Post(std::function<void()> fn) {
  {
    MutexLock lock(mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

void EventLoop::Watch(MqttConnection& c) {
  int fd = mosquitto_socket(c.mosq.get());
  bool want = mosquitto_want_write(c.mosq.get());
  if (fd == c.fd && want == c.want_write) return;
  if (c.fd >= 0 && c.fd != fd) {
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd, nullptr);
    c.fd = -1;
  }
  if (fd < 0) return;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.ptr = &c;
  if (epoll_ctl(epoll_.get(), c.fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0) {
    c.fd = fd;
    c.want_write = want;
  }
}

void EventLoop::Unwatch(MqttConnection& c) {
  if (c.fd >= 0) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd, nullptr);
  c.fd = -1;
  c.want_write = false;
}

bool EventLoop::Wait(std::chrono::milliseconds timeout, std::vector<Event>* events) {
  events->clear();
  int n = epoll_wait(epoll_.get(), ready_.data(), static_cast<int>(ready_.size()),
                     static_cast<int>(timeout.count()));
  if (n < 0) {
    if (errno == EINTR) return true;
    log::Error(std::string("epoll_wait: ") + std::strerror(errno));
    return false;
  }
  for (int i = 0; i < n; ++i) {
    const uint32_t what = ready_[i].events;
    events->push_back({static_cast<MqttConnection*>(ready_[i].data.ptr),
                       (what & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0, (what & EPOLLOUT) != 0});
  }
  return true;
}

void EventLoop::RunPosted() {
  uint64_t v;
  (void)!read(wake_.get(), &v, sizeof v);
  std::vector<std::function<void()>> work;
  {
    MutexLock lock(mu_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn();
}

}  // namespace ga::bridge
