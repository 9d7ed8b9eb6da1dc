#include "enrollment_steps.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/stat.h>

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

Status EnsureKey(const Identity& identity, const std::filesystem::path& key_path,
                 const StepContext& ctx) {
  GA_RETURN_IF_ERROR(EnsureDirectory(key_path.parent_path(), 0700));
  // A key saved before a crash is reused, never replaced.
  if (tpm::TpmKeyBlob::ReadFile(key_path).ok()) return Status::Ok();
  auto algorithm = ctx.config.tpm.key_type == KeyType::kRsa2048 ? tpm::KeyAlgorithm::kRsa2048
                                                                : tpm::KeyAlgorithm::kEccP256;
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob key, ctx.tpm->CreateKey(algorithm));
  ctx.crash("key-created", identity.name);
  GA_RETURN_IF_ERROR(key.WriteFile(key_path, /*overwrite=*/true));
  ctx.crash("key-saved", identity.name);
  log::Info("created TPM key " + key_path.string(),
            {{"IDENTITY", identity.name}, {"THING", identity.thing}});
  return Status::Ok();
}

Status MakeKey(Identity& identity, const StepContext& ctx) {
  auto key_path = IdentityDir(ctx.config, identity.name) / "key.tss2";
  GA_RETURN_IF_ERROR(EnsureKey(identity, key_path, ctx));
  identity.key_file = key_path.string();
  identity.state = EnrollmentState::kKeyed;
  identity.last_error.clear();
  return Status::Ok();
}

Result<CertificateFiles> EnsureCertificate(const Identity& identity, const std::string& key_file,
                                           const std::filesystem::path& cert_path,
                                           const std::filesystem::path& chain_path,
                                           const StepContext& ctx, bool* key_refused) {
  *key_refused = false;
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob, tpm::TpmKeyBlob::ReadFile(key_file));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(ctx.tpm, blob));
  CertificateFiles out;
  out.cert_file = cert_path.string();
  out.chain_file = chain_path.string();

  // A certificate saved before a crash is reused when it is for this key and
  // leads its chain (a chain overwritten since is not).
  auto cert_pem = ReadFile(cert_path);
  auto chain_pem = ReadFile(chain_path);
  if (cert_pem.ok() && chain_pem.ok()) {
    auto facts = ReadCertificate(*cert_pem, cert_path.string());
    auto leaf = ReadCertificate(*chain_pem, chain_path.string());
    bool reuse = facts.ok() && leaf.ok() && leaf->id == facts->id &&
                 EVP_PKEY_eq(X509_get0_pubkey(facts->cert.get()), key.get()) == 1;
    ClearOpenSslErrors();
    if (reuse) {
      out.cert_id = facts->id;
      out.not_after = facts->not_after;
      // Issued when it was written.
      struct stat st {};
      out.issued_at = stat(cert_path.c_str(), &st) == 0
                          ? Millis{st.st_mtim.tv_sec} * 1000 + st.st_mtim.tv_nsec / 1000000
                          : NowMillis();
      return out;
    }
  }
  // The gateway's certificate says so (OU=gateway): the JITR Lambda gives
  // it the policy that lets it publish for sensors over its connection.
  std::string ou = identity.kind == IdentityKind::kGateway ? "gateway" : "";
  std::string subject = (ou.empty() ? "" : "OU=" + ou + ",") + "CN=" + identity.thing;
  auto csr = tpm::MakeCsr(key.get(), subject);
  if (!csr.ok()) {
    Identity with_key = identity;
    with_key.key_file = key_file;
    if (Status refused = KeyUsableInTpm(with_key, ctx.tpm); !refused.ok()) {
      *key_refused = true;
      return refused;
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
  out.cert_id = facts.id;
  out.not_after = facts.not_after;
  out.issued_at = NowMillis();
  log::Info("certificate " + facts.id + " issued for thing " + identity.thing,
            {{"IDENTITY", identity.name}, {"THING", identity.thing}});
  return out;
}

Status MakeCertificate(Identity& identity, const StepContext& ctx) {
  auto dir = IdentityDir(ctx.config, identity.name);
  bool key_refused = false;
  auto files = EnsureCertificate(identity, identity.key_file, dir / "cert.pem", dir / "chain.pem",
                                 ctx, &key_refused);
  if (!files.ok()) {
    if (!key_refused) return files.status();
    std::error_code ignored;
    std::filesystem::remove(identity.key_file, ignored);
    identity.key_file.clear();
    identity.state = EnrollmentState::kNew;
    return std::move(files).take_status().With("a new key is made");
  }
  identity.cert_id = files->cert_id;
  identity.cert_not_after = files->not_after;
  identity.cert_issued_at = files->issued_at;
  identity.cert_file = files->cert_file;
  identity.chain_file = files->chain_file;
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
