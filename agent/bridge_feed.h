// Keeps the bridge's view of the identities current: an identity connects
// once ACTIVE, with its TPM key and certificate chain loaded here; its
// messages are kept while it is not; it is forgotten once removed.
#pragma once

#include <memory>

#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/bridge/bridge.h"
#include "gateway_agent/config.h"
#include "gateway_agent/status.h"
#include "gateway_agent/tpm/tpm_context.h"
#include "local_credentials.h"

namespace ga {

// The name of the gateway's own identity, whose connection carries the
// sensors in shared mode.
inline constexpr const char* kGatewayIdentity = kGatewayIdentityName.data();

// What stops an ACTIVE identity's key and certificate from being used.
enum class CredentialFault {
  kNone,
  kKey,          // the key blob is missing or unreadable: a new key is needed
  kCertificate,  // the chain is missing, unreadable or not for this key
};

struct CredentialCheck {
  CredentialFault fault = CredentialFault::kNone;
  std::string problem;  // names the identity and the file
  // What the bridge was given for an ACTIVE identity whose files loaded.
  std::shared_ptr<const tpm::ClientIdentity> credentials;
};

// The bridge's view of `id`. An ACTIVE identity's key blob and chain are
// loaded (no TPM command runs: the key is loaded at its first signature),
// unless `loaded` holds them already (the same files, unchanged); an error
// names the identity and the file, and `fault` (when given) says which of
// the two is at fault.
Result<bridge::BridgeIdentity> ToBridgeIdentity(
    const Identity& id, const std::shared_ptr<tpm::TpmContext>& tpm,
    CredentialFault* fault = nullptr,
    const std::shared_ptr<const tpm::ClientIdentity>& loaded = nullptr);

// Upserts or removes `id` in the bridge. An ACTIVE identity whose key or
// chain cannot be loaded is logged and kept offline (its messages wait);
// the returned check says why.
// With `credentials` (local.manage_clients), a sensor's local broker
// password goes along, and is forgotten with the sensor.
// `loaded`: as for ToBridgeIdentity.
CredentialCheck TellBridge(bridge::Bridge& bridge, const std::shared_ptr<tpm::TpmContext>& tpm,
                           const Identity& id, LocalCredentials* credentials = nullptr,
                           const std::shared_ptr<const tpm::ClientIdentity>& loaded = nullptr);

}  // namespace ga
