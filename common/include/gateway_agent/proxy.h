// Cloud connections through a proxy: an HTTP proxy's CONNECT method (RFC
// 9110, section 9.3.6) or a SOCKS5 proxy (RFC 1928, with the user name and
// password of RFC 1929). The agent opens the tunnel itself on a TCP
// connection to the proxy, then speaks TLS through it as it would to AWS IoT:
// the server certificate and host name are verified end to end, and the
// proxy sees only the endpoint's name and port.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga {

struct ProxyEndpoint {
  enum class Kind { kHttp, kSocks5 };
  Kind kind = Kind::kHttp;
  std::string host;
  int port = 0;
  std::string user;      // empty: no authentication
  std::string password;  // from aws.proxy_password_file, never from the URL

  // "http://user@host:port": what logs and status show (no password).
  std::string Describe() const;
};

// "http://[user@]host:port" or "socks5://[user@]host:port" (also socks5h,
// the same here: the proxy always resolves the endpoint's name). A password
// in the URL is refused: it belongs in a file only the agent can read.
Result<ProxyEndpoint> ParseProxyUrl(std::string_view url);

// Over `fd`, a TCP connection to `proxy` (blocking or not), asks for a tunnel
// to host:port and reads the proxy's answer, nothing past it. On success the
// connection carries the peer's bytes from then on. Errors say what the proxy
// answered and what to fix: Unavailable for a network failure (no answer, the
// tunnel refused by the network behind the proxy), PermissionDenied for an
// authentication the proxy wants or refused (407, RFC 1929 failure) and for a
// tunnel the proxy's rules forbid (403, SOCKS5 "not allowed").
Status OpenTunnel(int fd, const ProxyEndpoint& proxy, const std::string& host, int port,
                  std::chrono::steady_clock::time_point deadline,
                  const std::atomic<bool>* stop = nullptr);

}  // namespace ga
