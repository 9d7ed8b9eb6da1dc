#include "gateway_agent/sqlite.h"

#include <gtest/gtest.h>

#include "fixtures.h"

namespace ga {
namespace {

// What the agent's exit code follows: a file that is not a database is a bad
// file (restarting does not help), named by its path; a missing one is NotFound.
TEST(Sqlite, AFileThatIsNotADatabaseIsABadFileNamedByItsPath) {
  testing::TempDir dir;
  const auto path = dir / "outbox.db";
  testing::WriteText(path, std::string(4096, 'x'));

  auto rw = sqlite::Database::Open(path, {});
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), Code::kInvalidArgument) << rw.status().ToString();
  EXPECT_NE(rw.status().message().find(path.string() + ": file is not a database"),
            std::string::npos)
      << rw.status().ToString();

  // Read-only opens lazily: the first statement finds it out.
  auto ro = sqlite::Database::Open(path, {.read_only = true});
  ASSERT_TRUE(ro.ok()) << ro.status().ToString();
  auto stmt = (*ro)->Prepare("SELECT 1 FROM messages");
  ASSERT_FALSE(stmt.ok());
  EXPECT_EQ(stmt.status().code(), Code::kInvalidArgument) << stmt.status().ToString();
  EXPECT_NE(stmt.status().message().find(path.string()), std::string::npos)
      << stmt.status().ToString();

  auto missing = sqlite::Database::Open(dir / "none" / "outbox.db", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound) << missing.status().ToString();

  // A good database's errors stay I/O errors.
  auto good = sqlite::Database::Open(dir / "good.db", {});
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  Status s = (*good)->Exec("INSERT INTO nowhere VALUES (1)");
  EXPECT_EQ(s.code(), Code::kIo) << s.ToString();
}

}  // namespace
}  // namespace ga
