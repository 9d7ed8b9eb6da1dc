// The bridge's connection to the gateway's local broker: one persistent
// session (clean session off, QoS 1) subscribed to local.ingest_filter.
//
// Each sensor message becomes an outbox message staged for the iteration's
// commit; its PUBACK waits in libmosquitto's queue (the client is marked
// threaded) until the loop writes, after the commit. Messages from unknown
// sensors, from the gateway's own id and over AWS's limits are counted, not
// sent. A retained message is bridged when it is published, not again each
// time the subscription is made (see fresh_session_).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "agenda.h"
#include "event_loop.h"
#include "gateway_agent/config.h"
#include "local_clients.h"
#include "mqtt_connection.h"
#include "outbox_staging.h"
#include "topic_map.h"
#include "unknown_senders.h"

namespace ga::bridge {

// The identities the bridge knows, by name (the sensor id for sensors).
using IdentityTable = std::map<std::string, BridgeIdentity, std::less<>>;

class LocalLink {
 public:
  struct Parts {
    EventLoop& loop;
    Agenda& agenda;
    OutboxStaging& staging;
    Outbox& outbox;  // unknown-sender counts, written apart from the messages
    const TopicMap& topics;
    const IdentityTable& identities;
    std::mt19937_64& rng;
    std::atomic<bool>& connected;  // read by other threads
  };
  // Reads local.password_file now: an error names the key and the file.
  // With local.manage_clients and a `probe_password`, the boundary probe's
  // client is made (again) on every connect, like the sensors'.
  static Result<std::unique_ptr<LocalLink>> Create(const LocalConfig& config, Parts parts,
                                                   std::string probe_password = "");
  ~LocalLink() { parts_.connected.store(false); }
  LocalLink(const LocalLink&) = delete;
  LocalLink& operator=(const LocalLink&) = delete;

  MqttConnection& connection() { return conn_; }
  bool connected() const { return conn_.connected; }
  // How many times it has connected to the broker.
  uint64_t sessions() const { return sessions_; }
  // "host:port" or the socket path of the local broker.
  std::string Where() const;

  // Reads what the broker sent; stages its messages.
  void Read();
  // Writes the queued PUBACKs (and commands); a failure counts as lost.
  void Write();
  // Connects when due, times out a hanging attempt, keeps the session alive.
  void Tick(Clock::time_point now);
  // The connection failed (`rc`, a MOSQ_ERR_* code): reconnect after a backoff.
  void Lost(int rc);
  // After a failed commit: drops the connection without writing the PUBACKs
  // queued in libmosquitto, so that the broker redelivers those messages.
  void DropUnacknowledged();
  // A command from the cloud, to `topic` on the local broker.
  void Deliver(const std::string& topic, const void* payload, int length,
               const std::string& sensor);
  // Queues a DISCONNECT (shutdown).
  void Disconnect();

  // local.manage_clients: gives `sensor` its client on the broker (again,
  // after each connect), or deletes it. No-ops otherwise.
  void IssueClient(const std::string& sensor, const std::string& password, bool rotated);
  void RetireClient(const std::string& sensor);
  // Sensor -> why its client could not be made.
  std::map<std::string, std::string> ClientProblems() const;

 private:
  LocalLink(const LocalConfig& config, std::string password, Parts parts);
  Status NewClient();
  void Connect();
  void OnConnect(int rc, bool session_present);
  void OnMessage(const mosquitto_message* msg);
  void SetConnected(bool up);
  void FlushUnknownSenders(Clock::time_point now, bool force);
  void Control(const std::string& batch);

  const LocalConfig config_;
  const std::string password_;
  Parts parts_;
  MqttConnection conn_;
  UnknownSenders unknown_;
  // The broker had no session for us at the last CONNACK: the retained
  // copies the subscription brings are new to us.
  bool fresh_session_ = true;
  std::unique_ptr<LocalClients> clients_;  // local.manage_clients
  std::set<std::string> to_retire_;        // retired while disconnected
  std::string probe_password_;             // kBoundaryProbeUser's; empty: none
  uint64_t sessions_ = 0;
};

}  // namespace ga::bridge
