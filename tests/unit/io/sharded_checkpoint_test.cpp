// Sharded checkpoints: the huggingface_hub split, round trips, index/shard disagreement.
#include "core/io/sharded_checkpoint.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace aln::io {
namespace {

namespace fs = std::filesystem;

class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("aln_io_sharded_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

nlohmann::json read_json(const std::string& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// 10 float tensors of 40 bytes each plus one of 400 bytes and an int64 one.
NamedTensors model_tensors() {
  NamedTensors tensors;
  for (int i = 0; i < 10; ++i) {
    tensors.emplace_back("layers." + std::to_string(i) + ".weight",
                         at::arange(10 * i, 10 * i + 10, at::TensorOptions().dtype(at::kFloat)));
  }
  tensors.emplace_back("embed", at::arange(100, at::TensorOptions().dtype(at::kFloat)).reshape({10, 10}));
  tensors.emplace_back("ids", at::arange(3, at::TensorOptions().dtype(at::kLong)));
  return tensors;
}

TEST(PlanShards, FollowsHuggingfaceHub) {
  // The example from huggingface_hub's docstring: [6, 6, 2, 6, 2, 2] with limit 10 -> [6], [6+2], [6+2+2].
  EXPECT_EQ(plan_shards({6, 6, 2, 6, 2, 2}, 10), (std::vector<std::vector<size_t>>{{0}, {1, 2}, {3, 4, 5}}));
  // Oversized tensors get their own shard without closing the current one.
  EXPECT_EQ(plan_shards({2, 20, 3, 10}, 10), (std::vector<std::vector<size_t>>{{1}, {0, 2}, {3}}));
  EXPECT_EQ(plan_shards({0, 0}, 1), (std::vector<std::vector<size_t>>{{0, 1}}));
  EXPECT_TRUE(plan_shards({}, 10).empty());
}

TEST_F(ShardedCheckpointTest, RoundTripsShards) {
  const NamedTensors tensors = model_tensors();
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), tensors, /*max_shard_bytes=*/130).ok());
  // 10 x 40 bytes in shards of three, the 400-byte tensor alone, the ids with the last small ones.
  const nlohmann::json index = read_json(path("model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 10 * 40 + 400 + 24);
  EXPECT_EQ(index["metadata"]["total_parameters"], 10 * 10 + 100 + 3);
  EXPECT_EQ(index["weight_map"]["layers.0.weight"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.3.weight"], "model-00002-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["embed"], "model-00004-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["ids"], "model-00005-of-00005.safetensors");
  EXPECT_FALSE(fs::exists(path("model.safetensors")));

  for (auto load : {+[](const std::string& d) { return load_sharded_safetensors(d + "/model.safetensors.index.json"); },
                    +[](const std::string& d) { return load_safetensors_checkpoint(d); }}) {
    auto loaded = load(dir_.string());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->tensors.size(), tensors.size());
    for (const auto& [name, t] : tensors) {
      ASSERT_TRUE(loaded->tensors.contains(name)) << name;
      EXPECT_TRUE(loaded->tensors.at(name).equal(t)) << name;
    }
    EXPECT_EQ(loaded->metadata.at("total_size"), "824");
  }
  auto shard = load_safetensors(path("model-00001-of-00005.safetensors"));
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->metadata, (SafetensorsMetadata{{"format", "pt"}}));
}

TEST_F(ShardedCheckpointTest, SingleShardHasNoIndexAndStaleFilesGo) {
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), model_tensors(), 130).ok());
  std::ofstream(path("unrelated.txt")) << "keep me";
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), model_tensors()).ok());  // 5 GB limit: one file
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"model.safetensors", "unrelated.txt"}));
  auto loaded = load_safetensors_checkpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->tensors.size(), model_tensors().size());

  // And back to shards: the single file must go, or loaders preferring it would read stale weights.
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), model_tensors(), 500).ok());
  EXPECT_FALSE(fs::exists(path("model.safetensors")));
  EXPECT_TRUE(fs::exists(path("model-00002-of-00002.safetensors")));
  EXPECT_FALSE(fs::exists(path("model-00001-of-00005.safetensors")));
}

TEST_F(ShardedCheckpointTest, IndexLayoutMatchesTransformers) {
  // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n".
  NamedTensors tensors = {{"b", at::empty({4}, at::kFloat)}, {"a", at::empty({4}, at::kFloat)}};
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), tensors, 16).ok());
  std::ifstream in(path("model.safetensors.index.json"));
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(),
            "{\n  \"metadata\": {\n    \"total_parameters\": 8,\n    \"total_size\": 32\n  },\n"
            "  \"weight_map\": {\n    \"a\": \"model-00002-of-00002.safetensors\",\n"
            "    \"b\": \"model-00001-of-00002.safetensors\"\n  }\n}\n");
}

TEST_F(ShardedCheckpointTest, RejectsIndexThatDisagreesWithShards) {
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), model_tensors(), 130).ok());
  const std::string index_path = path("model.safetensors.index.json");
  const nlohmann::json good = read_json(index_path);
  auto expect_error = [&](const nlohmann::json& index, const std::string& what) {
    std::ofstream(index_path) << index.dump();
    auto loaded = load_sharded_safetensors(index_path);
    ASSERT_FALSE(loaded.ok()) << what;
    EXPECT_NE(loaded.status().message().find(what), std::string_view::npos) << loaded.status();
  };
  nlohmann::json moved = good;
  moved["weight_map"]["layers.0.weight"] = "model-00002-of-00005.safetensors";
  expect_error(moved, "which the weight_map does not assign to it");
  nlohmann::json extra = good;
  extra["weight_map"]["ghost"] = "model-00001-of-00005.safetensors";
  expect_error(extra, "weight_map assigns tensor 'ghost' to model-00001-of-00005.safetensors");
  nlohmann::json escape = good;
  escape["weight_map"]["ids"] = "../model-00005-of-00005.safetensors";
  expect_error(escape, "must be a file name in the index's folder");
  expect_error(nlohmann::json::array(), "must be a JSON object");
  expect_error(nlohmann::json{{"metadata", nlohmann::json::object()}}, "\"weight_map\"");
  nlohmann::json missing_shard = good;
  missing_shard["weight_map"]["ghost"] = "model-00009-of-00009.safetensors";
  std::ofstream(index_path) << missing_shard.dump();
  EXPECT_EQ(load_sharded_safetensors(index_path).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace aln::io

namespace aln::io {
namespace {

// A pipeline stage reads only its tensors: the filter picks them, from whichever shards hold them.
TEST_F(ShardedCheckpointTest, FilteredLoadReadsOnlyTheWantedTensors) {
  const NamedTensors tensors = model_tensors();
  ASSERT_TRUE(save_sharded_safetensors(dir_.string(), tensors, 200).ok());
  auto wanted = [](const std::string& name) { return name == "layers.7.weight" || name == "ids"; };
  auto loaded = load_safetensors_checkpoint(dir_.string(), wanted);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->tensors.size(), 2u);
  EXPECT_TRUE(
      at::equal(loaded->tensors.at("layers.7.weight"), at::arange(70, 80, at::TensorOptions().dtype(at::kFloat))));
  EXPECT_TRUE(at::equal(loaded->tensors.at("ids"), at::arange(3, at::TensorOptions().dtype(at::kLong))));
  // One file: the same filter.
  const fs::path single = dir_ / "single";
  fs::create_directories(single);
  ASSERT_TRUE(save_sharded_safetensors(single.string(), tensors).ok());
  auto one = load_safetensors_checkpoint(single.string(), wanted);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->tensors.size(), 2u);
}

}  // namespace
}  // namespace aln::io
