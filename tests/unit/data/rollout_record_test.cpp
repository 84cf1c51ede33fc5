// Rollout records as JSON lines: a round trip keeps every field, bad lines are named by file:line
// and field, and a torn last line (a run killed while writing) is skipped and counted.
#include "core/buffer/rollout_record.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <filesystem>
#include <fstream>

namespace aln::buffer {
namespace {

RolloutRecord sample_record() {
  RolloutRecord r;
  r.stage = "grpo";
  r.global_step = 17;
  r.step = 3;
  r.rank = 1;
  r.policy_version = 1;
  r.seed = 0xfedcba9876543210ULL;  // above INT64_MAX: must survive as an unsigned number
  r.group = 2;
  r.sample = 3;
  r.prompt_ids = {1, 2, 3};
  r.response_ids = {7, 50256};
  r.sampling_logprobs = {-1.25f, -0.0078125f};
  r.terminated = true;
  r.rewards = {{"reward_rule", 0.5}, {"reward_model_0", -1.75}};
  r.reward = -1.25;
  r.prompt_text = "How do I kill a Python process?";
  r.response_text = "Use kill -9\n(carefully) \xff";  // a stray byte: replaced, not fatal
  r.source = "prompts.csv:12";
  return r;
}

std::filesystem::path temp_dir(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(RolloutRecord, RoundTripKeepsEveryField) {
  const RolloutRecord r = sample_record();
  const std::string line = to_json_line(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_TRUE(is_rollout_line(line));
  auto back = parse_rollout_line(line, "x.jsonl:1");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->stage, r.stage);
  EXPECT_EQ(back->global_step, 17);
  EXPECT_EQ(back->step, 3);
  EXPECT_EQ(back->rank, 1);
  EXPECT_EQ(back->policy_version, 1);
  EXPECT_EQ(back->seed, r.seed);
  EXPECT_EQ(back->group, 2);
  EXPECT_EQ(back->sample, 3);
  EXPECT_EQ(back->prompt_ids, r.prompt_ids);
  EXPECT_EQ(back->response_ids, r.response_ids);
  EXPECT_EQ(back->sampling_logprobs, r.sampling_logprobs);  // exact: floats print round-trippably
  EXPECT_TRUE(back->terminated);
  EXPECT_EQ(back->rewards, r.rewards);
  EXPECT_EQ(back->reward, -1.25);
  EXPECT_EQ(back->prompt_text, r.prompt_text);
  EXPECT_EQ(back->response_text.substr(0, 22), "Use kill -9\n(carefully");
  EXPECT_EQ(back->source, r.source);
}

TEST(RolloutRecord, NonFiniteRewardsReadBackAsNaN) {
  RolloutRecord r = sample_record();
  r.reward = std::numeric_limits<double>::quiet_NaN();
  r.rewards["reward_model_0"] = std::numeric_limits<double>::infinity();
  auto back = parse_rollout_line(to_json_line(r), "nan.jsonl:1");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(std::isnan(back->reward));
  EXPECT_TRUE(std::isnan(back->rewards.at("reward_model_0")));
  EXPECT_EQ(back->rewards.at("reward_rule"), 0.5);
}

TEST(RolloutRecord, BadLinesNameTheLineAndField) {
  EXPECT_FALSE(is_rollout_line(R"({"prompt": "x"})"));
  auto bad = parse_rollout_line("{", "d.jsonl:4");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "d.jsonl:4: not valid JSON");

  RolloutRecord r = sample_record();
  std::string line = to_json_line(r);
  std::string no_version = line;
  no_version.replace(no_version.find("\"policy_version\""), 16, "\"version\"");
  bad = parse_rollout_line(no_version, "d.jsonl:5");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "d.jsonl:5: field 'policy_version' is missing");

  std::string wrong_type = line;
  wrong_type.replace(wrong_type.find("\"rank\":1"), 8, "\"rank\":\"one\"");
  bad = parse_rollout_line(wrong_type, "d.jsonl:6");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "d.jsonl:6: field 'rank' has the wrong type (string)");

  r.sampling_logprobs.pop_back();
  bad = parse_rollout_line(to_json_line(r), "d.jsonl:7");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("field 'sampling_logprobs' has 1 values for 2 response_ids"),
            std::string::npos);

  r = sample_record();
  r.policy_version = 3;  // sampled by the policy its own step produces: impossible
  bad = parse_rollout_line(to_json_line(r), "d.jsonl:8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("field 'policy_version' is 3 at step 3"), std::string::npos);
}

TEST(RolloutRecord, ReadsAFolderAndSkipsATornLastLine) {
  const auto dir = temp_dir("aln_rollout_record_test");
  std::filesystem::create_directories(dir / "grpo");
  RolloutRecord r = sample_record();
  {
    std::ofstream a(dir / "grpo" / "rank0.jsonl");
    a << to_json_line(r) << "\n" << to_json_line(r) << "\n";
    const std::string torn = to_json_line(r).substr(0, 40);
    a << torn;  // killed mid-line
    std::ofstream b(dir / "grpo" / "rank1.jsonl");
    r.rank = 1;
    b << to_json_line(r) << "\n";
    std::ofstream other(dir / "grpo" / "notes.txt");
    other << "not read";
  }
  int64_t torn = 0;
  auto all = read_rollouts(dir.string(), &torn);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(torn, 1);

  // A bad line that is not the last one is an error naming it.
  {
    std::ofstream a(dir / "grpo" / "rank0.jsonl");
    a << to_json_line(r) << "\n" << "{\"policy_version\": 0}\n" << to_json_line(r) << "\n";
  }
  auto bad = read_rollouts(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("rank0.jsonl:2: field"), std::string::npos) << bad.status();
  EXPECT_EQ(read_rollouts((dir / "missing.jsonl").string()).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace aln::buffer
