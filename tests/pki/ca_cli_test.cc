// `gateway-agent ca ...` as an operator runs it: the seed's steps 1-4 with a
// file CA and a TPM-held CA, and bad inputs that leave nothing written.
//
// Runs GA_AGENT_BINARY, or $GA_CA_CLI_BINARY when set (a binary with only the
// `ca` commands); skips when the binary has no `ca` command yet.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

#include "fixtures.h"
#include "pki_test_support.h"

namespace ga::pki {
namespace {

using ga::testing::CommandResult;
using ga::testing::RunCommand;
using ga::testing::Swtpm;
using ga::testing::TempDir;
using testing::MakeCsrFiles;
using testing::MustRun;
using testing::ReadText;
using testing::WriteText;

namespace fs = std::filesystem;

std::string Binary() {
  const char* env = std::getenv("GA_CA_CLI_BINARY");
  return env != nullptr && *env != '\0' ? env : GA_AGENT_BINARY;
}

class CaCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A broken `ca` command fails every test here instead of skipping them.
    CommandResult help = RunCommand({Binary(), "ca", "--help"});
    ASSERT_EQ(help.exit_code, 0) << Binary() << " ca --help: " << help.output;
  }
  CommandResult Agent(std::vector<std::string> args) {
    args.insert(args.begin(), Binary());
    return RunCommand(args);
  }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }
  void ExpectVerifies(const std::string& ca, const std::string& cert) {
    std::string out = MustRun({"openssl", "verify", "-CAfile", ca, cert});
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  }
  TempDir dir_;
};

TEST_F(CaCliTest, FileCaFromInitToRegistrationAndIssue) {
  std::string ca_dir = Path("ca");
  CommandResult init = Agent({"ca", "init", "--backend", "file", "--subject",
                              "CN=Acme Gateway CA,O=Acme", "--days", "365", "--out-dir", ca_dir});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  std::string ca_pem = ca_dir + "/ca.pem";
  std::string id = testing::OpensslCertId(ca_pem);
  EXPECT_NE(init.output.find(id), std::string::npos) << init.output;

  CommandResult show = Agent({"ca", "show", "--ca-dir", ca_dir});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("Subject:      CN = Acme Gateway CA, O = Acme"), std::string::npos)
      << show.output;
  EXPECT_NE(show.output.find("AWS CA id:    " + id), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("Not after:"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("aws iot get-registration-code"), std::string::npos);
  EXPECT_NE(show.output.find("aws iot register-ca-certificate --ca-certificate file://" +
                             fs::absolute(ca_pem).string() +
                             " --verification-certificate file://verification.pem"
                             " --set-as-active --allow-auto-registration"),
            std::string::npos)
      << show.output;

  std::string verification = Path("verification.pem");
  CommandResult vc = Agent({"ca", "verification-cert", "--ca-dir", ca_dir, "--registration-code",
                            "7c5f3b2a9d1e", "--out", verification});
  ASSERT_EQ(vc.exit_code, 0) << vc.output;
  ExpectVerifies(ca_pem, verification);
  EXPECT_EQ(MustRun({"openssl", "x509", "-in", verification, "-noout", "-subject"}),
            "subject=CN = 7c5f3b2a9d1e\n");

  auto csr = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-0001");
  CommandResult issue = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", csr.csr.string(), "--out", Path("dev.pem")});
  ASSERT_EQ(issue.exit_code, 0) << issue.output;
  ExpectVerifies(ca_pem, Path("dev.pem"));
  EXPECT_EQ(ReadText(Path("dev.chain.pem")), ReadText(Path("dev.pem")) + ReadText(ca_pem));
  EXPECT_NE(issue.output.find(testing::OpensslCertId(Path("dev.pem"))), std::string::npos)
      << issue.output;
  std::string text = testing::CertText(Path("dev.pem"));
  EXPECT_NE(text.find("Subject: CN = gw-0001"), std::string::npos) << text;
  EXPECT_NE(text.find("TLS Web Client Authentication"), std::string::npos) << text;

  // The same CA through [ca] of a config file.
  WriteText(Path("agent.toml"),
            "[agent]\nthing_name = \"gw-0001\"\n[aws]\nendpoint = "
            "\"x-ats.iot.eu-west-1.amazonaws.com\"\n[ca]\nbackend = \"file\"\n"
            "cert = \"" +
                ca_pem + "\"\nkey = \"" + ca_dir +
                "/ca.key\"\n"
                "validity_days = 30\n");
  CommandResult by_config =
      Agent({"--config", Path("agent.toml"), "ca", "issue", "--csr", csr.csr.string(), "--out",
             Path("dev2.pem"), "--chain-out", Path("deviceCertAndCACert.crt")});
  ASSERT_EQ(by_config.exit_code, 0) << by_config.output;
  ExpectVerifies(ca_pem, Path("dev2.pem"));
  EXPECT_TRUE(fs::exists(Path("deviceCertAndCACert.crt")));
  MustRun({"openssl", "x509", "-in", Path("dev2.pem"), "-noout", "-checkend",
           std::to_string(29 * 86400)});
  CommandResult beyond = RunCommand({"openssl", "x509", "-in", Path("dev2.pem"), "-noout",
                                     "-checkend", std::to_string(31 * 86400)});
  EXPECT_NE(beyond.exit_code, 0) << "validity_days = 30 from the config";
}

TEST_F(CaCliTest, BadInputsFailClearlyAndWriteNothing) {
  std::string ca_dir = Path("ca");
  ASSERT_EQ(Agent({"ca", "init", "--subject", "CN=CA", "--out-dir", ca_dir}).exit_code, 0);
  std::string key_before = ReadText(ca_dir + "/ca.key");

  CommandResult again = Agent({"ca", "init", "--subject", "CN=CA2", "--out-dir", ca_dir});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("refusing to overwrite"), std::string::npos) << again.output;
  EXPECT_EQ(ReadText(ca_dir + "/ca.key"), key_before);

  auto bad_cn = MakeCsrFiles(dir_.path(), "badcn", "P-256", "/CN=gw 0001");
  CommandResult r1 = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", bad_cn.csr.string(), "--out", Path("out1.pem")});
  EXPECT_EQ(r1.exit_code, 1);
  EXPECT_NE(r1.output.find("is not a valid AWS thing name"), std::string::npos) << r1.output;

  auto rsa = MakeCsrFiles(dir_.path(), "rsa", "RSA-1024", "/CN=gw-1");
  CommandResult r2 = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", rsa.csr.string(), "--out", Path("out2.pem")});
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.output.find("RSA key of 1024 bits"), std::string::npos) << r2.output;

  WriteText(Path("garbage.csr"), "not a csr\n");
  CommandResult r3 = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", Path("garbage.csr"), "--out", Path("out3.pem")});
  EXPECT_EQ(r3.exit_code, 1);
  EXPECT_NE(r3.output.find("garbage.csr"), std::string::npos) << r3.output;

  CommandResult r4 = Agent({"ca", "verification-cert", "--ca-dir", ca_dir, "--registration-code",
                            "not/a/code", "--out", Path("out4.pem")});
  EXPECT_EQ(r4.exit_code, 1) << r4.output;

  ASSERT_EQ(chmod((ca_dir + "/ca.key").c_str(), 0644), 0);
  auto good = MakeCsrFiles(dir_.path(), "good", "P-256", "/CN=gw-1");
  CommandResult r5 = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", good.csr.string(), "--out", Path("out5.pem")});
  EXPECT_EQ(r5.exit_code, 1);
  EXPECT_NE(r5.output.find("accessible by group or others"), std::string::npos) << r5.output;

  for (const char* name : {"out1.pem", "out2.pem", "out3.pem", "out4.pem", "out5.pem",
                           "out1.chain.pem", "out5.chain.pem"}) {
    EXPECT_FALSE(fs::exists(Path(name))) << name;
  }
  CommandResult no_dir = Agent({"ca", "show", "--ca-dir", Path("nope")});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_NE(no_dir.output.find("ca.toml"), std::string::npos) << no_dir.output;
}

TEST_F(CaCliTest, TpmCaWithTheKeyInTheTpm) {
  auto swtpm = Swtpm::Start();
  ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
  std::string ca_dir = Path("tpmca");
  CommandResult init = Agent({"ca", "init", "--backend", "tpm", "--tcti", (*swtpm)->tcti(),
                              "--subject", "CN=TPM CA", "--out-dir", ca_dir});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  EXPECT_EQ(ReadText(ca_dir + "/ca.key").rfind("-----BEGIN TSS2 PRIVATE KEY-----", 0), 0u);

  // ca.toml remembers the TCTI; restart the TPM in between.
  ASSERT_TRUE((*swtpm)->Restart().ok());
  auto csr = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=sensor-7");
  CommandResult issue = Agent(
      {"ca", "issue", "--ca-dir", ca_dir, "--csr", csr.csr.string(), "--out", Path("dev.pem")});
  ASSERT_EQ(issue.exit_code, 0) << issue.output;
  ExpectVerifies(ca_dir + "/ca.pem", Path("dev.pem"));

  CommandResult show = Agent({"ca", "show", "--ca-dir", ca_dir, "--tcti", (*swtpm)->tcti()});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("in the TPM at " + (*swtpm)->tcti()), std::string::npos)
      << show.output;
}

}  // namespace
}  // namespace ga::pki
