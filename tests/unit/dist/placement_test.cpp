// The role layout check: what fits, and errors that say what would.
#include <gtest/gtest.h>

#include "distributed/placement.h"

namespace aln::dist {
namespace {

TEST(Placement, ColocatedNeedsExactlyThePolicyGrid) {
  auto ok = plan_layout({2, 2}, {1, 1}, {1, 1}, false, {true, false}, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->world(), 4);
  EXPECT_EQ(ok->role_of(3), Role::kPolicy);
  auto wrong = plan_layout({2, 2}, {1, 1}, {1, 1}, false, {true, false}, 3);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      wrong.status().message().find("data_parallel 2 x pipeline_parallel 2 = 4 process(es) but the job runs on 3"),
      std::string::npos)
      << wrong.status();
}

TEST(Placement, SeparatePutsTheReferenceAfterThePolicy) {
  auto ok = plan_layout({2, 1}, {2, 1}, {1, 1}, true, {true, false}, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->role_of(1), Role::kPolicy);
  EXPECT_EQ(ok->role_of(2), Role::kReference);
  EXPECT_EQ(ok->index_in_role(3), 1);
  EXPECT_EQ(role_name(Role::kReference), "reference");
}

TEST(Placement, SeparateErrorsSayWhatFits) {
  auto too_few = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, false}, 2);
  EXPECT_NE(too_few.status().message().find("= 3, but the job runs on 2; start it with `mpirun -np 3"),
            std::string::npos);
  EXPECT_NE(too_few.status().message().find("or set placement: colocated to run on 2"), std::string::npos);
  auto too_many = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, false}, 5);
  EXPECT_NE(too_many.status().message().find("or set parallel.reference.data_parallel to 3"), std::string::npos);
  auto idle = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {false, false}, 3);
  EXPECT_NE(idle.status().message().find("would idle"), std::string::npos);
  auto piped_reference = plan_layout({2, 1}, {1, 2}, {1, 1}, true, {true, false}, 4);
  EXPECT_EQ(piped_reference.status().code(), absl::StatusCode::kUnimplemented);
  // A pipelined policy's grid (2 stages) with the reference on a rank after it.
  auto piped_policy = plan_layout({1, 2}, {1, 1}, {1, 1}, true, {true, false}, 3);
  ASSERT_TRUE(piped_policy.ok()) << piped_policy.status();
  EXPECT_EQ(piped_policy->role_of(1), Role::kPolicy);
  EXPECT_EQ(piped_policy->role_of(2), Role::kReference);
}

TEST(Placement, RewardRanksComeLast) {
  // Reference and reward models both on their own ranks: policy 0..1, reference 2, reward 3..4.
  auto both = plan_layout({2, 1}, {1, 1}, {2, 1}, true, {true, true}, 5);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->role_of(1), Role::kPolicy);
  EXPECT_EQ(both->role_of(2), Role::kReference);
  EXPECT_EQ(both->role_of(3), Role::kReward);
  EXPECT_EQ(both->index_in_role(4), 1);
  EXPECT_EQ(both->first_of(Role::kReward), 3);
  EXPECT_EQ(role_name(Role::kReward), "reward");
  // Reward models only: no reference ranks.
  auto reward_only = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {false, true}, 3);
  ASSERT_TRUE(reward_only.ok()) << reward_only.status();
  EXPECT_EQ(reward_only->reference_ranks, 0);
  EXPECT_EQ(reward_only->role_of(2), Role::kReward);
  auto wrong = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, true}, 3);
  EXPECT_NE(wrong.status().message().find(
                "needs 2 policy + 1 reference + 1 reward process(es) (parallel.reference.data_parallel, "
                "parallel.reward.data_parallel) = 4, but the job runs on 3; start it with `mpirun -np 4"),
            std::string::npos)
      << wrong.status();
  auto more = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {false, true}, 4);
  EXPECT_NE(more.status().message().find("or set parallel.reward.data_parallel to 2"), std::string::npos)
      << more.status();
  auto too_many = plan_layout({2, 1}, {1, 1}, {3, 1}, true, {false, true}, 5);
  EXPECT_NE(too_many.status().message().find("set it to at most 2"), std::string::npos) << too_many.status();
  auto piped = plan_layout({2, 1}, {1, 1}, {1, 2}, true, {false, true}, 4);
  EXPECT_NE(piped.status().message().find("parallel.reward.pipeline_parallel"), std::string::npos);
}

// parallel.coordinator: own_rank: world rank 0 is the coordinator and every role moves up by one;
// the workers' view numbers them from 0 again (the engine runs them on a communicator without it).
TEST(Placement, CoordinatorOfItsOwnComesFirst) {
  auto colocated = plan_layout({2, 1}, {1, 1}, {1, 1}, false, {false, false, true}, 3);
  ASSERT_TRUE(colocated.ok()) << colocated.status();
  EXPECT_EQ(colocated->role_of(0), Role::kCoordinator);
  EXPECT_EQ(colocated->role_of(1), Role::kPolicy);
  EXPECT_EQ(colocated->index_in_role(2), 1);
  EXPECT_EQ(colocated->workers().world(), 2);
  EXPECT_EQ(role_name(Role::kCoordinator), "coordinator");
  auto separate = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, true, true}, 5);
  ASSERT_TRUE(separate.ok()) << separate.status();
  EXPECT_EQ(separate->first_of(Role::kPolicy), 1);
  EXPECT_EQ(separate->first_of(Role::kReference), 3);
  EXPECT_EQ(separate->first_of(Role::kReward), 4);
  EXPECT_EQ(separate->role_of(4), Role::kReward);
  EXPECT_EQ(separate->workers().first_of(Role::kReference), 2);
  EXPECT_EQ(separate->workers().role_of(0), Role::kPolicy);
  auto short_one = plan_layout({2, 1}, {1, 1}, {1, 1}, false, {false, false, true}, 2);
  EXPECT_NE(short_one.status().message().find("= 2 process(es) plus 1 for the coordinator (parallel.coordinator: "
                                              "own_rank) but the job runs on 2; start it with `mpirun -np 3"),
            std::string::npos)
      << short_one.status();
  auto short_separate = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, false, true}, 3);
  EXPECT_NE(short_separate.status().message().find("needs 1 coordinator + 2 policy + 1 reference process(es)"),
            std::string::npos)
      << short_separate.status();
  EXPECT_NE(short_separate.status().message().find("or set placement: colocated to run on 3"), std::string::npos)
      << short_separate.status();
}

TEST(Placement, RolloutRanksComeAfterEveryOtherRole) {
  // Colocated frozen roles: policy ranks, then the rollout ranks.
  auto colocated = plan_layout({3, 1}, {1, 1}, {1, 1}, false, {false, false, false, 2}, 5);
  ASSERT_TRUE(colocated.ok()) << colocated.status();
  EXPECT_TRUE(colocated->split());
  EXPECT_EQ(colocated->first_of(Role::kRollout), 3);
  EXPECT_EQ(colocated->role_of(2), Role::kPolicy);
  EXPECT_EQ(colocated->role_of(4), Role::kRollout);
  EXPECT_EQ(colocated->index_in_role(4), 1);
  EXPECT_EQ(role_name(Role::kRollout), "rollout");
  // Separate: coordinator, policy, reference, reward, rollout.
  auto all = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, true, true, 1}, 6);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->first_of(Role::kReward), 4);
  EXPECT_EQ(all->first_of(Role::kRollout), 5);
  EXPECT_EQ(all->role_of(4), Role::kReward);
  EXPECT_EQ(all->role_of(5), Role::kRollout);
  EXPECT_EQ(all->workers().first_of(Role::kRollout), 4);
  EXPECT_FALSE(plan_layout({2, 1}, {1, 1}, {1, 1}, false, {}, 2)->split());

  auto wrong = plan_layout({2, 1}, {1, 1}, {1, 1}, false, {false, false, false, 1}, 2);
  EXPECT_NE(wrong.status().message().find("plus 1 rollout rank(s) (parallel.rollout.ranks) but the job runs on 2; "
                                          "start it with `mpirun -np 3"),
            std::string::npos)
      << wrong.status();
  auto separate = plan_layout({2, 1}, {1, 1}, {1, 1}, true, {true, false, false, 1}, 3);
  EXPECT_NE(separate.status().message().find("needs 2 policy + 1 reference + 1 rollout process(es)"),
            std::string::npos)
      << separate.status();
  auto too_many = plan_layout({2, 1}, {1, 1}, {1, 1}, false, {false, false, false, 3}, 5);
  EXPECT_NE(too_many.status().message().find("set it to at most 2"), std::string::npos) << too_many.status();
  auto piped = plan_layout({1, 2}, {1, 1}, {1, 1}, false, {false, false, false, 1}, 3);
  EXPECT_EQ(piped.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace aln::dist
