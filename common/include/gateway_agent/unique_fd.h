// The owner of a file descriptor: closes it when destroyed. Move-only.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

#include "gateway_agent/status.h"

namespace ga {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes `fd`; a negative value (a failed open(), socket(), ...) owns nothing.
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership: the caller closes the returned descriptor.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }

  // Closes the descriptor held (errors ignored) and takes `fd`.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

  // Closes now and reports close()'s error ("close <what>: ..."), for writes
  // whose last error only close() may report.
  Status Close(std::string_view what) {
    if (fd_ < 0) return Status::Ok();
    if (::close(std::exchange(fd_, -1)) != 0)
      return ErrnoStatus("close " + std::string(what), errno);
    return Status::Ok();
  }

 private:
  int fd_ = -1;
};

}  // namespace ga
