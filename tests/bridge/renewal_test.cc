// Certificate renewal end to end: swtpm, mosquitto, iot-sim with the shipped
// Lambda (JITR of the renewed certificate onto the same thing, retirement of
// the previous one), and the agent renewing while messages flow.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "bridge_harness.h"
#include "gateway_agent/tpm/tpm_context.h"

namespace ga::testing {
namespace {

using namespace std::chrono_literals;

int Renewals(const std::string& status, const std::string& name) {
  Json id = StatusOf(status, name);
  if (!id.contains("renewal")) return 0;
  const Json& r = id["renewal"];
  bool settled = r.value("step", "") == "none" && r.value("retiringCertificateId", "").empty();
  return settled ? r.value("renewals", 0) : 0;
}

Json AwsJson(IotSim& sim, const std::vector<std::string>& args) {
  auto r = sim.Aws(args);
  return Json::parse(r.output, nullptr, false);
}

// After the agent stopped: no transient object left in the TPM (swtpm has no
// resource manager to flush what a process forgot).
void ExpectNoTransientObjects(AgentHarness& h) {
  auto tpm = tpm::TpmContext::Open({h.tpm().tcti(), kDefaultSrkHandle});
  ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
  auto handles = (*tpm)->TransientHandles();
  ASSERT_TRUE(handles.ok()) << handles.status().ToString();
  EXPECT_TRUE(handles->empty()) << handles->size() << " transient object(s) left";
}

TEST(Renewal, GatewayAndSensorsRenewTwiceWhileMessagesFlowAndOldCertificatesAreRetired) {
  HarnessOptions o;
  o.sensors = 2;
  o.over_gateway = {2};  // s2 rides on the gateway's connection (and certificate)
  o.validity = "1m";
  o.extra_config = "[renewal]\nthreshold = 0.4\nretry_initial = \"1s\"\nretry_max = \"5s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);

  LocalClient sensor((*h)->broker().port(), "renewal-test");
  ASSERT_TRUE(sensor.connected());
  // ~100 messages a second (50 per sensor) until gateway and s1 have renewed twice.
  int sent = 0;
  auto deadline = std::chrono::steady_clock::now() + 150s;
  bool renewed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 50; ++i, ++sent) {
      ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(sent)));
      ASSERT_TRUE(sensor.Publish("sensors/s2/seq", std::to_string(sent)));
      std::this_thread::sleep_for(20ms);
    }
    std::string status = (*h)->StatusJson();
    if (Renewals(status, "gateway") >= 2 && Renewals(status, "s1") >= 2) {
      renewed = true;
      break;
    }
  }
  ASSERT_TRUE(renewed) << (*h)->StatusJson() << "\n" << Log(**h);

  // Every message arrives (a resend after a switch may repeat one: counted).
  std::vector<CloudMessage> got;
  WaitForCloudCount((*h)->sim(), static_cast<size_t>(2 * sent), 60s, &got, /*distinct=*/true);
  std::map<std::string, std::set<std::string>> seen;
  size_t repeats = 0;
  for (const auto& m : got) {
    if (!seen[m.topic].insert(m.payload_b64).second) ++repeats;
  }
  for (const std::string topic : {"dt/gw-test:s1/seq", "dt/gw-test:s2/seq"}) {
    EXPECT_EQ(seen[topic].size(), static_cast<size_t>(sent)) << topic;
    for (int n = 0; n < sent; ++n) {
      if (!seen[topic].count(Base64(std::to_string(n)))) {
        ADD_FAILURE() << topic << ": message " << n << " never arrived";
        break;
      }
    }
  }
  std::printf("[ figures  ] %d messages per sensor, %zu repeats, over %d renewals\n", sent, repeats,
              4);

  // In AWS: each thing has exactly one certificate attached, the one in use,
  // ACTIVE; every earlier one is INACTIVE and attached to nothing.
  std::string status = (*h)->StatusJson();
  std::set<std::string> in_use;
  for (const auto& [name, thing] :
       {std::pair<std::string, std::string>{"gateway", "gw-test"}, {"s1", "gw-test:s1"}}) {
    std::string id = StatusOf(status, name).value("certificateId", "");
    in_use.insert(id);
    Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", thing});
    ASSERT_TRUE(principals.contains("principals")) << principals.dump();
    ASSERT_EQ(principals["principals"].size(), 1u) << thing << ": " << principals.dump();
    EXPECT_NE(principals["principals"][0].get<std::string>().find(id), std::string::npos);
  }
  Json certs = AwsJson((*h)->sim(), {"list-certificates"});
  ASSERT_TRUE(certs.contains("certificates")) << certs.dump();
  int active = 0, inactive = 0;
  for (const auto& c : certs["certificates"]) {
    std::string id = c.value("certificateId", "");
    std::string state = c.value("status", "");
    if (in_use.count(id)) {
      EXPECT_EQ(state, "ACTIVE") << id;
      ++active;
    } else {
      EXPECT_EQ(state, "INACTIVE") << id;
      ++inactive;
    }
  }
  EXPECT_EQ(active, 2);
  EXPECT_GE(inactive, 4);  // two renewals each for the gateway and s1

  // One key blob per identity on disk.
  for (const std::string name : {"gateway", "s1"}) {
    int blobs = 0;
    for (const auto& e :
         std::filesystem::directory_iterator((*h)->state_dir() / "identities" / name)) {
      if (e.path().extension() == ".tss2") ++blobs;
    }
    EXPECT_EQ(blobs, 1) << name;
  }
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
  ExpectNoTransientObjects(**h);
}

// SIGKILL at every step of one renewal, the agent started again after each:
// the renewal resumes and ends as one without crashes would. (Asked for with
// `renew`: certificates short enough to renew by themselves would start a
// second renewal, rightly with two ACTIVE certificates, while this one is
// checked.)
TEST(Renewal, KilledAtEveryStepItResumesToTheSameEndState) {
  HarnessOptions o;
  o.sensors = 1;
  o.extra_config = "[renewal]\nretry_initial = \"1s\"\nretry_max = \"5s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  const std::string first_id = StatusOf((*h)->StatusJson(), "s1").value("certificateId", "");
  for (const char* point : {"key-created", "renew-keyed", "cert-issued", "renew-certified",
                            "renew-proving", "renew-connected", "renew-switched"}) {
    ASSERT_TRUE((*h)->StartAgent({{"GATEWAY_AGENT_CRASH_AT", std::string(point) + ":s1"}}).ok());
    if (std::string(point) == "key-created") {  // once the control socket is up
      auto until = std::chrono::steady_clock::now() + 30s;
      while ((*h)->Cli({"renew", "--identity", "s1"}).exit_code != 0 &&
             std::chrono::steady_clock::now() < until && (*h)->agent().running()) {
        std::this_thread::sleep_for(100ms);
      }
    }
    auto end = (*h)->agent().Wait(90s);
    ASSERT_TRUE(end.has_value()) << point << " never reached\n" << Log(**h);
    EXPECT_TRUE(WIFSIGNALED(*end) && WTERMSIG(*end) == SIGKILL) << point;
  }
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForStatus([](const std::string& s) { return Renewals(s, "s1") >= 1; }, 60s,
                                  &status))
      << status << "\n"
      << Log(**h);
  Json s1 = StatusOf(status, "s1");
  EXPECT_EQ(s1["renewal"].value("renewals", 0), 1) << status;  // one renewal, not one per restart
  std::string now_id = s1.value("certificateId", "");
  EXPECT_NE(now_id, first_id);
  Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", "gw-test:s1"});
  ASSERT_TRUE(principals.contains("principals")) << principals.dump();
  ASSERT_EQ(principals["principals"].size(), 1u) << principals.dump();
  EXPECT_NE(principals["principals"][0].get<std::string>().find(now_id), std::string::npos);
  // No orphan left ACTIVE: of s1's certificates only the one in use is.
  Json certs = AwsJson((*h)->sim(), {"list-certificates"});
  int s1_active = 0;
  for (const auto& c : certs["certificates"]) {
    std::string id = c.value("certificateId", "");
    if (c.value("status", "") == "ACTIVE" &&
        id != StatusOf(status, "gateway").value("certificateId", "")) {
      ++s1_active;
      EXPECT_EQ(id, now_id);
    }
  }
  EXPECT_EQ(s1_active, 1);
  int blobs = 0;
  for (const auto& e :
       std::filesystem::directory_iterator((*h)->state_dir() / "identities" / "s1")) {
    if (e.path().extension() == ".tss2") ++blobs;
  }
  EXPECT_EQ(blobs, 1);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
  ExpectNoTransientObjects(**h);
}

// Certificates that expired while the agent was stopped (a gateway powered
// off for longer than their validity; AWS IoT refuses them): at start each
// identity renews at once by the same path, JITR puts the new certificate on
// the same thing, and messages flow again, with nobody on site.
TEST(Renewal, CertificatesThatExpiredWhileStoppedAreRenewedAtStart) {
  HarnessOptions o;
  o.sensors = 1;
  o.validity = "1m";
  o.extra_config = "[renewal]\nthreshold = 0.95\nretry_initial = \"1s\"\nretry_max = \"5s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  std::string before = (*h)->StatusJson();
  std::map<std::string, std::string> old_ids;
  for (const std::string name : {"gateway", "s1"}) {
    old_ids[name] = StatusOf(before, name).value("certificateId", "");
  }
  // Past both certificates' notAfter (a minute after issue, before ACTIVE).
  std::this_thread::sleep_for(62s);
  Json expired = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_ids["s1"]});
  ASSERT_EQ(expired["certificateDescription"].value("status", ""), "ACTIVE") << expired.dump();
  // Never a clean ACTIVE meanwhile: status names the expired certificate and
  // exits non-zero.
  auto shown = (*h)->Cli({"status", "--json"});
  EXPECT_NE(shown.exit_code, 0) << shown.output;
  for (const std::string name : {"gateway", "s1"}) {
    EXPECT_NE(StatusOf(shown.output, name).value("problem", "").find("expired on"),
              std::string::npos)
        << name << ": " << shown.output;
  }

  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string status;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) { return Renewals(s, "gateway") >= 1 && Renewals(s, "s1") >= 1; },
      90s, &status))
      << status << "\n"
      << Log(**h);
  EXPECT_NE(Log(**h).find("(expired)"), std::string::npos);
  for (const auto& [name, thing] :
       {std::pair<std::string, std::string>{"gateway", "gw-test"}, {"s1", "gw-test:s1"}}) {
    Json now = StatusOf(status, name);
    std::string id = now.value("certificateId", "");
    EXPECT_NE(id, old_ids[name]) << name;
    Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", thing});
    ASSERT_TRUE(principals.contains("principals")) << principals.dump();
    ASSERT_EQ(principals["principals"].size(), 1u) << thing << ": " << principals.dump();
    EXPECT_NE(principals["principals"][0].get<std::string>().find(id), std::string::npos);
    Json old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_ids[name]});
    EXPECT_EQ(old["certificateDescription"].value("status", ""), "INACTIVE") << old.dump();
  }
  // And the sensor's messages reach the cloud again.
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) { return StatusOf(s, "s1").value("connected", false); }, 30s))
      << (*h)->StatusJson();
  LocalClient sensor((*h)->broker().port(), "expiry-test");
  ASSERT_TRUE(sensor.connected());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(i)));
  std::vector<CloudMessage> got;
  EXPECT_TRUE(WaitForCloudCount((*h)->sim(), 20, 30s, &got)) << got.size();
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// The retire rule's Lambda down (here: its topic rule deleted) while an
// identity renews: the new certificate is proven and serves, the previous one
// stays ACTIVE with the reason in status, its retirement is asked for again
// later, and once the Lambda is back it is retired. No message is lost.
TEST(Renewal, WithTheRetireLambdaDownRetirementIsRetriedAndTrafficFlows) {
  HarnessOptions o;
  o.sensors = 1;
  o.extra_config = "[renewal]\nretry_initial = \"2s\"\nretry_max = \"4s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  const std::string old_id = StatusOf((*h)->StatusJson(), "s1").value("certificateId", "");
  auto deleted = (*h)->sim().Aws({"delete-topic-rule", "--rule-name", "gateway_agent_retire"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.output;

  LocalClient sensor((*h)->broker().port(), "retire-down-test");
  ASSERT_TRUE(sensor.connected());
  int sent = 0;
  auto publish_for = [&](std::chrono::milliseconds d) {
    auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) {
      EXPECT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(sent++)));
      std::this_thread::sleep_for(50ms);
    }
  };
  publish_for(1s);
  auto asked = (*h)->Cli({"renew", "--identity", "s1"});
  ASSERT_EQ(asked.exit_code, 0) << asked.output;
  std::string status;
  auto waiting = [&](const std::string& s) {
    Json r = StatusOf(s, "s1")["renewal"];
    return r.value("renewals", 0) == 1 && r.value("retiringCertificateId", "") == old_id &&
           !r.value("error", "").empty();
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!waiting(status = (*h)->StatusJson()) && std::chrono::steady_clock::now() < deadline) {
    publish_for(500ms);
  }
  ASSERT_TRUE(waiting(status)) << status << "\n" << Log(**h);
  const std::string new_id = StatusOf(status, "s1").value("certificateId", "");
  EXPECT_NE(new_id, old_id);
  Json old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_id});
  EXPECT_EQ(old["certificateDescription"].value("status", ""), "ACTIVE") << old.dump();
  auto text = (*h)->Cli({"status"});
  EXPECT_NE(text.output.find("not retired yet"), std::string::npos) << text.output;
  publish_for(3s);  // at least one more attempt while it is down

  ASSERT_TRUE((*h)->sim().CreateJitrRule((*h)->ca_id()).ok());
  deadline = std::chrono::steady_clock::now() + 60s;
  while (Renewals(status = (*h)->StatusJson(), "s1") != 1 &&
         std::chrono::steady_clock::now() < deadline) {
    publish_for(500ms);
  }
  ASSERT_EQ(Renewals(status, "s1"), 1) << status << "\n" << Log(**h);
  old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_id});
  EXPECT_EQ(old["certificateDescription"].value("status", ""), "INACTIVE") << old.dump();
  Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", "gw-test:s1"});
  ASSERT_TRUE(principals.contains("principals")) << principals.dump();
  ASSERT_EQ(principals["principals"].size(), 1u) << principals.dump();
  EXPECT_NE(principals["principals"][0].get<std::string>().find(new_id), std::string::npos);

  std::vector<CloudMessage> got;
  WaitForCloudCount((*h)->sim(), static_cast<size_t>(sent), 60s, &got, /*distinct=*/true);
  std::set<std::string> seen;
  for (const auto& m : got) seen.insert(m.payload_b64);
  EXPECT_EQ(seen.size(), static_cast<size_t>(sent));
  // What a retirement attempt costs the identity's traffic: the proving
  // connection takes the client id while it waits for the Lambda's answer.
  int64_t last = 0, largest_gap = 0;
  for (const Json& p : SimPublishes((*h)->sim())) {
    if (Str(p, "topic") != "dt/gw-test:s1/seq") continue;
    int64_t t = p.value("time", int64_t{0});
    if (last) largest_gap = std::max(largest_gap, t - last);
    last = t;
  }
  std::printf("[ figures  ] %d messages, %zu distinct arrived, largest gap %lld ms\n", sent,
              seen.size(), static_cast<long long>(largest_gap));
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// AWS IoT unreachable (iot-sim stopped) when a renewal starts: the new key and
// certificate are made, the connects with it fail and are retried, status
// shows why, the certificate in use stays; once the endpoint is back the
// renewal completes and the messages queued meanwhile arrive.
TEST(Renewal, WithAwsIotDownTheRenewalWaitsAndCompletesWhenItIsBack) {
  HarnessOptions o;
  o.sensors = 1;
  o.extra_config = "[renewal]\nretry_initial = \"1s\"\nretry_max = \"3s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  const std::string old_id = StatusOf((*h)->StatusJson(), "s1").value("certificateId", "");
  (*h)->sim().process().Stop();

  auto asked = (*h)->Cli({"renew", "--identity", "s1"});
  ASSERT_EQ(asked.exit_code, 0) << asked.output;
  std::string status;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) {
        Json r = StatusOf(s, "s1")["renewal"];
        return r.value("step", "") == "certified" && !r.value("error", "").empty();
      },
      60s, &status))
      << status << Log(**h);
  EXPECT_EQ(StatusOf(status, "s1").value("certificateId", ""), old_id);  // still in use
  LocalClient sensor((*h)->broker().port(), "aws-down-test");
  ASSERT_TRUE(sensor.connected());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(i)));

  ASSERT_TRUE((*h)->sim().Restart().ok());
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) {
        return Renewals(s, "s1") == 1 && StatusOf(s, "s1").value("connected", false);
      },
      90s, &status))
      << status << Log(**h);
  EXPECT_NE(StatusOf(status, "s1").value("certificateId", ""), old_id);
  Json old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_id});
  EXPECT_EQ(old["certificateDescription"].value("status", ""), "INACTIVE") << old.dump();
  std::vector<CloudMessage> got;
  EXPECT_TRUE(WaitForCloudCount((*h)->sim(), 20, 30s, &got)) << got.size();
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// An operator revokes a sensor's certificate in AWS IoT: the agent sees its
// connects turned away while the gateway's connection works, PARKS the
// sensor with the reason and does not renew it behind the operator's back
// (the JITR Lambda would not activate a new certificate either while the
// revoked one is attached). Once the operator has detached it,
// `renew --force` brings the sensor back with a new certificate.
TEST(Renewal, ACertificateAnOperatorRevokedParksTheIdentityAndForceRenewsIt) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) {
        return StatusOf(s, "gateway").value("connected", false) &&
               StatusOf(s, "s1").value("connected", false);
      },
      60s))
      << (*h)->StatusJson() << Log(**h);
  const std::string old_id = StatusOf((*h)->StatusJson(), "s1").value("certificateId", "");
  auto revoked = (*h)->sim().Aws(
      {"update-certificate", "--certificate-id", old_id, "--new-status", "REVOKED"});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.output;

  std::string status;
  ASSERT_TRUE((*h)->WaitForState("PARKED", 1, 90s, &status)) << status << Log(**h);
  Json s1 = StatusOf(status, "s1");
  EXPECT_EQ(s1.value("state", ""), "PARKED") << status;
  EXPECT_NE(s1.value("parkReason", "").find(old_id), std::string::npos) << status;
  EXPECT_NE(s1.value("parkReason", "").find("--force"), std::string::npos) << status;
  EXPECT_EQ(StatusOf(status, "gateway").value("state", ""), "ACTIVE");
  EXPECT_EQ(s1["renewal"].value("renewals", -1), 0);
  auto text = (*h)->Cli({"status"});
  EXPECT_NE(text.output.find("PARKED"), std::string::npos) << text.output;
  // No new certificate was asked for behind the operator's back.
  Json certs = AwsJson((*h)->sim(), {"list-certificates"});
  EXPECT_EQ(certs["certificates"].size(), 2u) << certs.dump();

  auto plain = (*h)->Cli({"renew", "--identity", "s1"});
  EXPECT_EQ(plain.exit_code, 1) << plain.output;
  EXPECT_NE(plain.output.find("--force"), std::string::npos) << plain.output;

  // The operator settles it: the revoked certificate detached from the thing.
  auto detached =
      (*h)->sim().Aws({"detach-thing-principal", "--thing-name", "gw-test:s1", "--principal",
                       "arn:aws:iot:us-east-1:123456789012:cert/" + old_id});
  ASSERT_EQ(detached.exit_code, 0) << detached.output;
  auto forced = (*h)->Cli({"renew", "--identity", "s1", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) {
        Json id = StatusOf(s, "s1");
        return id.value("state", "") == "ACTIVE" && id.value("connected", false) &&
               Renewals(s, "s1") == 1;
      },
      90s, &status))
      << status << Log(**h);
  const std::string new_id = StatusOf(status, "s1").value("certificateId", "");
  EXPECT_NE(new_id, old_id);
  Json old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_id});
  EXPECT_EQ(old["certificateDescription"].value("status", ""), "REVOKED") << old.dump();
  Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", "gw-test:s1"});
  ASSERT_EQ(principals["principals"].size(), 1u) << principals.dump();
  EXPECT_NE(principals["principals"][0].get<std::string>().find(new_id), std::string::npos);

  LocalClient sensor((*h)->broker().port(), "revoked-test");
  ASSERT_TRUE(sensor.connected());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(i)));
  std::vector<CloudMessage> got;
  EXPECT_TRUE(WaitForCloudCount((*h)->sim(), 10, 30s, &got)) << got.size();
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// `gateway-agent renew` renews now, through the running agent.
TEST(Renewal, TheRenewCommandRenewsNowWithANewKey) {
  HarnessOptions o;
  o.sensors = 1;
  o.extra_config = "[renewal]\nrekey = false\n";  // --rekey overrides it
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  Json before = StatusOf((*h)->StatusJson(), "s1");
  EXPECT_FALSE(before["renewal"].value("renewsAt", "").empty()) << before.dump();

  auto neither = (*h)->Cli({"renew"});
  EXPECT_EQ(neither.exit_code, 1) << neither.output;
  EXPECT_NE(neither.output.find("give --identity NAME or --all"), std::string::npos);
  auto unknown = (*h)->Cli({"renew", "--identity", "nosuch"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_NE(unknown.output.find("nosuch"), std::string::npos) << unknown.output;

  auto asked = (*h)->Cli({"renew", "--identity", "s1", "--rekey"});
  ASSERT_EQ(asked.exit_code, 0) << asked.output;
  EXPECT_NE(asked.output.find("s1: renewing certificate"), std::string::npos) << asked.output;
  std::string status;
  ASSERT_TRUE((*h)->WaitForStatus([](const std::string& s) { return Renewals(s, "s1") == 1; }, 60s,
                                  &status))
      << status << "\n"
      << Log(**h);
  Json after = StatusOf(status, "s1");
  EXPECT_NE(after.value("keyFile", ""), before.value("keyFile", ""));  // a new TPM key
  EXPECT_NE(after.value("certificateId", ""), before.value("certificateId", ""));
  Json old = AwsJson(
      (*h)->sim(), {"describe-certificate", "--certificate-id", before.value("certificateId", "")});
  EXPECT_EQ(old["certificateDescription"].value("status", ""), "INACTIVE") << old.dump();
  EXPECT_EQ(Renewals(status, "gateway"), 0);  // only the one asked for
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// CA rollover: a second CA (`ca init`, registered with AWS IoT, its JITR rule)
// named in [ca] and the agent reloaded while messages flow: every identity
// renews onto it ahead of its schedule, the gateway first; each asks over its
// current connection for its thing to be handed over to the new CA (the
// Lambda refuses a certificate of another CA than the thing's otherwise),
// then retires its certificate of the old CA. Nothing is lost; each thing
// ends with one ACTIVE certificate, of the new CA.
TEST(Renewal, ANewCaInTheConfigurationEveryIdentityRenewsOntoItAndItsThingIsHandedOver) {
  HarnessOptions o;
  o.sensors = 2;
  o.over_gateway = {2};
  // A CA that ends in a day: the certificates (30 days asked) end with it,
  // and are due at once (20 days before their end).
  o.ca_days = 1;
  o.extra_config = "[renewal]\nbefore = \"20d\"\nretry_initial = \"1s\"\nretry_max = \"5s\"\n";
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 60s)) << Log(**h);
  // Renewing from that CA would gain nothing: no renewal, and status and
  // check say why.
  std::string ending;
  ASSERT_TRUE((*h)->WaitForStatus(
      [](const std::string& s) {
        for (const std::string name : {"gateway", "s1"}) {
          if (StatusOf(s, name)["renewal"].value("error", "").find("ends with CA") ==
              std::string::npos) {
            return false;
          }
        }
        return true;
      },
      30s, &ending))
      << ending << "\n"
      << Log(**h);
  EXPECT_EQ(Renewals(ending, "gateway") + Renewals(ending, "s1"), 0);
  auto check = (*h)->Cli({"check"});
  EXPECT_NE(check.output.find("\u26a0 local ca"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("certificate ends with the CA"), std::string::npos) << check.output;
  const std::string before = (*h)->StatusJson();

  auto ca2_id = (*h)->MakeSecondCa();
  ASSERT_TRUE(ca2_id.ok()) << ca2_id.status().ToString();

  LocalClient sensor((*h)->broker().port(), "rollover-test");
  ASSERT_TRUE(sensor.connected());
  int sent = 0;
  auto publish = [&](int n) {
    for (int i = 0; i < n; ++i, ++sent) {
      ASSERT_TRUE(sensor.Publish("sensors/s1/seq", std::to_string(sent)));
      ASSERT_TRUE(sensor.Publish("sensors/s2/seq", std::to_string(sent)));
      std::this_thread::sleep_for(20ms);
    }
  };
  publish(50);
  (*h)->UseSecondCa();
  ASSERT_TRUE((*h)->agent().Signal(SIGHUP, 0s) == std::nullopt);  // reloads, runs on
  bool moved = false;
  const auto reloaded = std::chrono::steady_clock::now();
  auto deadline = reloaded + 120s;
  while (!moved && std::chrono::steady_clock::now() < deadline) {
    publish(50);
    std::string s = (*h)->StatusJson();
    moved = Renewals(s, "gateway") == 1 && Renewals(s, "s1") == 1;
  }
  ASSERT_TRUE(moved) << (*h)->StatusJson() << "\n" << Log(**h);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - reloaded).count();
  publish(50);

  std::vector<CloudMessage> got;
  WaitForCloudCount((*h)->sim(), static_cast<size_t>(2 * sent), 60s, &got, /*distinct=*/true);
  std::map<std::string, std::set<std::string>> seen;
  for (const auto& m : got) seen[m.topic].insert(m.payload_b64);
  for (const std::string topic : {"dt/gw-test:s1/seq", "dt/gw-test:s2/seq"}) {
    EXPECT_EQ(seen[topic].size(), static_cast<size_t>(sent)) << topic;
  }
  std::printf(
      "[ figures  ] gateway and s1 on the new CA %.1f s after the reload; %d messages "
      "per sensor, %zu arrived\n",
      took, sent, got.size());

  const std::string log = Log(**h);
  EXPECT_EQ(log.find("refused"), std::string::npos) << log;  // the gateway went first
  const std::string status = (*h)->StatusJson();
  for (const auto& [name, thing] :
       {std::pair<std::string, std::string>{"gateway", "gw-test"}, {"s1", "gw-test:s1"}}) {
    const std::string id = StatusOf(status, name).value("certificateId", "");
    Json cert = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", id});
    EXPECT_EQ(cert["certificateDescription"].value("caCertificateId", ""), *ca2_id) << name;
    EXPECT_EQ(cert["certificateDescription"].value("status", ""), "ACTIVE") << name;
    Json t = AwsJson((*h)->sim(), {"describe-thing", "--thing-name", thing});
    EXPECT_EQ(t["attributes"].value("caCertificateId", ""), *ca2_id) << t.dump();
    Json principals = AwsJson((*h)->sim(), {"list-thing-principals", "--thing-name", thing});
    ASSERT_EQ(principals["principals"].size(), 1u) << thing << ": " << principals.dump();
    const std::string old_id = StatusOf(before, name).value("certificateId", "");
    Json old = AwsJson((*h)->sim(), {"describe-certificate", "--certificate-id", old_id});
    EXPECT_EQ(old["certificateDescription"].value("status", ""), "INACTIVE") << old.dump();
  }
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
  ExpectNoTransientObjects(**h);
}

// An identity not accepted yet when the CA changes (here: no JITR rule took
// its registration event) gets a certificate from the new CA, for the same
// key, and is accepted with it.
TEST(Renewal, AnIdentityNotAcceptedYetWhenTheCaChangesGetsACertificateOfTheNewCa) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE(
      (*h)->sim().Aws({"delete-topic-rule", "--rule-name", "gateway_agent_jitr"}).exit_code == 0);
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("REGISTERING", 2, 60s)) << Log(**h);
  const std::string before = (*h)->StatusJson();
  auto ca2_id = (*h)->MakeSecondCa();
  ASSERT_TRUE(ca2_id.ok()) << ca2_id.status().ToString();
  (*h)->UseSecondCa();
  ASSERT_TRUE((*h)->agent().Signal(SIGHUP, 0s) == std::nullopt);
  std::string status;
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s, &status)) << status << "\n" << Log(**h);
  for (const std::string name : {"gateway", "s1"}) {
    Json now = StatusOf(status, name);
    EXPECT_EQ(now.value("keyFile", ""), StatusOf(before, name).value("keyFile", "")) << name;
    Json cert = AwsJson(
        (*h)->sim(), {"describe-certificate", "--certificate-id", now.value("certificateId", "")});
    EXPECT_EQ(cert["certificateDescription"].value("caCertificateId", ""), *ca2_id) << name;
  }
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

// A clock before the agent's build (a gateway booted without its time): the
// agent says so and exits as a transient failure (systemd starts it again),
// never as one that needs an operator; with the clock right it enrolls.
TEST(Clock, BeforeTheBuildTheAgentWaitsForATrustworthyClock) {
  HarnessOptions o;
  o.sensors = 0;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // libfaketime (Debian's faketime) sets the agent's wall clock to 2020.
  ASSERT_TRUE(
      (*h)->StartAgent({{"LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"},
                        {"FAKETIME", "@2020-01-01 00:00:00"},
                        {"DONT_FAKE_MONOTONIC", "1"},
                        {"ASAN_OPTIONS", "verify_asan_link_order=0"}})
          .ok());
  auto end = (*h)->agent().Wait(30s);
  ASSERT_TRUE(end.has_value()) << Log(**h);
  EXPECT_TRUE(WIFEXITED(*end) && WEXITSTATUS(*end) == 1) << *end << "\n" << Log(**h);
  std::string log = Log(**h);
  EXPECT_NE(log.find("waiting for a trustworthy clock"), std::string::npos) << log;
  EXPECT_NE(log.find("systemd-time-wait-sync"), std::string::npos) << log;
  EXPECT_EQ(log.find("not retried"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists((*h)->state_dir() / "identities" / "gateway" / "cert.pem"));

  ASSERT_TRUE((*h)->StartAgent().ok());  // the clock is right again
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 1, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
