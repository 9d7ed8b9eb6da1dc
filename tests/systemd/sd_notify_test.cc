// The agent under systemd, for real: the test plays the service manager. It
// owns the NOTIFY_SOCKET datagram socket, sets WATCHDOG_USEC, runs
// `gateway-agent run` against a real swtpm, mosquitto and iot-sim (the agent
// harness), and checks every notification the agent sends: READY=1 only once
// the agent is usable, STATUS= following enrollment, WATCHDOG=1 at half of
// WATCHDOG_USEC, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 and exit 0 on
// SIGTERM.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent_harness.h"
#include "notify_socket.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// WATCHDOG_USEC the tests give the agent: pings are expected every 200 ms.
constexpr std::chrono::milliseconds kWatchdog{400};

class SdNotifyTest : public ::testing::Test {
 protected:
  // The managed local broker: an open one would add a warning to STATUS=
  // (SdNotifyOpenBrokerTest).
  virtual bool ManagedLocalBroker() const { return true; }

  void SetUp() override {
    HarnessOptions options;
    options.sensors = 2;
    options.managed_local_broker = ManagedLocalBroker();
    auto harness = AgentHarness::Start(options);
    ASSERT_TRUE(harness.ok()) << harness.status().message();
    harness_ = std::move(*harness);
    notify_ = std::make_unique<NotifySocket>(harness_->dir() / "notify.sock");
    ASSERT_TRUE(notify_->bound()) << "cannot bind " << notify_->path();
  }

  void TearDown() override {
    if (!harness_) return;
    Status violations = harness_->NoViolations();
    EXPECT_TRUE(violations.ok()) << violations.ToString();
  }

  Status StartAgent() {
    return harness_->StartAgent(
        {{"NOTIFY_SOCKET", notify_->path().string()},
         {"WATCHDOG_USEC", std::to_string(std::chrono::microseconds(kWatchdog).count())}});
  }

  // Starts the agent and waits for READY=1.
  void StartAndWaitReady() {
    ASSERT_TRUE(StartAgent().ok());
    auto ready = notify_->WaitFor("READY=1", 60s);
    ASSERT_TRUE(ready) << "no READY=1; agent log:\n" << AgentLog();
  }

  // Waits until the agent's log holds `text`.
  bool WaitForLog(std::string_view text, std::chrono::milliseconds timeout) const {
    auto deadline = Clock::now() + timeout;
    while (AgentLog().find(text) == std::string::npos) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

  std::string AgentLog() const {
    std::ifstream in(harness_->dir() / "agent.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // The identity names `gateway-agent status --json` lists (removed ones are not listed).
  std::vector<std::string> ListedIdentities() {
    std::string json = harness_->StatusJson();
    auto status = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    std::vector<std::string> names;
    if (!status.is_object() || !status.contains("identities")) {
      ADD_FAILURE() << "status --json is not a status report: " << json;
      return names;
    }
    for (const auto& id : status["identities"]) names.push_back(id.value("name", ""));
    return names;
  }

  static bool Contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  }

  std::unique_ptr<AgentHarness> harness_;
  std::unique_ptr<NotifySocket> notify_;
};

TEST_F(SdNotifyTest, ReadyOnlyOnceStateTpmControlSocketAndBrokerAreUp) {
  auto started = Clock::now();
  ASSERT_TRUE(StartAgent().ok());
  auto ready = notify_->WaitFor("READY=1", 60s);
  ASSERT_TRUE(ready) << AgentLog();

  // At READY=1 everything a client needs exists: the state database, the
  // control socket answering, the SRK in the TPM.
  EXPECT_TRUE(std::filesystem::exists(harness_->state_dir() / "state.db"));
  EXPECT_TRUE(std::filesystem::exists(harness_->dir() / "run" / "control.sock"));
  auto list = harness_->Cli({"sensor", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_TRUE(ready->Get("STATUS").has_value()) << ready->text;
  EXPECT_LT(ready->at - started, 30s);

  // Every datagram came from the main process (NotifyAccess=main), and
  // READY=1 was sent exactly once.
  int readies = 0;
  for (const auto& n : notify_->history()) {
    EXPECT_EQ(n.sender, harness_->agent().pid()) << n.text;
    if (n.Has("READY=1")) ++readies;
  }
  EXPECT_EQ(readies, 1);
}

TEST_F(SdNotifyTest, NoReadyWhenTheTpmCannotBeOpened) {
  harness_->tpm().process().Stop();
  ASSERT_TRUE(StartAgent().ok());
  auto status = harness_->agent().Wait(30s);
  ASSERT_TRUE(status) << "the agent kept running without its TPM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  bool failed_status = false;
  while (notify_->Receive(200ms)) {
  }
  for (const auto& n : notify_->history()) {
    EXPECT_FALSE(n.Has("READY=1")) << n.text;
    if (auto s = n.Get("STATUS"); s && s->rfind("failed: ", 0) == 0) failed_status = true;
  }
  EXPECT_TRUE(failed_status) << "no STATUS=failed: ... before exiting";
}

TEST_F(SdNotifyTest, StatusFollowsEnrollmentUntilEveryIdentityIsActive) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  const std::string first = *notify_->history().back().Get("STATUS");
  // The gateway and two sensors end ACTIVE; STATUS= says so without a restart.
  auto done = notify_->WaitFor("STATUS=3/3 active", 90s);
  ASSERT_TRUE(done) << "last status: "
                    << (notify_->history().empty() ? "" : notify_->history().back().text)
                    << "\nagent log:\n"
                    << AgentLog();
  EXPECT_NE(first, "3/3 active");
  // STATUS= is sent on change only, not on every poll.
  int sent = 0;
  for (const auto& n : notify_->history()) {
    if (n.Get("STATUS")) ++sent;
  }
  EXPECT_LT(sent, 30);
}

class SdNotifyOpenBrokerTest : public SdNotifyTest {
 protected:
  bool ManagedLocalBroker() const override { return false; }
};

// A local broker that lets anonymous clients in is a warning in STATUS= (what
// systemctl status prints): everything flows, but any LAN client could speak
// for any sensor.
TEST_F(SdNotifyOpenBrokerTest, StatusWarnsThatTheLocalBrokerIsOpen) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  auto warned = notify_->WaitFor("STATUS=3/3 active; warning: the local broker ", 90s,
                                 /*prefix=*/true);
  ASSERT_TRUE(warned) << "last status: "
                      << (notify_->history().empty() ? "" : notify_->history().back().text)
                      << "\nagent log:\n"
                      << AgentLog();
  EXPECT_NE(warned->text.find("lets anonymous clients in"), std::string::npos) << warned->text;
}

// The TPM going away while the agent runs shows in STATUS= (what systemctl
// status prints) within seconds, and clears once it is back.
TEST_F(SdNotifyTest, StatusNamesTheTpmWhileItIsAway) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(notify_->WaitFor("STATUS=3/3 active", 90s)) << AgentLog();
  harness_->tpm().Kill();
  auto away = notify_->WaitFor(
      "STATUS=3/3 active; needs attention: TPM unreachable: " + harness_->tpm().tcti(), 30s,
      /*prefix=*/true);
  ASSERT_TRUE(away) << "last status: " << notify_->history().back().text << "\n" << AgentLog();
  ASSERT_TRUE(harness_->tpm().Relaunch().ok());
  EXPECT_TRUE(notify_->WaitFor("STATUS=3/3 active", 30s)) << AgentLog();
  EXPECT_TRUE(WaitForLog("resolved: TPM unreachable", 5s)) << AgentLog();
}

TEST_F(SdNotifyTest, WatchdogPingsAtHalfOfWatchdogUsec) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  std::vector<Clock::time_point> pings;
  auto until = Clock::now() + 3s;
  while (Clock::now() < until) {
    auto n = notify_->Receive(500ms);
    if (n && n->Has("WATCHDOG=1")) pings.push_back(n->at);
  }
  ASSERT_GE(pings.size(), 10u) << "expected a ping every " << (kWatchdog / 2).count() << " ms";
  EXPECT_LE(pings.size(), 17u) << "pinging much faster than half of WATCHDOG_USEC";
  for (size_t i = 1; i < pings.size(); ++i) {
    auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(pings[i] - pings[i - 1]);
    // Never late enough for systemd to kill the service.
    EXPECT_LT(gap, kWatchdog) << "ping " << i;
  }
}

TEST_F(SdNotifyTest, ReloadAppliesSensorChangesAndKeepsRunTimeSensors) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  auto added = harness_->Cli({"sensor", "add", "walkin"});
  ASSERT_EQ(added.exit_code, 0) << added.output;

  // s2 leaves the file, s3 joins it; the [aws] pacing changes, which needs a restart.
  harness_->RewriteConfig([](std::string& text) {
    text.replace(text.find("[[sensor]]\nid = \"s2\"\n"), 21, "[[sensor]]\nid = \"s3\"\n");
    text.replace(text.find("connect_rate = 100.0"), 20, "connect_rate = 50.0");
  });
  ASSERT_EQ(kill(harness_->agent().pid(), SIGHUP), 0);
  auto reloading = notify_->WaitFor("RELOADING=1", 10s);
  ASSERT_TRUE(reloading) << AgentLog();
  EXPECT_TRUE(reloading->Get("MONOTONIC_USEC").has_value()) << reloading->text;
  auto ready = notify_->WaitFor("READY=1", 30s);
  ASSERT_TRUE(ready) << AgentLog();

  auto names = ListedIdentities();
  EXPECT_TRUE(Contains(names, "gateway"));
  EXPECT_TRUE(Contains(names, "s1"));
  EXPECT_FALSE(Contains(names, "s2")) << harness_->StatusJson();
  EXPECT_TRUE(Contains(names, "s3")) << harness_->StatusJson();
  EXPECT_TRUE(Contains(names, "walkin")) << "a sensor added at run time must survive a reload";
  std::string log = AgentLog();
  EXPECT_NE(log.find("[aws] take effect only after a restart"), std::string::npos) << log;
  EXPECT_TRUE(harness_->agent().running());
}

TEST_F(SdNotifyTest, AReloadAskedForBeforeReadyIsAppliedOnceReady) {
  harness_->broker().process().Stop();  // no local broker: the agent cannot be ready
  ASSERT_TRUE(StartAgent().ok());
  // From this status on the agent takes SIGHUP as a reload to apply later.
  ASSERT_TRUE(notify_->WaitFor("STATUS=waiting for the local broker", 30s, /*prefix=*/true))
      << AgentLog();
  harness_->RewriteConfig([](std::string& text) { text += "[[sensor]]\nid = \"late\"\n"; });
  ASSERT_EQ(kill(harness_->agent().pid(), SIGHUP), 0);
  ASSERT_TRUE(WaitForLog("reload asked for before the service is ready", 10s)) << AgentLog();
  EXPECT_FALSE(Contains(ListedIdentities(), "late"));
  ASSERT_TRUE(harness_->broker().Restart().ok());
  ASSERT_TRUE(notify_->WaitFor("READY=1", 60s)) << AgentLog();
  // The reload follows READY: RELOADING=1, then READY=1 again, with the new sensor.
  ASSERT_TRUE(notify_->WaitFor("RELOADING=1", 10s)) << AgentLog();
  ASSERT_TRUE(notify_->WaitFor("READY=1", 30s)) << AgentLog();
  EXPECT_TRUE(Contains(ListedIdentities(), "late")) << harness_->StatusJson();
}

TEST_F(SdNotifyTest, ReloadRefusesAnInvalidConfigAndKeepsTheRunningOne) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  std::string valid;
  harness_->RewriteConfig([&](std::string& text) {
    valid = text;
    // Two problems, and s1 dropped: none of it may take effect.
    text.replace(text.find("[[sensor]]\nid = \"s1\"\n"), 21, "");
    text += "[bridge]\npublish_rate = 1000\nbogus_key = 1\n";
  });
  ASSERT_EQ(kill(harness_->agent().pid(), SIGHUP), 0);
  ASSERT_TRUE(notify_->WaitFor("RELOADING=1", 10s)) << AgentLog();
  ASSERT_TRUE(notify_->WaitFor("READY=1", 30s)) << AgentLog();

  std::string log = AgentLog();
  EXPECT_NE(log.find("reload refused"), std::string::npos) << log;
  EXPECT_NE(log.find("bridge.publish_rate"), std::string::npos) << log;
  EXPECT_NE(log.find("bridge.bogus_key"), std::string::npos) << log;
  EXPECT_TRUE(harness_->agent().running());
  // The CLI refuses the invalid file too: read the state through a valid copy.
  std::filesystem::path copy = harness_->dir() / "valid.toml";
  std::ofstream(copy) << valid;
  auto status = RunCommand({GA_AGENT_BINARY, "status", "--json", "--config", copy.string()});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("{\"name\":\"s1\""), std::string::npos)
      << "s1 was removed by a refused reload: " << status.output;

  // Fixed, the same file reloads and applies.
  harness_->RewriteConfig([&](std::string& text) {
    text = valid;
    text.replace(text.find("[[sensor]]\nid = \"s1\"\n"), 21, "");
  });
  ASSERT_EQ(kill(harness_->agent().pid(), SIGHUP), 0);
  ASSERT_TRUE(notify_->WaitFor("RELOADING=1", 10s)) << AgentLog();
  ASSERT_TRUE(notify_->WaitFor("READY=1", 30s)) << AgentLog();
  EXPECT_FALSE(Contains(ListedIdentities(), "s1")) << harness_->StatusJson();
}

TEST_F(SdNotifyTest, SigtermSendsStoppingAndExitsZero) {
  StartAndWaitReady();
  ASSERT_FALSE(HasFatalFailure());
  // Stop while enrollment is under way: the steps in progress finish first.
  auto sent = Clock::now();
  auto status = harness_->agent().Signal(SIGTERM, 20s);
  ASSERT_TRUE(status) << "no exit within 20 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status)) << *status;
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  auto stopping = notify_->WaitFor("STOPPING=1", 2s);
  ASSERT_TRUE(stopping) << AgentLog();
  EXPECT_LT(stopping->at - sent, 20s);
  // What was committed is readable, and a restart resumes from it.
  EXPECT_FALSE(harness_->StatusJson().empty());
  ASSERT_TRUE(StartAgent().ok());
  EXPECT_TRUE(notify_->WaitFor("READY=1", 60s)) << AgentLog();
}

}  // namespace
}  // namespace ga::testing
