#include "local_clients.h"

#include <nlohmann/json.hpp>

#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/log.h"

namespace ga::bridge {

namespace {

using Json = nlohmann::json;

std::string RoleOf(const std::string& sensor) {
  return "sensor-" + sensor;
}

Json Acl(const char* type, const std::string& topic, bool allow, int priority) {
  return Json{{"acltype", type}, {"topic", topic}, {"allow", allow}, {"priority", priority}};
}

}  // namespace

std::string LocalClients::Batch(const std::string& sensor,
                                const std::vector<std::string>& commands) {
  std::string id = "ga-" + std::to_string(++next_id_);
  pending_[id] = sensor;
  if (pending_.size() > 10000) pending_.erase(pending_.begin());  // answers that never came
  Json batch{{"commands", Json::array()}};
  for (const std::string& c : commands) {
    Json command = Json::parse(c);
    command["correlationData"] = id;  // the plugin answers each command with its own
    batch["commands"].push_back(std::move(command));
  }
  return batch.dump();
}

std::string LocalClients::Issue(const std::string& sensor, const std::string& password,
                                bool rotated) {
  const std::string role = RoleOf(sensor);
  const std::string own = topics_.SensorFilter(sensor);
  const std::string commands = topics_.CommandDeliveries(sensor);
  // Two commands, the role with its ACLs and the client with its role: the
  // plugin rewrites its whole state file after every command that changes
  // something (mosquitto 2.0), so each costs O(clients) on the broker; one
  // per ACL made the adds of a large gateway slow. Sent again after a
  // connect, each is refused as "already exists" and nothing is written. (An
  // addClientRole for a role the client has is answered "Internal error" by
  // 2.0.11, and one that is carried out kicks the client.)
  std::vector<std::string> c = {
      Json{{"command", "createRole"},
           {"rolename", role},
           {"acls", Json::array({
                        // Checked first: its command deliveries are the agent's to publish.
                        Acl("publishClientSend", commands, false, 2),
                        Acl("publishClientSend", own, true, 1),
                        Acl("subscribePattern", commands, true, 1),
                    })}}
          .dump(),
      Json{{"command", "createClient"},
           {"username", sensor},
           {"password", password},
           {"roles", Json::array({Json{{"rolename", role}}})}}
          .dump(),
  };
  if (rotated) {
    c.push_back(Json{{"command", "setClientPassword"}, {"username", sensor}, {"password", password}}
                    .dump());
    // Disabling ends its sessions: whoever used the old password is out.
    c.push_back(Json{{"command", "disableClient"}, {"username", sensor}}.dump());
    c.push_back(Json{{"command", "enableClient"}, {"username", sensor}}.dump());
  }
  return Batch(sensor, c);
}

std::string LocalClients::IssueProbe(const std::string& password) {
  const std::string user = kBoundaryProbeUser;
  return Batch(user, {Json{{"command", "createRole"}, {"rolename", user}}.dump(),
                      Json{{"command", "createClient"},
                           {"username", user},
                           {"password", password},
                           {"roles", Json::array({Json{{"rolename", user}}})}}
                          .dump()});
}

std::string LocalClients::Retire(const std::string& sensor) {
  problems_.erase(sensor);
  return Batch(sensor, {Json{{"command", "deleteClient"}, {"username", sensor}}.dump(),
                        Json{{"command", "deleteRole"}, {"rolename", RoleOf(sensor)}}.dump()});
}

void LocalClients::OnResponse(std::string_view payload) {
  Json j = Json::parse(payload, nullptr, false);
  if (!j.is_object() || !j.contains("responses") || !j["responses"].is_array()) return;
  // correlation data -> the first failure of that batch ("" when none).
  std::map<std::string, std::string> batches;
  for (const Json& r : j["responses"]) {
    if (!r.is_object()) continue;
    std::string id = r.value("correlationData", "");
    if (pending_.count(id) == 0) continue;
    std::string& failure = batches[id];
    std::string error = r.value("error", "");
    std::string command = r.value("command", "");
    bool fine = error.empty() || error.find("already") != std::string::npos ||
                ((command == "deleteClient" || command == "deleteRole") &&
                 error.find("not found") != std::string::npos);
    if (!fine && failure.empty()) failure = command + ": " + error;
  }
  for (const auto& [id, failure] : batches) {
    const std::string sensor = pending_[id];
    pending_.erase(id);
    if (failure.empty()) {
      if (problems_.erase(sensor) > 0) {
        log::Info("sensor " + sensor + " has its client on the local broker again",
                  {{"IDENTITY", sensor}});
      }
      continue;
    }
    std::string why = "the local broker refused " + failure + " for sensor " + sensor +
                      " (is the dynamic security plugin loaded, and may local.username publish "
                      "to " +
                      kCommandTopic + "?)";
    if (problems_[sensor] != why) log::Error(why, {{"IDENTITY", sensor}});
    problems_[sensor] = why;
  }
}

}  // namespace ga::bridge
