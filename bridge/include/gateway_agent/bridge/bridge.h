// The bridge: sensor traffic from the gateway's local MQTT broker to AWS IoT,
// and cloud commands back.
//
// One thread runs one epoll loop over every libmosquitto connection (the
// local broker, and one cloud connection per ACTIVE identity with its own TPM
// key), driving mosquitto_loop_read/write/misc itself: mosquitto_loop() uses
// select() and fails past fd 1024.
//
// Sensor -> cloud: the local subscription (QoS 1, persistent session) gets
// `<prefix>/<sensor id>/<rest>`; each message is committed to the Outbox
// before its PUBACK is written to the local broker, then published at QoS 1,
// in order, on the sensor's own cloud connection to the topic from
// bridge.cloud_topic_template; deleted on the cloud's PUBACK. A message is
// never published under another sensor's identity.
//
// Shared mode: a sensor whose BridgeIdentity names a carrier in `via` (the
// gateway) travels over the carrier's connection, to its own thing's topics.
//
// Cloud -> sensor: each identity subscribes to its command filter
// (`cmd/{thing}/#`); a command `cmd/<thing>/<rest>` is published locally to
// `<prefix>/<sensor id>/cmd/<rest>`.
//
// The parts, one file each in bridge/: topic_map (topics and AWS limits),
// event_loop (epoll and posted work), mqtt_connection (libmosquitto glue),
// agenda (connections with news), handshake_pool (blocking connects),
// cloud_tls (the shared TLS context), cloud_retire (retirements asked over a
// connection), local_link (the local broker),
// unknown_senders (bounded accounting of unknown sensor ids),
// outbox_staging (group commit), cloud_links / cloud_send / shared_mode (the
// cloud connections), send_budget (the send scheduler), outbox (SQLite).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/thread_annotations.h"
#include "gateway_agent/tpm/tls_client.h"

namespace ga::bridge {

// What the bridge needs to know of an identity.
struct BridgeIdentity {
  std::string name;   // the gateway's identity name, or the sensor id
  std::string thing;  // AWS thing name = client id
  // False for the gateway itself: no local client speaks for it, so local
  // messages under its name are dropped as from an unknown sensor.
  bool sensor = true;
  bool active = false;  // only ACTIVE identities connect to the cloud
  // The TPM key and certificate chain it connects with (required when active
  // and not carried by another).
  std::shared_ptr<const tpm::ClientIdentity> credentials;
  // Its certificate has OU=gateway, so the JITR Lambda gave it the gateway
  // policy, which lets its connection carry shared-mode sensors.
  bool uses_gateway_policy = false;
  // Not empty: the identity (the gateway) whose connection carries this
  // sensor's messages, to its own thing's topics; it has no key of its own.
  std::string via;
  // local.manage_clients: the password of its own client on the local broker
  // (user name = its id); empty: none is managed.
  std::string local_password;
};

// What stands in the bridge's way, for status and the service's STATUS=.
struct BridgeHealth {
  bool local_connected = false;
  // Connects to the local broker so far: a new one may be a broker that
  // restarted with another configuration.
  uint64_t local_sessions = 0;
  std::string local_problem;   // why the local broker cannot be reached
  std::string outbox_problem;  // the last failed outbox commit, until one succeeds
  // Identity name -> why its cloud connection is down (only those that have
  // failed and are not connected).
  std::map<std::string, std::string> cloud_problems;
  size_t cloud_connected = 0;  // identities whose own connection is up
  // Identity name -> its CONNECTs in a row that AWS IoT closed or refused
  // (only those with one or more).
  std::map<std::string, int> cloud_refusals;
  // Sensor -> why the local broker did not make its client (manage_clients).
  std::map<std::string, std::string> local_client_problems;
};

// The answer to a lifecycle request (aws::LifecycleAsk) asked over an
// identity's own connection.
struct LifecycleReply {
  bool sent = false;  // false: its connection is not up, nothing was asked
  bool answered = false;
  bool accepted = false;
  std::string detail;  // the rejection's reason, or why there was no answer
};

class LifecycleRequest;

class Bridge {
 public:
  struct Options {
    LocalConfig local;
    BridgeConfig bridge;
    AwsConfig aws;
    std::filesystem::path state_dir;  // holds the outbox (kOutboxDb)
    // Process-wide settings stay with the caller (the daemon):
    // A signal whose handler does nothing and is installed without
    // SA_RESTART: Stop() sends it to the threads still in a blocking TCP
    // connect (to an endpoint that drops SYNs, ~2 minutes). 0: Stop() waits.
    int connect_interrupt_signal = 0;
    // Called once a burst of TLS handshakes is over, to hand free heap back
    // to the system (e.g. malloc_trim); may be empty.
    std::function<void()> release_free_memory;
    // What is wrong with the TPM ("" when nothing), added to the log line of
    // a failed handshake: every handshake signs with a TPM key. May be empty.
    std::function<std::string()> tpm_problem;
    // local.manage_clients: the password of kBoundaryProbeUser, the client
    // the agent tests the broker's ACLs with. Empty: no such client.
    std::string boundary_probe_password;
  };

  // Opens the outbox, checks the topic mapping and reads the local broker's
  // password (errors name the key); does not connect yet.
  static Result<std::unique_ptr<Bridge>> Create(Options options);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Starts the loop thread; it connects to the local broker at once.
  Status Start() GA_EXCLUDES(asked_mu_);
  // Finishes in-flight commits, disconnects cleanly, joins the loop thread.
  void Stop() GA_EXCLUDES(asked_mu_);

  // Thread-safe; applied by the loop. A known identity that is not active yet
  // has its messages kept in the outbox until it is.
  void Upsert(const BridgeIdentity& identity);
  void Remove(const std::string& name);

  // Asks `ask` (a retirement, a CA hand-over: aws::LifecycleTopic, a
  // Lambda answers) over `name`'s own cloud connection while it is up, and
  // waits up to `timeout` for the answer. The connection carries messages
  // meanwhile: a request that gets no answer costs no traffic. Thread-safe;
  // blocks the caller.
  LifecycleReply Ask(const std::string& name, const aws::LifecycleAsk& ask,
                     std::chrono::milliseconds timeout) GA_EXCLUDES(asked_mu_);

  bool local_connected() const { return local_connected_; }
  // Thread-safe; refreshed by the loop every tick.
  BridgeHealth Health() const;

 private:
  class Loop;
  explicit Bridge(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  // Lifecycle requests asked and maybe still waiting: Stop() answers them.
  Mutex asked_mu_;
  bool running_ GA_GUARDED_BY(asked_mu_) = false;
  std::vector<std::weak_ptr<LifecycleRequest>> asked_ GA_GUARDED_BY(asked_mu_);
  std::atomic<bool> local_connected_{false};
};

inline constexpr const char* kOutboxDb = "outbox.db";

// The local client (local.manage_clients) whose role grants nothing: the
// broker must refuse its publish to a sensor's topic, or it does not confine
// sensors to their own. Not a valid sensor id (the '.'), so no sensor has it.
inline constexpr const char* kBoundaryProbeUser = "gateway-agent.boundary-probe";

}  // namespace ga::bridge
