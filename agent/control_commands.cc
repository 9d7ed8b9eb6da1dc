#include "control_commands.h"

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

}  // namespace

ControlReply HandleControl(Enrollment& enrollment, const Config& config,
                           const ControlCommand& request) {
  if (request.command == "sensor-add") return AddSensor(enrollment, request);
  if (request.command == "sensor-remove") return RemoveSensor(enrollment, request);
  if (request.command == "sensor-list") return ListSensors(enrollment, config, request);
  return {false,
          "unknown command \"" + request.command + "\" (sensor-add, sensor-remove or sensor-list)"};
}

}  // namespace ga
