// The role layout check: what fits, and errors that say what would.
#include <gtest/gtest.h>

#include "distributed/placement.h"

namespace aln::dist {
namespace {

TEST(Placement, ColocatedNeedsExactlyThePolicyGrid) {
  auto ok = plan_layout({2, 2}, {1, 1}, false, true, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->world(), 4);
  EXPECT_EQ(ok->role_of(3), Role::kPolicy);
  auto wrong = plan_layout({2, 2}, {1, 1}, false, true, 3);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      wrong.status().message().find("data_parallel 2 x pipeline_parallel 2 = 4 process(es) but the job runs on 3"),
      std::string::npos)
      << wrong.status();
}

TEST(Placement, SeparatePutsTheReferenceAfterThePolicy) {
  auto ok = plan_layout({2, 1}, {2, 1}, true, true, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->role_of(1), Role::kPolicy);
  EXPECT_EQ(ok->role_of(2), Role::kReference);
  EXPECT_EQ(ok->index_in_role(3), 1);
  EXPECT_EQ(role_name(Role::kReference), "reference");
}

TEST(Placement, SeparateErrorsSayWhatFits) {
  auto too_few = plan_layout({2, 1}, {1, 1}, true, true, 2);
  EXPECT_NE(too_few.status().message().find("= 3, but the job runs on 2; start it with `mpirun -np 3"),
            std::string::npos);
  EXPECT_NE(too_few.status().message().find("or set placement: colocated to run on 2"), std::string::npos);
  auto too_many = plan_layout({2, 1}, {1, 1}, true, true, 5);
  EXPECT_NE(too_many.status().message().find("or set parallel.reference.data_parallel to 3"), std::string::npos);
  auto idle = plan_layout({2, 1}, {1, 1}, true, false, 3);
  EXPECT_NE(idle.status().message().find("would idle"), std::string::npos);
  auto piped_reference = plan_layout({2, 1}, {1, 2}, true, true, 4);
  EXPECT_EQ(piped_reference.status().code(), absl::StatusCode::kUnimplemented);
  auto piped_policy = plan_layout({1, 2}, {1, 1}, true, true, 3);
  EXPECT_EQ(piped_policy.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace aln::dist
