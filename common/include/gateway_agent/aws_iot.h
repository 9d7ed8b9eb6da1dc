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
// The largest PUBLISH packet within those: payload, topic and at most 9 bytes
// of headers (fixed header, topic length, packet id).
inline constexpr size_t kPublishHeaderBytes = 9;
inline constexpr size_t kMaxPublishPacketBytes =
    kMaxPayloadBytes + kMaxTopicBytes + kPublishHeaderBytes;

// Topic filters per SUBSCRIBE packet, and subscriptions per connection.
inline constexpr size_t kMaxFiltersPerSubscribe = 8;
inline constexpr size_t kMaxSubscriptionsPerConnection = 50;

// A certificate's CN is the thing name: X.509 caps a CN at 64 characters,
// AWS thing names at 128, so an enrollable thing name has at most 64.
inline constexpr size_t kMaxCommonNameBytes = 64;

// An identity's requests about its own certificates and thing, published
// over its own connection to lifecycle/<thing>/<action> as {"<field>":"<value>"}
// (cloud/jitr-lambda: a topic rule per action runs the Lambda, which answers
// on lifecycle/<thing>/<action>/accepted or /rejected, echoing <field>; the
// device and gateway policies allow each thing only its own topics).
struct LifecycleAsk {
  std::string action;
  std::string field;
  std::string value;
};
inline std::string LifecycleTopic(const std::string& thing, const std::string& action) {
  return "lifecycle/" + thing + "/" + action;
}
// With its new certificate, for its previous one to be retired.
inline LifecycleAsk RetireAsk(const std::string& old_certificate_id) {
  return {"retire", "oldCertificateId", old_certificate_id};
}
// With its current certificate, for its thing to be handed over to the
// registered CA `ca_certificate_id` (a CA rollover), before it connects with
// a certificate of that CA.
inline LifecycleAsk HandOverAsk(const std::string& ca_certificate_id) {
  return {"handover", "caCertificateId", ca_certificate_id};
}

}  // namespace ga::aws
