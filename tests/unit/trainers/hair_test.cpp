// HAIR's parts on a tiny model: sentence splitting, demonstrations (template, file errors), category
// balance, the score model made from a language model, shadow reward models (IRL direction,
// checkpoint round trip, category mismatch), and the hardness kernels' edge cases.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "kernels/hair.h"
#include "tests/unit/trainers/tiny_model.h"
#include "trainers/hair/demonstrations.h"
#include "trainers/sentence_embeddings.h"
#include "trainers/hair/shadow_rewards.h"

namespace aln::trainers::hair {
namespace {
namespace fs = std::filesystem;

std::string temp_dir() {
  std::string t = (fs::temp_directory_path() / "aln_hair_XXXXXX").string();
  return ::mkdtemp(t.data());
}

TEST(Hair, SplitsSentencesAtEndPunctuationAndLineBreaks) {
  EXPECT_EQ(split_sentences("Draft: a.\nDraft: b!  I can't help. Why? 3.5 is fine"),
            (std::vector<std::string>{"Draft: a.", "Draft: b!", "I can't help.", "Why?", "3.5 is fine"}));
  EXPECT_TRUE(split_sentences(" ... \n\n !! ").empty());
  EXPECT_EQ(split_sentences("no end"), (std::vector<std::string>{"no end"}));
}

TEST(Hair, RendersTheTemplateAndNamesMetrics) {
  EXPECT_EQ(render_demonstration("Q: {prompt} / {category}", "how?", "Violence"), "Q: how? / violence");
  EXPECT_NE(std::string(kDefaultDemonstrationTemplate).find("{category}"), std::string::npos);
  EXPECT_EQ(metric_suffix("Hate, harassment and discrimination"), "hate_harassment_and_discrimination");
  EXPECT_EQ(metric_suffix("--"), "uncategorized");
}

TEST(Hair, DemonstrationFileErrorsNameTheLineAndField) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/demos.jsonl";
  std::ofstream(path) << "{\"prompt\": \"a\", \"demonstration\": \"No.\"}\n\n{\"prompt\": \"b\"}\n";
  auto r = read_demonstrations(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("demos.jsonl:3: field \"demonstration\""), std::string::npos)
      << r.status().message();
  std::ofstream(path) << "{\"prompt\": \"a\", \"demonstration\": \"No.\"}\n";
  auto ok = read_demonstrations(path);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->at("a"), "No.");
  EXPECT_FALSE(read_demonstrations(dir + "/missing.jsonl").ok());
  fs::remove_all(dir);
}

TEST(Hair, BalancesCategoriesToTheSmallest) {
  std::vector<buffer::Example> ex;
  for (int i = 0; i < 7; ++i) {
    buffer::Example e;
    e.category = i < 4 ? "a" : (i < 6 ? "b" : "");
    e.source = std::to_string(i);
    ex.push_back(e);
  }
  auto copy = ex;
  EXPECT_EQ(balance_categories(ex, 0, 1), 4);  // a: 4 -> 1, b: 2 -> 1, uncategorized: 1
  ASSERT_EQ(ex.size(), 3u);
  std::map<std::string, int> count;
  for (const auto& e : ex) count[category_of(e)]++;
  EXPECT_EQ(count, (std::map<std::string, int>{{"a", 1}, {"b", 1}, {"uncategorized", 1}}));
  EXPECT_EQ(balance_categories(copy, 2, 1), 2);  // a: 4 -> 2
  EXPECT_EQ(copy.size(), 5u);
}

TEST(Hair, ScoreModelFromALanguageModelStartsAtZero) {
  auto lm = model::DecoderModel::random_init(testing::tiny_config(), 3);
  auto rm = score_model_from(lm);
  EXPECT_EQ(rm.config().head, model::Head::kSequenceScore);
  at::Tensor ids = at::randint(0, 40, {3, 5}, at::kLong);
  EXPECT_EQ(rm.scores(ids, at::ones_like(ids)).abs().max().item<float>(), 0.0f);
  // The body is a copy, not a view of the policy's tensors.
  rm.tensors().at("model.norm.weight").add_(1);
  EXPECT_FALSE(at::equal(rm.tensors().at("model.norm.weight"), lm.tensors().at("model.norm.weight")));
}

// One IRL update raises r(demo) - r(sample) on the batch it learned from.
TEST(Hair, IrlStepPrefersTheDemonstration) {
  auto lm = model::DecoderModel::random_init(testing::tiny_config(), 4);
  ShadowRewards shadows({"a", "b"}, lm, false, 1e-2);
  ASSERT_EQ(shadows.num_models(), 2u);
  EXPECT_EQ(shadows.model_of("b"), 1u);
  EXPECT_THROW(shadows.model_of("c"), std::exception);
  at::Tensor demo = at::randint(0, 40, {2, 6}, at::kLong), sample = at::randint(0, 40, {2, 6}, at::kLong);
  at::Tensor mask = at::ones_like(demo);
  auto gap = [&] {
    at::NoGradGuard g;
    auto& m = shadows.model(0);
    return (m.scores(demo, mask) - m.scores(sample, mask)).mean().item<double>();
  };
  const double before = gap();
  for (int i = 0; i < 5; ++i) {
    auto& m = shadows.model(0);
    m.set_requires_grad(true);
    at::softplus(-(m.scores(demo, mask) - m.scores(sample, mask))).mean().backward();
    shadows.step(0, nullptr);
    m.set_requires_grad(false);
  }
  EXPECT_GT(gap(), before + 0.01);
  // Model 1 did not move.
  EXPECT_EQ(shadows.model(1).scores(demo, mask).abs().max().item<float>(), 0.0f);

  const std::string dir = temp_dir();
  ASSERT_TRUE(shadows.save(dir).ok());
  ShadowRewards again({"a", "b"}, lm, false, 1e-2);
  ASSERT_TRUE(again.load(dir).ok());
  EXPECT_TRUE(at::equal(again.model(0).scores(demo, mask), shadows.model(0).scores(demo, mask)));
  ShadowRewards other({"a", "z"}, lm, false, 1e-2);
  absl::Status s = other.load(dir);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("categories [a, b]"), std::string::npos) << s.message();
  ShadowRewards shared({"a", "b"}, lm, true, 1e-2);
  EXPECT_EQ(shared.num_models(), 1u);
  EXPECT_EQ(shared.model_of("b"), 0u);
  EXPECT_FALSE(shared.load(dir).ok());
  fs::remove_all(dir);
}

TEST(Hair, MeanPooledEmbeddingsIgnorePadding) {
  auto lm = model::DecoderModel::random_init(testing::tiny_config(), 5);
  std::vector<std::vector<int64_t>> s = {{1, 2, 3}, {4}, {1, 2, 3}};
  at::Tensor e = mean_pooled_embeddings(lm, s, 0, 2);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_TRUE(at::allclose(e[0], e[2], 1e-6, 1e-6));  // batched with different partners, same result
  at::Tensor alone = mean_pooled_embeddings(lm, {{4}}, 0);
  EXPECT_TRUE(at::allclose(e[1], alone[0], 1e-6, 1e-6));
}

TEST(Hair, HardnessKernelEdgeCases) {
  at::Tensor demo = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).view({2, 2});
  const at::Tensor empty = kernels::hair_similarity(at::zeros({0, 2}, at::kDouble), demo);
  EXPECT_EQ(empty.dim(), 0);
  EXPECT_EQ(empty.scalar_type(), at::kDouble);
  EXPECT_DOUBLE_EQ(empty.item<double>(), 0.0);  // no sentence: W = 0
  EXPECT_NEAR(kernels::hair_similarity(at::tensor({3.0, 0.0}, at::kDouble).view({1, 2}), demo).item<double>(), 1.0,
              1e-12);
  // Equal deltas in a group: alpha^D = 1.
  EXPECT_TRUE(at::allclose(kernels::hair_data_alpha(at::full({4}, 0.3, at::kDouble), 4), at::ones({4}, at::kDouble)));
  // No outlier: R_P = mean R, alpha^M = 1; every gap an outlier: the same (all kept).
  auto none = kernels::hair_model_alpha(at::tensor({0.1, 0.2, 0.3, 0.4}, at::kDouble), 4, 1.0);
  EXPECT_DOUBLE_EQ(none.alpha[0].item<double>(), 1.0);
  auto all = kernels::hair_model_alpha(at::tensor({-5.0, 5.0}, at::kDouble), 2, 1.0);
  EXPECT_DOUBLE_EQ(all.alpha[0].item<double>(), 1.0);
  // One outlier dropped: R_P = mean of the rest.
  auto one = kernels::hair_model_alpha(at::tensor({0.0, 0.0, 0.0, 4.0}, at::kDouble), 4, 1.0);
  EXPECT_NEAR(one.alpha[0].item<double>(), 0.5 / (1 / (1 + std::exp(-1.0))), 1e-12);
  EXPECT_EQ(one.kept.sum().item<double>(), 3.0);
}

}  // namespace
}  // namespace aln::trainers::hair
