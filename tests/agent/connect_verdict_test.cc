#include "gateway_agent/agent/connect_verdict.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

namespace ga {
namespace {

using namespace std::chrono_literals;
using Action = ConnectVerdict::Action;

class ClassifyTest : public ::testing::Test {
 protected:
  ClassifyTest() {
    aws_.endpoint = "abc-ats.iot.eu-west-1.amazonaws.com";
    aws_.port = 8883;
    aws_.root_ca = "/etc/gateway-agent/AmazonRootCA1.pem";
  }

  ConnectVerdict Of(ConnectOutcome outcome, std::string detail, int tls_alert = -1,
                    bool name_not_found = false) {
    ConnectAttempt a;
    a.outcome = outcome;
    a.detail = std::move(detail);
    a.tls_alert = tls_alert;
    a.name_not_found = name_not_found;
    return Classify(a, {aws_, cert_id_, 30s});
  }

  AwsConfig aws_;
  std::string cert_id_ = "4f1c0ffee";
};

TEST_F(ClassifyTest, AcceptedIsActive) {
  EXPECT_EQ(Of(ConnectOutcome::kAccepted, "CONNACK accepted").action, Action::kActive);
}

TEST_F(ClassifyTest, ClosedWithoutConnackIsAPendingRegistrationThatCounts) {
  auto v = Of(ConnectOutcome::kClosed, "closed without CONNACK");
  EXPECT_EQ(v.action, Action::kRetry);
  EXPECT_TRUE(v.counted);
  EXPECT_EQ(v.cap, 0ms);
  EXPECT_EQ(v.level, log::Level::kInfo);
  EXPECT_EQ(v.error, "closed without CONNACK");
}

TEST_F(ClassifyTest, AnAlertOtherThanRevokedIsPending) {
  auto v = Of(ConnectOutcome::kTlsAlert, "alert bad_certificate", SSL_AD_BAD_CERTIFICATE);
  EXPECT_EQ(v.action, Action::kRetry);
  EXPECT_TRUE(v.counted);
  EXPECT_EQ(v.level, log::Level::kInfo);
}

TEST_F(ClassifyTest, ARevokedCertificateParksNamingIt) {
  auto v = Of(ConnectOutcome::kTlsAlert, "alert certificate_revoked", SSL_AD_CERTIFICATE_REVOKED);
  EXPECT_EQ(v.action, Action::kPark);
  EXPECT_EQ(v.error, "alert certificate_revoked");
  EXPECT_NE(v.park_reason.find("certificate 4f1c0ffee as revoked"), std::string::npos)
      << v.park_reason;
  EXPECT_NE(v.park_reason.find("remove and add the sensor"), std::string::npos) << v.park_reason;
}

TEST_F(ClassifyTest, AnUntrustedServerParksNamingEndpointAndRootCa) {
  auto v = Of(ConnectOutcome::kServerUntrusted, "certificate verify failed");
  EXPECT_EQ(v.action, Action::kPark);
  EXPECT_EQ(v.level, log::Level::kError);
  EXPECT_NE(v.park_reason.find("abc-ats.iot.eu-west-1.amazonaws.com:8883 is not trusted "
                               "(certificate verify failed)"),
            std::string::npos)
      << v.park_reason;
  EXPECT_NE(v.park_reason.find("root_ca (/etc/gateway-agent/AmazonRootCA1.pem)"), std::string::npos)
      << v.park_reason;
}

TEST_F(ClassifyTest, RefusedCountsWithFourTimesTheBackoffCap) {
  auto v = Of(ConnectOutcome::kRefused, "CONNACK 5: not authorized");
  EXPECT_EQ(v.action, Action::kRetry);
  EXPECT_TRUE(v.counted);
  EXPECT_EQ(v.cap, 120s);
  EXPECT_EQ(v.level, log::Level::kWarning);
}

TEST_F(ClassifyTest, ANetworkErrorIsNotAnAttempt) {
  auto v = Of(ConnectOutcome::kNetworkError, "connect: Connection refused");
  EXPECT_EQ(v.action, Action::kRetry);
  EXPECT_FALSE(v.counted);
  EXPECT_EQ(v.cap, 0ms);
  EXPECT_EQ(v.level, log::Level::kWarning);
  EXPECT_EQ(v.error, "connect: Connection refused");
}

TEST_F(ClassifyTest, AnUnknownEndpointNameSaysWhereToLook) {
  auto v = Of(ConnectOutcome::kNetworkError, "resolve: Name or service not known", -1, true);
  EXPECT_FALSE(v.counted);
  EXPECT_EQ(v.error, "resolve: Name or service not known (check [aws] endpoint)");
}

}  // namespace
}  // namespace ga
