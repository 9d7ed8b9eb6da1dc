// The agent left alone through the faults of a gateway's life: with the
// gateway and two sensors bridging numbered messages, in turn the TPM goes
// away and comes back, the state disk fills and is freed, the local broker
// and the cloud stop and start, a key is deleted and a certificate
// overwritten. After each, `status` names the problem within seconds, then
// the agent recovers without a restart; every numbered message arrives
// (duplicates allowed, counted) and AWS limits hold. The state disk turning
// read-only and writable again. Through a TcpRelay: a half-open link, and a
// long one (300 ms RTT).
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "bridge_harness.h"
#include "tcp_relay.h"
#ifdef GA_HAVE_FUSE3
#include "switchable_disk.h"
#endif

namespace ga::testing {
namespace {

// A small tmpfs on the agent's state directory, unmounted when done.
class SmallDisk {
 public:
  explicit SmallDisk(const std::filesystem::path& at) : at_(at) {
    std::filesystem::create_directories(at);
    mounted_ = mount("tmpfs", at.c_str(), "tmpfs", 0, "size=16m,mode=0700") == 0;
  }
  ~SmallDisk() {
    if (mounted_) umount2(at_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

  // Writes a file until the disk is full.
  void Fill() {
    std::ofstream f(at_ / "filler", std::ios::binary);
    std::string chunk(64 * 1024, 'x');
    while (f.write(chunk.data(), static_cast<std::streamsize>(chunk.size())) && f.flush()) {
    }
  }
  void Free() { std::filesystem::remove(at_ / "filler"); }

 private:
  std::filesystem::path at_;
  bool mounted_ = false;
};

class SelfHealing : public ::testing::Test {
 protected:
  void SetUp() override {
    StartHarness();
    if (HasFatalFailure()) return;
    disk_ = std::make_unique<SmallDisk>(h_->state_dir());
    StartAgentAndWait();
  }
  // The gateway and two sensors, their agent not started yet.
  void StartHarness() {
    HarnessOptions o;
    o.sensors = 2;
    auto h = AgentHarness::Start(o);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    h_ = std::move(*h);
  }
  void StartAgentAndWait() {
    ASSERT_TRUE(h_->StartAgent().ok());
    ASSERT_TRUE(h_->WaitForState("ACTIVE", 3, 90s)) << Log(*h_);
  }
  void TearDown() override {
    if (h_ && h_->agent().running()) (void)h_->agent().Signal(SIGTERM, 20s);
    disk_.reset();
  }

  // Numbered messages n in [from, to) for s1 and s2, accepted by the broker.
  void Publish(int from, int to) {
    LocalClient sensors(h_->broker().port(), "numbered-" + std::to_string(from));
    ASSERT_TRUE(sensors.connected());
    for (int n = from; n < to; ++n) {
      for (const char* s : {"s1", "s2"}) {
        ASSERT_TRUE(sensors.Publish(std::string("sensors/") + s + "/seq", std::to_string(n)));
      }
    }
    ASSERT_TRUE(sensors.WaitAcked(2 * (to - from), 20s));
    published_ = to;
  }

  // Collects what the cloud got; true once every message published so far
  // arrived. iot-sim forgets its publish log on a restart: collect first.
  bool AllArrived(std::chrono::seconds timeout) {
    return WaitUntil(
        [&] {
          for (const auto& m : CloudPublishes(h_->sim())) {
            if (m.topic.rfind("dt/", 0) != 0) continue;
            for (int n = 0; n < published_; ++n) {
              if (m.payload_b64 == Base64(std::to_string(n))) {
                seen_[m.client_id].insert(n);
                break;
              }
            }
          }
          for (const char* thing : {"gw-test:s1", "gw-test:s2"}) {
            if (seen_[thing].size() != static_cast<size_t>(published_)) return false;
          }
          return true;
        },
        timeout);
  }

  // How many numbered messages the cloud got more than once (a message
  // resent after a lost acknowledgement), over all of them.
  int Duplicates() {
    std::map<std::string, int> number_of;
    for (int n = 0; n < published_; ++n) number_of[Base64(std::to_string(n))] = n;
    std::map<std::pair<std::string, int>, int> times;
    for (const auto& m : CloudPublishes(h_->sim())) {
      auto n = number_of.find(m.payload_b64);
      if (m.topic.rfind("dt/", 0) == 0 && n != number_of.end()) ++times[{m.client_id, n->second}];
    }
    int extra = 0;
    for (const auto& [message, count] : times) extra += count - 1;
    return extra;
  }

  nlohmann::json Status() { return Parse(h_->Cli({"status", "--json"}).output); }

  // Waits until `status --json` satisfies `done`; returns the seconds it took
  // (-1 on timeout).
  double WaitForStatus(const std::function<bool(const nlohmann::json&)>& done,
                       std::chrono::seconds timeout) {
    auto start = std::chrono::steady_clock::now();
    bool ok = WaitUntil(
        [&] {
          auto s = Status();
          return s.is_object() && done(s);
        },
        timeout);
    return ok ? std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
              : -1;
  }

  static bool HasProblem(const nlohmann::json& s, const std::string& text) {
    for (const auto& p : s["health"].value("problems", nlohmann::json::array())) {
      if (p.get<std::string>().find(text) != std::string::npos) return true;
    }
    return false;
  }
  static bool Healthy(const nlohmann::json& s) { return s["health"].value("ok", false); }
  static std::string IdentityField(const nlohmann::json& s, const std::string& name,
                                   const char* field) {
    return Str(StatusOf(s.dump(), name), field);
  }

  // The identity `name` as status shows it while a fault keeps it from
  // connecting: a problem of its own, and the agent needing attention.
  static bool Troubled(const nlohmann::json& s, const std::string& name) {
    return !IdentityField(s, name, "problem").empty() && !s["health"].value("ok", true);
  }

  // Waits until `name` is ACTIVE again with a certificate other than
  // `old_cert`, no problem, and connected; returns the seconds it took (-1 on
  // timeout). Meanwhile the identity must never show a clean ACTIVE with the
  // certificate it could not use; `clean_with_old` counts the times it did.
  double WaitForRecovery(const std::string& name, const std::string& old_cert, int* clean_with_old,
                         std::chrono::seconds timeout) {
    return WaitForStatus(
        [&](const nlohmann::json& s) {
          const bool clean = IdentityField(s, name, "state") == "ACTIVE" &&
                             IdentityField(s, name, "problem").empty();
          const bool renewed = IdentityField(s, name, "certificateId") != old_cert;
          if (clean && !renewed) ++*clean_with_old;
          return clean && renewed && StatusOf(s.dump(), name).value("connected", false);
        },
        timeout);
  }

  void ExpectViolationsZero() {
    auto count = h_->sim().ViolationCount();
    ASSERT_TRUE(count.ok()) << count.status().ToString();
    EXPECT_EQ(*count, 0) << h_->sim().Http("GET", "/_sim/violations").body;
  }

  std::unique_ptr<AgentHarness> h_;
  std::unique_ptr<SmallDisk> disk_;
  int published_ = 0;
  std::map<std::string, std::set<int>> seen_;
};

TEST_F(SelfHealing, RecoversFromEachFaultWithoutARestartAndLosesNothing) {
  const pid_t agent = h_->agent().pid();
  Publish(0, 20);
  ASSERT_TRUE(AllArrived(30s)) << Log(*h_);
  ASSERT_GE(WaitForStatus(Healthy, 20s), 0) << Status().dump() << Log(*h_);

  // 1. The TPM goes away (swtpm killed), then comes back.
  h_->tpm().Kill();
  double shown = WaitForStatus([](const auto& s) { return HasProblem(s, "TPM unreachable"); }, 30s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  std::printf("[ figures  ] TPM killed: shown in status after %.1f s\n", shown);
  Publish(20, 40);  // live connections need no TPM
  // A sensor added meanwhile waits for the TPM, then enrolls: no restart.
  auto added = h_->Cli({"sensor", "add", "s3"});
  EXPECT_EQ(added.exit_code, 0) << added.output;
  std::this_thread::sleep_for(1s);
  const auto away = Status();
  EXPECT_EQ(IdentityField(away, "s3", "state"), "NEW") << away.dump();
  const std::string waiting = IdentityField(away, "s3", "lastError");
  EXPECT_NE(waiting.find("TPM unreachable"), std::string::npos) << away.dump();
  std::printf("[ figures  ] sensor added while the TPM is away: NEW, %s\n", waiting.c_str());
  ASSERT_TRUE(h_->tpm().Relaunch().ok());
  double back = WaitForStatus([](const auto& s) { return !HasProblem(s, "TPM unreachable"); }, 30s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  std::printf("[ figures  ] TPM back: cleared after %.1f s\n", back);
  double enrolled = WaitForStatus(
      [](const auto& s) {
        return IdentityField(s, "s3", "state") == "ACTIVE" &&
               StatusOf(s.dump(), "s3").value("connected", false);
      },
      60s);
  EXPECT_GE(enrolled, 0) << Status().dump() << Log(*h_);
  std::printf(
      "[ figures  ] sensor added while the TPM was away: ACTIVE %.1f s after the TPM came back\n",
      back + enrolled);
  ASSERT_TRUE(AllArrived(30s)) << Log(*h_);

  // 2. The state directory's disk fills up, then is freed.
  if (disk_->mounted()) {
    disk_->Fill();
    Publish(40, 60);  // the broker holds them while the outbox cannot commit
    shown = WaitForStatus([](const auto& s) { return HasProblem(s, "outbox commit failed"); }, 30s);
    EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
    std::printf("[ figures  ] state disk full: shown in status after %.1f s\n", shown);
    disk_->Free();
    back = WaitForStatus([](const auto& s) { return !HasProblem(s, "outbox commit failed"); }, 30s);
    EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
    ASSERT_TRUE(AllArrived(60s)) << Log(*h_);
  } else {
    std::printf("[ note     ] not root: the state-disk phase needs a tmpfs mount; skipped\n");
  }

  // 3. The local broker stops, then starts (with its persistent sessions).
  h_->broker().process().Stop();
  shown = WaitForStatus([](const auto& s) { return HasProblem(s, "local broker"); }, 30s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  ASSERT_TRUE(h_->broker().Restart().ok());
  back = WaitForStatus([](const auto& s) { return !HasProblem(s, "local broker"); }, 30s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  Publish(60, 80);
  ASSERT_TRUE(AllArrived(30s)) << Log(*h_);

  // 4. The cloud stops, then starts. The sim forgets its logs on a restart:
  // its violations and the messages it got twice are read first.
  ExpectViolationsZero();
  const int duplicates_before_restart = Duplicates();
  h_->sim().process().Stop();
  Publish(80, 100);
  shown =
      WaitForStatus([](const auto& s) { return !IdentityField(s, "s1", "problem").empty(); }, 60s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  EXPECT_EQ(Status()["health"].value("ok", true), false);
  ASSERT_TRUE(h_->sim().Restart().ok());
  back = WaitForStatus(Healthy, 90s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  ASSERT_TRUE(AllArrived(60s)) << Log(*h_);

  // 5. A key is deleted: within seconds status shows the sensor's problem
  // (never a clean ACTIVE), and it enrolls again (new key, new certificate).
  const std::string s1_cert = IdentityField(Status(), "s1", "certificateId");
  std::filesystem::remove(h_->state_dir() / "identities" / "s1" / "key.tss2");
  std::string problem;
  auto troubled = [&](const std::string& name) {
    return [&problem, name](const nlohmann::json& s) {
      problem = IdentityField(s, name, "problem");
      return Troubled(s, name);
    };
  };
  shown = WaitForStatus(troubled("s1"), 15s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  EXPECT_NE(problem.find("key"), std::string::npos) << problem;
  auto list = h_->Cli({"sensor", "list"});  // the same problem there
  auto s1_line = list.output.substr(list.output.find("\ns1 ") + 1);
  EXPECT_NE(s1_line.substr(0, s1_line.find('\n')).find("PROBLEM: identity s1: key"),
            std::string::npos)
      << list.output;
  std::printf("[ figures  ] key deleted: shown in status after %.1f s: %s\n", shown,
              problem.c_str());
  Publish(100, 120);
  int clean_with_old = 0;
  back = WaitForRecovery("s1", s1_cert, &clean_with_old, 90s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  EXPECT_EQ(clean_with_old, 0) << "s1 showed a clean ACTIVE with the certificate of its lost key";
  std::printf("[ figures  ] key deleted: enrolled again %.1f s after that\n", back);
  ASSERT_TRUE(AllArrived(60s)) << Log(*h_);

  // 6. A certificate is overwritten with another identity's: status shows
  // the problem, and the local CA issues a new certificate for the key the
  // sensor has (same key file, same blob: no new TPM key).
  auto before = Status();
  const std::string s2_cert = IdentityField(before, "s2", "certificateId");
  const std::string s2_key = IdentityField(before, "s2", "keyFile");
  ASSERT_FALSE(s2_key.empty()) << before.dump();
  const std::string s2_blob = ReadText(s2_key);
  ASSERT_FALSE(s2_blob.empty()) << s2_key;
  std::filesystem::copy_file(h_->state_dir() / "identities" / "s1" / "chain.pem",
                             IdentityField(before, "s2", "chainFile"),
                             std::filesystem::copy_options::overwrite_existing);
  shown = WaitForStatus(troubled("s2"), 15s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  EXPECT_NE(problem.find("does not match"), std::string::npos) << problem;
  std::printf("[ figures  ] certificate overwritten: shown in status after %.1f s: %s\n", shown,
              problem.c_str());
  Publish(120, 140);
  clean_with_old = 0;
  back = WaitForRecovery("s2", s2_cert, &clean_with_old, 90s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  EXPECT_EQ(clean_with_old, 0) << "s2 showed a clean ACTIVE with the certificate it lost";
  std::printf("[ figures  ] certificate overwritten: issued again %.1f s after that\n", back);
  EXPECT_EQ(IdentityField(Status(), "s2", "keyFile"), s2_key) << Status().dump();
  EXPECT_EQ(ReadText(s2_key), s2_blob) << "s2 was given a new TPM key";
  ASSERT_TRUE(AllArrived(60s)) << Log(*h_);

  ASSERT_GE(WaitForStatus(Healthy, 30s), 0) << Status().dump();
  EXPECT_EQ(h_->agent().pid(), agent) << "the agent was restarted";
  EXPECT_TRUE(h_->agent().running());
  std::printf("[ figures  ] every sensor's %d numbered messages arrived; %d arrived twice\n",
              published_, duplicates_before_restart + Duplicates());
  ExpectViolationsZero();
}

// A key blob from another TPM (a board swap, a TPM cleared and its SRK made
// anew) cannot be loaded here: the identity gets a new key and certificate,
// not just a certificate for a key it cannot use.
TEST_F(SelfHealing, AKeyThisTpmCannotUseIsReplaced) {
  auto other = Swtpm::Start();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  const auto key = h_->state_dir() / "identities" / "s1" / "key.tss2";
  const auto foreign = h_->dir() / "foreign.tss2";
  auto made = RunCommand({GA_AGENT_BINARY, "tpm", "create-key", "--tcti", (*other)->tcti(), "--out",
                          foreign.string()});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string old_cert = IdentityField(Status(), "s1", "certificateId");
  std::filesystem::copy_file(foreign, key, std::filesystem::copy_options::overwrite_existing);
  double back = WaitForStatus(
      [&](const nlohmann::json& s) {
        return IdentityField(s, "s1", "state") == "ACTIVE" &&
               IdentityField(s, "s1", "certificateId") != old_cert &&
               IdentityField(s, "s1", "problem").empty();
      },
      90s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  EXPECT_NE(Log(*h_).find("cannot be used in this TPM"), std::string::npos) << Log(*h_);
  EXPECT_NE(ReadText(key), ReadText(foreign)) << "the foreign key was kept";
  Publish(0, 10);
  EXPECT_TRUE(AllArrived(30s)) << Log(*h_);
  ExpectViolationsZero();
}

// AWS IoT keeps one connection per client id: `probe` while the agent runs
// would drop the agent's own connection, so it refuses and says why.
TEST_F(SelfHealing, ProbeRefusesWhileTheAgentHoldsTheConnection) {
  ASSERT_TRUE(WaitForSimClients(h_->sim(), {"gw-test:s1"}, 30s)) << Log(*h_);
  auto refused = h_->Cli({"probe", "--identity", "s1"});
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("would drop that connection"), std::string::npos) << refused.output;
  ASSERT_TRUE(h_->agent().Signal(SIGTERM, 20s).has_value());
  // Stopped, the agent removed its health report: one probe, accepted
  // (after AWS's one CONNECT per second per client id).
  std::this_thread::sleep_for(1100ms);
  auto probe = h_->Cli({"probe", "--identity", "s1"});
  EXPECT_EQ(probe.exit_code, 0) << probe.output;
  EXPECT_NE(probe.output.find("AWS IoT accepts this identity"), std::string::npos) << probe.output;
  ExpectViolationsZero();
}

#ifdef GA_HAVE_FUSE3
// The state directory on a disk that turns read-only while the agent runs
// (switchable_disk.h says why not a tmpfs remounted read-only).
class ReadOnlyStateDisk : public SelfHealing {
 protected:
  void SetUp() override {
    StartHarness();
    if (HasFatalFailure()) return;
    auto disk = SwitchableDisk::Mount(h_->dir() / "state-disk", h_->state_dir());
    if (!disk.ok()) GTEST_SKIP() << "no FUSE file system here: " << disk.status().ToString();
    switchable_ = std::move(*disk);
    // Only other processes open files there (status through the command
    // line): the process serving a FUSE file system must not, or a page it
    // dirtied (SQLite's shared memory) may wait on its own server.
    ASSERT_TRUE(h_->StartAgent().ok());
    ASSERT_GE(WaitForStatus([](const auto& s) { return s["counts"].value("ACTIVE", 0) == 3; }, 90s),
              0)
        << Log(*h_);
  }
  void TearDown() override {
    SelfHealing::TearDown();
    switchable_.reset();
  }
  std::unique_ptr<SwitchableDisk> switchable_;
};

// While the state disk is read-only no outbox commit succeeds: status says
// so within seconds and does not call the agent healthy; the agent neither
// exits nor spins (its CPU time and log stay small) while the local broker
// keeps the messages it could not commit; once the disk is writable again it
// goes on by itself and every numbered message reaches the cloud.
TEST_F(ReadOnlyStateDisk, CommitsFailVisiblyAndEveryMessageArrivesOnceWritable) {
  const pid_t agent = h_->agent().pid();
  Publish(0, 20);
  ASSERT_TRUE(AllArrived(30s)) << Log(*h_);
  ASSERT_GE(WaitForStatus(Healthy, 20s), 0) << Status().dump() << Log(*h_);

  const auto log = h_->dir() / "agent.log";
  const auto log_before = std::filesystem::file_size(log);
  const double cpu_before = CpuSeconds(agent);
  const auto read_only_at = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  switchable_->SetReadOnly(true);
  Publish(20, 60);  // the broker takes them; the agent cannot commit them
  double shown = WaitForStatus(
      [](const auto& s) { return HasProblem(s, "outbox commit failed") && !Healthy(s); }, 30s);
  EXPECT_GE(shown, 0) << Status().dump() << Log(*h_);
  shown = since(read_only_at);
  std::printf("[ figures  ] state disk read-only: shown in status after %.1f s\n", shown);
  EXPECT_LT(shown, 10.0);
  auto text = h_->Cli({"status"});
  EXPECT_EQ(text.exit_code, 1) << text.output;
  EXPECT_NE(text.output.find("needs attention: outbox commit failed"), std::string::npos)
      << text.output;

  // More messages while it stays read-only, 12 s in all.
  std::this_thread::sleep_for(4s);
  Publish(60, 100);
  std::this_thread::sleep_for(12s - std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::steady_clock::now() - read_only_at));
  const double read_only_for = since(read_only_at);
  const double cpu = CpuSeconds(agent) - cpu_before;
  const auto log_growth = std::filesystem::file_size(log) - log_before;
  std::printf(
      "[ figures  ] read-only for %.1f s: agent CPU %.2f s, log +%ju bytes, %d calls refused\n",
      read_only_for, cpu, static_cast<uintmax_t>(log_growth), switchable_->refused());
  EXPECT_GT(switchable_->refused(), 0);
  EXPECT_TRUE(h_->agent().running()) << Log(*h_);
  EXPECT_LT(cpu, 0.25 * read_only_for) << "the agent spins while commits fail";
  EXPECT_LT(log_growth, 64u * 1024) << Log(*h_);
  EXPECT_FALSE(Healthy(Status())) << Status().dump();

  switchable_->SetReadOnly(false);
  const auto writable_at = std::chrono::steady_clock::now();
  double back =
      WaitForStatus([](const auto& s) { return !HasProblem(s, "outbox commit failed"); }, 30s);
  EXPECT_GE(back, 0) << Status().dump() << Log(*h_);
  std::printf("[ figures  ] writable again: cleared after %.1f s\n", since(writable_at));
  Publish(100, 120);
  ASSERT_TRUE(AllArrived(60s)) << Log(*h_);
  std::printf(
      "[ figures  ] all %d numbered messages of each sensor arrived %.1f s after the disk "
      "was writable; %d duplicate(s)\n",
      published_, since(writable_at), Duplicates());
  EXPECT_GE(WaitForStatus(Healthy, 30s), 0) << Status().dump() << Log(*h_);
  EXPECT_EQ(h_->agent().pid(), agent) << "the agent was restarted";
  EXPECT_TRUE(h_->agent().running());
  ExpectViolationsZero();
}
#else
TEST(ReadOnlyStateDisk, CommitsFailVisiblyAndEveryMessageArrivesOnceWritable) {
  GTEST_SKIP() << "built without libfuse3 (Debian: libfuse3-dev): the read-only state disk is "
                  "a FUSE file system, since the kernel refuses to remount a tmpfs read-only "
                  "while the agent holds its databases open for writing";
}
#endif

// An agent with one sensor whose cloud connections (aws.port) go through a
// TcpRelay delaying each direction by `one_way`; `aws_keys` are added to
// [aws]. Started and ACTIVE on return.
struct RelayedAgent {
  std::unique_ptr<AgentHarness> h;
  std::unique_ptr<TcpRelay> relay;
};

void StartBehindRelay(RelayedAgent* a, const std::string& aws_keys = "",
                      std::chrono::milliseconds one_way = 0ms) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  a->h = std::move(*h);
  auto relay = TcpRelay::Start(a->h->sim().mqtt_port());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  a->relay = std::move(*relay);
  a->relay->SetDelay(one_way);
  a->h->RewriteConfig([&](std::string& text) {
    std::string port = "port = " + std::to_string(a->h->sim().mqtt_port()) + "\n";
    text.replace(text.find(port), port.size(),
                 "port = " + std::to_string(a->relay->port()) + "\n" + aws_keys);
  });
  ASSERT_TRUE(a->h->StartAgent().ok());
  ASSERT_TRUE(a->h->WaitForState("ACTIVE", 2, 90s)) << Log(*a->h);
}

// A link that stops forwarding without closing (a modem gone without FIN or
// RST): the agent gives up on it after 1.5 x aws.keepalive of silence,
// reconnects, and every message accepted meanwhile arrives. More messages
// come meanwhile than the in-flight window holds, so the window is full of
// unacknowledged messages when the link goes: their resend on the new
// connection counts against AWS's 100 publishes per second like any other.
TEST(HalfOpen, ASilentLinkIsDetectedAndReconnectedWithoutLossWithinAwsRates) {
  RelayedAgent a;
  ASSERT_NO_FATAL_FAILURE(StartBehindRelay(&a, "keepalive = \"5s\"\n"));
  auto& [h, relay] = a;
  ASSERT_TRUE(WaitForSimClients(h->sim(), {"gw-test:s1"}, 30s)) << Log(*h);
  constexpr int kMessages = 250;  // the window (bridge.inflight_window) holds 100
  LocalClient sensor(h->broker().port(), "half-open");
  for (int n = 0; n < 10; ++n) sensor.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(WaitForCloudCount(h->sim(), 10, 30s, nullptr)) << Log(*h);

  const int before = relay->accepted();
  auto stalled_at = std::chrono::steady_clock::now();
  relay->Stall();
  for (int n = 10; n < kMessages; ++n) sensor.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(sensor.WaitAcked(kMessages, 20s));
  ASSERT_TRUE(
      WaitUntil([&] { return Log(*h).find("the link is half-open") != std::string::npos; }, 30s))
      << Log(*h);
  double detected =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stalled_at).count();
  // Both connections (gateway, s1) come back through the relay.
  ASSERT_TRUE(WaitUntil([&] { return relay->accepted() >= before + 2; }, 60s)) << Log(*h);
  double back =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stalled_at).count();
  std::printf(
      "[ figures  ] half-open link, keepalive 5 s: detected after %.1f s, reconnected "
      "after %.1f s\n",
      detected, back);
  // 1.5 x keepalive = 7.5 s; libmosquitto alone takes 2 x, TCP ~15 minutes.
  EXPECT_LT(detected, 10.0) << Log(*h);

  std::map<std::string, int> number_of;
  for (int n = 0; n < kMessages; ++n) number_of[Base64(std::to_string(n))] = n;
  std::set<int> seen;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const auto& m : CloudPublishes(h->sim())) {
          if (m.topic == "dt/gw-test:s1/seq") seen.insert(number_of.at(m.payload_b64));
        }
        return seen.size() == static_cast<size_t>(kMessages);
      },
      60s))
      << seen.size() << " of " << kMessages << " arrived\n"
      << Log(*h);
  ASSERT_TRUE(h->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(*h);
}

// A link that holds everything for a while, then delivers it at once (a
// modem that drops off and comes back): the messages in flight reach AWS IoT
// together, and what the bridge sends as their PUBACKs come back must still
// fit AWS's 100 publishes per second per connection.
TEST(StalledLink, WhatItHeldArrivesAtOnceAndTheBridgeStaysWithinAwsRates) {
  RelayedAgent a;
  ASSERT_NO_FATAL_FAILURE(StartBehindRelay(&a));
  auto& [h, relay] = a;
  ASSERT_TRUE(WaitForSimClients(h->sim(), {"gw-test:s1"}, 30s)) << Log(*h);

  // A backlog that takes the bridge seconds to send at AWS's rate; the link
  // stalls in the middle, long enough for the in-flight window to fill.
  constexpr int kMessages = 600;
  const int connections = relay->accepted();
  LocalClient sensor(h->broker().port(), "stalled-link");
  for (int n = 0; n < kMessages; ++n) sensor.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(sensor.WaitAcked(kMessages, 30s));
  std::this_thread::sleep_for(1s);
  relay->Stall();
  std::this_thread::sleep_for(2500ms);
  relay->Resume();

  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount(h->sim(), kMessages, 60s, &got, /*distinct=*/true)) << Log(*h);
  std::printf("[ figures  ] %d messages through a link stalled for 2.5 s: %zu arrived\n", kMessages,
              got.size());
  EXPECT_EQ(relay->accepted(), connections) << "a connection was lost: " << Log(*h);
  ASSERT_TRUE(h->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(*h);
}

// A long link (300 ms RTT, a cellular or satellite modem): enrollment (JITR
// connects) and the bridge's connections come up through it, and numbered
// messages all arrive in order, within AWS's limits.
TEST(SlowLink, EnrollsAndBridgesThrough300msRtt) {
  RelayedAgent a;
  ASSERT_NO_FATAL_FAILURE(StartBehindRelay(&a, "", 150ms));
  auto& [h, relay] = a;
  ASSERT_TRUE(WaitForSimClients(h->sim(), {"gw-test", "gw-test:s1"}, 60s)) << Log(*h);
  EXPECT_GE(relay->accepted(), 2);  // everything went through the long link

  LocalClient sensor(h->broker().port(), "slow-link");
  ASSERT_TRUE(sensor.connected());
  for (int n = 0; n < 300; ++n) ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(n)));
  std::vector<CloudMessage> got;
  ASSERT_TRUE(WaitForCloudCount(h->sim(), 300, 60s, &got)) << Log(*h);
  // In order (a resend after a reconnect may repeat a message: counted, not refused).
  std::vector<std::string> order;
  std::set<std::string> seen;
  for (const auto& m : got) {
    if (m.topic == "dt/gw-test:s1/seq" && seen.insert(m.payload_b64).second) {
      order.push_back(m.payload_b64);
    }
  }
  ASSERT_EQ(order.size(), 300u);
  for (int n = 0; n < 300; ++n) EXPECT_EQ(order[static_cast<size_t>(n)], Base64(std::to_string(n)));
  std::printf("[ figures  ] 300 ms RTT: %zu messages arrived for 300 sent\n", got.size());
  ASSERT_TRUE(h->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(*h);
}

}  // namespace
}  // namespace ga::testing
