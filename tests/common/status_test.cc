#include "gateway_agent/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace ga {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  GA_ASSIGN_OR_RETURN(int h, Half(x).With("first half"));
  GA_ASSIGN_OR_RETURN(int q, Half(h).With("second half"));
  return q;
}

Status CheckEven(int x) {
  GA_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(Status, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(Status, ContextIsPrependedAsItTravelsUp) {
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "second half: 3 is odd");
  EXPECT_EQ(r.status().ToString(), "InvalidArgument: second half: 3 is odd");
  EXPECT_EQ(*Quarter(8), 2);
}

TEST(Status, ReturnIfError) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).message(), "5 is odd");
}

TEST(Status, ErrnoCarriesTheSystemTextAndMapsTheCode) {
  Status s = ErrnoStatus("open /nonexistent", ENOENT);
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message(), "open /nonexistent: No such file or directory");
  EXPECT_EQ(ErrnoStatus("x", EACCES).code(), Code::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus("x", ECONNREFUSED).code(), Code::kUnavailable);
}

TEST(Status, ResultHoldsMoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

}  // namespace
}  // namespace ga
