// The bridge's cloud side: one MQTT connection per identity with its own
// TPM key (the gateway, sensors in own mode), and the shared-mode sensors
// that travel over another's connection.
//
// The parts of this class, by file:
//   cloud_links.cc  each connection's life: created with the identity's
//                   credentials, connected (TCP and TLS on the handshake
//                   pool), CONNACK, lost and backed off, dropped; commands
//                   from the cloud delivered to the local broker
//   cloud_send.cc   sending from the outbox within each connection's window
//                   and rates (SendBudget), riders in turns; PUBACKs
//   shared_mode.cc  riders (sensors in shared mode) attached to and detached
//                   from their carrier, and its command subscriptions
//   cloud_lifecycle.cc  requests about the identity's certificates and
//                   thing (retire the previous one, CA hand-over) asked over
//                   a connection that keeps carrying messages
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "agenda.h"
#include "cloud_tls.h"
#include "event_loop.h"
#include "gateway_agent/bridge/outbox.h"
#include "gateway_agent/config.h"
#include "gateway_agent/rate.h"
#include "gateway_agent/tpm/tpm_scheduler.h"
#include "handshake_pool.h"
#include "local_link.h"
#include "outbox_staging.h"
#include "topic_map.h"

namespace ga::bridge {

class CloudLinks {
 public:
  struct Parts {
    EventLoop& loop;
    Agenda& agenda;
    Outbox& outbox;
    OutboxStaging& staging;
    const TopicMap& topics;
    LocalLink& local;
    std::mt19937_64& rng;
  };
  struct Settings {
    AwsConfig aws;
    BridgeConfig bridge;
    int connect_interrupt_signal = 0;  // see HandshakePool
    // Called once a burst of TLS handshakes is over (see ReleaseFreeMemory).
    std::function<void()> release_free_memory;
    std::function<std::string()> tpm_problem;  // see Bridge::Options
  };
  CloudLinks(Settings settings, Parts parts);
  CloudLinks(const CloudLinks&) = delete;
  CloudLinks& operator=(const CloudLinks&) = delete;

  // A new or changed identity: connects it once active with credentials,
  // moves it between its own and a carrier's connection, drops it when no
  // longer active. A known identity that is not active yet has its messages
  // kept in the outbox until it is.
  void Upsert(const BridgeIdentity& identity);
  void Drop(const std::string& name);

  void Read(CloudConnection& c);
  // Writes what libmosquitto queued, unless a handshake thread owns `c`.
  void Write(CloudConnection& c);
  // Sends what `c` may send now: its own messages and, in turns, those of the
  // sensors it carries, within its window and rates.
  void Send(CloudConnection& c);
  // Messages just committed: connections that have sent everything older
  // take them straight from memory, in order, without reading them back.
  void TakeCommitted(std::vector<OutboxMessage>& committed);
  // Connects when due (paced by aws.connect_rate), times out hanging
  // attempts, keeps sessions alive, releases idle TLS buffers.
  void Tick(Clock::time_point now);

  // Stops the handshake threads (joined: no thread uses a connection after).
  void StopHandshakes() { handshakes_.Stop(); }
  // Queues a DISCONNECT on every connected client (shutdown).
  void DisconnectAll();
  // Marks every connection for writing.
  void MarkAllWrite();
  // Forgets every connection (shutdown, after the last write).
  void Clear();
  // Asks a lifecycle request over `name`'s own connection (Bridge::Ask);
  // `request` is completed with the answer, or when the connection ends or
  // is not up.
  void Ask(const std::string& name, const std::shared_ptr<LifecycleRequest>& request);
  // Why each connection that failed is down (a carried sensor: its carrier's),
  // and the refusals in a row of each connection that has some. Returns how
  // many connections of their own are up.
  size_t CollectProblems(std::map<std::string, std::string>& out,
                         std::map<std::string, int>& refusals) const;

 private:
  // cloud_links.cc
  Status NewClient(CloudConnection& c);
  // Its handshake queues for a thread and the TPM as `work` (Urgency).
  void Connect(CloudConnection& c, tpm::TpmWork work);
  void HandshakeDone(CloudConnection& c, int rc, const std::string& why);
  void OnConnect(mosquitto* m, int rc);
  void OnMessage(mosquitto* m, const mosquitto_message* msg);
  void CloudIsBack();
  // How urgently `c` needs its handshake.
  tpm::TpmWork Urgency(const CloudConnection& c) const;
  // The gateway's own connection while it is down and leads the reconnects
  // (kGatewayLeadsFor); else null.
  CloudConnection* LeadingGateway(Clock::time_point now);
  // Starts the connects that are due, the most urgent first, within the
  // account's connect rate.
  void ConnectDue(Clock::time_point now);
  void Lost(CloudConnection& c, int rc);
  void SetConnected(CloudConnection& c, bool up);
  CloudConnection* Of(mosquitto* m);
  void ReleaseFreeMemory(Clock::time_point now);
  // A connected link silent for this long is half-open: 1.5 x aws.keepalive.
  Clock::duration HalfOpenAfter() const;
  // cloud_send.cc
  bool SendOne(CloudConnection& sender, CloudConnection& via, Clock::time_point now);
  void OnPuback(mosquitto* m, int mid);
  // After a connection that was up is lost: its unacknowledged messages go
  // back to the send path, and its client is let go (see cloud_send.cc).
  void TakeBackUnacknowledged(CloudConnection& c);
  // cloud_lifecycle.cc
  void OnSubscribe(mosquitto* m, int mid, int count, const int* granted);
  // True when `msg` is on the thing's lifecycle topics (an answer: taken
  // here, never delivered as a command).
  bool TakeLifecycleAnswer(CloudConnection& c, const mosquitto_message* msg);
  // Completes the request waiting on `c`, if any, unanswered.
  void EndAsked(CloudConnection& c, const std::string& why);
  // shared_mode.cc
  void AddRider(const BridgeIdentity& identity);
  void Attach(CloudConnection& carrier, CloudConnection& rider);
  void Detach(CloudConnection& rider);
  void SubscribeCommands(CloudConnection& carrier, const std::vector<CloudConnection*>& who);

  const Settings settings_;
  Parts parts_;
  std::optional<CloudTlsContext> tls_;  // made at the first connect
  TlsBufferPolicy tls_buffers_;
  HandshakePool handshakes_;
  // aws.connect_rate, with a burst of a tenth of a second's worth.
  TokenBucket connects_;
  std::map<std::string, std::unique_ptr<CloudConnection>, std::less<>> clouds_;
  std::map<mosquitto*, CloudConnection*> by_mosq_;
  // Connections dropped while a handshake thread still used them.
  std::vector<std::unique_ptr<CloudConnection>> retired_;
  // See ReleaseFreeMemory.
  int handshakes_running_ = 0;
  int handshakes_since_trim_ = 0;
  Clock::time_point last_handshake_done_{};
  size_t trims_due_ = 0;
};

// Benchmark hook: GATEWAY_AGENT_TEST_UNLIMITED_RATE=1 lifts the per-connection
// publish and byte rates (bridge.publish_rate, bridge.byte_rate), e.g. against
// a test broker without AWS's limits. Never for AWS IoT: it would trip AWS's
// per-connection throttling. The in-flight window stays as configured.
bool TestUnlimitedRate();

}  // namespace ga::bridge
