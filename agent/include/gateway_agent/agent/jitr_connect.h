// One MQTT connect attempt to AWS IoT with an identity's TPM key, classified
// the way JITR needs it.
//
// The attempt is done with a minimal MQTT 3.1.1 client over OpenSSL (not
// libmosquitto) so that each stage can be told apart: name resolution, TCP,
// the TLS handshake (server trust vs. an alert from the server), and the MQTT
// CONNECT/CONNACK exchange. On CONNACK accepted it disconnects cleanly.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/unique_fd.h"

namespace ga {

enum class ConnectOutcome {
  kAccepted,         // CONNACK 0: the certificate is ACTIVE and the policy allows the client id
  kRefused,          // CONNACK != 0: e.g. not authorized (policy not attached yet)
  kClosed,           // closed after the handshake or after CONNECT without CONNACK: JITR pending
  kTlsAlert,         // the server ended the handshake with an alert: JITR pending, or refused
  kServerUntrusted,  // the server's certificate failed verification (root CA, host name)
  kNetworkError,     // DNS or TCP failure, timeout: not an attempt at registration
};

std::string_view OutcomeName(ConnectOutcome outcome);

struct ConnectAttempt {
  ConnectOutcome outcome = ConnectOutcome::kNetworkError;
  int connack_code = -1;        // kRefused: the CONNACK return code
  int tls_alert = -1;           // kTlsAlert: the TLS alert description (e.g. 42 bad_certificate)
  bool name_not_found = false;  // kNetworkError: the endpoint name does not exist (DNS)
  std::string detail;           // human-readable, for logs and `probe`
};

struct ConnectOptions {
  std::string host;  // the endpoint: SNI and host-name verification
  int port = 8883;
  std::string client_id;  // the thing name
  EVP_PKEY* key = nullptr;
  std::filesystem::path chain_file;  // device certificate, then the CA certificate
  std::filesystem::path root_ca;     // trust anchor for the server
  bool alpn = false;                 // offer x-amzn-mqtt-ca
  int keepalive_seconds = 60;
  std::chrono::milliseconds timeout{10000};  // for each of connect, handshake, CONNACK
  std::optional<ProxyEndpoint> proxy;        // aws.proxy: the tunnel the TLS goes through
  std::string proxy_error;                   // aws.proxy unusable now (password file unreadable)
  // Clean session 0: the client id's persistent session (the bridge's
  // subscriptions, the commands queued for the thing) stays as it is.
  bool keep_session = false;
};

// The options for a connect to the configured endpoint as `client_id`.
ConnectOptions CloudConnectOptions(const AwsConfig& aws, const std::string& client_id,
                                   EVP_PKEY* key, const std::filesystem::path& chain_file);

ConnectAttempt AttemptConnect(const ConnectOptions& options);

// Resolves `host` and connects (non-blocking socket, TCP_NODELAY) to the
// first of its addresses that answers within `timeout` each. NotFound
// "resolve <host>: ..." when the name does not exist, Unavailable for other
// resolver failures and for "connect to <host>:<port>: <errno text>".
Result<UniqueFd> ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout);

// ConnectTcp to host:port, or through `proxy` when there is one: the TCP
// connection goes to the proxy and carries a tunnel to host:port (the proxy
// resolves host). The proxy's failures say "proxy <url> ...": Unavailable,
// or PermissionDenied for its authentication and rules.
Result<UniqueFd> ConnectVia(const std::optional<ProxyEndpoint>& proxy, const std::string& host,
                            int port, std::chrono::milliseconds timeout);

}  // namespace ga
