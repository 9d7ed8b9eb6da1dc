// The control socket: the framed protocol and the server's behaviour with
// slow, idle and many clients, over a real socket with a fake handler; then
// the sensor commands, and the request deadline, against the real agent.
#include "gateway_agent/agent/control.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "agent_harness.h"
#include "fixtures.h"
#include "gateway_agent/thread_annotations.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// A handler that records every request and answers with the id it got.
class RecordingHandler {
 public:
  ControlHandler Handler() {
    return [this](const ControlCommand& request) {
      MutexLock lock(mu_);
      requests_.push_back(request);
      return ControlReply{true, "got " + request.Field("id")};
    };
  }
  std::vector<ControlCommand> Requests() {
    MutexLock lock(mu_);
    return requests_;
  }

 private:
  Mutex mu_;
  std::vector<ControlCommand> requests_ GA_GUARDED_BY(mu_);
};

std::string Frame(const std::string& payload) {
  auto n = static_cast<uint32_t>(payload.size());
  std::string out = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
  return out + payload;
}

// A blocking client socket connected to `path`. Reads give up after 60 s so
// that a broken server fails the test instead of hanging it.
UniqueFd Connect(const std::filesystem::path& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
      << std::strerror(errno);
  timeval tv{60, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void SendAll(int fd, const std::string& data) {
  ASSERT_EQ(send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// Reads one reply frame; a null JSON when the connection ends first.
Json ReadReply(int fd) {
  std::string data;
  size_t want = 4;
  char buf[4096];
  while (data.size() < want) {
    ssize_t n = recv(fd, buf, std::min(sizeof buf, want - data.size()), 0);
    if (n <= 0) return nullptr;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() == 4) {
      want = 4 + ((static_cast<size_t>(static_cast<unsigned char>(data[0])) << 24) |
                  (static_cast<size_t>(static_cast<unsigned char>(data[1])) << 16) |
                  (static_cast<size_t>(static_cast<unsigned char>(data[2])) << 8) |
                  static_cast<size_t>(static_cast<unsigned char>(data[3])));
    }
  }
  return Json::parse(data.substr(4), nullptr, false);
}

// True when the server has closed `fd` (end of file; nothing was sent).
bool ClosedByServer(int fd) {
  char c;
  return recv(fd, &c, 1, 0) == 0;
}

// True when nothing has happened on `fd`: still open, nothing to read.
bool Untouched(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

class ControlServerTest : public ::testing::Test {
 protected:
  void StartServer(std::chrono::milliseconds deadline = kControlRequestDeadline) {
    auto server = ControlServer::Start(path_, handler_.Handler(), deadline);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
  }

  TempDir dir_;
  std::filesystem::path path_ = dir_ / "control.sock";
  RecordingHandler handler_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, ArgumentsArriveIntactAsOneField) {
  StartServer();
  const std::vector<std::string> ids = {"a b", "inj1 connection=gateway", "line1\nline2", "",
                                        "tab\there"};
  for (const auto& id : ids) {
    auto reply = ControlRequest(path_, {"sensor-add", {{"id", id}, {"connection", "own"}}});
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_TRUE(reply->ok);
    EXPECT_EQ(reply->body, "got " + id);
  }
  auto got = handler_.Requests();
  ASSERT_EQ(got.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(got[i].command, "sensor-add");
    std::map<std::string, std::string> want = {{"id", ids[i]}, {"connection", "own"}};
    EXPECT_EQ(got[i].fields, want) << "request " << i;
  }
  // An empty id is there, empty: not missing, not another word.
  EXPECT_TRUE(got[3].fields.count("id"));
}

TEST_F(ControlServerTest, ReplyBodyKeepsNewlinesAndErrorsComeBackAsErrors) {
  auto server = ControlServer::Start(path_, [](const ControlCommand& r) {
    return r.command == "fail" ? ControlReply{false, "no\nway"} : ControlReply{true, "a\nb\n"};
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto ok = ControlRequest(path_, {"list", {}});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->ok);
  EXPECT_EQ(ok->body, "a\nb\n");
  auto fail = ControlRequest(path_, {"fail", {}});
  ASSERT_TRUE(fail.ok()) << fail.status().ToString();
  EXPECT_FALSE(fail->ok);
  EXPECT_EQ(fail->body, "no\nway");
}

TEST_F(ControlServerTest, MalformedRequestsAreRefusedNamingTheField) {
  StartServer();
  auto ask = [&](const std::string& payload) {
    UniqueFd fd = Connect(path_);
    SendAll(fd.get(), Frame(payload));
    return ReadReply(fd.get());
  };
  Json r = ask(R"({"command":"sensor-add","id":5})");
  EXPECT_EQ(r.value("ok", true), false) << r;
  EXPECT_NE(r.value("error", "").find("field \"id\" must be a string, not number"),
            std::string::npos)
      << r;
  r = ask(R"({"id":"s1"})");
  EXPECT_NE(r.value("error", "").find("no field \"command\""), std::string::npos) << r;
  r = ask(R"(["sensor-list"])");
  EXPECT_NE(r.value("error", "").find("must be a JSON object"), std::string::npos) << r;
  r = ask("sensor-list\n");
  EXPECT_NE(r.value("error", "").find("not valid JSON"), std::string::npos) << r;
  EXPECT_TRUE(handler_.Requests().empty());

  ControlCommand extra{"sensor-add", {{"id", "s1"}, {"colour", "red"}}};
  Status s = extra.CheckFields({"id"}, {"thing", "connection"});
  EXPECT_NE(s.message().find("unknown field \"colour\""), std::string::npos) << s.message();
  ControlCommand missing{"sensor-remove", {}};
  s = missing.CheckFields({"id"});
  EXPECT_NE(s.message().find("no field \"id\""), std::string::npos) << s.message();
  EXPECT_TRUE(ControlCommand({"sensor-add", {{"id", ""}}}).CheckFields({"id"}, {"thing"}).ok());
}

TEST_F(ControlServerTest, OversizeFrameIsRefusedAndTheConnectionClosed) {
  StartServer();
  UniqueFd fd = Connect(path_);
  SendAll(fd.get(), Frame(std::string(kMaxControlRequest + 1, 'x')).substr(0, 4096));
  Json r = ReadReply(fd.get());
  EXPECT_EQ(r.value("ok", true), false) << r;
  EXPECT_NE(r.value("error", "").find("longer than the 65536 bytes"), std::string::npos) << r;
  // What follows is not read: the connection ends.
  char buf[256];
  ssize_t n;
  while ((n = recv(fd.get(), buf, sizeof buf, 0)) > 0) {
  }
  EXPECT_LE(n, 0);
  EXPECT_TRUE(handler_.Requests().empty());

  // A frame of exactly the limit is read.
  std::string id(kMaxControlRequest - 40, 'i');
  auto reply = ControlRequest(path_, {"x", {{"id", id}}});
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_TRUE(reply->ok);
  // The client refuses to send what the server would refuse.
  auto big = ControlRequest(path_, {"x", {{"id", std::string(kMaxControlRequest, 'i')}}});
  EXPECT_EQ(big.status().code(), Code::kInvalidArgument) << big.status().ToString();
}

TEST_F(ControlServerTest, SlowAndIdleClientsDoNotDelayOthers) {
  // A deadline far longer than the test: the slow and idle clients are
  // certainly still connected when the other request is answered.
  StartServer(10min);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 10; ++i) idle.push_back(Connect(path_));

  const std::string slow_frame = Frame(R"({"command":"sensor-add","id":"slow"})");
  std::atomic<size_t> dribbled{0};
  std::atomic<bool> stop{false};
  UniqueFd slow = Connect(path_);
  std::thread dribbler([&] {
    while (!stop && dribbled < slow_frame.size()) {
      if (send(slow.get(), &slow_frame[dribbled], 1, MSG_NOSIGNAL) != 1) return;
      ++dribbled;
      std::this_thread::sleep_for(200ms);
    }
  });
  while (dribbled < 2) std::this_thread::sleep_for(10ms);

  auto reply = ControlRequest(path_, {"sensor-add", {{"id", "quick"}}});
  const size_t dribbled_when_answered = dribbled;
  stop = true;
  dribbler.join();
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->body, "got quick");
  EXPECT_LT(dribbled_when_answered, slow_frame.size())
      << "the quick request was answered only after the slow one had been sent";
  auto got = handler_.Requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].Field("id"), "quick");
  for (const auto& fd : idle) EXPECT_TRUE(Untouched(fd.get()));
  EXPECT_TRUE(Untouched(slow.get()));
}

TEST_F(ControlServerTest, ClientThatDoesNotFinishItsRequestIsDropped) {
  StartServer(300ms);
  UniqueFd idle = Connect(path_);
  UniqueFd partial = Connect(path_);
  SendAll(partial.get(), Frame(R"({"command":"sensor-list"})").substr(0, 10));
  EXPECT_TRUE(ClosedByServer(idle.get()));
  EXPECT_TRUE(ClosedByServer(partial.get()));
  EXPECT_TRUE(handler_.Requests().empty());
  // The server goes on answering.
  auto reply = ControlRequest(path_, {"sensor-list", {}});
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
}

TEST_F(ControlServerTest, ConnectionsBeyondTheBoundAreToldBusy) {
  StartServer(10min);
  std::vector<UniqueFd> idle;
  for (size_t i = 0; i < kMaxControlClients; ++i) idle.push_back(Connect(path_));
  auto reply = ControlRequest(path_, {"sensor-list", {}});
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_FALSE(reply->ok);
  EXPECT_EQ(reply->body, "the agent is busy with 64 other control connections; try again");
  // One gone makes room.
  idle.pop_back();
  auto deadline = std::chrono::steady_clock::now() + 30s;
  do {
    reply = ControlRequest(path_, {"sensor-list", {}});
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  } while (!reply->ok && std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(reply->ok) << reply->body;
}

TEST_F(ControlServerTest, ThreeHundredSimultaneousClientsAreAllAnswered) {
  StartServer();
  constexpr int kClients = 300;
  std::vector<Result<ControlReply>> replies(kClients, Status(Code::kInternal, "not run"));
  std::latch start(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      replies[i] = ControlRequest(path_, {"sensor-add", {{"id", "c" + std::to_string(i)}}});
    });
  }
  for (auto& t : threads) t.join();
  int answered = 0, busy = 0;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(replies[i].ok()) << "client " << i << ": " << replies[i].status().ToString();
    if (replies[i]->ok) {
      EXPECT_EQ(replies[i]->body, "got c" + std::to_string(i));
      ++answered;
    } else {
      // The only refusal allowed: more than kMaxControlClients at once.
      EXPECT_NE(replies[i]->body.find("the agent is busy"), std::string::npos) << replies[i]->body;
      ++busy;
    }
  }
  EXPECT_EQ(answered + busy, kClients);
  EXPECT_EQ(handler_.Requests().size(), static_cast<size_t>(answered));
  std::printf("%d of %d simultaneous clients answered by the handler, %d told busy\n", answered,
              kClients, busy);
}

TEST(ControlClient, TimesOutOnAServerThatNeverAnswers) {
  TempDir dir;
  const auto path = dir / "stuck.sock";
  // Listens, never accepts: connect and send succeed, no answer comes.
  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener.get(), 4), 0);
  auto reply = ControlRequest(path, {"sensor-list", {}}, 300ms);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kTimeout);
  EXPECT_EQ(reply.status().message(), "the agent did not answer within 0.3 s on " + path.string() +
                                          "; is it stuck? journalctl -u gateway-agent");
}

TEST(ControlClient, SaysTheAgentIsNotRunning) {
  TempDir dir;
  auto reply = ControlRequest(dir / "none.sock", {"sensor-list", {}});
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kUnavailable);
  EXPECT_NE(reply.status().message().find("the agent is not running"), std::string::npos);
}

// End to end: `gateway-agent sensor ...` against the running agent.

std::string AgentLog(AgentHarness& h) {
  return RunCommand({"tail", "-n", "60", (h.dir() / "agent.log").string()}).output;
}

Json StatusOf(const std::string& status, const std::string& name) {
  Json j = Json::parse(status, nullptr, false);
  if (j.is_object() && j.contains("identities")) {
    for (const auto& id : j["identities"]) {
      if (id.value("name", "") == name) return id;
    }
  }
  return nullptr;
}

// NAME -> CONN from a status table (the sensors' rows are ACTIVE: NEXT is "-").
std::map<std::string, std::string> ConnColumn(const std::string& table) {
  std::map<std::string, std::string> conn;
  std::istringstream in(table);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.size() > 7 && w[3] == "ACTIVE") conn[w[0]] = w[7];
  }
  return conn;
}

TEST(ControlEndToEnd, SensorCommandsKeepTheirArgumentsAndTellTheTruth) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 120s, &status)) << status << AgentLog(**h);

  // Arguments are never split: each of these is one (invalid) id.
  auto spaced = (*h)->Cli({"sensor", "add", "a b"});
  EXPECT_NE(spaced.exit_code, 0);
  EXPECT_NE(spaced.output.find("\"a b\" is not a valid sensor id"), std::string::npos)
      << spaced.output;
  auto smuggled = (*h)->Cli({"sensor", "add", "inj1 connection=gateway", "--connection", "own"});
  EXPECT_NE(smuggled.exit_code, 0);
  EXPECT_NE(smuggled.output.find("\"inj1 connection=gateway\" is not a valid sensor id"),
            std::string::npos)
      << smuggled.output;
  auto newline = (*h)->Cli({"sensor", "add", "n1\nsensor-list"});
  EXPECT_NE(newline.exit_code, 0);
  EXPECT_NE(newline.output.find("is not a valid sensor id"), std::string::npos) << newline.output;
  auto empty = (*h)->Cli({"sensor", "add", ""});
  EXPECT_NE(empty.exit_code, 0);
  EXPECT_NE(empty.output.find("the sensor id is empty"), std::string::npos) << empty.output;
  status = (*h)->StatusJson();
  for (const char* name : {"a", "b", "a b", "inj1", "n1", ""}) {
    EXPECT_TRUE(StatusOf(status, name).is_null()) << name << " was added: " << status;
  }

  // sensor list shows the connection the way status does.
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) {
        return StatusOf(json, "s1").value("connected", false) &&
               StatusOf(json, "s2").value("connected", false);
      },
      60s, &status))
      << status;
  auto list = (*h)->Cli({"--timeout", "30", "sensor", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  auto table = (*h)->Cli({"status"});
  ASSERT_EQ(table.exit_code, 0) << table.output;
  auto listed = ConnColumn(list.output);
  EXPECT_EQ(listed, (std::map<std::string, std::string>{{"s1", "yes"}, {"s2", "yes"}}))
      << list.output;
  auto shown = ConnColumn(table.output);
  EXPECT_EQ(listed["s1"], shown["s1"]) << table.output;
  EXPECT_EQ(listed["s2"], shown["s2"]) << table.output;

  // A sensor of the file is refused, and stays; one added at run time goes.
  auto file_sensor = (*h)->Cli({"sensor", "remove", "s2"});
  EXPECT_NE(file_sensor.exit_code, 0);
  EXPECT_NE(file_sensor.output.find("sensor s2 is defined in " + (*h)->config().string() +
                                    ": remove its [[sensor]] entry there and reload "
                                    "(systemctl reload gateway-agent)"),
            std::string::npos)
      << file_sensor.output;
  EXPECT_EQ(StatusOf((*h)->StatusJson(), "s2").value("state", ""), "ACTIVE");
  auto added = (*h)->Cli({"sensor", "add", "walkin", "--connection", "gateway"});
  ASSERT_EQ(added.exit_code, 0) << added.output;
  auto removed = (*h)->Cli({"sensor", "remove", "walkin"});
  EXPECT_EQ(removed.exit_code, 0) << removed.output;
  EXPECT_NE(removed.output.find("sensor walkin (thing gw-test:walkin) removed"), std::string::npos)
      << removed.output;
  EXPECT_TRUE(StatusOf((*h)->StatusJson(), "walkin").is_null());

  // A stuck agent: the command gives up after --timeout and says so.
  ASSERT_EQ(kill((*h)->agent().pid(), SIGSTOP), 0);
  auto stuck = (*h)->Cli({"--timeout", "1", "sensor", "list"});
  ASSERT_EQ(kill((*h)->agent().pid(), SIGCONT), 0);
  EXPECT_EQ(stuck.exit_code, 1) << stuck.output;
  EXPECT_NE(stuck.output.find("error: the agent did not answer within 1 s on " +
                              ((*h)->dir() / "run" / "control.sock").string() +
                              "; is it stuck? journalctl -u gateway-agent"),
            std::string::npos)
      << stuck.output;

  // Once s2 leaves the file, a reload removes it.
  (*h)->RewriteConfig(
      [](std::string& text) { text.replace(text.find("[[sensor]]\nid = \"s2\"\n"), 21, ""); });
  ASSERT_TRUE((*h)->agent().Signal(SIGHUP, 0s) == std::nullopt);
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& json) {
        return !StatusOf(json, "s1").is_null() && StatusOf(json, "s2").is_null();
      },
      30s, &status))
      << status << AgentLog(**h);
  Status violations = (*h)->NoViolations();
  EXPECT_TRUE(violations.ok()) << violations.ToString();
}

// The agent's own server: each request has one total deadline
// (kControlRequestDeadline from its accept), which a client dribbling a byte
// at a time does not restart, and while such a client and idle ones hold
// connections open, the CLI is answered.
TEST(ControlEndToEnd, DribblingAndIdleClientsAreCutOffAtTheDeadlineWhileTheCliIsAnswered) {
  HarnessOptions o;
  o.sensors = 2;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 120s, &status)) << status << AgentLog(**h);
  const auto socket_path = (*h)->dir() / "run" / "control.sock";
  using Clock = std::chrono::steady_clock;

  std::vector<UniqueFd> idle;
  std::vector<Clock::time_point> idle_connected;
  for (int i = 0; i < 10; ++i) {
    idle_connected.push_back(Clock::now());
    idle.push_back(Connect(socket_path));
  }

  // One byte of a request every 1.5 s: the whole frame (48 bytes) would
  // take over a minute. The thread notes when the server closes the
  // connection, and anything it sent first.
  const std::string frame = Frame(R"({"command":"sensor-list","pad":"0123456789"})");
  std::atomic<size_t> dribbled{0};
  std::atomic<bool> closed{false};
  std::atomic<int64_t> closed_after_ms{-1};
  std::string received;  // read by the test once the thread is joined
  const auto dribble_start = Clock::now();
  UniqueFd dribbler_fd = Connect(socket_path);
  std::thread dribbler([&] {
    const int fd = dribbler_fd.get();
    while (Clock::now() - dribble_start < 30s) {
      if (dribbled < frame.size() && send(fd, &frame[dribbled], 1, MSG_NOSIGNAL) == 1) ++dribbled;
      pollfd p{fd, POLLIN, 0};
      const auto next_byte = Clock::now() + 1500ms;
      while (Clock::now() < next_byte && p.revents == 0) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(next_byte - Clock::now());
        if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) < 0) p.revents = 0;
      }
      if (p.revents == 0) continue;
      char buf[512];
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        received.append(buf, static_cast<size_t>(n));
        continue;
      }
      closed_after_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - dribble_start)
              .count();
      closed = true;
      return;
    }
  });
  while (dribbled < 1) std::this_thread::sleep_for(5ms);

  // Mid-request for the dribbler, idle for the ten: the CLI is answered, and
  // each answer comes while all eleven are still connected.
  std::vector<std::pair<std::string, CommandResult>> answered;
  // The first right away, the others once the dribbler has sent a second
  // byte (1.5 s in, 3.5 s before its deadline).
  const std::vector<std::pair<size_t, std::vector<std::string>>> commands = {
      {1, {"--timeout", "4", "sensor", "list"}},
      {2, {"status"}},
      {2, {"--timeout", "4", "sensor", "list"}}};
  for (const auto& [after_bytes, args] : commands) {
    while (dribbled < after_bytes && !closed) std::this_thread::sleep_for(5ms);
    const auto asked = Clock::now();
    CommandResult r = (*h)->Cli(args);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked);
    const size_t dribbled_then = dribbled;
    const bool dribbler_open = !closed;
    bool idle_open = true;
    for (const auto& fd : idle) idle_open = idle_open && Untouched(fd.get());
    std::string what = "gateway-agent";
    for (const auto& a : args) what += " " + a;
    EXPECT_EQ(r.exit_code, 0) << what << ": " << r.output << AgentLog(**h);
    EXPECT_TRUE(dribbler_open) << what << " was answered only after the dribbler was dropped";
    EXPECT_TRUE(idle_open) << what << " was answered only after an idle client was dropped";
    EXPECT_LT(dribbled_then, frame.size());
    std::printf("%s: exit %d in %lld ms, the dribbler at byte %zu\n", what.c_str(), r.exit_code,
                static_cast<long long>(took.count()), dribbled_then);
    answered.emplace_back(what, std::move(r));
  }
  dribbler.join();
  ASSERT_EQ(answered.size(), 3u);
  auto listed = ConnColumn(answered[0].second.output);
  EXPECT_EQ(listed.size(), 2u) << answered[0].second.output;
  EXPECT_TRUE(listed.count("s1") && listed.count("s2")) << answered[0].second.output;
  EXPECT_NE(answered[1].second.output.find("ACTIVE"), std::string::npos)
      << answered[1].second.output;

  const auto deadline_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(kControlRequestDeadline).count();
  ASSERT_TRUE(closed) << "the dribbler was not dropped within 30 s (" << dribbled
                      << " bytes sent): is the deadline restarted by each byte?";
  // Accepted after its connect: dropped no sooner than the deadline after it,
  // and at most 2 s late on a loaded machine; never restarted by its bytes.
  EXPECT_GE(closed_after_ms, deadline_ms - 50) << "dropped before the deadline";
  EXPECT_LE(closed_after_ms, deadline_ms + 2000) << "not dropped at the total deadline";
  EXPECT_GE(dribbled, 3u) << "the dribbler was dropped before it had sent three bytes";
  EXPECT_LT(dribbled, frame.size());
  // The server closes without a reply; its log names the deadline.
  EXPECT_EQ(received, "") << "the server sent something to a client it dropped";
  std::printf(
      "dribbler: %zu of %zu bytes sent, dropped %lld ms after connecting (deadline %lld ms)\n",
      dribbled.load(), frame.size(), static_cast<long long>(closed_after_ms.load()),
      static_cast<long long>(deadline_ms));

  // The idle ones are dropped the same way, at the deadline after their connect.
  for (size_t i = 0; i < idle.size(); ++i) {
    pollfd p{idle[i].get(), POLLIN, 0};
    const auto until = idle_connected[i] + kControlRequestDeadline + 2s;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
    EXPECT_EQ(poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))), 1)
        << "idle client " << i << " still connected 2 s past the deadline";
    EXPECT_TRUE(ClosedByServer(idle[i].get())) << "idle client " << i;
  }
  std::string log = RunCommand({"cat", ((*h)->dir() / "agent.log").string()}).output;
  EXPECT_NE(log.find("control socket: dropped a client that did not send its request within " +
                     std::to_string(deadline_ms / 1000) + " s"),
            std::string::npos)
      << AgentLog(**h);

  // And the server goes on answering.
  auto after = (*h)->Cli({"--timeout", "4", "sensor", "list"});
  EXPECT_EQ(after.exit_code, 0) << after.output;
  Status violations = (*h)->NoViolations();
  EXPECT_TRUE(violations.ok()) << violations.ToString();
}

}  // namespace
}  // namespace ga::testing
