// `gateway-agent tpm info|create-key|csr`: what an operator uses to diagnose
// a gateway's TPM and to make keys and CSRs by hand.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "cli_commands.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "gateway_agent/tpm/tpm_key.h"
#include "gateway_agent/tpm_handle.h"

namespace ga {
namespace {

struct TpmCliOptions {
  std::string tcti = "device:/dev/tpmrm0";
  std::string srk_handle = HandleHex(kDefaultSrkHandle);
  // create-key
  std::string out;
  std::string algorithm = "ecc";
  // csr
  std::string key;
  std::string subject;
};

void AddTpmOptions(CLI::App* cmd, TpmCliOptions& o) {
  cmd->add_option("--tcti", o.tcti, "TPM connection (TCTI string)")->capture_default_str();
  cmd->add_option("--srk-handle", o.srk_handle, "Persistent handle of the SRK")
      ->capture_default_str();
}

Result<std::shared_ptr<tpm::TpmContext>> OpenTpm(const TpmCliOptions& o) {
  // The TSS logs expected conditions (an absent SRK) on stderr; every failure
  // reaches the operator as a Status with the decoded return code instead.
  setenv("TSS2_LOG", "all+none", 0);
  GA_ASSIGN_OR_RETURN(uint32_t handle, ParsePersistentHandle(o.srk_handle).With("--srk-handle"));
  return tpm::TpmContext::Open({.tcti = o.tcti, .srk_handle = handle});
}

int RunInfo(const TpmCliOptions& o) {
  auto tpm = OpenTpm(o);
  if (!tpm.ok()) return Fail(tpm.status());
  auto info = (*tpm)->Info();
  if (!info.ok()) return Fail(info.status());
  char srk[16];
  std::snprintf(srk, sizeof(srk), "0x%08x", info->srk_handle);
  std::printf("tcti:                %s\n", info->tcti.c_str());
  std::printf("manufacturer:        %s\n", info->manufacturer.c_str());
  std::printf("vendor:              %s\n", info->vendor_string.c_str());
  std::printf("firmware:            %s\n", info->firmware_version.c_str());
  std::printf("spec revision:       %s\n", info->spec_revision.c_str());
  if (info->srk_present) {
    std::printf("SRK %s:      present\n", srk);
  } else if (!info->srk_problem.empty()) {
    std::printf("SRK %s:      unusable: %s\n", srk, info->srk_problem.c_str());
  } else {
    std::printf("SRK %s:      absent (created with the first key)\n", srk);
  }
  std::printf("persistent objects:  %u (free slots: %u)\n", info->persistent_objects,
              info->free_persistent_slots);
  std::printf("transient objects:   %u loaded (free slots: %u)\n", info->loaded_transient_objects,
              info->free_transient_slots);
  std::printf("lockout:             %s\n", info->in_lockout ? "yes (dictionary attack)" : "no");
  return 0;
}

int RunCreateKey(const TpmCliOptions& o) {
  tpm::KeyAlgorithm algorithm;
  if (o.algorithm == "ecc") {
    algorithm = tpm::KeyAlgorithm::kEccP256;
  } else if (o.algorithm == "rsa") {
    algorithm = tpm::KeyAlgorithm::kRsa2048;
  } else {
    return Fail(InvalidArgument("--algorithm must be ecc or rsa, not \"" + o.algorithm + "\""));
  }
  if (std::filesystem::exists(o.out)) {
    return Fail({Code::kAlreadyExists, "key file " + o.out + " exists; not overwriting"});
  }
  auto tpm = OpenTpm(o);
  if (!tpm.ok()) return Fail(tpm.status());
  auto key = (*tpm)->CreateKey(algorithm);
  if (!key.ok()) return Fail(key.status());
  Status written = key->WriteFile(o.out);
  if (!written.ok()) return Fail(written);
  std::printf("wrote %s (%s key under SRK %s)\n", o.out.c_str(),
              algorithm == tpm::KeyAlgorithm::kEccP256 ? "ECC P-256" : "RSA-2048",
              o.srk_handle.c_str());
  return 0;
}

int RunCsr(const TpmCliOptions& o) {
  auto blob = tpm::TpmKeyBlob::ReadFile(o.key);
  if (!blob.ok()) return Fail(blob.status());
  auto tpm = OpenTpm(o);
  if (!tpm.ok()) return Fail(tpm.status());
  auto pkey = tpm::MakeEvpPkey(*tpm, *blob);
  if (!pkey.ok()) return Fail(std::move(pkey).take_status().With(o.key));
  auto csr = tpm::MakeCsr(pkey->get(), o.subject);
  if (!csr.ok()) return Fail(std::move(csr).take_status().With("key " + o.key));
  auto pem = CsrToPem(csr->get());
  if (!pem.ok()) return Fail(pem.status());
  if (o.out == "-") {
    std::fwrite(pem->data(), 1, pem->size(), stdout);
    return 0;
  }
  std::ofstream out(o.out, std::ios::binary | std::ios::trunc);
  out << *pem;
  out.close();
  if (!out) return Fail(ErrnoStatus("write " + o.out, errno));
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

}  // namespace

void RegisterTpmCommands(CLI::App& app, int& exit_code) {
  auto* tpm = app.add_subcommand("tpm", "Inspect the TPM, create TPM keys and CSRs");
  tpm->require_subcommand(1);
  auto options = std::make_shared<TpmCliOptions>();

  auto* info = tpm->add_subcommand("info", "Manufacturer, firmware, SRK and free slots");
  AddTpmOptions(info, *options);
  info->callback([options, &exit_code] { exit_code = RunInfo(*options); });

  auto* create = tpm->add_subcommand("create-key", "Create a key in the TPM (file mode 0600)");
  AddTpmOptions(create, *options);
  create->add_option("--out", options->out, "Key file to write (TSS2 PRIVATE KEY PEM)")->required();
  create->add_option("--algorithm", options->algorithm, "ecc (P-256) or rsa (2048)")
      ->capture_default_str();
  create->callback([options, &exit_code] { exit_code = RunCreateKey(*options); });

  auto* csr = tpm->add_subcommand("csr", "Make a CSR signed in the TPM");
  AddTpmOptions(csr, *options);
  csr->add_option("--key", options->key, "TPM key file")->required();
  csr->add_option("--subject", options->subject, "Subject, e.g. \"CN=thing-1,O=Acme\"")->required();
  csr->add_option("--out", options->out, "CSR file to write (PEM), - for stdout")->required();
  csr->callback([options, &exit_code] { exit_code = RunCsr(*options); });
}

}  // namespace ga
