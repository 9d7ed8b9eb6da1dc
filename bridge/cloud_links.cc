#include "cloud_links.h"

#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "gateway_agent/aws_iot.h"
#include "gateway_agent/log.h"

namespace ga::bridge {

namespace {

constexpr int kHandshakeThreads = 4;
// Busy connections that keep their TLS buffers (see TlsBufferPolicy): ~4 MiB.
constexpr size_t kTlsBufferHolders = 128;
// After this many handshakes, free heap memory goes back to the system once
// none has finished for each of these times (see ReleaseFreeMemory).
constexpr int kHandshakesBeforeTrim = 50;
constexpr std::chrono::seconds kTrimQuiet[] = {std::chrono::seconds(2), std::chrono::seconds(15)};
// A TCP connect and TLS handshake, then a CONNACK, must be over by these.
constexpr std::chrono::seconds kHandshakeTimeout{60};
constexpr std::chrono::seconds kConnackTimeout{30};
// How long a failing gateway connection holds the sensors' own reconnects
// back (Tick): past this, it fails for reasons of its own.
constexpr std::chrono::minutes kGatewayLeadsFor{2};

}  // namespace

bool TestUnlimitedRate() {
  static const bool on = [] {
    const char* v = std::getenv("GATEWAY_AGENT_TEST_UNLIMITED_RATE");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return on;
}

CloudLinks::CloudLinks(Settings settings, Parts parts)
    : settings_(std::move(settings)),
      parts_(parts),
      tls_buffers_(kTlsBufferHolders),
      handshakes_(kHandshakeThreads, settings_.connect_interrupt_signal),
      connects_(settings_.aws.connect_rate, std::max(1.0, settings_.aws.connect_rate / 10)) {}

void CloudLinks::Upsert(const BridgeIdentity& identity) {
  auto it = clouds_.find(identity.name);
  if (it != clouds_.end() && it->second->identity.via != identity.via) {
    Drop(identity.name);  // moves between its own and a shared connection
    it = clouds_.end();
  }
  if (!identity.via.empty()) {
    if (it == clouds_.end()) AddRider(identity);
    return;
  }
  if (identity.active && it == clouds_.end()) {
    auto c = std::make_unique<CloudConnection>();
    c->name = identity.name;
    c->identity = identity;
    const BridgeConfig& b = settings_.bridge;
    c->budget = std::make_unique<SendBudget>(b.publish_rate, static_cast<double>(b.byte_rate),
                                             static_cast<size_t>(b.inflight_window),
                                             TestUnlimitedRate(), Clock::now());
    // AWS allows one CONNECT per second per client id; enrollment just used one.
    c->next_connect = Clock::now() + aws::kConnectSpacingPerClientId;
    CloudConnection& carrier = *c;
    clouds_[identity.name] = std::move(c);
    for (auto& [name, rider] : clouds_) {
      if (rider->identity.via == identity.name) Attach(carrier, *rider);
    }
  } else if (!identity.active && it != clouds_.end()) {
    Drop(identity.name);
  }
}

void CloudLinks::Drop(const std::string& name) {
  auto it = clouds_.find(name);
  if (it == clouds_.end()) return;
  CloudConnection& c = *it->second;
  EndAsked(c, "the connection was let go before the answer");
  Detach(c);
  for (CloudConnection* rider : std::vector<CloudConnection*>(c.riders)) Detach(*rider);
  parts_.loop.Unwatch(c);
  parts_.agenda.Unmark(c);
  tls_buffers_.Forget(c);
  if (c.handshaking) {
    retired_.push_back(std::move(it->second));
    clouds_.erase(it);
    return;
  }
  if (c.mosq) {
    if (c.connected) {
      mosquitto_disconnect(c.mosq.get());
      mosquitto_loop_write(c.mosq.get(), 1);
    }
    by_mosq_.erase(c.mosq.get());
  }
  if (Status s = parts_.outbox.SetConnected(name, false); !s.ok()) {
    log::Error(s.message(), {{"IDENTITY", name}});
  }
  clouds_.erase(it);
}

Status CloudLinks::NewClient(CloudConnection& c) {
  if (!c.identity.credentials) {
    return FailedPrecondition("no key and certificate were loaded for " + c.name);
  }
  if (!tls_) {
    GA_ASSIGN_OR_RETURN(CloudTlsContext tls, CloudTlsContext::Create(settings_.aws));
    tls_.emplace(std::move(tls));
  }
  MosqPtr mosq(mosquitto_new(c.identity.thing.c_str(), /*clean_session=*/false, &c));
  if (!mosq) return Internal("mosquitto_new failed");
  mosquitto* m = mosq.get();
  mosquitto_threaded_set(m, true);
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
  mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, tls_->get());  // libmosquitto takes a reference
  mosquitto_max_inflight_messages_set(m, static_cast<unsigned>(settings_.bridge.inflight_window));
  mosquitto_user_data_set(m, this);
  mosquitto_connect_callback_set(m, [](mosquitto* mq, void* self, int rc) {
    static_cast<CloudLinks*>(self)->OnConnect(mq, rc);
  });
  mosquitto_publish_callback_set(m, [](mosquitto* mq, void* self, int mid) {
    static_cast<CloudLinks*>(self)->OnPuback(mq, mid);
  });
  mosquitto_message_callback_set(m, [](mosquitto* mq, void* self, const mosquitto_message* msg) {
    static_cast<CloudLinks*>(self)->OnMessage(mq, msg);
  });
  mosquitto_subscribe_callback_set(
      m, [](mosquitto* mq, void* self, int mid, int count, const int* granted) {
        static_cast<CloudLinks*>(self)->OnSubscribe(mq, mid, count, granted);
      });
  by_mosq_[m] = &c;
  c.mosq = std::move(mosq);
  return Status::Ok();
}

void CloudLinks::Connect(CloudConnection& c, tpm::TpmWork work) {
  if (!c.mosq) {
    if (Status s = NewClient(c); !s.ok()) {
      log::Error("cloud connection " + c.name + ": " + s.message(), {{"IDENTITY", c.name}});
      c.problem = s.message();
      return Lost(c, MOSQ_ERR_TLS);
    }
  }
  const AwsConfig& aws = settings_.aws;
  int keepalive =
      static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(aws.keepalive).count());
  c.connecting = true;
  c.handshaking = true;
  ++handshakes_running_;
  c.next_connect = Clock::now() + kHandshakeTimeout;
  parts_.loop.Unwatch(c);
  mosquitto* m = c.mosq.get();
  CloudConnection* conn = &c;
  // aws.proxy, its password read now: a new one needs no restart.
  auto proxy = CloudProxy(aws);
  // Queued, it will want the TPM: background TPM work waits for it.
  auto queued = std::make_shared<tpm::HandshakeAnnouncement>();
  handshakes_.Submit(
      [this, m, host = aws.endpoint, port = aws.port, keepalive, conn, proxy = std::move(proxy),
       work, queued]() mutable {
        queued.reset();  // announced again once its TCP connect is done
        tpm::TpmWorkScope tpm_work(work);
        // The shared context's certificate callback runs on this thread, inside
        // SSL_connect, and presents this connection's identity.
        CloudTlsContext::PresentOnThisThread(conn->identity.credentials.get());
        CloudTlsContext::Tunnel tunnel;
        tunnel.host = host;
        tunnel.port = port;
        tunnel.deadline = Clock::now() + kTlsHandshakeTimeout;
        tunnel.stop = &handshakes_.stopping();
        std::string connect_host = host;
        int connect_port = port;
        if (proxy.ok() && proxy->has_value()) {
          tunnel.proxy = &**proxy;
          connect_host = (*proxy)->host;
          connect_port = (*proxy)->port;
          CloudTlsContext::TunnelOnThisThread(&tunnel);
        }
        // Blocking TCP connect: libmosquitto then tries every address of the
        // endpoint in turn (its asynchronous connect stops at the first).
        int rc = !proxy.ok() ? MOSQ_ERR_INVAL : handshakes_.InterruptibleConnect([&] {
          return mosquitto_connect(m, connect_host.c_str(), connect_port, keepalive);
        });
        std::string why;
        if (!proxy.ok()) {
          why = proxy.status().message();
        } else if (!tunnel.error.empty()) {
          rc = MOSQ_ERR_CONN_REFUSED;
          why = tunnel.error;
        } else if (rc == MOSQ_ERR_SUCCESS) {
          // Data the peer does not acknowledge for 1.5 keepalives ends the
          // connection (a write into a half-open link would wait ~15 minutes).
          unsigned user_timeout = static_cast<unsigned>(keepalive) * 1500u;
          setsockopt(mosquitto_socket(m), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
                     sizeof user_timeout);
          // Its signature is next: background TPM work waits for it.
          tpm::HandshakeAnnouncement announce;
          HandshakeEnd end = FinishTlsHandshake(m, handshakes_.stopping());
          rc = end.rc;
          why = std::move(end.why);
          if (!tunnel.error.empty()) {  // the handshake started only now
            rc = MOSQ_ERR_CONN_REFUSED;
            why = tunnel.error;
          } else if (rc != MOSQ_ERR_SUCCESS && tunnel.opened) {
            why += " (through proxy " + tunnel.proxy->Describe() + ")";
          }
        } else if (rc == MOSQ_ERR_EAI) {
          // libmosquitto leaves getaddrinfo's code in errno.
          why = "cannot resolve " + connect_host + ": " + gai_strerror(errno);
        } else {
          // errno belongs to this thread: turn it into text here.
          why = rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc);
          if (tunnel.proxy != nullptr) {
            why = "proxy " + tunnel.proxy->Describe() +
                  (tunnel.opened ? ": the tunnel closed: " : " unreachable: ") + why;
          }
        }
        CloudTlsContext::TunnelOnThisThread(nullptr);
        CloudTlsContext::PresentOnThisThread(nullptr);
        parts_.loop.Post([this, conn, rc, why] { HandshakeDone(*conn, rc, why); });
      },
      static_cast<int>(work));
}

void CloudLinks::HandshakeDone(CloudConnection& c, int rc, const std::string& why) {
  c.handshaking = false;
  tls_buffers_.Forget(c);  // a new SSL, with the context's modes
  --handshakes_running_;
  ++handshakes_since_trim_;
  last_handshake_done_ = Clock::now();
  for (auto it = retired_.begin(); it != retired_.end(); ++it) {
    if (it->get() == &c) {  // dropped meanwhile: now it can go
      by_mosq_.erase(c.mosq.get());
      retired_.erase(it);
      return;
    }
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    c.problem = "cannot connect to " + settings_.aws.endpoint + ": " + why;
    // Every handshake signs with a TPM key: a TPM that is away is the cause.
    std::string tpm = settings_.tpm_problem ? settings_.tpm_problem() : "";
    if (!tpm.empty()) c.problem += " (" + tpm + ")";
    log::Warning("cloud connection " + c.name + ": " + c.problem, {{"IDENTITY", c.name}});
    c.connecting = false;  // logged here; Lost only backs off
    return Lost(c, rc);
  }
  // CONNECT is queued; the CONNACK arrives through loop_read.
  c.connect_sent = true;
  c.last_attempt = Clock::now();
  c.next_connect = Clock::now() + kConnackTimeout;
  parts_.loop.Watch(c);
  parts_.agenda.MarkReread(c);
}

CloudConnection* CloudLinks::Of(mosquitto* m) {
  auto it = by_mosq_.find(m);
  return it == by_mosq_.end() ? nullptr : it->second;
}

void CloudLinks::OnConnect(mosquitto* m, int rc) {
  CloudConnection* c = Of(m);
  if (c == nullptr) return;
  c->connecting = false;
  c->connect_sent = false;
  if (rc != 0) {
    ++c->refused;
    c->problem = std::string("AWS IoT refused the connection: ") + mosquitto_connack_string(rc);
    log::Warning(
        "AWS IoT refused the connection of " + c->name + ": " + mosquitto_connack_string(rc),
        {{"IDENTITY", c->name}, {"THING", c->identity.thing}});
    mosquitto_disconnect(m);
    return;
  }
  bool was_failing = c->failures > 0;
  c->failures = 0;
  c->refused = 0;
  c->lost_at = {};
  c->problem.clear();
  c->last_inbound = Clock::now();
  SetConnected(*c, true);
  log::Info("cloud connection " + c->name + " up as " + c->identity.thing,
            {{"IDENTITY", c->name}, {"THING", c->identity.thing}});
  if (was_failing) {
    CloudIsBack();
    // At once, not at the next tick: their handshakes queue for the TPM
    // before background work takes it.
    ConnectDue(Clock::now());
  }
  std::vector<CloudConnection*> who = {c};
  who.insert(who.end(), c->riders.begin(), c->riders.end());
  SubscribeCommands(*c, who);
  for (const std::string& filter : c->stale_filters) {
    mosquitto_unsubscribe(m, nullptr, filter.c_str());
  }
  c->stale_filters.clear();
  parts_.agenda.MarkSend(*c);
}

// A connection that had failed is up again: the endpoint is reachable, so the
// others waiting out their backoff try now, one CONNECT per second per client
// id at most and paced by aws.connect_rate (Tick).
void CloudLinks::CloudIsBack() {
  auto now = Clock::now();
  for (auto& [name, c] : clouds_) {
    if (!c->identity.via.empty() || c->connected || c->connecting || c->failures == 0) continue;
    c->next_connect =
        std::min(c->next_connect, std::max(now, c->last_attempt + aws::kConnectSpacingPerClientId));
  }
}

// cmd/<thing>/<rest> -> <prefix><sensor>/cmd/<rest>, for this connection's
// own thing or one of the sensors it carries.
void CloudLinks::OnMessage(mosquitto* m, const mosquitto_message* msg) {
  CloudConnection* c = Of(m);
  if (c == nullptr || TakeLifecycleAnswer(*c, msg) || !parts_.local.connected()) return;
  std::vector<CloudConnection*> who = {c};
  who.insert(who.end(), c->riders.begin(), c->riders.end());
  for (CloudConnection* target : who) {
    auto local = parts_.topics.LocalCommandTopic(msg->topic, target->identity.thing, target->name);
    if (!local) continue;
    parts_.local.Deliver(*local, msg->payload, msg->payloadlen, target->name);
    return;
  }
}

void CloudLinks::Read(CloudConnection& c) {
  if (!c.mosq || c.handshaking) return;
  parts_.agenda.MarkWrite(c);  // reading may queue PUBACKs, PINGREQs, ...
  int rc = ReadPackets(c);
  if (rc != MOSQ_ERR_SUCCESS) return Lost(c, rc);
  c.last_inbound = Clock::now();
  parts_.agenda.MarkReread(c);
}

void CloudLinks::Write(CloudConnection& c) {
  if (c.handshaking || !c.mosq || mosquitto_socket(c.mosq.get()) < 0) return;
  int rc = WritePackets(c);
  if (rc != MOSQ_ERR_SUCCESS) return Lost(c, rc);
  parts_.loop.Watch(c);
}

void CloudLinks::Lost(CloudConnection& c, int rc) {
  // Closed by the server after our CONNECT, before any CONNACK: how AWS IoT
  // turns away a certificate it does not accept.
  if (c.connect_sent) ++c.refused;
  c.connect_sent = false;
  parts_.loop.Unwatch(c);
  tls_buffers_.Forget(c);
  if (c.connected || c.connecting) {
    std::string why = rc == MOSQ_ERR_CONN_LOST ? "connection lost" : mosquitto_strerror(rc);
    log::Warning("MQTT connection " + c.name + " down: " + why, {{"IDENTITY", c.name}});
    if (c.connected) {
      c.problem = why + "; reconnecting";
    } else if (c.problem.empty()) {
      c.problem = "no answer to CONNECT from " + settings_.aws.endpoint + " (" + why + ")";
    }
  }
  if (c.connected) {
    c.lost_at = Clock::now();
    TakeBackUnacknowledged(c);
  }
  SetConnected(c, false);
  c.connecting = false;
  ScheduleReconnect(c, parts_.rng);
}

void CloudLinks::SetConnected(CloudConnection& c, bool up) {
  if (c.connected == up) return;
  c.connected = up;
  if (!up) EndAsked(c, "the connection closed before the answer");
  if (Status s = parts_.outbox.SetConnected(c.name, up); !s.ok()) {
    log::Error(s.message(), {{"IDENTITY", c.name}});
  }
  // Offline, new messages stay in the outbox only (not also in memory); the
  // next connection reads them back after last_queued.
  c.drained = false;
  c.pending.clear();
  for (CloudConnection* rider : c.riders) SetConnected(*rider, up);
}

// A reconnect storm (every connection's TLS state and handshake, much of it
// allocated on the handshake threads, in their own malloc arenas) leaves
// megabytes of free heap that the allocator keeps resident (malloc_trim from
// outside released 7 MiB of 58 with 1,001 connections). Nothing is leaked
// (heaptrack: the heap returns to the same size after each storm). The
// daemon's release_free_memory hands free pages back once the handshakes
// have been quiet for a moment, and again a little later.
void CloudLinks::ReleaseFreeMemory(Clock::time_point now) {
  if (!settings_.release_free_memory || handshakes_running_ > 0) return;
  if (handshakes_since_trim_ >= kHandshakesBeforeTrim) {
    trims_due_ = std::size(kTrimQuiet);
    handshakes_since_trim_ = 0;
  }
  if (trims_due_ == 0) return;
  size_t stage = std::size(kTrimQuiet) - trims_due_;
  if (now - last_handshake_done_ < kTrimQuiet[stage]) return;
  --trims_due_;
  settings_.release_free_memory();
  log::Debug("released free heap memory after a burst of TLS handshakes");
}

tpm::TpmWork CloudLinks::Urgency(const CloudConnection& c) const {
  // The gateway's connection carries the shared-mode sensors and its own
  // traffic; then identities whose messages wait.
  if (!c.identity.sensor) return tpm::TpmWork::kGatewayHandshake;
  if (parts_.outbox.held(c.name) > 0) return tpm::TpmWork::kWaitingHandshake;
  return tpm::TpmWork::kHandshake;
}

CloudConnection* CloudLinks::LeadingGateway(Clock::time_point now) {
  for (auto& [name, c] : clouds_) {
    if (c->identity.sensor || !c->identity.via.empty()) continue;
    if (c->connected || c->lost_at == Clock::time_point{} || now - c->lost_at > kGatewayLeadsFor) {
      return nullptr;
    }
    return c.get();
  }
  return nullptr;
}

void CloudLinks::ConnectDue(Clock::time_point now) {
  // After an outage the gateway's connection goes first: a sensor's own
  // connection that is due makes the gateway try now instead (once a second
  // at most), and waits; the gateway's success brings every other back
  // (CloudIsBack), the most urgent first. Only after it lost a connection
  // that was up, and for at most kGatewayLeadsFor: a gateway that cannot
  // connect for reasons of its own does not hold the sensors back.
  CloudConnection* gateway = LeadingGateway(now);
  std::vector<std::pair<tpm::TpmWork, CloudConnection*>> due;
  for (auto& [name, c] : clouds_) {
    if (c->handshaking || !c->identity.via.empty()) continue;  // carried: sent by its carrier
    if (c->connected || c->connecting || now < c->next_connect) continue;
    if (gateway != nullptr && c.get() != gateway) {
      if (!gateway->connecting && !gateway->handshaking) {
        gateway->next_connect =
            std::min(gateway->next_connect,
                     std::max(now, gateway->last_attempt + aws::kConnectSpacingPerClientId));
      }
      continue;
    }
    due.emplace_back(Urgency(*c), c.get());
  }
  std::stable_sort(due.begin(), due.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // The account-wide connect rate (aws.connect_rate).
  for (auto& [work, c] : due) {
    if (!connects_.TryTake(1, now)) break;
    Connect(*c, work);
  }
}

void CloudLinks::Tick(Clock::time_point now) {
  ReleaseFreeMemory(now);
  ConnectDue(now);
  for (auto& [name, c] : clouds_) {
    if (c->handshaking || !c->identity.via.empty()) continue;
    if (c->connecting && now >= c->next_connect) {
      c->connect_sent = false;  // no answer at all: not a refusal
      Lost(*c, MOSQ_ERR_CONN_LOST);
    }
    if (c->connected && now - c->last_inbound > HalfOpenAfter()) {
      // libmosquitto would wait a keepalive for the PINGREQ and another for
      // its answer; a link that went silent is given up on at 1.5 x.
      auto silent = std::chrono::duration_cast<std::chrono::seconds>(now - c->last_inbound);
      std::string why = "no answer from " + settings_.aws.endpoint + " for " +
                        std::to_string(silent.count()) + " s (1.5 x aws.keepalive): the link " +
                        "is half-open; reconnecting";
      log::Warning("cloud connection " + c->name + ": " + why, {{"IDENTITY", c->name}});
      Lost(*c, MOSQ_ERR_KEEPALIVE);
      // The server gives up on the silent link at the same 1.5 x keepalive:
      // a CONNECT before it has would take over a live session (a
      // duplicate client id).
      c->next_connect = std::max(c->next_connect, now + std::chrono::seconds(2));
      c->problem = why;
      continue;
    }
    if (c->mosq && c->fd >= 0) {
      int rc = mosquitto_loop_misc(c->mosq.get());
      if (rc != MOSQ_ERR_SUCCESS) {
        Lost(*c, rc);
        continue;
      }
      parts_.agenda.MarkWrite(*c);  // a PINGREQ may be queued
      tls_buffers_.ReleaseIfIdle(*c);
    }
    // Rate-limited connections, and anything not served on an event.
    parts_.agenda.MarkSend(*c);
  }
}

size_t CloudLinks::CollectProblems(std::map<std::string, std::string>& out,
                                   std::map<std::string, int>& refusals) const {
  size_t up = 0;
  for (const auto& [name, c] : clouds_) {
    if (c->identity.via.empty() && c->connected) ++up;
    if (c->refused > 0) refusals[name] = c->refused;
    const CloudConnection* own = c->carrier != nullptr ? c->carrier : c.get();
    if (own->connected || own->problem.empty()) continue;
    out[name] = own == c.get() ? own->problem : "carrier " + own->name + ": " + own->problem;
  }
  return up;
}

Clock::duration CloudLinks::HalfOpenAfter() const {
  return std::chrono::duration_cast<Clock::duration>(settings_.aws.keepalive) * 3 / 2;
}

void CloudLinks::DisconnectAll() {
  for (auto& [name, c] : clouds_) {
    if (c->mosq && c->connected) mosquitto_disconnect(c->mosq.get());
  }
}

void CloudLinks::MarkAllWrite() {
  for (auto& [name, c] : clouds_) parts_.agenda.MarkWrite(*c);
}

void CloudLinks::Clear() {
  for (auto& [name, c] : clouds_) {
    EndAsked(*c, "the bridge stopped before the answer");
    if (Status s = parts_.outbox.SetConnected(name, false); !s.ok()) {
      log::Error(s.message(), {{"IDENTITY", name}});
    }
  }
  clouds_.clear();
  by_mosq_.clear();
}

}  // namespace ga::bridge
