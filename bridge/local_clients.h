// Each sensor's own client on the gateway's local broker (local.manage_clients),
// kept through mosquitto's dynamic security plugin: the agent publishes
// command batches to $CONTROL/dynamic-security/v1 and reads the answers on
// .../response. A sensor's client has its id as user name and a role of its
// own (mosquitto 2.0 expands no %u in ACLs) that lets it publish only under
// its own ingest topics, not to its command deliveries, and subscribe only to
// those. Every batch is idempotent ("already exists" is success), so the
// whole set is sent again after each connect to the broker: a broker that
// lost its state, or an agent that restarted, converges without duplicates.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "topic_map.h"

namespace ga::bridge {

class LocalClients {
 public:
  static constexpr const char* kCommandTopic = "$CONTROL/dynamic-security/v1";
  static constexpr const char* kResponseTopic = "$CONTROL/dynamic-security/v1/response";

  explicit LocalClients(const TopicMap& topics) : topics_(topics) {}

  // The batch that gives `sensor` its client with `password` (a changed
  // password also ends the sessions made with the old one).
  std::string Issue(const std::string& sensor, const std::string& password, bool rotated);
  // The batch that gives kBoundaryProbeUser its client, with a role that
  // grants nothing.
  std::string IssueProbe(const std::string& password);
  // The batch that deletes `sensor`'s client (the broker disconnects it) and role.
  std::string Retire(const std::string& sensor);
  // An answer on kResponseTopic: failures are kept by sensor and logged.
  void OnResponse(std::string_view payload);
  // Sensor -> why its client could not be made ("" entries are not kept).
  const std::map<std::string, std::string>& problems() const { return problems_; }

 private:
  std::string Batch(const std::string& sensor, const std::vector<std::string>& commands);
  const TopicMap& topics_;
  uint64_t next_id_ = 0;
  std::map<std::string, std::string> pending_;  // correlation data -> sensor
  std::map<std::string, std::string> problems_;
};

}  // namespace ga::bridge
