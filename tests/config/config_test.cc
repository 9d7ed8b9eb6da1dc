#include "gateway_agent/config.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "gateway_agent/files.h"

namespace ga {
namespace {

const char* kMinimal = R"(
[agent]
thing_name = "gw-1"
[aws]
endpoint = "example-ats.iot.eu-west-1.amazonaws.com"
)";

std::string Joined(const ParsedConfig& p) {
  std::string s;
  for (auto& pr : p.problems) s += pr.ToString() + "\n";
  return s;
}

TEST(Config, SampleFileIsValid) {
  auto loaded = LoadConfig(std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->ok()) << Joined(*loaded);
  const Config& c = loaded->config;
  EXPECT_EQ(c.agent.thing_name, "gateway-0001");
  EXPECT_EQ(c.tpm.srk_handle, 0x81000001u);
  ASSERT_EQ(c.sensors.size(), 3u);
  EXPECT_EQ(c.SensorThingName(c.sensors[0]), "gateway-0001:temp-1");
  EXPECT_EQ(c.sensors[0].connection, SensorConnection::kOwn);
  EXPECT_EQ(c.SensorThingName(c.sensors[1]), "gateway-0001:hum-1");
  EXPECT_EQ(c.sensors[1].connection, SensorConnection::kGateway);
  EXPECT_EQ(c.SensorThingName(c.sensors[2]), "site7-door-1");
}

TEST(Config, SampleDocumentsEveryKeyWithItsDefault) {
  // The sample's values (apart from the examples it must fill in) are the
  // defaults, and every key the agent knows appears in it.
  auto loaded = LoadConfig(std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml");
  ASSERT_TRUE(loaded.ok() && loaded->ok());
  Config sample = loaded->config;
  Config defaults;
  defaults.agent.thing_name = sample.agent.thing_name;
  defaults.aws.endpoint = sample.aws.endpoint;
  defaults.sensors = sample.sensors;
  defaults.source = sample.source;
  EXPECT_EQ(FormatConfig(sample), FormatConfig(defaults));

  std::string text = *ReadFile(std::string(GA_SOURCE_DIR) + "/config/gateway-agent.toml");
  std::istringstream printed(FormatConfig(defaults));
  std::string line;
  std::regex key_line(R"(^([a-z_]+) = )");
  while (std::getline(printed, line)) {
    std::smatch m;
    if (std::regex_search(line, m, key_line)) {
      EXPECT_NE(text.find("\n" + m[1].str() + " = "), std::string::npos)
          << "the sample does not document " << m[1];
    }
  }
}

TEST(Config, MinimalFileGetsDefaults) {
  ParsedConfig p = ParseConfig(kMinimal, "agent.toml");
  ASSERT_TRUE(p.ok()) << Joined(p);
  EXPECT_EQ(p.config.tpm.tcti, "device:/dev/tpmrm0");
  EXPECT_EQ(p.config.aws.port, 8883);
  EXPECT_EQ(p.config.bridge.outbox_max_bytes, 256ull << 20);
  EXPECT_EQ(p.config.enrollment.backoff_max, std::chrono::minutes(5));
  EXPECT_EQ(p.config.bridge.on_full, OnFull::kDropOldest);
}

TEST(Config, TypoTypeAndRangeAreAllReportedWithLinesAndAHint) {
  std::string text = std::string(kMinimal) + R"(
[bridge]
publsh_rate = 50
inflight_window = "many"
publish_rate = 150
)";
  ParsedConfig p = ParseConfig(text, "/etc/gateway-agent/agent.toml");
  ASSERT_EQ(p.problems.size(), 3u) << Joined(p);
  std::string all = Joined(p);
  EXPECT_NE(
      all.find("agent.toml:8:1: bridge.publsh_rate: unknown key; did you mean \"publish_rate\"?"),
      std::string::npos)
      << all;
  EXPECT_NE(all.find("agent.toml:9:"), std::string::npos) << all;
  EXPECT_NE(all.find("bridge.inflight_window: expected an integer, found a string"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("agent.toml:10:"), std::string::npos) << all;
  EXPECT_NE(all.find("bridge.publish_rate: must be between 1 and 100 (AWS IoT allows 100 "
                     "publishes per second per connection)"),
            std::string::npos)
      << all;
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  ParsedConfig p = ParseConfig("[agent]\nthing_name = \"gw\nx", "bad.toml");
  ASSERT_EQ(p.problems.size(), 1u);
  EXPECT_EQ(p.problems[0].line, 2);
  EXPECT_NE(p.problems[0].ToString().find("bad.toml:2:"), std::string::npos);
}

TEST(Config, UnknownSectionSuggestsTheNearestOne) {
  ParsedConfig p = ParseConfig(std::string(kMinimal) + "[bridg]\nx = 1\n", "a.toml");
  ASSERT_EQ(p.problems.size(), 1u) << Joined(p);
  EXPECT_NE(p.problems[0].message.find("did you mean [bridge]"), std::string::npos);
}

TEST(Config, RequiredKeysAndThingNameRules) {
  ParsedConfig p = ParseConfig("[agent]\nthing_name = \"bad name!\"\n", "a.toml");
  std::string all = Joined(p);
  EXPECT_NE(all.find("agent.thing_name: \"bad name!\" is not a valid thing name"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("aws.endpoint: is required"), std::string::npos) << all;
}

TEST(Config, ThingNamesMustFitACertificateCn) {
  std::string text =
      "[agent]\nthing_name = \"" + std::string(65, 'g') + "\"\n[aws]\nendpoint = \"e\"\n";
  ParsedConfig p = ParseConfig(text, "a.toml");
  ASSERT_EQ(p.problems.size(), 1u);
  EXPECT_NE(p.problems[0].message.find("1-64 characters"), std::string::npos);
  EXPECT_TRUE(IsEnrollableThingName(std::string(64, 'g')));
}

TEST(Config, SensorsAreValidated) {
  std::string text = std::string(kMinimal) + R"(
[[sensor]]
id = "a"
[[sensor]]
id = "a"
[[sensor]]
id = "b/c"
[[sensor]]
id = "d"
thing_name = "gw-1"
[[sensor]]
thing_name = "x"
)";
  ParsedConfig p = ParseConfig(text, "a.toml");
  std::string all = Joined(p);
  EXPECT_NE(all.find("sensor[1].id: \"a\" is declared twice"), std::string::npos) << all;
  EXPECT_NE(all.find("sensor[2].id: \"b/c\" is not a valid sensor id"), std::string::npos) << all;
  EXPECT_NE(all.find("sensor[3].thing_name: thing name \"gw-1\" is already used"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("sensor[4].id: is required"), std::string::npos) << all;
  EXPECT_EQ(p.problems.size(), 4u) << all;
}

// Each of these was accepted by check-config although the agent cannot work with it.
TEST(Config, RefusesWhatTheAgentCannotRun) {
  struct Case {
    std::string extra;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"[local]\ningest_filter = \"sensors/#\"\n",
       "local.ingest_filter: \"sensors/#\" has no \"+\" level"},
      {"[local]\ningest_filter = \"#/+/x\"\n",
       "local.ingest_filter: \"#/+/x\" has \"#\" that is not alone"},
      {"[local]\ningest_filter = \"sensors/a+/#\"\n", "has \"+\" that is not alone in its level"},
      {"[local]\ningest_filter = \"$SYS/+/#\"\n",
       "local.ingest_filter: \"$SYS/+/#\" starts with \"$\""},
      {"[bridge]\ncloud_topic_template = \"dt/{thing}/{rest}/#\"\n",
       "bridge.cloud_topic_template: \"dt/{thing}/{rest}/#\" contains a wildcard"},
      {"[bridge]\ncloud_topic_template = \"$aws/things/{thing}/{rest}\"\n",
       "bridge.cloud_topic_template: \"$aws/things/{thing}/{rest}\" starts with \"$\""},
      {"[[sensor]]\nid = \"gateway\"\n", "sensor[0].id: \"gateway\" is the gateway's own identity"},
  };
  for (const auto& c : cases) {
    ParsedConfig p = ParseConfig(std::string(kMinimal) + c.extra, "a.toml");
    EXPECT_FALSE(p.ok()) << c.extra;
    EXPECT_NE(Joined(p).find(c.expected), std::string::npos) << c.extra << "\n" << Joined(p);
  }
  // state_dir = "" sits in [agent], which kMinimal already opens.
  ParsedConfig p = ParseConfig(
      "[agent]\nthing_name = \"gw-1\"\nstate_dir = \"\"\n[aws]\nendpoint = \"e\"\n", "a.toml");
  EXPECT_NE(Joined(p).find("agent.state_dir: must not be empty"), std::string::npos) << Joined(p);
}

TEST(Config, ValidityIsADurationOrDaysAndRenewalHasItsPolicy) {
  ParsedConfig days = ParseConfig(std::string(kMinimal) + "[ca]\nvalidity_days = 90\n", "a.toml");
  ASSERT_TRUE(days.ok()) << Joined(days);
  EXPECT_EQ(days.config.ca.validity, std::chrono::hours(24 * 90));
  ParsedConfig minutes =
      ParseConfig(std::string(kMinimal) + "[ca]\nvalidity = \"10m\"\n", "a.toml");
  ASSERT_TRUE(minutes.ok()) << Joined(minutes);
  EXPECT_EQ(minutes.config.ca.validity, std::chrono::minutes(10));
  ParsedConfig renewal = ParseConfig(std::string(kMinimal) +
                                         "[renewal]\nthreshold = 0.5\nbefore = \"2m\"\n"
                                         "rekey = false\nretry_initial = \"5s\"\n",
                                     "a.toml");
  ASSERT_TRUE(renewal.ok()) << Joined(renewal);
  EXPECT_DOUBLE_EQ(renewal.config.renewal.threshold, 0.5);
  EXPECT_EQ(renewal.config.renewal.before, std::chrono::minutes(2));
  EXPECT_FALSE(renewal.config.renewal.rekey);
  EXPECT_EQ(renewal.config.renewal.retry_initial, std::chrono::seconds(5));
  ParsedConfig defaults = ParseConfig(kMinimal, "a.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults.config.ca.validity, std::chrono::hours(24 * 365));
  EXPECT_DOUBLE_EQ(defaults.config.renewal.threshold, 0.8);
  EXPECT_TRUE(defaults.config.renewal.rekey);

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[ca]\nvalidity = \"10m\"\nvalidity_days = 3\n",
       "ca.validity_days: give either validity or validity_days, not both"},
      {"[ca]\nvalidity = \"30s\"\n", "ca.validity"},
      {"[renewal]\nthreshold = 1.0\n", "renewal.threshold"},
      {"[renewal]\nretry = \"1m\"\n", "renewal.retry"},
  };
  for (const auto& [extra, expected] : bad) {
    ParsedConfig p = ParseConfig(std::string(kMinimal) + extra, "a.toml");
    EXPECT_FALSE(p.ok()) << extra;
    EXPECT_NE(Joined(p).find(expected), std::string::npos) << extra << "\n" << Joined(p);
  }
}

TEST(Config, ProxySettingsAreCheckedWithWhatToDo) {
  struct Case {
    std::string aws;
    std::string expected;  // "" when valid
  };
  const std::vector<Case> cases = {
      {"proxy = \"http://proxy.corp:3128\"\n", ""},
      {"proxy = \"socks5://10.0.0.1:1080\"\n", ""},
      {"proxy = \"http://gw@proxy.corp:3128\"\nproxy_password_file = \"/etc/p\"\n", ""},
      {"proxy = \"http://gw:secret@proxy.corp:3128\"\n", "holds a password"},
      {"proxy = \"https://proxy.corp:3128\"\n", "(https://) is not supported"},
      {"proxy = \"ftp://proxy.corp:21\"\n", "scheme \"ftp\" is not supported"},
      {"proxy = \"proxy.corp:3128\"\n", "must look like"},
      {"proxy = \"http://proxy.corp\"\n", "names no port"},
      {"proxy = \"http://proxy.corp:99999\"\n", "not a number from 1 to 65535"},
      {"proxy = \"http://gw@proxy.corp:3128\"\n", "its password goes in the file"},
      {"proxy = \"http://proxy.corp:3128\"\nproxy_password_file = \"/etc/p\"\n", "names no user"},
      {"proxy_password_file = \"/etc/p\"\n", "aws.proxy: is not set"},
  };
  for (const auto& c : cases) {
    ParsedConfig p =
        ParseConfig("[agent]\nthing_name = \"gw-1\"\n[aws]\nendpoint = \"e\"\n" + c.aws, "a.toml");
    if (c.expected.empty()) {
      EXPECT_TRUE(p.ok()) << c.aws << Joined(p);
    } else {
      EXPECT_NE(Joined(p).find(c.expected), std::string::npos) << c.aws << "\n" << Joined(p);
    }
  }
  auto ipv6 = ParseProxyUrl("socks5h://user@[::1]:1080");
  ASSERT_TRUE(ipv6.ok()) << ipv6.status().ToString();
  EXPECT_EQ(ipv6->host, "::1");
  EXPECT_EQ(ipv6->kind, ProxyEndpoint::Kind::kSocks5);
  EXPECT_EQ(ipv6->Describe(), "socks5://user@::1:1080");
}

// Every problem points at its key (or, for a missing key, its section), and
// control characters quoted from the file are shown escaped, whole.
TEST(Config, ProblemsAcrossKeysHaveALineAndColumnAndReadableText) {
  ParsedConfig p = ParseConfig(
      "[agent]\n"                    // 1
      "thing_name = \"bad name\"\n"  // 2
      "[aws]\n"                      // 3
      "endpoint = \"e\"\n"           // 4
      "[ca]\n"                       // 5
      "backend = \"command\"\n"      // 6
      "[[sensor]]\n"                 // 7
      "thing_name = \"x\"\n"         // 8
      "id = \"a\\u0000b\\nc\"\n",    // 9
      "a.toml");
  std::string all = Joined(p);
  EXPECT_NE(all.find("a.toml:2:14: agent.thing_name: \"bad name\" is not a valid thing name"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("a.toml:5:1: ca.command: is required"), std::string::npos) << all;
  EXPECT_NE(all.find("a.toml:9:6: sensor[0].id: \"a\\x00b\\x0ac\" is not a valid sensor id"),
            std::string::npos)
      << all;
}

TEST(Config, SensorsOverTheGatewaysConnection) {
  std::string text = std::string(kMinimal) + R"(
[[sensor]]
id = "a"
connection = "gateway"
[[sensor]]
id = "b"
thing_name = "site-b"
connection = "gateway"
[[sensor]]
id = "c"
connection = "shared"
)";
  ParsedConfig p = ParseConfig(text, "a.toml");
  std::string all = Joined(p);
  EXPECT_NE(all.find("sensor[1].connection: sensor b travels over the gateway's connection, so "
                     "its thing name must start with \"gw-1:\""),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("connection: \"shared\" is not one of \"own\", \"gateway\""),
            std::string::npos)
      << all;
  EXPECT_EQ(p.problems.size(), 2u) << all;

  // One subscription each on the gateway's connection: 49 fit beside its own.
  std::string many = kMinimal;
  for (int i = 0; i < 50; ++i) {
    many += "[[sensor]]\nid = \"s" + std::to_string(i) + "\"\nconnection = \"gateway\"\n";
  }
  ParsedConfig q = ParseConfig(many, "a.toml");
  all = Joined(q);
  ASSERT_EQ(q.problems.size(), 1u) << all;
  EXPECT_NE(all.find("sensor[49].connection: at most 49 sensors"), std::string::npos) << all;
}

TEST(Config, TheSeparatorKeepsGatewaysApart) {
  // "gw-1" is a prefix of "gw-1-b" and "gw-1-b:s1": with ":" as the separator its
  // policy ("gw-1:*") reaches neither, and only "gw-1:<id>" travels over its connection.
  ParsedConfig ok = ParseConfig(std::string(kMinimal) + R"(
[[sensor]]
id = "a"
connection = "gateway"
[[sensor]]
id = "b"
thing_name = "gw-1:bee"
connection = "gateway"
[[sensor]]
id = "c"
thing_name = "site7-door-1"
)",
                                "a.toml");
  ASSERT_TRUE(ok.ok()) << Joined(ok);
  EXPECT_EQ(ok.config.SensorThingName(ok.config.sensors[0]), "gw-1:a");
  EXPECT_TRUE(ok.config.GatewayMayCarry("gw-1:a"));
  for (const char* other :
       {"gw-1-a", "gw-1", "gw-1:", "gw-1-b:s1", "gw-10:a", "gw-1:a:b", "x:gw-1:a"}) {
    EXPECT_FALSE(ok.config.GatewayMayCarry(other)) << other;
  }

  ParsedConfig gateway =
      ParseConfig("[agent]\nthing_name = \"site:7\"\n[aws]\nendpoint = \"e\"\n", "a.toml");
  std::string all = Joined(gateway);
  ASSERT_EQ(gateway.problems.size(), 1u) << all;
  EXPECT_NE(all.find("agent.thing_name: \"site:7\" may not contain \":\""), std::string::npos)
      << all;

  // A sensor's own name with ":" must be in this gateway's namespace.
  ParsedConfig sensors = ParseConfig(std::string(kMinimal) + R"(
[[sensor]]
id = "a"
thing_name = "other:a"
[[sensor]]
id = "b"
thing_name = "gw-1:b:c"
[[sensor]]
id = "d"
thing_name = "gw-1-d"
connection = "gateway"
)",
                                     "a.toml");
  all = Joined(sensors);
  ASSERT_EQ(sensors.problems.size(), 3u) << all;
  EXPECT_NE(all.find("sensor[0].thing_name: \"other:a\": a thing name with \":\" must be "
                     "\"gw-1:<id>\""),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("sensor[1].thing_name: \"gw-1:b:c\""), std::string::npos) << all;
  EXPECT_NE(all.find("sensor[2].connection: sensor d travels over the gateway's connection"),
            std::string::npos)
      << all;
}

TEST(Config, TheCommandFilterIsOneThingsSubtree) {
  // Commands are routed by the filter's prefix: "cmd/gw" would also match cmd/gw-s1.
  for (const char* bad : {"cmd/{thing}", "cmd/+/{thing}/#", "cmd/all/#"}) {
    ParsedConfig p = ParseConfig(
        std::string(kMinimal) + "[bridge]\ncommand_filter = \"" + bad + "\"\n", "a.toml");
    std::string all = Joined(p);
    ASSERT_EQ(p.problems.size(), 1u) << bad << ": " << all;
    EXPECT_NE(all.find("bridge.command_filter: \"" + std::string(bad) +
                       "\" must contain {thing}, "
                       "end with /# and have no +"),
              std::string::npos)
        << all;
  }
  EXPECT_TRUE(ParseConfig(std::string(kMinimal) +
                              "[bridge]\ncommand_filter = \"devices/{thing}/commands/#\"\n",
                          "a.toml")
                  .ok());
}

TEST(Config, RsaDeviceKeysAreRefusedForNow) {
  ParsedConfig p =
      ParseConfig(std::string(kMinimal) + "[tpm]\nkey_type = \"rsa-2048\"\n", "a.toml");
  ASSERT_EQ(p.problems.size(), 1u);
  EXPECT_EQ(p.problems[0].key, "tpm.key_type");
}

TEST(Config, Port443TurnsOnAlpn) {
  ParsedConfig p = ParseConfig(std::string(kMinimal) + "port = 443\n", "a.toml");
  ASSERT_TRUE(p.ok()) << Joined(p);
  EXPECT_TRUE(p.config.aws.alpn);
}

TEST(Config, EffectiveConfigRoundTrips) {
  std::string text = std::string(kMinimal) + R"(
[enrollment]
backoff_initial = "250ms"
[bridge]
outbox_max_bytes = 3000000
on_full = "reject-new"
[[sensor]]
id = "s1"
)";
  ParsedConfig first = ParseConfig(text, "a.toml");
  ASSERT_TRUE(first.ok()) << Joined(first);
  std::string printed = FormatConfig(first.config);
  ParsedConfig second = ParseConfig(printed, "printed.toml");
  ASSERT_TRUE(second.ok()) << Joined(second) << printed;
  EXPECT_EQ(FormatConfig(second.config), printed);
  EXPECT_EQ(second.config.enrollment.backoff_initial, std::chrono::milliseconds(250));
  EXPECT_EQ(second.config.bridge.outbox_max_bytes, 3000000u);
  EXPECT_EQ(second.config.sensors.at(0).id, "s1");
}

TEST(Config, DurationsAndSizes) {
  EXPECT_EQ(ParseDuration("30s"), std::chrono::seconds(30));
  EXPECT_EQ(ParseDuration("5m"), std::chrono::minutes(5));
  EXPECT_EQ(ParseDuration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(ParseDuration("7d"), std::chrono::hours(168));
  EXPECT_FALSE(ParseDuration("30"));
  EXPECT_FALSE(ParseDuration("s"));
  EXPECT_FALSE(ParseDuration("-1s"));
  EXPECT_FALSE(ParseDuration("99999999999999999999s"));
  EXPECT_EQ(ParseSize("256MiB"), 256ull << 20);
  EXPECT_EQ(ParseSize("512KiB"), 512ull << 10);
  EXPECT_EQ(ParseSize("100KB"), 100000u);
  EXPECT_EQ(ParseSize("4096"), 4096u);
  EXPECT_FALSE(ParseSize("12 parsecs"));
  EXPECT_EQ(FormatDuration(std::chrono::minutes(90)), "90m");
  EXPECT_EQ(FormatSize(3ull << 30), "3GiB");
}

TEST(Config, DurationMustBeAString) {
  ParsedConfig p =
      ParseConfig(std::string(kMinimal) + "[enrollment]\nbackoff_max = 30\n", "a.toml");
  ASSERT_EQ(p.problems.size(), 1u);
  EXPECT_NE(p.problems[0].message.find("expected a duration string"), std::string::npos);
}

}  // namespace
}  // namespace ga
