#include "gateway_agent/tpm/tls_client.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <string>

#include "gateway_agent/files.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace ga::tpm {
namespace {

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// SSL_CTX_use_certificate_chain_file, from memory: the first certificate is
// the leaf, the rest are sent as the chain.
Status UseChainPem(SSL_CTX* ctx, OSSL_LIB_CTX* libctx, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509Ptr leaf(X509_new_ex(libctx, nullptr));
  X509* leaf_raw = leaf.get();
  if (!leaf || PEM_read_bio_X509(bio.get(), &leaf_raw, nullptr, nullptr) == nullptr) {
    return OpenSslError("reading the leaf certificate of the chain PEM", Code::kInvalidArgument);
  }
  if (SSL_CTX_use_certificate(ctx, leaf.get()) != 1) {
    return OpenSslError("SSL_CTX_use_certificate");
  }
  if (SSL_CTX_clear_chain_certs(ctx) != 1) return OpenSslError("SSL_CTX_clear_chain_certs");
  while (true) {
    X509Ptr ca(X509_new_ex(libctx, nullptr));
    X509* ca_raw = ca.get();
    if (!ca || PEM_read_bio_X509(bio.get(), &ca_raw, nullptr, nullptr) == nullptr) {
      unsigned long err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return OpenSslError("reading a CA certificate of the chain PEM", Code::kInvalidArgument);
    }
    // add0 takes the reference on success.
    if (SSL_CTX_add0_chain_cert(ctx, ca.get()) != 1) return OpenSslError("SSL_CTX_add0_chain_cert");
    ca.release();
  }
  return Status::Ok();
}

Status LoadTrustPem(SSL_CTX* ctx, OSSL_LIB_CTX* libctx, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  while (true) {
    X509Ptr cert(X509_new_ex(libctx, nullptr));
    X509* raw = cert.get();
    if (!cert || PEM_read_bio_X509(bio.get(), &raw, nullptr, nullptr) == nullptr) {
      unsigned long err = ERR_peek_last_error();
      if (count > 0 && ERR_GET_LIB(err) == ERR_LIB_PEM &&
          ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return OpenSslError("reading trust anchors PEM", Code::kInvalidArgument);
    }
    if (X509_STORE_add_cert(store, cert.get()) != 1) return OpenSslError("X509_STORE_add_cert");
    ++count;
  }
  return Status::Ok();
}

}  // namespace

Result<SslCtxPtr> MakeClientTlsContext(const TlsClientOptions& options) {
  const bool with_identity = options.key != nullptr;
  if (with_identity && options.chain_file.empty() == options.chain_pem.empty()) {
    return InvalidArgument("TLS client context: give exactly one of chain_file and chain_pem");
  }
  if (!with_identity && (!options.chain_file.empty() || !options.chain_pem.empty())) {
    return InvalidArgument("TLS client context: a chain without a key");
  }
  if (options.ca_file.empty() == options.ca_pem.empty()) {
    return InvalidArgument("TLS client context: give exactly one of ca_file and ca_pem");
  }
  if (options.verify_host.empty()) {
    return InvalidArgument("TLS client context: verify_host is required");
  }
  if (options.min_version < TLS1_2_VERSION) {
    return InvalidArgument("TLS client context: TLS 1.2 is the lowest version allowed");
  }
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, LibCtx());
  SslCtxPtr ctx(SSL_CTX_new_ex(libctx, nullptr, TLS_client_method()));
  if (!ctx) return OpenSslError("SSL_CTX_new_ex");
  if (SSL_CTX_set_min_proto_version(ctx.get(), options.min_version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), options.max_version) != 1) {
    return OpenSslError("setting the TLS protocol versions", Code::kInvalidArgument);
  }

  if (!with_identity) {
    // A context shared by several identities: each SSL gets its own (UseClientIdentity).
  } else if (!options.chain_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.chain_file.c_str()) != 1) {
      return OpenSslError("loading certificate chain " + options.chain_file.string(),
                          Code::kInvalidArgument);
    }
  } else {
    GA_RETURN_IF_ERROR(UseChainPem(ctx.get(), libctx, options.chain_pem));
  }
  if (with_identity) {
    std::string chain_name =
        options.chain_file.empty() ? "the chain PEM" : options.chain_file.string();
    if (X509_check_private_key(SSL_CTX_get0_certificate(ctx.get()), options.key) != 1) {
      return OpenSslError("the key does not match the leaf certificate of " + chain_name,
                          Code::kInvalidArgument);
    }
    if (SSL_CTX_use_PrivateKey(ctx.get(), options.key) != 1) {
      return OpenSslError("SSL_CTX_use_PrivateKey", Code::kInvalidArgument);
    }
  }

  if (!options.ca_file.empty()) {
    if (SSL_CTX_load_verify_file(ctx.get(), options.ca_file.c_str()) != 1) {
      return OpenSslError("loading trust anchors " + options.ca_file.string(),
                          Code::kInvalidArgument);
    }
  } else {
    GA_RETURN_IF_ERROR(LoadTrustPem(ctx.get(), libctx, options.ca_pem));
  }
  // Idle connections (most of a gateway's) give their read/write buffers back.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx.get());
  if (IsIpAddress(options.verify_host)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, options.verify_host.c_str()) != 1) {
      return OpenSslError("X509_VERIFY_PARAM_set1_ip_asc(" + options.verify_host + ")");
    }
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, options.verify_host.c_str(), 0) != 1) {
      return OpenSslError("X509_VERIFY_PARAM_set1_host(" + options.verify_host + ")");
    }
  }

  if (!options.alpn.empty()) {
    std::string wire;
    for (const std::string& proto : options.alpn) {
      if (proto.empty() || proto.size() > 255) {
        return InvalidArgument("ALPN protocol \"" + proto + "\" must be 1-255 bytes");
      }
      wire.push_back(static_cast<char>(proto.size()));
      wire += proto;
    }
    // Returns 0 on success, unlike most of libssl.
    if (SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned int>(wire.size())) != 0) {
      return OpenSslError("SSL_CTX_set_alpn_protos");
    }
  }
  return ctx;
}

Result<ClientIdentity> LoadClientIdentity(EvpPkeyPtr key, const std::filesystem::path& chain_file) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, LibCtx());
  auto pem = ReadFile(chain_file);
  if (!pem.ok()) return std::move(pem).take_status().With("certificate chain");
  BioPtr bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  ClientIdentity id;
  while (true) {
    X509Ptr cert(X509_new_ex(libctx, nullptr));
    X509* raw = cert.get();
    if (!cert || PEM_read_bio_X509(bio.get(), &raw, nullptr, nullptr) == nullptr) {
      unsigned long err = ERR_peek_last_error();
      if (id.leaf && ERR_GET_LIB(err) == ERR_LIB_PEM &&
          ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return OpenSslError("reading certificate chain " + chain_file.string(),
                          Code::kInvalidArgument);
    }
    if (!id.leaf) {
      id.leaf = std::move(cert);
    } else {
      id.chain.push_back(std::move(cert));
    }
  }
  if (X509_check_private_key(id.leaf.get(), key.get()) != 1) {
    return OpenSslError("the key does not match the leaf certificate of " + chain_file.string(),
                        Code::kInvalidArgument);
  }
  id.key = std::move(key);
  return id;
}

Status UseClientIdentity(SSL* ssl, const ClientIdentity& id) {
  if (SSL_use_certificate(ssl, id.leaf.get()) != 1) return OpenSslError("SSL_use_certificate");
  if (SSL_clear_chain_certs(ssl) != 1) return OpenSslError("SSL_clear_chain_certs");
  for (const auto& ca : id.chain) {
    if (SSL_add1_chain_cert(ssl, ca.get()) != 1) return OpenSslError("SSL_add1_chain_cert");
  }
  if (SSL_use_PrivateKey(ssl, id.key.get()) != 1) return OpenSslError("SSL_use_PrivateKey");
  return Status::Ok();
}

}  // namespace ga::tpm
