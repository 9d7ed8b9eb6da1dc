#include "local_link.h"

#include <cerrno>
#include <cstring>

#include "gateway_agent/files.h"
#include "gateway_agent/log.h"
#include "gateway_agent/rate.h"

namespace ga::bridge {

namespace {

// How long a connect to the local broker may take before it is retried.
constexpr std::chrono::seconds kConnectTimeout{10};
constexpr std::chrono::seconds kKeepalive{60};
constexpr std::chrono::milliseconds kRecreateAfter{1000};

}  // namespace

Result<std::unique_ptr<LocalLink>> LocalLink::Create(const LocalConfig& config, Parts parts,
                                                     std::string probe_password) {
  std::string password;
  if (!config.username.empty() && !config.password_file.empty()) {
    auto pw = ReadSecretFile(config.password_file);
    if (!pw.ok()) return std::move(pw).take_status().With("local.password_file");
    password = std::move(*pw);
  }
  std::unique_ptr<LocalLink> link(new LocalLink(config, std::move(password), parts));
  if (config.manage_clients) {
    link->clients_ = std::make_unique<LocalClients>(parts.topics);
    link->probe_password_ = std::move(probe_password);
  }
  GA_RETURN_IF_ERROR(link->NewClient());
  return link;
}

LocalLink::LocalLink(const LocalConfig& config, std::string password, Parts parts)
    : config_(config), password_(std::move(password)), parts_(parts) {
  conn_.name = "local";
  conn_.local = true;
}

Status LocalLink::NewClient() {
  MosqPtr mosq(mosquitto_new(config_.client_id.c_str(), /*clean_session=*/false, this));
  if (!mosq) return Internal("mosquitto_new failed for the local broker's client");
  mosquitto* m = mosq.get();
  mosquitto_threaded_set(m, true);  // PUBACKs wait in the queue for our loop_write
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  if (!config_.username.empty()) {
    int rc = mosquitto_username_pw_set(m, config_.username.c_str(),
                                       password_.empty() ? nullptr : password_.c_str());
    if (rc != MOSQ_ERR_SUCCESS) {
      return {Code::kMqtt, "local.username: " + std::string(mosquitto_strerror(rc))};
    }
  }
  mosquitto_connect_with_flags_callback_set(m, [](mosquitto*, void* self, int rc, int flags) {
    static_cast<LocalLink*>(self)->OnConnect(rc, (flags & 0x01) != 0);
  });
  mosquitto_message_callback_set(m, [](mosquitto*, void* self, const mosquitto_message* msg) {
    static_cast<LocalLink*>(self)->OnMessage(msg);
  });
  conn_.mosq = std::move(mosq);
  conn_.next_connect = Clock::now();
  return Status::Ok();
}

void LocalLink::Connect() {
  parts_.loop.Unwatch(conn_);  // a timed-out attempt's socket
  conn_.connecting = true;
  conn_.next_connect = Clock::now() + kConnectTimeout;
  const int keepalive = static_cast<int>(kKeepalive.count());
  int rc;
  if (!config_.unix_socket.empty()) {
    rc = mosquitto_connect_bind_async(conn_.mosq.get(), config_.unix_socket.c_str(), 0, keepalive,
                                      nullptr);
  } else {
    rc = mosquitto_connect_async(conn_.mosq.get(), config_.host.c_str(), config_.port, keepalive);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    std::string why = rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc);
    conn_.problem = "local broker " + Where() + ": " + why;
    log::Warning(conn_.problem);
    return Lost(rc);
  }
  parts_.loop.Watch(conn_);
}

void LocalLink::OnConnect(int rc, bool session_present) {
  conn_.connecting = false;
  fresh_session_ = !session_present;
  if (rc != 0) {
    conn_.problem = "local broker " + Where() +
                    " refused the connection: " + mosquitto_connack_string(rc) +
                    " (check [local] username and password_file)";
    log::Error(conn_.problem);
    mosquitto_disconnect(conn_.mosq.get());
    return;
  }
  conn_.failures = 0;
  conn_.problem.clear();
  SetConnected(true);
  ++sessions_;
  log::Info("connected to the local broker; subscribing to " + config_.ingest_filter);
  mosquitto_subscribe(conn_.mosq.get(), nullptr, config_.ingest_filter.c_str(), 1);
  if (clients_) {
    // The broker's clients converge on ours: it may have lost its state,
    // or we may have missed an answer.
    mosquitto_subscribe(conn_.mosq.get(), nullptr, LocalClients::kResponseTopic, 1);
    for (const auto& sensor : to_retire_) Control(clients_->Retire(sensor));
    to_retire_.clear();
    if (!probe_password_.empty()) Control(clients_->IssueProbe(probe_password_));
    for (const auto& [name, id] : parts_.identities) {
      if (id.sensor && !id.local_password.empty()) {
        Control(clients_->Issue(name, id.local_password, /*rotated=*/false));
      }
    }
  }
}

void LocalLink::Control(const std::string& batch) {
  if (!conn_.connected) return;  // sent again on connect
  mosquitto_publish(conn_.mosq.get(), nullptr, LocalClients::kCommandTopic,
                    static_cast<int>(batch.size()), batch.data(), 1, false);
  parts_.agenda.MarkWrite(conn_);
}

void LocalLink::IssueClient(const std::string& sensor, const std::string& password, bool rotated) {
  if (!clients_) return;
  to_retire_.erase(sensor);
  Control(clients_->Issue(sensor, password, rotated));
}

void LocalLink::RetireClient(const std::string& sensor) {
  if (!clients_) return;
  if (conn_.connected) {
    Control(clients_->Retire(sensor));
  } else {
    to_retire_.insert(sensor);
  }
}

std::map<std::string, std::string> LocalLink::ClientProblems() const {
  return clients_ ? clients_->problems() : std::map<std::string, std::string>{};
}

void LocalLink::OnMessage(const mosquitto_message* msg) {
  std::string_view topic = msg->topic;
  // The PUBLISH packet's size on the wire (MQTT 3.1.1), for ReadPackets.
  size_t remaining =
      2 + topic.size() + (msg->qos > 0 ? 2 : 0) + static_cast<size_t>(msg->payloadlen);
  size_t length_bytes = 1;
  for (size_t r = remaining; r >= 128; r >>= 7) ++length_bytes;
  conn_.bytes_read += 1 + length_bytes + remaining;
  if (clients_ && topic == LocalClients::kResponseTopic) {
    clients_->OnResponse(std::string_view(static_cast<const char*>(msg->payload),
                                          static_cast<size_t>(msg->payloadlen)));
    return;
  }
  auto parsed = parts_.topics.ParseLocal(topic);
  if (!parsed) return;
  if (msg->retain && !fresh_session_) {
    // MQTT sets RETAIN only on a copy sent because a subscription was made:
    // this session saw the live publish already (or was subscribed when it
    // was made), so a retained message is bridged once, not per reconnect.
    return;
  }
  auto it = parts_.identities.find(parsed->sensor);
  if (it == parts_.identities.end() || !it->second.sensor) {
    unknown_.Note(parsed->sensor, topic, Clock::now(), UnixMillis());
    return;
  }
  if (!parsed->has_rest) {
    parts_.staging.Count(std::string(parsed->sensor), kRejectedTopic);
    log::Warning("not sent: sensor " + std::string(parsed->sensor) + ", topic " +
                     log::Printable(topic) + ": nothing follows the sensor id (publish to " +
                     std::string(topic) + "/<something>)",
                 {{"IDENTITY", std::string(parsed->sensor)}});
    return;
  }
  std::string cloud_topic = parts_.topics.CloudTopic(it->second.thing, parsed->rest);
  std::string why = CheckAwsPublishLimits(cloud_topic, static_cast<size_t>(msg->payloadlen));
  if (!why.empty()) {
    parts_.staging.Count(std::string(parsed->sensor), kRejectedLimit);
    log::Warning("not sent: sensor " + std::string(parsed->sensor) + ", topic " +
                     std::string(topic) + " -> " + cloud_topic + ": " + why,
                 {{"IDENTITY", std::string(parsed->sensor)}});
    return;
  }
  OutboxMessage m;
  m.identity = it->first;
  m.topic = std::move(cloud_topic);
  m.payload.assign(static_cast<const char*>(msg->payload), static_cast<size_t>(msg->payloadlen));
  m.created_ms = UnixMillis();
  parts_.staging.Stage(std::move(m));
}

void LocalLink::Read() {
  if (!conn_.mosq) return;
  parts_.agenda.MarkWrite(conn_);  // reading may queue PUBACKs, PINGRESPs, ...
  int rc = ReadPackets(conn_);
  if (rc != MOSQ_ERR_SUCCESS) Lost(rc);
}

void LocalLink::Write() {
  if (!conn_.mosq || mosquitto_socket(conn_.mosq.get()) < 0) return;
  int rc = WritePackets(conn_);
  if (rc != MOSQ_ERR_SUCCESS) return Lost(rc);
  parts_.loop.Watch(conn_);
}

void LocalLink::Tick(Clock::time_point now) {
  if (!conn_.mosq) {
    if (now < conn_.next_connect) return;
    if (Status s = NewClient(); !s.ok()) {
      log::Error(s.message());
      conn_.next_connect = now + kRecreateAfter;
    }
    return;
  }
  if (!conn_.connected && !conn_.connecting && now >= conn_.next_connect) Connect();
  if (conn_.connecting && now >= conn_.next_connect) Lost(MOSQ_ERR_CONN_LOST);
  if (conn_.fd >= 0) {
    int rc = mosquitto_loop_misc(conn_.mosq.get());
    if (rc != MOSQ_ERR_SUCCESS) Lost(rc);
  }
  parts_.agenda.MarkWrite(conn_);
  FlushUnknownSenders(now, /*force=*/false);
}

void LocalLink::FlushUnknownSenders(Clock::time_point now, bool force) {
  if (Status s = unknown_.Flush(parts_.outbox, now, force); !s.ok()) {
    log::Error("counting messages from unknown sensors: " + s.message());
  }
}

void LocalLink::Lost(int rc) {
  parts_.loop.Unwatch(conn_);
  if (conn_.connected || conn_.connecting) {
    std::string why = rc == MOSQ_ERR_CONN_LOST ? "connection lost" : mosquitto_strerror(rc);
    log::Warning("MQTT connection local down: " + why, {{"IDENTITY", conn_.name}});
    if (conn_.connected || conn_.problem.empty()) {
      conn_.problem = "local broker " + Where() + ": " + why + "; reconnecting";
    }
  }
  SetConnected(false);
  conn_.connecting = false;
  ScheduleReconnect(conn_, parts_.rng);
}

void LocalLink::DropUnacknowledged() {
  parts_.loop.Unwatch(conn_);
  SetConnected(false);
  conn_.connecting = false;
  conn_.mosq.reset();
  conn_.next_connect = Clock::now() + kRecreateAfter;
}

void LocalLink::Deliver(const std::string& topic, const void* payload, int length,
                        const std::string& sensor) {
  if (!conn_.connected) return;
  int rc = mosquitto_publish(conn_.mosq.get(), nullptr, topic.c_str(), length, payload, 1, false);
  parts_.agenda.MarkWrite(conn_);
  if (rc != MOSQ_ERR_SUCCESS) {
    log::Warning("command for " + sensor + " not delivered locally: " + mosquitto_strerror(rc));
  }
}

void LocalLink::Disconnect() {
  FlushUnknownSenders(Clock::now(), /*force=*/true);
  if (conn_.mosq && conn_.connected) mosquitto_disconnect(conn_.mosq.get());
}

std::string LocalLink::Where() const {
  return config_.unix_socket.empty() ? config_.host + ":" + std::to_string(config_.port)
                                     : config_.unix_socket.string();
}

void LocalLink::SetConnected(bool up) {
  if (conn_.connected == up) return;
  conn_.connected = up;
  parts_.connected.store(up);
}

}  // namespace ga::bridge
