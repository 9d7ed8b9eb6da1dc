// AWS IoT Core's names and limits that the bridge and enrollment both respect
// (see ../shared/design/AWS-IOT-FACTS.md and the AWS IoT Core quotas page:
// https://docs.aws.amazon.com/general/latest/gr/iot-core.html). One place, so
// that a changed quota is changed once.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace ga::aws {

// One CONNECT per second per client id is allowed; a little more keeps a
// retry clear of the boundary.
inline constexpr std::chrono::milliseconds kConnectSpacingPerClientId{1100};

// The ALPN protocol that lets MQTT with client certificates use port 443.
inline constexpr const char* kMqttAlpn = "x-amzn-mqtt-ca";

// Publish limits, checked before anything is sent.
inline constexpr size_t kMaxPayloadBytes = 128 * 1024;
inline constexpr size_t kMaxTopicBytes = 256;
inline constexpr int kMaxTopicLevels = 8;  // slashes + 1, the reserved prefix excluded

// Topic filters per SUBSCRIBE packet, and subscriptions per connection.
inline constexpr size_t kMaxFiltersPerSubscribe = 8;
inline constexpr size_t kMaxSubscriptionsPerConnection = 50;

// A certificate's CN is the thing name: X.509 caps a CN at 64 characters,
// AWS thing names at 128, so an enrollable thing name has at most 64.
inline constexpr size_t kMaxCommonNameBytes = 64;

// Where an identity asks, with its new certificate, for its previous one to
// be retired (cloud/jitr-lambda: the retire rule and the Lambda answer on
// <topic>/accepted or <topic>/rejected; the device and gateway policies allow
// each thing only its own).
inline std::string RetireTopic(const std::string& thing) {
  return "lifecycle/" + thing + "/retire";
}

}  // namespace ga::aws
