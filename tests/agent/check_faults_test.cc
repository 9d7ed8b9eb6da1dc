// `gateway-agent check` when time is the fault: a clock before the build, a
// clock past an identity's certificate, a local CA past its end (the command
// run under libfaketime, Debian's faketime); an outbox that is not a
// database, for `check` and for `run`; an endpoint that does not resolve.
// Real swtpm, mosquitto and iot-sim.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent_harness.h"
#include "gateway_agent/agent/clock.h"
#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/agent/health_checks.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kLibFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

// The environment that runs a command with its wall clock at `faketime`
// (libfaketime syntax: "@2020-01-01 00:00:00", "+400d"); the monotonic clock
// stays real.
std::map<std::string, std::string> FakeTime(const std::string& faketime) {
  return {{"LD_PRELOAD", kLibFaketime},
          {"FAKETIME", faketime},
          {"DONT_FAKE_MONOTONIC", "1"},
          {"ASAN_OPTIONS", "verify_asan_link_order=0"}};
}

// One check of `check --json`; null when absent.
nlohmann::json CheckNamed(const nlohmann::json& doc, const std::string& name) {
  if (!doc.is_object() || !doc.contains("checks")) return nullptr;
  for (const auto& c : doc["checks"]) {
    if (c["name"] == name) return c;
  }
  return nullptr;
}

// The line of the text report for check `name`, or "" when absent.
std::string LineOf(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    // "<mark> <name>: <detail>[ -> <fix>]"
    const auto space = line.find(' ');
    if (space != std::string::npos && line.compare(space + 1, name.size() + 1, name + ":") == 0) {
      return line;
    }
  }
  return "";
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

int Occurrences(const std::string& text, const std::string& part) {
  int n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

class CheckFaults : public ::testing::Test {
 protected:
  void Start(const HarnessOptions& options) {
    auto h = AgentHarness::Start(options);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    harness_ = std::move(*h);
  }

  void TearDown() override {
    if (!harness_) return;
    if (harness_->agent().running()) harness_->agent().Signal(SIGTERM, 20s);
    Status violations = harness_->NoViolations();
    EXPECT_TRUE(violations.ok()) << violations.ToString();
  }

  AgentHarness& h() { return *harness_; }

  // `check [--json]` with `env` (a fake clock): its exit code and output.
  CommandResult Check(bool json, const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> argv = {GA_AGENT_BINARY, "check"};
    if (json) argv.emplace_back("--json");
    argv.insert(argv.end(), {"--config", h().config().string()});
    return RunCommand(argv, 120s, env);
  }
  // `check --json` parsed; its exit code in *exit_code.
  nlohmann::json CheckJson(int* exit_code, const std::map<std::string, std::string>& env = {}) {
    CommandResult r = Check(/*json=*/true, env);
    *exit_code = r.exit_code;
    last_output_ = r.output;
    auto doc = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(doc.is_discarded()) << r.output;
    return doc;
  }

  std::string AgentLog() {
    std::ifstream in(h().dir() / "agent.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Enrolls the gateway and its sensors with the agent, then stops it.
  void EnrollAndStop() {
    ASSERT_TRUE(h().StartAgent().ok());
    std::string status;
    ASSERT_TRUE(h().WaitForState("ACTIVE", h().identities(), 120s, &status)) << status << "\n"
                                                                             << AgentLog();
    auto end = h().agent().Signal(SIGTERM, 30s);
    ASSERT_TRUE(end.has_value()) << AgentLog();
    ASSERT_TRUE(WIFEXITED(*end) && WEXITSTATUS(*end) == 0) << *end << "\n" << AgentLog();
  }

  std::unique_ptr<AgentHarness> harness_;
  std::string last_output_;
};

// A gateway booted without its time (no battery-backed clock, no NTP yet):
// the clock line is an error naming the build's date and how to set the time.
TEST_F(CheckFaults, ClockBeforeTheBuildIsAnErrorNamingTheBuildDate) {
  HarnessOptions o;
  o.sensors = 0;
  Start(o);
  const auto env = FakeTime("@2020-01-01 00:00:00");
  const std::string built = FormatUtc(BuildEpochMillis(), "%Y-%m-%d");
  ASSERT_GT(BuildEpochMillis(), 1577836800000LL) << "built before 2020?";

  int code = -1;
  auto doc = CheckJson(&code, env);
  EXPECT_EQ(code, 1) << last_output_;
  EXPECT_EQ(doc["ok"], false) << last_output_;
  auto clock = CheckNamed(doc, "clock");
  ASSERT_TRUE(clock.is_object()) << last_output_;
  EXPECT_EQ(clock["result"], "error") << last_output_;
  const std::string detail = clock["detail"];
  EXPECT_TRUE(Contains(detail, "2020-01-01")) << detail;
  EXPECT_TRUE(Contains(detail, "before this build (" + built)) << detail;
  EXPECT_TRUE(Contains(clock["fix"], "timedatectl")) << last_output_;

  CommandResult text = Check(/*json=*/false, env);
  EXPECT_EQ(text.exit_code, 1) << text.output;
  const std::string line = LineOf(text.output, "clock");
  EXPECT_EQ(line.rfind("\u2717 clock: ", 0), 0u) << text.output;
  EXPECT_TRUE(Contains(line, built)) << line;
  EXPECT_TRUE(Contains(line, "-> set the time: timedatectl set-ntp true")) << line;
}

// The clock past the end of the identities' certificates: the clock line
// names each certificate file, and each identity's line says it expired and
// what to do.
TEST_F(CheckFaults, ClockPastTheCertificatesSaysTheyExpired) {
  HarnessOptions o;
  o.sensors = 1;
  o.ca_days = 3650;  // the CA outlives the fake clock: only the identities expired
  o.validity = "365d";
  Start(o);
  EnrollAndStop();

  // A real clock first: nothing expired.
  int code = -1;
  auto doc = CheckJson(&code);
  ASSERT_EQ(CheckNamed(doc, "clock")["result"], "ok") << last_output_;
  ASSERT_EQ(CheckNamed(doc, "identity s1")["result"], "ok") << last_output_;

  const auto env = FakeTime("+400d");
  doc = CheckJson(&code, env);
  EXPECT_EQ(code, 1) << last_output_;
  EXPECT_EQ(doc["ok"], false) << last_output_;
  auto clock = CheckNamed(doc, "clock");
  ASSERT_TRUE(clock.is_object()) << last_output_;
  EXPECT_EQ(clock["result"], "error") << last_output_;
  for (const char* identity : {"gateway", "s1"}) {
    const std::string cert = (h().state_dir() / "identities" / identity / "cert.pem").string();
    EXPECT_TRUE(Contains(clock["detail"], "after the end of")) << last_output_;
    EXPECT_TRUE(Contains(clock["detail"], cert)) << cert << "\n" << last_output_;

    auto id = CheckNamed(doc, std::string("identity ") + identity);
    ASSERT_TRUE(id.is_object()) << last_output_;
    EXPECT_EQ(id["result"], "error") << last_output_;
    EXPECT_TRUE(Contains(id["detail"], "ACTIVE, certificate ")) << last_output_;
    EXPECT_TRUE(Contains(id["detail"], " expired ")) << last_output_;
    EXPECT_TRUE(Contains(id["fix"], "check the clock (timedatectl)")) << last_output_;
  }
  EXPECT_TRUE(Contains(clock["fix"], "these certificates expired")) << last_output_;
  EXPECT_TRUE(Contains(clock["fix"], "set the time (timedatectl)")) << last_output_;
  // Only the identities: the CA is still within its validity.
  EXPECT_EQ(CheckNamed(doc, "local ca")["result"], "ok") << last_output_;
  // If the clock is right: what to do about that sensor.
  const std::string s1_fix = CheckNamed(doc, "identity s1")["fix"];
  EXPECT_EQ(s1_fix.rfind("check the clock (timedatectl); if it is right, ", 0), 0u) << s1_fix;
  EXPECT_TRUE(Contains(s1_fix, " s1")) << s1_fix;

  CommandResult text = Check(/*json=*/false, env);
  EXPECT_EQ(text.exit_code, 1) << text.output;
  EXPECT_EQ(LineOf(text.output, "clock").rfind("\u2717 clock: ", 0), 0u) << text.output;
  const std::string s1 = LineOf(text.output, "identity s1");
  EXPECT_EQ(s1.rfind("\u2717 identity s1: ACTIVE, certificate ", 0), 0u) << text.output;
  EXPECT_TRUE(Contains(s1, " expired ")) << s1;
  EXPECT_TRUE(Contains(s1, "-> check the clock")) << s1;
}

// The local CA past its end: an error that says what to do (a new CA,
// registered with AWS IoT); the clock line names the CA certificate too.
TEST_F(CheckFaults, ExpiredLocalCaIsAnErrorSayingWhatToDo) {
  HarnessOptions o;
  o.sensors = 0;
  o.ca_days = 1;  // `ca init --days 1`
  o.validity = "12h";
  Start(o);
  const std::string ca_cert = (h().ca_dir() / "ca.pem").string();

  int code = -1;
  auto doc = CheckJson(&code);
  ASSERT_EQ(CheckNamed(doc, "local ca")["result"], "warning") << last_output_;  // 1 day left

  const auto env = FakeTime("+2d");
  doc = CheckJson(&code, env);
  EXPECT_EQ(code, 1) << last_output_;
  auto ca = CheckNamed(doc, "local ca");
  ASSERT_TRUE(ca.is_object()) << last_output_;
  EXPECT_EQ(ca["result"], "error") << last_output_;
  EXPECT_TRUE(Contains(ca["detail"], ca_cert + " expired ")) << last_output_;
  EXPECT_TRUE(Contains(ca["fix"], "an expired CA cannot issue")) << last_output_;
  EXPECT_TRUE(Contains(ca["fix"], "ca init")) << last_output_;
  EXPECT_TRUE(Contains(ca["fix"], "register it with AWS IoT")) << last_output_;
  auto clock = CheckNamed(doc, "clock");
  EXPECT_EQ(clock["result"], "error") << last_output_;
  EXPECT_TRUE(Contains(clock["detail"], ca_cert)) << last_output_;

  CommandResult text = Check(/*json=*/false, env);
  EXPECT_EQ(text.exit_code, 1) << text.output;
  const std::string line = LineOf(text.output, "local ca");
  EXPECT_EQ(line.rfind("\u2717 local ca: " + ca_cert + " expired ", 0), 0u) << text.output;
  EXPECT_TRUE(Contains(line, "-> check the clock; an expired CA cannot issue")) << line;
}

// An outbox.db that is not a database (junk written over it): `run` stops
// with an error naming the file, as one a restart cannot fix; `check` names
// it too. Moved aside, the agent starts with a new outbox.
TEST_F(CheckFaults, GarbageOutboxIsNamedByRunAndCheck) {
  HarnessOptions o;
  o.sensors = 0;
  Start(o);
  EnrollAndStop();
  const std::filesystem::path outbox = h().state_dir() / "outbox.db";
  ASSERT_TRUE(std::filesystem::exists(outbox));
  {
    std::ofstream junk(outbox, std::ios::binary | std::ios::trunc);
    for (int i = 0; i < 512; ++i) junk << "this is not an SQLite database\n";
  }
  for (const char* side : {"-wal", "-shm"}) {
    std::filesystem::remove(outbox.string() + side);
  }

  ASSERT_TRUE(h().StartAgent().ok());
  auto end = h().agent().Wait(60s);
  ASSERT_TRUE(end.has_value()) << AgentLog();
  ASSERT_TRUE(WIFEXITED(*end)) << *end << "\n" << AgentLog();
  // What a restart cannot fix: systemd does not restart it (RestartPreventExitStatus=2).
  EXPECT_EQ(WEXITSTATUS(*end), kExitNeedsOperator) << AgentLog();
  const std::string log = AgentLog();
  EXPECT_TRUE(Contains(log, outbox.string() + ": file is not a database")) << log;
  EXPECT_TRUE(Contains(log, "not retried")) << log;

  int code = -1;
  auto doc = CheckJson(&code);
  EXPECT_EQ(code, 1) << last_output_;
  auto line = CheckNamed(doc, "outbox");
  ASSERT_TRUE(line.is_object()) << last_output_;
  EXPECT_EQ(line["result"], "error") << last_output_;
  EXPECT_TRUE(Contains(line["detail"], outbox.string())) << last_output_;
  EXPECT_TRUE(Contains(line["detail"], "file is not a database")) << last_output_;
  EXPECT_TRUE(Contains(line["fix"], "move " + outbox.string() + " aside")) << last_output_;
  CommandResult text = Check(/*json=*/false);
  EXPECT_EQ(LineOf(text.output, "outbox").rfind("\u2717 outbox: ", 0), 0u) << text.output;

  // Moved aside: the agent starts (READY after the bridge made a new outbox).
  std::filesystem::rename(outbox, outbox.string() + ".bad");
  auto started = [&] { return Occurrences(AgentLog(), "gateway-agent running"); };
  const int before = started();
  ASSERT_TRUE(h().StartAgent().ok());
  EXPECT_TRUE(WaitUntil([&] { return started() > before; }, 60s)) << AgentLog();
  EXPECT_TRUE(h().agent().running()) << AgentLog();
  doc = CheckJson(&code);
  EXPECT_EQ(CheckNamed(doc, "outbox")["result"], "ok") << last_output_;
}

// An endpoint the gateway cannot resolve (a typo, no DNS): `aws dns` is an
// error naming it and how to find the right one; the TCP and TLS checks,
// which need its address, are not run.
TEST_F(CheckFaults, AnEndpointThatDoesNotResolveIsAnErrorNamingIt) {
  HarnessOptions o;
  o.sensors = 0;
  Start(o);
  const std::string endpoint = "no-such-endpoint.invalid";
  h().RewriteConfig([&](std::string& text) {
    const std::string key = "endpoint = \"";
    const size_t at = text.find(key) + key.size();
    text.replace(at, text.find('"', at) - at, endpoint);
  });
  int code = -1;
  auto doc = CheckJson(&code);
  EXPECT_EQ(code, 1) << last_output_;
  auto dns = CheckNamed(doc, "aws dns");
  ASSERT_TRUE(dns.is_object()) << last_output_;
  EXPECT_EQ(dns["result"], "error") << last_output_;
  EXPECT_TRUE(Contains(dns["detail"], "resolve " + endpoint)) << last_output_;
  EXPECT_TRUE(Contains(dns["fix"], "aws iot describe-endpoint")) << last_output_;
  EXPECT_TRUE(CheckNamed(doc, "aws tcp").is_null()) << last_output_;
  EXPECT_TRUE(CheckNamed(doc, "aws tls").is_null()) << last_output_;
}

}  // namespace
}  // namespace ga::testing
