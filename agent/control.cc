#include "gateway_agent/agent/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "gateway_agent/log.h"
#include "gateway_agent/rate.h"

namespace ga {

namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

constexpr size_t kHeader = 4;

Result<sockaddr_un> Address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof addr.sun_path) {
    return InvalidArgument("control socket path too long: " + path.string());
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

std::string Frame(const std::string& payload) {
  const auto n = static_cast<uint32_t>(payload.size());
  std::string out;
  out.reserve(kHeader + payload.size());
  for (int shift : {24, 16, 8, 0}) out.push_back(static_cast<char>((n >> shift) & 0xff));
  return out + payload;
}

// The length in a frame's header; `data` holds at least kHeader bytes.
size_t FrameLength(const std::string& data) {
  size_t n = 0;
  for (size_t i = 0; i < kHeader; ++i) n = (n << 8) | static_cast<unsigned char>(data[i]);
  return n;
}

// Text that is not UTF-8 (a sensor id is checked only after it arrives) is
// replaced, not thrown on.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ReplyFrame(const ControlReply& reply) {
  Json j = reply.ok ? Json{{"ok", true}, {"body", reply.body}}
                    : Json{{"ok", false}, {"error", reply.body}};
  return Frame(Dump(j));
}

std::string TypeName(const Json& j) {
  return j.type_name();
}

Result<ControlCommand> ParseRequest(const std::string& payload) {
  Json j = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument("the request is not valid JSON");
  if (!j.is_object()) {
    return InvalidArgument("the request must be a JSON object, not " + TypeName(j));
  }
  ControlCommand request;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return InvalidArgument("field \"" + key + "\" must be a string, not " + TypeName(value));
    }
    if (key == "command") {
      request.command = value.get<std::string>();
    } else {
      request.fields[key] = value.get<std::string>();
    }
  }
  if (!j.contains("command")) return InvalidArgument("the request has no field \"command\"");
  return request;
}

int PollMillis(SteadyClock::time_point deadline) {
  auto left = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60 * 60 * 1000));
}

bool WouldBlock(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

// "10 s", "0.5 s"
std::string SecondsText(milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

std::string ControlCommand::Field(const std::string& name) const {
  auto it = fields.find(name);
  return it == fields.end() ? std::string() : it->second;
}

Status ControlCommand::CheckFields(std::initializer_list<std::string_view> required,
                                   std::initializer_list<std::string_view> optional) const {
  for (std::string_view name : required) {
    if (!fields.count(std::string(name))) {
      return InvalidArgument(command + ": the request has no field \"" + std::string(name) + "\"");
    }
  }
  for (const auto& field : fields) {
    const std::string& name = field.first;
    auto is = [&name](std::string_view n) { return n == name; };
    if (std::none_of(required.begin(), required.end(), is) &&
        std::none_of(optional.begin(), optional.end(), is)) {
      return InvalidArgument(command + ": unknown field \"" + name + "\"");
    }
  }
  return Status::Ok();
}

// One connection: its request coming in, then its reply going out.
struct ControlServer::Client {
  UniqueFd fd;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool replying = false;
  SteadyClock::time_point deadline;
};

namespace {

// Sends what it can of `c.out` without blocking; false when the connection is
// done (all sent, or the peer gone).
bool SendSome(int fd, const std::string& out, size_t& sent) {
  while (sent < out.size()) {
    ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && WouldBlock(errno)) return true;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return false;
}

// Refuses a connection with one error reply, sent if the socket takes it now.
void Refuse(UniqueFd fd, const std::string& message) {
  size_t sent = 0;
  (void)SendSome(fd.get(), ReplyFrame({false, message}), sent);
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
                                                            ControlHandler handler,
                                                            milliseconds deadline) {
  std::unique_ptr<ControlServer> server(new ControlServer());
  server->path_ = path;
  server->handler_ = std::move(handler);
  server->deadline_ = deadline;
  GA_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  server->fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!server->fd_.valid()) return ErrnoStatus("socket", errno);
  unlink(path.c_str());
  mode_t old = umask(0177);
  int rc = bind(server->fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) return ErrnoStatus("bind control socket " + path.string(), errno);
  if (listen(server->fd_.get(), SOMAXCONN) != 0) {
    return ErrnoStatus("listen " + path.string(), errno);
  }
  int wake[2];
  if (pipe2(wake, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  server->wake_read_.reset(wake[0]);
  server->wake_write_.reset(wake[1]);
  ControlServer* raw = server.get();
  server->thread_ = std::thread([raw] { raw->Serve(); });
  return server;
}

void ControlServer::Serve() {
  std::vector<std::unique_ptr<Client>> clients;
  // After accept() fails for want of descriptors, the listening socket stays
  // readable: it is left alone for a while instead of spinning on it.
  SteadyClock::time_point accept_after{};

  // Reads what has arrived; once the request is whole, runs the handler and
  // starts the reply. False when the connection is done.
  auto step = [this](Client& c) -> bool {
    if (!c.replying) {
      char buf[16 * 1024];
      std::optional<ControlReply> reply;
      while (!reply) {
        // Never past the end of the frame (its header first, then its length).
        size_t want = kHeader > c.in.size() ? kHeader - c.in.size() : sizeof buf;
        if (c.in.size() >= kHeader)
          want = std::min(want, kHeader + FrameLength(c.in) - c.in.size());
        ssize_t n = recv(c.fd.get(), buf, want, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && WouldBlock(errno)) return true;
        if (n <= 0) return false;  // gone before sending a whole request
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() < kHeader) continue;
        const size_t length = FrameLength(c.in);
        if (length > kMaxControlRequest) {
          reply = ControlReply{
              false, "a request of " + std::to_string(length) + " bytes is longer than the " +
                         std::to_string(kMaxControlRequest) + " bytes a control request may have"};
        } else if (c.in.size() == kHeader + length) {
          auto request = ParseRequest(c.in.substr(kHeader));
          reply =
              request.ok() ? handler_(*request) : ControlReply{false, request.status().message()};
        }
      }
      c.out = ReplyFrame(*reply);
      c.in.clear();
      c.replying = true;
      c.deadline = SteadyClock::now() + deadline_;
    }
    return SendSome(c.fd.get(), c.out, c.sent);
  };

  auto accept_all = [&] {
    while (true) {
      UniqueFd client(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!client.valid()) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (!WouldBlock(errno)) {
          log::Warning(ErrnoStatus("control socket: accept", errno).message());
          accept_after = SteadyClock::now() + std::chrono::milliseconds(200);
        }
        return;
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
          (cred.uid != 0 && cred.uid != geteuid())) {
        log::Warning("control socket: refused a request from uid " + std::to_string(cred.uid) +
                     " (only root and the agent's user may control it)");
        Refuse(std::move(client), "permission denied: run as root or as the agent's user");
        continue;
      }
      if (clients.size() >= kMaxControlClients) {
        Refuse(std::move(client), "the agent is busy with " + std::to_string(clients.size()) +
                                      " other control connections; try again");
        continue;
      }
      auto c = std::make_unique<Client>();
      c->fd = std::move(client);
      c->deadline = SteadyClock::now() + deadline_;
      // The request is usually there already: answer it now, which keeps
      // the table small when many clients come at once.
      if (step(*c)) clients.push_back(std::move(c));
    }
  };

  std::vector<pollfd> fds;
  while (true) {
    const auto now = SteadyClock::now();
    std::erase_if(clients, [&](const std::unique_ptr<Client>& c) {
      if (now < c->deadline) return false;
      log::Warning(c->replying
                       ? "control socket: dropped a client that did not take its reply in time"
                       : "control socket: dropped a client that did not send its request within " +
                             SecondsText(deadline_));
      return true;
    });
    const bool accepting = now >= accept_after;
    fds.assign({{wake_read_.get(), POLLIN, 0}, {accepting ? fd_.get() : -1, POLLIN, 0}});
    SteadyClock::time_point wake = accepting ? SteadyClock::time_point::max() : accept_after;
    for (const auto& c : clients) {
      fds.push_back({c->fd.get(), static_cast<short>(c->replying ? POLLOUT : POLLIN), 0});
      wake = std::min(wake, c->deadline);
    }
    int timeout = wake == SteadyClock::time_point::max() ? -1 : PollMillis(wake);
    if (poll(fds.data(), fds.size(), timeout) < 0) {
      if (errno == EINTR) continue;
      log::Error(ErrnoStatus("control socket: poll", errno).message() +
                 "; the control socket stops answering");
      return;
    }
    if (fds[0].revents) return;
    for (size_t i = 0; i < clients.size(); ++i) {
      if (fds[i + 2].revents && !step(*clients[i])) clients[i].reset();
    }
    std::erase(clients, nullptr);
    if (fds[1].revents) accept_all();
  }
}

Result<ControlReply> ControlRequest(const std::filesystem::path& path,
                                    const ControlCommand& request, milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  const auto timed_out = [&] {
    return Status(Code::kTimeout, "the agent did not answer within " + SecondsText(timeout) +
                                      " on " + path.string() +
                                      "; is it stuck? journalctl -u gateway-agent");
  };
  Json j = Json(request.fields);
  j["command"] = request.command;
  const std::string payload = Dump(j);
  if (payload.size() > kMaxControlRequest) {
    return InvalidArgument("the request is " + std::to_string(payload.size()) +
                           " bytes, more than the " + std::to_string(kMaxControlRequest) +
                           " a control request may have");
  }
  const std::string frame = Frame(payload);

  GA_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ErrnoStatus("socket", errno);
  const int fd = sock.get();
  // A blocking connect waits while the agent's listen queue is full, for at
  // most the send timeout.
  auto whole = std::chrono::duration_cast<std::chrono::microseconds>(timeout);
  timeval tv{static_cast<time_t>(whole.count() / 1000000),
             static_cast<suseconds_t>(whole.count() % 1000000)};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (WouldBlock(err) || err == EINPROGRESS) return timed_out();
    return Status(Code::kUnavailable, "the agent is not running, or its control socket " +
                                          path.string() +
                                          " is not reachable: " + std::strerror(err));
  }
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    return ErrnoStatus("fcntl " + path.string(), errno);
  }
  // Waits until `fd` is ready for `events`; false when the time is up.
  auto wait = [&](short events) -> Result<bool> {
    while (true) {
      pollfd p{fd, events, 0};
      int n = poll(&p, 1, PollMillis(deadline));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus("poll " + path.string(), errno);
      return n > 0;
    }
  };

  for (size_t sent = 0; sent < frame.size();) {
    GA_ASSIGN_OR_RETURN(bool ready, wait(POLLOUT));
    if (!ready) return timed_out();
    ssize_t n = send(fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || WouldBlock(errno))) continue;
    // The agent may have answered (an error) and closed before taking it all.
    if (n < 0) break;
    sent += static_cast<size_t>(n);
  }

  std::string answer;
  size_t want = kHeader;
  char buf[16 * 1024];
  while (answer.size() < want) {
    GA_ASSIGN_OR_RETURN(bool ready, wait(POLLIN));
    if (!ready) return timed_out();
    ssize_t n = recv(fd, buf, std::min(sizeof buf, want - answer.size()), 0);
    if (n < 0 && (errno == EINTR || WouldBlock(errno))) continue;
    if (n <= 0) {
      return Status(Code::kUnavailable, "the agent closed the control connection " + path.string() +
                                            " without answering; see journalctl -u gateway-agent");
    }
    answer.append(buf, static_cast<size_t>(n));
    if (answer.size() == kHeader) {
      const size_t length = FrameLength(answer);
      if (length > kMaxControlReply) {
        return Status(Code::kInternal, "the agent's reply on " + path.string() + " claims " +
                                           std::to_string(length) + " bytes, more than " +
                                           std::to_string(kMaxControlReply));
      }
      want = kHeader + length;
    }
  }
  Json r = Json::parse(answer.substr(kHeader), nullptr, /*allow_exceptions=*/false);
  const char* text = nullptr;
  ControlReply reply;
  if (r.is_object() && r.contains("ok") && r["ok"].is_boolean()) {
    reply.ok = r["ok"].get<bool>();
    text = reply.ok ? "body" : "error";
  }
  if (text == nullptr || !r.contains(text) || !r[text].is_string()) {
    return Status(Code::kInternal, "unexpected answer from the agent on " + path.string() + ": " +
                                       answer.substr(kHeader, 200));
  }
  reply.body = r[text].get<std::string>();
  return reply;
}

}  // namespace ga
