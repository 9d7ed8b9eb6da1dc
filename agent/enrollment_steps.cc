#include "enrollment_steps.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>

#include <cstdlib>

#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace ga {

namespace {

struct CertFacts {
  std::string id;  // SHA-256 of DER, lowercase hex
  Millis not_after = 0;
  X509Ptr cert;
};

Result<CertFacts> ReadCertificate(const std::string& pem, std::string_view what) {
  GA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, pki::ParseCertificatesPem(pem, what));
  CertFacts f;
  f.cert = std::move(certs.front());
  f.id = pki::AwsCertificateId(f.cert.get());
  f.not_after = std::chrono::duration_cast<std::chrono::milliseconds>(
                    pki::ToTimePoint(X509_get0_notAfter(f.cert.get())).time_since_epoch())
                    .count();
  return f;
}

std::string CrashSpec() {
  const char* v = std::getenv("GATEWAY_AGENT_CRASH_AT");
  return v ? v : "";
}

}  // namespace

void CrashPoint(std::string_view point, std::string_view identity) {
  static const std::string spec = CrashSpec();
  if (spec.empty()) return;
  std::string_view s = spec;
  std::string_view want_point = s.substr(0, s.find(':'));
  std::string_view want_identity =
      s.find(':') == std::string_view::npos ? std::string_view() : s.substr(s.find(':') + 1);
  if (want_point != point) return;
  if (!want_identity.empty() && want_identity != identity) return;
  log::Warning("crash point reached: killing the process", {{"IDENTITY", identity}});
  raise(SIGKILL);
}

std::filesystem::path IdentityDir(const Config& config, const std::string& name) {
  return config.agent.state_dir / "identities" / name;
}

Status KeyUsableInTpm(const Identity& identity, const std::shared_ptr<tpm::TpmContext>& tpm) {
  auto blob = tpm::TpmKeyBlob::ReadFile(identity.key_file);
  if (!blob.ok()) return std::move(blob).take_status().With("identity " + identity.name);
  Status tried = tpm->TryKey(*blob);
  switch (tried.code()) {
    case Code::kOk:
    case Code::kUnavailable:
    case Code::kTimeout:
    case Code::kIo: return Status::Ok();  // usable, or the TPM is away: nothing known
    default: break;
  }
  return std::move(tried).With("identity " + identity.name + ": key " + identity.key_file +
                               " cannot be used in this TPM (from another TPM, or its SRK was "
                               "replaced)");
}

Status MakeKey(Identity& identity, const StepContext& ctx) {
  auto dir = IdentityDir(ctx.config, identity.name);
  GA_RETURN_IF_ERROR(EnsureDirectory(dir, 0700));
  auto key_path = dir / "key.tss2";
  // A key saved before a crash (state still NEW) is reused, never replaced.
  auto existing = tpm::TpmKeyBlob::ReadFile(key_path);
  if (!existing.ok()) {
    auto algorithm = ctx.config.tpm.key_type == KeyType::kRsa2048 ? tpm::KeyAlgorithm::kRsa2048
                                                                  : tpm::KeyAlgorithm::kEccP256;
    GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob key, ctx.tpm->CreateKey(algorithm));
    ctx.crash("key-created", identity.name);
    GA_RETURN_IF_ERROR(key.WriteFile(key_path, /*overwrite=*/true));
    ctx.crash("key-saved", identity.name);
    log::Info("created TPM key " + key_path.string(),
              {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "KEYED"}});
  }
  identity.key_file = key_path.string();
  identity.state = EnrollmentState::kKeyed;
  identity.last_error.clear();
  return Status::Ok();
}

Status MakeCertificate(Identity& identity, const StepContext& ctx) {
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(identity.key_file));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(ctx.tpm, blob));
  auto dir = IdentityDir(ctx.config, identity.name);
  auto cert_path = dir / "cert.pem";
  auto chain_path = dir / "chain.pem";

  // A certificate saved before a crash is reused when it is for this key and
  // leads its chain (a chain overwritten since is not).
  auto cert_pem = ReadFile(cert_path);
  auto chain_pem = ReadFile(chain_path);
  bool reuse = false;
  if (cert_pem.ok() && chain_pem.ok()) {
    auto facts = ReadCertificate(*cert_pem, cert_path.string());
    auto leaf = ReadCertificate(*chain_pem, chain_path.string());
    if (facts.ok() && leaf.ok() && leaf->id == facts->id &&
        EVP_PKEY_eq(X509_get0_pubkey(facts->cert.get()), key.get()) == 1) {
      reuse = true;
      identity.cert_id = facts->id;
      identity.cert_not_after = facts->not_after;
    }
    ClearOpenSslErrors();
  }
  if (!reuse) {
    // The gateway's certificate says so (OU=gateway): the JITR Lambda gives
    // it the policy that lets it publish for sensors over its connection.
    std::string ou = identity.kind == IdentityKind::kGateway ? "gateway" : "";
    std::string subject = (ou.empty() ? "" : "OU=" + ou + ",") + "CN=" + identity.thing;
    auto csr = tpm::MakeCsr(key.get(), subject);
    if (!csr.ok()) {
      if (Status refused = KeyUsableInTpm(identity, ctx.tpm); !refused.ok()) {
        std::error_code ignored;
        std::filesystem::remove(identity.key_file, ignored);
        identity.key_file.clear();
        identity.state = EnrollmentState::kNew;
        return std::move(refused).With("a new key is made");
      }
      return csr.status();
    }
    GA_ASSIGN_OR_RETURN(IssuedPem issued,
                        ctx.issue(csr->get(), identity.thing, ou).With("the local CA"));
    ctx.crash("cert-issued", identity.name);
    GA_ASSIGN_OR_RETURN(CertFacts facts, ReadCertificate(issued.certificate, "issued certificate"));
    GA_RETURN_IF_ERROR(WriteFileAtomic(chain_path, issued.chain, 0600));
    GA_RETURN_IF_ERROR(WriteFileAtomic(cert_path, issued.certificate, 0600));
    ctx.crash("cert-saved", identity.name);
    identity.cert_id = facts.id;
    identity.cert_not_after = facts.not_after;
    log::Info("certificate " + facts.id + " issued for thing " + identity.thing,
              {{"IDENTITY", identity.name}, {"THING", identity.thing}, {"STATE", "CERTIFIED"}});
  }
  identity.cert_file = cert_path.string();
  identity.chain_file = chain_path.string();
  identity.state = EnrollmentState::kCertified;
  identity.last_error.clear();
  return Status::Ok();
}

Result<ConnectAttempt> ConnectOnce(const Identity& identity, const StepContext& ctx) {
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(identity.key_file));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(ctx.tpm, blob));
  return ctx.connect(
      CloudConnectOptions(ctx.config.aws, identity.thing, key.get(), identity.chain_file));
}

}  // namespace ga
