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
// before its PUBACK is written to the local broker (the connection is marked
// threaded, so libmosquitto only queues the PUBACK until our loop_write),
// then published at QoS 1, in order, on the sensor's own cloud connection to
// the topic from bridge.cloud_topic_template; deleted on the cloud's PUBACK.
// A message is never published under another sensor's identity.
//
// Shared mode: a sensor whose BridgeIdentity names a carrier in `via` (the
// gateway) has no connection of its own; its messages, still to its own
// thing's topics, take turns with the carrier's own on the carrier's
// connection, within that connection's window and rates, and the carrier
// subscribes to the sensor's command filter. Its outbox queue stays its own.
//
// Cloud -> sensor: each identity subscribes to its command filter
// (`cmd/{thing}/#`); a command `cmd/<thing>/<rest>` is published locally to
// `<prefix>/<sensor id>/cmd/<rest>`. Local messages under `.../cmd/...` are
// therefore never sent to the cloud.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::bridge {

// What the bridge needs to know of an identity.
struct BridgeIdentity {
  std::string name;   // "gateway" or the sensor id
  std::string thing;  // AWS thing name = client id
  std::filesystem::path key_file;
  std::filesystem::path chain_file;
  bool active = false;  // only ACTIVE identities connect to the cloud
  // Not empty: the identity (e.g. "gateway") whose connection carries this
  // sensor's messages, to its own thing's topics; it has no key of its own.
  std::string via;
};

class Bridge {
 public:
  struct Options {
    Config config;
    std::shared_ptr<tpm::TpmContext> tpm;
  };

  // Opens the outbox (state_dir/outbox.db); does not connect yet.
  static Result<std::unique_ptr<Bridge>> Create(Options options);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Starts the loop thread; it connects to the local broker at once.
  Status Start();
  // Finishes in-flight commits, disconnects cleanly, joins the loop thread.
  void Stop();

  // Thread-safe; applied by the loop. A known identity that is not active yet
  // has its messages kept in the outbox until it is.
  void Upsert(const BridgeIdentity& identity);
  void Remove(const std::string& name);

  bool local_connected() const { return local_connected_; }

  class Loop;

 private:
  explicit Bridge(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  std::atomic<bool> local_connected_{false};
};

inline constexpr const char* kOutboxDb = "outbox.db";

// Limits AWS IoT enforces on a publish, checked before anything is sent.
inline constexpr size_t kMaxPayloadBytes = 128 * 1024;
inline constexpr size_t kMaxTopicBytes = 256;
inline constexpr int kMaxTopicLevels = 8;

// The cloud topic for a sensor message: `template` with {thing} and {rest}.
std::string CloudTopic(std::string_view topic_template, std::string_view thing,
                       std::string_view rest);
// Why a publish would break an AWS IoT limit, or "" when it is fine.
std::string CheckAwsPublishLimits(std::string_view topic, size_t payload_bytes);

}  // namespace ga::bridge
