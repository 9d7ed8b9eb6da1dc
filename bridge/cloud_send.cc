// CloudLinks, the send path: outbox -> cloud connection, within each
// connection's in-flight window and rates; PUBACKs free the window and are
// handed to the outbox staging for deletion.
#include <algorithm>

#include "cloud_links.h"
#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"

namespace ga::bridge {

namespace {

constexpr int kRefill = 200;  // outbox rows read per refill

// The PUBLISH packet's size (at most), which AWS IoT's byte rate counts.
size_t PacketBytes(const OutboxMessage& m) {
  return m.payload.size() + m.topic.size() + aws::kPublishHeaderBytes;
}

}  // namespace

void CloudLinks::Send(CloudConnection& c) {
  if (!c.connected || !c.mosq) return;  // a carried sensor is sent by its carrier
  auto now = Clock::now();
  if (c.riders.empty()) {
    while (SendOne(c, c, now)) {
    }
    return;
  }
  std::vector<CloudConnection*> turns = {&c};
  turns.insert(turns.end(), c.riders.begin(), c.riders.end());
  SendInTurns(turns.size(), &c.next_turn, [&](size_t i) { return SendOne(*turns[i], c, now); });
}

// Hands the next message of `sender` to `via`'s connection; false when there
// is none, or the window or a rate limit of `via` is spent.
bool CloudLinks::SendOne(CloudConnection& sender, CloudConnection& via, Clock::time_point now) {
  if (via.budget->WindowFull(via.in_flight())) return false;
  if (sender.pending.empty()) {
    if (sender.drained) return false;
    auto next = parts_.outbox.Next(sender.name, sender.last_queued, kRefill);
    if (!next.ok()) {
      log::Error(next.status().message(), {{"IDENTITY", sender.name}});
      return false;
    }
    if (next->empty()) {
      sender.drained = true;
      return false;
    }
    for (auto& m : *next) sender.pending.push_back(std::move(m));
  }
  OutboxMessage& m = sender.pending.front();
  const size_t bytes = PacketBytes(m);
  if (!via.budget->TryTake(bytes, now)) return false;
  int mid = 0;
  int rc = mosquitto_publish(via.mosq.get(), &mid, m.topic.c_str(),
                             static_cast<int>(m.payload.size()), m.payload.data(), 1, false);
  if (rc != MOSQ_ERR_SUCCESS) {
    via.budget->Acknowledged(bytes, now);  // never sent
    log::Warning("publish for " + sender.name + " failed: " + mosquitto_strerror(rc),
                 {{"IDENTITY", sender.name}});
    return false;
  }
  via.inflight[mid] = {&sender, m.seq, bytes};
  sender.last_queued = m.seq;
  sender.pending.pop_front();
  ++via.published;
  tls_buffers_.Hold(via);
  parts_.agenda.MarkWrite(via);
  return true;
}

void CloudLinks::OnPuback(mosquitto* m, int mid) {
  CloudConnection* c = Of(m);
  if (c == nullptr) return;
  auto it = c->inflight.find(mid);
  if (it == c->inflight.end()) return;
  parts_.staging.Acknowledged(it->second.seq);
  c->budget->Acknowledged(it->second.bytes, Clock::now());
  c->inflight.erase(it);
  parts_.agenda.MarkSend(*c);  // the window has room again
}

// libmosquitto would resend every unacknowledged message at the next
// CONNACK, all at once and past the send budget: after a half-open link that
// is a whole window (up to 100) plus the budget's burst in the connection's
// first second, more than the 100 publishes per second AWS IoT allows. They
// go through the budget instead: each sender reads its outbox again from its
// oldest unacknowledged message, and the next connection is made by a new
// client, whose queue is empty. (A message the server got without its
// PUBACK reaching us is sent twice, as libmosquitto's resend would.)
void CloudLinks::TakeBackUnacknowledged(CloudConnection& c) {
  for (const auto& [mid, m] : c.inflight) {
    m.sender->last_queued = std::min(m.sender->last_queued, m.seq - 1);
  }
  c.inflight.clear();
  c.budget->NewConnection(Clock::now());
  if (c.mosq) {
    by_mosq_.erase(c.mosq.get());
    c.mosq.reset();
  }
}

void CloudLinks::TakeCommitted(std::vector<OutboxMessage>& committed) {
  for (auto& m : committed) {
    auto it = clouds_.find(m.identity);
    if (it == clouds_.end()) continue;
    CloudConnection& c = *it->second;
    if (c.drained) {
      c.pending.push_back(std::move(m));
      parts_.agenda.MarkSend(c);
    }
  }
}

}  // namespace ga::bridge
