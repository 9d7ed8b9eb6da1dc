#include "gateway_agent/agent/status_report.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "fixtures.h"

namespace ga {
namespace {

TEST(StatusJson, KeepsItsShapeAndEscapesText) {
  Identity id;
  id.name = "s1";
  id.kind = IdentityKind::kSensor;
  id.thing = "gw-1-s1";
  id.state = EnrollmentState::kRegistering;
  id.attempts = 3;
  id.last_error = "closed \"without\" CONNACK\n\x01";
  id.long_pending_reported = true;
  id.registering_since = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
  BridgeStats bridge;
  bridge["s1"].messages = 2;
  bridge["s1"].bytes = 40;
  bridge::UnknownSenderReport unknown{3, {{"nobody", 3, 1'767'225'600'000}}};
  std::string json = StatusJson({id}, 1'767'225'600'000, bridge, unknown);
  EXPECT_EQ(json,
            "{\"health\":{},\"identities\":[{\"name\":\"s1\",\"kind\":\"sensor\","
            "\"thing\":\"gw-1-s1\",\"state\":\"REGISTERING\",\"problem\":\"\",\"attempts\":3,"
            "\"nextAttempt\":\"\","
            "\"lastError\":\"closed \\\"without\\\" CONNACK\\n\\u0001\",\"parkReason\":\"\","
            "\"longPending\":true,\"certificateId\":\"\",\"certificateExpires\":\"\","
            "\"renewal\":{\"step\":\"none\",\"renewals\":0,\"renewsAt\":\"\","
            "\"nextCertificateId\":\"\",\"retiringCertificateId\":\"\",\"error\":\"\"},"
            "\"keyFile\":\"\",\"chainFile\":\"\",\"registeringSince\":\"2026-01-01T00:00:00Z\","
            "\"activeSince\":\"\",\"connected\":false,"
            "\"outbox\":{\"messages\":2,\"bytes\":40,\"oldestAgeSeconds\":0},"
            "\"sent\":0,\"rejected\":0,\"dropped\":0}],"
            "\"counts\":{\"NEW\":0,\"KEYED\":0,\"CERTIFIED\":0,\"REGISTERING\":1,\"ACTIVE\":0,"
            "\"PARKED\":0,\"REMOVED\":0,\"SHARED\":0,\"total\":1},"
            "\"unknownSensors\":{\"dropped\":3,\"recent\":[{\"id\":\"nobody\",\"messages\":3,"
            "\"lastSeen\":\"2026-01-01T00:00:00Z\"}]}}\n");
}

TEST(StatusJson, NoIdentities) {
  EXPECT_EQ(StatusJson({}, 0),
            "{\"health\":{},\"identities\":[],\"counts\":{\"NEW\":0,\"KEYED\":0,\"CERTIFIED\":0,"
            "\"REGISTERING\":0,\"ACTIVE\":0,\"PARKED\":0,\"REMOVED\":0,\"SHARED\":0,"
            "\"total\":0},\"unknownSensors\":{\"dropped\":0,\"recent\":[]}}\n");
}

TEST(StatusJson, TextThatIsNotUtf8IsReplacedNotFatal) {
  Identity id;
  id.name = "s1";
  id.last_error = "alert \xff\xfe";
  std::string json = StatusJson({id}, 0);
  EXPECT_NE(json.find("\"lastError\":\"alert \xEF\xBF\xBD"), std::string::npos) << json;
}

// An identity is never a clean ACTIVE while it cannot work: the running
// agent's report names what stops it, an expired certificate shows without
// the agent, and an agent that is not running is itself a problem.
TEST(StatusHealth, AnActiveIdentityThatCannotWorkIsNeverClean) {
  const Millis now = 1'767'225'600'000;
  Identity ok, broken, expired;
  ok.name = "gateway";
  ok.kind = IdentityKind::kGateway;
  ok.state = EnrollmentState::kActive;
  ok.cert_not_after = now + 86'400'000;
  broken = ok;
  broken.name = "s1";
  broken.kind = IdentityKind::kSensor;
  expired = broken;
  expired.name = "s2";
  expired.cert_id = "0123456789abcdef";
  expired.cert_not_after = now - 1000;

  LiveHealth live;
  live.agent = LiveHealth::Agent::kRunning;
  live.report.pid = 42;
  live.report.identities["s1"] = "cannot connect to localhost: handshake failure";
  EXPECT_EQ(IdentityProblem(ok, now, &live), "");
  EXPECT_EQ(IdentityProblem(broken, now, &live), "cannot connect to localhost: handshake failure");
  EXPECT_NE(IdentityProblem(expired, now, nullptr).find("expired on"), std::string::npos);
  EXPECT_TRUE(NeedsAttention({ok, broken}, now, live));

  std::string json = StatusJson({ok, broken}, now, {}, {}, &live);
  EXPECT_NE(json.find("\"health\":{\"ok\":false,\"agent\":\"running\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"state\":\"ACTIVE\",\"problem\":\"cannot connect"), std::string::npos)
      << json;
  std::string table = StatusTable({ok, broken}, now, {}, {}, &live);
  EXPECT_NE(table.find("PROBLEM: cannot connect to localhost"), std::string::npos) << table;
  EXPECT_NE(table.find("agent: running (pid 42)"), std::string::npos) << table;

  live.report.identities.clear();
  EXPECT_FALSE(NeedsAttention({ok}, now, live));
  EXPECT_TRUE(NeedsAttention({ok, expired}, now, live));
  live.report.problems.push_back("TPM unreachable: swtpm:port=1: connection refused");
  EXPECT_TRUE(NeedsAttention({ok}, now, live));
  table = StatusTable({ok}, now, {}, {}, &live);
  EXPECT_NE(table.find("needs attention: TPM unreachable"), std::string::npos) << table;

  LiveHealth stopped;
  stopped.agent_note = "the agent is not running (no /run/gateway-agent/health.json)";
  EXPECT_TRUE(NeedsAttention({ok}, now, stopped));
  EXPECT_EQ(IdentityProblem(broken, now, &stopped), "");
}

TEST(StatusHealth, TheReportIsJudgedByItsAgeAndItsWriter) {
  testing::TempDir dir;
  auto path = dir / "health.json";
  const Millis now = 1'767'225'600'000;
  EXPECT_EQ(JudgeHealth(path, now).agent, LiveHealth::Agent::kNotRunning);

  AgentHealth h;
  h.pid = getpid();
  h.updated = now - 1000;
  h.problems = {"TPM unreachable: x"};
  h.identities["s1"] = "why \"quoted\"\n";
  ASSERT_TRUE(WriteHealth(path, h).ok());
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  LiveHealth live = JudgeHealth(path, now);
  ASSERT_EQ(live.agent, LiveHealth::Agent::kRunning) << live.agent_note;
  EXPECT_TRUE(live.report.SameAs(h));

  // Older than kHealthStale: the agent is stuck or gone.
  live = JudgeHealth(path, now + 60'000);
  EXPECT_EQ(live.agent, LiveHealth::Agent::kNotReporting);
  EXPECT_NE(live.agent_note.find("has not reported for"), std::string::npos) << live.agent_note;

  // Written by a process that no longer exists.
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  h.pid = child;
  ASSERT_TRUE(WriteHealth(path, h).ok());
  EXPECT_EQ(JudgeHealth(path, now).agent, LiveHealth::Agent::kNotRunning);

  // A torn or foreign file is reported, not trusted.
  std::ofstream(path) << "{\"pid\":\"x\"}";
  live = JudgeHealth(path, now);
  EXPECT_EQ(live.agent, LiveHealth::Agent::kNotReporting);
  EXPECT_NE(live.agent_note.find(path.string()), std::string::npos) << live.agent_note;
}

}  // namespace
}  // namespace ga
