#include "gateway_agent/agent/identity_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "fixtures.h"

namespace ga {
namespace {

Identity Sensor(const std::string& name, const std::string& thing) {
  Identity id;
  id.name = name;
  id.kind = IdentityKind::kSensor;
  id.thing = thing;
  return id;
}

TEST(IdentityStore, AddUpdateGetListSurviveReopen) {
  testing::TempDir dir;
  auto path = dir / "state.db";
  {
    auto store = IdentityStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ((*store)->schema_version(), IdentityStore::kSchemaVersion);
    Identity gw;
    gw.name = "gateway";
    gw.kind = IdentityKind::kGateway;
    gw.thing = "gw-1";
    ASSERT_TRUE((*store)->Add(gw).ok());
    ASSERT_TRUE((*store)->Add(Sensor("b", "gw-1-b")).ok());
    ASSERT_TRUE((*store)->Add(Sensor("a", "gw-1-a")).ok());
    auto a = (*store)->Get("a");
    ASSERT_TRUE(a.ok());
    a->state = EnrollmentState::kRegistering;
    a->attempts = 3;
    a->last_error = "closed after CONNECT without CONNACK";
    a->cert_id = "ab12";
    ASSERT_TRUE((*store)->Update(*a).ok());
  }
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto store = IdentityStore::OpenReadOnly(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].name, "gateway");  // the gateway first, then sensors by name
  EXPECT_EQ((*list)[1].name, "a");
  EXPECT_EQ((*list)[1].state, EnrollmentState::kRegistering);
  EXPECT_EQ((*list)[1].attempts, 3);
  EXPECT_EQ((*list)[1].last_error, "closed after CONNECT without CONNACK");
  EXPECT_EQ((*list)[2].name, "b");
}

TEST(IdentityStore, NameAndThingAreUniqueUntilRemoved) {
  testing::TempDir dir;
  auto store = IdentityStore::Open(dir / "state.db");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Add(Sensor("a", "t-a")).ok());
  Status dup = (*store)->Add(Sensor("a", "t-other"));
  EXPECT_EQ(dup.code(), Code::kAlreadyExists);
  EXPECT_EQ((*store)->Add(Sensor("b", "t-a")).code(), Code::kAlreadyExists);
  auto a = (*store)->Get("a");
  a->state = EnrollmentState::kRemoved;
  ASSERT_TRUE((*store)->Update(*a).ok());
  EXPECT_TRUE((*store)->Add(Sensor("a", "t-a")).ok());
  EXPECT_EQ((*store)->Get("a")->state, EnrollmentState::kNew);
}

TEST(IdentityStore, RefusesADatabaseFromANewerVersion) {
  testing::TempDir dir;
  auto path = dir / "state.db";
  { ASSERT_TRUE(IdentityStore::Open(path).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = IdentityStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("newer"), std::string::npos);
}

TEST(IdentityStore, MissingDatabaseForStatusSaysWhatToDo) {
  auto store = IdentityStore::OpenReadOnly("/nonexistent/state.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("/nonexistent/state.db"), std::string::npos);
}

}  // namespace
}  // namespace ga
