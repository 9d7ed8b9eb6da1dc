// The agent's control socket: a Unix stream socket in the runtime directory
// through which `gateway-agent sensor ...` talks to the running agent.
//
// Only root and the agent's own user may use it (SO_PEERCRED). One request
// line per connection; the answer is "ok" or "error <message>" on the first
// line, then the body.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gateway_agent/status.h"
#include "gateway_agent/unique_fd.h"

namespace ga {

struct ControlReply {
  bool ok = true;
  std::string body;  // ok: the body; !ok: the error message
};

using ControlHandler = std::function<ControlReply(const std::vector<std::string>& words)>;

class ControlServer {
 public:
  ~ControlServer();
  // Binds `path` (mode 0600, replacing a stale socket) and serves requests on
  // a thread of its own until destroyed.
  static Result<std::unique_ptr<ControlServer>> Start(const std::filesystem::path& path,
                                                      ControlHandler handler);

 private:
  ControlServer() = default;
  void Serve();
  UniqueFd fd_;
  UniqueFd wake_read_, wake_write_;  // a byte written to wake_write_ stops Serve
  std::filesystem::path path_;
  ControlHandler handler_;
  std::thread thread_;
};

// Sends one request to the agent at `path`; returns the reply.
Result<ControlReply> ControlRequest(const std::filesystem::path& path,
                                    const std::vector<std::string>& words);

}  // namespace ga
