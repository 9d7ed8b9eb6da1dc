#include "gateway_agent/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "gateway_agent/unique_fd.h"

namespace ga {

namespace {

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

// Gives the written temporary file its final name.
Status Publish(const std::string& tmp, const std::filesystem::path& path, IfExists if_exists) {
  if (if_exists == IfExists::kReplace) {
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      return ErrnoStatus("rename " + tmp + " to " + path.string(), errno);
    }
    return Status::Ok();
  }
  // link() refuses an existing target atomically, unlike rename().
  if (link(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST) return {Code::kAlreadyExists, path.string() + " exists; not overwriting"};
    return ErrnoStatus("link " + tmp + " to " + path.string(), err);
  }
  unlink(tmp.c_str());
  return Status::Ok();
}

}  // namespace

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, mode_t mode,
                       IfExists if_exists) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
  UniqueFd fd(mkstemp(tmpl.data()));
  if (!fd.valid()) return ErrnoStatus("create a temporary file in " + dir.string(), errno);
  auto fail = [&](Status s) {
    unlink(tmpl.c_str());
    return s;
  };
  if (fchmod(fd.get(), mode) != 0) return fail(ErrnoStatus("chmod " + tmpl, errno));
  if (Status s = WriteAll(fd.get(), data, tmpl); !s.ok()) return fail(std::move(s));
  if (fsync(fd.get()) != 0) return fail(ErrnoStatus("fsync " + tmpl, errno));
  if (Status s = fd.Close(tmpl); !s.ok()) return fail(std::move(s));
  if (Status s = Publish(tmpl, path, if_exists); !s.ok()) return fail(std::move(s));
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.valid()) fsync(dfd.get());
  return Status::Ok();
}

Status EnsureDirectory(const std::filesystem::path& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return {Code::kIo, "create directory " + path.string() + ": " + ec.message()};
  if (chmod(path.c_str(), mode) != 0) return ErrnoStatus("chmod " + path.string(), errno);
  return Status::Ok();
}

Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | (max_bytes > 0 ? O_NONBLOCK : 0)));
  if (!fd.valid()) return ErrnoStatus("open " + path.string(), errno);
  if (max_bytes > 0) {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path.string(), errno);
    if (!S_ISREG(st.st_mode)) return InvalidArgument(path.string() + " is not a regular file");
    if (static_cast<size_t>(st.st_size) > max_bytes) {
      return InvalidArgument(path.string() + " is larger than " + std::to_string(max_bytes) +
                             " bytes; is it the right file?");
    }
  }
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

Result<std::string> ReadSecretFile(const std::filesystem::path& path, size_t max_bytes) {
  GA_ASSIGN_OR_RETURN(std::string secret, ReadFile(path, max_bytes));
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  return secret;
}

}  // namespace ga
