#include "gateway_agent/agent/sensor_ca.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <system_error>

#include "gateway_agent/agent/daemon.h"
#include "gateway_agent/agent/identity_store.h"
#include "gateway_agent/agent/local_broker_setup.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/certificate.h"

namespace ga {
namespace {

namespace fs = std::filesystem;

bool SameFile(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

// Why `sensor_ca` could let a sensor's certificate into AWS IoT: it is [ca]'s
// key or certificate, or a CA that [ca] signed. "" when it is none of these.
std::string SharedWithAwsCa(const pki::CaDirectory& sensor_ca, const CaConfig& aws_ca) {
  if (SameFile(sensor_ca.ca.key, aws_ca.key)) return "its key is [ca] key " + aws_ca.key.string();
  if (SameFile(sensor_ca.ca.cert, aws_ca.cert)) {
    return "its certificate is [ca] cert " + aws_ca.cert.string();
  }
  std::error_code ec;
  if (!fs::exists(aws_ca.cert, ec)) return "";
  auto aws_cert = pki::ReadCertificateFile(aws_ca.cert);
  auto cert = pki::ReadCertificateFile(sensor_ca.ca.cert);
  if (!aws_cert.ok() || !cert.ok()) return "";  // CheckLocalCa reports an unreadable one
  if (EVP_PKEY_eq(X509_get0_pubkey(cert->get()), X509_get0_pubkey(aws_cert->get())) == 1) {
    return "its certificate holds the key of [ca] cert " + aws_ca.cert.string();
  }
  if (X509_check_issued(aws_cert->get(), cert->get()) == X509_V_OK) {
    return "[ca] cert " + aws_ca.cert.string() + " signed it";
  }
  return "";
}

// The local-only CA's directory, read and checked against [ca].
Result<pki::CaDirectory> ReadSensorCa(const Config& config) {
  const fs::path& dir = config.local.sensor_ca_dir;
  GA_ASSIGN_OR_RETURN(pki::CaDirectory ca,
                      pki::ReadCaDirectory(dir).With(
                          "not a CA directory as `gateway-agent local-broker init --tls` makes "
                          "it (DIR/sensor-ca)"));
  if (ca.ca.backend != CaBackend::kFile) {
    return InvalidArgument(
        "it is not a file CA: make the local-only CA with `gateway-agent local-broker init "
        "--tls`");
  }
  if (std::string shared = SharedWithAwsCa(ca, config.ca); !shared.empty()) {
    return FailedPrecondition(
        shared +
        ": the sensors' local CA must never be the CA registered with AWS IoT (a sensor's local "
        "certificate could then register itself in the cloud); point sensor_ca_dir at the "
        "sensor-ca directory of `gateway-agent local-broker init --tls`");
  }
  return ca;
}

std::string Where(const Config& config) {
  return "[local] sensor_ca_dir " + config.local.sensor_ca_dir.string() + " in " +
         config.source.string();
}

Status CheckSensorKnown(const Config& config, const std::string& sensor) {
  if (sensor == kLocalBrokerAdminUser || sensor == config.local.username ||
      sensor == config.local.client_id) {
    return InvalidArgument("\"" + sensor +
                           "\" is the local broker's administrator or the agent's own user or "
                           "client id: a certificate with that CN would act as it");
  }
  const fs::path db = config.agent.state_dir / kStateDb;
  GA_ASSIGN_OR_RETURN(std::unique_ptr<IdentityStore> store, IdentityStore::OpenReadOnly(db));
  auto id = store->Get(sensor);
  if (!id.ok() && id.status().code() != Code::kNotFound) return id.status();
  if (!id.ok() || id->kind != IdentityKind::kSensor || id->state == EnrollmentState::kRemoved) {
    return NotFound("no sensor \"" + sensor + "\" in the agent's state " + db.string() +
                    ": add it (gateway-agent sensor add, or [[sensor]] in " +
                    config.source.string() + " and a running agent), then certify it");
  }
  return Status::Ok();
}

}  // namespace

Status CheckSensorCa(const Config& config) {
  if (config.local.sensor_ca_dir.empty()) return Status::Ok();
  auto ca = ReadSensorCa(config);
  if (!ca.ok()) return std::move(ca).take_status().With(Where(config));
  return pki::CheckLocalCa(ca->ca).With(Where(config));
}

Result<std::unique_ptr<pki::LocalCa>> OpenSensorCa(const Config& config, int validity_days) {
  auto ca = ReadSensorCa(config);
  if (!ca.ok()) return std::move(ca).take_status().With(Where(config));
  if (validity_days > 0) ca->ca.validity = std::chrono::hours(24 * validity_days);
  return pki::OpenLocalCa(ca->ca).With(Where(config));
}

Result<std::string> CertifySensor(const Config& config, const SensorCertifyRequest& request) {
  const std::string what = "certifying sensor \"" + request.sensor + "\"";
  if (config.local.sensor_ca_dir.empty()) {
    return FailedPrecondition("certificate mode is not set up: set [local] sensor_ca_dir in " +
                              config.source.string() +
                              " to the sensor-ca directory that `gateway-agent local-broker "
                              "init --tls` made")
        .With(what);
  }
  if (!config.local.manage_clients) {
    return FailedPrecondition("[local] manage_clients is false in " + config.source.string() +
                              ": the broker gives a certificate client only the role the agent "
                              "makes for its sensor; set manage_clients = true")
        .With(what);
  }
  if (request.validity_days < 0 || request.validity_days > 36500) {
    return InvalidArgument("--days must be 1-36500").With(what);
  }
  GA_RETURN_IF_ERROR(CheckSensorKnown(config, request.sensor).With(what));
  std::error_code ec;
  if (fs::symlink_status(request.out, ec).type() != fs::file_type::not_found) {
    return Status(Code::kAlreadyExists,
                  "--out " + request.out.string() +
                      " exists: a certificate is never overwritten; remove it or name another file")
        .With(what);
  }
  const std::string csr_hint = "--csr " + request.csr.string() +
                               " (make it with `openssl req -new -key <sensor key> -subj " +
                               "/CN=" + request.sensor + " -out <file>`)";
  auto csr = pki::ReadCsrFile(request.csr);
  if (!csr.ok()) return std::move(csr).take_status().With(csr_hint).With(what);
  auto cn = pki::CommonName(X509_REQ_get_subject_name(csr->get()));
  if (!cn.ok()) return std::move(cn).take_status().With(csr_hint).With(what);
  if (!cn->empty() && *cn != request.sensor) {
    return InvalidArgument("its CN \"" + *cn + "\" is not the sensor id \"" + request.sensor + "\"")
        .With(csr_hint)
        .With(what);
  }
  GA_ASSIGN_OR_RETURN(std::unique_ptr<pki::LocalCa> ca,
                      OpenSensorCa(config, request.validity_days).With(what));
  auto issued = ca->Issue(csr->get(), request.sensor);
  if (!issued.ok()) return std::move(issued).take_status().With(csr_hint).With(what);
  GA_ASSIGN_OR_RETURN(std::string pem, issued->CertPem());
  GA_RETURN_IF_ERROR(WriteFileAtomic(request.out, pem, 0644, IfExists::kRefuse)
                         .With("--out " + request.out.string())
                         .With(what));
  return pem;
}

}  // namespace ga
