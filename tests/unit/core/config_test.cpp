// Job specification loading: defaults, every kind of bad input (unknown key, wrong type, out of
// range, bad YAML, conflicting oneof keys, cross-field rules), each with file:line and key path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <filesystem>

#include "core/config/input_paths.h"
#include "core/config/job_config.h"
#include "core/config/method_traits.h"

namespace aln::config {
namespace {

constexpr const char* kMinimal = R"(name: t
trainer:
  dpo:
    beta: 0.2
data:
  train:
    - path: prefs.jsonl
)";

std::string load_error(const std::string& yaml) {
  auto job = load_job_text(yaml, "job.yaml");
  EXPECT_FALSE(job.ok()) << "expected an error for:\n" << yaml;
  return job.ok() ? "" : std::string(job.status().message());
}

TEST(JobConfig, MinimalJobGetsDefaults) {
  auto job = load_job_text(kMinimal, "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& spec = job->spec;
  EXPECT_EQ(spec.name(), "t");
  EXPECT_DOUBLE_EQ(spec.trainer().dpo().beta(), 0.2);
  EXPECT_EQ(spec.trainer().dpo().loss_type(), aln::v1::SIGMOID);      // default
  EXPECT_DOUBLE_EQ(spec.optimizer().lr(), 5e-6);                      // default
  EXPECT_EQ(spec.optimizer().schedule(), aln::v1::COSINE);
  EXPECT_EQ(spec.metrics().port(), 9400);
  EXPECT_EQ(spec.parallel().policy().data_parallel(), 1);
  EXPECT_DOUBLE_EQ(spec.parallel().timeout_s(), 60);
  EXPECT_EQ(spec.model().config().hidden_size(), 64);
  EXPECT_DOUBLE_EQ(spec.data().train(0).weight(), 1.0);  // defaults inside list items
  EXPECT_EQ(method_name(spec.trainer()), "dpo");
  EXPECT_EQ(job->lines.at("trainer.dpo.beta"), 4);
  EXPECT_EQ(job->lines.at("data.train[0]"), 7);
}

TEST(JobConfig, EveryDeclaredDefaultIsInRange) {
  aln::v1::JobSpec spec;
  apply_defaults(&spec);
  // Oneof options are not created by apply_defaults; create each one and check it too.
  for (const char* m : {"sft", "reward", "dpo", "safedpo", "tdpo", "radpo", "grpo", "ptalign", "controllable", "hair"}) {
    aln::v1::JobSpec with = spec;
    auto loaded = load_job_text(std::string("trainer:\n  ") + m + ": {}\ndata:\n  train: [{path: a.jsonl}]\n", "d.yaml");
    ASSERT_TRUE(loaded.ok()) << m << ": " << loaded.status();
    EXPECT_TRUE(check_ranges(loaded->spec).ok()) << m << ": " << check_ranges(loaded->spec);
  }
  EXPECT_TRUE(check_ranges(spec).ok()) << check_ranges(spec);
}

TEST(JobConfig, MethodDefaultsFollowTheSpecification) {
  auto job = load_job_text("trainer:\n  safedpo: {}\ndata:\n  train: [{path: a.jsonl}]\n", "j.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_DOUBLE_EQ(job->spec.trainer().safedpo().beta(), 0.1);
  EXPECT_DOUBLE_EQ(job->spec.trainer().safedpo().delta(), 10.0);
  job = load_job_text("trainer:\n  radpo: {}\ndata:\n  train: [{path: a.jsonl}]\n", "j.yaml");
  ASSERT_TRUE(job.ok());
  EXPECT_DOUBLE_EQ(job->spec.trainer().radpo().mu(), 0.95);
  EXPECT_DOUBLE_EQ(job->spec.trainer().radpo().alpha(), 0.5);
  job = load_job_text("trainer:\n  grpo: {}\n", "j.yaml");  // generation-based: no data needed
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec.trainer().grpo().group_size(), 8);
  EXPECT_DOUBLE_EQ(job->spec.trainer().grpo().beta(), 0.04);
}

TEST(JobConfig, UnknownKeyNamesLineAndPath) {
  const std::string yaml = "name: t\ndata:\n  train:\n    - path: a.jsonl\n\n\ntrainer:\n  dpo:\n    bogus: 1\n";
  EXPECT_EQ(load_error(yaml).substr(0, 42), "job.yaml:9: trainer.dpo.bogus: unknown fie");
}

TEST(JobConfig, UnknownTopLevelKey) {
  EXPECT_EQ(load_error("nmae: x\n").substr(0, 28), "job.yaml:1: nmae: unknown fi");
}

TEST(JobConfig, WrongTypes) {
  EXPECT_EQ(load_error("seed: forty-two\n"),
            "job.yaml:1: seed: wrong type: expected an integer, got 'forty-two'");
  EXPECT_EQ(load_error("metrics:\n  port: 1.5\n"), "job.yaml:2: metrics.port: wrong type: expected an integer, got '1.5'");
  EXPECT_EQ(load_error("metrics:\n  enabled: maybe\n"),
            "job.yaml:2: metrics.enabled: wrong type: expected true or false, got 'maybe'");
  EXPECT_EQ(load_error("model: [1, 2]\n"),
            "job.yaml:1: model: wrong type: expected a mapping of ModelSpec fields");
  EXPECT_EQ(load_error("name: {a: 1}\n"), "job.yaml:1: name: wrong type: expected a string, got a mapping");
  EXPECT_EQ(load_error("data:\n  train: a.jsonl\n"), "job.yaml:2: data.train: wrong type: expected a list");
}

TEST(JobConfig, BadEnumListsChoices) {
  EXPECT_EQ(load_error("trainer:\n  dpo:\n    loss_type: squared\ndata: {train: [{path: a}]}\n"),
            "job.yaml:3: trainer.dpo.loss_type: unknown value 'squared'; expected one of: sigmoid, ipo, hinge, robust");
}

TEST(JobConfig, OutOfRange) {
  EXPECT_EQ(load_error("trainer:\n  dpo:\n    beta: 0\n"),
            "job.yaml:3: trainer.dpo.beta: out of range: 0 must be greater than 0");
  EXPECT_EQ(load_error("metrics:\n  port: 70000\n"), "job.yaml:2: metrics.port: out of range: 70000 > maximum 65535");
  EXPECT_EQ(load_error("optimizer:\n  micro_batch_size: -3\n"),
            "job.yaml:2: optimizer.micro_batch_size: out of range: -3 < minimum 1");
  EXPECT_EQ(load_error("optimizer:\n  lr: .nan\n"), "job.yaml:2: optimizer.lr: wrong type: expected a number, got '.nan'");
  EXPECT_EQ(load_error("optimizer:\n  lr: inf\n"), "job.yaml:2: optimizer.lr: out of range: must be a finite number");
}

TEST(JobConfig, YamlSyntaxError) {
  const std::string message = load_error("name: t\ntrainer:\n  dpo: {beta: 0.1\n");
  EXPECT_EQ(message.rfind("job.yaml:", 0), 0u) << message;
  EXPECT_NE(message.find(": (yaml): syntax error: "), std::string::npos) << message;
  EXPECT_EQ(load_error("a: b: c\n").rfind("job.yaml:1: (yaml): syntax error", 0), 0u);
}

TEST(JobConfig, OneofConflict) {
  EXPECT_EQ(load_error("trainer:\n  dpo: {}\n  sft: {}\n"),
            "job.yaml:3: trainer.sft: conflicts with 'dpo': only one method may be set");
}

TEST(JobConfig, CrossFieldRules) {
  EXPECT_EQ(load_error("trainer:\n  dpo: {}\n"),
            "job.yaml:0: data.train: no training data; list at least one file under data.train");
  EXPECT_EQ(load_error("data:\n  train: [{path: a}]\n"),
            "job.yaml:0: trainer: no method set; add one of sft, reward, dpo, safedpo, tdpo, radpo, grpo, ptalign, "
            "controllable, hair");
  EXPECT_EQ(load_error("model:\n  config:\n    hidden_size: 30\n    num_heads: 4\ntrainer: {sft: {}}\ndata: {train: [{path: a}]}\n"),
            "job.yaml:4: model.config.num_heads: hidden_size 30 is not divisible by num_heads 4");
  EXPECT_EQ(load_error("trainer: {sft: {}}\nstages:\n  - trainer: {sft: {}}\n    data: {train: [{path: a}]}\n"),
            "job.yaml:2: stages: use either `stages` or the top-level trainer/data/optimizer keys, not both");
  EXPECT_EQ(load_error("stages:\n  - trainer: {sft: {}}\n    data: {train: [{path: a}]}\n  - name: second\n    data: {train: [{path: b}]}\n"),
            "job.yaml:4: stages[1].trainer: no method set; add one of sft, reward, dpo, safedpo, tdpo, radpo, grpo, "
            "ptalign, controllable, hair");
}

TEST(JobConfig, ShardingLevels) {
  const std::string base = std::string(kMinimal) + "parallel:\n";
  auto job = load_job_text(base + "  zero1: true\n", "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(policy_shard(job->spec), aln::v1::OPTIMIZER);  // the older spelling
  job = load_job_text(base + "  policy: {data_parallel: 2, shard: gradients}\n", "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(policy_shard(job->spec), aln::v1::GRADIENTS);
  job = load_job_text(kMinimal, "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(policy_shard(job->spec), aln::v1::NONE);
  job = load_job_text(base + "  policy: {data_parallel: 2, shard: full}\n", "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(policy_shard(job->spec), aln::v1::FULL);
  EXPECT_EQ(load_error(base + "  policy: {pipeline_parallel: 2, shard: full}\n"),
            "job.yaml:9: parallel.policy.shard: full is not combined with pipeline stages yet; use optimizer with "
            "pipeline_parallel > 1");
  EXPECT_EQ(load_error(base + "  policy: {shard: full}\n  overlap: true\n"),
            "job.yaml:10: parallel.overlap: not combined with parallel.policy.shard: full (its gradients are "
            "reduce-scattered layer by layer during backward already); set it to false");
  // Reference ranks of their own beside a fully sharded policy: rank 0 puts the policy together to send it.
  ASSERT_TRUE(
      load_job_text(base + "  placement: separate\n  policy: {data_parallel: 2, shard: full}\n", "job.yaml").ok());
  // GRPO runs (its ranks decode in step), with its staleness snapshot sharded too, and with rollout
  // ranks, as does every other method.
  const std::string grpo = "name: t\ntrainer: {grpo: {}}\ndata: {train: [{path: p.jsonl}]}\nparallel:\n";
  ASSERT_TRUE(load_job_text(grpo + "  policy: {data_parallel: 2, shard: full}\n", "job.yaml").ok());
  ASSERT_TRUE(load_job_text("name: t\ntrainer: {grpo: {max_staleness: 1}}\ndata: {train: [{path: p.jsonl}]}\n"
                            "parallel:\n  policy: {data_parallel: 2, shard: full}\n",
                            "job.yaml")
                  .ok());
  ASSERT_TRUE(
      load_job_text(grpo + "  policy: {data_parallel: 2, shard: full}\n  rollout: {ranks: 1}\n", "job.yaml").ok());
  EXPECT_EQ(load_error(base + "  policy: {pipeline_parallel: 2, shard: gradients}\n"),
            "job.yaml:9: parallel.policy.shard: gradients is not combined with pipeline stages yet; use optimizer "
            "with pipeline_parallel > 1");
  EXPECT_EQ(load_error(base + "  reference: {shard: optimizer}\n"),
            "job.yaml:9: parallel.reference.shard: the frozen models are not sharded yet (they have no gradients or "
            "moments to shard); set it to none");
  EXPECT_NE(load_error(base + "  policy: {shard: sideways}\n").find("none, optimizer, gradients, full"),
            std::string::npos);
}

TEST(JobConfig, MultiStageJob) {
  auto job = load_job_text(
      "stages:\n  - name: a\n    trainer: {sft: {}}\n    data: {train: [{path: x}]}\n    optimizer: {lr: 1e-3}\n"
      "  - name: b\n    trainer: {safedpo: {delta: 0}}\n    data: {train: [{path: y}]}\n",
      "s.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  auto stages = effective_stages(job->spec);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_DOUBLE_EQ(stages[0].optimizer().lr(), 1e-3);
  EXPECT_DOUBLE_EQ(stages[1].optimizer().lr(), 5e-6);  // each stage gets its own defaults
  EXPECT_DOUBLE_EQ(stages[1].trainer().safedpo().delta(), 0.0);  // 0 is a valid margin
  EXPECT_DOUBLE_EQ(stages[1].trainer().safedpo().beta(), 0.1);
}

// YAML aliases: `stages: [&s {...}, *s x N]` with `train: [&d {...}, *d x M]` took aln to 1.19 GB
// (N = M = 1,500) and the launcher to 4.1 GiB (N = M = 300,000). Lists are capped before their items
// are read, and the conversion stops after kMaxSpecNodes nodes however the aliases nest.
std::string alias_bomb(int stages, int sources) {
  std::string yaml = "stages:\n  - &s {name: s, trainer: {sft: {}}, data: {train: [&d {path: a.jsonl}";
  for (int i = 1; i < sources; ++i) yaml += ", *d";
  yaml += "]}}\n";
  for (int i = 1; i < stages; ++i) yaml += "  - *s\n";
  return yaml;
}

TEST(JobConfig, AliasExpansionIsBounded) {
  EXPECT_EQ(load_error(alias_bomb(1500, 1500)),
            "job.yaml:1: stages: too many items: 1500 > maximum 64 (max_items in job.proto)");
  EXPECT_EQ(load_error(alias_bomb(2, 1025)),
            "job.yaml:2: stages[0].data.train: too many items: 1025 > maximum 1024 (max_items in job.proto)");
  // Within every cap, 64 x 1,024 sources are 3 nodes each: the budget stops the expansion.
  const std::string budget = load_error(alias_bomb(64, 1024));
  EXPECT_NE(budget.find("the spec expands to more than 100000 YAML nodes (limit kMaxSpecNodes; each use of an alias "
                        "counts again)"),
            std::string::npos)
      << budget;
  EXPECT_EQ(budget.rfind("job.yaml:", 0), 0u) << budget;
  // A spec this size that is written out is fine (and far below the budget).
  auto fine = load_job_text(alias_bomb(4, 100), "job.yaml");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->spec.stages_size(), 4);
  EXPECT_EQ(fine->spec.stages(3).data().train_size(), 100);
}

// Launcher jobs write only below their run directory (aln train under ALN_OUTPUT_DIR).
TEST(JobConfig, WrittenPathsAreConfinedToTheRunDirectory) {
  auto confined = [](const std::string& yaml) -> absl::StatusOr<aln::v1::JobSpec> {
    auto job = load_job_text(yaml, "job.yaml");
    if (!job.ok()) return job.status();
    if (absl::Status s = confine_written_paths(&*job, "/data/jobs/job-000002/run"); !s.ok()) return s;
    return job->spec;
  };
  auto ok = confined(std::string(kMinimal) + "checkpoint: {dir: ckpt}\nreference: {cache_dir: cache/ref}\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->output_dir(), "/data/jobs/job-000002/run");
  EXPECT_EQ(ok->checkpoint().dir(), "/data/jobs/job-000002/run/ckpt");
  EXPECT_EQ(ok->reference().cache_dir(), "/data/jobs/job-000002/run/cache/ref");
  auto bob =
      confined(std::string(kMinimal) + "\n\ncheckpoint:\n  keep_last: 1\n  dir: ../../job-000001/run/checkpoints\n");
  ASSERT_FALSE(bob.ok());
  EXPECT_EQ(bob.status().message(),
            "job.yaml:12: checkpoint.dir: '../../job-000001/run/checkpoints' leaves the run directory ('..'); a job "
            "run by the launcher writes only inside its run directory: give a path relative to it, or leave the key "
            "out");
  auto absolute = confined(std::string(kMinimal) + "checkpoint: {dir: /home/alice/ckpt}\n");
  ASSERT_FALSE(absolute.ok());
  EXPECT_NE(absolute.status().message().find("checkpoint.dir: '/home/alice/ckpt' is an absolute path"),
            std::string::npos);
  auto staged = confined(
      "stages:\n  - {name: a, trainer: {sft: {}}, data: {train: [{path: x.jsonl}]},\n"
      "     reference: {cache_dir: a/../../../x}}\n");
  ASSERT_FALSE(staged.ok());
  EXPECT_NE(staged.status().message().find("stages[0].reference.cache_dir: 'a/../../../x' leaves the run directory"),
            std::string::npos)
      << staged.status();
  // Stage names are folders under output_dir, for every job.
  EXPECT_NE(load_error("name: ../../alice\ntrainer: {sft: {}}\ndata: {train: [{path: a.jsonl}]}\n")
                .find("job.yaml:1: name: '../../alice' cannot name a folder"),
            std::string::npos);
}

// One `seed` varies the whole run (issue 25): seeds the file does not set derive from it, and a seed
// set explicitly (0 included: presence, not value, decides) is kept.
TEST(JobConfig, UnsetSeedsDeriveFromTheJobSeed) {
  const std::string stages =
      "stages:\n"
      "  - {trainer: {sft: {}}, data: {train: [{path: a.jsonl}]}}\n"
      "  - {trainer: {dpo: {}}, data: {train: [{path: b.jsonl}], shuffle_seed: 0}}\n";
  auto job = load_job_text("seed: 7\n" + stages, "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& spec = job->spec;
  EXPECT_FALSE(spec.model().has_init_seed());
  EXPECT_EQ(effective_init_seed(spec), 7);
  const StageSeeds first = stage_seeds(spec, spec.stages(0), 0);
  EXPECT_EQ(first.shuffle, 7);
  EXPECT_FALSE(first.shuffle_explicit);
  EXPECT_EQ(first.eval_split, 7u);
  EXPECT_EQ(first.sampling, 7u);
  EXPECT_EQ(first.prepare, 7u * 1000003u);
  const StageSeeds second = stage_seeds(spec, spec.stages(1), 1);
  EXPECT_EQ(second.shuffle, 0);
  EXPECT_TRUE(second.shuffle_explicit);
  EXPECT_EQ(second.eval_split, 8u);
  // Changing `seed` alone changes every derived seed.
  auto other = load_job_text("seed: 8\nmodel: {init_seed: 1234}\n" + stages, "job.yaml");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(stage_seeds(other->spec, other->spec.stages(0), 0).shuffle, 8);
  EXPECT_EQ(effective_init_seed(other->spec), 1234);  // set explicitly
  // The default `seed` (42) keeps the data order the old shuffle_seed default gave.
  auto defaults = load_job_text(kMinimal, "job.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(stage_seeds(defaults->spec, effective_stages(defaults->spec)[0], 0).shuffle, 42);
}

TEST(JobConfig, WarmupStartIsSelectable) {
  auto job = load_job_text(std::string(kMinimal) + "optimizer: {warmup_steps: 4, warmup: start_at_zero}\n", "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec.optimizer().warmup(), aln::v1::START_AT_ZERO);
  auto defaults = load_job_text(kMinimal, "job.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->spec.optimizer().warmup(), aln::v1::FIRST_STEP_NONZERO);
  EXPECT_EQ(load_error(std::string(kMinimal) + "optimizer: {warmup: hf}\n"),
            "job.yaml:8: optimizer.warmup: unknown value 'hf'; expected one of: first_step_nonzero, start_at_zero");
}

TEST(JobConfig, MissingFileIsAClearError) {
  auto job = load_job_file("/nonexistent/job.yaml");
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().message(), "/nonexistent/job.yaml:0: (file): cannot open the job file; check the path");
}

TEST(JobConfig, ShippedExamplesLoad) {
  const char* root = std::getenv("ALN_SOURCE_DIR");
  ASSERT_NE(root, nullptr);
  auto job = load_job_file(std::string(root) + "/examples/quickstart.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(effective_stages(job->spec).size(), 2u);
  EXPECT_EQ(method_name(job->spec.stages(1).trainer()), "safedpo");
}

// The process count the launcher and the CLI derive from a spec: the policy's grid plus the grids
// of the frozen roles that get ranks of their own.
TEST(JobConfig, WorldSizeCountsTheRolesPlacedSeparately) {
  auto job = [](const std::string& stages, const std::string& placement) {
    auto loaded = load_job_text("stages:\n" + stages + "parallel: {policy: {data_parallel: 2}, placement: " +
                                    placement + ", reference: {data_parallel: 2}, reward: {data_parallel: 1}}\n",
                                "w.yaml");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->spec;
  };
  const std::string dpo = "  - {trainer: {dpo: {}}, data: {train: [{path: p.jsonl}]}}\n";
  const std::string grpo =
      "  - {trainer: {grpo: {beta: 0}}, reward_models: [{name: rm, path: rm}], data: {train: [{path: p.csv}]}}\n";
  // GRPO's default KL term (beta > 0) takes the reference's log-probs each step.
  const std::string grpo_kl = "  - {trainer: {grpo: {}}, data: {train: [{path: p.csv}]}}\n";
  EXPECT_EQ(job_world_size(job(dpo + grpo, "colocated")), 2);
  EXPECT_EQ(job_world_size(job(dpo, "separate")), 4);
  EXPECT_EQ(job_world_size(job(grpo, "separate")), 3);
  EXPECT_EQ(job_world_size(job(dpo + grpo, "separate")), 5);
  EXPECT_EQ(job_world_size(job(grpo_kl, "separate")), 4);
  EXPECT_FALSE(separate_roles(job(grpo, "separate")).reference);
  EXPECT_TRUE(separate_roles(job(grpo, "separate")).reward);
  EXPECT_TRUE(separate_roles(job(grpo_kl, "separate")).reference);
  // HAIR needs the reference for its KL term or as its sentence encoder; with neither it gets no ranks.
  const std::string hair = "  - {trainer: {hair: {}}, data: {train: [{path: p.csv}]}}\n";
  const std::string hair_encoder = "  - {trainer: {hair: {encoder: enc}}, data: {train: [{path: p.csv}]}}\n";
  const std::string hair_bare = "  - {trainer: {hair: {encoder: enc, beta: 0}}, data: {train: [{path: p.csv}]}}\n";
  EXPECT_TRUE(separate_roles(job(hair, "separate")).reference);
  EXPECT_TRUE(separate_roles(job(hair_encoder, "separate")).reference);
  EXPECT_FALSE(separate_roles(job(hair_bare, "separate")).reference);
  EXPECT_EQ(job_world_size(job(hair_bare, "separate")), 2);
  // A coordinator of its own is one more process.
  aln::v1::JobSpec with_coordinator = job(dpo, "separate");
  with_coordinator.mutable_parallel()->set_coordinator(aln::v1::OWN_RANK);
  EXPECT_EQ(job_world_size(with_coordinator), 5);
  EXPECT_EQ(job(dpo, "colocated").parallel().coordinator(), aln::v1::WITH_POLICY);
}

TEST(JobConfig, StartupTimeout) {
  auto spec = [](const std::string& parallel) {
    auto loaded = load_job_text("trainer: {sft: {}}\ndata: {train: [{path: p.jsonl}]}\nparallel: " + parallel + "\n",
                                "s.yaml");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->spec;
  };
  // Unset: the larger of timeout_s and 60 s, since ranks start seconds apart.
  EXPECT_EQ(startup_timeout(spec("{timeout_s: 5}")).count(), 60000);
  EXPECT_EQ(startup_timeout(spec("{timeout_s: 90}")).count(), 90000);
  EXPECT_EQ(startup_timeout(spec("{timeout_s: 5, startup_timeout_s: 2.5}")).count(), 2500);
  // Below a millisecond still waits one, never zero.
  EXPECT_EQ(startup_timeout(spec("{startup_timeout_s: 0.0001}")).count(), 1);
}

// yaml-cpp says only "bad file" when nesting exceeds its depth guard.
TEST(JobConfig, DeepNestingNamesTheLimit) {
  const std::string deep = "name: x\nmodel: " + std::string(10000, '[') + std::string(10000, ']') + "\n";
  const std::string message = load_error(deep);
  EXPECT_EQ(message.rfind("job.yaml:2: (yaml): nested more than ", 0), 0u) << message;
  EXPECT_NE(message.find("levels deep (brackets or indentation)"), std::string::npos) << message;
}

// Every path a job reads is found by walking the spec, with the key path errors use.
TEST(JobConfig, InputPathsAreFoundEverywhere) {
  auto job = load_job_text(
      "model: {path: m, tokenizer: tok.json}\n"
      "stages:\n"
      "  - {name: a, trainer: {sft: {}}, data: {train: [{path: a.jsonl}, {path: b.jsonl}], eval: [{path: e.jsonl}]}}\n"
      "  - {name: b, trainer: {safedpo: {}}, data: {train: [{path: p.jsonl}]}, reference: {path: ref},\n"
      "     reward_models: [{name: cost, path: rm}]}\n",
      "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<std::string> seen;
  for (const InputPath& p : input_paths(job->spec)) seen.push_back(p.key + "=" + p.value);
  const std::vector<std::string> want = {
      "model.path=m",        "model.tokenizer=tok.json",
      "stages[0].data.train[0].path=a.jsonl", "stages[0].data.train[1].path=b.jsonl",
      "stages[0].data.eval[0].path=e.jsonl",  "stages[1].data.train[0].path=p.jsonl",
      "stages[1].reference.path=ref",         "stages[1].reward_models[0].path=rm"};
  EXPECT_EQ(seen, want);
}

// The launcher's --input-dirs: relative paths resolve against the job's working directory, ".."
// and symlinks are followed before the test, and the error names file:line and the key.
TEST(JobConfig, ReadPathsAreConfinedToTheAllowedDirectories) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("aln-input-paths-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "alice" / "data");
  fs::create_directories(root / "bob");
  std::ofstream(root / "bob" / "secret.jsonl") << "{}\n";
  fs::create_symlink(root / "bob" / "secret.jsonl", root / "alice" / "data" / "link.jsonl");
  const std::vector<std::string> allowed = {(root / "alice").string() + "/", "/nonexistent/shared"};
  auto check = [&](const std::string& path) {
    auto job = load_job_text(std::string(kMinimal).replace(std::string(kMinimal).find("prefs.jsonl"), 11, path),
                             "job.yaml");
    EXPECT_TRUE(job.ok()) << job.status();
    return confine_read_paths(*job, (root / "alice").string(), allowed);
  };
  EXPECT_TRUE(check("data/prefs.jsonl").ok());
  EXPECT_TRUE(check((root / "alice" / "new.jsonl").string()).ok());  // need not exist yet
  EXPECT_TRUE(check("/nonexistent/shared/x.jsonl").ok());
  const absl::Status escape = check("../bob/secret.jsonl");
  EXPECT_EQ(std::string(escape.message()).rfind("job.yaml:7: data.train[0].path: '../bob/secret.jsonl' is " +
                                                    (root / "bob" / "secret.jsonl").string() + ", outside",
                                                0),
            0u)
      << escape;
  EXPECT_FALSE(check("data/link.jsonl").ok());  // a link out of the allowed directory
  EXPECT_FALSE(check((root / "alicex" / "a.jsonl").string()).ok());  // a prefix of the name is not inside
  EXPECT_FALSE(check("/etc/passwd").ok());
  auto job = load_job_text(kMinimal, "job.yaml");
  ASSERT_TRUE(job.ok());
  EXPECT_TRUE(confine_read_paths(*job, "/anywhere", {}).ok());  // no --input-dirs: everything
  fs::remove_all(root);
}

// Every method's traits as job.proto declares them (the rules are read, none throws).
TEST(MethodTraits, DeclaredOnEachMethodsOptions) {
  EXPECT_EQ(method_names(), (std::vector<std::string>{"sft", "reward", "dpo", "safedpo", "tdpo", "radpo", "grpo",
                                                       "ptalign", "controllable", "hair"}));
  EXPECT_EQ(method_names(/*pipeline_only=*/true), (std::vector<std::string>{"sft", "reward", "dpo", "safedpo"}));
  std::string generating, with_reference, in_steps;
  for (const std::string& name : method_names()) {
    auto job = load_job_text("trainer: {" + name + ": {}}\ndata: {train: [{path: x.jsonl}]}\n", "job.yaml");
    ASSERT_TRUE(job.ok()) << job.status();
    const MethodTraits traits = method_traits(job->spec.trainer());
    EXPECT_EQ(traits.name, name);
    if (traits.generates) generating += name + " ";
    if (traits.reference_ranks) with_reference += name + " ";
    if (traits.samples_in_steps) in_steps += name + " ";
  }
  EXPECT_EQ(generating, "grpo ptalign controllable hair ");
  // PT-ALIGN generates before its stage; the controllable method samples in its steps only with objective rl.
  EXPECT_EQ(in_steps, "grpo hair ");
  auto rl = load_job_text("trainer: {controllable: {objective: rl}}\ndata: {train: [{path: x.jsonl}]}\n", "job.yaml");
  ASSERT_TRUE(rl.ok()) << rl.status();
  EXPECT_TRUE(method_traits(rl->spec.trainer()).samples_in_steps);
  // With their defaults: GRPO's KL term is on (beta > 0), HAIR's sentence encoder is the
  // reference, the controllable method's default objective (clm) needs none.
  EXPECT_EQ(with_reference, "dpo safedpo tdpo radpo grpo hair ");
  EXPECT_TRUE(method_traits(aln::v1::TrainerSpec()).name.empty());
}

}  // namespace
}  // namespace aln::config
