#include "gateway_agent/agent/status_report.h"

#include <gtest/gtest.h>

namespace ga {
namespace {

TEST(StatusJson, KeepsItsShapeAndEscapesText) {
  Identity id;
  id.name = "s1";
  id.kind = IdentityKind::kSensor;
  id.thing = "gw-1-s1";
  id.state = EnrollmentState::kRegistering;
  id.attempts = 3;
  id.last_error = "closed \"without\" CONNACK\n\x01";
  id.long_pending_reported = true;
  id.registering_since = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
  BridgeStats bridge;
  bridge["s1"].messages = 2;
  bridge["s1"].bytes = 40;
  bridge::UnknownSenderReport unknown{3, {{"nobody", 3, 1'767'225'600'000}}};
  std::string json = StatusJson({id}, 1'767'225'600'000, bridge, unknown);
  EXPECT_EQ(json,
            "{\"identities\":[{\"name\":\"s1\",\"kind\":\"sensor\",\"thing\":\"gw-1-s1\","
            "\"state\":\"REGISTERING\",\"attempts\":3,\"nextAttempt\":\"\","
            "\"lastError\":\"closed \\\"without\\\" CONNACK\\n\\u0001\",\"parkReason\":\"\","
            "\"longPending\":true,\"certificateId\":\"\",\"certificateExpires\":\"\","
            "\"keyFile\":\"\",\"chainFile\":\"\",\"registeringSince\":\"2026-01-01T00:00:00Z\","
            "\"activeSince\":\"\",\"connected\":false,"
            "\"outbox\":{\"messages\":2,\"bytes\":40,\"oldestAgeSeconds\":0},"
            "\"sent\":0,\"rejected\":0,\"dropped\":0}],"
            "\"counts\":{\"NEW\":0,\"KEYED\":0,\"CERTIFIED\":0,\"REGISTERING\":1,\"ACTIVE\":0,"
            "\"PARKED\":0,\"REMOVED\":0,\"SHARED\":0,\"total\":1},"
            "\"unknownSensors\":{\"dropped\":3,\"recent\":[{\"id\":\"nobody\",\"messages\":3,"
            "\"lastSeen\":\"2026-01-01T00:00:00Z\"}]}}\n");
}

TEST(StatusJson, NoIdentities) {
  EXPECT_EQ(StatusJson({}, 0),
            "{\"identities\":[],\"counts\":{\"NEW\":0,\"KEYED\":0,\"CERTIFIED\":0,"
            "\"REGISTERING\":0,\"ACTIVE\":0,\"PARKED\":0,\"REMOVED\":0,\"SHARED\":0,"
            "\"total\":0},\"unknownSensors\":{\"dropped\":0,\"recent\":[]}}\n");
}

TEST(StatusJson, TextThatIsNotUtf8IsReplacedNotFatal) {
  Identity id;
  id.name = "s1";
  id.last_error = "alert \xff\xfe";
  std::string json = StatusJson({id}, 0);
  EXPECT_NE(json.find("\"lastError\":\"alert \xEF\xBF\xBD"), std::string::npos) << json;
}

}  // namespace
}  // namespace ga
