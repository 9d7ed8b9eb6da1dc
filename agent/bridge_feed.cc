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

// An ACTIVE identity's key blob and chain, loaded; on failure `fault` says
// which of the two is at fault.
Result<std::shared_ptr<const tpm::ClientIdentity>> LoadCredentials(
    const Identity& id, const std::shared_ptr<tpm::TpmContext>& tpm, CredentialFault* fault) {
  const std::string where = "identity " + id.name;
  *fault = CredentialFault::kKey;
  GA_ASSIGN_OR_RETURN(tpm::TpmKeyBlob blob,
                      tpm::TpmKeyBlob::ReadFile(id.key_file).With(where + ": key"));
  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, tpm::MakeEvpPkey(tpm, blob).With(where));
  *fault = CredentialFault::kCertificate;
  GA_ASSIGN_OR_RETURN(tpm::ClientIdentity credentials,
                      tpm::LoadClientIdentity(std::move(key), id.chain_file).With(where));
  *fault = CredentialFault::kNone;
  return std::make_shared<const tpm::ClientIdentity>(std::move(credentials));
}

}  // namespace

Result<bridge::BridgeIdentity> ToBridgeIdentity(
    const Identity& id, const std::shared_ptr<tpm::TpmContext>& tpm, CredentialFault* fault,
    const std::shared_ptr<const tpm::ClientIdentity>& loaded) {
  CredentialFault ignored;
  if (fault == nullptr) fault = &ignored;
  *fault = CredentialFault::kNone;
  bridge::BridgeIdentity b = Offline(id);
  if (id.state == EnrollmentState::kShared) {
    b.via = kGatewayIdentity;  // no key of its own
    return b;
  }
  // While a renewal proves the next certificate, the connection is let go:
  // AWS IoT allows one connection per client id.
  b.active = id.state == EnrollmentState::kActive && id.renewal != RenewalStep::kProving;
  if (!b.active) return b;
  b.credentials = loaded;
  if (!b.credentials) {
    GA_ASSIGN_OR_RETURN(b.credentials, LoadCredentials(id, tpm, fault));
  }
  b.uses_gateway_policy =
      pki::HasOrganizationalUnit(X509_get_subject_name(b.credentials->leaf.get()), "gateway");
  return b;
}

CredentialCheck TellBridge(bridge::Bridge& bridge, const std::shared_ptr<tpm::TpmContext>& tpm,
                           const Identity& id, LocalCredentials* credentials,
                           const std::shared_ptr<const tpm::ClientIdentity>& loaded) {
  CredentialCheck check;
  const bool sensor = id.kind == IdentityKind::kSensor;
  if (id.state == EnrollmentState::kRemoved) {
    bridge.Remove(id.name);
    if (credentials != nullptr && sensor) credentials->Forget(id.name);
    return check;
  }
  std::string password;
  if (credentials != nullptr && sensor) {
    auto p = credentials->PasswordOf(id.name);
    if (p.ok()) {
      password = std::move(*p);
    } else {
      log::Error("sensor " + id.name + ": no client on the local broker: " + p.status().message(),
                 {{"IDENTITY", id.name}});
    }
  }
  auto b = ToBridgeIdentity(id, tpm, &check.fault, loaded);
  if (b.ok()) {
    check.credentials = b->credentials;
    b->local_password = std::move(password);
    bridge.Upsert(*b);
    return check;
  }
  check.problem = b.status().message();
  log::Error("not connecting to AWS IoT: " + check.problem, {{"IDENTITY", id.name}});
  bridge::BridgeIdentity offline = Offline(id);
  offline.local_password = std::move(password);
  bridge.Upsert(offline);
  return check;
}

}  // namespace ga
