#include "gateway_agent/agent/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "gateway_agent/log.h"

namespace ga {

namespace {

constexpr size_t kMaxRequest = 4096;

Result<sockaddr_un> Address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof addr.sun_path) {
    return InvalidArgument("control socket path too long: " + path.string());
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

// Words are separated by spaces; a request never carries spaces inside a word
// (sensor ids and thing names cannot contain them).
std::vector<std::string> Split(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

void WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

ControlServer::~ControlServer() {
  if (wake_write_.valid()) {
    char c = 0;
    (void)!write(wake_write_.get(), &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  if (fd_.valid()) {
    fd_.reset();
    unlink(path_.c_str());
  }
}

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const std::filesystem::path& path,
                                                            ControlHandler handler) {
  std::unique_ptr<ControlServer> server(new ControlServer());
  server->path_ = path;
  server->handler_ = std::move(handler);
  GA_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  server->fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!server->fd_.valid()) return ErrnoStatus("socket", errno);
  unlink(path.c_str());
  mode_t old = umask(0177);
  int rc = bind(server->fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) return ErrnoStatus("bind control socket " + path.string(), errno);
  if (listen(server->fd_.get(), 16) != 0) return ErrnoStatus("listen " + path.string(), errno);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  server->wake_read_.reset(wake[0]);
  server->wake_write_.reset(wake[1]);
  ControlServer* raw = server.get();
  server->thread_ = std::thread([raw] { raw->Serve(); });
  return server;
}

void ControlServer::Serve() {
  while (true) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    UniqueFd client(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client.valid()) continue;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != 0 && cred.uid != geteuid())) {
      log::Warning("control socket: refused a request from uid " + std::to_string(cred.uid) +
                   " (only root and the agent's user may control it)");
      WriteAll(client.get(), "error permission denied: run as root or as the agent's user\n");
      continue;
    }
    timeval tv{5, 0};
    setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string line;
    char buf[512];
    while (line.find('\n') == std::string::npos && line.size() < kMaxRequest) {
      ssize_t n = recv(client.get(), buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    line = line.substr(0, line.find('\n'));
    ControlReply reply = handler_(Split(line));
    std::string out = reply.ok ? "ok\n" + reply.body : "error " + reply.body + "\n";
    if (!out.empty() && out.back() != '\n') out += '\n';
    WriteAll(client.get(), out);
  }
}

Result<ControlReply> ControlRequest(const std::filesystem::path& path,
                                    const std::vector<std::string>& words) {
  GA_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoStatus("socket", errno);
  const int fd = sock.get();
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    return Status(Code::kUnavailable, "the agent is not running, or its control socket " +
                                          path.string() +
                                          " is not reachable: " + std::strerror(err));
  }
  std::string line;
  for (const auto& w : words) line += (line.empty() ? "" : " ") + w;
  WriteAll(fd, line + "\n");
  std::string answer;
  char buf[4096];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ControlReply reply;
  if (answer.rfind("ok\n", 0) == 0) {
    reply.body = answer.substr(3);
  } else if (answer.rfind("error ", 0) == 0) {
    reply.ok = false;
    reply.body = answer.substr(6);
    while (!reply.body.empty() && reply.body.back() == '\n') reply.body.pop_back();
  } else {
    return Status(Code::kInternal, "unexpected answer from the agent: " + answer);
  }
  return reply;
}

}  // namespace ga
