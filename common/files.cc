#include "gateway_agent/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace ga {

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + what, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
  int raw = mkstemp(tmpl.data());
  if (raw < 0) return ErrnoStatus("create a temporary file in " + dir.string(), errno);
  Fd fd(raw);
  auto fail = [&](Status s) {
    unlink(tmpl.c_str());
    return s;
  };
  if (fchmod(fd.get(), mode) != 0) return fail(ErrnoStatus("chmod " + tmpl, errno));
  if (Status s = WriteAll(fd.get(), data, tmpl); !s.ok()) return fail(std::move(s));
  if (fsync(fd.get()) != 0) return fail(ErrnoStatus("fsync " + tmpl, errno));
  if (close(fd.Release()) != 0) return fail(ErrnoStatus("close " + tmpl, errno));
  if (rename(tmpl.c_str(), path.c_str()) != 0) {
    return fail(ErrnoStatus("rename " + tmpl + " to " + path.string(), errno));
  }
  Fd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) fsync(dfd.get());
  return Status::Ok();
}

Status EnsureDirectory(const std::filesystem::path& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return {Code::kIo, "create directory " + path.string() + ": " + ec.message()};
  if (chmod(path.c_str(), mode) != 0) return ErrnoStatus("chmod " + path.string(), errno);
  return Status::Ok();
}

Result<std::string> ReadFile(const std::filesystem::path& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("open " + path.string(), errno);
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + path.string(), errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace ga
