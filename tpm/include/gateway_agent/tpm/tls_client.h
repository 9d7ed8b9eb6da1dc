// TLS client contexts with client authentication by a (TPM) key, for
// libmosquitto (MOSQ_OPT_SSL_CTX with MOSQ_OPT_SSL_CTX_WITH_DEFAULTS 0) or any
// other libssl user.
#pragma once

#include <openssl/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gateway_agent/openssl.h"
#include "gateway_agent/status.h"

namespace ga::tpm {

struct TlsClientOptions {
  // The client key; the SSL_CTX takes its own reference. Null (and no chain)
  // makes a context shared by several identities, each installed on its SSL
  // with UseClientIdentity.
  EVP_PKEY* key = nullptr;
  // The certificate chain sent to the server: leaf first, then the CA
  // certificates. Exactly one of chain_file / chain_pem.
  std::filesystem::path chain_file;
  std::string chain_pem;
  // Trust anchors for the server certificate. Exactly one of ca_file / ca_pem.
  std::filesystem::path ca_file;
  std::string ca_pem;
  // The name (or IP address) the server certificate must match. Required:
  // peer verification is always on.
  std::string verify_host;
  // ALPN protocols offered, e.g. {"x-amzn-mqtt-ca"}; empty: no ALPN.
  std::vector<std::string> alpn;
  // TLS1_2_VERSION at least; 0 as maximum means the highest supported.
  int min_version = 0x0303;  // TLS1_2_VERSION
  int max_version = 0;
};

// An SSL_CTX in LibCtx() with the chain and key loaded and checked against
// each other, SSL_VERIFY_PEER, host name verification and ALPN set.
Result<SslCtxPtr> MakeClientTlsContext(const TlsClientOptions& options);

// A client identity held once and installed per connection: one SSL_CTX can
// then serve many identities (an SSL_CTX costs tens of KiB; a gateway holds a
// thousand connections).
struct ClientIdentity {
  EvpPkeyPtr key;
  X509Ptr leaf;
  std::vector<X509Ptr> chain;  // sent after the leaf: the CA certificate(s)
};

// Reads the chain file (leaf first) and checks that `key` matches the leaf.
Result<ClientIdentity> LoadClientIdentity(EvpPkeyPtr key, const std::filesystem::path& chain_file);

// Makes `ssl` present `identity`: call before the server asks for a
// certificate (e.g. from SSL_CTX_set_cert_cb).
Status UseClientIdentity(SSL* ssl, const ClientIdentity& identity);

}  // namespace ga::tpm
