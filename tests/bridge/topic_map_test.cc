// Topic mapping and AWS IoT's publish limits: pure functions, no processes.
#include "topic_map.h"

#include <gtest/gtest.h>

namespace ga::bridge {
namespace {

TopicMap Map(std::string_view ingest = "sensors/+/#") {
  auto map = TopicMap::Create(ingest, "dt/{thing}/{rest}", "cmd/{thing}/#");
  EXPECT_TRUE(map.ok()) << map.status().ToString();
  return *map;
}

TEST(TopicMap, RefusesAnIngestFilterWithoutASensorLevel) {
  for (std::string_view filter : {"sensors/#", "sensors", "sensors/x/#", ""}) {
    auto map = TopicMap::Create(filter, "dt/{thing}/{rest}", "cmd/{thing}/#");
    ASSERT_FALSE(map.ok()) << filter;
    EXPECT_EQ(map.status().code(), Code::kInvalidArgument);
    EXPECT_NE(map.status().message().find("local.ingest_filter"), std::string::npos);
  }
}

TEST(TopicMap, SplitsALocalTopicAtTheSensorLevel) {
  TopicMap map = Map();
  auto t = map.ParseLocal("sensors/s1/temp/c");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->sensor, "s1");
  EXPECT_EQ(t->rest, "temp/c");
  // The sensor id may sit deeper, after several fixed levels.
  TopicMap deep = Map("site/a/+/#");
  auto d = deep.ParseLocal("site/a/s9/x");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->sensor, "s9");
  EXPECT_EQ(d->rest, "x");
}

TEST(TopicMap, IgnoresCommandDeliveriesAndMarksTopicsWithoutALevelAfterTheSensor) {
  TopicMap map = Map();
  // `sensors/s1` names the sensor (its message is counted as not sendable).
  auto bare = map.ParseLocal("sensors/s1");
  ASSERT_TRUE(bare.has_value());
  EXPECT_EQ(bare->sensor, "s1");
  EXPECT_FALSE(bare->has_rest);
  EXPECT_TRUE(map.ParseLocal("sensors/s1/")->has_rest);
  EXPECT_FALSE(map.ParseLocal("sensors").has_value());
  EXPECT_FALSE(map.ParseLocal("sensors/s1/cmd").has_value());
  EXPECT_FALSE(map.ParseLocal("sensors/s1/cmd/reboot").has_value());
  // Only the level right after the sensor id marks a command.
  EXPECT_TRUE(map.ParseLocal("sensors/s1/cmdx").has_value());
  EXPECT_TRUE(map.ParseLocal("sensors/s1/temp/cmd").has_value());
}

TEST(TopicMap, CloudTopicsAndCommandFilters) {
  TopicMap map = Map();
  EXPECT_EQ(map.CloudTopic("gw-1-s1", "temp/c"), "dt/gw-1-s1/temp/c");
  EXPECT_EQ(map.CommandFilter("gw-1-s1"), "cmd/gw-1-s1/#");
  EXPECT_EQ(CloudTopic("x/{rest}/{thing}", "t", "r"), "x/r/t");
}

TEST(TopicMap, CommandsGoToTheSensorsLocalCommandTopic) {
  TopicMap map = Map();
  EXPECT_EQ(map.LocalCommandTopic("cmd/gw-1-s1/reboot", "gw-1-s1", "s1"), "sensors/s1/cmd/reboot");
  EXPECT_EQ(map.LocalCommandTopic("cmd/gw-1-s1/a/b", "gw-1-s1", "s1"), "sensors/s1/cmd/a/b");
  // Another thing's command is not this sensor's.
  EXPECT_FALSE(map.LocalCommandTopic("cmd/gw-1-s2/reboot", "gw-1-s1", "s1").has_value());
  EXPECT_FALSE(map.LocalCommandTopic("cmd/gw-1-s10/x", "gw-1-s1", "s1").has_value());
}

TEST(AwsLimits, TopicAndPayloadChecks) {
  EXPECT_EQ(CloudTopic("dt/{thing}/{rest}", "gw-1-s1", "temp/c"), "dt/gw-1-s1/temp/c");
  EXPECT_EQ(CheckAwsPublishLimits("dt/x/y", 128 * 1024), "");
  EXPECT_NE(CheckAwsPublishLimits("dt/x/y", 128 * 1024 + 1).find("128 KB"), std::string::npos);
  EXPECT_NE(CheckAwsPublishLimits(std::string(257, 'a'), 1).find("256"), std::string::npos);
  EXPECT_NE(CheckAwsPublishLimits("a/b/c/d/e/f/g/h/i", 1).find("8"), std::string::npos);
  EXPECT_EQ(CheckAwsPublishLimits("a/b/c/d/e/f/g/h", 1), "");
  EXPECT_NE(CheckAwsPublishLimits("$aws/things/x", 1).find("reserved"), std::string::npos);
}

}  // namespace
}  // namespace ga::bridge
