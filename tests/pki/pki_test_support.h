// Helpers shared by the pki/ tests: keys and CSRs made by the openssl command,
// certificate files, and CA certificates with chosen validity.
#pragma once

#include <openssl/x509.h>

#include <filesystem>
#include <string>
#include <vector>

#include "fixtures.h"
#include "gateway_agent/openssl.h"

namespace ga::pki::testing {

using ::ga::testing::ReadText;
using ::ga::testing::WriteText;

// Runs a command; fails the current test (ADD_FAILURE) with its output unless
// it exits 0. Returns its output (stdout + stderr).
std::string MustRun(const std::vector<std::string>& argv);

// A private key made by `openssl genpkey` at `dir`/`name`.key and a CSR for it
// at `dir`/`name`.csr with `subject` ("/CN=gw-1"). `algorithm`: "P-256",
// "P-384", "P-521", "secp256k1", "RSA-1024", "RSA-2048", "ED25519".
struct CsrFiles {
  std::filesystem::path key;
  std::filesystem::path csr;
};
CsrFiles MakeCsrFiles(const std::filesystem::path& dir, const std::string& name,
                      const std::string& algorithm, const std::string& subject);
X509ReqPtr LoadCsr(const std::filesystem::path& path);

// The same CSR with one bit of its signature flipped.
X509ReqPtr CorruptSignature(X509_REQ* csr);

X509Ptr LoadCert(const std::filesystem::path& path);
std::filesystem::path WriteCert(const std::filesystem::path& path, const X509* cert);

// A self-signed P-256 certificate valid from now+not_before_days to
// now+not_after_days, CA:TRUE when `ca`; key and certificate are written to
// `dir`/`name`.key (0600) and `dir`/`name`.pem.
void MakeSelfSigned(const std::filesystem::path& dir, const std::string& name, long not_before_days,
                    long not_after_days, bool ca);

// `openssl x509 -text` of a certificate file.
std::string CertText(const std::filesystem::path& path);
// SHA-256 of the DER encoding, computed with `openssl x509 -outform DER | sha256sum`.
std::string OpensslCertId(const std::filesystem::path& path);

}  // namespace ga::pki::testing
