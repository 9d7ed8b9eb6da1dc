// End to end: `gateway-agent run` against swtpm, iot-sim with the shipped
// JITR Lambda, and a file CA registered the seed's way.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <regex>
#include <thread>

#include "agent_harness.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;

std::string AgentLog(AgentHarness& h) {
  return RunCommand({"tail", "-n", "60", (h.dir() / "agent.log").string()}).output;
}

void ExpectNoViolations(AgentHarness& h) {
  auto count = h.sim().ViolationCount();
  ASSERT_TRUE(count.ok()) << count.status().ToString();
  EXPECT_EQ(*count, 0) << h.sim().Http("GET", "/_sim/violations").body;
}

// How many identities in a status JSON have made `min` or more attempts.
int IdentitiesWithAttempts(const std::string& status, int min) {
  std::smatch m;
  std::string rest = status;
  int identities = 0;
  std::regex attempts("\"attempts\":([0-9]+)");
  while (std::regex_search(rest, m, attempts)) {
    if (std::stoi(m[1]) >= min) ++identities;
    rest = m.suffix();
  }
  return identities;
}

// Stops the agent the way systemd does and checks it exits 0.
void StopAgent(AgentHarness& h) {
  auto status = h.agent().Signal(SIGTERM, 20s);
  ASSERT_TRUE(status.has_value()) << "the agent did not stop on SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << AgentLog(h);
}

TEST(Enrollment, GatewayAndTwentySensorsReachActive) {
  HarnessOptions o;
  o.sensors = 20;
  o.lambda_delay_ms = 100;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 21, 180s, &status)) << status << AgentLog(**h);
  StopAgent(**h);
  ExpectNoViolations(**h);

  // AWS now knows exactly one ACTIVE certificate per identity.
  auto certs = (*h)->sim().Aws({"list-certificates-by-ca", "--ca-certificate-id", (*h)->ca_id()});
  ASSERT_EQ(certs.exit_code, 0) << certs.output;
  EXPECT_EQ(JsonCount(certs.output, "status", "ACTIVE"), 21) << certs.output;
  auto thing = (*h)->sim().Aws({"describe-thing", "--thing-name", "gw-test:s7"});
  EXPECT_EQ(thing.exit_code, 0) << thing.output;

  // status (table) names every identity; certificates were issued by our CA.
  // The agent is stopped: that needs attention (exit 1), after the report.
  auto table = (*h)->Cli({"status"});
  EXPECT_EQ(table.exit_code, 1);
  EXPECT_NE(table.output.find("21/21 active"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("agent: not running"), std::string::npos) << table.output;
  auto verify = RunCommand({"openssl", "verify", "-CAfile", ((*h)->ca_dir() / "ca.pem").string(),
                            ((*h)->state_dir() / "identities" / "s7" / "cert.pem").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
}

TEST(Enrollment, WithoutTheLambdaIdentitiesWaitThenActivateWithoutARestart) {
  HarnessOptions o;
  o.sensors = 3;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto off = (*h)->sim().Http("PUT", "/_sim/lambda", R"({"enabled":false})");
  ASSERT_EQ(off.status, 200) << off.body;
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("REGISTERING", 4, 60s, &status)) << status;
  // Every identity tries more than once and is told "pending".
  EXPECT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) { return IdentitiesWithAttempts(json, 2) == 4; }, 60s, &status))
      << status;
  EXPECT_EQ(JsonCount(status, "state", "REGISTERING"), 4) << status;
  EXPECT_EQ(IdentitiesWithAttempts(status, 2), 4) << status;
  EXPECT_NE(status.find("without CONNACK"), std::string::npos) << status;
  auto pending = (*h)->sim().Aws({"list-certificates"});
  EXPECT_EQ(JsonCount(pending.output, "status", "PENDING_ACTIVATION"), 4) << pending.output;

  auto on = (*h)->sim().Http("PUT", "/_sim/lambda", R"({"enabled":true})");
  ASSERT_EQ(on.status, 200) << on.body;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 4, 60s, &status)) << status << AgentLog(**h);
  StopAgent(**h);
  ExpectNoViolations(**h);
}

TEST(Enrollment, AnUntrustedServerParksEveryIdentityWithTheReason) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // Trust our own CA instead of the endpoint's root: the server cannot verify.
  std::string wrong_root = ((*h)->ca_dir() / "ca.pem").string();
  (*h)->RewriteConfig([&](std::string& text) {
    text = std::regex_replace(text, std::regex("root_ca = \"[^\"]*\""),
                              "root_ca = \"" + wrong_root + "\"");
  });
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("PARKED", 2, 60s, &status)) << status << AgentLog(**h);
  EXPECT_NE(status.find("is not trusted"), std::string::npos) << status;
  EXPECT_NE(status.find("root_ca"), std::string::npos) << status;
  EXPECT_EQ(JsonField(status, "attempts"), "0") << status;
  StopAgent(**h);
}

TEST(Enrollment, AWrongEndpointIsRetriedAsANetworkFailureNotAsAnAttempt) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  int closed_port = FreePort();
  (*h)->RewriteConfig([&](std::string& text) {
    text = std::regex_replace(text, std::regex("\nport = [0-9]+"),
                              "\nport = " + std::to_string(closed_port));
  });
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("REGISTERING", 2, 60s, &status)) << status;
  // Both identities are refused three times or more (the log says each one).
  auto refused = [&](const std::string& name) {
    std::string log = ReadText((*h)->dir() / "agent.log");
    std::regex line("identity " + name + ": [^\\n]*Connection refused");
    return std::distance(std::sregex_iterator(log.begin(), log.end(), line),
                         std::sregex_iterator());
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline &&
         (refused("gateway") < 3 || refused("s1") < 3)) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(refused("gateway"), 3) << AgentLog(**h);
  EXPECT_GE(refused("s1"), 3) << AgentLog(**h);
  status = (*h)->StatusJson();
  EXPECT_NE(status.find("Connection refused"), std::string::npos) << status;
  EXPECT_EQ(JsonCount(status, "attempts", "0"), 0);  // attempts is a number, never a string
  EXPECT_TRUE(std::regex_search(status, std::regex("\"attempts\":0,"))) << status;
  EXPECT_FALSE(std::regex_search(status, std::regex("\"attempts\":[1-9]"))) << status;
  StopAgent(**h);
}

TEST(Enrollment, AnUnregisteredCaIsReportedAsLongPending) {
  HarnessOptions o;
  o.sensors = 1;
  o.extra_config = "pending_report_after = \"2s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // Deactivate the CA: AWS then registers nothing new (the seed's last step).
  auto off = (*h)->sim().Aws(
      {"update-ca-certificate", "--certificate-id", (*h)->ca_id(), "--new-status", "INACTIVE"});
  ASSERT_EQ(off.exit_code, 0) << off.output;
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    status = (*h)->StatusJson();
    if (JsonCount(status, "longPending", "true") +
                (status.find("\"longPending\":true") != std::string::npos) >=
            1 &&
        std::regex_search(status, std::regex("\"longPending\":true.*\"longPending\":true"))) {
      break;
    }
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(std::regex_search(status, std::regex("\"longPending\":true.*\"longPending\":true")))
      << status;
  auto table = (*h)->Cli({"status"});
  EXPECT_NE(table.output.find("LONG PENDING"), std::string::npos) << table.output;
  auto log = AgentLog(**h);
  EXPECT_NE(log.find("check that the CA is registered, ACTIVE"), std::string::npos) << log;
  StopAgent(**h);
}

// SIGKILL at every step of enrollment, then a restart: the identity resumes,
// ends ACTIVE with exactly one key and one certificate, and the TPM holds no
// transient object.
class CrashTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CrashTest, ResumesWithOneKeyAndOneCertificate) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent({{"GATEWAY_AGENT_CRASH_AT", GetParam() + ":s1"}}).ok());
  auto died = (*h)->agent().Wait(90s);
  ASSERT_TRUE(died.has_value()) << "the crash point was never reached\n" << AgentLog(**h);
  ASSERT_TRUE(WIFSIGNALED(*died) && WTERMSIG(*died) == SIGKILL) << AgentLog(**h);

  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 90s, &status)) << status << AgentLog(**h);
  StopAgent(**h);

  auto certs = (*h)->sim().Aws({"list-certificates-by-ca", "--ca-certificate-id", (*h)->ca_id()});
  EXPECT_EQ(JsonCount(certs.output, "status", "ACTIVE"), 3) << certs.output;
  EXPECT_EQ(std::regex_search(certs.output, std::regex("PENDING_ACTIVATION")), false)
      << certs.output;
  int keys = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator((*h)->state_dir() / "identities")) {
    if (e.path().filename() == "key.tss2") ++keys;
  }
  EXPECT_EQ(keys, 3);

  auto tpm = tpm::TpmContext::Open({(*h)->tpm().tcti(), kDefaultSrkHandle});
  ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
  auto handles = (*tpm)->TransientHandles();
  ASSERT_TRUE(handles.ok());
  EXPECT_TRUE(handles->empty());
}

INSTANTIATE_TEST_SUITE_P(EveryStep, CrashTest,
                         ::testing::Values("key-created", "key-saved", "keyed", "cert-issued",
                                           "cert-saved", "certified", "registering", "connected"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace ga::testing
