#include "gateway_agent/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "fixtures.h"

namespace ga {
namespace {

mode_t ModeOf(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(stat(p.c_str(), &st), 0);
  return st.st_mode & 07777;
}

TEST(Files, AtomicWriteReplacesWithMode0600AndLeavesNoTemporary) {
  testing::TempDir dir;
  auto path = dir / "key.pem";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  EXPECT_EQ(*ReadFile(path), "second");
  EXPECT_EQ(ModeOf(path), 0600u);
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(Files, AtomicWriteIntoMissingDirectoryNamesIt) {
  testing::TempDir dir;
  Status s = WriteFileAtomic(dir / "missing" / "x", "data");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing"), std::string::npos) << s.message();
}

TEST(Files, EnsureDirectoryIs0700) {
  testing::TempDir dir;
  auto d = dir / "a" / "b";
  ASSERT_TRUE(EnsureDirectory(d).ok());
  EXPECT_EQ(ModeOf(d), 0700u);
}

TEST(Files, ReadMissingFileIsNotFound) {
  auto r = ReadFile("/nonexistent/file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/file"), std::string::npos);
}

}  // namespace
}  // namespace ga
