// `gateway-agent tpm ...` as an operator runs it, against a real swtpm.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "fixtures.h"
#include "tpm_test_support.h"

namespace ga::tpm {
namespace {

using ga::testing::CommandResult;
using ga::testing::RunCommand;
using ga::testing::Swtpm;
using ga::testing::TempDir;

class TpmCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
  }
  CommandResult Agent(std::vector<std::string> args) {
    args.insert(args.begin(), GA_AGENT_BINARY);
    return RunCommand(args);
  }
  std::unique_ptr<Swtpm> swtpm_;
  TempDir dir_;
};

TEST_F(TpmCliTest, InfoCreateKeyAndCsr) {
  CommandResult info = Agent({"tpm", "info", "--tcti", swtpm_->tcti()});
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("manufacturer:        IBM"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("SRK 0x81000001:      absent"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("free slots"), std::string::npos) << info.output;

  std::string key = (dir_ / "device.key").string();
  CommandResult create = Agent({"tpm", "create-key", "--out", key, "--tcti", swtpm_->tcti()});
  ASSERT_EQ(create.exit_code, 0) << create.output;
  struct stat st {};
  ASSERT_EQ(stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  CommandResult again = Agent({"tpm", "create-key", "--out", key, "--tcti", swtpm_->tcti()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("error: key file " + key + " exists"), std::string::npos)
      << again.output;

  std::string csr = (dir_ / "device.csr").string();
  CommandResult made = Agent({"tpm", "csr", "--key", key, "--subject", "CN=thing-7,O=Acme", "--out",
                              csr, "--tcti", swtpm_->tcti()});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::string out =
      testing::MustRun({"openssl", "req", "-in", csr, "-verify", "-noout", "-subject"});
  EXPECT_NE(out.find("verify OK"), std::string::npos) << out;
  EXPECT_NE(out.find("CN = thing-7"), std::string::npos) << out;

  info = Agent({"tpm", "info", "--tcti", swtpm_->tcti()});
  EXPECT_NE(info.output.find("SRK 0x81000001:      present"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("transient objects:   0 loaded"), std::string::npos) << info.output;
}

TEST_F(TpmCliTest, ErrorsAreClear) {
  std::string dead = "swtpm:host=127.0.0.1,port=" + std::to_string(ga::testing::FreePort(2));
  CommandResult no_tpm = Agent({"tpm", "info", "--tcti", dead});
  EXPECT_EQ(no_tpm.exit_code, 1);
  EXPECT_NE(no_tpm.output.find("error: no TPM reachable at TCTI \"" + dead + "\""),
            std::string::npos)
      << no_tpm.output;

  std::string bad = (dir_ / "bad.key").string();
  testing::WriteText(bad,
                     "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n");
  CommandResult csr = Agent(
      {"tpm", "csr", "--key", bad, "--subject", "CN=x", "--out", "-", "--tcti", swtpm_->tcti()});
  EXPECT_EQ(csr.exit_code, 1);
  EXPECT_NE(csr.output.find("error: " + bad + ": not a usable TSS2 PRIVATE KEY"), std::string::npos)
      << csr.output;

  CommandResult handle = Agent({"tpm", "info", "--srk-handle", "0x1234", "--tcti", swtpm_->tcti()});
  EXPECT_EQ(handle.exit_code, 1);
  EXPECT_NE(handle.output.find("0x00001234 is not a persistent handle"), std::string::npos)
      << handle.output;
}

}  // namespace
}  // namespace ga::tpm
