#include "gateway_agent/tpm/openssl_provider.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace ga::tpm {
namespace {

constexpr char kProviderName[] = "ga-tpm";
constexpr char kProviderProperties[] = "provider=ga-tpm";
// Import parameter carrying a pointer to a std::shared_ptr<const KeyMaterial>.
constexpr char kKeyRefParam[] = "ga-tpm-key-ref";
constexpr char kGroupName[] = "prime256v1";

struct KeyMaterial {
  std::shared_ptr<TpmContext> tpm;
  TpmKeyBlob blob;
};

struct ProviderCtx {
  OSSL_LIB_CTX* libctx;
};

// The provider's key object (keydata).
struct ProviderKey {
  std::shared_ptr<const KeyMaterial> material;
};

void RaiseError(std::string_view message) {
  ERR_raise_data(ERR_LIB_USER, 1, "%s: %.*s", kProviderName, static_cast<int>(message.size()),
                 message.data());
}

// ---------------------------------------------------------------- KEYMGMT

void* KeyNew(void* /*provctx*/) {
  return new (std::nothrow) ProviderKey();
}

void KeyFree(void* keydata) {
  delete static_cast<ProviderKey*>(keydata);
}

int KeyHas(const void* keydata, int selection) {
  const auto* key = static_cast<const ProviderKey*>(keydata);
  if (key == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_ALL) == 0) return 1;
  return key->material != nullptr ? 1 : 0;
}

int KeyImport(void* keydata, int /*selection*/, const OSSL_PARAM params[]) {
  auto* key = static_cast<ProviderKey*>(keydata);
  const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kKeyRefParam);
  const void* ref = nullptr;
  size_t len = 0;
  if (key == nullptr || p == nullptr || OSSL_PARAM_get_octet_ptr(p, &ref, &len) != 1 ||
      ref == nullptr) {
    RaiseError("only keys built by ga::tpm::MakeEvpPkey can be imported");
    return 0;
  }
  key->material = *static_cast<const std::shared_ptr<const KeyMaterial>*>(ref);
  return 1;
}

const OSSL_PARAM* KeyImportTypes(int /*selection*/) {
  static const OSSL_PARAM kTypes[] = {
      {kKeyRefParam, OSSL_PARAM_OCTET_PTR, nullptr, 0, 0},
      OSSL_PARAM_END,
  };
  return kTypes;
}

// Refuses whenever the private half is asked for: that is how OpenSSL learns
// that signing has to stay with this provider (it first tries to export the key
// to the provider of the fetched signature algorithm).
int KeyExport(void* keydata, int selection, OSSL_CALLBACK* callback, void* cbarg) {
  const auto* key = static_cast<const ProviderKey*>(keydata);
  if (key == nullptr || key->material == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return 0;
  const std::string& point = key->material->blob.ec_point();
  OSSL_PARAM params[3];
  size_t n = 0;
  if ((selection & (OSSL_KEYMGMT_SELECT_ALL_PARAMETERS | OSSL_KEYMGMT_SELECT_PUBLIC_KEY)) != 0) {
    params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                   const_cast<char*>(kGroupName), 0);
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0) {
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                    const_cast<char*>(point.data()), point.size());
  }
  params[n] = OSSL_PARAM_construct_end();
  return callback(params, cbarg);
}

const OSSL_PARAM* KeyExportTypes(int /*selection*/) {
  static const OSSL_PARAM kTypes[] = {
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kTypes;
}

int KeyGetParams(void* keydata, OSSL_PARAM params[]) {
  const auto* key = static_cast<const ProviderKey*>(keydata);
  if (key == nullptr || key->material == nullptr) return 0;
  const TpmKeyBlob& blob = key->material->blob;
  OSSL_PARAM* p = nullptr;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != nullptr &&
      OSSL_PARAM_set_int(p, 256) != 1) {
    return 0;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != nullptr &&
      OSSL_PARAM_set_int(p, 128) != 1) {
    return 0;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != nullptr &&
      OSSL_PARAM_set_int(p, static_cast<int>(blob.max_signature_size())) != 1) {
    return 0;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME)) != nullptr &&
      OSSL_PARAM_set_utf8_string(p, kGroupName) != 1) {
    return 0;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != nullptr &&
      OSSL_PARAM_set_utf8_string(p, "SHA256") != 1) {
    return 0;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT)) != nullptr &&
      OSSL_PARAM_set_utf8_string(p, "uncompressed") != 1) {
    return 0;
  }
  for (const char* name : {OSSL_PKEY_PARAM_PUB_KEY, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY}) {
    if ((p = OSSL_PARAM_locate(params, name)) != nullptr &&
        OSSL_PARAM_set_octet_string(p, blob.ec_point().data(), blob.ec_point().size()) != 1) {
      return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* KeyGettableParams(void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kParams;
}

const char* KeyQueryOperationName(int operation_id) {
  return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : nullptr;
}

// ---------------------------------------------------------------- SIGNATURE

struct SignatureCtx {
  ProviderCtx* provider = nullptr;
  std::shared_ptr<const KeyMaterial> key;
  EVP_MD* md = nullptr;  // null for EVP_PKEY_sign (the input is the digest)
  EVP_MD_CTX* mdctx = nullptr;
  // Verification needs no TPM: it runs on a software copy of the public key.
  EVP_PKEY* public_key = nullptr;
  EVP_MD_CTX* verify_ctx = nullptr;

  SignatureCtx() = default;
  SignatureCtx(const SignatureCtx&) = delete;
  SignatureCtx& operator=(const SignatureCtx&) = delete;
  ~SignatureCtx() { Reset(); }
  void Reset() {
    EVP_MD_CTX_free(verify_ctx);
    verify_ctx = nullptr;
    EVP_PKEY_free(public_key);
    public_key = nullptr;
    EVP_MD_CTX_free(mdctx);
    mdctx = nullptr;
    EVP_MD_free(md);
    md = nullptr;
  }
};

void* SigNewCtx(void* provctx, const char* /*propq*/) {
  auto* ctx = new (std::nothrow) SignatureCtx();
  if (ctx != nullptr) ctx->provider = static_cast<ProviderCtx*>(provctx);
  return ctx;
}

void SigFreeCtx(void* vctx) {
  delete static_cast<SignatureCtx*>(vctx);
}

void* SigDupCtx(void* vctx) {
  const auto* src = static_cast<const SignatureCtx*>(vctx);
  auto* dst = new (std::nothrow) SignatureCtx();
  if (dst == nullptr) return nullptr;
  dst->provider = src->provider;
  dst->key = src->key;
  if (src->md != nullptr) {
    if (EVP_MD_up_ref(src->md) != 1) {
      delete dst;
      return nullptr;
    }
    dst->md = src->md;
  }
  if (src->public_key != nullptr) {
    EVP_PKEY_up_ref(src->public_key);
    dst->public_key = src->public_key;
  }
  if (src->verify_ctx != nullptr) {
    dst->verify_ctx = EVP_MD_CTX_new();
    if (dst->verify_ctx == nullptr || EVP_MD_CTX_copy_ex(dst->verify_ctx, src->verify_ctx) != 1) {
      delete dst;
      return nullptr;
    }
  }
  if (src->mdctx != nullptr) {
    dst->mdctx = EVP_MD_CTX_new();
    if (dst->mdctx == nullptr || EVP_MD_CTX_copy_ex(dst->mdctx, src->mdctx) != 1) {
      delete dst;
      return nullptr;
    }
  }
  return dst;
}

// Whether `key` can sign a digest of `md` (SHA-256/384/512 only, and only
// the hash fixed by the key's scheme, if any).
bool KeyAcceptsDigest(const TpmKeyBlob& key, const EVP_MD* md) {
  static constexpr struct {
    const char* name;
    uint16_t tpm_alg;
  } kHashes[] = {{"SHA2-256", 0x000b}, {"SHA2-384", 0x000c}, {"SHA2-512", 0x000d}};
  for (const auto& h : kHashes) {
    if (EVP_MD_is_a(md, h.name)) return key.scheme_hash() == 0 || key.scheme_hash() == h.tpm_alg;
  }
  return false;
}

int SigSetKey(SignatureCtx* ctx, void* vkey) {
  const auto* key = static_cast<const ProviderKey*>(vkey);
  if (key != nullptr) ctx->key = key->material;
  if (ctx->key == nullptr) {
    RaiseError("no TPM key");
    return 0;
  }
  return 1;
}

int SigDigestSignInit(void* vctx, const char* mdname, void* vkey, const OSSL_PARAM* /*params*/) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (SigSetKey(ctx, vkey) != 1) return 0;
  ctx->Reset();
  const char* name = (mdname != nullptr && *mdname != '\0') ? mdname : "SHA256";
  // No TPM here: libssl calls this once per candidate signature algorithm.
  ctx->md = EVP_MD_fetch(ctx->provider->libctx, name, nullptr);
  if (ctx->md == nullptr) return 0;
  if (!KeyAcceptsDigest(ctx->key->blob, ctx->md)) {
    std::string m = "the TPM key cannot sign with digest ";
    m += name;
    RaiseError(m);
    ctx->Reset();
    return 0;
  }
  ctx->mdctx = EVP_MD_CTX_new();
  if (ctx->mdctx == nullptr || EVP_DigestInit_ex2(ctx->mdctx, ctx->md, nullptr) != 1) {
    ctx->Reset();
    return 0;
  }
  return 1;
}

int SigDigestSignUpdate(void* vctx, const unsigned char* data, size_t len) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (ctx->mdctx == nullptr) return 0;
  return EVP_DigestUpdate(ctx->mdctx, data, len);
}

// Signs `digest` in the TPM into sig (capacity sigsize).
int SignInTpm(SignatureCtx* ctx, std::string_view digest, unsigned char* sig, size_t* siglen,
              size_t sigsize) {
  Result<std::string> signature = ctx->key->tpm->SignDigest(ctx->key->blob, digest);
  if (!signature.ok()) {
    RaiseError(signature.status().ToString());
    return 0;
  }
  if (signature->size() > sigsize) {
    RaiseError("signature buffer too small");
    return 0;
  }
  std::memcpy(sig, signature->data(), signature->size());
  *siglen = signature->size();
  return 1;
}

int SigDigestSignFinal(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (ctx->key == nullptr || ctx->mdctx == nullptr) return 0;
  if (sig == nullptr) {
    *siglen = ctx->key->blob.max_signature_size();
    return 1;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  if (EVP_DigestFinal_ex(ctx->mdctx, digest, &dlen) != 1) return 0;
  return SignInTpm(ctx, std::string_view(reinterpret_cast<char*>(digest), dlen), sig, siglen,
                   sigsize);
}

int SigDigestSign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize,
                  const unsigned char* tbs, size_t tbslen) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (ctx->key == nullptr || ctx->md == nullptr) return 0;
  if (sig == nullptr) {
    *siglen = ctx->key->blob.max_signature_size();
    return 1;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  if (EVP_Digest(tbs, tbslen, digest, &dlen, ctx->md, nullptr) != 1) return 0;
  return SignInTpm(ctx, std::string_view(reinterpret_cast<char*>(digest), dlen), sig, siglen,
                   sigsize);
}

// EVP_PKEY_sign: the input is already the digest.
int SigSignInit(void* vctx, void* vkey, const OSSL_PARAM* /*params*/) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  ctx->Reset();
  return SigSetKey(ctx, vkey);
}

int SigSign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize,
            const unsigned char* tbs, size_t tbslen) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (ctx->key == nullptr) return 0;
  if (sig == nullptr) {
    *siglen = ctx->key->blob.max_signature_size();
    return 1;
  }
  return SignInTpm(ctx, std::string_view(reinterpret_cast<const char*>(tbs), tbslen), sig, siglen,
                   sigsize);
}

// The public half of `key` as a key of the default provider.
EVP_PKEY* SoftwarePublicKey(OSSL_LIB_CTX* libctx, const TpmKeyBlob& key) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(libctx, "EC", "provider=default");
  EVP_PKEY* pkey = nullptr;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(kGroupName),
                                       0),
      OSSL_PARAM_construct_octet_string(
          OSSL_PKEY_PARAM_PUB_KEY, const_cast<char*>(key.ec_point().data()), key.ec_point().size()),
      OSSL_PARAM_construct_end(),
  };
  if (ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1) {
    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
  }
  EVP_PKEY_CTX_free(ctx);
  return pkey;
}

int SigDigestVerifyInit(void* vctx, const char* mdname, void* vkey, const OSSL_PARAM* params) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  if (SigDigestSignInit(vctx, mdname, vkey, params) != 1) return 0;
  OSSL_LIB_CTX* libctx = ctx->provider->libctx;
  ctx->public_key = SoftwarePublicKey(libctx, ctx->key->blob);
  ctx->verify_ctx = EVP_MD_CTX_new();
  if (ctx->public_key == nullptr || ctx->verify_ctx == nullptr ||
      EVP_DigestVerifyInit_ex(ctx->verify_ctx, nullptr, EVP_MD_get0_name(ctx->md), libctx,
                              "provider=default", ctx->public_key, nullptr) != 1) {
    ctx->Reset();
    return 0;
  }
  return 1;
}

int SigDigestVerifyUpdate(void* vctx, const unsigned char* data, size_t len) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  return ctx->verify_ctx != nullptr && EVP_DigestVerifyUpdate(ctx->verify_ctx, data, len) == 1;
}

int SigDigestVerifyFinal(void* vctx, const unsigned char* sig, size_t siglen) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  return ctx->verify_ctx != nullptr && EVP_DigestVerifyFinal(ctx->verify_ctx, sig, siglen) == 1;
}

int SigDigestVerify(void* vctx, const unsigned char* sig, size_t siglen, const unsigned char* tbs,
                    size_t tbslen) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  return ctx->verify_ctx != nullptr &&
         EVP_DigestVerify(ctx->verify_ctx, sig, siglen, tbs, tbslen) == 1;
}

// DER AlgorithmIdentifier of ecdsa-with-SHA256/384/512 (no parameters).
std::string_view EcdsaAlgorithmId(const EVP_MD* md) {
  static constexpr char kSha256[] = "\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02";
  static constexpr char kSha384[] = "\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03";
  static constexpr char kSha512[] = "\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x04";
  if (md == nullptr) return {};
  if (EVP_MD_is_a(md, "SHA2-256")) return {kSha256, 12};
  if (EVP_MD_is_a(md, "SHA2-384")) return {kSha384, 12};
  if (EVP_MD_is_a(md, "SHA2-512")) return {kSha512, 12};
  return {};
}

int SigGetCtxParams(void* vctx, OSSL_PARAM* params) {
  auto* ctx = static_cast<SignatureCtx*>(vctx);
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
  if (p != nullptr) {
    std::string_view id = EcdsaAlgorithmId(ctx->md);
    if (id.empty() || OSSL_PARAM_set_octet_string(p, id.data(), id.size()) != 1) return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
  if (p != nullptr) {
    if (ctx->md == nullptr || OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(ctx->md)) != 1) {
      return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* SigGettableCtxParams(void* /*vctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kParams;
}

int SigSetCtxParams(void* /*vctx*/, const OSSL_PARAM* /*params*/) {
  return 1;
}

const OSSL_PARAM* SigSettableCtxParams(void* /*vctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {OSSL_PARAM_END};
  return kParams;
}

// ---------------------------------------------------------------- PROVIDER

template <typename F>
void (*Fn(F f))(void) {
  return reinterpret_cast<void (*)(void)>(f);
}

const OSSL_DISPATCH kKeymgmtFunctions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, Fn(KeyNew)},
    {OSSL_FUNC_KEYMGMT_FREE, Fn(KeyFree)},
    {OSSL_FUNC_KEYMGMT_HAS, Fn(KeyHas)},
    {OSSL_FUNC_KEYMGMT_IMPORT, Fn(KeyImport)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, Fn(KeyImportTypes)},
    {OSSL_FUNC_KEYMGMT_EXPORT, Fn(KeyExport)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, Fn(KeyExportTypes)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, Fn(KeyGetParams)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, Fn(KeyGettableParams)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, Fn(KeyQueryOperationName)},
    {0, nullptr},
};

const OSSL_DISPATCH kSignatureFunctions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, Fn(SigNewCtx)},
    {OSSL_FUNC_SIGNATURE_FREECTX, Fn(SigFreeCtx)},
    {OSSL_FUNC_SIGNATURE_DUPCTX, Fn(SigDupCtx)},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, Fn(SigSignInit)},
    {OSSL_FUNC_SIGNATURE_SIGN, Fn(SigSign)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, Fn(SigDigestSignInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, Fn(SigDigestSignUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, Fn(SigDigestSignFinal)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, Fn(SigDigestSign)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, Fn(SigDigestVerifyInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, Fn(SigDigestVerifyUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, Fn(SigDigestVerifyFinal)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, Fn(SigDigestVerify)},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, Fn(SigGetCtxParams)},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, Fn(SigGettableCtxParams)},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, Fn(SigSetCtxParams)},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, Fn(SigSettableCtxParams)},
    {0, nullptr},
};

const OSSL_ALGORITHM kKeymgmtAlgorithms[] = {
    {"EC:id-ecPublicKey:1.2.840.10045.2.1", kProviderProperties, kKeymgmtFunctions,
     "EC key held in a TPM"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM kSignatureAlgorithms[] = {
    {"ECDSA", kProviderProperties, kSignatureFunctions, "ECDSA signature made by a TPM"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM* ProviderQuery(void* /*provctx*/, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT: return kKeymgmtAlgorithms;
    case OSSL_OP_SIGNATURE: return kSignatureAlgorithms;
    default: return nullptr;
  }
}

void ProviderTeardown(void* provctx) {
  delete static_cast<ProviderCtx*>(provctx);
}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, Fn(ProviderQuery)},
    {OSSL_FUNC_PROVIDER_TEARDOWN, Fn(ProviderTeardown)},
    {0, nullptr},
};

int ProviderInit(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const OSSL_DISPATCH** out,
                 void** provctx) {
  OSSL_FUNC_core_get_libctx_fn* get_libctx = nullptr;
  for (; in->function_id != 0; ++in) {
    if (in->function_id == OSSL_FUNC_CORE_GET_LIBCTX) get_libctx = OSSL_FUNC_core_get_libctx(in);
  }
  if (get_libctx == nullptr) return 0;
  auto* ctx = new (std::nothrow) ProviderCtx{reinterpret_cast<OSSL_LIB_CTX*>(get_libctx(handle))};
  if (ctx == nullptr) return 0;
  *provctx = ctx;
  *out = kProviderFunctions;
  return 1;
}

struct LibCtxState {
  OSSL_LIB_CTX* libctx = nullptr;
  Status status;
};

LibCtxState MakeLibCtx() {
  LibCtxState state;
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  if (libctx == nullptr) {
    state.status = OpenSslError("OSSL_LIB_CTX_new");
    return state;
  }
  // The providers stay loaded for the life of the context; the context itself
  // is never freed (see LibCtx()), so neither handle needs an owner.
  if (OSSL_PROVIDER_load(libctx, "default") == nullptr) {
    state.status = OpenSslError("loading the OpenSSL default provider");
    OSSL_LIB_CTX_free(libctx);
    return state;
  }
  if (OSSL_PROVIDER_add_builtin(libctx, kProviderName, ProviderInit) != 1 ||
      OSSL_PROVIDER_load(libctx, kProviderName) == nullptr) {
    state.status = OpenSslError("loading the ga-tpm provider");
    OSSL_LIB_CTX_free(libctx);
    return state;
  }
  // Software keys, digests and verification stay on the default provider;
  // TPM keys are made with an explicit "provider=ga-tpm" query.
  if (EVP_set_default_properties(libctx, "?provider=default") != 1) {
    state.status = OpenSslError("EVP_set_default_properties");
    OSSL_LIB_CTX_free(libctx);
    return state;
  }
  state.libctx = libctx;
  return state;
}

}  // namespace

Result<OSSL_LIB_CTX*> LibCtx() {
  // Never freed: EVP_PKEYs and SSL_CTXs made in it may live in objects that are
  // destroyed after any static destructor could run. It stays reachable, so
  // leak checkers do not report it.
  static const LibCtxState* const state = new LibCtxState(MakeLibCtx());
  if (!state->status.ok()) return state->status;
  return state->libctx;
}

Result<EvpPkeyPtr> MakeEvpPkey(std::shared_ptr<TpmContext> tpm, const TpmKeyBlob& key) {
  if (tpm == nullptr) return InvalidArgument("MakeEvpPkey: no TpmContext");
  if (key.algorithm() != KeyAlgorithm::kEccP256) {
    return FailedPrecondition("only ECC P-256 TPM keys can be used through OpenSSL so far");
  }
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, LibCtx());
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> pctx(
      EVP_PKEY_CTX_new_from_name(libctx, "EC", kProviderProperties), EVP_PKEY_CTX_free);
  if (!pctx) return OpenSslError("EVP_PKEY_CTX_new_from_name(EC, provider=ga-tpm)");
  if (EVP_PKEY_fromdata_init(pctx.get()) != 1) return OpenSslError("EVP_PKEY_fromdata_init");
  auto material = std::make_shared<const KeyMaterial>(KeyMaterial{std::move(tpm), key});
  void* ref = &material;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_ptr(kKeyRefParam, &ref, sizeof(ref)),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(pctx.get(), &raw, EVP_PKEY_KEYPAIR, params) != 1) {
    return OpenSslError("EVP_PKEY_fromdata(TPM key)");
  }
  return EvpPkeyPtr(raw);
}

bool IsTpmKey(const EVP_PKEY* pkey) {
  const OSSL_PROVIDER* provider = pkey == nullptr ? nullptr : EVP_PKEY_get0_provider(pkey);
  return provider != nullptr && std::strcmp(OSSL_PROVIDER_get0_name(provider), kProviderName) == 0;
}

}  // namespace ga::tpm
