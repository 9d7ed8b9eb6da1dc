// The network checks of `gateway-agent check`: the AWS IoT endpoint (DNS,
// TCP, TLS with the server verified) and the local broker (MQTT CONNECT).
#include <arpa/inet.h>
#include <mosquitto.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>

#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/agent/jitr_connect.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/tls_step.h"
#include "gateway_agent/tpm/tls_client.h"

namespace ga {

namespace {

using SteadyClock = std::chrono::steady_clock;

HealthCheck Line(std::string name, CheckLevel level, std::string detail, std::string fix = "") {
  return {std::move(name), level, std::move(detail), std::move(fix)};
}

// How many addresses `host` resolves to; the resolver's error otherwise.
Result<int> Resolve(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (gai != 0) return Unavailable("resolve " + host + ": " + gai_strerror(gai));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addrs(res, freeaddrinfo);
  int n = 0;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) ++n;
  return n;
}

// The TLS handshake without a client certificate. The server's certificate
// is verified when it arrives, before the server asks for ours: a handshake
// that fails after that point (AWS IoT wants a client certificate) still
// proves the server.
HealthCheck CheckTls(const AwsConfig& aws, int fd) {
  const std::string name = "aws tls";
  tpm::TlsClientOptions options;
  options.ca_file = aws.root_ca;
  options.verify_host = aws.endpoint;
  if (aws.alpn || aws.port == 443) options.alpn = {aws::kMqttAlpn};
  auto ctx = tpm::MakeClientTlsContext(options);
  if (!ctx.ok()) {
    return Line(name, CheckLevel::kError, ctx.status().message(),
                "aws.root_ca must be the Amazon root CA (PEM), e.g. AmazonRootCA1.pem");
  }
  SslPtr ssl(SSL_new(ctx->get()));
  if (!ssl) return Line(name, CheckLevel::kError, "SSL_new: " + DrainOpenSslErrors());
  SSL_set_fd(ssl.get(), fd);
  unsigned char ip[16];
  if (inet_pton(AF_INET, aws.endpoint.c_str(), ip) != 1 &&
      inet_pton(AF_INET6, aws.endpoint.c_str(), ip) != 1) {
    SSL_set_tlsext_host_name(ssl.get(), aws.endpoint.c_str());
  }
  tls::StepResult step = tls::Step(ssl.get(), fd, SteadyClock::now() + kCheckNetworkTimeout,
                                   [&] { return SSL_connect(ssl.get()); });
  const X509* server = SSL_get0_peer_certificate(ssl.get());
  const long verify = SSL_get_verify_result(ssl.get());
  std::string errors = step.end == tls::StepEnd::kDone ? "" : tls::Describe(step);
  ERR_clear_error();
  if (verify != X509_V_OK) {
    return Line(name, CheckLevel::kError,
                "server certificate of " + aws.endpoint +
                    " not verified: " + X509_verify_cert_error_string(verify),
                "aws.root_ca must hold the root the endpoint chains to (AmazonRootCA1.pem), and "
                "aws.endpoint the name in its certificate (aws iot describe-endpoint "
                "--endpoint-type iot:Data-ATS)");
  }
  if (server == nullptr) {
    return Line(name, CheckLevel::kError,
                "no server certificate from " + aws.endpoint + ": " + errors,
                "check aws.endpoint and aws.port (the server does not speak TLS there)");
  }
  std::string detail = "server verified (" + std::string(SSL_get_version(ssl.get())) + ", " +
                       aws.root_ca.string() + ")";
  if (step.end != tls::StepEnd::kDone) {
    // check sends no client certificate; AWS IoT ends the handshake for that.
    detail += "; then the server ended the handshake without a client certificate (" + errors + ")";
  }
  return Line(name, CheckLevel::kOk, detail);
}

struct MosqDeleter {
  void operator()(mosquitto* m) const { mosquitto_destroy(m); }
};

// The outcome of a CONNECT, set by the connect callback.
struct Connack {
  bool received = false;
  int code = -1;
};

// The proxy resolves the endpoint: the gateway itself may not be able to.
std::vector<HealthCheck> CheckAwsThroughProxy(const AwsConfig& aws) {
  std::vector<HealthCheck> out;
  const std::string name = "aws proxy";
  auto proxy = CloudProxy(aws);
  if (!proxy.ok()) {
    out.push_back(Line(name, CheckLevel::kError, proxy.status().message(),
                       "fix aws.proxy and aws.proxy_password_file"));
    return out;
  }
  auto sock = ConnectVia(*proxy, aws.endpoint, aws.port, kCheckNetworkTimeout);
  if (!sock.ok()) {
    out.push_back(Line(name, CheckLevel::kError, sock.status().message(),
                       sock.status().code() == Code::kPermissionDenied
                           ? "see the proxy's answer above: the user and password, or its rules"
                           : "check aws.proxy (host and port) and that the proxy runs"));
    return out;
  }
  out.push_back(Line(name, CheckLevel::kOk,
                     "tunnel to " + aws.endpoint + ":" + std::to_string(aws.port) + " through " +
                         (*proxy)->Describe()));
  out.push_back(CheckTls(aws, sock->get()));
  return out;
}

}  // namespace

std::vector<HealthCheck> CheckAwsEndpoint(const AwsConfig& aws) {
  std::vector<HealthCheck> out;
  const std::string where = aws.endpoint + ":" + std::to_string(aws.port);
  if (!aws.proxy.empty()) return CheckAwsThroughProxy(aws);
  auto addresses = Resolve(aws.endpoint, aws.port);
  if (!addresses.ok()) {
    out.push_back(Line("aws dns", CheckLevel::kError, addresses.status().message(),
                       "check aws.endpoint (aws iot describe-endpoint --endpoint-type "
                       "iot:Data-ATS) and the gateway's DNS"));
    return out;
  }
  out.push_back(Line("aws dns", CheckLevel::kOk,
                     aws.endpoint + " resolves (" + std::to_string(*addresses) + " address" +
                         (*addresses == 1 ? ")" : "es)")));
  auto sock = ConnectTcp(aws.endpoint, aws.port, kCheckNetworkTimeout);
  if (!sock.ok()) {
    out.push_back(Line("aws tcp", CheckLevel::kError, sock.status().message(),
                       "check aws.port and that the network lets the gateway out to " + where));
    return out;
  }
  out.push_back(Line("aws tcp", CheckLevel::kOk, "connected to " + where));
  out.push_back(CheckTls(aws, sock->get()));
  return out;
}

namespace {

// What one session with the local broker got back.
struct LocalAnswers {
  bool connack = false;
  int connack_code = -1;
  bool puback = false;
  int puback_reason = -1;  // MQTT v5 reason code
};

// One CONNECT to the local broker and, once accepted, a QoS 1 publish to
// `publish_topic` (if not empty) over MQTT v5, whose PUBACK carries a reason
// code. An error when no CONNACK (or no PUBACK) came in time.
Result<LocalAnswers> TalkToLocal(const LocalConfig& local, const std::string& client_id,
                                 const std::string& username, const std::string& password,
                                 const std::string& publish_topic = "") {
  static std::once_flag init;
  std::call_once(init, [] { mosquitto_lib_init(); });
  LocalAnswers answers;
  std::unique_ptr<mosquitto, MosqDeleter> mosq(
      mosquitto_new(client_id.c_str(), /*clean_session=*/true, &answers));
  if (!mosq) return Internal("mosquitto_new failed");
  mosquitto* m = mosq.get();
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION,
                       publish_topic.empty() ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5);
  if (!username.empty()) {
    mosquitto_username_pw_set(m, username.c_str(), password.empty() ? nullptr : password.c_str());
  }
  mosquitto_connect_v5_callback_set(
      m, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
        auto* a = static_cast<LocalAnswers*>(self);
        a->connack = true;
        a->connack_code = rc;
      });
  mosquitto_publish_v5_callback_set(
      m, [](mosquitto*, void* self, int, int reason, const mosquitto_property*) {
        auto* a = static_cast<LocalAnswers*>(self);
        a->puback = true;
        a->puback_reason = reason;
      });
  const int keepalive = 10;
  int rc = local.unix_socket.empty()
               ? mosquitto_connect_async(m, local.host.c_str(), local.port, keepalive)
               : mosquitto_connect_bind_async(m, local.unix_socket.c_str(), 0, keepalive, nullptr);
  const auto deadline = SteadyClock::now() + kCheckNetworkTimeout;
  bool published = false;
  auto done = [&] {
    if (!answers.connack) return false;
    if (answers.connack_code != 0 || publish_topic.empty()) return true;
    return answers.puback;
  };
  while (rc == MOSQ_ERR_SUCCESS && !done() && SteadyClock::now() < deadline) {
    if (answers.connack && answers.connack_code == 0 && !published) {
      static const char kPayload[] = "boundary probe";
      rc = mosquitto_publish(m, nullptr, publish_topic.c_str(), sizeof kPayload - 1, kPayload, 1,
                             false);
      published = true;
      continue;
    }
    rc = mosquitto_loop(m, 100, 1);
  }
  if (rc != MOSQ_ERR_SUCCESS && !done()) {
    return Unavailable(rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc));
  }
  if (!answers.connack) return Unavailable("no CONNACK in time");
  if (!done()) return Unavailable("no PUBACK in time");
  if (answers.connack_code == 0) {
    mosquitto_disconnect(m);
    mosquitto_loop(m, 100, 1);
  }
  return answers;
}

// One CONNECT to the local broker: the CONNACK code, or why none came.
Result<int> ConnectLocal(const LocalConfig& local, const std::string& client_id,
                         const std::string& username, const std::string& password) {
  GA_ASSIGN_OR_RETURN(LocalAnswers answers, TalkToLocal(local, client_id, username, password));
  return answers.connack_code;
}

std::string WhereIs(const LocalConfig& local) {
  return local.unix_socket.empty() ? local.host + ":" + std::to_string(local.port)
                                   : local.unix_socket.string();
}

}  // namespace

std::string BoundaryProbeTopic(const LocalConfig& local) {
  std::string topic;
  size_t start = 0;
  while (true) {
    size_t slash = local.ingest_filter.find('/', start);
    std::string level = local.ingest_filter.substr(start, slash - start);
    if (level == "+") level = "no-such-sensor.probe";
    if (level == "#") level = "boundary";
    topic += level;
    if (slash == std::string::npos) break;
    topic += '/';
    start = slash + 1;
  }
  return topic;
}

Result<std::optional<std::string>> LocalBrokerOpenWarning(const LocalConfig& local) {
  auto code =
      ConnectLocal(local, "gateway-agent-probe-anonymous-" + std::to_string(getpid()), "", "");
  if (!code.ok()) return std::move(code).take_status();
  if (*code != 0) return std::optional<std::string>();
  return std::optional<std::string>(
      "the local broker " + WhereIs(local) +
      " lets anonymous clients in: any client on the LAN can publish as any sensor; "
      "set it up with gateway-agent local-broker init and local.manage_clients = true");
}

Result<std::optional<std::string>> LocalBrokerConfinementWarning(const LocalConfig& local,
                                                                 const std::string& password) {
  const std::string topic = BoundaryProbeTopic(local);
  auto answers =
      TalkToLocal(local, std::string(bridge::kBoundaryProbeUser) + "-" + std::to_string(getpid()),
                  bridge::kBoundaryProbeUser, password, topic);
  if (!answers.ok()) return std::move(answers).take_status();
  if (answers->connack_code != 0) {
    // Not made yet (the bridge makes it once connected), or refused: the
    // bridge shows a refused client.
    return Unavailable(std::string("the local broker refused ") + bridge::kBoundaryProbeUser +
                       ": " + mosquitto_reason_string(answers->connack_code));
  }
  if (answers->puback_reason >= 0x80) return std::optional<std::string>();
  return std::optional<std::string>(
      "the local broker " + WhereIs(local) + " let " + bridge::kBoundaryProbeUser +
      ", whose role grants nothing, publish to " + topic +
      ": it does not confine clients to their own topics, so a sensor can publish as another; "
      "check its dynamic security plugin (defaultACLAccess publishClientSend must be false; "
      "gateway-agent local-broker init writes such a setup)");
}

HealthCheck CheckLocalBroker(const LocalConfig& local, const std::string& probe_password) {
  const std::string name = "local broker";
  const std::string where = WhereIs(local);
  const std::string fix = "start the local broker (systemctl start mosquitto) and check [local]";
  const std::string pid = std::to_string(getpid());
  // Anonymous first: a broker that lets anyone in lets anyone speak for any
  // sensor (the topic level names the sensor).
  auto anonymous = ConnectLocal(local, "gateway-agent-check-anonymous-" + pid, "", "");
  if (!anonymous.ok()) {
    return Line(name, CheckLevel::kError,
                "connect to " + where + ": " + anonymous.status().message(), fix);
  }
  const std::string open =
      where + " lets anonymous clients in: any client on the LAN can publish as any sensor";
  const std::string close_it =
      "set the broker up with gateway-agent local-broker init (no anonymous access, one user "
      "per sensor) and local.manage_clients = true";
  if (local.manage_clients) {
    // Not as the agent's user: the managed broker forces client id = user
    // name, so a second login would take over the running agent's session.
    if (*anonymous == 0) return Line(name, CheckLevel::kError, open, close_it);
    const std::string refuses = where + " answers and refuses anonymous clients (" +
                                mosquitto_connack_string(*anonymous) + ")";
    if (probe_password.empty()) {
      return Line(name, CheckLevel::kWarning,
                  refuses + "; its ACLs were not tested: the agent has not made " +
                      bridge::kBoundaryProbeUser + " yet",
                  "start the agent (it makes that client on the broker), then run check again");
    }
    auto leak = LocalBrokerConfinementWarning(local, probe_password);
    if (!leak.ok()) {
      return Line(name, CheckLevel::kWarning,
                  refuses + "; its ACLs could not be tested: " + leak.status().message(),
                  "see gateway-agent status for the broker's answers to the agent");
    }
    if (*leak) return Line(name, CheckLevel::kError, **leak, close_it);
    return Line(name, CheckLevel::kOk,
                refuses +
                    " and a publish outside a client's own topics; each sensor has its "
                    "own user");
  }
  std::string password;
  if (!local.username.empty() && !local.password_file.empty()) {
    auto pw = ReadSecretFile(local.password_file);
    if (!pw.ok()) {
      return Line(name, CheckLevel::kError, "local.password_file: " + pw.status().message(),
                  "check local.password_file");
    }
    password = std::move(*pw);
  }
  const std::string client_id = "gateway-agent-check-" + pid;
  auto code = ConnectLocal(local, client_id, local.username, password);
  if (!code.ok()) {
    return Line(name, CheckLevel::kError, "connect to " + where + ": " + code.status().message(),
                fix);
  }
  if (*code != 0) {
    return Line(name, CheckLevel::kError,
                where + " refused the connection: " + mosquitto_connack_string(*code),
                "check local.username and local.password_file against the broker's users");
  }
  if (*anonymous == 0) return Line(name, CheckLevel::kWarning, open, close_it);
  return Line(name, CheckLevel::kOk,
              "CONNACK accepted from " + where + " (client id " + client_id + ")");
}

}  // namespace ga
