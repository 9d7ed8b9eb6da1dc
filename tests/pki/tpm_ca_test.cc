// The tpm CA: its key is created in a real swtpm and never leaves it; the
// certificates it issues verify with openssl, also after the TPM restarts.
#include <gtest/gtest.h>

#include <filesystem>

#include "fixtures.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "pki_test_support.h"

namespace ga::pki {
namespace {

using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::CertText;
using testing::LoadCsr;
using testing::MakeCsrFiles;
using testing::MustRun;
using testing::ReadText;
using testing::WriteCert;

class TpmCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TSS2_LOG", "all+none", 0);  // the TSS logs expected misses (no SRK yet)
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
    OpenTpm();
  }
  void OpenTpm() {
    auto tpm = tpm::TpmContext::Open({.tcti = swtpm_->tcti()});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = *tpm;
  }
  CaInitResult InitCa(bool csr_only = false) {
    CaInitOptions init;
    init.backend = CaBackend::kTpm;
    init.subject = "CN=TPM Gateway CA";
    init.days = 365;
    init.out_dir = dir_ / "ca";
    init.tpm = tpm_;
    init.csr_only = csr_only;
    auto result = InitLocalCa(init);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    return result.ok() ? *result : CaInitResult{};
  }
  CaConfig Config() {
    auto dir = ReadCaDirectory(dir_ / "ca");
    EXPECT_TRUE(dir.ok()) << dir.status().ToString();
    if (!dir.ok()) return {};
    EXPECT_EQ(dir->tcti, swtpm_->tcti());
    EXPECT_EQ(dir->srk_handle, kDefaultSrkHandle);
    return dir->ca;
  }
  // Issues a certificate for a fresh software key and checks it with openssl.
  void IssueAndVerify(LocalCa& ca, const std::string& thing) {
    auto files = MakeCsrFiles(dir_.path(), thing, "P-256", "/CN=" + thing);
    X509ReqPtr csr = LoadCsr(files.csr);
    auto issued = ca.Issue(csr.get(), thing);
    ASSERT_TRUE(issued.ok()) << issued.status().ToString();
    auto pem = WriteCert(dir_ / (thing + ".pem"), issued->cert.get());
    std::string out =
        MustRun({"openssl", "verify", "-CAfile", (dir_ / "ca" / "ca.pem").string(), pem.string()});
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
    std::string text = CertText(pem);
    EXPECT_NE(text.find("CA:FALSE"), std::string::npos) << text;
    EXPECT_NE(text.find("TLS Web Client Authentication"), std::string::npos) << text;
    EXPECT_NE(text.find("ecdsa-with-SHA256"), std::string::npos) << text;
    EXPECT_EQ(issued->AwsId(), testing::OpensslCertId(pem));
  }
  std::unique_ptr<Swtpm> swtpm_;
  std::shared_ptr<tpm::TpmContext> tpm_;
  TempDir dir_;
};

TEST_F(TpmCaTest, CaKeyLivesInTheTpmOnly) {
  CaInitResult made = InitCa();
  CaConfig config = Config();
  EXPECT_EQ(config.backend, CaBackend::kTpm);
  // The key file is a TSS2 blob: wrapped by the TPM's SRK, useless elsewhere.
  std::string key = ReadText(config.key);
  EXPECT_EQ(key.rfind("-----BEGIN TSS2 PRIVATE KEY-----", 0), 0u) << key;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.path())) {
    std::string text = ReadText(entry.path());
    EXPECT_EQ(text.find("-----BEGIN PRIVATE KEY-----"), std::string::npos) << entry.path();
    EXPECT_EQ(text.find("-----BEGIN EC PRIVATE KEY-----"), std::string::npos) << entry.path();
  }
  // OpenSSL without the TPM provider cannot read it as a private key.
  auto pkey = ga::testing::RunCommand({"openssl", "pkey", "-in", config.key.string(), "-noout"});
  EXPECT_NE(pkey.exit_code, 0) << pkey.output;

  std::string text = CertText(made.cert);
  EXPECT_NE(text.find("CA:TRUE"), std::string::npos) << text;
  EXPECT_NE(text.find("Certificate Sign, CRL Sign"), std::string::npos) << text;
  std::string self =
      MustRun({"openssl", "verify", "-CAfile", made.cert.string(), made.cert.string()});
  EXPECT_NE(self.find(": OK"), std::string::npos) << self;
  EXPECT_EQ(made.aws_id, testing::OpensslCertId(made.cert));

  auto ca = OpenLocalCa(config, tpm_);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  EXPECT_EQ((*ca)->backend(), "tpm");
  IssueAndVerify(**ca, "gw-0001");
  IssueAndVerify(**ca, "gw-0001-sensor-7");

  // Verification certificate from the TPM-held key.
  auto files = MakeCsrFiles(dir_.path(), "verification", "P-256", "/CN=x");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto verification = (*ca)->IssueVerificationCertificate(csr.get(), "0123abcd");
  ASSERT_TRUE(verification.ok()) << verification.status().ToString();
  auto pem = WriteCert(dir_ / "verification.pem", verification->cert.get());
  EXPECT_NE(
      MustRun({"openssl", "verify", "-CAfile", made.cert.string(), pem.string()}).find(": OK"),
      std::string::npos);
  auto handles = tpm_->TransientHandles();
  ASSERT_TRUE(handles.ok());
  EXPECT_TRUE(handles->empty());
}

TEST_F(TpmCaTest, IssuesForACsrMadeInTheTpm) {
  // The enrollment engine's path: the identity's key is in the TPM and its
  // CSR (tpm::MakeCsr) is handed over in memory, for a TPM CA and a file CA.
  InitCa();
  auto tpm_ca = OpenLocalCa(Config(), tpm_);
  ASSERT_TRUE(tpm_ca.ok()) << tpm_ca.status().ToString();
  CaInitOptions init;
  init.subject = "CN=File CA";
  init.out_dir = dir_ / "fileca";
  ASSERT_TRUE(InitLocalCa(init).ok());
  auto file_dir = ReadCaDirectory(dir_ / "fileca");
  ASSERT_TRUE(file_dir.ok());
  auto file_ca = OpenLocalCa(file_dir->ca);
  ASSERT_TRUE(file_ca.ok()) << file_ca.status().ToString();

  auto blob = tpm_->CreateKey();
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  auto key = tpm::MakeEvpPkey(tpm_, *blob);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto csr = tpm::MakeCsr(key->get(), "CN=gw-0001-sensor-3");
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  for (LocalCa* ca : {tpm_ca->get(), file_ca->get()}) {
    auto issued = ca->Issue(csr->get(), "gw-0001-sensor-3");
    ASSERT_TRUE(issued.ok()) << ca->backend() << ": " << issued.status().ToString();
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(issued->cert.get()), key->get()), 1);
    std::string name = std::string(ca->backend()) + "-dev.pem";
    auto pem = WriteCert(dir_ / name, issued->cert.get());
    auto ca_pem = WriteCert(dir_ / (name + ".ca"), ca->certificate());
    std::string out = MustRun({"openssl", "verify", "-CAfile", ca_pem.string(), pem.string()});
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  }
}

TEST_F(TpmCaTest, FailedInitLeavesNothingBehind) {
  swtpm_->process().Stop();  // the TPM goes away after the context was opened
  CaInitOptions init;
  init.backend = CaBackend::kTpm;
  init.subject = "CN=TPM CA";
  init.out_dir = dir_ / "newca";
  init.tpm = tpm_;
  auto result = InitLocalCa(init);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("creating the CA"), std::string::npos)
      << result.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "newca"));
}

TEST_F(TpmCaTest, IssuingWorksAcrossRestarts) {
  InitCa();
  CaConfig config = Config();
  tpm_.reset();
  ASSERT_TRUE(swtpm_->Restart().ok());
  OpenTpm();
  auto ca = OpenLocalCa(config, tpm_);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  IssueAndVerify(**ca, "after-restart");
}

TEST_F(TpmCaTest, RefusesWithoutATpmOrWithAnotherTpm) {
  InitCa();
  CaConfig config = Config();
  auto none = OpenLocalCa(config, nullptr);
  EXPECT_EQ(none.status().code(), Code::kFailedPrecondition) << none.status().ToString();

  // The blob matches the certificate, but only its own TPM can use it.
  auto other = Swtpm::Start();
  ASSERT_TRUE(other.ok());
  auto other_tpm = tpm::TpmContext::Open({.tcti = (*other)->tcti()});
  ASSERT_TRUE(other_tpm.ok());
  ASSERT_TRUE((*other_tpm)->EnsureSrk().ok());
  auto ca = OpenLocalCa(config, *other_tpm);
  ASSERT_FALSE(ca.ok());
  EXPECT_NE(ca.status().message().find("CA key"), std::string::npos) << ca.status().ToString();
}

TEST_F(TpmCaTest, CsrForAnOrganisationRootThenImport) {
  CaInitResult made = InitCa(/*csr_only=*/true);
  ASSERT_FALSE(made.csr.empty());
  std::string verify_csr =
      MustRun({"openssl", "req", "-in", made.csr.string(), "-verify", "-noout", "-subject"});
  EXPECT_NE(verify_csr.find("verify OK"), std::string::npos) << verify_csr;
  EXPECT_NE(verify_csr.find("CN = TPM Gateway CA"), std::string::npos) << verify_csr;

  testing::MakeSelfSigned(dir_.path(), "root", -1, 3650, true);
  testing::WriteText(dir_ / "ext.cnf",
                     "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n"
                     "subjectKeyIdentifier=hash\n");
  MustRun({"openssl", "x509", "-req", "-in", made.csr.string(), "-CA", (dir_ / "root.pem").string(),
           "-CAkey", (dir_ / "root.key").string(), "-days", "365", "-extfile",
           (dir_ / "ext.cnf").string(), "-out", (dir_ / "signed.pem").string()});
  CaConfig config = Config();
  Status imported = ImportCaCertificate(config, tpm_, ReadText(dir_ / "signed.pem"));
  ASSERT_TRUE(imported.ok()) << imported.ToString();
  auto ca = OpenLocalCa(config, tpm_);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-9");
  X509ReqPtr csr = LoadCsr(files.csr);
  auto issued = (*ca)->Issue(csr.get(), "gw-9");
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  auto pem = WriteCert(dir_ / "dev.pem", issued->cert.get());
  std::string out = MustRun({"openssl", "verify", "-CAfile", (dir_ / "root.pem").string(),
                             "-untrusted", config.cert.string(), pem.string()});
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
}

}  // namespace
}  // namespace ga::pki
