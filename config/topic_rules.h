// The MQTT topic rules the configuration's topics and filters must follow.
#pragma once

#include <string>
#include <string_view>

namespace ga {

// No MQTT wildcard in `s` (a sensor id becomes a topic level).
bool IsTopicLevelSafe(std::string_view s);

// Why `topic` is not a valid publish topic (template), or "" when it is.
std::string PublishTopicProblem(std::string_view topic);

// Why `filter` cannot be local.ingest_filter, or "" when it can: a valid MQTT
// filter (no "$" topics, "#" only alone in the last level, "+" alone in its
// level) with a "+" level, the one that carries the sensor id.
std::string IngestFilterProblem(std::string_view filter);

}  // namespace ga
