// The agent's control socket: a Unix stream socket in the runtime directory
// through which `gateway-agent sensor ...` talks to the running agent.
//
// Protocol: one request and one reply per connection. Each is a frame: its
// length as a 4-byte big-endian unsigned, then that many bytes of one JSON
// object. A request is {"command":"sensor-add","id":"s1",...}: the command
// and its arguments as string fields, never split or re-joined, so an
// argument may hold spaces, newlines or nothing at all. A reply is
// {"ok":true,"body":"..."} or {"ok":false,"error":"..."}.
//
// A request frame may carry at most kMaxControlRequest bytes; a longer one is
// refused with an error reply and the connection closed. The whole request
// must arrive within kControlRequestDeadline of the connection being
// accepted, and the reply must be taken within the same time again; a client
// that is slower is dropped. Only root and the agent's own user may use the
// socket (SO_PEERCRED).
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "gateway_agent/status.h"
#include "gateway_agent/unique_fd.h"

namespace ga {

inline constexpr size_t kMaxControlRequest = 64 * 1024;
// Replies are bounded too (a client must not read without end), but higher:
// `sensor list` of a large gateway is long.
inline constexpr size_t kMaxControlReply = 16 * 1024 * 1024;
inline constexpr std::chrono::seconds kControlRequestDeadline{5};
// Connections served at once; one more is answered "busy" and closed.
inline constexpr size_t kMaxControlClients = 64;
inline constexpr std::chrono::seconds kDefaultControlTimeout{10};

// A request: the command and its other fields, each a string, as sent.
struct ControlCommand {
  std::string command;
  std::map<std::string, std::string> fields;

  // The field's value; empty when the request does not have it.
  std::string Field(const std::string& name) const;
  // An error naming the first field that is missing from `required`'s, or is
  // in neither list.
  Status CheckFields(std::initializer_list<std::string_view> required,
                     std::initializer_list<std::string_view> optional = {}) const;
};

struct ControlReply {
  bool ok = true;
  std::string body;  // ok: the body; !ok: the error message
};

// Called on the server's thread, one request at a time: it should be short.
using ControlHandler = std::function<ControlReply(const ControlCommand& request)>;

class ControlServer {
 public:
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds `path` (mode 0600, replacing a stale socket) and serves requests on
  // a thread of its own until destroyed. `deadline` is the time a client has
  // to send its request, and again to take its reply.
  static Result<std::unique_ptr<ControlServer>> Start(
      const std::filesystem::path& path, ControlHandler handler,
      std::chrono::milliseconds deadline = kControlRequestDeadline);

 private:
  struct Client;
  ControlServer() = default;
  void Serve();
  UniqueFd fd_;
  UniqueFd wake_read_, wake_write_;  // a byte written to wake_write_ stops Serve
  std::filesystem::path path_;
  ControlHandler handler_;
  std::chrono::milliseconds deadline_{kControlRequestDeadline};
  std::thread thread_;
};

// Sends one request to the agent at `path` and returns its reply. Everything
// (connect, send, the agent's work, receive) must finish within `timeout`;
// otherwise a kTimeout error says the agent did not answer.
Result<ControlReply> ControlRequest(const std::filesystem::path& path,
                                    const ControlCommand& request,
                                    std::chrono::milliseconds timeout = kDefaultControlTimeout);

}  // namespace ga
