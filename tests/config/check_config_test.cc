// `gateway-agent check-config`, run as a user would.
#include <gtest/gtest.h>

#include <fstream>

#include "fixtures.h"

namespace ga {
namespace {

using testing::RunCommand;

TEST(CheckConfig, AcceptsTheSample) {
  auto r = RunCommand({GA_AGENT_BINARY, "check-config", "--config",
                       std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("valid"), std::string::npos) << r.output;
}

TEST(CheckConfig, PrintsTheEffectiveConfig) {
  auto r = RunCommand({GA_AGENT_BINARY, "--config",
                       std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml", "check-config",
                       "--print"});
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

TEST(CheckConfig, HelpListsTheCommands) {
  auto r = RunCommand({GA_AGENT_BINARY, "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("check-config"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ga
