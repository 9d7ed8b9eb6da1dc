#include "gateway_agent/tpm/tpm_context.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "gateway_agent/openssl.h"
#include "gateway_agent/tpm_handle.h"
#include "tss_error.h"

namespace ga::tpm {

// Owns the TCTI and ESYS contexts (ESYS first, it uses the TCTI).
struct TpmContext::Esys {
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* ctx = nullptr;
  ESYS_TR srk = ESYS_TR_NONE;  // the persistent SRK, once found

  Esys() = default;
  Esys(const Esys&) = delete;
  Esys& operator=(const Esys&) = delete;
  ~Esys() { Close(); }
  void Close() {
    if (ctx != nullptr) Esys_Finalize(&ctx);
    if (tcti != nullptr) Tss2_TctiLdr_Finalize(&tcti);
    srk = ESYS_TR_NONE;
  }
  // Opens the TCTI and the ESYS context and sends TPM2_Startup(CLEAR) (an
  // already started TPM is fine).
  Status Connect(const std::string& tcti_config);
};

Status TpmContext::Esys::Connect(const std::string& tcti_config) {
  Close();
  std::string where = "tcti " + tcti_config;
  TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti_config.c_str(), &tcti);
  if (rc != TSS2_RC_SUCCESS) {
    Status s = TssError("Tss2_TctiLdr_Initialize", rc, where);
    return Status(Code::kUnavailable,
                  "no TPM reachable at TCTI \"" + tcti_config + "\": " + s.message());
  }
  rc = Esys_Initialize(&ctx, tcti, nullptr);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_Initialize", rc, where);
  rc = Esys_Startup(ctx, TPM2_SU_CLEAR);
  if (rc != TSS2_RC_SUCCESS && BaseRc(rc) != TPM2_RC_INITIALIZE) {
    return TssError("Esys_Startup", rc, where);
  }
  return Status::Ok();
}

namespace {

struct EsysFree {
  void operator()(void* p) const { Esys_Free(p); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree>;

// A transient object in the TPM, flushed when this goes out of scope.
class TransientObject {
 public:
  TransientObject(ESYS_CONTEXT* ctx, ESYS_TR handle) : ctx_(ctx), handle_(handle) {}
  ~TransientObject() {
    if (handle_ != ESYS_TR_NONE) Esys_FlushContext(ctx_, handle_);
  }
  TransientObject(const TransientObject&) = delete;
  TransientObject& operator=(const TransientObject&) = delete;
  ESYS_TR get() const { return handle_; }

 private:
  ESYS_CONTEXT* ctx_;
  ESYS_TR handle_;
};

constexpr TPMA_OBJECT kSrkAttributes =
    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
constexpr TPMA_OBJECT kSigningKeyAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                              TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                              TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;

// The TCG "ECC P-256 SRK" template (TCG EK Credential Profile, template L-2 style
// storage key): identical to the primary tpm2-openssl and tpm2-tss-engine create
// under the owner hierarchy, so their keys (parent 0x40000001) load under it.
TPM2B_PUBLIC SrkTemplate() {
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_ECC;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = kSrkAttributes;
  TPMS_ECC_PARMS& ecc = t.publicArea.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_AES;
  ecc.symmetric.keyBits.aes = 128;
  ecc.symmetric.mode.aes = TPM2_ALG_CFB;
  ecc.scheme.scheme = TPM2_ALG_NULL;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  return t;
}

TPM2B_PUBLIC SigningKeyTemplate(KeyAlgorithm algorithm) {
  TPM2B_PUBLIC t{};
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = kSigningKeyAttributes;
  if (algorithm == KeyAlgorithm::kEccP256) {
    t.publicArea.type = TPM2_ALG_ECC;
    TPMS_ECC_PARMS& ecc = t.publicArea.parameters.eccDetail;
    ecc.symmetric.algorithm = TPM2_ALG_NULL;
    ecc.scheme.scheme = TPM2_ALG_ECDSA;
    ecc.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    ecc.curveID = TPM2_ECC_NIST_P256;
    ecc.kdf.scheme = TPM2_ALG_NULL;
  } else {
    t.publicArea.type = TPM2_ALG_RSA;
    TPMS_RSA_PARMS& rsa = t.publicArea.parameters.rsaDetail;
    rsa.symmetric.algorithm = TPM2_ALG_NULL;
    rsa.scheme.scheme = TPM2_ALG_RSASSA;
    rsa.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    rsa.keyBits = 2048;
    rsa.exponent = 0;
  }
  return t;
}

bool IsStorageKey(const TPMT_PUBLIC& area) {
  TPMA_OBJECT a = area.objectAttributes;
  return (a & TPMA_OBJECT_RESTRICTED) != 0 && (a & TPMA_OBJECT_DECRYPT) != 0 &&
         (a & TPMA_OBJECT_SIGN_ENCRYPT) == 0 &&
         (area.type == TPM2_ALG_ECC || area.type == TPM2_ALG_RSA);
}

std::string Marshal(const TPM2B_PUBLIC& pub) {
  uint8_t buf[sizeof(TPM2B_PUBLIC)];
  size_t off = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS) return {};
  return std::string(reinterpret_cast<char*>(buf), off);
}

std::string Marshal(const TPM2B_PRIVATE& priv) {
  uint8_t buf[sizeof(TPM2B_PRIVATE)];
  size_t off = 0;
  if (Tss2_MU_TPM2B_PRIVATE_Marshal(&priv, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS) return {};
  return std::string(reinterpret_cast<char*>(buf), off);
}

std::string FourChars(uint32_t v) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) {
    char c = static_cast<char>((v >> shift) & 0xff);
    if (c != '\0') s.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return s;
}

Result<ESYS_TR> FindSrk(TpmContext::Esys& e, uint32_t handle, std::string_view where) {
  ESYS_TR tr = ESYS_TR_NONE;
  TSS2_RC rc = Esys_TR_FromTPMPublic(e.ctx, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
  if (rc != TSS2_RC_SUCCESS) {
    if (BaseRc(rc) == TPM2_RC_HANDLE) return ESYS_TR_NONE;
    return TssError("Esys_TR_FromTPMPublic", rc, where);
  }
  EsysPtr<TPM2B_PUBLIC> pub;
  TPM2B_PUBLIC* pub_raw = nullptr;
  rc = Esys_ReadPublic(e.ctx, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub_raw, nullptr,
                       nullptr);
  pub.reset(pub_raw);
  if (rc != TSS2_RC_SUCCESS) {
    Esys_TR_Close(e.ctx, &tr);
    return TssError("Esys_ReadPublic", rc, where);
  }
  if (!IsStorageKey(pub->publicArea)) {
    Esys_TR_Close(e.ctx, &tr);
    return FailedPrecondition("persistent handle " + HandleHex(handle) + " (" + std::string(where) +
                              ") holds an object that is not a storage key, so it cannot be the "
                              "SRK; configure the handle of the SRK or a free one");
  }
  return tr;
}

}  // namespace

TpmContext::TpmContext(TpmOptions options)
    : options_(std::move(options)), esys_(std::make_unique<Esys>()) {}

TpmContext::~TpmContext() = default;

Result<std::shared_ptr<TpmContext>> TpmContext::Open(const TpmOptions& options) {
  if (!IsPersistentHandle(options.srk_handle)) {
    return InvalidArgument("SRK handle " + HandleHex(options.srk_handle) +
                           " is not a persistent handle (0x81000000-0x81ffffff)");
  }
  std::shared_ptr<TpmContext> tpm(new TpmContext(options));
  MutexLock lock(tpm->mu_);  // not shared yet, but the analysis cannot know
  GA_RETURN_IF_ERROR(tpm->esys_->Connect(options.tcti));
  return tpm;
}

Status TpmContext::Health() {
  MutexLock lock(health_mu_);
  return health_;
}

void TpmContext::SetUnreachable(Status status) {
  unreachable_ = std::move(status);
  MutexLock lock(health_mu_);
  health_ = unreachable_;
}

Status TpmContext::ReconnectLocked() {
  Status s = esys_->Connect(options_.tcti);
  if (s.ok()) {
    SetUnreachable(Status::Ok());
    reconnect_backoff_ = std::chrono::milliseconds(0);
    return s;
  }
  esys_->Close();
  constexpr std::chrono::milliseconds kFirst(100), kMax(5000);
  reconnect_backoff_ = std::min(kMax, std::max(kFirst, reconnect_backoff_ * 2));
  next_reconnect_ = std::chrono::steady_clock::now() + reconnect_backoff_;
  SetUnreachable(Unavailable("TPM unreachable: " + options_.tcti + ": " + s.message()));
  return unreachable_;
}

template <typename R, typename... P, typename... A>
R TpmContext::WithReconnect(R (TpmContext::*op)(P...), A&&... args) {
  if (!unreachable_.ok() || esys_->ctx == nullptr) {
    if (std::chrono::steady_clock::now() < next_reconnect_) return unreachable_;
    GA_RETURN_IF_ERROR(ReconnectLocked());
  }
  (void)TakeConnectionLost();
  R first = (this->*op)(args...);
  if (first.ok() || !TakeConnectionLost()) return first;
  GA_RETURN_IF_ERROR(ReconnectLocked());
  R second = (this->*op)(args...);
  if (!second.ok() && TakeConnectionLost()) {
    SetUnreachable(
        Unavailable("TPM unreachable: " + options_.tcti + ": " + second.status().message()));
    reconnect_backoff_ = std::chrono::milliseconds(100);
    next_reconnect_ = std::chrono::steady_clock::now() + reconnect_backoff_;
  }
  return second;
}

Result<bool> TpmContext::EnsureSrk() {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::EnsureSrkLocked);
}

Result<bool> TpmContext::EnsureSrkLocked() {
  Esys& e = *esys_;
  if (e.srk != ESYS_TR_NONE) return false;
  std::string where = "tcti " + options_.tcti + ", SRK " + HandleHex(options_.srk_handle);
  GA_ASSIGN_OR_RETURN(ESYS_TR found, FindSrk(e, options_.srk_handle, where));
  if (found != ESYS_TR_NONE) {
    e.srk = found;
    return false;
  }

  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC tmpl = SrkTemplate();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR primary = ESYS_TR_NONE;
  TSS2_RC rc = Esys_CreatePrimary(e.ctx, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                  ESYS_TR_NONE, &sensitive, &tmpl, &outside, &pcrs, &primary,
                                  nullptr, nullptr, nullptr, nullptr);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_CreatePrimary", rc, where);
  TransientObject transient(e.ctx, primary);
  ESYS_TR persistent = ESYS_TR_NONE;
  rc = Esys_EvictControl(e.ctx, ESYS_TR_RH_OWNER, transient.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                         ESYS_TR_NONE, options_.srk_handle, &persistent);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_EvictControl", rc, where);
  e.srk = persistent;
  return true;
}

Result<TpmKeyBlob> TpmContext::CreateKey(KeyAlgorithm algorithm) {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::CreateKeyLocked, algorithm);
}

Result<TpmKeyBlob> TpmContext::CreateKeyLocked(KeyAlgorithm algorithm) {
  GA_ASSIGN_OR_RETURN(bool created, EnsureSrkLocked());
  (void)created;
  Esys& e = *esys_;
  std::string where = "tcti " + options_.tcti + ", parent " + HandleHex(options_.srk_handle);
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC tmpl = SigningKeyTemplate(algorithm);
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  TPM2B_PRIVATE* priv_raw = nullptr;
  TPM2B_PUBLIC* pub_raw = nullptr;
  TSS2_RC rc = Esys_Create(e.ctx, e.srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
                           &tmpl, &outside, &pcrs, &priv_raw, &pub_raw, nullptr, nullptr, nullptr);
  EsysPtr<TPM2B_PRIVATE> priv(priv_raw);
  EsysPtr<TPM2B_PUBLIC> pub(pub_raw);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_Create", rc, where);
  std::string pub_bytes = Marshal(*pub);
  std::string priv_bytes = Marshal(*priv);
  if (pub_bytes.empty() || priv_bytes.empty()) return Internal("marshalling a new key failed");
  return TpmKeyBlob::FromParts(std::move(pub_bytes), std::move(priv_bytes), options_.srk_handle,
                               true, "new TPM key");
}

Result<std::string> TpmContext::SignDigest(const TpmKeyBlob& key, std::string_view digest) {
  // Fault injection for tests: a real TPM chip takes 40-200 ms per signature,
  // swtpm under 1 ms. GATEWAY_AGENT_TEST_SIGN_DELAY_MS makes every signature slow.
  static const long test_delay_ms = [] {
    const char* v = std::getenv("GATEWAY_AGENT_TEST_SIGN_DELAY_MS");
    return v ? std::strtol(v, nullptr, 10) : 0L;
  }();
  if (test_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(test_delay_ms));
  TPMI_ALG_HASH hash = TPM2_ALG_NULL;
  switch (digest.size()) {
    case 32: hash = TPM2_ALG_SHA256; break;
    case 48: hash = TPM2_ALG_SHA384; break;
    case 64: hash = TPM2_ALG_SHA512; break;
    default:
      return InvalidArgument("digest of " + std::to_string(digest.size()) +
                             " bytes is not SHA-256/384/512");
  }
  if (key.scheme_hash() != 0 && key.scheme_hash() != hash) {
    return InvalidArgument("the key's scheme fixes another hash than this " +
                           std::to_string(digest.size() * 8) + "-bit digest");
  }
  if (key.parent() != options_.srk_handle && key.parent() != kOwnerHierarchy) {
    return FailedPrecondition("the key's parent is " + HandleHex(key.parent()) +
                              " but the SRK is configured at " + HandleHex(options_.srk_handle));
  }
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::SignLocked, key, digest);
}

Result<std::string> TpmContext::SignLocked(const TpmKeyBlob& key, std::string_view digest) {
  TPMI_ALG_HASH hash = digest.size() == 32   ? TPM2_ALG_SHA256
                       : digest.size() == 48 ? TPM2_ALG_SHA384
                                             : TPM2_ALG_SHA512;
  TPM2B_PUBLIC pub{};
  TPM2B_PRIVATE priv{};
  if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(reinterpret_cast<const uint8_t*>(key.public_area().data()),
                                     key.public_area().size(), nullptr, &pub) != TSS2_RC_SUCCESS ||
      Tss2_MU_TPM2B_PRIVATE_Unmarshal(reinterpret_cast<const uint8_t*>(key.private_area().data()),
                                      key.private_area().size(), nullptr,
                                      &priv) != TSS2_RC_SUCCESS) {
    return Internal("a validated key blob does not unmarshal");
  }
  GA_ASSIGN_OR_RETURN(bool created, EnsureSrkLocked());
  (void)created;
  Esys& e = *esys_;
  std::string where = "tcti " + options_.tcti + ", parent " + HandleHex(options_.srk_handle);
  ESYS_TR loaded = ESYS_TR_NONE;
  TSS2_RC rc =
      Esys_Load(e.ctx, e.srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv, &pub, &loaded);
  if (rc != TSS2_RC_SUCCESS) {
    Status s = TssError("Esys_Load", rc, where);
    TSS2_RC base = BaseRc(rc);
    if (base == TPM2_RC_INTEGRITY || base == TPM2_RC_SIZE || base == TPM2_RC_KEY ||
        base == TPM2_RC_BINDING || base == TPM2_RC_VALUE || base == TPM2_RC_ATTRIBUTES) {
      return InvalidArgument(
          "the key was not made under the SRK " + HandleHex(options_.srk_handle) +
          " of this TPM (a key from another TPM or a damaged blob): " + s.message());
    }
    return s;
  }
  TransientObject object(e.ctx, loaded);

  TPM2B_DIGEST tpm_digest{};
  tpm_digest.size = static_cast<UINT16>(digest.size());
  std::memcpy(tpm_digest.buffer, digest.data(), digest.size());
  TPMT_SIG_SCHEME scheme{};
  if (key.algorithm() == KeyAlgorithm::kEccP256) {
    scheme.scheme = TPM2_ALG_ECDSA;
    scheme.details.ecdsa.hashAlg = hash;
  } else {
    scheme.scheme = TPM2_ALG_RSASSA;
    scheme.details.rsassa.hashAlg = hash;
  }
  TPMT_TK_HASHCHECK ticket{};
  ticket.tag = TPM2_ST_HASHCHECK;
  ticket.hierarchy = TPM2_RH_NULL;
  TPMT_SIGNATURE* sig_raw = nullptr;
  rc = Esys_Sign(e.ctx, object.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &tpm_digest,
                 &scheme, &ticket, &sig_raw);
  EsysPtr<TPMT_SIGNATURE> sig(sig_raw);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_Sign", rc, where);

  if (key.algorithm() == KeyAlgorithm::kRsa2048) {
    return std::string(reinterpret_cast<const char*>(sig->signature.rsassa.sig.buffer),
                       sig->signature.rsassa.sig.size);
  }
  const TPMS_SIGNATURE_ECC& ecdsa = sig->signature.ecdsa;
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> der_sig(ECDSA_SIG_new(), ECDSA_SIG_free);
  BIGNUM* r = BN_bin2bn(ecdsa.signatureR.buffer, ecdsa.signatureR.size, nullptr);
  BIGNUM* s = BN_bin2bn(ecdsa.signatureS.buffer, ecdsa.signatureS.size, nullptr);
  if (!der_sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(der_sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return OpenSslError("encoding the TPM's ECDSA signature");
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(der_sig.get(), &der);
  if (len <= 0) return OpenSslError("i2d_ECDSA_SIG");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

namespace {

Result<uint32_t> GetProperty(ESYS_CONTEXT* ctx, TPM2_PT property, std::string_view where) {
  TPMS_CAPABILITY_DATA* data_raw = nullptr;
  TSS2_RC rc = Esys_GetCapability(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  TPM2_CAP_TPM_PROPERTIES, property, 1, nullptr, &data_raw);
  EsysPtr<TPMS_CAPABILITY_DATA> data(data_raw);
  if (rc != TSS2_RC_SUCCESS) return TssError("Esys_GetCapability", rc, where);
  const TPML_TAGGED_TPM_PROPERTY& props = data->data.tpmProperties;
  if (props.count == 0 || props.tpmProperty[0].property != property) return 0u;
  return props.tpmProperty[0].value;
}

Result<std::vector<uint32_t>> ListTransient(ESYS_CONTEXT* ctx, std::string_view where) {
  std::vector<uint32_t> handles;
  uint32_t next = TPM2_TRANSIENT_FIRST;
  TPMI_YES_NO more = TPM2_YES;
  while (more == TPM2_YES) {
    TPMS_CAPABILITY_DATA* data_raw = nullptr;
    TSS2_RC rc = Esys_GetCapability(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                                    next, TPM2_MAX_CAP_HANDLES, &more, &data_raw);
    EsysPtr<TPMS_CAPABILITY_DATA> data(data_raw);
    if (rc != TSS2_RC_SUCCESS) return TssError("Esys_GetCapability(handles)", rc, where);
    const TPML_HANDLE& list = data->data.handles;
    for (uint32_t i = 0; i < list.count; ++i) {
      if ((list.handle[i] & 0xff000000) != TPM2_TRANSIENT_FIRST) {
        more = TPM2_NO;
        break;
      }
      handles.push_back(list.handle[i]);
      next = list.handle[i] + 1;
    }
    if (list.count == 0) break;
  }
  return handles;
}

}  // namespace

Result<std::vector<uint32_t>> TpmContext::TransientHandles() {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::TransientHandlesLocked);
}

Result<std::vector<uint32_t>> TpmContext::TransientHandlesLocked() {
  return ListTransient(esys_->ctx, "tcti " + options_.tcti);
}

Result<int> TpmContext::FlushStaleTransientObjects() {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  std::string where = "tcti " + options_.tcti;
  GA_ASSIGN_OR_RETURN(std::vector<uint32_t> handles, ListTransient(esys_->ctx, where));
  int flushed = 0;
  for (uint32_t handle : handles) {
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc =
        Esys_TR_FromTPMPublic(esys_->ctx, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
    if (rc != TSS2_RC_SUCCESS) {
      return TssError("Esys_TR_FromTPMPublic", rc, where + ", handle " + HandleHex(handle));
    }
    rc = Esys_FlushContext(esys_->ctx, tr);
    if (rc != TSS2_RC_SUCCESS) {
      return TssError("Esys_FlushContext", rc, where + ", handle " + HandleHex(handle));
    }
    ++flushed;
  }
  return flushed;
}

Status TpmContext::TryKey(const TpmKeyBlob& key) {
  return SignDigest(key, std::string(32, '\0')).status();
}

Status TpmContext::Probe() {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::ProbeLocked).status();
}

Result<uint32_t> TpmContext::ProbeLocked() {
  return GetProperty(esys_->ctx, TPM2_PT_MANUFACTURER, "tcti " + options_.tcti);
}

Result<TpmInfo> TpmContext::Info() {
  TpmScheduler::Turn turn = scheduler_.Enter();
  MutexLock lock(mu_);
  return WithReconnect(&TpmContext::InfoLocked);
}

Result<TpmInfo> TpmContext::InfoLocked() {
  ESYS_CONTEXT* ctx = esys_->ctx;
  std::string where = "tcti " + options_.tcti;
  TpmInfo info;
  info.tcti = options_.tcti;
  info.srk_handle = options_.srk_handle;
  GA_ASSIGN_OR_RETURN(uint32_t manufacturer, GetProperty(ctx, TPM2_PT_MANUFACTURER, where));
  info.manufacturer = FourChars(manufacturer);
  for (TPM2_PT pt = TPM2_PT_VENDOR_STRING_1; pt <= TPM2_PT_VENDOR_STRING_4; ++pt) {
    GA_ASSIGN_OR_RETURN(uint32_t v, GetProperty(ctx, pt, where));
    info.vendor_string += FourChars(v);
  }
  GA_ASSIGN_OR_RETURN(uint32_t fw1, GetProperty(ctx, TPM2_PT_FIRMWARE_VERSION_1, where));
  GA_ASSIGN_OR_RETURN(uint32_t fw2, GetProperty(ctx, TPM2_PT_FIRMWARE_VERSION_2, where));
  char raw[32];
  std::snprintf(raw, sizeof(raw), " (0x%08x 0x%08x)", fw1, fw2);
  info.firmware_version = std::to_string(fw1 >> 16) + "." + std::to_string(fw1 & 0xffff) + "." +
                          std::to_string(fw2 >> 16) + "." + std::to_string(fw2 & 0xffff) + raw;
  GA_ASSIGN_OR_RETURN(uint32_t revision, GetProperty(ctx, TPM2_PT_REVISION, where));
  info.spec_revision = std::to_string(revision / 100) + "." + (revision % 100 < 10 ? "0" : "") +
                       std::to_string(revision % 100);
  GA_ASSIGN_OR_RETURN(info.persistent_objects, GetProperty(ctx, TPM2_PT_HR_PERSISTENT, where));
  GA_ASSIGN_OR_RETURN(info.free_persistent_slots,
                      GetProperty(ctx, TPM2_PT_HR_PERSISTENT_AVAIL, where));
  GA_ASSIGN_OR_RETURN(info.free_transient_slots,
                      GetProperty(ctx, TPM2_PT_HR_TRANSIENT_AVAIL, where));
  GA_ASSIGN_OR_RETURN(uint32_t permanent, GetProperty(ctx, TPM2_PT_PERMANENT, where));
  info.in_lockout = (permanent & TPMA_PERMANENT_INLOCKOUT) != 0;
  GA_ASSIGN_OR_RETURN(std::vector<uint32_t> transients, ListTransient(ctx, where));
  info.loaded_transient_objects = static_cast<uint32_t>(transients.size());
  if (esys_->srk != ESYS_TR_NONE) {
    info.srk_present = true;
  } else {
    Result<ESYS_TR> srk =
        FindSrk(*esys_, options_.srk_handle, where + ", SRK " + HandleHex(options_.srk_handle));
    if (!srk.ok() && srk.status().code() != Code::kFailedPrecondition) return srk.status();
    if (!srk.ok()) {
      info.srk_problem = srk.status().message();
    } else if (*srk != ESYS_TR_NONE) {
      info.srk_present = true;
      esys_->srk = *srk;
    }
  }
  return info;
}

}  // namespace ga::tpm
