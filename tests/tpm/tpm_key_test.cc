// The TSS2 PRIVATE KEY format: parsing refuses every malformed input with a
// clear InvalidArgument naming the source, and round-trips what it writes.
#include "gateway_agent/tpm/tpm_key.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include "fixtures.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "tpm_test_support.h"

namespace ga::tpm {
namespace {

using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::ReadText;
using testing::WriteText;

std::string Base64Pem(const std::string& label, const std::string& der) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio(bio.get(), label.c_str(), "", reinterpret_cast<const unsigned char*>(der.data()),
                static_cast<long>(der.size()));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

void ExpectInvalid(std::string_view pem, std::string_view fragment) {
  Result<TpmKeyBlob> key = TpmKeyBlob::FromPem(pem, "key.pem");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), Code::kInvalidArgument) << key.status().ToString();
  EXPECT_NE(key.status().message().find("key.pem"), std::string::npos) << key.status().message();
  EXPECT_NE(key.status().message().find(fragment), std::string::npos) << key.status().message();
}

TEST(TpmKeyBlobTest, RefusesMalformedInput) {
  ExpectInvalid("", "");
  ExpectInvalid("garbage", "not a DER SEQUENCE");
  ExpectInvalid("-----BEGIN TSS2 PRIVATE KEY-----\n!!!!\n-----END TSS2 PRIVATE KEY-----\n",
                "no PEM block");
  ExpectInvalid(Base64Pem("PRIVATE KEY", std::string("\x30\x00", 2)), "PEM label");
  ExpectInvalid(Base64Pem("TSS2 PRIVATE KEY", std::string("\x30\x05\x06\x03\x2a\x03\x04", 7)),
                "2.23.133.10.1.3");
  // Truncated: the SEQUENCE claims more bytes than there are.
  ExpectInvalid(Base64Pem("TSS2 PRIVATE KEY", std::string("\x30\x7f\x06\x06", 4)),
                "not a DER SEQUENCE");
  // Right OID, then nothing.
  ExpectInvalid(
      Base64Pem("TSS2 PRIVATE KEY", std::string("\x30\x08\x06\x06\x67\x81\x05\x0a\x01\x03", 10)),
      "parent");
  // Sealed data object.
  ExpectInvalid(
      Base64Pem("TSS2 PRIVATE KEY", std::string("\x30\x08\x06\x06\x67\x81\x05\x0a\x01\x05", 10)),
      "sealed");
  // Right shape, garbage TPM structures.
  ExpectInvalid(Base64Pem("TSS2 PRIVATE KEY",
                          std::string("\x30\x16\x06\x06\x67\x81\x05\x0a\x01\x03\xa0\x03\x01\x01"
                                      "\xff\x02\x01\x01\x04\x01\x00\x04\x01\x00",
                                      24)),
                "TPM2B_PUBLIC");
}

TEST(TpmKeyBlobTest, ReadFileNamesTheFile) {
  Result<TpmKeyBlob> key = TpmKeyBlob::ReadFile("/nonexistent/dir/key.pem");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), Code::kNotFound);
  EXPECT_NE(key.status().message().find("/nonexistent/dir/key.pem"), std::string::npos);
}

class TpmKeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
    auto tpm = TpmContext::Open({.tcti = swtpm_->tcti()});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = *tpm;
  }
  std::unique_ptr<Swtpm> swtpm_;
  std::shared_ptr<TpmContext> tpm_;
  TempDir dir_;
};

TEST_F(TpmKeyFileTest, WritesMode0600AndRoundTrips) {
  auto key = tpm_->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto path = dir_ / "device.key";
  ASSERT_TRUE(key->WriteFile(path).ok());
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(ReadText(path).find("-----BEGIN TSS2 PRIVATE KEY-----"), std::string::npos);

  auto read = TpmKeyBlob::ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->public_area(), key->public_area());
  EXPECT_EQ(read->private_area(), key->private_area());
  EXPECT_EQ(read->parent(), kDefaultSrkHandle);
  EXPECT_TRUE(read->empty_auth());
  EXPECT_EQ(read->ec_point(), key->ec_point());
  EXPECT_EQ(read->ToPem(), key->ToPem());

  Status again = key->WriteFile(path);
  EXPECT_EQ(again.code(), Code::kAlreadyExists) << again.ToString();
  EXPECT_TRUE(key->WriteFile(path, /*overwrite=*/true).ok());
  // No temporary file left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(TpmKeyFileTest, OpenSslParsesTheWrittenStructure) {
  auto key = tpm_->CreateKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto path = dir_ / "k.pem";
  ASSERT_TRUE(key->WriteFile(path).ok());
  std::string out = testing::MustRun({"openssl", "asn1parse", "-in", path.string()});
  EXPECT_NE(out.find(":2.23.133.10.1.3"), std::string::npos) << out;
  EXPECT_NE(out.find("BOOLEAN           :255"), std::string::npos) << out;
  EXPECT_NE(out.find("INTEGER           :81000001"), std::string::npos) << out;
}

}  // namespace
}  // namespace ga::tpm
