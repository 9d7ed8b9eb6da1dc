// `gateway-agent status`: the identities as a table for people and as JSON
// for programs.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gateway_agent/agent/agent_health.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/bridge/outbox.h"
#include "gateway_agent/config.h"

namespace ga {

// The bridge's figures per identity name (from the outbox database).
using BridgeStats = std::map<std::string, bridge::IdentityOutboxStats>;

// What the bridge last wrote to the outbox database in the state directory:
// each identity's traffic and connection, and the unknown senders. `status`
// and `sensor list` read it the same way, so they show the same.
struct BridgeReport {
  BridgeStats traffic;
  bridge::UnknownSenderReport unknown;
  // The first read that failed (what could be read is still filled in): the
  // identities are still worth showing, with this error beside them.
  Status problem;
};
BridgeReport ReadBridgeReport(const std::filesystem::path& state_dir);

// With `live` (the running agent's health report, agent_health.h), each
// identity shows what stops it and the agent's own problems are listed;
// without it only what the files tell (an expired certificate, a parked
// identity).
std::string StatusTable(const std::vector<Identity>& identities, Millis now,
                        const BridgeStats& bridge = {},
                        const bridge::UnknownSenderReport& unknown = {},
                        const LiveHealth* live = nullptr);

// {"health":{"ok":…,"agent":"running|not running|not
// reporting","note":…,"problems":[…],"warnings":[…]},
//  "identities":[{"name":…,"kind":…,"thing":…,"state":…,"problem":…,…}],"counts":{…},
//  "unknownSensors":{"dropped":…,"recent":[{"id":…,"messages":…,"lastSeen":…}]}}
std::string StatusJson(const std::vector<Identity>& identities, Millis now,
                       const BridgeStats& bridge = {},
                       const bridge::UnknownSenderReport& unknown = {},
                       const LiveHealth* live = nullptr);

// Everything `status` shows, read now from the state and runtime directories
// of `config` (the identity store read-only: the agent may be running).
struct StatusSnapshot {
  std::vector<Identity> identities;
  BridgeReport bridge;
  LiveHealth live;
  Millis now = 0;
};
Result<StatusSnapshot> ReadStatus(const Config& config);

// What stops `id` from working ("" when nothing is known to).
std::string IdentityProblem(const Identity& id, Millis now, const LiveHealth* live);

// Whether `status` should exit non-zero: the agent is not running or not
// reporting, it has a problem, or an identity has one or is parked.
bool NeedsAttention(const std::vector<Identity>& identities, Millis now, const LiveHealth& live);

}  // namespace ga
