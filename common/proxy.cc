#include "gateway_agent/proxy.h"

#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "gateway_agent/tls_step.h"

namespace ga {

namespace {

using Clock = std::chrono::steady_clock;

// Largest HTTP answer header read from a proxy: an answer is a status line
// and a few fields; a proxy that sends more is not answering CONNECT.
constexpr size_t kMaxHttpAnswer = 16 * 1024;

std::string Where(const ProxyEndpoint& proxy, const std::string& host, int port) {
  return "proxy " + proxy.Describe() + ", tunnel to " + host + ":" + std::to_string(port);
}

// Waits for `events` and says why not, as the text of an Unavailable error.
Status Wait(int fd, short events, Clock::time_point deadline, const std::atomic<bool>* stop) {
  tls::StepResult r = tls::WaitFd(fd, events, deadline, stop);
  switch (r.end) {
    case tls::StepEnd::kDone: return Status::Ok();
    case tls::StepEnd::kTimeout: return Unavailable("no answer in time");
    case tls::StepEnd::kStopped: return Unavailable("stopping");
    default: return Unavailable(std::strerror(r.socket_error));
  }
}

Status SendAll(int fd, std::string_view data, Clock::time_point deadline,
               const std::atomic<bool>* stop) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return Unavailable(std::string("sending: ") + std::strerror(errno));
    }
    GA_RETURN_IF_ERROR(Wait(fd, POLLOUT, deadline, stop));
  }
  return Status::Ok();
}

// Reads exactly `n` bytes: a proxy's answer is never followed by data of the
// peer before we send (TLS clients speak first), but reading no further keeps
// it that way for any answer.
Result<std::string> ReadExactly(int fd, size_t n, Clock::time_point deadline,
                                const std::atomic<bool>* stop) {
  std::string out;
  while (out.size() < n) {
    char buf[512];
    ssize_t got = recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    if (got > 0) {
      out.append(buf, static_cast<size_t>(got));
      continue;
    }
    if (got == 0) return Unavailable("the proxy closed the connection");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return Unavailable(std::string("reading: ") + std::strerror(errno));
    }
    GA_RETURN_IF_ERROR(Wait(fd, POLLIN, deadline, stop));
  }
  return out;
}

// The HTTP answer's header, up to and including the blank line; one byte at a
// time so nothing after it is taken from the socket.
Result<std::string> ReadHttpHeader(int fd, Clock::time_point deadline,
                                   const std::atomic<bool>* stop) {
  std::string header;
  while (header.size() < 4 || header.compare(header.size() - 4, 4, "\r\n\r\n") != 0) {
    if (header.size() >= kMaxHttpAnswer) return Unavailable("the proxy's answer is too long");
    GA_ASSIGN_OR_RETURN(std::string c, ReadExactly(fd, 1, deadline, stop));
    header += c;
  }
  return header;
}

std::string Base64(std::string_view in) {
  std::vector<unsigned char> out(4 * ((in.size() + 2) / 3) + 1);
  int n = EVP_EncodeBlock(out.data(), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  return std::string(reinterpret_cast<char*>(out.data()), static_cast<size_t>(n));
}

Status HttpConnect(int fd, const ProxyEndpoint& proxy, const std::string& host, int port,
                   Clock::time_point deadline, const std::atomic<bool>* stop) {
  const std::string target = host + ":" + std::to_string(port);
  std::string request = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (!proxy.user.empty()) {
    request += "Proxy-Authorization: Basic " + Base64(proxy.user + ":" + proxy.password) + "\r\n";
  }
  request += "\r\n";
  GA_RETURN_IF_ERROR(SendAll(fd, request, deadline, stop));
  GA_ASSIGN_OR_RETURN(std::string header, ReadHttpHeader(fd, deadline, stop));
  // "HTTP/1.1 200 Connection established"
  std::string_view status_line = std::string_view(header).substr(0, header.find("\r\n"));
  int code = 0;
  if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0 ||
      std::from_chars(status_line.data() + 9, status_line.data() + 12, code).ec != std::errc()) {
    return Unavailable(
        "the proxy did not answer in HTTP (is it a SOCKS proxy? then write "
        "socks5://)");
  }
  if (code >= 200 && code < 300) return Status::Ok();
  std::string answer(status_line.substr(9));
  if (code == 401 || (code == 407 && !proxy.user.empty())) {
    // 401: how tinyproxy, among others, answers credentials it refuses.
    return PermissionDenied("the proxy refused the user or password (" + answer +
                            "): check the user in aws.proxy and the password in "
                            "aws.proxy_password_file");
  }
  if (code == 407) {
    return PermissionDenied("the proxy wants authentication (" + answer +
                            "): give the user in aws.proxy (http://user@host:port) and the "
                            "password in aws.proxy_password_file");
  }
  if (code == 403) {
    return PermissionDenied("the proxy refused the tunnel (" + answer +
                            "): its rules must allow CONNECT to " + target +
                            " (or use aws.port = 443 if only that port is allowed)");
  }
  return Unavailable("the proxy refused the tunnel (" + answer + ")");
}

std::string_view Socks5ReplyText(unsigned char rep) {
  switch (rep) {
    case 1: return "general failure";
    case 2: return "not allowed by the proxy's rules";
    case 3: return "network unreachable";
    case 4: return "host unreachable (the proxy could not resolve or reach it)";
    case 5: return "connection refused";
    case 6: return "TTL expired";
    case 7: return "command not supported";
    case 8: return "address type not supported";
  }
  return "unknown reply";
}

Status Socks5Connect(int fd, const ProxyEndpoint& proxy, const std::string& host, int port,
                     Clock::time_point deadline, const std::atomic<bool>* stop) {
  if (host.size() > 255) return InvalidArgument("host name too long for SOCKS5: " + host);
  const bool auth = !proxy.user.empty();
  std::string greeting = auth ? std::string("\x05\x02\x00\x02", 4) : std::string("\x05\x01\x00", 3);
  GA_RETURN_IF_ERROR(SendAll(fd, greeting, deadline, stop));
  GA_ASSIGN_OR_RETURN(std::string choice, ReadExactly(fd, 2, deadline, stop));
  if (choice[0] != 0x05) return Unavailable("the proxy does not speak SOCKS5 (is it HTTP?)");
  const auto method = static_cast<unsigned char>(choice[1]);
  if (method == 0xff) {
    return PermissionDenied(
        auth ? "the proxy accepts none of our authentication methods"
             : "the proxy wants authentication: give the user in aws.proxy "
               "(socks5://user@host:port) and the password in aws.proxy_password_file");
  }
  if (method == 0x02) {
    if (!auth) return Unavailable("the proxy chose an authentication we did not offer");
    if (proxy.user.size() > 255 || proxy.password.size() > 255) {
      return InvalidArgument("SOCKS5 user names and passwords are at most 255 bytes");
    }
    std::string login(1, '\x01');
    login += static_cast<char>(proxy.user.size());
    login += proxy.user;
    login += static_cast<char>(proxy.password.size());
    login += proxy.password;
    GA_RETURN_IF_ERROR(SendAll(fd, login, deadline, stop));
    GA_ASSIGN_OR_RETURN(std::string verdict, ReadExactly(fd, 2, deadline, stop));
    if (verdict[1] != 0) {
      return PermissionDenied(
          "the proxy refused the login: check the user in aws.proxy and the password in "
          "aws.proxy_password_file");
    }
  } else if (method != 0x00) {
    return Unavailable("the proxy chose an authentication we did not offer");
  }
  // CONNECT by name: the proxy resolves the endpoint.
  std::string request("\x05\x01\x00\x03", 4);
  request += static_cast<char>(host.size());
  request += host;
  request += static_cast<char>((port >> 8) & 0xff);
  request += static_cast<char>(port & 0xff);
  GA_RETURN_IF_ERROR(SendAll(fd, request, deadline, stop));
  GA_ASSIGN_OR_RETURN(std::string reply, ReadExactly(fd, 4, deadline, stop));
  const auto rep = static_cast<unsigned char>(reply[1]);
  if (rep != 0) {
    std::string text = "the proxy refused the tunnel: " + std::string(Socks5ReplyText(rep));
    return rep == 2 ? PermissionDenied(text) : Unavailable(text);
  }
  // The bound address: IPv4, a name or IPv6, then the port.
  size_t rest = 0;
  switch (reply[3]) {
    case 0x01: rest = 4 + 2; break;
    case 0x04: rest = 16 + 2; break;
    case 0x03: {
      GA_ASSIGN_OR_RETURN(std::string len, ReadExactly(fd, 1, deadline, stop));
      rest = static_cast<unsigned char>(len[0]) + 2u;
      break;
    }
    default: return Unavailable("the proxy's SOCKS5 reply is malformed");
  }
  return ReadExactly(fd, rest, deadline, stop).status();
}

}  // namespace

std::string ProxyEndpoint::Describe() const {
  return std::string(kind == Kind::kHttp ? "http://" : "socks5://") +
         (user.empty() ? "" : user + "@") + host + ":" + std::to_string(port);
}

Result<ProxyEndpoint> ParseProxyUrl(std::string_view url) {
  ProxyEndpoint p;
  const std::string shape = "\"http://[user@]host:port\" or \"socks5://[user@]host:port\"";
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return InvalidArgument("must look like " + shape);
  std::string_view scheme = url.substr(0, scheme_end);
  if (scheme == "http") {
    p.kind = ProxyEndpoint::Kind::kHttp;
  } else if (scheme == "socks5" || scheme == "socks5h") {
    p.kind = ProxyEndpoint::Kind::kSocks5;
  } else if (scheme == "https") {
    return InvalidArgument(
        "a TLS connection to the proxy itself (https://) is not supported: use http:// (the "
        "tunnel carries TLS to AWS IoT end to end either way)");
  } else {
    return InvalidArgument("scheme \"" + std::string(scheme) + "\" is not supported: " + shape);
  }
  std::string_view rest = url.substr(scheme_end + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#") != std::string_view::npos) {
    return InvalidArgument("must be " + shape + ", without a path");
  }
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view user = rest.substr(0, at);
    if (user.find(':') != std::string_view::npos) {
      return InvalidArgument(
          "holds a password: put it in the file named by aws.proxy_password_file (mode 0600), "
          "and only the user in the URL");
    }
    if (user.empty()) return InvalidArgument("has an empty user before @");
    p.user = std::string(user);
    rest.remove_prefix(at + 1);
  }
  size_t colon = rest.rfind(':');
  std::string_view host = colon == std::string_view::npos ? rest : rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [IPv6]
  }
  if (host.empty()) return InvalidArgument("names no host: " + shape);
  if (colon == std::string_view::npos) return InvalidArgument("names no port: " + shape);
  std::string_view port = rest.substr(colon + 1);
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p.port);
  if (ec != std::errc() || end != port.data() + port.size() || p.port < 1 || p.port > 65535) {
    return InvalidArgument("port \"" + std::string(port) + "\" is not a number from 1 to 65535");
  }
  p.host = std::string(host);
  return p;
}

Status OpenTunnel(int fd, const ProxyEndpoint& proxy, const std::string& host, int port,
                  Clock::time_point deadline, const std::atomic<bool>* stop) {
  Status s = proxy.kind == ProxyEndpoint::Kind::kHttp
                 ? HttpConnect(fd, proxy, host, port, deadline, stop)
                 : Socks5Connect(fd, proxy, host, port, deadline, stop);
  if (s.ok()) return s;
  return Status(s.code(), Where(proxy, host, port) + ": " + s.message());
}

}  // namespace ga
