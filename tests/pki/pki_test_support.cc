#include "pki_test_support.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <sstream>

#include "gateway_agent/files.h"

namespace ga::pki::testing {

std::string MustRun(const std::vector<std::string>& argv) {
  ga::testing::CommandResult r = ga::testing::RunCommand(argv);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    ADD_FAILURE() << "command failed (" << r.exit_code << "): " << cmd << "\n" << r.output;
  }
  return r.output;
}

CsrFiles MakeCsrFiles(const std::filesystem::path& dir, const std::string& name,
                      const std::string& algorithm, const std::string& subject) {
  CsrFiles files{dir / (name + ".key"), dir / (name + ".csr")};
  std::vector<std::string> gen = {"openssl", "genpkey", "-out", files.key.string()};
  if (algorithm.rfind("RSA-", 0) == 0) {
    gen.insert(gen.end(),
               {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + algorithm.substr(4)});
  } else if (algorithm == "ED25519") {
    gen.insert(gen.end(), {"-algorithm", "ED25519"});
  } else {
    gen.insert(gen.end(), {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + algorithm});
  }
  MustRun(gen);
  MustRun({"openssl", "req", "-new", "-key", files.key.string(), "-subj", subject, "-out",
           files.csr.string()});
  return files;
}

X509ReqPtr LoadCsr(const std::filesystem::path& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  return X509ReqPtr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
}

X509ReqPtr CorruptSignature(X509_REQ* csr) {
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(csr, &der);
  if (len <= 0) return nullptr;
  der[len - 3] ^= 0x01;  // inside the signature's last INTEGER
  const unsigned char* p = der;
  X509ReqPtr out(d2i_X509_REQ(nullptr, &p, len));
  OPENSSL_free(der);
  return out;
}

X509Ptr LoadCert(const std::filesystem::path& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

std::filesystem::path WriteCert(const std::filesystem::path& path, const X509* cert) {
  BioPtr bio(BIO_new_file(path.c_str(), "w"));
  EXPECT_EQ(PEM_write_bio_X509(bio.get(), cert), 1);
  return path;
}

void MakeSelfSigned(const std::filesystem::path& dir, const std::string& name, long not_before_days,
                    long not_after_days, bool ca) {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_TRUE(key);
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), subject);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after_days * 86400);
  X509_set_pubkey(cert.get(), key.get());
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* bc = X509V3_EXT_conf_nid(nullptr, &v3, NID_basic_constraints,
                                           ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_add_ext(cert.get(), bc, -1);
  X509_EXTENSION_free(bc);
  ASSERT_GT(X509_sign(cert.get(), key.get(), EVP_sha256()), 0);
  WriteCert(dir / (name + ".pem"), cert.get());
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  ASSERT_TRUE(
      WriteFileAtomic(dir / (name + ".key"), std::string_view(data, static_cast<size_t>(len)), 0600)
          .ok());
}

std::string CertText(const std::filesystem::path& path) {
  return MustRun({"openssl", "x509", "-in", path.string(), "-noout", "-text"});
}

std::string OpensslCertId(const std::filesystem::path& path) {
  std::string out =
      MustRun({"sh", "-c", "openssl x509 -in '" + path.string() + "' -outform DER | sha256sum"});
  return out.substr(0, out.find(' '));
}

}  // namespace ga::pki::testing
