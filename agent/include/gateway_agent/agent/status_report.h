// `gateway-agent status`: the identities as a table for people and as JSON
// for programs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/bridge/outbox.h"

namespace ga {

// The bridge's figures per identity name (from the outbox database).
using BridgeStats = std::map<std::string, bridge::IdentityOutboxStats>;

std::string StatusTable(const std::vector<Identity>& identities, Millis now,
                        const BridgeStats& bridge = {},
                        const bridge::UnknownSenderReport& unknown = {});

// {"identities":[{"name":…,"kind":…,"thing":…,"state":…,…}],"counts":{…},
//  "unknownSensors":{"dropped":…,"recent":[{"id":…,"messages":…,"lastSeen":…}]}}
std::string StatusJson(const std::vector<Identity>& identities, Millis now,
                       const BridgeStats& bridge = {},
                       const bridge::UnknownSenderReport& unknown = {});

}  // namespace ga
