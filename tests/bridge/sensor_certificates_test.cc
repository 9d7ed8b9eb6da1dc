// Certificate mode on the local broker: `local-broker init --tls` (a real
// mosquitto 2.0 with its dynamic security plugin), `sensor certify` from the
// local-only CA, and a sensor publishing over the TLS listener with that
// certificate. Its CN is its user name there, so its own role confines it as
// a password would; certificates of any other CA do not get in; a removed
// sensor's certificate publishes nothing.
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "bridge_harness.h"
#include "gateway_agent/files.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"

namespace ga::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kNotAuthorized = 135;  // MQTT 5 reason code of a PUBACK the ACLs refused

// An MQTT 5 client on the broker's TLS listener with a client certificate; it
// keeps the CONNACK and each PUBACK's reason code.
class TlsSensor {
 public:
  TlsSensor(int port, const fs::path& cafile, const fs::path& cert, const fs::path& key) {
    mosquitto_lib_init();
    m_ = mosquitto_new("any-client-id", true, this);
    mosquitto_int_option(m_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_tls_set(m_, cafile.c_str(), nullptr, cert.c_str(), key.c_str(), nullptr);
    mosquitto_connect_v5_callback_set(
        m_, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
          static_cast<TlsSensor*>(self)->connack_ = rc;
        });
    mosquitto_disconnect_v5_callback_set(
        m_, [](mosquitto*, void* self, int, const mosquitto_property*) {
          static_cast<TlsSensor*>(self)->dropped_ = true;
        });
    mosquitto_publish_v5_callback_set(
        m_, [](mosquitto*, void* self, int mid, int reason, const mosquitto_property*) {
          auto* s = static_cast<TlsSensor*>(self);
          std::lock_guard lock(s->mu_);
          s->reasons_[mid] = reason;
        });
    if (mosquitto_connect(m_, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) dropped_ = true;
    mosquitto_loop_start(m_);
  }
  ~TlsSensor() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  // The CONNACK code (0: accepted), or -1 when the connection ended without one.
  int Connack() {
    WaitUntil([&] { return connack_ >= 0 || dropped_; }, 10s);
    return connack_;
  }
  bool dropped() const { return dropped_; }
  // Publishes at QoS 1 and returns the PUBACK's reason code (-1: none came).
  int Publish(const std::string& topic, const std::string& payload) {
    int mid = 0;
    if (mosquitto_publish(m_, &mid, topic.c_str(), static_cast<int>(payload.size()), payload.data(),
                          1, false) != MOSQ_ERR_SUCCESS) {
      return -1;
    }
    int reason = -1;
    WaitUntil(
        [&] {
          std::lock_guard lock(mu_);
          auto it = reasons_.find(mid);
          if (it != reasons_.end()) reason = it->second;
          return it != reasons_.end();
        },
        20s);
    return reason;
  }

 private:
  mosquitto* m_;
  std::atomic<int> connack_{-1};
  std::atomic<bool> dropped_{false};
  std::mutex mu_;
  std::map<int, int> reasons_;
};

// A sensor's key (PEM file, 0600) and a CSR for `subject`.
struct SensorKey {
  fs::path key_file;
  fs::path csr_file;
  X509ReqPtr csr;
};

SensorKey MakeSensorKey(const fs::path& dir, const std::string& name, const std::string& subject) {
  SensorKey out;
  auto key = pki::GenerateP256Key();
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  auto csr = tpm::MakeCsr(key->get(), subject);
  EXPECT_TRUE(csr.ok()) << csr.status().ToString();
  out.key_file = dir / (name + ".key");
  out.csr_file = dir / (name + ".csr");
  EXPECT_TRUE(WriteFileAtomic(out.key_file, *pki::PrivateKeyPem(key->get()), 0600).ok());
  EXPECT_TRUE(WriteFileAtomic(out.csr_file, *CsrToPem(csr->get()), 0644).ok());
  out.csr = std::move(*csr);
  return out;
}

std::set<std::string> CloudPayloads(IotSim& sim, const std::string& thing) {
  std::set<std::string> out;
  for (const auto& m : CloudPublishes(sim)) {
    if (m.topic.rfind("dt/" + thing + "/", 0) == 0) out.insert(m.payload_b64);
  }
  return out;
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SensorCertificates, ASensorWithACertificateSpeaksOnlyForItselfUntilRemoved) {
  HarnessOptions o;
  o.sensors = 1;  // s1 from the file; s2 added at run time (so it can be removed)
  o.managed_local_broker = true;
  o.local_broker_tls = true;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const fs::path sensor_ca = (*h)->BrokerDir() / "sensor-ca";
  const fs::path cafile = sensor_ca / "ca.pem";
  auto checked = (*h)->Cli({"check-config"});
  ASSERT_EQ(checked.exit_code, 0) << checked.output;
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h);
  auto added = (*h)->Cli({"sensor", "add", "s2"});
  ASSERT_EQ(added.exit_code, 0) << added.output;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 3, 90s)) << Log(**h);
  const int port = (*h)->broker_tls_port();
  const fs::path dir = (*h)->dir();

  SensorKey s2 = MakeSensorKey(dir, "s2", "CN=s2");
  const fs::path s2_cert = dir / "s2.pem";
  auto certified = (*h)->Cli(
      {"sensor", "certify", "s2", "--csr", s2.csr_file.string(), "--out", s2_cert.string()});
  ASSERT_EQ(certified.exit_code, 0) << certified.output;
  EXPECT_TRUE(Has(certified.output, cafile.string())) << certified.output;

  // Its own topics: through to the cloud as s2 (its client is made when the
  // agent enrolls it: the first publishes may be refused for a moment).
  std::unique_ptr<TlsSensor> session;
  ASSERT_TRUE(WaitUntil(
      [&] {
        session = std::make_unique<TlsSensor>(port, cafile, s2_cert, s2.key_file);
        return session->Connack() == 0 && session->Publish("sensors/s2/probe", "probe") == 0;
      },
      30s))
      << Log(**h);
  for (int n = 0; n < 10; ++n) {
    EXPECT_EQ(session->Publish("sensors/s2/seq", std::to_string(n)), 0) << n;
  }
  // s1's topic: refused by the broker.
  EXPECT_EQ(session->Publish("sensors/s1/seq", "forged-by-s2"), kNotAuthorized);
  std::set<std::string> want;
  for (int n = 0; n < 10; ++n) want.insert(Base64(std::to_string(n)));
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto got = CloudPayloads((*h)->sim(), "gw-test:s2");
        return std::includes(got.begin(), got.end(), want.begin(), want.end());
      },
      30s))
      << Log(**h);

  // A certificate of another CA, the one registered with AWS above all, with
  // a known sensor's CN: the listener refuses it.
  {
    auto aws_ca_dir = pki::ReadCaDirectory((*h)->ca_dir());
    ASSERT_TRUE(aws_ca_dir.ok()) << aws_ca_dir.status().ToString();
    auto aws_ca = pki::OpenLocalCa(aws_ca_dir->ca);
    ASSERT_TRUE(aws_ca.ok()) << aws_ca.status().ToString();
    SensorKey s1 = MakeSensorKey(dir, "s1-aws", "CN=s1");
    auto issued = (*aws_ca)->Issue(s1.csr.get(), "s1");
    ASSERT_TRUE(issued.ok()) << issued.status().ToString();
    ASSERT_TRUE(WriteFileAtomic(dir / "s1-aws.pem", *issued->CertPem(), 0644).ok());
    TlsSensor foreign(port, cafile, dir / "s1-aws.pem", s1.key_file);
    EXPECT_NE(foreign.Connack(), 0);
    EXPECT_NE(foreign.Publish("sensors/s1/seq", "from-aws-ca"), 0);
  }

  // Removal: its session ends, and its certificate publishes nothing more.
  auto removed = (*h)->Cli({"sensor", "remove", "s2"});
  ASSERT_EQ(removed.exit_code, 0) << removed.output;
  EXPECT_TRUE(WaitUntil([&] { return session->dropped(); }, 30s)) << "s2's session goes on";
  // mosquitto 2.0 checks no password for a certificate, so it may connect; its
  // publish is refused either way (135, or no connection).
  TlsSensor after(port, cafile, s2_cert, s2.key_file);
  after.Connack();
  EXPECT_NE(after.Publish("sensors/s2/seq", "after-removal"), 0);

  // sensor certify refuses, naming what to do.
  auto certify = [&](const std::string& id, const fs::path& csr, const fs::path& out) {
    return (*h)->Cli({"sensor", "certify", id, "--csr", csr.string(), "--out", out.string()});
  };
  SensorKey s1 = MakeSensorKey(dir, "s1", "CN=s1");
  auto r = certify("s2", s1.csr_file, dir / "x.pem");  // removed
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Has(r.output, "no sensor \"s2\"") && Has(r.output, "sensor add")) << r.output;
  r = certify("s9", s1.csr_file, dir / "x.pem");
  EXPECT_TRUE(Has(r.output, "no sensor \"s9\"")) << r.output;
  r = certify("admin", s1.csr_file, dir / "x.pem");
  EXPECT_TRUE(Has(r.output, "administrator")) << r.output;
  r = certify("s1", s2.csr_file, dir / "x.pem");  // CN=s2
  EXPECT_TRUE(Has(r.output, "CN \"s2\" is not the sensor id \"s1\"") &&
              Has(r.output, s2.csr_file.string()) && Has(r.output, "-subj /CN=s1"))
      << r.output;
  WriteText(dir / "garbage.csr", "not a CSR\n");
  r = certify("s1", dir / "garbage.csr", dir / "x.pem");
  EXPECT_TRUE(Has(r.output, (dir / "garbage.csr").string())) << r.output;
  r = certify("s1", dir / "missing.csr", dir / "x.pem");
  EXPECT_TRUE(Has(r.output, (dir / "missing.csr").string())) << r.output;
  {
    // A CSR changed after it was signed: its signature no longer verifies.
    SensorKey other = MakeSensorKey(dir, "other", "CN=other");
    auto name = tpm::ParseSubject("CN=s1");
    ASSERT_TRUE(name.ok());
    X509_REQ_set_subject_name(other.csr.get(), name->get());
    ASSERT_TRUE(WriteFileAtomic(other.csr_file, *CsrToPem(other.csr.get()), 0644).ok());
    r = certify("s1", other.csr_file, dir / "x.pem");
    EXPECT_TRUE(Has(r.output, "signature does not verify")) << r.output;
  }
  r = certify("s1", s1.csr_file, s2_cert);  // exists
  EXPECT_TRUE(Has(r.output, s2_cert.string() + " exists")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "x.pem"));
  r = certify("s1", s1.csr_file, dir / "s1.pem");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  // Nothing arrived for s1 but what s1 sent (it sent nothing), nor after s2's removal.
  EXPECT_EQ(CloudPayloads((*h)->sim(), "gw-test:s1").size(), 0u);
  EXPECT_EQ(CloudPayloads((*h)->sim(), "gw-test:s2").count(Base64("after-removal")), 0u);

  // The CA registered with AWS as the sensors' CA: check-config (and so run)
  // and certify refuse it.
  (*h)->RewriteConfig([&](std::string& text) {
    auto at = text.find("sensor_ca_dir = ");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, text.find('\n', at) - at,
                 "sensor_ca_dir = \"" + (*h)->ca_dir().string() + "\"");
  });
  auto refused = (*h)->Cli({"check-config"});
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(Has(refused.output, "never be the CA registered with AWS")) << refused.output;
  r = certify("s1", s1.csr_file, dir / "y.pem");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Has(r.output, "never be the CA registered with AWS")) << r.output;
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
