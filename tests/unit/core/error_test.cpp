#include <gtest/gtest.h>

#include "core/error.h"
#include "core/status.h"

namespace aln {
namespace {

TEST(Error, CheckCarriesFileLineAndMessage) {
  try {
    const int vocab = 10;
    ALN_CHECK(vocab > 100, "vocab ", vocab, " too small");
    FAIL() << "ALN_CHECK did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tests/unit/core/error_test.cpp:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab 10 too small (check `vocab > 100` failed)"), std::string::npos)
        << e.what();
    EXPECT_GT(e.line(), 0);
  }
}

TEST(Error, PassingCheckDoesNothing) { EXPECT_NO_THROW(ALN_CHECK(1 + 1 == 2, "math")); }

TEST(Status, CaptureTurnsExceptionsIntoStatus) {
  absl::Status s = capture_status([]() -> absl::Status { ALN_FAIL("boom ", 42); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(s.message()).find("boom 42"), std::string::npos);
  EXPECT_TRUE(capture_status([] { return absl::OkStatus(); }).ok());
}

absl::StatusOr<int> half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> quarter(int x) {
  ALN_ASSIGN_OR_RETURN(int h, half(x));
  ALN_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

TEST(Status, AssignOrReturnPropagates) {
  EXPECT_EQ(*quarter(8), 2);
  EXPECT_EQ(quarter(6).status().message(), "odd");
}

TEST(Status, ThrowIfErrorThrowsWithMessage) {
  EXPECT_THROW(ALN_THROW_IF_ERROR(absl::NotFoundError("missing file")), Error);
  EXPECT_NO_THROW(ALN_THROW_IF_ERROR(absl::OkStatus()));
}

}  // namespace
}  // namespace aln
