// Bridge benchmarks (issue 7), one program run:
//
//   1. throughput and CPU time per message, sensor -> cloud at QoS 1, 100
//      sensors, durable outbox: the agent against mosquitto's own bridge over
//      the same path (local mosquitto -> bridge -> a TLS mosquitto as "cloud").
//      The agent is measured twice: against iot-sim (the AWS stand-in, rate
//      limits lifted with --max-publish-rate 0 --max-throughput 0) and against
//      the same TLS mosquitto "cloud" the mosquitto bridge uses (like for like).
//      The agent's own per-connection rate limits are lifted for these runs
//      (GATEWAY_AGENT_TEST_UNLIMITED_RATE=1; the in-flight window stays 100).
//   2. latency p50/p99 from local publish to cloud arrival at 1,000 msg/s
//      (iot-sim's routing time, 1 ms resolution; and the TLS mosquitto cloud,
//      measured by a subscriber, microseconds).
//   3. resident memory of the agent with 1,000 sensor cloud connections (+ gateway).
//   4. reconnect storm: the cloud (iot-sim) goes down for --outage seconds;
//      time from its restart until all 1,001 identities are connected again.
//   5. (only when --only names it) a slow link: the agent's cloud connections
//      through a relay adding --rtt-ms of round trip time (300); one sensor's
//      throughput against inflight_window / RTT, and enrollment through it
//      (slow_link.cc).
//
//   bench_bridge [--only 1,2,3,4,5] [--messages N] [--sensors N] [--big-sensors N]
//                [--rounds N] [--latency-seconds S] [--outage S] [--storms N] [--keep-log FILE]
//                [--rtt-ms N] [--slow-messages N] [--slow-sensors N]
//                [--tpm-profile swtpm|discrete]
//
// --tpm-profile puts the latency model of tests/fixtures/tpm_latency.h between
// the agent and swtpm for 3 and 4; the storm then prints the TPM commands it
// took and `tpm-bound ratio: R`: the storm's time over what the modelled chip
// needs at least, a Load and a Sign per identity (a chip holds about 3
// transient objects, so each handshake loads its key).
//
// Exits non-zero when a run cannot complete (messages missing, identities not
// connected); targets not met are reported, not treated as failures.
#include "bench_bridge.h"

#include <mosquitto.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway_agent/agent/control.h"
#include "gateway_agent/agent/daemon.h"

namespace {

using namespace ga::bench;
using ga::testing::CpuSeconds;
using ga::testing::HarnessOptions;
using ga::testing::Mosquitto;
using ga::testing::MosquittoOptions;
using ga::testing::TpmCommandCounts;
using ga::testing::TpmLatencyRelay;

// The machine's CPU counters (all cores, in clock ticks): busy and total.
struct MachineCpu {
  double busy = 0, total = 0;
};
MachineCpu ReadMachineCpu() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;  // "cpu": the sum over all cores
  MachineCpu m;
  for (int i = 0; i < 8; ++i) {  // user nice system idle iowait irq softirq steal
    double v = 0;
    if (!(in >> v)) break;
    m.total += v;
    if (i != 3 && i != 4) m.busy += v;
  }
  return m;
}

// A line of /proc/<pid>/status in KiB (VmRSS, VmHWM).
long StatusKiB(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atol(line.c_str() + key.size() + 1);
  }
  return -1;
}

std::string Base64Decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : in) {
    int v = val(c);
    if (v < 0) continue;
    buf = (buf << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}

struct RunResult {
  double seconds = 0;
  double rate = 0;          // msg/s end to end
  double cpu_bridge = 0;    // s: the bridging process (agent, or the bridging broker)
  double cpu_local = 0;     // s: the agent's local broker (0 for the mosquitto bridge)
  double cpu_cloud = 0;     // s: the cloud process
  double machine_busy = 0;  // share of all cores busy during the run (0..1)
};

// Publishes `n` QoS 1 messages round robin over `sensors` sensors as fast as
// libmosquitto takes them; done when `arrived()` reaches n.
RunResult Throughput(Client& pub, int n, int sensors, size_t payload_size,
                     const std::function<int64_t()>& arrived, pid_t bridge, pid_t local,
                     pid_t cloud) {
  RunResult r;
  std::vector<std::string> topics;
  for (int s = 1; s <= sensors; ++s) topics.push_back("sensors/s" + std::to_string(s) + "/temp");
  double b0 = CpuSeconds(bridge), l0 = local > 0 ? CpuSeconds(local) : 0, c0 = CpuSeconds(cloud);
  MachineCpu m0 = ReadMachineCpu();
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i)
    pub.Publish(topics[static_cast<size_t>(i % sensors)], Payload(payload_size));
  if (!WaitFor([&] { return arrived() >= n; }, 180s, 10ms)) {
    Fail("throughput run: only " + std::to_string(arrived()) + " of " + std::to_string(n) +
         " messages arrived in the cloud within 180 s");
  }
  r.seconds = Seconds(Clock::now() - t0);
  r.rate = n / r.seconds;
  r.cpu_bridge = CpuSeconds(bridge) - b0;
  r.cpu_local = local > 0 ? CpuSeconds(local) - l0 : 0;
  r.cpu_cloud = CpuSeconds(cloud) - c0;
  MachineCpu m1 = ReadMachineCpu();
  if (m1.total > m0.total) r.machine_busy = (m1.busy - m0.busy) / (m1.total - m0.total);
  return r;
}

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
  size_t count = 0;
};
Percentiles Pct(std::vector<int64_t> v_us) {
  Percentiles p;
  p.count = v_us.size();
  if (v_us.empty()) return p;
  std::sort(v_us.begin(), v_us.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v_us.size() - 1) + 0.5);
    return static_cast<double>(v_us[i]) / 1000.0;
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = static_cast<double>(v_us.back()) / 1000.0;
  return p;
}

// Publishes at `rate` msg/s for `seconds`, round robin over sensors.
int PacedPublish(Client& pub, int rate, int seconds, int sensors) {
  int n = rate * seconds;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::microseconds(int64_t(i) * 1000000 / rate));
    pub.Publish("sensors/s" + std::to_string(i % sensors + 1) + "/lat", Payload(64));
  }
  return n;
}

// Latencies from the sim's publish log: routing time (ms) - payload time (us).
std::vector<int64_t> SimLatencies(IotSim& sim, int64_t since) {
  auto r = sim.Http("GET", "/_sim/publishes?limit=1000000&since=" + std::to_string(since));
  std::vector<int64_t> out;
  size_t p = 0;
  while ((p = r.body.find("\"time\":", p)) != std::string::npos) {
    p += 7;
    int64_t time_ms = std::atoll(r.body.c_str() + p);
    size_t q = r.body.find("\"topic\":\"", p);
    size_t pl = r.body.find("\"payload\":\"", p);
    if (pl == std::string::npos || q == std::string::npos) break;
    std::string topic = r.body.substr(q + 9, r.body.find('"', q + 9) - q - 9);
    pl += 11;
    size_t end = r.body.find('"', pl);
    if (topic.find("/lat") == std::string::npos) continue;
    std::string payload = Base64Decode(std::string_view(r.body).substr(pl, end - pl));
    // Date.now() truncates to the ms: take the middle of that millisecond.
    out.push_back(time_ms * 1000 + 500 - std::atoll(payload.c_str()));
    p = end;
  }
  return out;
}

// A software key and certificate from the harness's file CA (for mosquitto's
// bridge, which cannot use the TPM key).
void IssueSoftwareCert(AgentHarness& h, const std::filesystem::path& dir, const std::string& cn) {
  auto key = (dir / (cn + ".key")).string(), csr = (dir / (cn + ".csr")).string(),
       crt = (dir / (cn + ".pem")).string();
  for (auto argv : std::vector<std::vector<std::string>>{
           {"openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key},
           {"openssl", "req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr},
           {"openssl", "x509", "-req", "-in", csr, "-CA", (h.ca_dir() / "ca.pem").string(),
            "-CAkey", (h.ca_dir() / "ca.key").string(), "-CAcreateserial", "-CAserial",
            (dir / "ca.srl").string(), "-days", "2", "-sha256", "-out", crt}}) {
    auto r = RunCommand(argv);
    if (r.exit_code != 0) Fail("openssl: " + r.output);
  }
}

struct Args {
  std::set<int> only = {1, 2, 3, 4};
  int messages = 50000;
  int sensors = 100;
  int big_sensors = 1000;
  int latency_seconds = 10;
  int outage = 10;
  size_t payload = 100;
  std::string keep_log;  // copy agent.log of the 1,000-identity run here
  int storms = 1;        // outages in a row (RSS after each)
  int rounds = 3;        // agent/bridge throughput rounds, alternating who goes first
  int rtt_ms = 300;      // 5: the slow link's round trip time
  int slow_messages = 3000;
  int slow_sensors = 3;
  std::string tpm_profile;  // 3 and 4: the latency model in front of swtpm
};

// ---- 1 and 2 ----

// Latency at 1,000 msg/s through `pub`, as `sub` (on the TLS mosquitto) sees it.
void SubscriberLatency(Client& pub, Client& sub, const Args& a, const char* path) {
  sub.RecordLatency(true);
  int n = PacedPublish(pub, 1000, a.latency_seconds, a.sensors);
  WaitFor([&] { return static_cast<int>(sub.latencies_us().size()) >= n; }, 60s);
  auto p = Pct(sub.latencies_us());
  std::printf("latency at 1000 msg/s (%s, %zu msgs): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", path,
              p.count, p.p50, p.p99, p.max);
  sub.RecordLatency(false);
}

void ThroughputAndLatency(const Args& a) {
  std::printf("== 1/2: %d sensors, %d messages of %zu bytes at QoS 1 ==\n", a.sensors, a.messages,
              a.payload);
  HarnessOptions o;
  o.sensors = a.sensors;
  o.sim_args = {"--max-publish-rate", "0", "--max-throughput", "0"};
  // publish_rate 100 is the most config validation allows (AWS's per-connection
  // limit); the test hook below lifts the publish and byte rates for this run.
  o.extra_config =
      "\n[bridge]\npublish_rate = 100\ninflight_window = 100\nfsync_every_commit = false\n";
  auto hr = AgentHarness::Start(o);
  if (!hr.ok()) Fail("harness: " + hr.status().ToString());
  AgentHarness& h = **hr;
  const std::map<std::string, std::string> unlimited = {{"GATEWAY_AGENT_TEST_UNLIMITED_RATE", "1"}};
  if (!h.StartAgent(unlimited).ok()) Fail("cannot start the agent");
  if (!h.WaitForState("ACTIVE", h.identities(), 180s))
    Fail("enrollment did not finish\n" + Tail(h.dir() / "agent.log"));
  WaitAgentCloud(h, h.identities(), 60s, /*sim=*/true);
  pid_t agent = h.agent().pid();

  // The TLS mosquitto "cloud": the sim's server certificate (for localhost,
  // signed by the root the agent trusts), client certificates from our CA,
  // and a plain listener for the measuring subscriber.
  auto tls_dir = h.sim().root_ca().parent_path();
  int sub_port = ga::testing::FreePort();
  MosquittoOptions co;
  co.tls_cert = tls_dir / "server.pem";
  co.tls_key = tls_dir / "server.key";
  co.tls_client_ca = h.ca_dir() / "ca.pem";
  co.extra_config = "listener " + std::to_string(sub_port) + " 127.0.0.1\n";
  auto cloud = Mosquitto::Start(co);
  if (!cloud.ok()) Fail("cloud mosquitto: " + cloud.status().ToString());

  // 1a. agent -> iot-sim
  RunResult sim_run;
  {
    Client pub(h.broker().port(), "bench-pub");
    int64_t base = SimLastSeq(h.sim());
    pub.Publish("sensors/s1/temp", "warm-up");
    if (!WaitFor([&] { return SimLastSeq(h.sim()) > base; }, 20s)) {
      Fail("warm-up did not arrive\n" + Tail(h.dir() / "agent.log"));
    }
    std::this_thread::sleep_for(200ms);
    base = SimLastSeq(h.sim());
    std::printf("(agent pid %d: throughput run into iot-sim starts)\n", static_cast<int>(agent));
    std::fflush(stdout);
    sim_run = Throughput(
        pub, a.messages, a.sensors, a.payload, [&] { return SimLastSeq(h.sim()) - base; }, agent,
        h.broker().process().pid(), h.sim().process().pid());
    std::printf(
        "agent -> iot-sim:            %8.0f msg/s (%.2f s), agent CPU %.2f s, local broker %.2f s, "
        "iot-sim %.2f s\n",
        sim_run.rate, sim_run.seconds, sim_run.cpu_bridge, sim_run.cpu_local, sim_run.cpu_cloud);
    std::fflush(stdout);

    // 2a. latency at 1,000 msg/s into iot-sim
    if (a.only.count(2)) {
      int64_t lbase = SimLastSeq(h.sim());
      int n = PacedPublish(pub, 1000, a.latency_seconds, a.sensors);
      if (!WaitFor([&] { return SimLastSeq(h.sim()) - lbase >= n; }, 60s))
        Fail("latency messages missing");
      auto p = Pct(SimLatencies(h.sim(), lbase));
      std::printf(
          "latency at 1000 msg/s (agent -> iot-sim, %zu msgs, arrival +-0.5 ms): p50 %.1f ms, p99 "
          "%.1f ms, max %.1f ms\n",
          p.count, p.p50, p.p99, p.max);
      std::fflush(stdout);
    }
  }

  // 1b/1c. The agent -> TLS mosquitto (same identities, same TPM keys) and
  // mosquitto's own bridge -> the same TLS mosquitto, in alternating rounds
  // (agent first, then bridge first, ...) so that neither always runs on a
  // warmer or busier machine; the median of the rounds' ratios is reported.
  if (!h.agent().Signal(SIGTERM, 20s).has_value()) Fail("agent did not stop");
  int sim_port = h.sim().mqtt_port();
  h.RewriteConfig([&](std::string& t) {
    t = ReplaceOnce(t, "port = " + std::to_string(sim_port) + "\n",
                    "port = " + std::to_string((*cloud)->port()) + "\n");
  });
  if (!h.StartAgent(unlimited).ok()) Fail("cannot restart the agent");
  agent = h.agent().pid();
  WaitAgentCloud(h, h.identities(), 60s, /*sim=*/false);

  // The bridging mosquitto: same fixture settings as the agent's local broker
  // (persistence on), plus a connection section.
  IssueSoftwareCert(h, h.dir(), "bench-bridge");
  MosquittoOptions lo;
  lo.extra_config =
      "connection cloud\naddress 127.0.0.1:" + std::to_string((*cloud)->port()) +
      "\ntopic sensors/# out 1\nbridge_cafile " + h.sim().root_ca().string() +
      "\nbridge_certfile " + (h.dir() / "bench-bridge.pem").string() + "\nbridge_keyfile " +
      (h.dir() / "bench-bridge.key").string() +
      "\ncleansession false\nclientid bench-bridge\nbridge_protocol_version mqttv311\n";
  auto local = Mosquitto::Start(lo);
  if (!local.ok()) Fail("bridging mosquitto: " + local.status().ToString());

  std::vector<RunResult> agent_runs, bridge_runs;
  std::printf("(agent pid %d, bridging mosquitto pid %d: rounds against the TLS mosquitto)\n",
              static_cast<int>(agent), static_cast<int>((*local)->process().pid()));
  std::fflush(stdout);
  {
    Client sub(sub_port, "bench-sub");
    sub.Subscribe({"dt/#", "sensors/#"}, 0);
    Client agent_pub(h.broker().port(), "bench-pub2");
    Client bridge_pub((*local)->port(), "bench-pub3");
    agent_pub.Publish("sensors/s1/temp", "warm-up");
    if (!WaitFor([&] { return sub.received() > 0; }, 20s))
      Fail("warm-up via the agent to mosquitto did not arrive\n" + Tail(h.dir() / "agent.log"));
    int64_t seen = sub.received();
    if (!WaitFor(
            [&] {
              bridge_pub.Publish("sensors/s1/temp", "warm-up");
              return sub.received() > seen;
            },
            20s, 500ms)) {
      Fail("mosquitto's bridge did not deliver\n" + Tail((*local)->dir() / "mosquitto.log"));
    }
    std::this_thread::sleep_for(1s);

    auto run_agent = [&](int round) {
      int64_t base = sub.received();
      auto r = Throughput(
          agent_pub, a.messages, a.sensors, a.payload, [&] { return sub.received() - base; }, agent,
          h.broker().process().pid(), (*cloud)->process().pid());
      std::printf(
          "round %d agent -> TLS mosquitto:   %8.0f msg/s (%.2f s), agent CPU %.2f s, local "
          "broker %.2f s, cloud %.2f s, machine %.0f%% busy\n",
          round, r.rate, r.seconds, r.cpu_bridge, r.cpu_local, r.cpu_cloud, 100 * r.machine_busy);
      agent_runs.push_back(r);
    };
    auto run_bridge = [&](int round) {
      int64_t base = sub.received();
      auto r = Throughput(
          bridge_pub, a.messages, a.sensors, a.payload, [&] { return sub.received() - base; },
          (*local)->process().pid(), 0, (*cloud)->process().pid());
      std::printf(
          "round %d mosquitto bridge -> TLS:  %8.0f msg/s (%.2f s), bridging broker CPU %.2f s, "
          "cloud %.2f s, machine %.0f%% busy\n",
          round, r.rate, r.seconds, r.cpu_bridge, r.cpu_cloud, 100 * r.machine_busy);
      bridge_runs.push_back(r);
    };
    for (int round = 1; round <= a.rounds; ++round) {
      if (round % 2 == 1) {
        run_agent(round);
        run_bridge(round);
      } else {
        run_bridge(round);
        run_agent(round);
      }
      std::fflush(stdout);
    }
    if (a.only.count(2)) {
      SubscriberLatency(agent_pub, sub, a, "agent -> TLS mosquitto");
      SubscriberLatency(bridge_pub, sub, a, "mosquitto bridge -> TLS mosquitto");
    }
  }
  h.agent().Signal(SIGTERM, 20s);

  const double n = a.messages;
  auto us = [&](double cpu) { return cpu * 1e6 / n; };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  auto over = [](const std::vector<RunResult>& runs, double RunResult::*field) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r.*field);
    return v;
  };
  std::vector<double> ratios;
  std::string ratio_list;
  for (size_t i = 0; i < agent_runs.size(); ++i) {
    ratios.push_back(agent_runs[i].rate / bridge_runs[i].rate);
    char b[16];
    std::snprintf(b, sizeof b, "%s%.2f", i ? ", " : "", ratios.back());
    ratio_list += b;
  }
  const double ratio = median(ratios);
  const double agent_rate = median(over(agent_runs, &RunResult::rate));
  const double bridge_rate = median(over(bridge_runs, &RunResult::rate));
  const double agent_cpu = median(over(agent_runs, &RunResult::cpu_bridge));
  const double local_cpu = median(over(agent_runs, &RunResult::cpu_local));
  const double agent_cloud = median(over(agent_runs, &RunResult::cpu_cloud));
  const double bridge_cpu = median(over(bridge_runs, &RunResult::cpu_bridge));
  const double bridge_cloud = median(over(bridge_runs, &RunResult::cpu_cloud));
  std::printf("\n");
  std::printf(
      "throughput: agent %.0f msg/s (durable, fsync_every_commit=false), mosquitto bridge %.0f "
      "msg/s (medians of %d rounds); ratio X/Y per round %s, median %.2f  [agent -> TLS "
      "mosquitto, like for like]\n",
      agent_rate, bridge_rate, a.rounds, ratio_list.c_str(), ratio);
  std::printf("throughput: agent %.0f msg/s -> iot-sim, ratio to the mosquitto bridge = %.2f\n",
              sim_run.rate, sim_run.rate / bridge_rate);
  std::printf(
      "  agent per-connection rate limits lifted (GATEWAY_AGENT_TEST_UNLIMITED_RATE=1), "
      "inflight_window 100\n");
  std::printf(
      "cpu per message: agent %.1f us, mosquitto bridge %.1f us, ratio %.2f  [agent process vs. "
      "the bridging broker, agent -> TLS mosquitto, medians]\n",
      us(agent_cpu), us(bridge_cpu), agent_cpu / bridge_cpu);
  std::printf(
      "cpu per message along the path: agent %.1f + its local broker %.1f + cloud %.1f = %.1f us; "
      "bridging broker %.1f + cloud %.1f = %.1f us\n",
      us(agent_cpu), us(local_cpu), us(agent_cloud), us(agent_cpu + local_cpu + agent_cloud),
      us(bridge_cpu), us(bridge_cloud), us(bridge_cpu + bridge_cloud));
  std::printf("cpu per message (agent -> iot-sim): agent %.1f us, local broker %.1f us\n",
              us(sim_run.cpu_bridge), us(sim_run.cpu_local));
  std::printf("target (agent >= bridge throughput, durable): %s\n",
              ratio >= 1.0 ? "met" : "NOT met");
  RequireNoViolations(h, "after figures 1 and 2");
  std::printf("\n");
  std::fflush(stdout);
}

// ---- 3 and 4 ----

// The TPM's share of a reconnect storm: the commands since `before`, and the
// storm's time over its lower bound on the modelled chip.
void PrintStormTpmBound(const TpmLatencyRelay& relay, const TpmLatencyRelay::Stats& before, int ids,
                        double storm_s) {
  const TpmLatencyRelay::Stats storm = relay.stats().Since(before);
  const double bound = std::chrono::duration<double>(relay.TimeOf({{ga::testing::kTpmCcLoad, ids},
                                                                   {ga::testing::kTpmCcSign, ids}}))
                           .count();
  std::printf("  tpm profile %s during the storm:%s; TPM busy %.2f s\n",
              relay.profile().name.c_str(), TpmCommandCounts(storm.commands).c_str(),
              std::chrono::duration<double>(storm.busy).count());
  std::printf("  tpm-bound: %.2f s (%d x Load + Sign)\n", bound, ids);
  std::printf("  tpm-bound ratio: %.2f (storm %.1f s / bound %.2f s)\n",
              bound > 0 ? storm_s / bound : 0.0, storm_s, bound);
}

void ScaleAndStorm(const Args& a) {
  std::printf("== 3/4: %d sensors + gateway, connect_rate 500/s ==\n", a.big_sensors);
  std::fflush(stdout);
  HarnessOptions o;
  o.sensors = a.big_sensors;
  o.tpm_profile = a.tpm_profile;
  auto hr = AgentHarness::Start(o);
  if (!hr.ok()) Fail("harness: " + hr.status().ToString());
  AgentHarness& h = **hr;
  h.RewriteConfig([](std::string& t) {
    t = ReplaceOnce(t, "connect_rate = 100.0", "connect_rate = 500.0");
    t = ReplaceOnce(t, "log_level = \"debug\"", "log_level = \"info\"");
  });
  const int ids = h.identities();
  auto t0 = Clock::now();
  if (!h.StartAgent().ok()) Fail("cannot start the agent");
  if (!h.WaitForState("ACTIVE", ids, 300s))
    Fail("enrollment of " + std::to_string(ids) + " did not finish\n" +
         Tail(h.dir() / "agent.log"));
  double enrolled = Seconds(Clock::now() - t0);
  if (!WaitFor([&] { return SimClients(h.sim()) >= ids; }, 120s, 250ms)) {
    Fail("only " + std::to_string(SimClients(h.sim())) + " of " + std::to_string(ids) +
         " cloud connections\n" + Tail(h.dir() / "agent.log"));
  }
  double all_connected = Seconds(Clock::now() - t0);
  std::printf("enrolled %d identities in %.1f s; all %d cloud connections up after %.1f s\n", ids,
              enrolled, ids, all_connected);
  pid_t agent = h.agent().pid();
  if (a.only.count(3)) {
    std::this_thread::sleep_for(3s);  // settle
    double rss = StatusKiB(agent, "VmRSS") / 1024.0, hwm = StatusKiB(agent, "VmHWM") / 1024.0;
    std::printf(
        "rss with %d cloud connections: %.1f MiB (target <= 64: %s), peak (VmHWM) %.1f MiB\n", ids,
        rss, rss <= 64 ? "met" : "NOT met", hwm);
    RequireNoViolations(h, "with " + std::to_string(ids) + " connections");
    std::fflush(stdout);
  }
  for (int storm_no = 1; a.only.count(4) && storm_no <= a.storms; ++storm_no) {
    auto down = Clock::now();
    std::optional<TpmLatencyRelay::Stats> tpm_before;
    if (h.tpm_relay() != nullptr) tpm_before = h.tpm_relay()->stats();
    h.sim().process().Stop();
    std::this_thread::sleep_for(std::chrono::seconds(a.outage));
    // The control socket during the storm: a request every 100 ms.
    std::atomic<bool> storm_over{false};
    std::vector<double> control_ms;
    std::thread control([&] {
      const std::filesystem::path socket = h.dir() / "run" / ga::kControlSocket;
      while (!storm_over) {
        auto sent = Clock::now();
        auto reply = ga::ControlRequest(socket, {"sensor-list", {}}, 10s);
        control_ms.push_back(reply.ok() ? Seconds(Clock::now() - sent) * 1000 : 10000.0);
        std::this_thread::sleep_for(100ms);
      }
    });
    ga::Status s = h.sim().Restart();
    if (!s.ok()) Fail("sim restart: " + s.ToString());
    auto up = Clock::now();
    const int64_t up_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    int last = 0;
    std::vector<std::pair<double, int>> marks;
    bool ok = WaitFor(
        [&] {
          last = SimClients(h.sim());
          if (marks.empty() || marks.back().second != last)
            marks.emplace_back(Seconds(Clock::now() - up), last);
          return last >= ids;
        },
        180s, 100ms);
    double storm = Seconds(Clock::now() - up);
    storm_over = true;
    control.join();
    const int64_t gateway_at = ConnectedAt(h.sim(), "gw-test");
    int before_gateway = 0;
    for (int64_t at : ConnectTimes(h.sim())) before_gateway += at < gateway_at ? 1 : 0;
    std::printf("  the gateway's own connection back after %.2f s (%d identities before it)\n",
                gateway_at > 0 ? (gateway_at - up_ms) / 1000.0 : -1.0, before_gateway);
    std::sort(control_ms.begin(), control_ms.end());
    if (!control_ms.empty()) {
      std::printf(
          "  control p99 during storm: %.0f ms (%zu sensor-list requests, median %.0f ms)\n",
          control_ms[std::min(control_ms.size() - 1, control_ms.size() * 99 / 100)],
          control_ms.size(), control_ms[control_ms.size() / 2]);
    }
    std::string curve;
    for (double q : {0.5, 0.9, 0.99}) {
      for (auto& [t, c] : marks) {
        if (c >= q * ids) {
          char b[64];
          std::snprintf(b, sizeof b, " %.0f%% at %.1f s;", q * 100, t);
          curve += b;
          break;
        }
      }
    }
    std::string timeline;
    double next_mark = 0;
    for (auto& [t, c] : marks) {
      if (t >= next_mark) {
        char b[48];
        std::snprintf(b, sizeof b, " %.1fs:%d", t, c);
        timeline += b;
        next_mark = t + 2.0;
      }
    }
    std::printf("  connected over time since the restart:%s\n", timeline.c_str());
    if (!a.keep_log.empty()) {
      std::filesystem::copy_file(h.dir() / "agent.log", a.keep_log,
                                 std::filesystem::copy_options::overwrite_existing);
    }
    if (!ok)
      Fail("reconnect storm: only " + std::to_string(last) + " of " + std::to_string(ids) +
           " back after 180 s");
    std::printf(
        "reconnect storm: %d identities connected again after %.1f s (after a %d s outage; %.1f s "
        "from the outage's start);%s\n",
        ids, storm, a.outage, Seconds(Clock::now() - down), curve.c_str());
    if (tpm_before) PrintStormTpmBound(*h.tpm_relay(), *tpm_before, ids, storm);
    RequireNoViolations(h, "after storm " + std::to_string(storm_no));
    std::this_thread::sleep_for(3s);  // settle, as before figure 3
    double rss = StatusKiB(agent, "VmRSS") / 1024.0;
    std::printf("  rss after storm %d (3 s after): %.1f MiB\n", storm_no, rss);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--only") {
      a.only.clear();
      std::stringstream ss(next());
      std::string part;
      while (std::getline(ss, part, ',')) a.only.insert(std::atoi(part.c_str()));
    } else if (k == "--messages") {
      a.messages = std::atoi(next().c_str());
    } else if (k == "--sensors") {
      a.sensors = std::atoi(next().c_str());
    } else if (k == "--big-sensors") {
      a.big_sensors = std::atoi(next().c_str());
    } else if (k == "--latency-seconds") {
      a.latency_seconds = std::atoi(next().c_str());
    } else if (k == "--storms") {
      a.storms = std::atoi(next().c_str());
    } else if (k == "--rounds") {
      a.rounds = std::max(1, std::atoi(next().c_str()));
    } else if (k == "--keep-log") {
      a.keep_log = next();
    } else if (k == "--outage") {
      a.outage = std::atoi(next().c_str());
    } else if (k == "--rtt-ms") {
      a.rtt_ms = std::max(0, std::atoi(next().c_str()));
    } else if (k == "--slow-messages") {
      a.slow_messages = std::max(1, std::atoi(next().c_str()));
    } else if (k == "--slow-sensors") {
      a.slow_sensors = std::max(1, std::atoi(next().c_str()));
    } else if (k == "--tpm-profile") {
      a.tpm_profile = next();
    } else {
      std::fprintf(stderr,
                   "usage: bench_bridge [--only 1,2,3,4,5] [--messages N] [--sensors N] "
                   "[--big-sensors N] [--rounds N] [--latency-seconds S] [--outage S] [--storms N] "
                   "[--keep-log FILE] [--rtt-ms N] [--slow-messages N] [--slow-sensors N] "
                   "[--tpm-profile swtpm|discrete]\n");
      return 2;
    }
  }
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  mosquitto_lib_init();
  auto t0 = Clock::now();
  try {
    if (a.only.count(1) || a.only.count(2)) ThroughputAndLatency(a);
    if (a.only.count(3) || a.only.count(4)) ScaleAndStorm(a);
    if (a.only.count(5))
      SlowLink(std::chrono::milliseconds(a.rtt_ms), a.slow_messages, a.slow_sensors);
  } catch (const Failure& f) {
    std::fprintf(stderr, "bench_bridge: %s\n", f.what.c_str());
    return 1;
  }
  std::printf("total %.0f s\n", Seconds(Clock::now() - t0));
  return 0;
}
