// `gateway-agent check-config`, run as a user would.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "fixtures.h"
#include "gateway_agent/config.h"

namespace ga {
namespace {

using testing::RunCommand;

TEST(CheckConfig, AcceptsTheSample) {
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--no-files", "--config",
                       std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("valid"), std::string::npos) << r.output;
}

// Without --no-files the CA files are checked as run checks them: the
// sample names a CA that `gateway-agent ca init` has not made here.
TEST(CheckConfig, RefusesTheSampleUntilItsCaExists) {
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config",
                       std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("run would refuse to start"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/etc/gateway-agent/"), std::string::npos) << r.output;
}

TEST(CheckConfig, PrintsTheEffectiveConfig) {
  auto r = RunCommand({GA_AGENT_BINARY, "--config",
                       std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml", "check-config",
                       "--print", "--no-files"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[bridge]\ncloud_topic_template = \"dt/{thing}/{rest}\""),
            std::string::npos)
      << r.output;
}

TEST(CheckConfig, RejectsTypoWrongTypeAndOutOfRangeNamingEachLine) {
  testing::TempDir dir;
  auto path = dir / "agent.toml";
  std::ofstream(path) << "[agent]\n"
                         "thing_name = \"gw-1\"\n"
                         "[aws]\n"
                         "endpoint = \"x-ats.iot.eu-west-1.amazonaws.com\"\n"
                         "prot = 8883\n"
                         "connect_rate = \"fast\"\n"
                         "[bridge]\n"
                         "publish_rate = 1000\n";
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("agent.toml:5:1: aws.prot: unknown key; did you mean \"port\"?"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("agent.toml:6:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("aws.connect_rate: expected a number, found a string"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("agent.toml:8:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bridge.publish_rate: must be between 1 and 100"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("3 problems"), std::string::npos) << r.output;
}

TEST(CheckConfig, UnreadableFileExitsOne) {
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", "/nonexistent/agent.toml"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/agent.toml"), std::string::npos) << r.output;
}

// /dev/zero, a FIFO nobody writes to and an oversized file are refused at
// once, naming the file, instead of being read forever.
TEST(CheckConfig, RefusesWhatIsNotABoundedRegularFile) {
  testing::TempDir dir;
  auto fifo = dir / "fifo.toml";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto big = dir / "big.toml";
  std::ofstream(big) << "# " << std::string(kMaxConfigBytes + 10, 'x') << "\n";
  for (const std::string& path : {std::string("/dev/zero"), fifo.string(), big.string()}) {
    auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path});
    EXPECT_NE(r.exit_code, 0) << path << ": " << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
  }
}

// `run` and `check-config` refuse the same files with the same messages.
TEST(CheckConfig, RunRefusesWhatCheckConfigRefusesWithTheSameMessage) {
  testing::TempDir dir;
  const std::vector<std::string> extras = {
      "[local]\ningest_filter = \"sensors/#\"\n",
      "[local]\ningest_filter = \"#/+/x\"\n",
      "[bridge]\ncloud_topic_template = \"dt/{thing}/{rest}/#\"\n",
      "[bridge]\ncloud_topic_template = \"$aws/x/{thing}\"\n",
      "[[sensor]]\nid = \"gateway\"\n",
  };
  for (size_t i = 0; i < extras.size(); ++i) {
    auto path = dir / ("bad-" + std::to_string(i) + ".toml");
    std::ofstream(path) << "[agent]\nthing_name = \"gw-1\"\nstate_dir = \""
                        << (dir / "state").string()
                        << "\"\n[aws]\nendpoint = \"x-ats.iot.eu-west-1.amazonaws.com\"\n"
                        << extras[i];
    auto check = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
    auto run = RunCommand({GA_AGENT_BINARY, "run", "--config", path.string()});
    EXPECT_EQ(check.exit_code, 2) << check.output;
    EXPECT_EQ(run.exit_code, 2) << run.output;
    // The problem lines (file: key: message) appear in both outputs.
    std::string first = check.output.substr(0, check.output.find('\n'));
    EXPECT_NE(first.find(path.string()), std::string::npos) << check.output;
    EXPECT_NE(run.output.find(first), std::string::npos) << first << "\n" << run.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "state"));
  }
}

// A config that is valid but for [local] password_file = `password_file`.
std::filesystem::path ConfigWithPasswordFile(const testing::TempDir& dir,
                                             const std::filesystem::path& password_file) {
  auto path = dir / "agent.toml";
  std::ofstream(path) << "[agent]\n"
                         "thing_name = \"gw-1\"\n"
                         "state_dir = \""
                      << (dir / "state").string()
                      << "\"\n"
                         "[aws]\n"
                         "endpoint = \"x-ats.iot.eu-west-1.amazonaws.com\"\n"
                         "[local]\n"
                         "password_file = \""
                      << password_file.string() << "\"\n";
  return path;
}

TEST(CheckConfig, AMissingPasswordFileIsAProblemNamingTheKey) {
  testing::TempDir dir;
  auto missing = dir / "no-such-password";
  auto path = ConfigWithPasswordFile(dir, missing);
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  std::string line = "agent.toml: local.password_file: cannot be read: open " + missing.string() +
                     ": No such file or directory";
  EXPECT_NE(r.output.find(line), std::string::npos) << r.output;

  // `run` refuses to start with the same message, before touching anything.
  auto run = RunCommand({GA_AGENT_BINARY, "run", "--config", path.string()});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find(line), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "state"));

  // Once the file is there, the configuration is valid.
  std::ofstream(missing) << "secret\n";
  auto ok = RunCommand({GA_AGENT_BINARY, "check-config", "--no-files", "--config", path.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

// A CA key that group or others can read: check-config refuses it with the
// message run gives, and both exit 2 (a restart cannot fix it).
TEST(CheckConfig, ACaKeyOthersCanReadIsRefusedByCheckConfigAsByRun) {
  testing::TempDir dir;
  auto ca_dir = dir / "ca";
  auto init = RunCommand(
      {GA_AGENT_BINARY, "ca", "init", "--subject", "CN=Test CA", "--out-dir", ca_dir.string()});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  auto path = dir / "agent.toml";
  std::ofstream(path)
      << "[agent]\nthing_name = \"gw-1\"\nstate_dir = \"" << (dir / "state").string()
      << "\"\nruntime_dir = \"" << (dir / "run").string()
      << "\"\n[aws]\nendpoint = \"x-ats.iot.eu-west-1.amazonaws.com\"\n[ca]\ncert = \""
      << (ca_dir / "ca.pem").string() << "\"\nkey = \"" << (ca_dir / "ca.key").string() << "\"\n";
  auto ok = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
  ASSERT_EQ(ok.exit_code, 0) << ok.output;

  ASSERT_EQ(chmod((ca_dir / "ca.key").c_str(), 0644), 0);
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  const std::string why = "is accessible by group or others (mode 0644); run chmod 600";
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  auto run = RunCommand({GA_AGENT_BINARY, "run", "--config", path.string()});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find(why), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "state")) << "run touched nothing before refusing";
}

TEST(CheckConfig, AnUnreadablePasswordFileIsAProblemNamingTheKey) {
  testing::TempDir dir;
  std::filesystem::create_directory(dir / "a-directory");
  auto path = ConfigWithPasswordFile(dir, dir / "a-directory");
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config", path.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("local.password_file: cannot be read: read " +
                          (dir / "a-directory").string() + ": Is a directory"),
            std::string::npos)
      << r.output;
}

// The proxy's password file is a secret: others may not read it, and run
// refuses it as check-config does.
TEST(CheckConfig, AProxyPasswordFileOthersCanReadIsRefusedByCheckConfigAsByRun) {
  testing::TempDir dir;
  auto secret = dir / "proxy.pass";
  std::ofstream(secret) << "pr0xy\n";
  ASSERT_EQ(chmod(secret.c_str(), 0644), 0);
  auto path = dir / "agent.toml";
  std::ofstream(path) << "[agent]\nthing_name = \"gw-1\"\nstate_dir = \""
                      << (dir / "state").string()
                      << "\"\n[aws]\nendpoint = \"x-ats.iot.eu-west-1.amazonaws.com\"\n"
                      << "proxy = \"http://gw@proxy.corp:3128\"\nproxy_password_file = \""
                      << secret.string() << "\"\n";
  const std::string why = "aws.proxy_password_file: proxy password file " + secret.string() +
                          " is accessible by group or others (mode 0644); run chmod 600 " +
                          secret.string();
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--no-files", "--config", path.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  auto run = RunCommand({GA_AGENT_BINARY, "run", "--config", path.string()});
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find(why), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "state")) << "run touched nothing before refusing";

  ASSERT_EQ(chmod(secret.c_str(), 0600), 0);
  auto ok = RunCommand({GA_AGENT_BINARY, "check-config", "--no-files", "--config", path.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

TEST(CheckConfig, HelpListsTheCommands) {
  auto r = RunCommand({GA_AGENT_BINARY, "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("check-config"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ga
