#include "gateway_agent/agent/jitr_connect.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/proxy.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/tls_step.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/unique_fd.h"

namespace ga {

namespace {

ConnectAttempt Network(std::string detail, bool name_not_found = false) {
  ConnectAttempt a;
  a.outcome = ConnectOutcome::kNetworkError;
  a.name_not_found = name_not_found;
  a.detail = std::move(detail);
  return a;
}

// OpenSSL records a received alert as reason SSL_AD_REASON_OFFSET + alert.
int ReceivedAlert() {
  unsigned long e = ERR_peek_error();
  if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL) return -1;
  int reason = ERR_GET_REASON(e);
  if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
    return reason - SSL_AD_REASON_OFFSET;
  }
  return -1;
}

void PutLength(std::string& out, size_t len) {
  do {
    unsigned char b = len % 128;
    len /= 128;
    if (len > 0) b |= 0x80;
    out += static_cast<char>(b);
  } while (len > 0);
}

void PutString(std::string& out, std::string_view s) {
  out += static_cast<char>((s.size() >> 8) & 0xff);
  out += static_cast<char>(s.size() & 0xff);
  out += s;
}

// MQTT 3.1.1 CONNECT, by default with a clean session: a probe leaves no
// session behind.
std::string ConnectPacket(std::string_view client_id, int keepalive, bool clean = true) {
  std::string body;
  PutString(body, "MQTT");
  body += static_cast<char>(4);                 // protocol level 3.1.1
  body += static_cast<char>(clean ? 0x02 : 0);  // clean session
  body += static_cast<char>((keepalive >> 8) & 0xff);
  body += static_cast<char>(keepalive & 0xff);
  PutString(body, client_id);
  std::string packet(1, static_cast<char>(0x10));
  PutLength(packet, body.size());
  return packet + body;
}

ConnectAttempt FromTlsFailure(SSL* ssl, const tls::StepResult& step, std::string_view stage) {
  ConnectAttempt a;
  long verify = SSL_get_verify_result(ssl);
  int alert = ReceivedAlert();
  std::string errors = DrainOpenSslErrors();
  if (verify != X509_V_OK) {
    a.outcome = ConnectOutcome::kServerUntrusted;
    a.detail = std::string("the server certificate is not trusted: ") +
               X509_verify_cert_error_string(verify);
    return a;
  }
  if (alert >= 0) {
    a.outcome = ConnectOutcome::kTlsAlert;
    a.tls_alert = alert;
    a.detail = std::string(stage) + ": the server sent TLS alert " + std::to_string(alert) + " (" +
               SSL_alert_desc_string_long(alert) + ")";
    return a;
  }
  if (step.end == tls::StepEnd::kTimeout) {
    a.outcome = ConnectOutcome::kClosed;
    a.detail = std::string(stage) + ": no answer from the server in time";
    return a;
  }
  if (errors.empty() && step.socket_error != 0) errors = std::strerror(step.socket_error);
  a.outcome = ConnectOutcome::kClosed;
  a.detail = std::string(stage) + ": the server closed the connection" +
             (errors.empty() ? std::string() : " (" + errors + ")");
  return a;
}

}  // namespace

std::string_view OutcomeName(ConnectOutcome outcome) {
  switch (outcome) {
    case ConnectOutcome::kAccepted: return "accepted";
    case ConnectOutcome::kRefused: return "refused";
    case ConnectOutcome::kClosed: return "closed-without-connack";
    case ConnectOutcome::kTlsAlert: return "tls-alert";
    case ConnectOutcome::kServerUntrusted: return "server-untrusted";
    case ConnectOutcome::kNetworkError: return "network-error";
  }
  return "unknown";
}

ConnectOptions CloudConnectOptions(const AwsConfig& aws, const std::string& client_id,
                                   EVP_PKEY* key, const std::filesystem::path& chain_file) {
  ConnectOptions co;
  co.host = aws.endpoint;
  co.port = aws.port;
  co.client_id = client_id;
  co.key = key;
  co.chain_file = chain_file;
  co.root_ca = aws.root_ca;
  co.alpn = aws.alpn;
  co.keepalive_seconds =
      static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(aws.keepalive).count());
  if (auto proxy = CloudProxy(aws); proxy.ok()) {
    co.proxy = std::move(*proxy);
  } else {
    co.proxy_error = proxy.status().message();
  }
  return co;
}

Result<UniqueFd> ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) {
    std::string what = "resolve " + host + ": " + gai_strerror(gai);
    return gai == EAI_NONAME || gai == EAI_NODATA ? NotFound(what) : Unavailable(what);
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addrs(res, freeaddrinfo);

  std::string last_error;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd s(
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (!s.valid()) continue;
    int rc = connect(s.get(), ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      tls::StepResult w = tls::WaitFd(s.get(), POLLOUT, SteadyClock::now() + timeout);
      int soerr = 0;
      socklen_t len = sizeof soerr;
      getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &soerr, &len);
      if (w.end == tls::StepEnd::kTimeout) soerr = ETIMEDOUT;
      if (w.end == tls::StepEnd::kSocket) soerr = w.socket_error;
      rc = soerr == 0 ? 0 : -1;
      errno = soerr;
    }
    if (rc == 0) {
      int one = 1;
      setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return s;
    }
    last_error = std::strerror(errno);
  }
  return Unavailable("connect to " + host + ":" + std::to_string(port) + ": " + last_error);
}

Result<UniqueFd> ConnectVia(const std::optional<ProxyEndpoint>& proxy, const std::string& host,
                            int port, std::chrono::milliseconds timeout) {
  if (!proxy) return ConnectTcp(host, port, timeout);
  auto sock = ConnectTcp(proxy->host, proxy->port, timeout);
  if (!sock.ok()) {
    return Unavailable("proxy " + proxy->Describe() + " unreachable: " + sock.status().message());
  }
  GA_RETURN_IF_ERROR(OpenTunnel(sock->get(), *proxy, host, port, SteadyClock::now() + timeout));
  return sock;
}

ConnectAttempt AttemptConnect(const ConnectOptions& options) {
  if (!options.proxy_error.empty()) return Network(options.proxy_error);
  auto sock = ConnectVia(options.proxy, options.host, options.port, options.timeout);
  if (!sock.ok()) {
    // The endpoint's name is the proxy's to resolve when there is one.
    return Network(sock.status().message(),
                   !options.proxy && sock.status().code() == Code::kNotFound);
  }
  const int fd = sock->get();

  tpm::TlsClientOptions tls;
  tls.key = options.key;
  tls.chain_file = options.chain_file;
  tls.ca_file = options.root_ca;
  tls.verify_host = options.host;
  if (options.alpn) tls.alpn = {aws::kMqttAlpn};
  auto ctx = tpm::MakeClientTlsContext(tls);
  if (!ctx.ok()) {
    // A local problem (unreadable chain, key mismatch): not the server's doing.
    ConnectAttempt a;
    a.outcome = ConnectOutcome::kNetworkError;
    a.detail = "TLS setup: " + ctx.status().message();
    return a;
  }
  SslPtr ssl(SSL_new(ctx->get()));
  if (!ssl) return Network("SSL_new: " + DrainOpenSslErrors());
  SSL_set_fd(ssl.get(), fd);
  unsigned char ip[16];
  bool is_ip = inet_pton(AF_INET, options.host.c_str(), ip) == 1 ||
               inet_pton(AF_INET6, options.host.c_str(), ip) == 1;
  if (!is_ip) SSL_set_tlsext_host_name(ssl.get(), options.host.c_str());

  const auto deadline = SteadyClock::now() + options.timeout;
  tls::StepResult step = tls::Step(ssl.get(), fd, deadline, [&] { return SSL_connect(ssl.get()); });
  if (step.end != tls::StepEnd::kDone) return FromTlsFailure(ssl.get(), step, "TLS handshake");

  std::string connect =
      ConnectPacket(options.client_id, options.keepalive_seconds, !options.keep_session);
  step = tls::Step(ssl.get(), fd, deadline, [&] {
    return SSL_write(ssl.get(), connect.data(), static_cast<int>(connect.size()));
  });
  if (step.end != tls::StepEnd::kDone) return FromTlsFailure(ssl.get(), step, "sending CONNECT");

  // CONNACK: 0x20 0x02 <session present> <return code>. With TLS 1.3 the
  // server judges the client certificate after the handshake, so a refusal
  // may arrive here as an alert.
  unsigned char connack[4];
  size_t got = 0;
  while (got < sizeof connack) {
    step = tls::Step(ssl.get(), fd, deadline, [&] {
      return SSL_read(ssl.get(), connack + got, static_cast<int>(sizeof connack - got));
    });
    if (step.end != tls::StepEnd::kDone) {
      ConnectAttempt a = FromTlsFailure(ssl.get(), step, "waiting for CONNACK");
      if (a.outcome == ConnectOutcome::kClosed && step.end != tls::StepEnd::kTimeout) {
        a.detail = "closed after CONNECT without CONNACK";
      }
      return a;
    }
    got += static_cast<size_t>(step.rc);
  }
  ConnectAttempt a;
  if (connack[0] != 0x20 || connack[1] != 0x02) {
    a.outcome = ConnectOutcome::kClosed;
    a.detail = "the server answered CONNECT with something other than CONNACK";
    return a;
  }
  a.connack_code = connack[3];
  if (connack[3] != 0) {
    static const char* const kReasons[] = {"",
                                           "unacceptable protocol version",
                                           "identifier rejected",
                                           "server unavailable",
                                           "bad user name or password",
                                           "not authorized"};
    a.outcome = ConnectOutcome::kRefused;
    a.detail = "CONNACK refused: " + std::to_string(connack[3]) +
               (connack[3] < 6 ? std::string(" (") + kReasons[connack[3]] + ")" : "");
    return a;
  }
  a.outcome = ConnectOutcome::kAccepted;
  a.detail = "CONNACK accepted";
  const char disconnect[2] = {static_cast<char>(0xE0), 0};
  tls::Step(ssl.get(), fd, SteadyClock::now() + std::chrono::seconds(1),
            [&] { return SSL_write(ssl.get(), disconnect, 2); });  // best effort
  SSL_shutdown(ssl.get());
  ERR_clear_error();
  return a;
}

}  // namespace ga
