// `gateway-agent status`: the identities as a table for people and as JSON
// for programs.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/bridge/outbox.h"

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

std::string StatusTable(const std::vector<Identity>& identities, Millis now,
                        const BridgeStats& bridge = {},
                        const bridge::UnknownSenderReport& unknown = {});

// {"identities":[{"name":…,"kind":…,"thing":…,"state":…,…}],"counts":{…},
//  "unknownSensors":{"dropped":…,"recent":[{"id":…,"messages":…,"lastSeen":…}]}}
std::string StatusJson(const std::vector<Identity>& identities, Millis now,
                       const BridgeStats& bridge = {},
                       const bridge::UnknownSenderReport& unknown = {});

}  // namespace ga
