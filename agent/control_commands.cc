#include "control_commands.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "gateway_agent/agent/agent_health.h"
#include "gateway_agent/agent/status_report.h"

namespace ga {

namespace {

ControlReply Refused(const Status& status) {
  return {false, status.message()};
}

ControlReply AddSensor(Enrollment& enrollment, const ControlCommand& request) {
  if (Status s = request.CheckFields({"id"}, {"thing", "connection"}); !s.ok()) return Refused(s);
  const std::string connection_name = request.Field("connection");
  SensorConnection connection = SensorConnection::kOwn;
  if (connection_name == "gateway") {
    connection = SensorConnection::kGateway;
  } else if (!connection_name.empty() && connection_name != "own") {
    return {false, "sensor-add: field \"connection\" must be \"own\" or \"gateway\", not \"" +
                       connection_name + "\""};
  }
  auto added = enrollment.AddSensor(request.Field("id"), request.Field("thing"), connection);
  if (!added.ok()) return Refused(added.status());
  if (added->state == EnrollmentState::kShared) {
    return {true, "sensor " + added->name + " added as thing " + added->thing +
                      "; it travels over the gateway's connection\n"};
  }
  return {true, "sensor " + added->name + " added as thing " + added->thing +
                    "; it enrolls now (gateway-agent status)\n"};
}

ControlReply RemoveSensor(Enrollment& enrollment, const ControlCommand& request) {
  if (Status s = request.CheckFields({"id"}); !s.ok()) return Refused(s);
  auto removed = enrollment.RemoveSensor(request.Field("id"));
  if (!removed.ok()) return Refused(removed.status());
  std::string body = "sensor " + removed->name + " (thing " + removed->thing +
                     ") removed; its TPM key blob is deleted.\n";
  if (!removed->cert_id.empty()) {
    body +=
        "Its certificate still exists in AWS IoT; deactivate it with:\n  aws iot "
        "update-certificate --certificate-id " +
        removed->cert_id + " --new-status INACTIVE\n";
  }
  return {true, body};
}

// The sensors with the bridge's view of them, read as `gateway-agent status`
// reads it.
ControlReply ListSensors(Enrollment& enrollment, const Config& config,
                         const ControlCommand& request) {
  if (Status s = request.CheckFields({}); !s.ok()) return Refused(s);
  std::vector<Identity> sensors;
  for (auto& id : enrollment.Snapshot()) {
    if (id.kind == IdentityKind::kSensor) sensors.push_back(id);
  }
  BridgeReport bridge = ReadBridgeReport(config.agent.state_dir);
  // The agent's own last health report: a sensor that cannot work shows
  // its PROBLEM here as in `status`.
  const Millis now = NowMillis();
  LiveHealth live = JudgeHealth(config.agent.runtime_dir / kHealthFile, now);
  std::string body = StatusTable(sensors, now, bridge.traffic, {}, &live);
  if (!bridge.problem.ok()) {
    body += "CONN and OUTBOX are unknown: " + bridge.problem.message() + "\n";
  }
  return {true, body};
}

// A sensor's user name and password on the local broker; with "rotate", a
// new password (the old one's sessions end).
ControlReply SensorCredentials(const ControlParts& parts, const ControlCommand& request) {
  if (Status s = request.CheckFields({"id"}, {"rotate", "json"}); !s.ok()) return Refused(s);
  if (parts.credentials == nullptr) {
    return {false,
            "the agent does not manage the local broker's clients: set local.manage_clients = "
            "true (a broker set up by `gateway-agent local-broker init`)"};
  }
  const std::string id = request.Field("id");
  std::optional<Identity> sensor;
  for (auto& i : parts.enrollment.Snapshot()) {
    if (i.kind == IdentityKind::kSensor && i.name == id && i.state != EnrollmentState::kRemoved) {
      sensor = i;
    }
  }
  if (!sensor) return {false, "no sensor \"" + id + "\" (gateway-agent sensor list)"};
  const bool rotate = request.Field("rotate") == "yes";
  auto password = rotate ? parts.credentials->Rotate(id) : parts.credentials->PasswordOf(id);
  if (!password.ok()) return Refused(password.status());
  if (rotate && parts.refeed) parts.refeed(*sensor);
  if (request.Field("json") == "yes") {
    return {true, nlohmann::json{{"username", id}, {"password", *password}}.dump() + "\n"};
  }
  return {true, "username: " + id + "\npassword: " + *password + "\n" +
                    (rotate ? "(new: the old password no longer works)\n" : "")};
}

// Renewal now of one identity ("identity") or of every ACTIVE one ("all").
ControlReply Renew(const ControlParts& parts, const ControlCommand& request) {
  Enrollment& enrollment = parts.enrollment;
  if (Status s = request.CheckFields({}, {"identity", "all", "rekey", "force"}); !s.ok()) {
    return Refused(s);
  }
  const bool force = request.Field("force") == "yes";
  const bool all = request.Field("all") == "yes";
  const std::string name = request.Field("identity");
  if (all == !name.empty()) return {false, "give --identity NAME or --all"};
  const bool rekey = request.Field("rekey") == "yes";
  std::vector<std::string> names;
  if (all) {
    for (const Identity& i : enrollment.Snapshot()) {
      if ((i.state == EnrollmentState::kActive || (force && ParkedOnceActive(i))) &&
          i.renewal == RenewalStep::kNone) {
        names.push_back(i.name);
      }
    }
  } else {
    names.push_back(name);
  }
  std::string body;
  for (const std::string& n : names) {
    auto asked = enrollment.AskRenewal(n, rekey, force);
    if (!asked.ok()) {
      if (!all) return Refused(asked.status());
      body += n + ": " + asked.status().message() + "\n";
      continue;
    }
    if (parts.refeed) parts.refeed(*asked);  // a PARKED one connects again
    body += n + ": renewing certificate " + asked->cert_id + (rekey ? " with a new key" : "") +
            " (gateway-agent status shows its progress)\n";
  }
  if (names.empty()) body = "no ACTIVE identity to renew\n";
  return {true, body};
}

}  // namespace

ControlReply HandleControl(const ControlParts& parts, const ControlCommand& request) {
  if (request.command == "sensor-add") return AddSensor(parts.enrollment, request);
  if (request.command == "sensor-remove") return RemoveSensor(parts.enrollment, request);
  if (request.command == "sensor-list") {
    return ListSensors(parts.enrollment, parts.config, request);
  }
  if (request.command == "sensor-credentials") return SensorCredentials(parts, request);
  if (request.command == "renew") return Renew(parts, request);
  return {false, "unknown command \"" + request.command +
                     "\" (sensor-add, sensor-remove, sensor-list or sensor-credentials)"};
}

}  // namespace ga
