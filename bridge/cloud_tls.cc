#include "cloud_tls.h"

#include <openssl/ssl.h>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"
#include "handshake_pool.h"

namespace ga::bridge {

namespace {

thread_local const tpm::ClientIdentity* handshake_identity = nullptr;

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
  return CloudTlsContext(std::move(ctx));
}

void CloudTlsContext::PresentOnThisThread(const tpm::ClientIdentity* identity) {
  handshake_identity = identity;
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
  const bool idle = !c.sent_this_tick && c.inflight.empty() && c.carried.empty();
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
