#include "topic_map.h"

#include <algorithm>

#include "gateway_agent/aws_iot.h"

namespace ga::bridge {

Result<TopicMap> TopicMap::Create(std::string_view ingest_filter,
                                  std::string_view cloud_topic_template,
                                  std::string_view command_filter) {
  TopicMap map;
  map.cloud_topic_template_ = cloud_topic_template;
  map.command_filter_ = command_filter;
  size_t start = 0;
  for (int level = 0;; ++level) {
    size_t slash = ingest_filter.find('/', start);
    std::string_view name = ingest_filter.substr(start, slash - start);
    if (name == "+") {
      map.id_level_ = level;
      if (slash != std::string_view::npos) map.suffix_ = ingest_filter.substr(slash);
      return map;
    }
    if (slash == std::string_view::npos) break;
    map.prefix_.append(name).push_back('/');
    start = slash + 1;
  }
  return InvalidArgument("local.ingest_filter \"" + std::string(ingest_filter) +
                         "\" has no + level for the sensor id (e.g. \"sensors/+/#\")");
}

std::optional<TopicMap::SensorTopic> TopicMap::ParseLocal(std::string_view topic) const {
  // <level 0>/.../<sensor at id_level_>/<rest...>, without copying.
  size_t start = 0;
  for (int i = 0; i < id_level_; ++i) {
    size_t slash = topic.find('/', start);
    if (slash == std::string_view::npos) return std::nullopt;
    start = slash + 1;
  }
  size_t slash = topic.find('/', start);
  if (slash == std::string_view::npos) return SensorTopic{topic.substr(start), {}, false};
  SensorTopic t{topic.substr(start, slash - start), topic.substr(slash + 1)};
  if (t.rest == "cmd" || t.rest.starts_with("cmd/")) return std::nullopt;  // our own deliveries
  return t;
}

std::string TopicMap::CloudTopic(std::string_view thing, std::string_view rest) const {
  return bridge::CloudTopic(cloud_topic_template_, thing, rest);
}

std::string TopicMap::CommandFilter(std::string_view thing) const {
  return bridge::CloudTopic(command_filter_, thing, "");
}

std::optional<std::string> TopicMap::LocalCommandTopic(std::string_view cloud_topic,
                                                       std::string_view thing,
                                                       std::string_view sensor) const {
  std::string filter = CommandFilter(thing);
  std::string_view base = std::string_view(filter).substr(0, filter.find('#'));
  if (!cloud_topic.starts_with(base)) return std::nullopt;
  std::string local = prefix_;
  local.append(sensor).append("/cmd/").append(cloud_topic.substr(base.size()));
  return local;
}

std::string TopicMap::SensorFilter(std::string_view sensor) const {
  return prefix_ + std::string(sensor) + suffix_;
}

std::string TopicMap::CommandDeliveries(std::string_view sensor) const {
  return prefix_ + std::string(sensor) + "/cmd/#";
}

std::string CloudTopic(std::string_view topic_template, std::string_view thing,
                       std::string_view rest) {
  std::string out;
  for (size_t i = 0; i < topic_template.size();) {
    if (topic_template.compare(i, 7, "{thing}") == 0) {
      out += thing;
      i += 7;
    } else if (topic_template.compare(i, 6, "{rest}") == 0) {
      out += rest;
      i += 6;
    } else {
      out += topic_template[i++];
    }
  }
  return out;
}

std::string CheckAwsPublishLimits(std::string_view topic, size_t payload_bytes) {
  if (payload_bytes > aws::kMaxPayloadBytes) {
    return "payload of " + std::to_string(payload_bytes) + " bytes exceeds AWS IoT's 128 KB";
  }
  if (topic.size() > aws::kMaxTopicBytes) {
    return "topic of " + std::to_string(topic.size()) + " bytes exceeds AWS IoT's 256";
  }
  int levels = static_cast<int>(std::count(topic.begin(), topic.end(), '/')) + 1;
  if (levels > aws::kMaxTopicLevels) {
    return "topic has " + std::to_string(levels) + " levels; AWS IoT allows 8";
  }
  if (!topic.empty() && topic[0] == '$') return "topics starting with $ are reserved";
  return "";
}

}  // namespace ga::bridge
