// `gateway-agent ca ...`: create a local CA, prove it to AWS IoT
// (verification certificate), show how to register it, and issue device
// certificates by hand. The CA comes from [ca] of --config, or from a
// directory that `ca init` wrote (--ca-dir, plus --tcti for a TPM-held key).
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli_commands.h"
#include "gateway_agent/config.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga {
namespace {

namespace fs = std::filesystem;

// Where a `ca` command finds its CA.
struct CaSourceOptions {
  std::string ca_dir;
  std::string tcti;
};

struct ResolvedCa {
  CaConfig ca;
  tpm::TpmOptions tpm;
  std::string how;  // "--ca-dir DIR" / "--config FILE": repeated in printed hints
};

Result<ResolvedCa> ResolveCa(const GlobalOptions& global, const CaSourceOptions& source) {
  ResolvedCa out;
  if (!source.ca_dir.empty()) {
    GA_ASSIGN_OR_RETURN(pki::CaDirectory dir, pki::ReadCaDirectory(source.ca_dir));
    out.ca = dir.ca;
    out.tpm.tcti = dir.tcti.empty() ? out.tpm.tcti : dir.tcti;
    out.tpm.srk_handle = dir.srk_handle;
    out.how = "--ca-dir " + source.ca_dir;
  } else {
    fs::path path = global.ConfigFile();
    GA_ASSIGN_OR_RETURN(ParsedConfig parsed, LoadConfig(path));
    std::string problems;
    for (const ConfigProblem& p : parsed.problems) {
      // Only [ca] and [tpm] matter here: a CA is often set up before the rest.
      if (p.key.rfind("ca.", 0) == 0 || p.key.rfind("tpm.", 0) == 0 || p.key.empty()) {
        problems += "\n  " + p.ToString();
      }
    }
    if (!problems.empty()) return InvalidArgument(path.string() + " is not valid:" + problems);
    out.ca = parsed.config.ca;
    out.tpm.tcti = parsed.config.tpm.tcti;
    out.tpm.srk_handle = parsed.config.tpm.srk_handle;
    if (!global.config_path.empty()) out.how = "--config " + global.config_path;
  }
  if (!source.tcti.empty()) out.tpm.tcti = source.tcti;
  return out;
}

struct OpenedCa {
  ResolvedCa where;
  std::shared_ptr<tpm::TpmContext> tpm;
  std::unique_ptr<pki::LocalCa> ca;
};

// The TPM of a tpm-backed CA; null for the other backends.
Result<std::shared_ptr<tpm::TpmContext>> OpenCaTpm(const ResolvedCa& where) {
  if (where.ca.backend != CaBackend::kTpm) return std::shared_ptr<tpm::TpmContext>();
  return tpm::TpmContext::Open(where.tpm);
}

Result<OpenedCa> OpenCa(const GlobalOptions& global, const CaSourceOptions& source) {
  OpenedCa out;
  GA_ASSIGN_OR_RETURN(out.where, ResolveCa(global, source));
  GA_ASSIGN_OR_RETURN(out.tpm, OpenCaTpm(out.where));
  GA_ASSIGN_OR_RETURN(out.ca, pki::OpenLocalCa(out.where.ca, out.tpm));
  return out;
}

void AddSourceOptions(CLI::App* cmd, CaSourceOptions& source) {
  cmd->add_option("--ca-dir", source.ca_dir,
                  "CA directory written by `ca init` (default: [ca] of --config)");
  cmd->add_option("--tcti", source.tcti, "TPM of a tpm CA (default: from ca.toml or [tpm] tcti)");
}

std::string Quote(const std::string& s) {
  if (s.find_first_of(" \t'\"$\\`") == std::string::npos) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string ChainPathFor(const fs::path& out) {
  fs::path p = out;
  p.replace_extension();
  return p.string() + ".chain.pem";
}

// ---- ca init ----

struct InitOptions {
  std::string backend = "file";
  std::string subject;
  int days = 3650;
  std::string out_dir;
  std::string tcti;
  bool csr_only = false;
};

int RunInit(const GlobalOptions& global, const InitOptions& o) {
  pki::CaInitOptions init;
  init.backend = o.backend == "tpm" ? CaBackend::kTpm : CaBackend::kFile;
  init.subject = o.subject;
  init.days = o.days;
  init.out_dir = o.out_dir;
  init.csr_only = o.csr_only;
  if (init.backend == CaBackend::kTpm) {
    tpm::TpmOptions options;
    // The TPM: --tcti, else [tpm] of the configuration (--config, or the
    // default file when there is one), else the default device.
    if (!o.tcti.empty()) {
      options.tcti = o.tcti;
    } else if (!global.config_path.empty() || fs::exists(global.ConfigFile())) {
      auto loaded = LoadConfig(global.ConfigFile());
      if (!loaded.ok()) return Fail(loaded.status());
      options.tcti = loaded->config.tpm.tcti;
      options.srk_handle = loaded->config.tpm.srk_handle;
    }
    auto tpm = tpm::TpmContext::Open(options);
    if (!tpm.ok()) return Fail(tpm.status());
    init.tpm = *tpm;
    init.tcti = options.tcti;
  }
  auto result = pki::InitLocalCa(init);
  if (!result.ok()) return Fail(result.status());
  std::printf("Created a %s CA in %s\n", o.backend.c_str(), o.out_dir.c_str());
  std::printf("  key:          %s%s\n", result->key.c_str(),
              init.backend == CaBackend::kTpm ? " (TSS2 key blob: the key never leaves the TPM)"
                                              : " (mode 0600)");
  if (o.csr_only) {
    std::printf("  CSR:          %s\n", result->csr.c_str());
    std::printf(
        "\nHave your organisation's root CA sign %s as a CA certificate (basicConstraints "
        "CA:TRUE, keyUsage keyCertSign), then:\n  gateway-agent ca import --ca-dir %s --cert "
        "<signed.pem>\n",
        result->csr.c_str(), Quote(o.out_dir).c_str());
  } else {
    std::printf("  certificate:  %s\n", result->cert.c_str());
    std::printf("  AWS CA id:    %s\n", result->aws_id.c_str());
    std::printf("\nNext: gateway-agent ca show --ca-dir %s\n", Quote(o.out_dir).c_str());
  }
  return 0;
}

// ---- ca show ----

int RunShow(const GlobalOptions& global, const CaSourceOptions& source,
            const std::string& verification) {
  auto opened = OpenCa(global, source);
  if (!opened.ok()) return Fail(opened.status());
  const X509* cert = opened->ca->certificate();
  const ResolvedCa& where = opened->where;
  std::printf("Backend:      %s\n", std::string(opened->ca->backend()).c_str());
  if (where.ca.backend == CaBackend::kTpm) {
    std::printf("Key:          in the TPM at %s (blob %s)\n", where.tpm.tcti.c_str(),
                where.ca.key.c_str());
  } else if (where.ca.backend == CaBackend::kFile) {
    std::printf("Key:          %s\n", where.ca.key.c_str());
  } else {
    std::string argv;
    for (const std::string& a : where.ca.command) argv += (argv.empty() ? "" : " ") + Quote(a);
    std::printf("Command:      %s\n", argv.c_str());
  }
  if (cert == nullptr) {
    std::printf("Certificate:  none (%s does not exist)\n", where.ca.cert.c_str());
    return 1;
  }
  fs::path cert_path = fs::absolute(where.ca.cert);
  std::string id = pki::AwsCertificateId(cert);
  std::printf("Certificate:  %s\n", cert_path.c_str());
  std::printf("Subject:      %s\n", pki::NameToString(X509_get_subject_name(cert)).c_str());
  std::printf("Issuer:       %s\n", pki::NameToString(X509_get_issuer_name(cert)).c_str());
  std::printf("Not before:   %s\n", pki::FormatTime(X509_get0_notBefore(cert)).c_str());
  std::printf("Not after:    %s\n", pki::FormatTime(X509_get0_notAfter(cert)).c_str());
  std::printf("AWS CA id:    %s\n", id.c_str());
  std::printf("Device certificates: %s\n", FormatDuration(opened->ca->validity()).c_str());
  std::string how = where.how.empty() ? "" : " " + where.how;
  std::printf(
      "\nTo register this CA with AWS IoT for Just-in-Time Registration:\n"
      "  aws iot get-registration-code\n"
      "  gateway-agent ca verification-cert%s --registration-code <registrationCode> --out %s\n"
      "  aws iot register-ca-certificate --ca-certificate file://%s "
      "--verification-certificate file://%s --set-as-active --allow-auto-registration\n"
      "Devices then auto-register on first connect; AWS announces each on\n"
      "  $aws/events/certificates/registered/%s\n",
      how.c_str(), Quote(verification).c_str(), Quote(cert_path.string()).c_str(),
      Quote(verification).c_str(), id.c_str());
  return 0;
}

// ---- ca verification-cert ----

int RunVerificationCert(const GlobalOptions& global, const CaSourceOptions& source,
                        const std::string& code, const std::string& out,
                        const std::string& key_out) {
  auto opened = OpenCa(global, source);
  if (!opened.ok()) return Fail(opened.status());
  // A throwaway key: AWS only checks that the CA signed this CN.
  auto key = pki::GenerateP256Key();
  if (!key.ok()) return Fail(Status(key.status()).With("the verification key"));
  std::string subject = "CN=" + code;
  if (code.find_first_of(",/\\=") != std::string::npos) {
    return Fail(InvalidArgument("the registration code must be letters and digits"));
  }
  auto csr = tpm::MakeCsr(key->get(), subject);
  if (!csr.ok()) return Fail(csr.status());
  auto issued = opened->ca->IssueVerificationCertificate(csr->get(), code);
  if (!issued.ok()) return Fail(issued.status());
  auto pem = issued->CertPem();
  if (!pem.ok()) return Fail(pem.status());
  std::string key_pem;
  if (!key_out.empty()) {
    auto pem = pki::PrivateKeyPem(key->get());
    if (!pem.ok()) return Fail(Status(pem.status()).With("the verification key"));
    key_pem = std::move(*pem);
  }
  if (Status s = WriteFileAtomic(out, *pem, 0644); !s.ok()) return Fail(s);
  if (!key_out.empty()) {
    if (Status s = WriteFileAtomic(key_out, key_pem, 0600); !s.ok()) return Fail(s);
  }
  std::printf("Wrote the verification certificate (CN = %s) to %s\n", code.c_str(), out.c_str());
  return 0;
}

// ---- ca issue ----

int RunIssue(const GlobalOptions& global, const CaSourceOptions& source,
             const std::string& csr_path, const std::string& out, std::string chain_out,
             std::string thing_name) {
  auto csr = pki::ReadCsrFile(csr_path);
  if (!csr.ok()) return Fail(csr.status());
  if (thing_name.empty()) {
    auto cn = pki::CommonName(X509_REQ_get_subject_name(csr->get()));
    if (!cn.ok()) return Fail(Status(cn.status()).With(csr_path));
    if (cn->empty()) {
      return Fail(InvalidArgument(csr_path + " has no CN: give the thing name with --thing-name"));
    }
    thing_name = *cn;
  }
  auto opened = OpenCa(global, source);
  if (!opened.ok()) return Fail(opened.status());
  auto issued = opened->ca->Issue(csr->get(), thing_name);
  if (!issued.ok()) return Fail(issued.status());
  auto pem = issued->CertPem();
  if (!pem.ok()) return Fail(pem.status());
  auto chain = issued->ChainPem();
  if (!chain.ok()) return Fail(chain.status());
  if (chain_out.empty()) chain_out = ChainPathFor(out);
  if (Status s = WriteFileAtomic(out, *pem, 0644); !s.ok()) return Fail(s);
  if (Status s = WriteFileAtomic(chain_out, *chain, 0644); !s.ok()) {
    std::error_code ec;
    fs::remove(out, ec);
    return Fail(s);
  }
  std::printf("Issued a certificate for thing %s\n", thing_name.c_str());
  std::printf("  certificate:        %s\n", out.c_str());
  std::printf("  chain (cert + CA):  %s\n", chain_out.c_str());
  std::printf("  AWS certificate id: %s\n", issued->AwsId().c_str());
  return 0;
}

// ---- ca csr / ca import (an organisation's root signs the CA) ----

int RunCsr(const GlobalOptions& global, const CaSourceOptions& source, const std::string& out,
           const std::string& subject) {
  auto where = ResolveCa(global, source);
  if (!where.ok()) return Fail(where.status());
  auto tpm = OpenCaTpm(*where);
  if (!tpm.ok()) return Fail(tpm.status());
  auto csr = pki::MakeCaCsr(where->ca, *tpm, subject);
  if (!csr.ok()) return Fail(csr.status());
  auto pem = CsrToPem(csr->get());
  if (!pem.ok()) return Fail(pem.status());
  if (Status s = WriteFileAtomic(out, *pem, 0644); !s.ok()) return Fail(s);
  std::printf("Wrote a CSR for the CA key to %s\n", out.c_str());
  return 0;
}

int RunImport(const GlobalOptions& global, const CaSourceOptions& source,
              const std::string& cert_file) {
  auto where = ResolveCa(global, source);
  if (!where.ok()) return Fail(where.status());
  auto tpm = OpenCaTpm(*where);
  if (!tpm.ok()) return Fail(tpm.status());
  auto text = ReadFile(cert_file);
  if (!text.ok()) return Fail(text.status());
  if (Status s = pki::ImportCaCertificate(where->ca, *tpm, *text); !s.ok()) return Fail(s);
  std::printf("Installed the CA certificate as %s\n", where->ca.cert.c_str());
  return 0;
}

}  // namespace

void RegisterCaCommands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  CLI::App* ca = app.add_subcommand(
      "ca", "Local certificate authority: create it, register it with AWS IoT, issue certificates");
  ca->require_subcommand(1);

  {
    auto o = std::make_shared<InitOptions>();
    CLI::App* cmd =
        ca->add_subcommand("init", "Create a CA: key (file or TPM), certificate, ca.toml");
    cmd->add_option("--backend", o->backend, "file or tpm")
        ->check(CLI::IsMember({"file", "tpm"}))
        ->capture_default_str();
    cmd->add_option("--subject", o->subject, "e.g. \"CN=Acme Gateway CA,O=Acme\"")->required();
    cmd->add_option("--days", o->days, "Validity of the CA certificate")
        ->check(CLI::Range(1, 36500))
        ->capture_default_str();
    cmd->add_option("--out-dir", o->out_dir, "Directory for ca.pem, ca.key, ca.toml")->required();
    cmd->add_option("--tcti", o->tcti, "TPM for --backend tpm (default: [tpm] tcti)");
    cmd->add_flag(
        "--csr-only", o->csr_only,
        "Write ca.csr for an organisation's root to sign instead of a self-signed ca.pem");
    cmd->callback([&global, &exit_code, o] { exit_code = RunInit(global, *o); });
  }
  {
    auto source = std::make_shared<CaSourceOptions>();
    auto verification = std::make_shared<std::string>("verification.pem");
    CLI::App* cmd =
        ca->add_subcommand("show", "Show the CA and how to register it with AWS IoT (JITR)");
    AddSourceOptions(cmd, *source);
    cmd->add_option("--verification-cert", *verification,
                    "Verification certificate path used in the printed commands")
        ->capture_default_str();
    cmd->callback([&global, &exit_code, source, verification] {
      exit_code = RunShow(global, *source, *verification);
    });
  }
  {
    auto source = std::make_shared<CaSourceOptions>();
    auto code = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto key_out = std::make_shared<std::string>();
    CLI::App* cmd = ca->add_subcommand(
        "verification-cert",
        "Make the certificate (CN = AWS registration code) that proves the CA to AWS IoT");
    AddSourceOptions(cmd, *source);
    cmd->add_option("--registration-code", *code, "From `aws iot get-registration-code`")
        ->required();
    cmd->add_option("--out", *out, "Where to write the verification certificate")->required();
    cmd->add_option("--key-out", *key_out, "Also keep its (throwaway) private key here");
    cmd->callback([&global, &exit_code, source, code, out, key_out] {
      exit_code = RunVerificationCert(global, *source, *code, *out, *key_out);
    });
  }
  {
    auto source = std::make_shared<CaSourceOptions>();
    auto csr = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto chain_out = std::make_shared<std::string>();
    auto thing = std::make_shared<std::string>();
    CLI::App* cmd = ca->add_subcommand("issue", "Issue a device certificate for a CSR");
    AddSourceOptions(cmd, *source);
    cmd->add_option("--csr", *csr, "PEM certificate request")->required();
    cmd->add_option("--out", *out, "Where to write the certificate")->required();
    cmd->add_option("--chain-out", *chain_out,
                    "Where to write certificate + CA certificate (default: <out>.chain.pem)");
    cmd->add_option("--thing-name", *thing, "AWS thing name (default: the CSR's CN)");
    cmd->callback([&global, &exit_code, source, csr, out, chain_out, thing] {
      exit_code = RunIssue(global, *source, *csr, *out, *chain_out, *thing);
    });
  }
  {
    auto source = std::make_shared<CaSourceOptions>();
    auto out = std::make_shared<std::string>();
    auto subject = std::make_shared<std::string>();
    CLI::App* cmd = ca->add_subcommand(
        "csr", "Write a CSR for the CA's key, for an organisation's root CA to sign");
    AddSourceOptions(cmd, *source);
    cmd->add_option("--out", *out, "Where to write the CSR")->required();
    cmd->add_option("--subject", *subject, "Default: the subject of the CA certificate");
    cmd->callback([&global, &exit_code, source, out, subject] {
      exit_code = RunCsr(global, *source, *out, *subject);
    });
  }
  {
    auto source = std::make_shared<CaSourceOptions>();
    auto cert = std::make_shared<std::string>();
    CLI::App* cmd = ca->add_subcommand(
        "import", "Install the CA certificate an organisation's root signed for the CA's key");
    AddSourceOptions(cmd, *source);
    cmd->add_option("--cert", *cert, "PEM CA certificate (chain after it is ignored)")->required();
    cmd->callback(
        [&global, &exit_code, source, cert] { exit_code = RunImport(global, *source, *cert); });
  }
}

}  // namespace ga
