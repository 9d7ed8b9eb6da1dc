// TLS for the cloud connections: one SSL_CTX shared by all of them (trust
// anchor, host name, ALPN), each connection's TPM key and chain presented per
// handshake; and how long a connection keeps its TLS buffers.
#pragma once

#include <openssl/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tls_client.h"
#include "mqtt_connection.h"

namespace ga::bridge {

class CloudTlsContext {
 public:
  static Result<CloudTlsContext> Create(const AwsConfig& aws);

  // libmosquitto takes its own reference (MOSQ_OPT_SSL_CTX).
  SSL_CTX* get() const { return ctx_.get(); }

  // The identity the handshakes on this thread present (null: none). Set
  // around each handshake by the thread that runs it.
  static void PresentOnThisThread(const tpm::ClientIdentity* identity);

  // libmosquitto connects to the proxy (aws.proxy) and starts TLS at once,
  // with no way to hand it a socket of ours: the tunnel to the endpoint is
  // opened on its socket when the handshake starts, before the ClientHello
  // (OpenSSL's info callback), and SNI set to the endpoint. A failure ends
  // the handshake and leaves its reason in `error`.
  struct Tunnel {
    const ProxyEndpoint* proxy = nullptr;
    std::string host;  // the endpoint
    int port = 0;
    std::chrono::steady_clock::time_point deadline;
    const std::atomic<bool>* stop = nullptr;
    bool opened = false;
    std::string error;
  };
  // The tunnel the next handshake on this thread opens (null: direct).
  static void TunnelOnThisThread(Tunnel* tunnel);

 private:
  explicit CloudTlsContext(SslCtxPtr ctx) : ctx_(std::move(ctx)) {}
  SslCtxPtr ctx_;
};

// The shared context releases a connection's TLS buffers (about 34 KiB)
// whenever they are empty (SSL_MODE_RELEASE_BUFFERS): right for the idle
// connections that most of a gateway's are, costly for a busy one, which
// would allocate and free them for every record. A connection holds them
// from its first publish until a tick passes with nothing sent and nothing in
// flight; at most `max_holders` connections at a time, so memory stays
// bounded when every sensor is busy.
class TlsBufferPolicy {
 public:
  explicit TlsBufferPolicy(size_t max_holders) : max_holders_(max_holders) {}
  // `c` is sending.
  void Hold(CloudConnection& c);
  // Once per tick: gives the buffers back if `c` was idle since the last.
  void ReleaseIfIdle(CloudConnection& c);
  // `c` has a new SSL, or none.
  void Forget(CloudConnection& c);

 private:
  size_t max_holders_;
  size_t holders_ = 0;
};

}  // namespace ga::bridge
