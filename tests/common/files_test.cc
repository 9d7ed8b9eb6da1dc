#include "gateway_agent/files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixtures.h"
#include "gateway_agent/unique_fd.h"

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

TEST(Files, AtomicWriteRefusingToOverwriteKeepsTheOldContent) {
  testing::TempDir dir;
  auto path = dir / "key.pem";
  ASSERT_TRUE(WriteFileAtomic(path, "first", 0600, IfExists::kRefuse).ok());
  Status again = WriteFileAtomic(path, "second", 0600, IfExists::kRefuse);
  EXPECT_EQ(again.code(), Code::kAlreadyExists) << again.ToString();
  EXPECT_NE(again.message().find(path.string()), std::string::npos) << again.message();
  EXPECT_EQ(*ReadFile(path), "first");
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(Files, UniqueFdClosesOnceAndMoves) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  UniqueFd read_end(fds[0]);
  {
    UniqueFd write_end(fds[1]);
    UniqueFd moved = std::move(write_end);
    EXPECT_FALSE(write_end.valid());
    EXPECT_EQ(moved.get(), fds[1]);
  }
  // The write end is closed: the read end sees end of file.
  char c;
  EXPECT_EQ(read(read_end.get(), &c, 1), 0);
  EXPECT_TRUE(read_end.Close("pipe").ok());
  EXPECT_FALSE(read_end.valid());
  EXPECT_EQ(fcntl(fds[0], F_GETFD), -1);
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
