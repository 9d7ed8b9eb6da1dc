// Lifecycle requests (aws::LifecycleAsk: retire the previous certificate,
// hand the thing over to a new CA) asked over an identity's own cloud
// connection, which keeps carrying messages meanwhile: SUBSCRIBE to the
// answers, the request published once the SUBACK is in (so no answer can
// come before the subscription), the answer matched by its echoed field,
// then UNSUBSCRIBE.
#include <mosquitto.h>

#include <nlohmann/json.hpp>

#include "cloud_links.h"
#include "gateway_agent/aws_iot.h"
#include "lifecycle_request.h"

namespace ga::bridge {

namespace {

LifecycleReply NotSent(std::string why) {
  LifecycleReply r;
  r.detail = std::move(why);
  return r;
}

std::string StringField(const nlohmann::json& j, const std::string& key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

void CloudLinks::Ask(const std::string& name, const std::shared_ptr<LifecycleRequest>& request) {
  auto it = clouds_.find(name);
  if (it == clouds_.end() || !it->second->identity.via.empty() || !it->second->connected ||
      !it->second->mosq) {
    request->Complete(NotSent("the cloud connection of " + name + " is not up"));
    return;
  }
  CloudConnection& c = *it->second;
  EndAsked(c, "asked again");
  const std::string answers = aws::LifecycleTopic(c.identity.thing, request->ask().action) + "/+";
  int mid = 0;
  int rc = mosquitto_subscribe(c.mosq.get(), &mid, answers.c_str(), 1);
  if (rc != MOSQ_ERR_SUCCESS) {
    request->Complete(NotSent("subscribing to " + answers + ": " + mosquitto_strerror(rc)));
    return;
  }
  c.asked = request;
  c.asked_subscribe_mid = mid;
  parts_.agenda.MarkWrite(c);
}

void CloudLinks::OnSubscribe(mosquitto* m, int mid, int count, const int* granted) {
  CloudConnection* c = Of(m);
  if (c == nullptr || !c->asked || mid != c->asked_subscribe_mid) return;
  c->asked_subscribe_mid = -1;
  const aws::LifecycleAsk& ask = c->asked->ask();
  const std::string topic = aws::LifecycleTopic(c->identity.thing, ask.action);
  if (count < 1 || granted[0] > 2) {
    return EndAsked(*c, "subscribing to " + topic + "/+ was refused (the policy lacks it)");
  }
  const std::string request = nlohmann::json{{ask.field, ask.value}}.dump();
  int rc = mosquitto_publish(m, nullptr, topic.c_str(), static_cast<int>(request.size()),
                             request.data(), /*qos=*/0, /*retain=*/false);
  if (rc != MOSQ_ERR_SUCCESS) {
    return EndAsked(*c, "publishing to " + topic + ": " + mosquitto_strerror(rc));
  }
  c->budget->SentWithoutAck(request.size() + topic.size() + aws::kPublishHeaderBytes, Clock::now());
  parts_.agenda.MarkWrite(*c);
}

bool CloudLinks::TakeLifecycleAnswer(CloudConnection& c, const mosquitto_message* msg) {
  const std::string ours = aws::LifecycleTopic(c.identity.thing, "");
  const std::string got = msg->topic;
  if (got.rfind(ours, 0) != 0) return false;
  if (!c.asked) return true;  // late: nothing waits for it any more
  const aws::LifecycleAsk& ask = c.asked->ask();
  const std::string topic = aws::LifecycleTopic(c.identity.thing, ask.action);
  const bool accepted = got == topic + "/accepted";
  if (!accepted && got != topic + "/rejected") return true;  // another request's answer
  auto answer = nlohmann::json::parse(static_cast<const char*>(msg->payload),
                                      static_cast<const char*>(msg->payload) + msg->payloadlen,
                                      nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object() || StringField(answer, ask.field) != ask.value) {
    return true;  // about another certificate or CA
  }
  LifecycleReply reply;
  reply.sent = true;
  reply.answered = true;
  reply.accepted = accepted;
  reply.detail = accepted ? "accepted" : StringField(answer, "reason");
  c.asked->Complete(std::move(reply));
  c.asked.reset();
  mosquitto_unsubscribe(c.mosq.get(), nullptr, (topic + "/+").c_str());
  parts_.agenda.MarkWrite(c);
  return true;
}

void CloudLinks::EndAsked(CloudConnection& c, const std::string& why) {
  c.asked_subscribe_mid = -1;
  if (!c.asked) return;
  LifecycleReply reply;
  reply.sent = true;
  reply.detail = why;
  c.asked->Complete(std::move(reply));
  c.asked.reset();
}

}  // namespace ga::bridge
