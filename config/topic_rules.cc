#include "topic_rules.h"

#include <algorithm>
#include <vector>

namespace ga {

namespace {

constexpr const char* kReserved = "starts with \"$\" (reserved topics such as $aws/...)";

std::vector<std::string_view> TopicLevels(std::string_view topic) {
  std::vector<std::string_view> levels;
  size_t start = 0;
  while (true) {
    size_t slash = topic.find('/', start);
    levels.push_back(topic.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return levels;
    start = slash + 1;
  }
}

}  // namespace

bool IsTopicLevelSafe(std::string_view s) {
  return s.find_first_of("+#") == std::string_view::npos;
}

std::string PublishTopicProblem(std::string_view topic) {
  if (topic.empty()) return "is empty";
  if (topic.front() == '$') return kReserved;
  if (!IsTopicLevelSafe(topic))
    return "contains a wildcard (+ or #), which a publish topic may not";
  return "";
}

std::string IngestFilterProblem(std::string_view filter) {
  const std::string example = "; use a topic filter such as \"sensors/+/#\"";
  if (filter.empty()) return "is empty" + example;
  if (filter.front() == '$') return kReserved + example;
  if (filter.find('/') == std::string_view::npos) return "has one level only" + example;
  std::vector<std::string_view> levels = TopicLevels(filter);
  for (size_t i = 0; i < levels.size(); ++i) {
    std::string_view level = levels[i];
    if (level.find('#') != std::string_view::npos && (level != "#" || i + 1 != levels.size())) {
      return "has \"#\" that is not alone in the last level" + example;
    }
    if (level.find('+') != std::string_view::npos && level != "+") {
      return "has \"+\" that is not alone in its level" + example;
    }
  }
  if (std::find(levels.begin(), levels.end(), "+") == levels.end()) {
    return "has no \"+\" level: the level that carries the sensor id must be \"+\", such as "
           "\"sensors/+/#\"";
  }
  return "";
}

}  // namespace ga
