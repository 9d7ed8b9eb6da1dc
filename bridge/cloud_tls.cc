#include "cloud_tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"
#include "gateway_agent/proxy.h"
#include "gateway_agent/unique_fd.h"
#include "handshake_pool.h"

namespace ga::bridge {

namespace {

thread_local const tpm::ClientIdentity* handshake_identity = nullptr;
thread_local CloudTlsContext::Tunnel* handshake_tunnel = nullptr;

bool IsIpLiteral(const std::string& host) {
  unsigned char ip[16];
  return inet_pton(AF_INET, host.c_str(), ip) == 1 || inet_pton(AF_INET6, host.c_str(), ip) == 1;
}

void OpenTunnelAtHandshakeStart(const SSL* ssl, int where, int) {
  if ((where & SSL_CB_HANDSHAKE_START) == 0 || handshake_tunnel == nullptr) return;
  CloudTlsContext::Tunnel& t = *handshake_tunnel;
  if (t.opened || !t.error.empty()) return;
  const int fd = SSL_get_fd(ssl);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);  // the deadline holds
  Status s = OpenTunnel(fd, *t.proxy, t.host, t.port, t.deadline, t.stop);
  if (s.ok()) {
    t.opened = true;
    // libmosquitto named the proxy; the server is the endpoint.
    if (!IsIpLiteral(t.host)) SSL_set_tlsext_host_name(const_cast<SSL*>(ssl), t.host.c_str());
    return;
  }
  t.error = s.message();
  // No ClientHello to the proxy: the socket becomes an unconnected one, on
  // which the handshake fails at once (ENOTCONN, no SIGPIPE).
  UniqueFd unconnected(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!unconnected.valid() || dup3(unconnected.get(), fd, O_CLOEXEC) < 0) shutdown(fd, SHUT_RDWR);
}

int PresentIdentity(SSL* ssl, void*) {
  if (handshake_identity == nullptr) return 1;  // no certificate to offer
  // The TCP connect is over and the TPM signs next.
  HandshakePool::ShieldCurrentThread();
  Status s = tpm::UseClientIdentity(ssl, *handshake_identity);
  if (!s.ok()) log::Error("TLS client certificate: " + s.message());
  return s.ok() ? 1 : 0;
}

}  // namespace

Result<CloudTlsContext> CloudTlsContext::Create(const AwsConfig& aws) {
  tpm::TlsClientOptions tls;
  tls.ca_file = aws.root_ca;
  tls.verify_host = aws.endpoint;
  if (aws.alpn) tls.alpn = {aws::kMqttAlpn};
  GA_ASSIGN_OR_RETURN(SslCtxPtr ctx, tpm::MakeClientTlsContext(tls));
  // One read() takes every record the socket has (a PUBACK is a record of
  // its own): see ReadPackets for the records OpenSSL then holds.
  SSL_CTX_set_read_ahead(ctx.get(), 1);
  SSL_CTX_set_cert_cb(ctx.get(), PresentIdentity, nullptr);
  if (!aws.proxy.empty()) SSL_CTX_set_info_callback(ctx.get(), OpenTunnelAtHandshakeStart);
  return CloudTlsContext(std::move(ctx));
}

void CloudTlsContext::PresentOnThisThread(const tpm::ClientIdentity* identity) {
  handshake_identity = identity;
}

void CloudTlsContext::TunnelOnThisThread(Tunnel* tunnel) {
  handshake_tunnel = tunnel;
}

void TlsBufferPolicy::Hold(CloudConnection& c) {
  c.sent_this_tick = true;
  if (c.holds_tls_buffers || holders_ >= max_holders_) return;
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(c.mosq.get()));
  if (ssl == nullptr) return;
  SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
  c.holds_tls_buffers = true;
  ++holders_;
}

void TlsBufferPolicy::Forget(CloudConnection& c) {
  if (!c.holds_tls_buffers) return;
  c.holds_tls_buffers = false;
  --holders_;
}

void TlsBufferPolicy::ReleaseIfIdle(CloudConnection& c) {
  const bool idle = !c.sent_this_tick && c.inflight.empty();
  c.sent_this_tick = false;
  if (!c.holds_tls_buffers || !idle) return;
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(c.mosq.get()));
  if (ssl == nullptr) return;
  // Freed when the next read or write (a PINGREQ at the latest) leaves them
  // empty; not SSL_free_buffers, unsafe on a live connection before OpenSSL
  // 3.0.14.
  SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
  Forget(c);
}

}  // namespace ga::bridge
