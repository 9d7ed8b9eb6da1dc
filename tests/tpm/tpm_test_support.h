// Helpers shared by the tpm/ tests: a swtpm with an open TpmContext, software
// verification of TPM signatures, and a small test PKI made with the openssl
// command (root CA -> intermediate CA -> device, and a server certificate).
#pragma once

#include <openssl/evp.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fixtures.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::tpm::testing {

using ::ga::testing::ReadText;
using ::ga::testing::WriteText;

// The public half of a TPM key as a software EVP_PKEY (default library context).
EvpPkeyPtr SoftwarePublicKey(const TpmKeyBlob& key);

// Verifies a DER signature over SHA-256(message) with the software public key.
bool VerifySha256(const TpmKeyBlob& key, const std::string& message, const std::string& sig);

// Runs a command; fails the current test (ADD_FAILURE) with its output when the
// exit code is not 0. Returns its output.
std::string MustRun(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env = {});

// Environment for tpm2-tools and the tpm2-openssl provider talking to `tcti`.
std::map<std::string, std::string> TpmToolsEnv(const std::string& tcti);

// A test PKI in `dir`: root.pem/root.key, intermediate.pem/.key (signed by
// root), server.pem/.key for "localhost" + IP 127.0.0.1 (signed by root).
struct TestPki {
  std::filesystem::path dir;
  std::filesystem::path root_cert, root_key;
  std::filesystem::path intermediate_cert, intermediate_key;
  std::filesystem::path server_cert, server_key;

  static TestPki Create(const std::filesystem::path& dir);
  // Signs `csr_pem` with the intermediate CA as a TLS client certificate;
  // returns the leaf PEM.
  std::string IssueClientCert(const std::string& csr_pem, const std::string& name) const;
};

}  // namespace ga::tpm::testing
