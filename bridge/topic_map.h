// Topic mapping between the gateway's local broker and AWS IoT.
//
// Sensor -> cloud: the local ingest filter (`sensors/+/#`) names the sensor id
// at its `+` level; a message `sensors/<id>/<rest>` goes to the cloud topic
// template with {thing} and {rest} filled in (`dt/<thing>/<rest>`).
// Cloud -> sensor: each identity subscribes to its command filter
// (`cmd/{thing}/#`); a command `cmd/<thing>/<rest>` is published locally to
// `<prefix><sensor id>/cmd/<rest>`. Local topics `<prefix><id>/cmd[/...]` are
// therefore command deliveries, never sent to the cloud.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga::bridge {

class TopicMap {
 public:
  // InvalidArgument naming local.ingest_filter when it has no `+` level.
  static Result<TopicMap> Create(std::string_view ingest_filter,
                                 std::string_view cloud_topic_template,
                                 std::string_view command_filter);

  // A local message topic split at the sensor id. The views point into `topic`.
  struct SensorTopic {
    std::string_view sensor;
    std::string_view rest;
    bool has_rest = true;  // false: nothing follows the id (`sensors/s1`), not sendable
  };
  // nullopt when `topic` does not reach the sensor id level, or is a command
  // delivery (`<prefix><id>/cmd[/...]`).
  std::optional<SensorTopic> ParseLocal(std::string_view topic) const;

  // The cloud topic of a sensor message.
  std::string CloudTopic(std::string_view thing, std::string_view rest) const;
  // The command filter an identity subscribes to, e.g. `cmd/<thing>/#`.
  std::string CommandFilter(std::string_view thing) const;
  // The local topic for a command received on `cloud_topic` for `thing`
  // (local sensor id `sensor`); nullopt when the topic is not under that
  // thing's command filter.
  std::optional<std::string> LocalCommandTopic(std::string_view cloud_topic, std::string_view thing,
                                               std::string_view sensor) const;
  // What sensor `sensor` publishes to on the local broker: the ingest
  // filter with its id, e.g. `sensors/<id>/#`.
  std::string SensorFilter(std::string_view sensor) const;
  // Where its commands are delivered, e.g. `sensors/<id>/cmd/#`.
  std::string CommandDeliveries(std::string_view sensor) const;

 private:
  TopicMap() = default;
  std::string prefix_;  // the ingest filter's levels before the sensor id, with slashes
  std::string suffix_;  // its levels after the sensor id, with a leading slash
  int id_level_ = -1;
  std::string cloud_topic_template_;
  std::string command_filter_;
};

// `topic_template` with {thing} and {rest} filled in.
std::string CloudTopic(std::string_view topic_template, std::string_view thing,
                       std::string_view rest);
// Why a publish would break an AWS IoT limit, or "" when it is fine.
std::string CheckAwsPublishLimits(std::string_view topic, size_t payload_bytes);

}  // namespace ga::bridge
