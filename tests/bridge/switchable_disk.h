// A directory that turns read-only and back while files stay open in it: a
// FUSE file system in this process passing every call through to a backing
// directory, or refusing every change with EROFS while read-only (as the
// kernel does once a disk is remounted read-only: writes on descriptors
// already open fail too). The process that serves it must not open files
// there itself: a page it dirtied may then wait on its own server.
//
// Why not a tmpfs remounted read-only: the kernel refuses `mount -o
// remount,ro` (EBUSY) while a process holds a file open for writing there,
// as the agent does with its databases; and ext4's own switch to read-only
// on an error (errors=remount-ro) cannot be undone without unmounting it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <thread>

#include "gateway_agent/status.h"

struct fuse;

namespace ga::testing {

class SwitchableDisk {
 public:
  // Serves `backing` (created 0700 when absent) at `at` (an existing
  // directory, hidden meanwhile). Needs root and /dev/fuse.
  static Result<std::unique_ptr<SwitchableDisk>> Mount(const std::filesystem::path& backing,
                                                       const std::filesystem::path& at);
  // Unmounts (lazily) and ends the connection.
  ~SwitchableDisk();
  SwitchableDisk(const SwitchableDisk&) = delete;
  SwitchableDisk& operator=(const SwitchableDisk&) = delete;

  void SetReadOnly(bool read_only) { read_only_ = read_only; }
  bool read_only() const { return read_only_; }
  // The calls refused with EROFS so far.
  int refused() const { return refused_; }

  // For the file system's calls.
  const std::filesystem::path& backing() const { return backing_; }
  // EROFS (counted) while read-only, else 0.
  int Refuse() {
    if (!read_only_) return 0;
    ++refused_;
    return -EROFS;
  }

 private:
  SwitchableDisk() = default;
  std::filesystem::path backing_, at_;
  std::atomic<bool> read_only_{false};
  std::atomic<int> refused_{0};
  struct fuse* fuse_ = nullptr;
  dev_t dev_ = 0;
  std::thread loop_;
};

}  // namespace ga::testing
