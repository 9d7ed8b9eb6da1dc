// Retirements asked over an identity's own cloud connection, which keeps
// carrying messages meanwhile: SUBSCRIBE to the answers, the request
// published once the SUBACK is in (so no answer can come before the
// subscription), the answer matched by certificate id, then UNSUBSCRIBE.
#include <mosquitto.h>

#include <nlohmann/json.hpp>

#include "cloud_links.h"
#include "gateway_agent/aws_iot.h"
#include "retire_request.h"

namespace ga::bridge {

namespace {

RetireReply NotSent(std::string why) {
  RetireReply r;
  r.detail = std::move(why);
  return r;
}

std::string StringField(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

void CloudLinks::AskToRetire(const std::string& name,
                             const std::shared_ptr<RetireRequest>& request) {
  auto it = clouds_.find(name);
  if (it == clouds_.end() || !it->second->identity.via.empty() || !it->second->connected ||
      !it->second->mosq) {
    request->Complete(NotSent("the cloud connection of " + name + " is not up"));
    return;
  }
  CloudConnection& c = *it->second;
  EndRetire(c, "asked again");
  const std::string answers = aws::RetireTopic(c.identity.thing) + "/+";
  int mid = 0;
  int rc = mosquitto_subscribe(c.mosq.get(), &mid, answers.c_str(), 1);
  if (rc != MOSQ_ERR_SUCCESS) {
    request->Complete(NotSent("subscribing to " + answers + ": " + mosquitto_strerror(rc)));
    return;
  }
  c.retire = request;
  c.retire_subscribe_mid = mid;
  parts_.agenda.MarkWrite(c);
}

void CloudLinks::OnSubscribe(mosquitto* m, int mid, int count, const int* granted) {
  CloudConnection* c = Of(m);
  if (c == nullptr || !c->retire || mid != c->retire_subscribe_mid) return;
  c->retire_subscribe_mid = -1;
  const std::string topic = aws::RetireTopic(c->identity.thing);
  if (count < 1 || granted[0] > 2) {
    return EndRetire(*c, "subscribing to " + topic + "/+ was refused (the policy lacks it)");
  }
  const std::string request =
      nlohmann::json{{"oldCertificateId", c->retire->old_certificate_id()}}.dump();
  int rc = mosquitto_publish(m, nullptr, topic.c_str(), static_cast<int>(request.size()),
                             request.data(), /*qos=*/0, /*retain=*/false);
  if (rc != MOSQ_ERR_SUCCESS) {
    return EndRetire(*c, "publishing to " + topic + ": " + mosquitto_strerror(rc));
  }
  parts_.agenda.MarkWrite(*c);
}

bool CloudLinks::TakeRetireAnswer(CloudConnection& c, const mosquitto_message* msg) {
  const std::string topic = aws::RetireTopic(c.identity.thing);
  const std::string got = msg->topic;
  const bool accepted = got == topic + "/accepted";
  if (!accepted && got != topic + "/rejected") return false;
  if (!c.retire) return true;  // late: nothing waits for it any more
  auto answer = nlohmann::json::parse(static_cast<const char*>(msg->payload),
                                      static_cast<const char*>(msg->payload) + msg->payloadlen,
                                      nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object() ||
      StringField(answer, "oldCertificateId") != c.retire->old_certificate_id()) {
    return true;  // about another certificate
  }
  RetireReply reply;
  reply.sent = true;
  reply.answered = true;
  reply.accepted = accepted;
  reply.detail = accepted ? "retired" : StringField(answer, "reason");
  c.retire->Complete(std::move(reply));
  c.retire.reset();
  mosquitto_unsubscribe(c.mosq.get(), nullptr, (topic + "/+").c_str());
  parts_.agenda.MarkWrite(c);
  return true;
}

void CloudLinks::EndRetire(CloudConnection& c, const std::string& why) {
  c.retire_subscribe_mid = -1;
  if (!c.retire) return;
  RetireReply reply;
  reply.sent = true;
  reply.detail = why;
  c.retire->Complete(std::move(reply));
  c.retire.reset();
}

}  // namespace ga::bridge
