// CloudLinks, shared mode: a sensor whose BridgeIdentity names a carrier in
// `via` (the gateway) has no connection of its own; its messages, still to
// its own thing's topics, take turns with the carrier's own on the carrier's
// connection, within that connection's window and rates, and the carrier
// subscribes to the sensor's command filter. Its outbox queue stays its own.
#include "cloud_links.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"

namespace ga::bridge {

void CloudLinks::AddRider(const BridgeIdentity& identity) {
  auto c = std::make_unique<CloudConnection>();
  c->name = identity.name;
  c->identity = identity;
  CloudConnection& rider = *c;
  clouds_[identity.name] = std::move(c);
  auto carrier = clouds_.find(identity.via);
  if (carrier != clouds_.end() && carrier->second->identity.via.empty()) {
    Attach(*carrier->second, rider);
  }
}

void CloudLinks::Attach(CloudConnection& carrier, CloudConnection& rider) {
  rider.carrier = &carrier;
  carrier.riders.push_back(&rider);
  std::erase(carrier.stale_filters, parts_.topics.CommandFilter(rider.identity.thing));
  if (carrier.riders.size() == 1 && !carrier.identity.uses_gateway_policy) {
    log::Warning("sensor " + rider.name + " travels over the connection of " + carrier.name +
                     ", whose certificate has no OU=gateway: unless the gateway policy is "
                     "attached to it by hand, AWS IoT disconnects it when it publishes for a "
                     "sensor (cloud/README.md, shared mode)",
                 {{"IDENTITY", carrier.name}});
  }
  if (carrier.connected) {
    SubscribeCommands(carrier, {&rider});
    SetConnected(rider, true);
    parts_.agenda.MarkWrite(carrier);
    parts_.agenda.MarkSend(carrier);
  }
}

void CloudLinks::Detach(CloudConnection& rider) {
  CloudConnection* carrier = rider.carrier;
  if (carrier == nullptr) return;
  std::erase(carrier->riders, &rider);
  std::erase_if(carrier->inflight, [&](const auto& e) {
    if (e.second.sender != &rider) return false;
    carrier->budget->Acknowledged(e.second.bytes, Clock::now());  // no longer waited for
    return true;
  });
  std::string filter = parts_.topics.CommandFilter(rider.identity.thing);
  if (carrier->connected && carrier->mosq) {
    mosquitto_unsubscribe(carrier->mosq.get(), nullptr, filter.c_str());
    parts_.agenda.MarkWrite(*carrier);
  } else {
    carrier->stale_filters.push_back(filter);
  }
  rider.carrier = nullptr;
  SetConnected(rider, false);
  // What it had in flight is sent again by the next carrier.
  rider.pending.clear();
  rider.last_queued = 0;
  rider.drained = false;
}

// AWS IoT takes at most 8 filters per SUBSCRIBE.
void CloudLinks::SubscribeCommands(CloudConnection& carrier,
                                   const std::vector<CloudConnection*>& who) {
  for (size_t i = 0; i < who.size(); i += aws::kMaxFiltersPerSubscribe) {
    std::vector<std::string> filters;
    for (size_t j = i; j < std::min(who.size(), i + aws::kMaxFiltersPerSubscribe); ++j) {
      filters.push_back(parts_.topics.CommandFilter(who[j]->identity.thing));
    }
    std::vector<char*> ptrs;
    for (auto& f : filters) ptrs.push_back(f.data());
    int rc = mosquitto_subscribe_multiple(
        carrier.mosq.get(), nullptr, static_cast<int>(ptrs.size()), ptrs.data(), 1, 0, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      log::Warning("subscribing " + carrier.name + " to commands failed: " + mosquitto_strerror(rc),
                   {{"IDENTITY", carrier.name}});
    }
  }
}

}  // namespace ga::bridge
