// `gateway-agent check` against a real enrolled setup (swtpm, iot-sim with
// the JITR Lambda, mosquitto), healthy and with one fault at a time; and
// InspectIdentityFiles on its own against swtpm.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent_harness.h"
#include "gateway_agent/agent/health_checks.h"
#include "gateway_agent/pki/local_ca.h"
#include "gateway_agent/tpm/csr.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;

// The result ("ok", "warning", "error") of every check with `name`, or "" when absent.
std::string ResultOf(const nlohmann::json& doc, const std::string& name) {
  for (const auto& c : doc["checks"]) {
    if (c["name"] == name) return c["result"];
  }
  return "";
}

class Check : public ::testing::Test {
 protected:
  // One enrolled gateway with one sensor, the agent running.
  void SetUp() override {
    HarnessOptions o;
    o.sensors = 1;
    o.ca_days = 3650;
    o.validity = "365d";
    o.managed_local_broker = true;  // the setup the README recommends
    auto h = AgentHarness::Start(o);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    harness_ = std::move(*h);
    ASSERT_TRUE(harness_->StartAgent().ok());
    std::string status;
    ASSERT_TRUE(harness_->WaitForState("ACTIVE", 2, 120s, &status)) << status;
  }

  void TearDown() override {
    if (!harness_) return;
    Status violations = harness_->NoViolations();
    EXPECT_TRUE(violations.ok()) << violations.ToString();
  }

  AgentHarness& h() { return *harness_; }
  std::filesystem::path IdentityFile(const std::string& identity, const std::string& file) {
    return h().state_dir() / "identities" / identity / file;
  }
  // `check --json`: its exit code and parsed output.
  nlohmann::json CheckJson(int* exit_code) {
    CommandResult r = h().Cli({"check", "--json"});
    *exit_code = r.exit_code;
    auto doc = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(doc.is_discarded()) << r.output;
    last_output_ = r.output;
    return doc;
  }
  // The check `name` gives `result` and the command exits `exit_code`.
  void ExpectCheck(const std::string& name, const std::string& result, int exit_code) {
    int code = -1;
    auto doc = CheckJson(&code);
    EXPECT_EQ(ResultOf(doc, name), result) << last_output_;
    EXPECT_EQ(code, exit_code) << last_output_;
  }

  std::unique_ptr<AgentHarness> harness_;
  std::string last_output_;
};

TEST_F(Check, HealthySetupIsAllOkWhileTheAgentRuns) {
  CommandResult text = h().Cli({"check"});
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_EQ(text.output.find("\u2717"), std::string::npos) << text.output;
  EXPECT_EQ(text.output.find("\u26a0"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("\u2713 identity s1"), std::string::npos) << text.output;

  int code = -1;
  auto doc = CheckJson(&code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(doc["ok"], true) << last_output_;
  for (const char* name :
       {"config", "clock", "tpm", "identity gateway", "identity s1", "local ca", "aws dns",
        "aws tcp", "aws tls", "local broker", "state_dir", "free space", "outbox"}) {
    EXPECT_EQ(ResultOf(doc, name), "ok") << name << "\n" << last_output_;
  }
  // The agent kept its connections: still all ACTIVE and running.
  EXPECT_TRUE(h().agent().running());
  EXPECT_EQ(JsonCount(h().StatusJson(), "state", "ACTIVE"), 2);
}

TEST_F(Check, TpmStopped) {
  h().tpm().Kill();
  ExpectCheck("tpm", "error", 1);
  ASSERT_TRUE(h().tpm().Relaunch().ok());
  ExpectCheck("tpm", "ok", 0);
}

TEST_F(Check, AMissingSrkIsReportedNotCreated) {
  h().agent().Stop();  // the agent would make it again
  const std::map<std::string, std::string> env = {{"TPM2TOOLS_TCTI", h().tpm().tcti()}};
  auto evict = RunCommand({"tpm2_evictcontrol", "-C", "o", "-c", "0x81000001"}, 60s, env);
  ASSERT_EQ(evict.exit_code, 0) << evict.output;
  int code = -1;
  auto doc = CheckJson(&code);
  EXPECT_EQ(ResultOf(doc, "tpm"), "warning") << last_output_;
  EXPECT_EQ(ResultOf(doc, "identity s1"), "warning") << last_output_;
  EXPECT_EQ(code, 0) << last_output_;  // warnings do not fail
  auto handles = RunCommand({"tpm2_getcap", "handles-persistent"}, 60s, env);
  ASSERT_EQ(handles.exit_code, 0) << handles.output;
  EXPECT_EQ(handles.output.find("0x81000001"), std::string::npos) << handles.output;
}

// The running agent repairs a missing key or a wrong certificate by itself:
// these faults are checked with the agent stopped.
TEST_F(Check, KeyFileDeleted) {
  h().agent().Stop();
  const auto key = IdentityFile("s1", "key.tss2");
  const std::string saved = ReadText(key);
  std::filesystem::remove(key);
  ExpectCheck("identity s1", "error", 1);
  EXPECT_NE(last_output_.find("is missing"), std::string::npos) << last_output_;
  WriteText(key, saved);
  ExpectCheck("identity s1", "ok", 0);
}

TEST_F(Check, CertificateOfAnotherIdentity) {
  h().agent().Stop();
  const auto cert = IdentityFile("s1", "cert.pem");
  const std::string saved = ReadText(cert);
  WriteText(cert, ReadText(IdentityFile("gateway", "cert.pem")));
  ExpectCheck("identity s1", "error", 1);
  EXPECT_NE(last_output_.find("is not for key"), std::string::npos) << last_output_;
  EXPECT_EQ(ResultOf(nlohmann::json::parse(last_output_), "identity gateway"), "ok");
  WriteText(cert, saved);
  ExpectCheck("identity s1", "ok", 0);
}

TEST_F(Check, IotSimStopped) {
  h().sim().process().Stop();
  ExpectCheck("aws tcp", "error", 1);
  ASSERT_TRUE(h().sim().Restart().ok());
  ExpectCheck("aws tls", "ok", 0);
}

TEST_F(Check, WrongRootCa) {
  // A root the sim's server certificate does not chain to: our own CA.
  const std::string root = h().sim().root_ca().string();
  const std::string other = (h().ca_dir() / "ca.pem").string();
  h().RewriteConfig([&](std::string& text) { text.replace(text.find(root), root.size(), other); });
  ExpectCheck("aws tls", "error", 1);
  EXPECT_NE(last_output_.find("not verified"), std::string::npos) << last_output_;
}

TEST_F(Check, LocalBrokerStopped) {
  h().broker().process().Stop();
  ExpectCheck("local broker", "error", 1);
  ASSERT_TRUE(h().broker().Restart().ok());
  ExpectCheck("local broker", "ok", 0);
}

TEST_F(Check, CaKeyReadableByOthers) {
  const auto key = h().ca_dir() / "ca.key";
  std::filesystem::permissions(key, std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  ExpectCheck("local ca", "error", 1);
  EXPECT_NE(last_output_.find("chmod 0600"), std::string::npos) << last_output_;
}

TEST_F(Check, ALocalPasswordFileOthersCanReadIsAWarning) {
  const std::string config = ReadText(h().config());
  const std::string key = "password_file = \"";
  const size_t at = config.find(key);
  ASSERT_NE(at, std::string::npos) << config;
  const std::string file =
      config.substr(at + key.size(), config.find('"', at + key.size()) - at - key.size());
  std::filesystem::permissions(file, std::filesystem::perms::others_read,
                               std::filesystem::perm_options::add);
  ExpectCheck("local password", "warning", 0);
  EXPECT_NE(last_output_.find("chmod 0600 " + file), std::string::npos) << last_output_;
  std::filesystem::permissions(file, std::filesystem::perms::others_read,
                               std::filesystem::perm_options::remove);
  int code = -1;
  EXPECT_EQ(ResultOf(CheckJson(&code), "local password"), "") << last_output_;
}

TEST_F(Check, InvalidConfigSkipsTheOtherChecks) {
  h().RewriteConfig([](std::string& text) { text += "[bogus]\n"; });
  int code = -1;
  auto doc = CheckJson(&code);
  EXPECT_EQ(code, 1);
  EXPECT_EQ(ResultOf(doc, "config"), "error") << last_output_;
  EXPECT_EQ(doc["checks"].size(), 1u) << last_output_;
}

// InspectIdentityFiles against swtpm and a file CA, without the agent.
class InspectIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    auto swtpm = Swtpm::Start();
    ASSERT_TRUE(swtpm.ok()) << swtpm.status().ToString();
    swtpm_ = std::move(*swtpm);
    auto tpm = tpm::TpmContext::Open({swtpm_->tcti(), kDefaultSrkHandle});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = *tpm;
    pki::CaInitOptions init;
    init.subject = "CN=Inspect CA";
    init.days = 3650;
    init.out_dir = dir_ / "ca";
    ASSERT_TRUE(pki::InitLocalCa(init).ok());
    CaConfig ca;
    ca.cert = dir_ / "ca" / "ca.pem";
    ca.key = dir_ / "ca" / "ca.key";
    ca.validity = std::chrono::hours(24 * 365);
    auto opened = pki::OpenLocalCa(ca);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    ca_ = std::move(*opened);
    identity_ = Enroll("a");
  }

  // A key in the TPM and a certificate for it, saved like the agent does.
  Identity Enroll(const std::string& name) {
    Identity id;
    id.name = name;
    id.thing = "thing-" + name;
    id.state = EnrollmentState::kActive;
    auto dir = dir_ / name;
    std::filesystem::create_directories(dir);
    id.key_file = (dir / "key.tss2").string();
    id.cert_file = (dir / "cert.pem").string();
    id.chain_file = (dir / "chain.pem").string();
    auto blob = tpm_->CreateKey();
    EXPECT_TRUE(blob.ok()) << blob.status().ToString();
    EXPECT_TRUE(blob->WriteFile(id.key_file).ok());
    auto key = tpm::MakeEvpPkey(tpm_, *blob);
    auto csr = tpm::MakeCsr(key->get(), "CN=" + id.thing);
    EXPECT_TRUE(csr.ok()) << csr.status().ToString();
    auto issued = ca_->Issue(csr->get(), id.thing);
    EXPECT_TRUE(issued.ok()) << issued.status().ToString();
    WriteText(id.cert_file, *issued->CertPem());
    WriteText(id.chain_file, *issued->ChainPem());
    return id;
  }

  IdentityFileCheck::Problem Inspect(const Identity& id, Millis now = NowMillis()) {
    auto r = InspectIdentityFiles(id, tpm_, now);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok() && r->problem != IdentityFileCheck::kNone) detail_ = r->detail;
    return r.ok() ? r->problem : IdentityFileCheck::kNone;
  }

  TempDir dir_;
  std::unique_ptr<Swtpm> swtpm_;
  std::shared_ptr<tpm::TpmContext> tpm_;
  std::unique_ptr<pki::LocalCa> ca_;
  Identity identity_;
  std::string detail_;
};

TEST_F(InspectIdentity, EnrolledFilesAreFine) {
  EXPECT_EQ(Inspect(identity_), IdentityFileCheck::kNone);
  Identity keyed = identity_;
  keyed.state = EnrollmentState::kKeyed;
  keyed.cert_file.clear();
  keyed.chain_file.clear();
  EXPECT_EQ(Inspect(keyed), IdentityFileCheck::kNone);
}

TEST_F(InspectIdentity, KeyMissing) {
  std::filesystem::remove(identity_.key_file);
  EXPECT_EQ(Inspect(identity_), IdentityFileCheck::kKeyMissing);
  EXPECT_NE(detail_.find(identity_.key_file), std::string::npos) << detail_;
}

TEST_F(InspectIdentity, KeyFromAnotherTpmIsUnusable) {
  auto other = Swtpm::Start();
  ASSERT_TRUE(other.ok());
  auto tpm = tpm::TpmContext::Open({(*other)->tcti(), kDefaultSrkHandle});
  ASSERT_TRUE(tpm.ok());
  auto blob = (*tpm)->CreateKey();
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(blob->WriteFile(identity_.key_file, /*overwrite=*/true).ok());
  EXPECT_EQ(Inspect(identity_), IdentityFileCheck::kKeyUnusable) << detail_;

  WriteText(identity_.key_file, "not a key");
  EXPECT_EQ(Inspect(identity_), IdentityFileCheck::kKeyUnusable);
}

TEST_F(InspectIdentity, CertificateMissingOrOfAnotherKey) {
  Identity b = Enroll("b");
  std::filesystem::copy_file(b.cert_file, identity_.cert_file,
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(Inspect(identity_), IdentityFileCheck::kCertMismatch);

  // The chain is what connections present: a wrong leaf there is found too.
  Identity chain_only = Enroll("c");
  std::filesystem::copy_file(b.chain_file, chain_only.chain_file,
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(Inspect(chain_only), IdentityFileCheck::kCertMismatch);

  std::filesystem::remove(b.cert_file);
  EXPECT_EQ(Inspect(b), IdentityFileCheck::kCertMissing);
}

TEST_F(InspectIdentity, ValidityWindow) {
  const Millis day = 24LL * 3600 * 1000;
  const Millis now = NowMillis();
  // Issued now for 365 days (notBefore 5 minutes back).
  EXPECT_EQ(Inspect(identity_, now - day), IdentityFileCheck::kCertNotYetValid);
  EXPECT_EQ(Inspect(identity_, now + 100 * day), IdentityFileCheck::kNone);
  EXPECT_EQ(Inspect(identity_, now + 300 * day), IdentityFileCheck::kCertExpiringSoon);
  EXPECT_EQ(Inspect(identity_, now + 340 * day), IdentityFileCheck::kCertExpiringSoon);
  EXPECT_EQ(Inspect(identity_, now + 366 * day), IdentityFileCheck::kCertExpired);
}

TEST_F(InspectIdentity, WithoutATpmItCannotTell) {
  swtpm_->Kill();
  auto r = InspectIdentityFiles(identity_, tpm_, NowMillis());
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(InspectIdentityFiles(identity_, nullptr, NowMillis()).ok());
}

// The managed broker restarted with its ACLs not enforced (the plugin lets a
// client publish where its role grants nothing): `check` fails on it and the
// running agent warns, until it is fixed.
TEST_F(Check, ABrokerThatDoesNotConfineClientsIsFoundByCheckAndTheAgent) {
  int code = -1;
  auto doc = CheckJson(&code);
  ASSERT_EQ(ResultOf(doc, "local broker"), "ok") << last_output_;
  EXPECT_NE(last_output_.find("and a publish outside a client's own topics"), std::string::npos)
      << last_output_;

  // defaultACLAccess.publishClientSend: what applies where no role says.
  auto set_default_publish = [&](bool allow) {
    ASSERT_TRUE(h().broker().process().Signal(SIGTERM, 10s).has_value());
    const std::filesystem::path file = h().BrokerDir() / "dynamic-security.json";
    std::ifstream in(file);
    auto state = nlohmann::json::parse(in);
    in.close();
    state["defaultACLAccess"]["publishClientSend"] = allow;
    std::ofstream(file) << state.dump(1, '\t');
    ASSERT_TRUE(h().broker().Restart().ok());
  };
  auto warnings = [&] {
    auto status = nlohmann::json::parse(h().StatusJson(), nullptr, false);
    return status.is_object() ? status["health"]["warnings"].dump() : std::string();
  };
  set_default_publish(true);
  // Probed again once the agent is back on the broker (within ~10 s).
  EXPECT_TRUE(WaitUntil(
      [&] { return warnings().find("does not confine clients") != std::string::npos; }, 60s))
      << warnings() << "\n"
      << RunCommand({"tail", "-20", (h().dir() / "agent.log").string()}).output;
  doc = CheckJson(&code);
  EXPECT_EQ(ResultOf(doc, "local broker"), "error") << last_output_;
  EXPECT_NE(last_output_.find("publishClientSend must be false"), std::string::npos)
      << last_output_;
  EXPECT_EQ(code, 1) << last_output_;

  set_default_publish(false);
  EXPECT_TRUE(WaitUntil([&] { return warnings() == "[]" || warnings() == "null"; }, 60s))
      << warnings();
  ExpectCheck("local broker", "ok", 0);
}

// A broker that lets anonymous clients in is a warning: any LAN client could
// publish as any sensor.
TEST(CheckBoundary, AnOpenLocalBrokerIsAWarningSayingWhatToDo) {
  HarnessOptions o;
  o.sensors = 0;  // the test broker of the other tests: anonymous access allowed
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  CommandResult r = (*h)->Cli({"check"});
  EXPECT_NE(r.output.find("lets anonymous clients in: any client on the LAN can publish as any "
                          "sensor"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("gateway-agent local-broker init"), std::string::npos) << r.output;

  // The running agent says so in its log too.
  ASSERT_TRUE((*h)->StartAgent().ok());
  auto log = [&] { return RunCommand({"cat", ((*h)->dir() / "agent.log").string()}).output; };
  bool warned = false;
  for (int i = 0; i < 150 && !warned; ++i) {
    warned = log().find("lets anonymous clients in") != std::string::npos;
    if (!warned) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(warned) << log();

  // And `status`: a warning, not a problem (everything flows, exit 0).
  nlohmann::json health;
  for (int i = 0; i < 100 && !health.contains("warnings"); ++i) {
    CommandResult status = (*h)->Cli({"status", "--json"});
    auto doc = nlohmann::json::parse(status.output, nullptr, /*allow_exceptions=*/false);
    if (status.exit_code == 0 && doc.is_object() && !doc["health"]["warnings"].empty()) {
      health = doc["health"];
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  ASSERT_TRUE(health.contains("warnings")) << (*h)->Cli({"status", "--json"}).output;
  EXPECT_TRUE(health["ok"].get<bool>()) << health.dump();
  ASSERT_EQ(health["warnings"].size(), 1u) << health.dump();
  EXPECT_NE(health["warnings"][0].get<std::string>().find("lets anonymous clients in"),
            std::string::npos)
      << health.dump();
  CommandResult text = (*h)->Cli({"status"});
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("warning: the local broker"), std::string::npos) << text.output;
  EXPECT_TRUE((*h)->agent().Signal(SIGTERM, std::chrono::seconds(20)).has_value());
  Status violations = (*h)->NoViolations();
  EXPECT_TRUE(violations.ok()) << violations.ToString();
}

}  // namespace
}  // namespace ga::testing
