// Scenario 5 of bench_bridge: a slow link. Every cloud connection of the agent
// (JITR connects and bridge connections) goes through a TcpRelay in front of
// iot-sim that delays each direction by RTT / 2. With QoS 1 and at most
// `inflight_window` messages unacknowledged per connection, one connection
// can carry at most inflight_window / RTT msg/s: the figure is how near the
// agent comes to that bound. The per-connection rate limits (the agent's and
// the sim's) are lifted as in scenario 1, so the window is the only bound.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

#include "bench_bridge.h"
#include "tcp_relay.h"

namespace ga::bench {

namespace {
constexpr int kInflightWindow = 100;  // bridge.inflight_window, the default and AWS's maximum
}  // namespace

void SlowLink(std::chrono::milliseconds rtt, int messages, int sensors) {
  std::printf(
      "== 5: slow link, %lld ms RTT (a relay delaying each direction by %lld ms), gateway + %d "
      "sensors ==\n",
      static_cast<long long>(rtt.count()), static_cast<long long>(rtt.count() / 2), sensors);
  std::fflush(stdout);
  ga::testing::HarnessOptions o;
  o.sensors = sensors;
  o.sim_args = {"--max-publish-rate", "0", "--max-throughput", "0"};
  o.extra_config = "\n[bridge]\ninflight_window = " + std::to_string(kInflightWindow) +
                   "\nfsync_every_commit = false\n";
  auto hr = AgentHarness::Start(o);
  if (!hr.ok()) Fail("harness: " + hr.status().ToString());
  AgentHarness& h = **hr;
  auto relay = ga::testing::TcpRelay::Start(h.sim().mqtt_port());
  if (!relay.ok()) Fail("relay: " + relay.status().ToString());
  (*relay)->SetDelay(rtt / 2);
  const int sim_port = h.sim().mqtt_port();
  h.RewriteConfig([&](std::string& t) {
    t = ReplaceOnce(t, "port = " + std::to_string(sim_port) + "\n",
                    "port = " + std::to_string((*relay)->port()) + "\n");
  });

  // Enrollment through the link: TPM keys and certificates are local; each
  // identity's JITR connect is refused once (the Lambda registers its
  // certificate), then accepted after the backoff.
  const int ids = h.identities();
  auto t0 = Clock::now();
  if (!h.StartAgent({{"GATEWAY_AGENT_TEST_UNLIMITED_RATE", "1"}}).ok())
    Fail("cannot start the agent");
  if (!h.WaitForState("ACTIVE", ids, 300s))
    Fail("enrollment through the slow link did not finish\n" + Tail(h.dir() / "agent.log"));
  const double enrolled = Seconds(Clock::now() - t0);
  if (!WaitFor([&] { return SimClients(h.sim()) >= ids; }, 120s, 100ms))
    Fail("the cloud connections did not all come up through the slow link\n" +
         Tail(h.dir() / "agent.log"));
  const double connected = Seconds(Clock::now() - t0);
  std::printf(
      "enrollment through %lld ms RTT: %d identities (gateway + %d sensors) ACTIVE after %.1f s, "
      "all cloud connections up after %.1f s (%d connections through the relay)\n",
      static_cast<long long>(rtt.count()), ids, sensors, enrolled, connected, (*relay)->accepted());
  std::fflush(stdout);

  // Throughput of one sensor's connection.
  Client pub(h.broker().port(), "slow-link-pub");
  int64_t base = SimLastSeq(h.sim());
  pub.Publish("sensors/s1/temp", "warm-up");
  if (!WaitFor([&] { return SimLastSeq(h.sim()) > base; }, 20s))
    Fail("warm-up did not arrive through the slow link\n" + Tail(h.dir() / "agent.log"));
  base = SimLastSeq(h.sim());
  const double bound = kInflightWindow / std::chrono::duration<double>(rtt).count();
  // Generous: a quarter of the bound, plus the start.
  const auto timeout =
      std::chrono::milliseconds(30000 + static_cast<int64_t>(4000.0 * messages / bound));
  t0 = Clock::now();
  for (int i = 0; i < messages; ++i) pub.Publish("sensors/s1/temp", Payload(100));
  if (!WaitFor([&] { return SimLastSeq(h.sim()) - base >= messages; }, timeout, 10ms)) {
    Fail("slow link: only " + std::to_string(SimLastSeq(h.sim()) - base) + " of " +
         std::to_string(messages) + " messages arrived\n" + Tail(h.dir() / "agent.log"));
  }
  const double seconds = Seconds(Clock::now() - t0);
  const double rate = messages / seconds;
  if (rtt.count() == 0) {
    std::printf("slow link 0 ms RTT (the relay alone): %.0f msg/s from one sensor in %.2f s\n",
                rate, seconds);
  } else {
    std::printf(
        "slow link %lld ms RTT: %.0f msg/s, window bound %.0f msg/s, ratio %.2f  [%d QoS 1 "
        "messages of 100 bytes from one sensor in %.2f s, inflight_window %d, rate limits "
        "lifted]\n",
        static_cast<long long>(rtt.count()), rate, bound, rate / bound, messages, seconds,
        kInflightWindow);
  }
  std::fflush(stdout);

  if (!h.agent().Signal(SIGTERM, 20s).has_value()) Fail("agent did not stop");
  RequireNoViolations(h, "over the slow link");
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace ga::bench
