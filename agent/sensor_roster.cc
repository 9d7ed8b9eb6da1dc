#include "sensor_roster.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "enrollment_steps.h"
#include "gateway_agent/agent/enrollment.h"
#include "gateway_agent/log.h"

namespace ga {

namespace {

// `identity` moved onto the gateway's connection (SHARED) or back onto its own
// (NEW: a new key and certificate, then JITR).
Identity Reconnected(const Identity& identity, EnrollmentState state) {
  Identity out;
  out.name = identity.name;
  out.kind = identity.kind;
  out.thing = identity.thing;
  out.state = state;
  out.created = identity.created;
  return out;
}

}  // namespace

Status SensorRoster::Load() {
  MutexLock changes(changes_mu_);
  const Config& c = config_;
  file_sensors_.clear();
  for (const auto& s : c.sensors) file_sensors_.insert(s.id);
  std::vector<Identity> wanted;
  Identity gw;
  gw.name = "gateway";
  gw.kind = IdentityKind::kGateway;
  gw.thing = c.agent.thing_name;
  wanted.push_back(gw);
  for (const auto& s : c.sensors) {
    Identity id;
    id.name = s.id;
    id.kind = IdentityKind::kSensor;
    id.thing = c.SensorThingName(s);
    if (s.connection == SensorConnection::kGateway) id.state = EnrollmentState::kShared;
    wanted.push_back(id);
  }
  for (const auto& w : wanted) {
    auto existing = store_.Get(w.name);
    if (existing.ok() && existing->state != EnrollmentState::kRemoved) {
      if (existing->thing != w.thing) {
        log::Warning("identity " + w.name + " keeps its enrolled thing name " + existing->thing +
                         "; the config now says " + w.thing +
                         " (remove and add the sensor to change it)",
                     {{"IDENTITY", w.name}});
      }
      bool shared_now = existing->state == EnrollmentState::kShared;
      if (shared_now != (w.state == EnrollmentState::kShared)) {
        GA_RETURN_IF_ERROR(store_.Update(Reconnected(*existing, w.state))
                               .With("changing the connection of " + w.name));
      }
      continue;
    }
    if (existing.ok() && w.kind == IdentityKind::kSensor) continue;  // removed at run time
    GA_RETURN_IF_ERROR(store_.Add(w).With("adding identity " + w.name));
  }
  GA_ASSIGN_OR_RETURN(std::vector<Identity> all, store_.List());
  size_t shared = std::count_if(all.begin(), all.end(), [](const Identity& id) {
    return id.state == EnrollmentState::kShared;
  });
  table_.Reset(std::move(all));
  if (shared > kMaxGatewayConnectionSensors) {
    log::Warning(std::to_string(shared) +
                 " sensors travel over the gateway's connection (some added with sensor add); "
                 "AWS IoT allows 50 subscriptions per connection, so commands for the last " +
                 std::to_string(shared - kMaxGatewayConnectionSensors) +
                 " will be refused: give them connection = \"own\"");
  }
  return Status::Ok();
}

Result<Identity> SensorRoster::Add(const std::string& id, const std::string& thing_name,
                                   SensorConnection connection) {
  MutexLock changes(changes_mu_);
  if (id.empty()) return InvalidArgument("the sensor id is empty");
  if (!IsValidSensorId(id) || id == "gateway") {
    return InvalidArgument("\"" + id +
                           "\" is not a valid sensor id (1-64 characters of a-z A-Z 0-9 _ -, "
                           "not \"gateway\")");
  }
  Identity identity;
  identity.name = id;
  identity.kind = IdentityKind::kSensor;
  identity.thing = config_.SensorThingName({.id = id, .thing_name = thing_name});
  if (!IsEnrollableThingName(identity.thing)) {
    return InvalidArgument("\"" + identity.thing +
                           "\" is not a valid thing name: 1-64 characters of a-z A-Z 0-9 : _ - "
                           "(it becomes the certificate's CN)");
  }
  if (connection == SensorConnection::kGateway) {
    GA_RETURN_IF_ERROR(CheckGatewayMayCarry(identity.thing, 1));
    identity.state = EnrollmentState::kShared;
  }
  if (table_.InFlight(id)) {
    return FailedPrecondition("sensor " + id + " is still being removed; try again");
  }
  GA_RETURN_IF_ERROR(store_.Add(identity));
  GA_ASSIGN_OR_RETURN(Identity stored, store_.Get(id));
  table_.Add(stored);
  Changed(stored);
  log::Info("sensor " + id + " added as thing " + identity.thing,
            {{"IDENTITY", id},
             {"THING", identity.thing},
             {"STATE", std::string(StateName(identity.state))}});
  return stored;
}

Status SensorRoster::CheckGatewayMayCarry(const std::string& thing, int more) {
  if (!config_.GatewayMayCarry(thing)) {
    return InvalidArgument("thing \"" + thing + "\" cannot travel over the gateway's connection: " +
                           "its name must start with \"" + config_.agent.thing_name +
                           kThingSeparator + "\" (the gateway's policy allows those)");
  }
  size_t shared = table_.CountShared();
  if (shared + static_cast<size_t>(more) > kMaxGatewayConnectionSensors) {
    return FailedPrecondition("the gateway's connection already carries " + std::to_string(shared) +
                              " sensors, the most AWS IoT's 50 " +
                              "subscriptions per connection allow");
  }
  return Status::Ok();
}

Result<Identity> SensorRoster::SetConnection(const std::string& id, SensorConnection connection) {
  MutexLock changes(changes_mu_);
  GA_ASSIGN_OR_RETURN(Identity identity, store_.Get(id));
  if (identity.kind != IdentityKind::kSensor || identity.state == EnrollmentState::kRemoved) {
    return NotFound("no sensor \"" + id + "\"");
  }
  bool to_gateway = connection == SensorConnection::kGateway;
  if (to_gateway == (identity.state == EnrollmentState::kShared)) return identity;
  if (to_gateway) GA_RETURN_IF_ERROR(CheckGatewayMayCarry(identity.thing, 1));
  // A step in progress finishes first; no worker picks the sensor meanwhile.
  table_.HoldForMove(id);
  auto current = store_.Get(id);  // that step may have advanced it
  Status saved = current.status();
  Identity next;
  if (current.ok()) {
    next = Reconnected(*current, to_gateway ? EnrollmentState::kShared : EnrollmentState::kNew);
    saved = store_.Update(next);
  }
  table_.EndMove(id, saved.ok() ? std::optional<Identity>(next) : std::nullopt);
  GA_RETURN_IF_ERROR(saved.With("changing the connection of sensor " + id));
  Changed(next);
  log::Info(to_gateway ? "sensor " + id + " now travels over the gateway's connection"
                       : "sensor " + id + " now enrolls for its own connection",
            {{"IDENTITY", id}, {"STATE", std::string(StateName(next.state))}});
  return next;
}

Result<Identity> SensorRoster::Reenroll(const std::string& name, EnrollmentState from,
                                        const std::string& reason) {
  MutexLock changes(changes_mu_);
  GA_ASSIGN_OR_RETURN(Identity identity, store_.Get(name));
  if (identity.state != EnrollmentState::kActive) {
    return FailedPrecondition("identity " + name + " is " + std::string(StateName(identity.state)) +
                              ", not ACTIVE: nothing to enroll again");
  }
  if (identity.renewal != RenewalStep::kNone) {
    return FailedPrecondition("identity " + name + " is renewing its certificate (" +
                              std::string(RenewalStepName(identity.renewal)) +
                              "): its files are being replaced");
  }
  table_.HoldForMove(name);
  auto current = store_.Get(name);  // a step may have advanced it meanwhile
  Status saved = current.status();
  Identity next;
  if (current.ok()) {
    next = Reconnected(*current, from);
    if (from == EnrollmentState::kKeyed) {
      next.key_file = current->key_file;
    } else if (!current->key_file.empty()) {
      // MakeKey reuses a key file it can read: this one must not be.
      std::error_code ignored;
      std::filesystem::remove(current->key_file, ignored);
    }
    next.last_error = "enrolling again: " + reason;
    saved = store_.Update(next);
  }
  table_.EndMove(name, saved.ok() ? std::optional<Identity>(next) : std::nullopt);
  GA_RETURN_IF_ERROR(saved.With("enrolling identity " + name + " again"));
  Changed(next);
  log::Error(
      "identity " + name + " cannot connect: " + reason + "; enrolling it again with " +
          (from == EnrollmentState::kNew ? "a new TPM key and certificate"
                                         : "a new certificate for its key") +
          (identity.cert_id.empty() ? std::string()
                                    : "; its old certificate " + identity.cert_id +
                                          " stays in AWS IoT until deactivated"),
      {{"IDENTITY", name}, {"THING", identity.thing}, {"STATE", std::string(StateName(from))}});
  return next;
}

void SensorRoster::SetFileSensors(const std::vector<SensorConfig>& sensors) {
  MutexLock changes(changes_mu_);
  file_sensors_.clear();
  for (const auto& s : sensors) file_sensors_.insert(s.id);
}

Result<Identity> SensorRoster::Remove(const std::string& id) {
  MutexLock changes(changes_mu_);
  if (file_sensors_.count(id)) {
    const std::string file =
        config_.source.empty() ? "the configuration file" : config_.source.string();
    return FailedPrecondition("sensor " + id + " is defined in " + file +
                              ": remove its [[sensor]] entry there and reload "
                              "(systemctl reload gateway-agent)");
  }
  GA_ASSIGN_OR_RETURN(Identity identity, store_.Get(id));
  if (identity.kind != IdentityKind::kSensor) {
    return InvalidArgument("\"" + id + "\" is the gateway itself, not a sensor");
  }
  if (identity.state == EnrollmentState::kRemoved) {
    return NotFound("sensor " + id + " is already removed");
  }
  table_.HoldForRemoval(id);
  Identity removed = identity;
  removed.state = EnrollmentState::kRemoved;
  removed.key_file.clear();
  if (Status s = store_.Update(removed); !s.ok()) {
    // Still there: enrollment goes on from the state the database has.
    auto kept = store_.Get(id);
    table_.CancelRemoval(id, kept.ok() ? std::optional<Identity>(*kept) : std::nullopt);
    return std::move(s).With("removing sensor " + id);
  }
  Changed(removed);
  auto dir = IdentityDir(config_, id);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) {
    // The sensor is removed; only its files are left behind.
    log::Warning("removing " + dir.string() + ": " + ec.message(), {{"IDENTITY", id}});
  }
  log::Info("sensor " + id + " removed; its key blob is deleted",
            {{"IDENTITY", id}, {"THING", identity.thing}, {"STATE", "REMOVED"}});
  return identity;
}

std::vector<SensorConfig> ApplySensorChanges(const Config& running, const Config& next,
                                             Enrollment& enrollment) {
  // The sensors leaving the file are the file's no longer: removable.
  enrollment.SetFileSensors(next.sensors);
  std::map<std::string, const SensorConfig*> before, after;
  for (const auto& s : running.sensors) before[s.id] = &s;
  for (const auto& s : next.sensors) after[s.id] = &s;
  std::map<std::string, EnrollmentState> known;
  for (const auto& id : enrollment.Snapshot()) known[id.name] = id.state;
  std::vector<std::string> not_removed, not_added;

  for (const auto& [id, sensor] : before) {
    if (after.count(id)) continue;
    auto removed = enrollment.RemoveSensor(id);
    if (!removed.ok()) {
      log::Warning("reload: sensor " + id + " left the configuration but could not be removed: " +
                       removed.status().message(),
                   {{"IDENTITY", id}});
      not_removed.push_back(id);
    }
  }
  // A sensor whose connection differs from what the agent has (also one that
  // an earlier reload could not move) moves; those leaving the gateway's
  // connection first, which makes room for those joining it.
  std::vector<std::pair<std::string, SensorConnection>> moves;
  for (const auto& [id, sensor] : after) {
    std::string thing = next.SensorThingName(*sensor);
    auto state = known.find(id);
    if (state != known.end()) {
      if (before.count(id) && running.SensorThingName(*before[id]) != thing) {
        log::Warning("reload: sensor " + id + " keeps its enrolled thing name " +
                         running.SensorThingName(*before[id]) +
                         " (remove and add the sensor to change it)",
                     {{"IDENTITY", id}});
      }
      bool shared = state->second == EnrollmentState::kShared;
      if (shared != (sensor->connection == SensorConnection::kGateway)) {
        moves.emplace_back(id, sensor->connection);
      }
      continue;
    }
    auto added = enrollment.AddSensor(id, thing, sensor->connection);
    if (!added.ok()) {
      log::Error("reload: adding sensor " + id + " failed: " + added.status().message(),
                 {{"IDENTITY", id}});
      not_added.push_back(id);
    }
  }
  std::stable_partition(moves.begin(), moves.end(),
                        [](const auto& m) { return m.second == SensorConnection::kOwn; });
  for (const auto& [id, connection] : moves) {
    auto moved = enrollment.SetConnection(id, connection);
    if (!moved.ok()) {
      log::Warning(
          "reload: the connection of sensor " + id + " did not change: " + moved.status().message(),
          {{"IDENTITY", id}});
    }
  }

  std::vector<SensorConfig> effective;
  for (const auto& s : next.sensors) {
    if (std::find(not_added.begin(), not_added.end(), s.id) == not_added.end()) {
      effective.push_back(s);
    }
  }
  for (const auto& id : not_removed) effective.push_back(*before[id]);
  return effective;
}

}  // namespace ga
