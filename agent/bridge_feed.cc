#include "bridge_feed.h"

#include <openssl/x509.h>

#include "gateway_agent/log.h"
#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/tpm/openssl_provider.h"
#include "gateway_agent/tpm/tls_client.h"
#include "gateway_agent/tpm/tpm_key.h"

namespace ga {

namespace {

// What the bridge knows of `id` without its key: offline until ACTIVE.
bridge::BridgeIdentity Offline(const Identity& id) {
  bridge::BridgeIdentity b;
  b.name = id.name;
  b.thing = id.thing;
  b.sensor = id.kind == IdentityKind::kSensor;
  return b;
}

}  // namespace

Result<bridge::BridgeIdentity> ToBridgeIdentity(const Identity& id,
                                                const std::shared_ptr<tpm::TpmContext>& tpm) {
  bridge::BridgeIdentity b = Offline(id);
  if (id.state == EnrollmentState::kShared) {
    b.via = kGatewayIdentity;  // no key of its own
    return b;
  }
  b.active = id.state == EnrollmentState::kActive;
  if (!b.active) return b;
  const std::string where = "identity " + id.name;
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob,
                      tpm::TpmKeyBlob::ReadFile(id.key_file).With(where + ": key"));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(tpm, blob).With(where));
  GA_ASSIGN_OR_RETURN(tpm::ClientIdentity credentials,
                      tpm::LoadClientIdentity(std::move(key), id.chain_file).With(where));
  b.uses_gateway_policy =
      pki::HasOrganizationalUnit(X509_get_subject_name(credentials.leaf.get()), "gateway");
  b.credentials = std::make_shared<const tpm::ClientIdentity>(std::move(credentials));
  return b;
}

void TellBridge(bridge::Bridge& bridge, const std::shared_ptr<tpm::TpmContext>& tpm,
                const Identity& id) {
  if (id.state == EnrollmentState::kRemoved) return bridge.Remove(id.name);
  auto b = ToBridgeIdentity(id, tpm);
  if (b.ok()) return bridge.Upsert(*b);
  log::Error("not connecting to AWS IoT: " + b.status().message(), {{"IDENTITY", id.name}});
  bridge.Upsert(Offline(id));
}

}  // namespace ga
