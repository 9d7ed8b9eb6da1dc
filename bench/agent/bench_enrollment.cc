// Enrollment benchmark: N sensors (default 200) enrolled into iot-sim by
// `gateway-agent run` (TPM keys on swtpm, file CA, JITR through the shipped
// Lambda) against the seed's shell loop (openssl genrsa/req/x509 -req, the
// chain file, mosquitto_pub until accepted), one run, one sim, Lambda delay 0.
//
//   bench_enrollment [--sensors N] [--seed-budget SECONDS] [--seed-min M]
//                    [--connect-rate R] [--tpm-profile swtpm|discrete]
//
// --tpm-profile puts the latency model of tests/fixtures/tpm_latency.h
// between the agent and swtpm ("discrete": a TPM chip's command times) and
// prints the TPM's share: the commands sent, the time the modelled TPM was
// busy, and `tpm-bound ratio: R`, the enrollment's wall time over its TPM
// lower bound, the commands that must run one after the other on one chip:
// per identity Create, Load and a Sign for the CSR, and a Sign for each TLS
// handshake of its connects (JITR's dropped ones and the accepted one).
//
// The agent runs with the configuration a user gets by default ([enrollment]
// concurrency 8, backoff 1s..5m; [aws] connect_rate 10/s); --connect-rate
// overrides the account-wide connect rate. The seed loop runs one device after
// the other until all N are enrolled or --seed-budget (default: what is left
// of a 240 s total, at least 60 s) is used up, with at least --seed-min
// devices (default 40); a partial loop is extrapolated linearly and says so.
//
// Phases of the agent come from its log (agent.log), each line stamped with
// this process's clock when it appears in the file (polled every 2 ms):
// "gateway-agent running" (workers start), "created TPM key" (keygen done),
// "certificate ... issued" (CSR signed in the TPM and certificate issued),
// "registration pending" (a connect dropped by JITR) and "is ACTIVE".
// Exits non-zero when either side fails.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent_harness.h"
#include "gateway_agent/config.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ga::testing::AgentHarness;
using ga::testing::HarnessOptions;
using ga::testing::kTpmCcCreate;
using ga::testing::kTpmCcLoad;
using ga::testing::kTpmCcSign;
using ga::testing::RunCommand;
using ga::testing::TpmCommandCounts;
using ga::testing::TpmLatencyRelay;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "bench_enrollment: %s\n", what.c_str());
  return 1;
}

// What the agent's log says about one identity, in this process's clock.
struct IdentityTimes {
  Clock::time_point key, cert, active;
  std::vector<Clock::time_point> pending;  // connects dropped by JITR
  int attempts = 0;
};

// Follows agent.log as it grows and stamps every complete line on arrival.
class LogWatcher {
 public:
  explicit LogWatcher(std::filesystem::path path) : path_(std::move(path)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~LogWatcher() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  int active() {
    std::lock_guard lock(mu_);
    return active_;
  }
  // Copies of what was seen so far.
  std::map<std::string, IdentityTimes> identities() {
    std::lock_guard lock(mu_);
    return ids_;
  }
  Clock::time_point running() {
    std::lock_guard lock(mu_);
    return running_;
  }
  std::vector<std::string> problems() {
    std::lock_guard lock(mu_);
    return problems_;
  }

 private:
  void Run() {
    std::ifstream in;
    std::string partial;
    char buf[65536];
    while (!stop_) {
      if (!in.is_open()) {
        in.open(path_, std::ios::binary);
        if (!in.is_open()) {
          std::this_thread::sleep_for(2ms);
          continue;
        }
      }
      in.clear();
      in.read(buf, sizeof buf);
      std::streamsize n = in.gcount();
      if (n <= 0) {
        std::this_thread::sleep_for(2ms);
        continue;
      }
      auto now = Clock::now();
      partial.append(buf, static_cast<size_t>(n));
      size_t start = 0, nl;
      while ((nl = partial.find('\n', start)) != std::string::npos) {
        Line(partial.substr(start, nl - start), now);
        start = nl + 1;
      }
      partial.erase(0, start);
    }
  }

  void Line(const std::string& line, Clock::time_point t) {
    static const std::regex identity_field(" identity=([A-Za-z0-9_-]+)");
    static const std::regex attempts_re("after ([0-9]+) connect attempt");
    std::smatch m;
    std::lock_guard lock(mu_);
    if (line.find("gateway-agent running") != std::string::npos) {
      running_ = t;
      return;
    }
    if (line.find(" warning ") != std::string::npos || line.find(" error ") != std::string::npos ||
        line.find(" WARNING ") != std::string::npos || line.find(" ERROR ") != std::string::npos) {
      if (problems_.size() < 5) problems_.push_back(line);
    }
    if (!std::regex_search(line, m, identity_field)) return;
    IdentityTimes& id = ids_[m[1]];
    if (line.find("created TPM key") != std::string::npos) {
      id.key = t;
    } else if (line.find("issued for thing") != std::string::npos) {
      id.cert = t;
    } else if (line.find("registration pending") != std::string::npos) {
      id.pending.push_back(t);
    } else if (line.find(" is ACTIVE in AWS IoT") != std::string::npos) {
      if (id.active == Clock::time_point()) ++active_;
      id.active = t;
      if (std::regex_search(line, m, attempts_re)) id.attempts = std::stoi(m[1]);
    }
  }

  std::filesystem::path path_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, IdentityTimes> ids_;
  Clock::time_point running_;
  int active_ = 0;
  std::vector<std::string> problems_;
};

// "2026-11-27T15:42:00Z" -> epoch seconds, or -1.
long long ParseIso(const std::string& s) {
  std::tm tm{};
  if (strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm) == nullptr) return -1;
  return static_cast<long long>(timegm(&tm));
}

struct AgentFigures {
  int identities = 0;
  double total = 0;    // process start -> last identity ACTIVE
  double startup = 0;  // process start -> workers running
  double keygen_sum = 0, csr_issue_sum = 0, jitr_sum = 0;
  double first_connect_sum = 0;  // cert issued -> first connect dropped by JITR
  double keygen_span = 0;        // workers running -> last key
  double csr_issue_span = 0;     // first key -> last certificate
  double jitr_span = 0;          // first certificate -> last ACTIVE
  double status_jitr_sum = -1;   // from status --json, 1 s resolution
  int max_attempts = 0;
  int connects = 0;
  double mean_attempts = 0;
};

struct SeedFigures {
  int devices = 0;
  double wall = 0;  // the loop's run time, from this process
  double genrsa = 0, req = 0, x509 = 0, mqtt = 0;
  int max_tries = 0;
  double mean_tries = 0;
};

int Usage() {
  std::fprintf(stderr,
               "usage: bench_enrollment [--sensors N] [--seed-budget SECONDS] [--seed-min M] "
               "[--connect-rate R] [--tpm-profile swtpm|discrete]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int sensors = 200;
  double seed_budget = -1;
  int seed_min = 40;
  double connect_rate = -1;  // the agent's default
  std::string tpm_profile;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    if (a == "--sensors")
      sensors = std::atoi(argv[++i]);
    else if (a == "--seed-budget")
      seed_budget = std::atof(argv[++i]);
    else if (a == "--seed-min")
      seed_min = std::atoi(argv[++i]);
    else if (a == "--connect-rate")
      connect_rate = std::atof(argv[++i]);
    else if (a == "--tpm-profile")
      tpm_profile = argv[++i];
    else
      return Usage();
  }
  if (sensors < 1 || seed_min < 1) return Usage();
  seed_min = std::min(seed_min, sensors);
  auto bench_start = Clock::now();

  // ---- One sim, one CA, the agent's config with a user's defaults. ----
  HarnessOptions o;
  o.sensors = sensors;
  o.lambda_delay_ms = 0;
  o.backoff_initial = "1s";  // the agent's defaults, not the tests' fast ones
  o.backoff_max = "5m";
  o.tpm_profile = tpm_profile;
  auto started = AgentHarness::Start(o);
  if (!started.ok()) return Fail("harness: " + started.status().ToString());
  AgentHarness& h = **started;
  h.RewriteConfig([&](std::string& text) {
    std::string rate = connect_rate > 0 ? "connect_rate = " + std::to_string(connect_rate) : "";
    text = std::regex_replace(text, std::regex("connect_rate = [0-9.]+"), rate);
  });
  const int identities = h.identities();  // the sensors and the gateway itself

  // ---- The agent. ----
  std::printf("agent: enrolling %d sensors + the gateway...\n", sensors);
  std::fflush(stdout);
  LogWatcher watcher(h.dir() / "agent.log");
  auto agent_start = Clock::now();
  if (auto s = h.StartAgent(); !s.ok()) return Fail("start agent: " + s.ToString());
  auto agent_deadline = agent_start + 300s;
  while (watcher.active() < identities && Clock::now() < agent_deadline && h.agent().running()) {
    std::this_thread::sleep_for(2ms);
  }
  // The TPM's share of the enrollment. The bridge's handshakes of the
  // identities already ACTIVE go first on the TPM (tpm_scheduler.h), so
  // those done by now belong to the bound too.
  std::optional<TpmLatencyRelay::Stats> tpm_stats;
  int bridge_connected = 0;
  if (h.tpm_relay() != nullptr) {
    tpm_stats = h.tpm_relay()->stats();
    auto clients = h.sim().Http("GET", "/_sim/clients");
    for (size_t p = 0; (p = clients.body.find("\"clientId\"", p)) != std::string::npos; ++p) {
      ++bridge_connected;
    }
  }
  std::string status;
  if (!h.WaitForState("ACTIVE", identities, 10s, &status)) {
    auto tail = RunCommand({"tail", "-n", "30", (h.dir() / "agent.log").string()});
    return Fail("the agent did not bring all " + std::to_string(identities) +
                " identities to ACTIVE; status: " + status + "\nlog:\n" + tail.output);
  }
  h.agent().Signal(SIGTERM, 20s);
  watcher.Stop();

  AgentFigures af;
  af.identities = identities;
  {
    auto ids = watcher.identities();
    // The workers' start is not logged: "gateway-agent running" comes after
    // enrollment.Start() (and after the local broker is reached), so take it
    // when it precedes the first key, else the first key's line.
    Clock::time_point running = watcher.running();
    for (auto& [name, t] : ids) {
      if (t.key != Clock::time_point() && (running == Clock::time_point() || t.key < running)) {
        running = t.key;
      }
    }
    std::vector<Clock::time_point> keys, certs, actives, first_advance_ends;
    int attempts_sum = 0;
    for (auto& [name, t] : ids) {
      if (t.key == Clock::time_point() || t.cert == Clock::time_point() ||
          t.active == Clock::time_point()) {
        return Fail("agent.log lacks a key, certificate or ACTIVE line for identity " + name);
      }
      keys.push_back(t.key);
      certs.push_back(t.cert);
      actives.push_back(t.active);
      // A worker's first round with an identity ends with its first connect.
      Clock::time_point first_end = t.pending.empty() ? t.active : t.pending.front();
      first_advance_ends.push_back(first_end);
      af.csr_issue_sum += Seconds(t.cert - t.key);
      af.jitr_sum += Seconds(t.active - t.cert);
      af.first_connect_sum += Seconds(first_end - t.cert);
      af.max_attempts = std::max(af.max_attempts, t.attempts);
      attempts_sum += t.attempts;
    }
    if (static_cast<int>(ids.size()) != identities) {
      return Fail("agent.log names " + std::to_string(ids.size()) + " identities, expected " +
                  std::to_string(identities));
    }
    af.mean_attempts = static_cast<double>(attempts_sum) / identities;
    af.connects = attempts_sum;
    // Keygen per identity runs from the moment a worker picks it to its
    // "created TPM key" line. Picks are not logged, but new identities are
    // always picked before retries (next attempt 0), so the picks happen at
    // the workers' start and then at the end of each earlier first round:
    // their sum needs no matching of picks to identities.
    int workers = 8;  // [enrollment] concurrency, the default kept here
    std::sort(first_advance_ends.begin(), first_advance_ends.end());
    double picks = 0;
    for (int i = 0; i < identities; ++i) {
      picks += i < workers ? 0.0 : Seconds(first_advance_ends[i - workers] - running);
    }
    double key_sum = 0;
    for (auto& k : keys) key_sum += Seconds(k - running);
    af.keygen_sum = key_sum - picks;
    auto [kmin, kmax] = std::minmax_element(keys.begin(), keys.end());
    auto [cmin, cmax] = std::minmax_element(certs.begin(), certs.end());
    auto amax = std::max_element(actives.begin(), actives.end());
    af.keygen_span = Seconds(*kmax - running);
    af.csr_issue_span = Seconds(*cmax - *kmin);
    af.jitr_span = Seconds(*amax - *cmin);
    af.total = Seconds(*amax - agent_start);
    af.startup = Seconds(running - agent_start);
    (void)cmin;
  }
  // Cross-check with status --json (registeringSince/activeSince, 1 s resolution).
  {
    static const std::regex since("\"registeringSince\":\"([^\"]*)\",\"activeSince\":\"([^\"]*)\"");
    double sum = 0;
    int n = 0;
    for (auto it = std::sregex_iterator(status.begin(), status.end(), since);
         it != std::sregex_iterator(); ++it) {
      long long r = ParseIso((*it)[1]), a = ParseIso((*it)[2]);
      if (r >= 0 && a >= 0) {
        sum += static_cast<double>(a - r);
        ++n;
      }
    }
    if (n == identities) af.status_jitr_sum = sum;
  }
  auto problems = watcher.problems();

  // ---- The seed's loop, same sim, same CA (copied: -CAcreateserial writes next to it). ----
  SeedFigures sf;
  std::filesystem::path seed_dir = h.dir() / "seed";
  std::filesystem::create_directories(seed_dir);
  std::filesystem::copy_file(h.ca_dir() / "ca.pem", seed_dir / "ca.pem");
  std::filesystem::copy_file(h.ca_dir() / "ca.key", seed_dir / "ca.key");
  if (seed_budget <= 0) seed_budget = std::max(60.0, 240.0 - Seconds(Clock::now() - bench_start));
  std::string script = std::string(GA_SOURCE_DIR) + "/bench/agent/seed_enroll.sh";
  std::printf("seed loop: up to %d devices, budget %.0f s (at least %d devices)...\n", sensors,
              seed_budget, seed_min);
  std::fflush(stdout);
  auto run_seed = [&](int first, int count, long long deadline) {
    return RunCommand(
        {"bash", script, (seed_dir / "devices").string(), (seed_dir / "ca.pem").string(),
         (seed_dir / "ca.key").string(), h.sim().root_ca().string(), h.sim().endpoint(),
         std::to_string(h.sim().mqtt_port()), std::to_string(first), std::to_string(count),
         std::to_string(deadline)},
        std::chrono::seconds(static_cast<long long>(seed_budget) + 600), {{"LC_ALL", "C"}});
  };
  auto seed_start = Clock::now();
  // The minimum sample without a deadline, then the rest until the budget ends.
  std::string seed_out;
  auto r1 = run_seed(1, seed_min, 0);
  seed_out += r1.output;
  if (r1.exit_code != 0) return Fail("seed loop failed:\n" + r1.output);
  if (seed_min < sensors) {
    long long deadline = static_cast<long long>(std::time(nullptr)) +
                         static_cast<long long>(seed_budget - Seconds(Clock::now() - seed_start));
    auto r2 = run_seed(seed_min + 1, sensors - seed_min, deadline);
    seed_out += r2.output;
    if (r2.exit_code != 0) return Fail("seed loop failed:\n" + r2.output);
  }
  sf.wall = Seconds(Clock::now() - seed_start);
  {
    std::istringstream lines(seed_out);
    std::string line;
    int tries_sum = 0;
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      std::string thing;
      int tries = 0;
      double t[5];
      if (!(f >> thing >> tries >> t[0] >> t[1] >> t[2] >> t[3] >> t[4])) {
        return Fail("unexpected seed loop output: " + line);
      }
      ++sf.devices;
      sf.genrsa += t[1] - t[0];
      sf.req += t[2] - t[1];
      sf.x509 += t[3] - t[2];
      sf.mqtt += t[4] - t[3];
      tries_sum += tries;
      sf.max_tries = std::max(sf.max_tries, tries);
    }
    if (sf.devices < seed_min) return Fail("seed loop enrolled only " + std::to_string(sf.devices));
    sf.mean_tries = static_cast<double>(tries_sum) / sf.devices;
  }

  // ---- Both sides really got through: ACTIVE certificates, no AWS limit tripped. ----
  auto certs = h.sim().Aws({"list-certificates-by-ca", "--ca-certificate-id", h.ca_id()});
  int active_certs = ga::testing::JsonCount(certs.output, "status", "ACTIVE");
  auto violations = h.sim().Http("GET", "/_sim/violations");
  bool clean = violations.status == 200 &&
               std::regex_search(violations.body, std::regex("\"clients\"\\s*:\\s*\\{\\s*\\}"));

  // ---- Report. ----
  double seed_full = sf.wall / sf.devices * sensors;
  bool extrapolated = sf.devices < sensors;
  double ratio = seed_full / af.total;
  double identity_time = af.keygen_sum + af.csr_issue_sum + af.jitr_sum;
  auto pct = [&](double v) { return 100.0 * v / identity_time; };
  char rate_text[64];
  const double effective_rate = connect_rate > 0 ? connect_rate : ga::AwsConfig{}.connect_rate;
  std::snprintf(rate_text, sizeof rate_text,
                connect_rate > 0 ? "%g/s (--connect-rate)" : "%g/s (default)", effective_rate);
  std::printf(
      "config: [enrollment] concurrency 8, backoff 1s..5m; [aws] connect_rate %s; "
      "TPM keys ECC P-256 on swtpm%s; iot-sim defaults (1 CONNECT/s per client id), "
      "Lambda delay 0\n",
      rate_text, tpm_profile.empty() ? "" : (" behind the " + tpm_profile + " profile").c_str());
  std::printf(
      "agent: %d sensors + gateway (%d identities) ACTIVE in %.2f s "
      "(startup %.2f s; %.1f connects/identity, max %d)\n",
      sensors, identities, af.total, af.startup, af.mean_attempts, af.max_attempts);
  std::printf(
      "agent phases, sum over identities (8 workers share one TPM, so sums exceed the "
      "wall time): keygen %.1f s (%.0f%%), csr+issue %.1f s (%.0f%%), jitr wait %.1f s "
      "(%.0f%%; first connect %.1f s of it)\n",
      af.keygen_sum, pct(af.keygen_sum), af.csr_issue_sum, pct(af.csr_issue_sum), af.jitr_sum,
      pct(af.jitr_sum), af.first_connect_sum);
  std::printf(
      "agent phases, per identity mean: keygen %.0f ms, csr+issue %.0f ms, "
      "jitr wait %.0f ms\n",
      1000 * af.keygen_sum / identities, 1000 * af.csr_issue_sum / identities,
      1000 * af.jitr_sum / identities);
  std::printf(
      "agent phases, wall-clock spans (overlapping): keygen %.2f s (workers start -> "
      "last key), csr+issue %.2f s (first key -> last certificate), jitr wait %.2f s "
      "(first certificate -> last ACTIVE)\n",
      af.keygen_span, af.csr_issue_span, af.jitr_span);
  if (af.status_jitr_sum >= 0) {
    std::printf(
        "status --json cross-check: sum(activeSince - registeringSince) = %.0f s "
        "(1 s resolution; log: %.1f s)\n",
        af.status_jitr_sum, af.jitr_sum);
  }
  std::printf(
      "seed loop: %d devices in %.2f s (%.2f s/device: genrsa %.3f, req %.3f, "
      "x509+chain %.3f, mosquitto_pub+retries %.3f; %.1f tries/device, max %d, "
      "1 s sleep between tries)\n",
      sf.devices, sf.wall, sf.wall / sf.devices, sf.genrsa / sf.devices, sf.req / sf.devices,
      sf.x509 / sf.devices, sf.mqtt / sf.devices, sf.mean_tries, sf.max_tries);
  if (extrapolated) {
    std::printf("seed loop: %d devices extrapolated linearly from the %d measured: %.1f s\n",
                sensors, sf.devices, seed_full);
  }
  double rate = effective_rate;
  std::printf("agent: %d connects at [aws] connect_rate %g/s take at least %.1f s\n", af.connects,
              rate, af.connects / rate);
  if (tpm_stats) {
    const std::string sent = TpmCommandCounts(tpm_stats->commands);
    const std::map<uint32_t, int64_t> required = {
        {kTpmCcCreate, identities},
        {kTpmCcLoad, identities + bridge_connected},
        {kTpmCcSign, identities + af.connects + bridge_connected}};
    const double bound = std::chrono::duration<double>(h.tpm_relay()->TimeOf(required)).count();
    std::printf("tpm profile %s: commands sent:%s (%lld answered \"retry\"); TPM busy %.2f s\n",
                tpm_profile.c_str(), sent.c_str(), static_cast<long long>(tpm_stats->retried),
                std::chrono::duration<double>(tpm_stats->busy).count());
    std::printf(
        "tpm-bound: %.2f s (%d x Create + Load + Sign for the CSR, %d Signs for the JITR "
        "connects, %d x Load + Sign for the bridge's connections up by then)\n",
        bound, identities, af.connects, bridge_connected);
    std::printf("tpm-bound ratio: %.2f (agent %.2f s / bound %.2f s)\n",
                bound > 0 ? af.total / bound : 0.0, af.total, bound);
  }
  std::printf("ratio: seed %.1f s / agent %.2f s = %.1fx (target >= 20x) %s\n", seed_full, af.total,
              ratio, ratio >= 20 ? "MET" : "NOT MET");
  std::printf(
      "check: %d ACTIVE certificates under the CA (expected %d), AWS limit violations: "
      "%s\n",
      active_certs, identities + sf.devices, clean ? "none" : violations.body.c_str());
  if (active_certs != identities + sf.devices) std::printf("%s\n", certs.output.c_str());
  if (!clean) {
    auto refusals = h.sim().Http("GET", "/_sim/refusals");
    std::smatch m;
    std::string rest = refusals.body;
    static const std::regex rate_refusal("\\{[^{}]*\"connectRate\"[^{}]*\\}");
    for (int n = 0; n < 10 && std::regex_search(rest, m, rate_refusal); ++n, rest = m.suffix()) {
      std::printf("sim refusal: %s\n", m.str().c_str());
    }
  }
  for (const auto& p : problems) std::printf("agent warning: %s\n", p.c_str());
  if (active_certs != identities + sf.devices || !clean) return 1;
  return 0;
}
