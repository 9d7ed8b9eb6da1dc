// Certificate helpers: the AWS certificate id, PEM parsing that refuses
// garbage, AWS's client key rules, and the chain file.
#include "gateway_agent/pki/certificate.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "fixtures.h"
#include "pki_test_support.h"

namespace ga::pki {
namespace {

using ga::testing::TempDir;
using testing::LoadCert;
using testing::LoadCsr;
using testing::MakeCsrFiles;
using testing::MakeSelfSigned;
using testing::ReadText;

class CertificateTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(CertificateTest, AwsIdIsSha256OfDerAsOpensslComputesIt) {
  MakeSelfSigned(dir_.path(), "ca", -1, 10, true);
  X509Ptr cert = LoadCert(dir_ / "ca.pem");
  ASSERT_TRUE(cert);
  std::string id = AwsCertificateId(cert.get());
  EXPECT_EQ(id.size(), 64u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  EXPECT_EQ(id, testing::OpensslCertId(dir_ / "ca.pem"));
  EXPECT_EQ(AwsCertificateId(nullptr), "");
}

TEST_F(CertificateTest, ParsesCertificateListsAndRefusesGarbage) {
  MakeSelfSigned(dir_.path(), "a", -1, 10, true);
  MakeSelfSigned(dir_.path(), "b", -1, 10, true);
  std::string a = ReadText(dir_ / "a.pem"), b = ReadText(dir_ / "b.pem");

  auto both = ParseCertificatesPem(a + "\n" + b, "test");
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ(NameToString(X509_get_subject_name((*both)[1].get())), "CN = b");

  struct Case {
    std::string text, expect;
  } cases[] = {
      {"", "no PEM certificate"},
      {"hello world\n", "unexpected text"},
      {a + "trailing junk", "unexpected text"},
      {ReadText(dir_ / "a.key"), "where a CERTIFICATE was expected"},
      {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"},
      {"-----BEGIN CERTIFICATE-----\nAAAA\n", "no END line"},
  };
  for (const Case& c : cases) {
    auto r = ParseCertificatesPem(c.text, "output");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().ToString();
    EXPECT_EQ(r.status().message().rfind("output", 0), 0u) << r.status().ToString();
  }
}

TEST_F(CertificateTest, ParsesCsrs) {
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1/O=Acme");
  auto csr = ReadCsrFile(files.csr);
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  auto cn = CommonName(X509_REQ_get_subject_name(csr->get()));
  ASSERT_TRUE(cn.ok());
  EXPECT_EQ(*cn, "gw-1");
  auto pem = CsrToPem(csr->get());
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(*pem, ReadText(files.csr));

  EXPECT_FALSE(ParseCsrPem(*pem + *pem, "two").ok());
  EXPECT_FALSE(ParseCsrPem(ReadText(files.key), "key").ok());
  EXPECT_FALSE(ReadCsrFile(dir_ / "missing.csr").ok());
}

TEST_F(CertificateTest, ClientKeyRulesAreAws) {
  struct Case {
    const char* algorithm;
    bool ok;
  } cases[] = {{"P-256", true},      {"P-384", true},     {"P-521", true},   {"RSA-2048", true},
               {"secp256k1", false}, {"RSA-1024", false}, {"ED25519", false}};
  for (const Case& c : cases) {
    auto files = MakeCsrFiles(dir_.path(), c.algorithm, c.algorithm, "/CN=x");
    X509ReqPtr csr = LoadCsr(files.csr);
    ASSERT_TRUE(csr) << c.algorithm;
    Status s = CheckClientKey(X509_REQ_get0_pubkey(csr.get()));
    EXPECT_EQ(s.ok(), c.ok) << c.algorithm << ": " << s.ToString();
    if (!c.ok) {
      EXPECT_NE(s.message().find("AWS IoT accepts"), std::string::npos);
    }
  }
}

TEST_F(CertificateTest, ChainFileIsLeafThenCa) {
  MakeSelfSigned(dir_.path(), "leaf", -1, 10, false);
  MakeSelfSigned(dir_.path(), "ca", -1, 10, true);
  X509Ptr leaf = LoadCert(dir_ / "leaf.pem");
  std::vector<X509Ptr> chain;
  chain.push_back(LoadCert(dir_ / "ca.pem"));
  ASSERT_TRUE(WriteChainFile(dir_ / "chain.pem", leaf.get(), chain).ok());
  EXPECT_EQ(ReadText(dir_ / "chain.pem"), ReadText(dir_ / "leaf.pem") + ReadText(dir_ / "ca.pem"));
  struct stat st {};
  ASSERT_EQ(stat((dir_ / "chain.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

}  // namespace
}  // namespace ga::pki
