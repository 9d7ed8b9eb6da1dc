// A TPM key through OpenSSL: the provider signs in the TPM, never exports the
// private half, makes CSRs and certificates that OpenSSL verifies, and
// interoperates with tpm2-openssl's key files in both directions.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fixtures.h"
#include "gateway_agent/openssl.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "tpm_test_support.h"

namespace ga::tpm {
namespace {

using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::MustRun;
using testing::ReadText;
using testing::TpmToolsEnv;
using testing::WriteText;

class TpmOpenSslTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
    OpenTpm();
  }
  void OpenTpm() {
    auto tpm = TpmContext::Open({.tcti = swtpm_->tcti()});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = *tpm;
  }
  // swtpm serves one connection at a time: external tools need ours closed.
  void CloseTpm() { tpm_.reset(); }
  void ExpectNoTransients() {
    auto handles = tpm_->TransientHandles();
    ASSERT_TRUE(handles.ok()) << handles.status().ToString();
    EXPECT_TRUE(handles->empty());
  }
  EvpPkeyPtr NewTpmPkey(TpmKeyBlob* blob_out = nullptr) {
    auto key = tpm_->CreateKey();
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    if (!key.ok()) return nullptr;
    if (blob_out != nullptr) *blob_out = *key;
    auto pkey = MakeEvpPkey(tpm_, *key);
    EXPECT_TRUE(pkey.ok()) << pkey.status().ToString();
    return pkey.ok() ? std::move(*pkey) : nullptr;
  }
  std::unique_ptr<Swtpm> swtpm_;
  std::shared_ptr<TpmContext> tpm_;
  TempDir dir_;
};

TEST_F(TpmOpenSslTest, PrivateHalfCannotBeExported) {
  EvpPkeyPtr pkey = NewTpmPkey();
  ASSERT_TRUE(pkey);
  EXPECT_TRUE(IsTpmKey(pkey.get()));
  EXPECT_TRUE(EVP_PKEY_is_a(pkey.get(), "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(pkey.get()), 256);

  OSSL_PARAM* params = nullptr;
  EXPECT_NE(EVP_PKEY_todata(pkey.get(), EVP_PKEY_KEYPAIR, &params), 1);
  OSSL_PARAM_free(params);
  params = nullptr;

  BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_NE(PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr),
            1);
  EXPECT_NE(
      PEM_write_bio_PKCS8PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr),
      1);
  unsigned char* der = nullptr;
  EXPECT_LE(i2d_PrivateKey(pkey.get(), &der), 0);
  OPENSSL_free(der);
  // No private component reachable as a parameter either.
  BIGNUM* priv = nullptr;
  EXPECT_NE(EVP_PKEY_get_bn_param(pkey.get(), OSSL_PKEY_PARAM_PRIV_KEY, &priv), 1);
  BN_free(priv);
  ClearOpenSslErrors();

  // The public half is exportable.
  ASSERT_EQ(EVP_PKEY_todata(pkey.get(), EVP_PKEY_PUBLIC_KEY, &params), 1);
  OSSL_PARAM_free(params);
  BioPtr pub(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PUBKEY(pub.get(), pkey.get()), 1);
}

TEST_F(TpmOpenSslTest, CsrVerifiesWithOpensslCommand) {
  EvpPkeyPtr pkey = NewTpmPkey();
  ASSERT_TRUE(pkey);
  auto csr = MakeCsr(pkey.get(), "CN=thing-0042,O=Acme Gateways,C=DE");
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  auto pem = CsrToPem(csr->get());
  ASSERT_TRUE(pem.ok());
  WriteText(dir_ / "device.csr", *pem);
  std::string out = MustRun(
      {"openssl", "req", "-in", (dir_ / "device.csr").string(), "-verify", "-noout", "-subject"});
  EXPECT_NE(out.find("verify OK"), std::string::npos) << out;
  EXPECT_NE(out.find("CN = thing-0042"), std::string::npos) << out;
  EXPECT_NE(out.find("O = Acme Gateways"), std::string::npos) << out;
  ExpectNoTransients();
}

TEST_F(TpmOpenSslTest, BadSubjectsAreRefused) {
  EvpPkeyPtr pkey = NewTpmPkey();
  ASSERT_TRUE(pkey);
  for (const char* subject : {"", "CN", "=x", "XX=y", "/CN=ok/bogusfield=1"}) {
    auto csr = MakeCsr(pkey.get(), subject);
    EXPECT_FALSE(csr.ok()) << subject;
    EXPECT_EQ(csr.status().code(), Code::kInvalidArgument) << csr.status().ToString();
  }
  auto slash = MakeCsr(pkey.get(), "/CN=a\\/b/O=x");
  ASSERT_TRUE(slash.ok()) << slash.status().ToString();
}

TEST_F(TpmOpenSslTest, CertificateSignedByTpmCaKeyVerifies) {
  // pki/ signs certificates with a TPM-held CA key through X509_sign_ctx.
  EvpPkeyPtr ca_key = NewTpmPkey();
  ASSERT_TRUE(ca_key);
  OSSL_LIB_CTX* libctx = *LibCtx();
  X509Ptr cert(X509_new_ex(libctx, nullptr));
  ASSERT_TRUE(cert);
  auto name = ParseSubject("CN=TPM CA");
  ASSERT_TRUE(name.ok());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7);
  X509_set_issuer_name(cert.get(), name->get());
  X509_set_subject_name(cert.get(), name->get());
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  ASSERT_EQ(X509_set_pubkey(cert.get(), ca_key.get()), 1);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* bc = X509V3_EXT_conf_nid(nullptr, &v3, NID_basic_constraints, "critical,CA:TRUE");
  ASSERT_NE(bc, nullptr);
  X509_add_ext(cert.get(), bc, -1);
  X509_EXTENSION_free(bc);

  EvpMdCtxPtr md(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(md.get(), nullptr, "SHA256", libctx, nullptr, ca_key.get(), nullptr), 1)
      << OpenSslError("init").ToString();
  ASSERT_GT(X509_sign_ctx(cert.get(), md.get()), 0) << OpenSslError("sign").ToString();
  EXPECT_EQ(X509_verify(cert.get(), ca_key.get()), 1) << OpenSslError("verify").ToString();
  EXPECT_EQ(X509_check_private_key(cert.get(), ca_key.get()), 1)
      << OpenSslError("check").ToString();
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), ca_key.get()), 1);
  EvpPkeyPtr other = NewTpmPkey();
  EXPECT_NE(X509_check_private_key(cert.get(), other.get()), 1);
  ClearOpenSslErrors();
  // Also the plain X509_sign route.
  X509Ptr copy(X509_dup(cert.get()));
  ASSERT_GT(X509_sign(copy.get(), ca_key.get(), EVP_sha256()), 0)
      << OpenSslError("X509_sign").ToString();

  BioPtr bio(BIO_new_file((dir_ / "ca.pem").c_str(), "w"));
  ASSERT_EQ(PEM_write_bio_X509(bio.get(), cert.get()), 1);
  bio.reset();
  std::string out = MustRun(
      {"openssl", "verify", "-CAfile", (dir_ / "ca.pem").string(), (dir_ / "ca.pem").string()});
  EXPECT_NE(out.find("OK"), std::string::npos) << out;
  std::string text =
      MustRun({"openssl", "x509", "-in", (dir_ / "ca.pem").string(), "-noout", "-text"});
  EXPECT_NE(text.find("ecdsa-with-SHA256"), std::string::npos) << text;
  ExpectNoTransients();
}

TEST_F(TpmOpenSslTest, ProjectKeyFileSignsWithTpm2OpensslProvider) {
  auto key = tpm_->CreateKey();
  ASSERT_TRUE(key.ok());
  auto path = dir_ / "project.key";
  ASSERT_TRUE(key->WriteFile(path).ok());
  CloseTpm();

  auto env = TpmToolsEnv(swtpm_->tcti());
  MustRun(
      {"openssl", "req", "-new", "-provider", "tpm2", "-provider", "default", "-key", path.string(),
       "-subj", "/CN=made-by-tpm2-openssl", "-out", (dir_ / "interop.csr").string()},
      env);
  std::string out = MustRun(
      {"openssl", "req", "-in", (dir_ / "interop.csr").string(), "-verify", "-noout", "-pubkey"});
  EXPECT_NE(out.find("verify OK"), std::string::npos) << out;
  // The CSR carries the project key's public key.
  EvpPkeyPtr pub = testing::SoftwarePublicKey(*key);
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), pub.get());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  EXPECT_NE(out.find(std::string(data, static_cast<size_t>(len))), std::string::npos) << out;

  OpenTpm();
  ExpectNoTransients();
}

TEST_F(TpmOpenSslTest, Tpm2OpensslKeyFileIsUsedByTheProject) {
  // The SRK the project persists is the primary tpm2-openssl derives itself.
  ASSERT_TRUE(tpm_->EnsureSrk().ok());
  CloseTpm();
  auto env = TpmToolsEnv(swtpm_->tcti());
  auto path = dir_ / "tpm2-openssl.key";
  MustRun({"openssl", "genpkey", "-provider", "tpm2", "-algorithm", "EC", "-pkeyopt", "group:P-256",
           "-out", path.string()},
          env);
  MustRun({"tpm2_flushcontext", "-t"}, env);  // in case the tool left one
  OpenTpm();

  auto key = TpmKeyBlob::ReadFile(path);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->parent(), kOwnerHierarchy);
  EXPECT_EQ(key->scheme_hash(), 0);  // tpm2-openssl leaves the scheme open
  auto pkey = MakeEvpPkey(tpm_, *key);
  ASSERT_TRUE(pkey.ok()) << pkey.status().ToString();
  auto csr = MakeCsr(pkey->get(), "CN=tpm2-openssl key");
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  WriteText(dir_ / "c.csr", *CsrToPem(csr->get()));
  std::string out =
      MustRun({"openssl", "req", "-in", (dir_ / "c.csr").string(), "-verify", "-noout"});
  EXPECT_NE(out.find("verify OK"), std::string::npos) << out;
  // Its NULL scheme lets it sign SHA-384 too.
  std::string msg = "sha384 message";
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(md.get(), nullptr, "SHA384", *LibCtx(), nullptr, pkey->get(), nullptr),
      1);
  size_t siglen = 0;
  ASSERT_EQ(EVP_DigestSign(md.get(), nullptr, &siglen,
                           reinterpret_cast<const unsigned char*>(msg.data()), msg.size()),
            1);
  std::string sig(siglen, '\0');
  ASSERT_EQ(EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &siglen,
                           reinterpret_cast<const unsigned char*>(msg.data()), msg.size()),
            1)
      << OpenSslError("sign").ToString();
  sig.resize(siglen);
  EvpPkeyPtr pub = testing::SoftwarePublicKey(*key);
  EvpMdCtxPtr vmd(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestVerifyInit_ex(vmd.get(), nullptr, "SHA384", nullptr, nullptr, pub.get(), nullptr),
      1);
  EXPECT_EQ(
      EVP_DigestVerify(vmd.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(msg.data()), msg.size()),
      1);
  ExpectNoTransients();
}

TEST_F(TpmOpenSslTest, ManyKeysHeldAtOnceSignThroughOneContext) {
  std::vector<EvpPkeyPtr> keys;
  std::vector<TpmKeyBlob> blobs;
  for (int i = 0; i < 12; ++i) {
    TpmKeyBlob blob = *tpm_->CreateKey();
    blobs.push_back(blob);
    auto pkey = MakeEvpPkey(tpm_, blob);
    ASSERT_TRUE(pkey.ok());
    keys.push_back(std::move(*pkey));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    std::string msg = "m" + std::to_string(i);
    EvpMdCtxPtr md(EVP_MD_CTX_new());
    ASSERT_EQ(EVP_DigestSignInit_ex(md.get(), nullptr, "SHA256", *LibCtx(), nullptr, keys[i].get(),
                                    nullptr),
              1);
    unsigned char sig[80];
    size_t siglen = sizeof(sig);
    ASSERT_EQ(EVP_DigestSign(md.get(), sig, &siglen,
                             reinterpret_cast<const unsigned char*>(msg.data()), msg.size()),
              1)
        << OpenSslError("sign").ToString();
    EXPECT_TRUE(
        testing::VerifySha256(blobs[i], msg, std::string(reinterpret_cast<char*>(sig), siglen)));
  }
  ExpectNoTransients();
}

TEST_F(TpmOpenSslTest, SigningErrorsReachTheOpenSslErrorQueue) {
  EvpPkeyPtr pkey = NewTpmPkey();
  ASSERT_TRUE(pkey);
  swtpm_->process().Stop();  // the TPM goes away
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(md.get(), nullptr, "SHA256", *LibCtx(), nullptr, pkey.get(), nullptr),
      1);
  unsigned char sig[80];
  size_t siglen = sizeof(sig);
  const unsigned char msg[] = "x";
  ASSERT_NE(EVP_DigestSign(md.get(), sig, &siglen, msg, 1), 1);
  Status s = OpenSslError("signing");
  EXPECT_NE(s.message().find("ga-tpm"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(swtpm_->tcti()), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace ga::tpm
