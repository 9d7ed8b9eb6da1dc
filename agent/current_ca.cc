#include "gateway_agent/agent/current_ca.h"

#include "gateway_agent/files.h"
#include "gateway_agent/pki/certificate.h"

namespace ga {

CurrentCa::CurrentCa(std::unique_ptr<pki::LocalCa> ca) {
  Replace(std::move(ca));
}

void CurrentCa::Replace(std::unique_ptr<pki::LocalCa> ca) {
  const X509* cert = ca->certificate();
  std::string id = pki::AwsCertificateId(cert);
  Millis not_after = std::chrono::duration_cast<std::chrono::milliseconds>(
                         pki::ToTimePoint(X509_get0_notAfter(cert)).time_since_epoch())
                         .count();
  std::string subject = pki::NameToString(X509_get_subject_name(cert));
  MutexLock lock(mu_);
  ca_ = std::move(ca);
  id_ = std::move(id);
  not_after_ = not_after;
  subject_ = std::move(subject);
}

Result<IssuedPem> CurrentCa::Issue(X509_REQ* csr, const std::string& thing_name,
                                   const std::string& organizational_unit) {
  MutexLock lock(mu_);
  GA_ASSIGN_OR_RETURN(pki::IssuedCertificate issued,
                      ca_->Issue(csr, thing_name, organizational_unit));
  IssuedPem out;
  GA_ASSIGN_OR_RETURN(out.certificate, issued.CertPem());
  GA_ASSIGN_OR_RETURN(out.chain, issued.ChainPem());
  return out;
}

std::string CurrentCa::id() const {
  MutexLock lock(mu_);
  return id_;
}

Millis CurrentCa::not_after() const {
  MutexLock lock(mu_);
  return not_after_;
}

std::string CurrentCa::subject() const {
  MutexLock lock(mu_);
  return subject_;
}

std::string IssuerIdOf(const std::filesystem::path& chain_file) {
  auto pem = ReadFile(chain_file);
  if (!pem.ok()) return "";
  auto certs = pki::ParseCertificatesPem(*pem, chain_file.string());
  if (!certs.ok() || certs->size() < 2) return "";
  return pki::AwsCertificateId((*certs)[1].get());
}

}  // namespace ga
