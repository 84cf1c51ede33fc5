// Checkpoints, the reference-log-prob cache and run logs: round trips bitwise, damage is detected
// with a message naming the file, keep_last prunes, and resumed logs drop the redone steps.
#include <gtest/gtest.h>

#include <unistd.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fingerprint.h"
#include "core/model/hf_checkpoint.h"
#include "core/model/model_config.h"
#include "tests/unit/trainers/tiny_model.h"
#include "trainers/engine/checkpoint.h"
#include "trainers/engine/fsdp_checkpoint.h"
#include "trainers/engine/job_outputs.h"
#include "trainers/engine/reference_cache.h"
#include "trainers/engine/rng_state.h"
#include "trainers/engine/run_log.h"

namespace aln::engine {
namespace {
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() /
              ("aln-ckpt-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

model::DecoderModel tiny_model(uint64_t seed) { return model::DecoderModel::random_init(testing::tiny_config(), seed); }

// A checkpoint of a whole policy (and reference, optimizer state), nothing else.
CheckpointContents whole_contents(const model::DecoderModel* policy, const model::DecoderModel* reference,
                                  const optim::TensorMap* optimizer) {
  CheckpointContents c;
  c.policy = policy;
  c.reference = reference;
  c.optimizer = optimizer;
  return c;
}

TrainingState sample_state(int64_t step) {
  TrainingState s;
  s.global_step = step;
  s.stage_index = 1;
  s.stage_name = "dpo";
  s.stage_step = step - 10;
  s.position = {2, 17};
  s.consecutive_nonfinite = 1;
  s.reference_cache_key = "abc";
  s.spec_fingerprint = "f00";
  s.stage_before = {{"preference_accuracy", 0.1 + 1e-17}, {"loss", 0.6931471805599453}};
  StageReport r;
  r.stage = "sft";
  r.trainer = "sft";
  r.steps = 10;
  r.seconds = 1.5;
  r.before = {{"loss", 3.25}};
  r.after = {{"loss", 1.0 / 3.0}};
  s.finished.push_back(r);
  return s;
}

TEST(Checkpoint, RoundTripIsBitwise) {
  TempDir dir;
  CheckpointManager manager(dir.path().string(), 2);
  model::DecoderModel policy = tiny_model(1);
  model::DecoderModel reference = tiny_model(2);
  optim::TensorMap opt{{"step", at::tensor(int64_t{7})}, {"w.exp_avg", at::randn({3, 4}, at::kFloat)}};
  auto saved = manager.save(whole_contents(&policy, &reference, &opt), sample_state(12));
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(fs::path(*saved).filename(), "step-00000012");
  auto loaded = CheckpointManager::load(*saved);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (const auto& [name, t] : policy.tensors()) EXPECT_TRUE(at::equal(t, loaded->policy->tensors().at(name))) << name;
  // The reference is named, not read: its stage reads it (whole, or streamed into shards).
  ASSERT_EQ(loaded->reference_dir, (fs::path(*saved) / "reference").string());
  auto loaded_reference = model::load_hf_model(loaded->reference_dir);
  ASSERT_TRUE(loaded_reference.ok()) << loaded_reference.status();
  for (const auto& [name, t] : reference.tensors()) EXPECT_TRUE(at::equal(t, loaded_reference->tensors().at(name)));
  EXPECT_TRUE(at::equal(opt["w.exp_avg"], loaded->optimizer.at("w.exp_avg")));
  EXPECT_EQ(loaded->optimizer.at("step").item<int64_t>(), 7);
  const TrainingState& s = loaded->state;
  EXPECT_EQ(s.global_step, 12);
  EXPECT_EQ(s.stage_index, 1);
  EXPECT_EQ(s.stage_step, 2);
  EXPECT_EQ(s.position.epoch, 2);
  EXPECT_EQ(s.position.offset, 17);
  EXPECT_EQ(s.consecutive_nonfinite, 1);
  EXPECT_EQ(s.reference_cache_key, "abc");
  EXPECT_EQ(s.stage_before.at("preference_accuracy"), 0.1 + 1e-17);  // doubles survive exactly
  ASSERT_EQ(s.finished.size(), 1u);
  EXPECT_EQ(s.finished[0].after.at("loss"), 1.0 / 3.0);
  ASSERT_EQ(loaded->rng.count("cpu"), 1u);
  EXPECT_TRUE(at::equal(loaded->rng.at("cpu"), rng_states().at("cpu")));
}

// A fully sharded run's checkpoint: 3 ranks wrote their parts of a tiny model's parameters and
// moments (each parameter cut in three, as units cut them); the manager moves them in, loading puts
// the policy back together bit for bit, and a rank of a 2-rank run reads exactly its own ranges.
TEST(Checkpoint, ShardedPartsResumeOnAnotherRankCount) {
  TempDir dir;
  CheckpointManager manager(dir.path().string(), 2);
  const model::DecoderModel policy = tiny_model(3);
  ASSERT_TRUE(manager.prepare_staging(8).ok());
  const std::string staging = manager.staging_shards(8);
  ShardIndex index;
  index.ranks = 3;
  index.config_json = model::to_hf_config_json(policy.config());
  std::vector<optim::TensorMap> files(3);
  for (const auto& [name, t] : policy.tensors()) {
    const int64_t n = t.numel();
    ShardedTensor& st = index.tensors[name];
    st.shape = t.sizes().vec();
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t a = k * n / 3, b = (k + 1) * n / 3;
      if (a == b) continue;
      st.parts.push_back({k, a, b - a});
      const at::Tensor part = t.detach().reshape(-1).narrow(0, a, b - a);
      files[static_cast<size_t>(k)][name] = part;
      files[static_cast<size_t>(k)][name + ".exp_avg"] = part * 2;
      files[static_cast<size_t>(k)][name + ".exp_avg_sq"] = part * part;
    }
  }
  for (int64_t k = 0; k < 3; ++k) {
    files[static_cast<size_t>(k)]["step"] = at::scalar_tensor(int64_t{8}, at::kLong);
    ASSERT_TRUE(write_rank_shard(staging, k, 3, files[static_cast<size_t>(k)]).ok());
  }
  ASSERT_TRUE(write_shard_index(staging, index).ok());
  CheckpointContents contents;
  contents.shards = true;
  auto saved = manager.save(contents, sample_state(8));
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_TRUE(fs::exists(fs::path(*saved) / "shards" / "rank-00002-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(*saved) / "model"));
  auto loaded = CheckpointManager::load(*saved);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->shards.has_value());
  EXPECT_TRUE(loaded->optimizer.empty());
  for (const auto& [name, t] : policy.tensors()) EXPECT_TRUE(at::equal(t, loaded->policy->tensors().at(name))) << name;
  // Rank 1 of 2: the second half of every parameter, which the old ranks 1 and 2 hold.
  std::vector<ShardRange> ranges;
  for (const auto& [name, t] : policy.tensors()) ranges.push_back({name, t.numel() / 2, t.numel() - t.numel() / 2});
  auto mine = read_shard_ranges(*loaded->shards, ranges, {".exp_avg", ".exp_avg_sq"});
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->size(), 2 * policy.tensors().size());
  for (const ShardRange& r : ranges) {
    const at::Tensor want = policy.tensors().at(r.name).detach().reshape(-1).narrow(0, r.offset, r.numel);
    EXPECT_TRUE(at::equal(mine->at(r.name + ".exp_avg"), want * 2)) << r.name;
    EXPECT_TRUE(at::equal(mine->at(r.name + ".exp_avg_sq"), want * want)) << r.name;
  }
  auto step = read_shard_step(*loaded->shards);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->item<int64_t>(), 8);
  auto whole = read_shard_whole(*loaded->shards, {".exp_avg"});
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (const auto& [name, t] : policy.tensors()) EXPECT_TRUE(at::equal(whole->at(name + ".exp_avg"), t.detach() * 2));
}

// A damaged index or shard is refused with the file and the tensor named.
TEST(Checkpoint, DamagedShardsAreNamed) {
  TempDir dir;
  const std::string shards = dir.path().string();
  const at::Tensor w = at::arange(10, at::kFloat);
  ASSERT_TRUE(
      write_rank_shard(shards, 0, 2, {{"w", w.narrow(0, 0, 5)}, {"step", at::scalar_tensor(int64_t{1}, at::kLong)}})
          .ok());
  ASSERT_TRUE(write_rank_shard(shards, 1, 2, {{"w", w.narrow(0, 5, 4)}}).ok());  // one element short
  ShardIndex index;
  index.ranks = 2;
  index.config_json = "{}";
  index.tensors["w"] = {{10}, {{0, 0, 5}, {1, 5, 5}}};
  ASSERT_TRUE(write_shard_index(shards, index).ok());
  auto loaded = load_shard_index(shards);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto read = read_shard_whole(*loaded, {""});
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("rank-00001-of-00002.safetensors: w has 4 elements, index.json says 5"),
            std::string::npos)
      << read.status();
  index.tensors["w"] = {{10}, {{0, 0, 5}, {1, 6, 4}}};  // a gap
  ASSERT_TRUE(write_shard_index(shards, index).ok());
  auto gap = load_shard_index(shards);
  ASSERT_FALSE(gap.ok());
  EXPECT_NE(gap.status().message().find("index.json: tensors.w.parts: [1, 6, 4] does not follow"), std::string::npos)
      << gap.status();
  // Damage that must be an error, never a crash or a huge allocation: a non-string format, a shape
  // whose element count overflows, a rank count that disagrees with the files.
  const std::string files = R"("files": ["rank-00000-of-00002.safetensors", "rank-00001-of-00002.safetensors"])";
  for (const std::string& text :
       {std::string(R"({"format": 5, "ranks": 2})"),
        R"({"format": "aln-shards-v1", "ranks": 2, )" + files +
            R"(, "config": {}, "tensors": {"w": {"shape": [4294967296, 4294967296], "parts": []}}})",
        std::string(
            R"({"format": "aln-shards-v1", "ranks": 1000000000000, "files": [], "config": {}, "tensors": {}})")}) {
    std::ofstream(dir.path() / "index.json") << text;
    auto damaged = load_shard_index(shards);
    ASSERT_FALSE(damaged.ok()) << text;
    EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss) << damaged.status();
    EXPECT_NE(damaged.status().message().find("index.json"), std::string::npos) << damaged.status();
  }
}

TEST(Checkpoint, KeepsTheNewestAndSkipsDamagedOnes) {
  TempDir dir;
  CheckpointManager manager(dir.path().string(), 2);
  model::DecoderModel policy = tiny_model(1);
  const optim::TensorMap none;
  for (int64_t step : {5, 10, 15})
    ASSERT_TRUE(manager.save(whole_contents(&policy, nullptr, &none), sample_state(step)).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "step-00000005"));
  EXPECT_TRUE(fs::exists(dir.path() / "step-00000010"));
  fs::create_directories(dir.path() / ".step-00000020.tmp-1");  // a save that died half way
  Logger log(0, "test", LogLevel::kError);
  EXPECT_EQ(fs::path(*manager.latest(log)).filename(), "step-00000015");
  // A file that is truncated after the manifest was written: the checkpoint no longer counts.
  fs::resize_file(dir.path() / "step-00000015" / "optimizer.safetensors", 3);
  absl::Status bad = verify_manifest((dir.path() / "step-00000015").string());
  EXPECT_NE(bad.message().find("optimizer.safetensors has 3 bytes"), std::string::npos) << bad;
  EXPECT_EQ(fs::path(*manager.latest(log)).filename(), "step-00000010");
  ASSERT_TRUE(manager.save(whole_contents(&policy, nullptr, &none), sample_state(20)).ok());
  EXPECT_FALSE(fs::exists(dir.path() / ".step-00000020.tmp-1"));
  fs::remove(dir.path() / "step-00000010" / "MANIFEST.json");
  EXPECT_FALSE(CheckpointManager::load((dir.path() / "step-00000010").string()).ok());
}

TEST(ReferenceCache, RoundTripAndSizeCheck) {
  TempDir dir;
  std::vector<buffer::Example> train(3), eval(1);
  for (size_t i = 0; i < train.size(); ++i) {
    train[i].chosen = {1, 2, static_cast<int64_t>(i)};
    train[i].reference_chosen = -1.0 / static_cast<double>(i + 3);
    train[i].reference_rejected = -2.5 * static_cast<double>(i);
  }
  eval[0].reference_chosen = -0.125;
  eval[0].reference_rejected = -7;
  const std::string file = (dir.path() / "k.safetensors").string();
  ASSERT_TRUE(save_reference_cache(file, train, eval, "test").ok());
  std::vector<buffer::Example> train2(3), eval2(1);
  ASSERT_TRUE(load_reference_cache(file, &train2, &eval2).ok());
  for (size_t i = 0; i < train.size(); ++i) {
    EXPECT_EQ(train2[i].reference_chosen, train[i].reference_chosen);
    EXPECT_EQ(train2[i].reference_rejected, train[i].reference_rejected);
  }
  EXPECT_EQ(eval2[0].reference_rejected, -7);
  std::vector<buffer::Example> wrong(2);
  absl::Status s = load_reference_cache(file, &wrong, &eval2);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(load_reference_cache((dir.path() / "none.safetensors").string(), &train2, &eval2).code(),
            absl::StatusCode::kNotFound);
  // Keys change with the data and the model.
  const std::string before = examples_fingerprint(train, eval);
  train[1].chosen.push_back(9);
  EXPECT_NE(examples_fingerprint(train, eval), before);
  EXPECT_NE(model_fingerprint(tiny_model(1)), model_fingerprint(tiny_model(2)));
  EXPECT_EQ(model_fingerprint(tiny_model(1)), model_fingerprint(tiny_model(1)));
}

TEST(Fingerprint, StableAndBoundarySensitive) {
  EXPECT_EQ(Fingerprint().add("abc").hex(), Fingerprint().add("abc").hex());
  EXPECT_EQ(Fingerprint().add("abc").hex().size(), 32u);
  EXPECT_NE(Fingerprint().add("ab").add("c").hex(), Fingerprint().add("a").add("bc").hex());
  EXPECT_NE(Fingerprint().add(int64_t{1}).hex(), Fingerprint().add(int64_t{2}).hex());
}

TEST(JsonlLog, ResumeDropsRedoneSteps) {
  TempDir dir;
  const std::string path = (dir.path() / "sub" / "log.jsonl").string();
  {
    auto log = JsonlLog::open(path, 0);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int step = 1; step <= 5; ++step)
      ASSERT_TRUE(log->append("{\"global_step\":" + std::to_string(step) + "}").ok());
  }
  { std::ofstream(path, std::ios::app) << "{\"global_step\":6,\"lo"; }  // torn by a kill
  auto resumed = JsonlLog::open(path, 3);
  ASSERT_TRUE(resumed.ok());
  ASSERT_TRUE(resumed->append("{\"global_step\":4}").ok());
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "{\"global_step\":1}\n{\"global_step\":2}\n{\"global_step\":3}\n{\"global_step\":4}\n");
}

// What the policy's first rank sends the coordinator's own process: the state and report as JSON
// come back equal (a NaN metric as NaN); a directory's files, sent in pieces, come back byte for
// byte; paths that leave the target are refused.
TEST(CoordinatorMessages, StateReportAndFilesRoundTrip) {
  TrainingState state;
  state.global_step = 12;
  state.stage_index = 1;
  state.stage_name = "dpo";
  state.stage_step = 4;
  state.position = {2, 17};
  state.data_parallel = 3;
  state.reference_cache_key = "abc";
  state.spec_fingerprint = "f00d";
  state.stage_before = {{"loss", 0.5}};
  state.finished.push_back(StageReport{"sft", "sft", {{"loss", 2.0}}, {{"loss", 1.25}}, 8, 3.5});
  auto back = state_from_json(state_to_json(state), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(state_to_json(*back), state_to_json(state));
  EXPECT_EQ(back->position.offset, 17);
  EXPECT_EQ(state_from_json("{\"global_step\": 1}", "the state").status().message().rfind("the state: ", 0), 0u);

  JobReport report{state.finished, "/out/final", "/out/checkpoints/step-00000005"};
  auto report_back = report_from_json(report_to_json(report), "test");
  ASSERT_TRUE(report_back.ok()) << report_back.status();
  EXPECT_EQ(report_back->final_model_dir, "/out/final");
  EXPECT_EQ(report_back->resumed_from, report.resumed_from);
  ASSERT_EQ(report_back->stages.size(), 1u);
  EXPECT_EQ(report_back->stages[0].after.at("loss"), 1.25);
  report.stages[0].after["loss"] = std::nan("");
  report_back = report_from_json(report_to_json(report), "test");
  ASSERT_TRUE(report_back.ok()) << report_back.status();
  EXPECT_TRUE(std::isnan(report_back->stages[0].after.at("loss")));

  TempDir from, to;
  fs::create_directories(from.path() / "sub");
  { std::ofstream(from.path() / "a.bin", std::ios::binary) << std::string("x\0y", 3); }
  { std::ofstream(from.path() / "sub" / "b.txt") << "hello"; }
  // Pieces of at most 2 bytes, reassembled in order.
  FileMap files;
  int pieces = 0;
  ASSERT_TRUE(read_file_chunks(from.path().string(), 2, [&](const std::string& path, std::string bytes) {
                ++pieces;
                files[path] += bytes;
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(pieces, 2 + 3);
  ASSERT_EQ(files.size(), 2u);
  ASSERT_TRUE(write_files(files, (to.path() / "out").string()).ok());
  std::ifstream a(to.path() / "out" / "a.bin", std::ios::binary), b(to.path() / "out" / "sub" / "b.txt");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(a)), std::istreambuf_iterator<char>()), std::string("x\0y", 3));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>()), "hello");
  for (const char* bad : {"../escape", "/etc/passwd", "sub/../../x"}) {
    EXPECT_EQ(write_files({{bad, "x"}}, to.path().string()).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// A skipped step's line has a null loss (JSON has no NaN): written as is, and the progress display
// takes the NaN.
TEST(CoordinatorMessages, LogLinesWithNullNumbers) {
  TempDir dir;
  aln::v1::JobSpec spec;
  spec.set_output_dir(dir.path().string());
  LocalOutputs outputs(spec, (dir.path() / "checkpoints").string(), ProgressStyle::kNone);
  ASSERT_TRUE(outputs.open(0).ok());
  ASSERT_TRUE(outputs.stage_started("s", 4).ok());
  EXPECT_TRUE(outputs
                  .train_line("{\"global_step\":1,\"step\":1,\"loss\":null,\"tokens_per_second\":null}", 1,
                              std::nan(""), std::nan(""))
                  .ok());
  EXPECT_TRUE(outputs.stage_finished().ok());
  std::ifstream in(dir.path() / "train_log.jsonl");
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "{\"global_step\":1,\"step\":1,\"loss\":null,\"tokens_per_second\":null}");
}

}  // namespace
}  // namespace aln::engine

namespace aln::engine {
namespace {

// Draws after a restore repeat the draws after the save; a GPU's generator in a checkpoint resumed
// where that GPU does not exist is named back to the caller (which warns), not silently dropped.
TEST(RngState, RestoresTheDrawsAndNamesGeneratorsItCannotRestore) {
  model::TensorMap saved = rng_states();
  ASSERT_EQ(saved.count("cpu"), 1u);
  const at::Tensor first = at::rand({8});
  saved["cuda:7"] = saved.at("cpu").clone();
  const std::vector<std::string> missing = set_rng_states(saved);
  EXPECT_TRUE(at::equal(at::rand({8}), first));
  if (!at::hasCUDA()) {
    EXPECT_EQ(missing, std::vector<std::string>{"cuda:7"});
  }
  EXPECT_THROW(set_rng_states({}), Error);
}

}  // namespace
}  // namespace aln::engine
