// The command CA: an external program gets the CSR on stdin and prints the
// certificate; failures, hangs and garbage are clear errors.
#include "../../pki/command_ca.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "fixtures.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/pki/local_ca.h"
#include "pki_test_support.h"

namespace ga::pki {
namespace {

using ga::testing::TempDir;
using testing::LoadCsr;
using testing::MakeCsrFiles;
using testing::MustRun;
using testing::ReadText;
using testing::WriteCert;

class CommandCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CaInitOptions init;
    init.subject = "CN=Step CA";
    init.out_dir = dir_ / "ca";
    ASSERT_TRUE(InitLocalCa(init).ok());
    ca_pem_ = (dir_ / "ca" / "ca.pem").string();
    ca_key_ = (dir_ / "ca" / "ca.key").string();
    auto files = MakeCsrFiles(dir_.path(), "dev", "P-256", "/CN=gw-1");
    csr_ = LoadCsr(files.csr);
  }
  // `openssl x509 -req` as the site's CA tool: CSR on stdin, PEM on stdout.
  std::string SignCommand() const {
    return "openssl x509 -req -CA '" + ca_pem_ + "' -CAkey '" + ca_key_ + "' -days 30";
  }
  CaConfig Config(std::vector<std::string> command, std::string cert = "") {
    CaConfig config;
    config.backend = CaBackend::kCommand;
    config.command = std::move(command);
    config.cert = cert.empty() ? ca_pem_ : cert;
    config.command_timeout = std::chrono::seconds(20);
    return config;
  }
  Result<IssuedCertificate> IssueWith(const CaConfig& config) {
    auto ca = OpenLocalCa(config);
    if (!ca.ok()) return std::move(ca).take_status();
    return (*ca)->Issue(csr_.get(), "gw-1");
  }
  void ExpectError(const CaConfig& config, Code code, const std::string& why) {
    auto issued = IssueWith(config);
    ASSERT_FALSE(issued.ok()) << why;
    EXPECT_EQ(issued.status().code(), code) << issued.status().ToString();
    EXPECT_NE(issued.status().message().find(why), std::string::npos) << issued.status().ToString();
    EXPECT_NE(issued.status().message().find("CA command \""), std::string::npos)
        << issued.status().ToString();
  }
  TempDir dir_;
  std::string ca_pem_, ca_key_;
  X509ReqPtr csr_;
};

TEST_F(CommandCaTest, IssuesThroughTheCommand) {
  auto issued = IssueWith(Config({"sh", "-c", SignCommand()}));
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  auto pem = WriteCert(dir_ / "dev.pem", issued->cert.get());
  std::string out = MustRun({"openssl", "verify", "-CAfile", ca_pem_, pem.string()});
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  // No chain printed: the chain is [ca] cert.
  ASSERT_EQ(issued->chain.size(), 1u);
  EXPECT_EQ(*CertificateToPem(issued->chain[0].get()), ReadText(ca_pem_));
  EXPECT_EQ(issued->AwsId(), testing::OpensslCertId(pem));
}

TEST_F(CommandCaTest, TakesTheChainFromTheOutput) {
  // Without a [ca] cert file the command must print the chain itself.
  auto issued = IssueWith(Config({"sh", "-c", SignCommand() + " && cat '" + ca_pem_ + "'"},
                                 (dir_ / "none.pem").string()));
  ASSERT_TRUE(issued.ok()) << issued.status().ToString();
  ASSERT_EQ(issued->chain.size(), 1u);
  EXPECT_EQ(*CertificateToPem(issued->chain[0].get()), ReadText(ca_pem_));

  auto ca = OpenLocalCa(Config({"sh", "-c", SignCommand()}, (dir_ / "none.pem").string()));
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ((*ca)->certificate(), nullptr);
  auto no_chain = (*ca)->Issue(csr_.get(), "gw-1");
  EXPECT_FALSE(no_chain.ok());
  EXPECT_NE(no_chain.status().message().find("printed no CA certificate"), std::string::npos)
      << no_chain.status().ToString();
}

TEST_F(CommandCaTest, FailingCommandNamesItselfAndItsStderr) {
  ExpectError(Config({"sh", "-c", "echo 'step: token expired' >&2; exit 3"}), Code::kUnavailable,
              "exited with status 3: step: token expired");
  ExpectError(Config({"/nonexistent/step", "ca", "sign"}), Code::kUnavailable,
              "cannot execute /nonexistent/step");
  ExpectError(Config({"sh", "-c", "kill -TERM $$"}), Code::kUnavailable, "killed by signal 15");
}

TEST_F(CommandCaTest, HangingCommandIsKilledWithItsChildren) {
  CaConfig config =
      Config({"sh", "-c", "sleep 60 & echo $! > '" + (dir_ / "pid").string() + "'; wait"});
  config.command_timeout = std::chrono::milliseconds(500);
  auto start = std::chrono::steady_clock::now();
  ExpectError(config, Code::kTimeout, "did not finish within 500 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // The grandchild (sleep) was in the killed process group.
  pid_t pid = std::stoi(ReadText(dir_ / "pid"));
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
    gone = stat.empty() || stat.find(") Z") != std::string::npos;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "sleep " << pid << " survived";
}

TEST_F(CommandCaTest, GarbageOutputIsRefused) {
  ExpectError(Config({"sh", "-c", "echo hello world"}), Code::kInvalidArgument,
              "unexpected text outside PEM blocks");
  ExpectError(Config({"true"}), Code::kInvalidArgument, "no PEM certificate");
  ExpectError(Config({"cat", ca_key_}), Code::kInvalidArgument, "where a CERTIFICATE was expected");
  ExpectError(Config({"sh", "-c", "yes"}), Code::kInvalidArgument, "more than 1 MiB");
  // A certificate, but for another key (here: the CA's own).
  ExpectError(Config({"cat", ca_pem_}), Code::kInvalidArgument, "not for the CSR's key");
}

TEST_F(CommandCaTest, CertificateFromAnotherCaIsRefused) {
  CaInitOptions init;
  init.subject = "CN=Other CA";
  init.out_dir = dir_ / "other";
  ASSERT_TRUE(InitLocalCa(init).ok());
  std::string other = "openssl x509 -req -CA '" + (dir_ / "other" / "ca.pem").string() +
                      "' -CAkey '" + (dir_ / "other" / "ca.key").string() + "' -days 30";
  ExpectError(Config({"sh", "-c", other}), Code::kInvalidArgument, "was not issued by");
  // A CN other than the thing name.
  ExpectError(Config({"sh", "-c", SignCommand() + " -subj /CN=someone-else"}),
              Code::kInvalidArgument, "CN \"someone-else\" is not \"gw-1\"");
}

TEST_F(CommandCaTest, CertificateUnfitForAClientIsRefused) {
  testing::WriteText(dir_ / "ca.ext", "basicConstraints=critical,CA:TRUE\n");
  testing::WriteText(dir_ / "server.ext", "extendedKeyUsage=serverAuth\n");
  testing::WriteText(dir_ / "ku.ext", "keyUsage=critical,keyAgreement\n");
  ExpectError(
      Config({"sh", "-c", SignCommand() + " -extfile '" + (dir_ / "ca.ext").string() + "'"}),
      Code::kInvalidArgument, "issued a CA certificate");
  ExpectError(
      Config({"sh", "-c", SignCommand() + " -extfile '" + (dir_ / "server.ext").string() + "'"}),
      Code::kInvalidArgument, "extendedKeyUsage lacks clientAuth");
  ExpectError(
      Config({"sh", "-c", SignCommand() + " -extfile '" + (dir_ / "ku.ext").string() + "'"}),
      Code::kInvalidArgument, "keyUsage lacks digitalSignature");
}

TEST_F(CommandCaTest, BadCsrNeverReachesTheCommand) {
  std::string marker = (dir_ / "ran").string();
  auto ca = OpenLocalCa(Config({"sh", "-c", "touch '" + marker + "'; " + SignCommand()}));
  ASSERT_TRUE(ca.ok());
  auto bad = MakeCsrFiles(dir_.path(), "rsa", "RSA-1024", "/CN=gw-1");
  X509ReqPtr csr = LoadCsr(bad.csr);
  EXPECT_EQ((*ca)->Issue(csr.get(), "gw-1").status().code(), Code::kInvalidArgument);
  EXPECT_EQ((*ca)->Issue(csr_.get(), "bad name").status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST_F(CommandCaTest, EmptyCommandIsRefused) {
  EXPECT_EQ(OpenLocalCa(Config({})).status().code(), Code::kInvalidArgument);
}

TEST(RunChildTest, PassesStdinAndSurvivesACommandThatIgnoresIt) {
  std::string big(200000, 'x');
  auto echoed = internal::RunChild({"cat"}, big, std::chrono::seconds(10));
  ASSERT_TRUE(echoed.ok()) << echoed.status().ToString();
  EXPECT_EQ(echoed->out, big);
  // `true` never reads its stdin: no SIGPIPE for us.
  auto ignored = internal::RunChild({"true"}, big, std::chrono::seconds(10));
  ASSERT_TRUE(ignored.ok()) << ignored.status().ToString();
  EXPECT_TRUE(WIFEXITED(ignored->wait_status));
}

}  // namespace
}  // namespace ga::pki
