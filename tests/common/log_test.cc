#include "gateway_agent/log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ga::log {
namespace {

struct Captured {
  Level level;
  std::string line;
  std::vector<std::pair<std::string, std::string>> fields;
};

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLevel(Level::kDebug);
    SetWriterForTest([this](Level level, std::string_view line, std::initializer_list<Field> f) {
      Captured c{level, std::string(line), {}};
      for (auto& [k, v] : f) c.fields.emplace_back(k, v);
      lines.push_back(std::move(c));
    });
  }
  void TearDown() override {
    SetWriterForTest(nullptr);
    SetLevel(Level::kInfo);
  }
  std::vector<Captured> lines;
};

TEST_F(LogTest, LevelsFilter) {
  SetLevel(Level::kWarning);
  Info("quiet");
  Warning("loud");
  Error("louder");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].line, "loud");
  EXPECT_EQ(lines[1].level, Level::kError);
}

TEST_F(LogTest, StructuredFieldsReachTheWriter) {
  Info("identity is active", {{"IDENTITY", "sensor-1"}, {"STATE", "ACTIVE"}});
  ASSERT_EQ(lines.size(), 1u);
  ASSERT_EQ(lines[0].fields.size(), 2u);
  EXPECT_EQ(lines[0].fields[0].first, "IDENTITY");
  EXPECT_EQ(lines[0].fields[1].second, "ACTIVE");
}

TEST_F(LogTest, IdenticalMessagesAreRateLimited) {
  for (int i = 0; i < 1000; ++i) Error("cloud unreachable");
  Error("a different message");
  // kBurst of the repeated one, then the different one.
  ASSERT_EQ(lines.size(), static_cast<size_t>(kBurst) + 1);
  EXPECT_EQ(lines.back().line, "a different message");
}

TEST(LogLevel, Parse) {
  Level l;
  EXPECT_TRUE(ParseLevel("warning", &l));
  EXPECT_EQ(l, Level::kWarning);
  EXPECT_FALSE(ParseLevel("verbose", &l));
}

}  // namespace
}  // namespace ga::log
