#include "local_broker_tls.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

#include "gateway_agent/agent/sensor_ca.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"

namespace ga {
namespace {

namespace fs = std::filesystem;

constexpr int kCaDays = 3650;  // the CA and the broker's certificate: ten years

bool IsHostName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

bool IsIpAddress(const std::string& text) {
  unsigned char buf[16];
  return inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// The names sensors may reach the broker by: its host name, then the bound
// address, or localhost and 127.0.0.1 when it listens on every address or on
// loopback.
std::vector<std::string> ServerNames(const LocalBrokerSetup& s) {
  std::vector<std::string> names = {"DNS:" + s.tls_host};
  const bool any = s.bind_address == "0.0.0.0" || s.bind_address == "::";
  if (!any) {
    names.push_back((IsIpAddress(s.bind_address) ? "IP:" : "DNS:") + s.bind_address);
  }
  if (any || s.bind_address == "127.0.0.1" || s.bind_address == "::1") {
    if (s.tls_host != "localhost") names.push_back("DNS:localhost");
    if (s.bind_address != "127.0.0.1") names.push_back("IP:127.0.0.1");
  }
  return names;
}

// An existing local-only CA is kept with --force when it opens: the sensors'
// certificates stay valid.
Result<bool> KeepExistingCa(const fs::path& dir, bool force) {
  std::error_code ec;
  if (!force || !fs::exists(dir / pki::kCaDescriptionFile, ec)) return false;
  GA_ASSIGN_OR_RETURN(pki::CaDirectory ca, pki::ReadCaDirectory(dir));
  GA_RETURN_IF_ERROR(pki::CheckLocalCa(ca.ca).With("the existing local-only CA (remove " +
                                                   dir.string() + " to make a new one)"));
  return true;
}

}  // namespace

Status PlanBrokerTls(const LocalBrokerSetupOptions& options, LocalBrokerSetup& s) {
  if (!options.tls) return Status::Ok();
  if (options.tls_port < 1 || options.tls_port > 65535 || options.tls_port == options.port) {
    return InvalidArgument("--tls-port " + std::to_string(options.tls_port) +
                           ": must be between 1 and 65535 and not --port " +
                           std::to_string(options.port));
  }
  std::string host = options.tls_host;
  if (host.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return ErrnoStatus("gethostname", errno);
    host = buf;
  }
  if (!IsHostName(host)) {
    return InvalidArgument("--tls-host \"" + host +
                           "\": name the host sensors reach the broker by (letters, digits, '-', "
                           "'.'; at most 64)");
  }
  s.tls_port = options.tls_port;
  s.tls_host = host;
  s.sensor_ca_dir = s.dir / kSensorCaDirName;
  s.tls_cert_file = s.dir / "broker-tls.pem";
  s.tls_key_file = s.dir / "broker-tls.key";
  return Status::Ok();
}

std::vector<fs::path> BrokerTlsFiles(const LocalBrokerSetup& s) {
  if (s.tls_port == 0) return {};
  return {s.sensor_ca_dir / pki::kCaCertFile, s.sensor_ca_dir / pki::kCaKeyFile,
          s.sensor_ca_dir / pki::kCaDescriptionFile, s.tls_cert_file, s.tls_key_file};
}

Status WriteBrokerTls(const LocalBrokerSetup& s, bool force) {
  static constexpr std::string_view kWhat = "the TLS listener for sensors with certificates";
  GA_ASSIGN_OR_RETURN(bool keep, KeepExistingCa(s.sensor_ca_dir, force).With(kWhat));
  if (!keep) {
    pki::CaInitOptions ca;
    ca.backend = CaBackend::kFile;
    ca.subject = "CN=gateway-agent local sensor CA " + s.tls_host;
    ca.days = kCaDays;
    ca.out_dir = s.sensor_ca_dir;
    auto made = pki::InitLocalCa(ca);
    if (!made.ok()) return std::move(made).take_status().With(kWhat);
  }
  GA_ASSIGN_OR_RETURN(pki::CaDirectory dir, pki::ReadCaDirectory(s.sensor_ca_dir).With(kWhat));
  dir.ca.validity = std::chrono::hours(24 * kCaDays);
  GA_ASSIGN_OR_RETURN(std::unique_ptr<pki::LocalCa> ca, pki::OpenLocalCa(dir.ca).With(kWhat));

  GA_ASSIGN_OR_RETURN(EvpPkeyPtr key, pki::GenerateP256Key().With("the broker's TLS key"));
  GA_ASSIGN_OR_RETURN(X509ReqPtr csr, tpm::MakeCsr(key.get(), "CN=" + s.tls_host));
  GA_ASSIGN_OR_RETURN(pki::IssuedCertificate issued,
                      ca->IssueServerCertificate(csr.get(), s.tls_host, ServerNames(s)));
  GA_ASSIGN_OR_RETURN(std::string key_pem, pki::PrivateKeyPem(key.get()));
  GA_ASSIGN_OR_RETURN(std::string cert_pem, issued.CertPem());
  const IfExists if_exists = force ? IfExists::kReplace : IfExists::kRefuse;
  Status written = WriteFileAtomic(s.tls_key_file, key_pem, 0600, if_exists);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  GA_RETURN_IF_ERROR(written.With(kWhat));
  return WriteFileAtomic(s.tls_cert_file, cert_pem, 0644, if_exists).With(kWhat);
}

std::string TlsListenerConf(const LocalBrokerSetup& s) {
  std::string conf;
  conf +=
      "# Sensors with certificates: TLS, a client certificate from the local-only CA\n"
      "# (never the CA registered with AWS) is required, and its CN (the sensor id) is the\n"
      "# user name: the password check is skipped and the sensor's role applies.\n";
  conf += "listener " + std::to_string(s.tls_port) + " " + s.bind_address + "\n";
  conf += "cafile " + (s.sensor_ca_dir / pki::kCaCertFile).string() + "\n";
  conf += "certfile " + s.tls_cert_file.string() + "\n";
  conf += "keyfile " + s.tls_key_file.string() + "\n";
  conf += "tls_version tlsv1.2\n";
  conf += "require_certificate true\n";
  conf += "use_identity_as_username true\n";
  conf += "use_username_as_clientid true\n";
  return conf;
}

}  // namespace ga
