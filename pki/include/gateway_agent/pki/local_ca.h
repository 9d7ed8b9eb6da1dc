// The local certificate authority that signs the gateway's and its sensors'
// certificates, behind one interface with interchangeable backends:
//
//   file     CA certificate + PEM private key on disk (mode 0600 enforced)
//   tpm      CA key created in, and never leaving, the gateway's TPM; the key
//            file at [ca] key is a TSS2 PRIVATE KEY blob usable only there
//   command  an external program: CSR (PEM) on stdin, certificate (PEM,
//            optionally followed by its chain) on stdout (step-ca, EJBCA...)
//
// An EST (RFC 7030) client fits the same interface: it implements Sign()
// with /simpleenroll and reports the CA from /cacerts.
//
// For AWS Just-in-Time Registration the CA that directly signs a device
// certificate is the one registered with `aws iot register-ca-certificate`,
// and a device sends its certificate followed by that CA's (the chain).
#pragma once

#include <openssl/x509.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_agent/config.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "gateway_agent/tpm_handle.h"

namespace ga::pki {

struct IssuedCertificate {
  X509Ptr cert;
  // The certificates a device sends after `cert`: its issuer first.
  std::vector<X509Ptr> chain;

  Result<std::string> CertPem() const;
  // `cert` then `chain`: the content of deviceCertAndCACert.crt.
  Result<std::string> ChainPem() const;
  std::string AwsId() const;  // AwsCertificateId(cert)
};

// Writes issued.cert then issued.chain to `path` (see WriteChainFile).
Status WriteChainFile(const std::filesystem::path& path, const IssuedCertificate& issued);

// What a certificate is for; fixes its extensions.
enum class CertificateProfile {
  // CA:FALSE; keyUsage digitalSignature; extendedKeyUsage clientAuth; SKI/AKI.
  kDevice,
  // The certificate that proves possession of the CA to AWS (CN = the
  // account's registration code): CA:FALSE; keyUsage digitalSignature; SKI/AKI.
  kVerification,
  // A TLS server (a local broker's listener): CA:FALSE; keyUsage
  // digitalSignature; extendedKeyUsage serverAuth; subjectAltName; SKI/AKI.
  kServer,
};

struct CertificateRequest {
  X509_REQ* csr = nullptr;          // checked: signature, key type, CN
  std::string common_name;          // the certificate's subject: CN=common_name, after
  std::string organizational_unit;  // OU=organizational_unit when not empty
  CertificateProfile profile = CertificateProfile::kDevice;
  std::chrono::seconds validity = std::chrono::hours(24 * 365);
  // kServer: the subjectAltName entries, "DNS:<name>" or "IP:<address>".
  std::vector<std::string> alt_names;
};

// Thread-safe: Issue may be called from several threads at once.
class LocalCa {
 public:
  virtual ~LocalCa() = default;

  // "file", "tpm", "command".
  virtual std::string_view backend() const = 0;

  // The CA certificate that signs what this CA issues: the one to register
  // with AWS. nullptr only for a `command` CA whose [ca] cert file does not
  // exist (its chain then comes from the command's output).
  virtual const X509* certificate() const = 0;

  // A device certificate for `thing_name` from a CSR (made by tpm::MakeCsr on
  // the identity's key in practice). Refuses, with InvalidArgument and
  // before anything is signed: a CSR whose signature does not verify, a key
  // AWS would not accept (see CheckClientKey), a thing name AWS would reject
  // or longer than a CN may be (64), and a CSR whose CN differs from
  // `thing_name` (a CSR without CN is fine). FailedPrecondition when the CA
  // certificate is expired or not yet valid.
  //
  // The certificate: X.509 v3, random 128-bit serial, notBefore 5 minutes in
  // the past (clock skew), notAfter = now + validity (from [ca]) capped at
  // the CA's own notAfter, subject CN = thing_name, preceded by
  // OU = organizational_unit when one is given ("gateway" marks the gateway's
  // own certificate: the JITR Lambda gives it the gateway policy).
  Result<IssuedCertificate> Issue(X509_REQ* csr, const std::string& thing_name,
                                  const std::string& organizational_unit = "");

  // The verification certificate of `aws iot register-ca-certificate`:
  // CN = `registration_code` (1-64 letters and digits).
  Result<IssuedCertificate> IssueVerificationCertificate(X509_REQ* csr,
                                                         std::string_view registration_code);

  // A TLS server certificate (CN = `common_name`, subjectAltName =
  // `alt_names`, "DNS:<name>" or "IP:<address>", at least one) for a CSR
  // whose signature verifies; valid for validity().
  Result<IssuedCertificate> IssueServerCertificate(X509_REQ* csr, const std::string& common_name,
                                                   const std::vector<std::string>& alt_names);

  std::chrono::seconds validity() const { return validity_; }

 protected:
  explicit LocalCa(std::chrono::seconds validity) : validity_(validity) {}
  // Signs a request whose CSR and common name have been checked.
  virtual Result<IssuedCertificate> Sign(const CertificateRequest& request) = 0;

 private:
  std::chrono::seconds validity_;
};

// What OpenLocalCa checks that needs no TPM: for a file CA everything
// (the key is loaded and matched, then dropped); for a tpm CA the
// certificate and that the key file is a TPM key blob; for a command CA the
// command and, when given, the certificate. `gateway-agent check-config` and
// `run` refuse the same files with it.
Status CheckLocalCa(const CaConfig& config);

// Opens the CA that `config` describes. `tpm` is required for the tpm
// backend (opened by the caller from [tpm]) and ignored otherwise.
// Checks, with errors naming the files: the certificate is a CA certificate
// (basicConstraints CA:TRUE) valid now; the key matches it; a file key is
// not accessible by group or others (PermissionDenied).
Result<std::unique_ptr<LocalCa>> OpenLocalCa(const CaConfig& config,
                                             std::shared_ptr<tpm::TpmContext> tpm = nullptr);

// ---- Creating a CA (`gateway-agent ca init`) --------------------------------

// A software EC P-256 key made in tpm::LibCtx(), and the unencrypted PEM of a
// private key (for a file written 0600).
Result<EvpPkeyPtr> GenerateP256Key();
Result<std::string> PrivateKeyPem(EVP_PKEY* key);

// The files of a CA directory as `ca init` writes them.
inline constexpr std::string_view kCaCertFile = "ca.pem";
inline constexpr std::string_view kCaKeyFile = "ca.key";
inline constexpr std::string_view kCaCsrFile = "ca.csr";
inline constexpr std::string_view kCaDescriptionFile = "ca.toml";

struct CaInitOptions {
  CaBackend backend = CaBackend::kFile;  // kFile or kTpm
  std::string subject;                   // "CN=Acme Gateway CA,O=Acme"
  int days = 3650;                       // the CA certificate's validity
  std::filesystem::path out_dir;
  std::shared_ptr<tpm::TpmContext> tpm;  // kTpm: where the key is created
  std::string tcti;                      // kTpm: recorded in ca.toml
  // Instead of a self-signed ca.pem, write ca.csr for an organisation's root
  // to sign; ImportCaCertificate then installs the signed certificate.
  bool csr_only = false;
};

struct CaInitResult {
  std::filesystem::path cert;  // empty when csr_only
  std::filesystem::path key;
  std::filesystem::path csr;  // only when csr_only
  std::filesystem::path description;
  std::string aws_id;  // of the certificate; empty when csr_only
};

// Creates a P-256 CA key (file: in software, written 0600; tpm: in the TPM,
// the TSS2 blob written 0600) and a self-signed CA certificate (CA:TRUE
// critical, keyUsage keyCertSign+cRLSign critical, SKI/AKI), plus ca.toml,
// which ReadCaDirectory reads. Refuses (AlreadyExists) when any of the files
// exists; on failure removes what it wrote.
Result<CaInitResult> InitLocalCa(const CaInitOptions& options);

// The [ca] section and tcti that a CA directory's ca.toml describes; paths
// are made absolute against `dir`. `tcti` may be empty (a file CA).
struct CaDirectory {
  CaConfig ca;
  std::string tcti;
  uint32_t srk_handle = kDefaultSrkHandle;
};
Result<CaDirectory> ReadCaDirectory(const std::filesystem::path& dir);

// Loads the CA key that `config` names (file or tpm backend) and returns a
// CSR for the CA itself, with `subject` (empty: the CA certificate's subject),
// for an organisation's root CA to sign.
Result<X509ReqPtr> MakeCaCsr(const CaConfig& config, std::shared_ptr<tpm::TpmContext> tpm,
                             std::string_view subject);

// Installs `cert_pem` (the CA certificate signed by an organisation's root,
// optionally followed by its chain, which is ignored) as config.cert after
// checking that it is a CA certificate, valid now, for config.key.
Status ImportCaCertificate(const CaConfig& config, std::shared_ptr<tpm::TpmContext> tpm,
                           std::string_view cert_pem);

}  // namespace ga::pki
