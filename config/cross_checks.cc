#include "cross_checks.h"

#include <set>

#include "gateway_agent/config.h"
#include "topic_rules.h"

namespace ga {
namespace {

// Where `dotted` ("agent.thing_name", "sensor[2].id") is in the file: the key's
// value, else the closest table that holds it (a missing key: its section);
// {0, 0} when none of it is in the file.
std::pair<int, int> Place(const toml::table& root, std::string_view dotted) {
  std::string path(dotted);
  while (!path.empty()) {
    if (toml::node_view<const toml::node> n = root.at_path(path); n) {
      const auto& begin = n.node()->source().begin;
      return {static_cast<int>(begin.line), static_cast<int>(begin.column)};
    }
    size_t cut = path.find_last_of(".[");
    if (cut == std::string::npos) break;
    path.resize(cut);
  }
  return {0, 0};
}

}  // namespace

void CheckAcrossSections(const Config& c, const toml::table& root, const std::string& file,
                         std::vector<ConfigProblem>& problems) {
  auto problem = [&](std::string key, std::string message) {
    auto [line, column] = Place(root, key);
    problems.push_back({file, line, column, std::move(key), std::move(message)});
  };
  if (c.agent.thing_name.empty()) {
    problem("agent.thing_name", "is required: the gateway's AWS IoT thing name");
  } else if (!IsEnrollableThingName(c.agent.thing_name)) {
    problem("agent.thing_name",
            "\"" + c.agent.thing_name +
                "\" is not a valid thing name: 1-64 characters of a-z A-Z 0-9 : _ - (AWS allows "
                "128, but it becomes the certificate's CN, limited to 64)");
  } else if (c.agent.thing_name.find(kThingSeparator) != std::string::npos) {
    problem("agent.thing_name",
            "\"" + c.agent.thing_name + "\" may not contain \"" + kThingSeparator +
                "\": it separates the gateway's name from its sensors' ids, and the JITR "
                "Lambda refuses such a gateway certificate");
  }
  if (c.aws.endpoint.empty()) {
    problem("aws.endpoint",
            "is required: your account's endpoint (aws iot describe-endpoint --endpoint-type "
            "iot:Data-ATS)");
  }
  if (std::string why = ProxySettingProblem(c.aws); !why.empty()) problem("aws.proxy", why);
  if (c.tpm.key_type == KeyType::kRsa2048) {
    // The TPM makes RSA keys (gateway-agent tpm create-key --algorithm rsa), but
    // the agent's OpenSSL provider signs TLS handshakes with ECC keys only.
    problem("tpm.key_type",
            "\"rsa-2048\" is not supported for enrolled identities yet; use \"ecc-p256\"");
  }
  if (c.enrollment.backoff_max < c.enrollment.backoff_initial) {
    problem("enrollment.backoff_max", "must not be shorter than enrollment.backoff_initial");
  }
  if (c.ca.backend == CaBackend::kCommand && c.ca.command.empty()) {
    problem("ca.command", "is required when ca.backend = \"command\"");
  }
  if (c.bridge.cloud_topic_template.find("{thing}") == std::string::npos) {
    problem("bridge.cloud_topic_template",
            "must contain {thing}: each sensor may only publish under its own thing's topics");
  }
  const std::string& commands = c.bridge.command_filter;
  if (commands.find("{thing}") == std::string::npos || commands.size() < 2 ||
      commands.compare(commands.size() - 2, 2, "/#") != 0 ||
      commands.find('+') != std::string::npos) {
    problem("bridge.command_filter",
            "\"" + commands +
                "\" must contain {thing}, end with /# and have no +, such as \"cmd/{thing}/#\"");
  }
  if (std::string why = PublishTopicProblem(c.bridge.cloud_topic_template); !why.empty()) {
    problem("bridge.cloud_topic_template",
            "\"" + c.bridge.cloud_topic_template + "\" " + why + ", such as \"dt/{thing}/{rest}\"");
  }
  if (std::string why = IngestFilterProblem(c.local.ingest_filter); !why.empty()) {
    problem("local.ingest_filter", "\"" + c.local.ingest_filter + "\" " + why);
  }
  if (c.agent.state_dir.empty()) {
    problem("agent.state_dir", "must not be empty: the directory for state.db and keys");
  }
  std::set<std::string> ids, things;
  things.insert(c.agent.thing_name);
  size_t over_gateway = 0;
  for (size_t i = 0; i < c.sensors.size(); ++i) {
    const SensorConfig& s = c.sensors[i];
    std::string key = "sensor[" + std::to_string(i) + "]";
    if (s.id.empty()) {
      problem(key + ".id", "is required");
      continue;
    }
    if (!IsValidSensorId(s.id) || !IsTopicLevelSafe(s.id)) {
      problem(key + ".id",
              "\"" + s.id + "\" is not a valid sensor id (1-64 characters of a-z A-Z 0-9 _ -)");
      continue;
    }
    if (s.id == kGatewayIdentityName) {
      problem(key + ".id",
              "\"gateway\" is the gateway's own identity name; choose another sensor id");
      continue;
    }
    if (!ids.insert(s.id).second) {
      problem(key + ".id", "\"" + s.id + "\" is declared twice");
      continue;
    }
    std::string thing = c.SensorThingName(s);
    if (!IsEnrollableThingName(thing)) {
      problem(key + ".thing_name",
              "\"" + thing + "\" is not a valid thing name: 1-64 characters of a-z A-Z 0-9 : _ -");
    } else if (thing.find(kThingSeparator) != std::string::npos && !c.GatewayMayCarry(thing)) {
      problem(key + ".thing_name",
              "\"" + thing + "\": a thing name with \"" + kThingSeparator + "\" must be \"" +
                  c.agent.thing_name + kThingSeparator + "<id>\" (names before \"" +
                  kThingSeparator + "\" belong to that gateway; the JITR Lambda refuses others)");
    } else if (!things.insert(thing).second) {
      problem(key + ".thing_name", "thing name \"" + thing + "\" is already used");
    } else if (s.connection == SensorConnection::kGateway && !c.GatewayMayCarry(thing)) {
      problem(key + ".connection",
              "sensor " + s.id +
                  " travels over the gateway's connection, so its thing name must "
                  "start with \"" +
                  c.agent.thing_name + kThingSeparator +
                  "\" (the gateway's policy allows those): "
                  "remove thing_name or set connection = \"own\"");
    }
    if (s.connection == SensorConnection::kGateway &&
        ++over_gateway == kMaxGatewayConnectionSensors + 1) {
      problem(key + ".connection",
              "at most " + std::to_string(kMaxGatewayConnectionSensors) +
                  " sensors can travel over the gateway's connection (AWS IoT allows 50 "
                  "subscriptions per connection); give the others connection = \"own\"");
    }
  }
}

}  // namespace ga
