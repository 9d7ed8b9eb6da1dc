// Certificate mode for sensors on the gateway's local broker: a local-only CA
// ([local] sensor_ca_dir, made by `gateway-agent local-broker init --tls`)
// issues each sensor a client certificate with CN = its id, which the
// broker's TLS listener takes as the user name (use_identity_as_username), so
// the sensor's dynamic-security role confines it exactly as its password
// would. That CA is never the one registered with AWS ([ca]): a sensor's local
// certificate must not be able to register itself in the cloud (JITR).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "gateway_agent/config.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/status.h"

namespace ga {

// The local-only CA's directory inside a `local-broker init --tls` directory.
inline constexpr std::string_view kSensorCaDirName = "sensor-ca";

// When local.sensor_ca_dir is set: the directory holds a file CA that opens
// (certificate, key and its 0600 mode, as OpenLocalCa checks them), and it is
// neither [ca]'s key nor certificate nor a CA that [ca] signed
// (FailedPrecondition). Ok when it is not set.
Status CheckSensorCa(const Config& config);

// The local-only CA, checked as CheckSensorCa does; its certificates are valid
// for `validity_days` (0: the directory's ca.toml).
Result<std::unique_ptr<pki::LocalCa>> OpenSensorCa(const Config& config, int validity_days = 0);

struct SensorCertifyRequest {
  std::string sensor;
  std::filesystem::path csr;
  std::filesystem::path out;
  int validity_days = 0;  // 0: the local-only CA's validity_days
};

// `gateway-agent sensor certify`: a client certificate (CN = the sensor id,
// extendedKeyUsage clientAuth) for a sensor in the agent's state (not
// removed) from the local-only CA, written to request.out (0644; refused when
// it exists). Refuses, naming the file or key: certificate mode not set up
// (sensor_ca_dir), clients not managed (manage_clients: a certificate client
// gets only its sensor's role), an unknown sensor, an id the broker reserves
// (its admin, the agent's own user or client id), an unreadable CSR or one
// whose signature does not verify, a CSR CN other than the id.
// Returns the certificate's PEM.
Result<std::string> CertifySensor(const Config& config, const SensorCertifyRequest& request);

}  // namespace ga
