#include "gateway_agent/pki/local_ca.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <cctype>
#include <cstdio>
#include <sstream>

#include "command_ca.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_key.h"
#include "gateway_agent/tpm_handle.h"
#include "issuing.h"

namespace ga::pki {
namespace {

namespace fs = std::filesystem;

std::string_view BackendName(CaBackend backend) {
  switch (backend) {
    case CaBackend::kFile: return "file";
    case CaBackend::kTpm: return "tpm";
    case CaBackend::kCommand: return "command";
  }
  return "?";
}

X509Ptr Share(const X509* cert) {
  X509_up_ref(const_cast<X509*>(cert));
  return X509Ptr(const_cast<X509*>(cert));
}

// A CA whose key this process can use: a PEM file, or a TPM key.
class KeyedCa final : public LocalCa {
 public:
  KeyedCa(std::string_view backend, X509Ptr cert, EvpPkeyPtr key, std::chrono::seconds validity,
          std::string cert_source)
      : LocalCa(validity),
        backend_(backend),
        cert_(std::move(cert)),
        key_(std::move(key)),
        cert_source_(std::move(cert_source)) {}

  std::string_view backend() const override { return backend_; }
  const X509* certificate() const override { return cert_.get(); }

 protected:
  Result<IssuedCertificate> Sign(const CertificateRequest& request) override {
    // The CA may have expired since it was opened by a long-running agent.
    GA_RETURN_IF_ERROR(internal::CheckCaCertificate(cert_.get(), cert_source_));
    MutexLock lock(mu_);
    GA_ASSIGN_OR_RETURN(X509Ptr cert, internal::BuildCertificate(request, cert_.get(), key_.get()));
    IssuedCertificate issued;
    issued.cert = std::move(cert);
    issued.chain.push_back(Share(cert_.get()));
    return issued;
  }

 private:
  std::string backend_;
  X509Ptr cert_;
  Mutex mu_;  // one signature at a time with key_
  EvpPkeyPtr key_ GA_GUARDED_BY(mu_);
  std::string cert_source_;
};

int NoPassphrase(char*, int, int, void*) {
  return -1;
}

Result<EvpPkeyPtr> LoadFileKey(const fs::path& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus("CA key " + path.string(), errno);
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Code::kPermissionDenied, "CA key " + path.string() +
                                               " is accessible by group or others (mode " + mode +
                                               "); run chmod 600 " + path.string());
  }
  GA_ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  if (pem.find("-----BEGIN TSS2 PRIVATE KEY-----") != std::string::npos) {
    return InvalidArgument("CA key " + path.string() +
                           " is a TPM key blob; use [ca] backend = \"tpm\"");
  }
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  EvpPkeyPtr key(
      PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, NoPassphrase, nullptr, libctx, nullptr));
  OPENSSL_cleanse(pem.data(), pem.size());
  if (!key) {
    return OpenSslError("CA key " + path.string() + " is not an unencrypted PEM private key",
                        Code::kInvalidArgument);
  }
  return key;
}

Result<EvpPkeyPtr> LoadCaKey(const CaConfig& config, const std::shared_ptr<tpm::TpmContext>& tpm) {
  switch (config.backend) {
    case CaBackend::kFile: return LoadFileKey(config.key);
    case CaBackend::kTpm: {
      if (!tpm) return FailedPrecondition("the tpm CA backend needs a TPM ([tpm] tcti, --tcti)");
      GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(config.key));
      return tpm::MakeEvpPkey(tpm, blob).With("CA key " + config.key.string());
    }
    case CaBackend::kCommand: break;
  }
  return InvalidArgument("the command CA backend has no key of its own");
}

Status CheckKeyMatches(X509* cert, EVP_PKEY* key, const CaConfig& config) {
  if (X509_check_private_key(cert, key) != 1) {
    ClearOpenSslErrors();
    return InvalidArgument("CA key " + config.key.string() + " does not match CA certificate " +
                           config.cert.string());
  }
  return Status::Ok();
}

// Signs a probe with `key` and verifies it with the certificate's public key:
// proves that the TPM actually holds the key (a key blob from another TPM
// matches the certificate but cannot sign).
Status ProbeSignature(X509* cert, EVP_PKEY* key, const CaConfig& config) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  static constexpr unsigned char kProbe[] = "gateway-agent CA key probe";
  EvpMdCtxPtr sign(EVP_MD_CTX_new());
  size_t len = 0;
  if (!sign ||
      EVP_DigestSignInit_ex(sign.get(), nullptr, "SHA256", libctx, nullptr, key, nullptr) != 1 ||
      EVP_DigestSign(sign.get(), nullptr, &len, kProbe, sizeof(kProbe)) != 1) {
    return OpenSslError("CA key " + config.key.string() + ": preparing a test signature");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(sign.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, kProbe,
                     sizeof(kProbe)) != 1) {
    return OpenSslError("CA key " + config.key.string() +
                        ": the TPM cannot sign with it (a key of another TPM?)");
  }
  sig.resize(len);
  EvpMdCtxPtr verify(EVP_MD_CTX_new());
  if (!verify ||
      EVP_DigestVerifyInit_ex(verify.get(), nullptr, "SHA256", libctx, nullptr,
                              X509_get0_pubkey(cert), nullptr) != 1 ||
      EVP_DigestVerify(verify.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       kProbe, sizeof(kProbe)) != 1) {
    ClearOpenSslErrors();
    return InvalidArgument("CA key " + config.key.string() +
                           ": a test signature does not verify with CA certificate " +
                           config.cert.string());
  }
  return Status::Ok();
}

Result<X509ReqPtr> BuildCsr(EVP_PKEY* key, const X509_NAME* subject) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  X509ReqPtr req(X509_REQ_new_ex(libctx, nullptr));
  if (!req) return OpenSslError("X509_REQ_new_ex");
  if (X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject) != 1 ||
      X509_REQ_set_pubkey(req.get(), key) != 1) {
    return OpenSslError("filling the CSR");
  }
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  if (!md) return OpenSslError("EVP_MD_CTX_new");
  if (EVP_DigestSignInit_ex(md.get(), nullptr, internal::DigestFor(key), libctx, nullptr, key,
                            nullptr) != 1 ||
      X509_REQ_sign_ctx(req.get(), md.get()) <= 0) {
    return OpenSslError("signing the CSR");
  }
  return req;
}

bool IsRegistrationCode(std::string_view code) {
  if (code.empty() || code.size() > 64) return false;
  for (char c : code) {
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string TomlString(std::string_view s) {
  std::ostringstream out;
  out << toml::value<std::string>(std::string(s));
  return out.str();
}

// Removes the files written so far unless disarmed.
class WrittenFiles {
 public:
  ~WrittenFiles() {
    // Files first, then the directory (fs::remove only removes it if empty).
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      std::error_code ec;
      fs::remove(*it, ec);
    }
  }
  void Add(fs::path p) { paths_.push_back(std::move(p)); }
  void Keep() { paths_.clear(); }

 private:
  std::vector<fs::path> paths_;
};

}  // namespace

Result<std::string> IssuedCertificate::CertPem() const {
  return CertificateToPem(cert.get());
}
Result<std::string> IssuedCertificate::ChainPem() const {
  return pki::ChainPem(cert.get(), chain);
}
std::string IssuedCertificate::AwsId() const {
  return AwsCertificateId(cert.get());
}

Status WriteChainFile(const fs::path& path, const IssuedCertificate& issued) {
  return WriteChainFile(path, issued.cert.get(), issued.chain);
}

Result<IssuedCertificate> LocalCa::Issue(X509_REQ* csr, const std::string& thing_name,
                                         const std::string& organizational_unit) {
  std::string what = "issuing a certificate for thing \"" + thing_name + "\"";
  if (!IsValidThingName(thing_name)) {
    return InvalidArgument("\"" + thing_name +
                           "\" is not a valid AWS thing name (1-128 characters of a-z A-Z 0-9 : "
                           "_ -)")
        .With(what);
  }
  if (thing_name.size() > 64) {
    return InvalidArgument("thing name \"" + thing_name + "\" has " +
                           std::to_string(thing_name.size()) +
                           " characters; a certificate CN holds at most 64")
        .With(what);
  }
  auto key = internal::CheckCsr(csr);
  if (!key.ok()) return std::move(key).take_status().With(what);
  auto cn = CommonName(X509_REQ_get_subject_name(csr));
  if (!cn.ok()) return std::move(cn).take_status().With("the CSR").With(what);
  if (!cn->empty() && *cn != thing_name) {
    return InvalidArgument("the CSR's CN \"" + *cn + "\" is not the thing name").With(what);
  }
  return Sign({csr, thing_name, organizational_unit, CertificateProfile::kDevice, validity(), {}})
      .With(what);
}

Result<IssuedCertificate> LocalCa::IssueVerificationCertificate(X509_REQ* csr,
                                                                std::string_view code) {
  static constexpr std::string_view kWhat = "issuing the CA verification certificate";
  if (!IsRegistrationCode(code)) {
    return InvalidArgument(
               "the registration code must be 1-64 letters and digits (from aws iot "
               "get-registration-code)")
        .With(kWhat);
  }
  auto key = internal::CheckCsr(csr);
  if (!key.ok()) return std::move(key).take_status().With(kWhat);
  return Sign({csr, std::string(code), "", CertificateProfile::kVerification, validity(), {}})
      .With(kWhat);
}

Result<IssuedCertificate> LocalCa::IssueServerCertificate(
    X509_REQ* csr, const std::string& common_name, const std::vector<std::string>& alt_names) {
  std::string what = "issuing a TLS server certificate for \"" + common_name + "\"";
  if (common_name.empty() || common_name.size() > 64 || alt_names.empty()) {
    return InvalidArgument("a server certificate needs a CN of 1-64 characters and a name")
        .With(what);
  }
  auto key = internal::CheckCsr(csr);
  if (!key.ok()) return std::move(key).take_status().With(what);
  return Sign({csr, common_name, "", CertificateProfile::kServer, validity(), alt_names})
      .With(what);
}

Result<EvpPkeyPtr> GenerateP256Key() {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(libctx, nullptr, "EC", "P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
}

Result<std::string> PrivateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("encoding a private key as PEM");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<size_t>(len));
  OPENSSL_cleanse(data, static_cast<size_t>(len));
  return pem;
}

Result<std::unique_ptr<LocalCa>> OpenLocalCa(const CaConfig& config,
                                             std::shared_ptr<tpm::TpmContext> tpm) {
  std::string what = "opening the " + std::string(BackendName(config.backend)) + " CA";
  if (config.backend == CaBackend::kCommand) return internal::OpenCommandCa(config).With(what);
  GA_RETURN_IF_ERROR(internal::CheckValidity(config));

  std::error_code ec;
  if (!fs::exists(config.cert, ec) && fs::exists(config.key, ec)) {
    return NotFound("CA certificate " + config.cert.string() +
                    " does not exist (for a CA made with --csr-only: `gateway-agent ca import`)")
        .With(what);
  }
  auto cert = ReadCertificateFile(config.cert);
  if (!cert.ok()) return std::move(cert).take_status().With(what);
  GA_RETURN_IF_ERROR(internal::CheckCaCertificate(cert->get(), config.cert.string()).With(what));
  auto key = LoadCaKey(config, tpm);
  if (!key.ok()) return std::move(key).take_status().With(what);
  GA_RETURN_IF_ERROR(CheckKeyMatches(cert->get(), key->get(), config).With(what));
  if (config.backend == CaBackend::kTpm) {
    GA_RETURN_IF_ERROR(ProbeSignature(cert->get(), key->get(), config).With(what));
  }
  return std::unique_ptr<LocalCa>(new KeyedCa(BackendName(config.backend), std::move(*cert),
                                              std::move(*key), internal::ValidityOf(config),
                                              config.cert.string()));
}

Status CheckLocalCa(const CaConfig& config) {
  if (config.backend != CaBackend::kTpm) return OpenLocalCa(config, nullptr).status();
  std::string what = "opening the tpm CA";
  GA_RETURN_IF_ERROR(internal::CheckValidity(config));
  auto cert = ReadCertificateFile(config.cert);
  if (!cert.ok()) return std::move(cert).take_status().With(what);
  GA_RETURN_IF_ERROR(internal::CheckCaCertificate(cert->get(), config.cert.string()).With(what));
  auto blob = tpm::TpmKeyBlob::ReadFile(config.key);
  if (!blob.ok()) return std::move(blob).take_status().With("CA key " + config.key.string());
  return Status::Ok();
}

Result<CaInitResult> InitLocalCa(const CaInitOptions& options) {
  static constexpr std::string_view kWhat = "creating the CA";
  if (options.backend != CaBackend::kFile && options.backend != CaBackend::kTpm) {
    return InvalidArgument("ca init makes a file or tpm CA, not a command CA").With(kWhat);
  }
  if (options.days < 1 || options.days > 36500) {
    return InvalidArgument("--days must be 1-36500").With(kWhat);
  }
  if (options.out_dir.empty()) return InvalidArgument("no output directory").With(kWhat);
  if (options.backend == CaBackend::kTpm && !options.tpm) {
    return FailedPrecondition("a tpm CA needs a TPM (--tcti)").With(kWhat);
  }
  auto subject = tpm::ParseSubject(options.subject);
  if (!subject.ok()) return std::move(subject).take_status().With(kWhat);

  CaInitResult result;
  result.key = options.out_dir / kCaKeyFile;
  result.description = options.out_dir / kCaDescriptionFile;
  if (options.csr_only) {
    result.csr = options.out_dir / kCaCsrFile;
  } else {
    result.cert = options.out_dir / kCaCertFile;
  }
  for (std::string_view name : {kCaCertFile, kCaKeyFile, kCaCsrFile, kCaDescriptionFile}) {
    std::error_code ec;
    fs::path p = options.out_dir / name;
    if (fs::exists(fs::symlink_status(p, ec))) {
      return Status(Code::kAlreadyExists, p.string() + " exists; refusing to overwrite a CA")
          .With(kWhat);
    }
  }
  WrittenFiles written;
  std::error_code ec;
  if (!fs::exists(options.out_dir, ec)) {
    GA_RETURN_IF_ERROR(EnsureDirectory(options.out_dir, 0700).With(kWhat));
    written.Add(options.out_dir);
  }

  EvpPkeyPtr key;
  if (options.backend == CaBackend::kFile) {
    auto made = GenerateP256Key();
    if (!made.ok()) return std::move(made).take_status().With("the CA key").With(kWhat);
    key = std::move(*made);
    auto pem = PrivateKeyPem(key.get());
    if (!pem.ok()) return std::move(pem).take_status().With("the CA key").With(kWhat);
    written.Add(result.key);
    Status s = WriteFileAtomic(result.key, *pem, 0600);
    OPENSSL_cleanse(pem->data(), pem->size());
    GA_RETURN_IF_ERROR(s.With(kWhat));
  } else {
    auto blob = options.tpm->CreateKey(tpm::KeyAlgorithm::kEccP256);
    if (!blob.ok()) return std::move(blob).take_status().With(kWhat);
    written.Add(result.key);
    GA_RETURN_IF_ERROR(blob->WriteFile(result.key).With(kWhat));
    auto pkey = tpm::MakeEvpPkey(options.tpm, *blob);
    if (!pkey.ok()) return std::move(pkey).take_status().With(kWhat);
    key = std::move(*pkey);
  }

  if (options.csr_only) {
    auto csr = BuildCsr(key.get(), subject->get());
    if (!csr.ok()) return std::move(csr).take_status().With(kWhat);
    GA_ASSIGN_OR_RETURN(std::string pem, CsrToPem(csr->get()));
    written.Add(result.csr);
    GA_RETURN_IF_ERROR(WriteFileAtomic(result.csr, pem, 0644).With(kWhat));
  } else {
    auto cert = internal::BuildSelfSignedCa(key.get(), subject->get(), options.days);
    if (!cert.ok()) return std::move(cert).take_status().With(kWhat);
    GA_ASSIGN_OR_RETURN(std::string pem, CertificateToPem(cert->get()));
    written.Add(result.cert);
    GA_RETURN_IF_ERROR(WriteFileAtomic(result.cert, pem, 0644).With(kWhat));
    result.aws_id = AwsCertificateId(cert->get());
  }

  std::string toml =
      "# A local CA for gateway-agent, written by `gateway-agent ca init`.\n"
      "# Paths are relative to this directory. Use it with `gateway-agent ca ... --ca-dir DIR`.\n"
      "backend = " +
      TomlString(BackendName(options.backend)) + "\ncert = " + TomlString(kCaCertFile) +
      "\nkey = " + TomlString(kCaKeyFile) +
      "\n# Validity of the device certificates this CA issues.\nvalidity_days = 365\n";
  if (options.backend == CaBackend::kTpm) {
    toml += "# The TPM that holds the CA key (--tcti overrides).\ntcti = " +
            TomlString(options.tcti.empty() ? options.tpm->tcti() : options.tcti) + "\n";
    char handle[16];
    std::snprintf(handle, sizeof(handle), "0x%08x", options.tpm->srk_handle());
    toml += "srk_handle = " + TomlString(handle) + "\n";
  }
  written.Add(result.description);
  GA_RETURN_IF_ERROR(WriteFileAtomic(result.description, toml, 0644).With(kWhat));
  written.Keep();
  return result;
}

Result<CaDirectory> ReadCaDirectory(const fs::path& dir) {
  fs::path file = dir / kCaDescriptionFile;
  GA_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  toml::table root;
  try {
    root = toml::parse(text, file.string());
  } catch (const toml::parse_error& e) {
    return InvalidArgument(file.string() + ":" + std::to_string(e.source().begin.line) + ": " +
                           std::string(e.description()));
  }
  CaDirectory out;
  std::string backend = root["backend"].value_or(std::string());
  if (backend == "file") {
    out.ca.backend = CaBackend::kFile;
  } else if (backend == "tpm") {
    out.ca.backend = CaBackend::kTpm;
  } else {
    return InvalidArgument(file.string() + ": backend must be \"file\" or \"tpm\", not \"" +
                           backend + "\"");
  }
  fs::path abs_dir = fs::absolute(dir);
  out.ca.cert = abs_dir / root["cert"].value_or(std::string(kCaCertFile));
  out.ca.key = abs_dir / root["key"].value_or(std::string(kCaKeyFile));
  int64_t days = root["validity_days"].value_or(int64_t{365});
  if (days < 1 || days > 36500) {
    return InvalidArgument(file.string() + ": validity_days must be 1-36500");
  }
  out.ca.validity = std::chrono::hours(24 * days);
  out.tcti = root["tcti"].value_or(std::string());
  std::string srk = root["srk_handle"].value_or(std::string());
  if (!srk.empty()) {
    GA_ASSIGN_OR_RETURN(out.srk_handle,
                        ParsePersistentHandle(srk).With(file.string() + ": srk_handle"));
  }
  return out;
}

Result<X509ReqPtr> MakeCaCsr(const CaConfig& config, std::shared_ptr<tpm::TpmContext> tpm,
                             std::string_view subject) {
  static constexpr std::string_view kWhat = "making a CSR for the CA key";
  X509NamePtr name;
  if (!subject.empty()) {
    auto parsed = tpm::ParseSubject(subject);
    if (!parsed.ok()) return std::move(parsed).take_status().With(kWhat);
    name = std::move(*parsed);
  } else {
    auto cert = ReadCertificateFile(config.cert);
    if (!cert.ok()) {
      return std::move(cert)
          .take_status()
          .With("no subject given, and the CA certificate")
          .With(kWhat);
    }
    name.reset(X509_NAME_dup(X509_get_subject_name(cert->get())));
    if (!name) return OpenSslError("X509_NAME_dup");
  }
  auto key = LoadCaKey(config, tpm);
  if (!key.ok()) return std::move(key).take_status().With(kWhat);
  return BuildCsr(key->get(), name.get()).With(kWhat);
}

Status ImportCaCertificate(const CaConfig& config, std::shared_ptr<tpm::TpmContext> tpm,
                           std::string_view cert_pem) {
  std::string what = "importing the CA certificate into " + config.cert.string();
  std::error_code ec;
  if (fs::exists(config.cert, ec)) {
    return Status(Code::kAlreadyExists, config.cert.string() + " exists; remove it first")
        .With(what);
  }
  auto certs = ParseCertificatesPem(cert_pem, "the certificate");
  if (!certs.ok()) return std::move(certs).take_status().With(what);
  X509* cert = certs->front().get();
  GA_RETURN_IF_ERROR(internal::CheckCaCertificate(cert, "the certificate").With(what));
  auto key = LoadCaKey(config, tpm);
  if (!key.ok()) return std::move(key).take_status().With(what);
  GA_RETURN_IF_ERROR(CheckKeyMatches(cert, key->get(), config).With(what));
  GA_ASSIGN_OR_RETURN(std::string pem, CertificateToPem(cert));
  return WriteFileAtomic(config.cert, pem, 0644).With(what);
}

}  // namespace ga::pki
