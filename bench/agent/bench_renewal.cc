// Renewal benchmark: N sensors (default 200), each with its own TPM key and
// cloud connection, and the gateway, renewed at once by
// `gateway-agent renew --all` while every sensor publishes; the peer is the
// same agent enrolling the same identities from scratch, in the same process
// tree (one swtpm, one iot-sim with the shipped Lambda, one config).
//
//   bench_renewal [--sensors N] [--rate MSGS_PER_S] [--tpm-profile swtpm|discrete]
//                 [--rollover]
//
// --rollover: instead of `renew --all`, a CA rollover: a second CA made,
// registered and named in [ca], then the agent reloaded (SIGHUP); every
// identity renews onto it, its thing handed over to it first.
//
// Prints, for enrolling and for renewing: the wall time (the agent's start,
// or `renew --all`, to every identity ACTIVE and connected, or renewed with
// its previous certificate retired) and the TPM commands sent (counted by the
// relay in front of swtpm, tests/fixtures/tpm_latency.h); then the ratio
// renew / enroll, and for the messages published during the renewal (round
// robin over the sensors, --rate a second in all, default 200): how many
// arrived in iot-sim, and the largest gap between two arrivals of one
// sensor's messages (the switch-over: the bridge lets go of the connection
// for each connect with the new certificate). The configuration is a user's
// default ([enrollment] concurrency 8, backoff 1 s .. 5 min, [aws]
// connect_rate 10/s). Exits non-zero when an identity does not renew, a
// message is lost, a certificate is left ACTIVE besides the one in use, or
// iot-sim counted an AWS limit violation.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bridge_harness.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ga::testing::AgentHarness;
using ga::testing::HarnessOptions;
using ga::testing::Json;
using ga::testing::LocalClient;
using ga::testing::TpmCommandCounts;
using ga::testing::TpmLatencyRelay;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "bench_renewal: %s\n", what.c_str());
  return 1;
}

int Usage() {
  std::fprintf(stderr,
               "usage: bench_renewal [--sensors N] [--rate MSGS_PER_S] "
               "[--tpm-profile swtpm|discrete] [--rollover]\n");
  return 2;
}

// Every identity in `status` satisfies `ok`.
bool All(const std::string& status, const std::function<bool(const Json&)>& ok, int count) {
  Json s = ga::testing::Parse(status);
  if (!s.is_object()) return false;
  int n = 0;
  for (const Json& id : s.value("identities", Json::array())) {
    if (!ok(id)) return false;
    ++n;
  }
  return n == count;
}

bool Renewed(const Json& id) {
  if (!id.contains("renewal")) return false;
  const Json& r = id["renewal"];
  return r.value("renewals", 0) >= 1 && r.value("step", "") == "none" &&
         r.value("retiringCertificateId", "").empty() && id.value("connected", false);
}

int64_t Commands(const TpmLatencyRelay::Stats& s) {
  int64_t n = 0;
  for (const auto& [code, count] : s.commands) n += count;
  return n;
}

// Publishes sensors/<s_i>/seq round robin at `rate` a second until stopped.
class Publisher {
 public:
  Publisher(int port, int sensors, double rate) : client_(port, "bench-renewal-publisher") {
    thread_ = std::thread([this, sensors, rate] {
      auto next = Clock::now();
      const auto interval =
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate));
      for (int64_t i = 0; !stop_; ++i) {
        const int sensor = static_cast<int>(i % sensors) + 1;
        if (client_.Publish("sensors/s" + std::to_string(sensor) + "/seq", std::to_string(i))) {
          ++sent_;
        }
        next += interval;
        std::this_thread::sleep_until(next);
      }
    });
  }
  ~Publisher() { Stop(); }
  bool connected() const { return client_.connected(); }
  int64_t Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return sent_;
  }

 private:
  LocalClient client_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> sent_{0};
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  int sensors = 200;
  double rate = 200;
  std::string tpm_profile = "swtpm";
  bool rollover = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a != "--rollover" && i + 1 >= argc) return Usage();
    if (a == "--sensors")
      sensors = std::atoi(argv[++i]);
    else if (a == "--rate")
      rate = std::atof(argv[++i]);
    else if (a == "--tpm-profile")
      tpm_profile = argv[++i];
    else if (a == "--rollover")
      rollover = true;
    else
      return Usage();
  }
  if (sensors < 1 || rate <= 0) return Usage();

  HarnessOptions o;
  o.sensors = sensors;
  o.lambda_delay_ms = 0;
  o.backoff_initial = "1s";  // the agent's defaults, not the tests' fast ones
  o.backoff_max = "5m";
  o.tpm_profile = tpm_profile;
  auto started = AgentHarness::Start(o);
  if (!started.ok()) return Fail("harness: " + started.status().ToString());
  AgentHarness& h = **started;
  h.RewriteConfig([](std::string& text) {
    text = std::regex_replace(text, std::regex("connect_rate = [0-9.]+"), "");
  });
  const int identities = h.identities();
  TpmLatencyRelay* relay = h.tpm_relay();

  // ---- The peer: enrolling every identity from scratch. ----
  std::printf("enroll: %d sensors + the gateway...\n", sensors);
  std::fflush(stdout);
  auto tpm0 = relay->stats();
  auto enroll_start = Clock::now();
  if (auto s = h.StartAgent(); !s.ok()) return Fail("start agent: " + s.ToString());
  std::string status;
  if (!h.WaitForStatus(
          [&](const std::string& s) {
            return All(
                s,
                [](const Json& id) {
                  return id.value("state", "") == "ACTIVE" && id.value("connected", false);
                },
                identities);
          },
          600s, &status)) {
    return Fail("not every identity became ACTIVE and connected: " + status);
  }
  const double enroll_s = Seconds(Clock::now() - enroll_start);
  const auto enroll_tpm = relay->stats().Since(tpm0);

  // ---- Renewing them all while the sensors publish. ----
  Publisher publisher(h.broker().port(), sensors, rate);
  if (!publisher.connected()) return Fail("the publisher cannot reach the local broker");
  std::this_thread::sleep_for(3s);
  std::printf("renew: %s, %g messages a second over %d sensors...\n",
              rollover ? "a new CA and a reload" : "renew --all", rate, sensors);
  std::fflush(stdout);
  auto tpm1 = relay->stats();
  auto renew_start = Clock::now();
  std::string new_ca;
  if (rollover) {
    auto made = h.MakeSecondCa();
    if (!made.ok()) return Fail("second CA: " + made.status().ToString());
    new_ca = *made;
    h.UseSecondCa();
    renew_start = Clock::now();  // from the reload: the CA's registration is the operator's
    kill(h.agent().pid(), SIGHUP);
  } else {
    auto asked = h.Cli({"renew", "--all"});
    if (asked.exit_code != 0) return Fail("renew --all: " + asked.output);
  }
  if (!h.WaitForStatus([&](const std::string& s) { return All(s, Renewed, identities); }, 900s,
                       &status)) {
    publisher.Stop();
    return Fail("not every identity renewed: " + status);
  }
  const double renew_s = Seconds(Clock::now() - renew_start);
  const auto renew_tpm = relay->stats().Since(tpm1);
  std::this_thread::sleep_for(3s);
  const int64_t sent = publisher.Stop();

  // Every message arrives; the largest gap between two arrivals of a sensor.
  std::vector<ga::testing::CloudMessage> got;
  ga::testing::WaitForCloudCount(h.sim(), static_cast<size_t>(sent), 120s, &got, /*distinct=*/true);
  std::set<std::pair<std::string, std::string>> distinct;
  for (const auto& m : got) distinct.insert({m.topic, m.payload_b64});
  std::map<std::string, int64_t> last;
  std::vector<int64_t> largest_by_sensor;
  std::map<std::string, int64_t> largest;
  std::string worst_topic;
  int64_t worst_gap = -1, worst_from = 0, first_time = 0;
  for (const Json& p : ga::testing::SimPublishes(h.sim())) {
    const std::string topic = ga::testing::Str(p, "topic");
    const int64_t t = p.value("time", int64_t{0});
    if (first_time == 0) first_time = t;
    // The sensors' messages (dt/<thing>/seq), not AWS IoT's own events.
    if (topic.rfind("dt/", 0) != 0) continue;
    if (auto it = last.find(topic); it != last.end()) {
      largest[topic] = std::max(largest[topic], t - it->second);
      if (t - it->second > worst_gap) {
        worst_gap = t - it->second;
        worst_topic = topic;
        worst_from = it->second - first_time;
      }
    }
    last[topic] = t;
  }
  for (const auto& [topic, gap] : largest) largest_by_sensor.push_back(gap);
  std::sort(largest_by_sensor.begin(), largest_by_sensor.end());

  // In AWS: one ACTIVE certificate per thing, the one in use.
  auto certs = ga::testing::Parse(h.sim().Aws({"list-certificates"}).output);
  int active = 0;
  for (const Json& c : certs.value("certificates", Json::array())) {
    if (c.value("status", "") == "ACTIVE") ++active;
  }
  // After a rollover every one of them is the new CA's.
  int of_new_ca = 0;
  if (rollover) {
    auto by_ca = ga::testing::Parse(
        h.sim().Aws({"list-certificates-by-ca", "--ca-certificate-id", new_ca}).output);
    for (const Json& c : by_ca.value("certificates", Json::array())) {
      if (c.value("status", "") == "ACTIVE") ++of_new_ca;
    }
  }
  auto violations = h.sim().ViolationCount();
  h.agent().Signal(SIGTERM, 20s);

  std::printf("enroll: %d identities in %.1f s; TPM commands %lld:%s\n", identities, enroll_s,
              static_cast<long long>(Commands(enroll_tpm)),
              TpmCommandCounts(enroll_tpm.commands).c_str());
  std::printf("renew:  %d identities in %.1f s; TPM commands %lld:%s\n", identities, renew_s,
              static_cast<long long>(Commands(renew_tpm)),
              TpmCommandCounts(renew_tpm.commands).c_str());
  std::printf("ratio: renew %.1f s / enroll %.1f s = %.2f\n", renew_s, enroll_s,
              renew_s / enroll_s);
  if (!largest_by_sensor.empty()) {
    std::printf(
        "switch-over: largest gap between two arrivals of one sensor: %lld ms (median over "
        "sensors %lld ms) at %.1f messages a second per sensor\n",
        static_cast<long long>(largest_by_sensor.back()),
        static_cast<long long>(largest_by_sensor[largest_by_sensor.size() / 2]), rate / sensors);
    std::printf("switch-over: the largest on %s, from %.1f s after the first message\n",
                worst_topic.c_str(), static_cast<double>(worst_from) / 1000);
    // What the agent said of that sensor (its id is the thing's part after ':').
    const std::string thing = worst_topic.substr(3, worst_topic.find('/', 3) - 3);
    const std::string sensor = thing.substr(thing.find(':') + 1);
    auto lines = ga::testing::RunCommand({"grep", "-E", "-m", "40",
                                          "(identity|connection) " + sensor + "[ :]",
                                          (h.dir() / "agent.log").string()});
    std::printf("switch-over: the agent's lines on %s:\n%s", sensor.c_str(), lines.output.c_str());
    auto sim_lines =
        ga::testing::RunCommand({"grep", "-F", "-m", "40", thing, h.sim().log_path().string()});
    std::printf("switch-over: iot-sim's lines on %s:\n%s", thing.c_str(), sim_lines.output.c_str());
  }
  std::printf("messages: %lld published, %zu distinct arrived (%zu deliveries)\n",
              static_cast<long long>(sent), distinct.size(), got.size());
  std::printf("certificates ACTIVE in AWS: %d for %d identities; violations: %s\n", active,
              identities, violations.ok() ? std::to_string(*violations).c_str() : "?");
  if (static_cast<int64_t>(distinct.size()) != sent) return Fail("messages were lost");
  if (active != identities) return Fail("a certificate besides the one in use is ACTIVE");
  if (rollover) {
    std::printf("rollover: %d ACTIVE certificates of the new CA\n", of_new_ca);
    if (of_new_ca != identities) return Fail("not every identity is on the new CA");
  }
  if (!violations.ok() || *violations != 0) return Fail("iot-sim counted AWS limit violations");
  return 0;
}
