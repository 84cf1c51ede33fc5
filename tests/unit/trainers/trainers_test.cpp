// Trainer plugins on a tiny model: SFT and reward losses against direct computations, DPO with
// cached vs on-the-fly reference log-probs, the SafeDPO transform's keep/swap/drop counts and
// variants, and the registry listing every built-in trainer.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <tuple>

#include "core/config/job_config.h"
#include "tests/unit/trainers/tiny_model.h"
#include "trainers/dpo/pair_logprobs.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/ptalign/token_weights.h"
#include "trainers/rollouts/producer.h"
#include "trainers/rollouts/rollout.h"
#include "trainers/sentence_embeddings.h"
#include "trainers/sequence_logprobs.h"
#include "trainers/trainer.h"

namespace aln::trainers {
namespace {

model::ModelConfig tiny(model::Head head) { return testing::tiny_config(head); }

aln::v1::StageSpec stage_with(const std::string& method) {
  aln::v1::StageSpec s;
  if (method == "sft") s.mutable_trainer()->mutable_sft();
  if (method == "reward") s.mutable_trainer()->mutable_reward();
  if (method == "dpo") s.mutable_trainer()->mutable_dpo()->set_beta(0.1);
  if (method == "safedpo") {
    s.mutable_trainer()->mutable_safedpo()->set_beta(0.1);
    s.mutable_trainer()->mutable_safedpo()->set_delta(10);
    s.mutable_trainer()->mutable_safedpo()->set_variant(aln::v1::SAFEDPO);
  }
  return s;
}

std::unique_ptr<Trainer> make(const std::string& method, const aln::v1::StageSpec* stage = nullptr) {
  TrainerRegistry registry("trainer");
  register_all(registry);
  auto t = registry.create(method, stage != nullptr ? *stage : stage_with(method));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

buffer::Example pair(std::vector<int64_t> p, std::vector<int64_t> c, std::vector<int64_t> r, int uc = -1, int ur = -1) {
  buffer::Example e;
  e.prompt = std::move(p);
  e.chosen = std::move(c);
  e.rejected = std::move(r);
  e.unsafe_chosen = uc;
  e.unsafe_rejected = ur;
  return e;
}

// A trainer's reference in this process answers what the model computes itself; the reference
// ranks answer with the same LocalReference (reference_role.cpp), so the two give the same bits.
TEST(Reference, LocalAnswersWhatTheModelComputes) {
  auto lm = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 5);
  const buffer::Example e = pair({1, 2, 3}, {4, 5}, {6});
  buffer::SequenceBatch b = buffer::collate_pairs({&e}, 0);
  const LocalReference reference(lm);
  EXPECT_TRUE(at::equal(reference.token_logprobs(b, 0.7), response_logprobs(lm, b, 0.7).per_token));
  const at::Tensor positions = at::tensor(std::vector<int64_t>{0, 3, 5}, at::kLong);
  const at::Tensor h = lm.hidden_states(b.input_ids, b.attention_mask);
  const int64_t t = h.size(1);
  EXPECT_TRUE(at::equal(reference.hidden_states(b.input_ids, b.attention_mask, positions),
                        h.narrow(1, 0, t - 1).reshape({-1, h.size(2)}).index_select(0, positions)));
  EXPECT_TRUE(at::equal(reference.output_weight(), lm.output_weight()));
  EXPECT_TRUE(at::equal(reference.sentence_embeddings({{1, 2}, {3}}, 0), mean_pooled_embeddings(lm, {{1, 2}, {3}}, 0)));
  // A step context made with a model gets it as its reference.
  StepContext ctx = make_step_context(&lm, &lm, 0, 0);
  ASSERT_NE(ctx.reference, nullptr);
  EXPECT_TRUE(at::equal(ctx.reference->token_logprobs(b, 1.0), response_logprobs(lm, b).per_token));
  EXPECT_EQ(make_step_context(&lm, nullptr, 0, 0).reference, nullptr);
}

TEST(Trainers, RegistryListsTheAlignmentCoreMethods) {
  TrainerRegistry registry("trainer");
  register_all(registry);
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"controllable", "dpo", "grpo", "hair", "ptalign", "radpo",
                                                        "reward", "safedpo", "sft", "tdpo"}));
}

// The launcher and the CLI count a separate reference's ranks from the spec alone (no trainers);
// the engine hands a stage to those ranks from the trainer's needs. Both must say the same.
TEST(Trainers, SeparateRolesAgreeWithTrainerNeeds) {
  TrainerRegistry registry("trainer");
  register_all(registry);
  int checked = 0;
  for (const std::string& name : registry.names()) {
    aln::v1::JobSpec job;
    aln::v1::StageSpec* stage = job.add_stages();
    const auto* field = aln::v1::TrainerSpec::descriptor()->FindFieldByName(name);
    ASSERT_NE(field, nullptr) << name;
    stage->mutable_trainer()->GetReflection()->MutableMessage(stage->mutable_trainer(), field);
    if (name == "controllable") {  // needs a scorer per attribute
      stage->mutable_trainer()->mutable_controllable()->set_helpful_rule(aln::v1::LENGTH);
      stage->mutable_trainer()->mutable_controllable()->set_harmless_rule(aln::v1::REFUSAL);
    }
    auto trainer = registry.create(name, *stage);
    ASSERT_TRUE(trainer.ok()) << name << ": " << trainer.status();
    EXPECT_EQ(config::separate_roles(job).reference, engine::served_by_reference_ranks((*trainer)->needs())) << name;
    ++checked;
    if (name == "grpo") {  // with a KL term the reference serves it each step
      stage->mutable_trainer()->mutable_grpo()->set_beta(0.04);
      auto with_kl = registry.create(name, *stage);
      ASSERT_TRUE(with_kl.ok());
      EXPECT_TRUE(engine::served_each_step((*with_kl)->needs()));
      EXPECT_TRUE(config::separate_roles(job).reference);
    }
    if (name == "hair") {  // the reference as sentence encoder too, or (encoder of its own) only scoring rollouts
      EXPECT_TRUE(engine::served_each_step((*trainer)->needs()));
      EXPECT_TRUE((*trainer)->needs().asks(ReferenceQuery::kSentenceEmbeddings));
      stage->mutable_trainer()->mutable_hair()->set_encoder("enc");
      stage->mutable_trainer()->mutable_hair()->set_beta(0.04);  // the loader's default; a bare proto has 0
      auto with_encoder = registry.create(name, *stage);
      ASSERT_TRUE(with_encoder.ok());
      EXPECT_TRUE(engine::served_each_step((*with_encoder)->needs()));
      EXPECT_FALSE((*with_encoder)->needs().asks(ReferenceQuery::kSentenceEmbeddings));
      EXPECT_TRUE(config::separate_roles(job).reference);
      stage->mutable_trainer()->mutable_hair()->set_beta(0);  // nothing left for the reference to do
      auto without_kl = registry.create(name, *stage);
      ASSERT_TRUE(without_kl.ok());
      EXPECT_TRUE((*without_kl)->needs().reference.empty());
      EXPECT_FALSE(engine::served_by_reference_ranks((*without_kl)->needs()));
      EXPECT_FALSE(config::separate_roles(job).reference);
      stage->mutable_trainer()->clear_hair();
      stage->mutable_trainer()->mutable_hair()->set_beta(0);  // beta 0, the reference still the encoder
      auto reference_encoder = registry.create(name, *stage);
      ASSERT_TRUE(reference_encoder.ok());
      EXPECT_TRUE(engine::served_each_step((*reference_encoder)->needs()));
      EXPECT_TRUE(config::separate_roles(job).reference);
    }
    if (name == "controllable") {  // the contrastive objective and RL with a KL term
      for (auto [objective, rl_beta, served] : {std::tuple{aln::v1::CONTRASTIVE, 0.0, true},
                                                {aln::v1::RL, 0.04, true},
                                                {aln::v1::RL, 0.0, false},
                                                {aln::v1::CLM, 0.04, false}}) {
        stage->mutable_trainer()->mutable_controllable()->set_objective(objective);
        stage->mutable_trainer()->mutable_controllable()->set_rl_beta(rl_beta);
        auto variant = registry.create(name, *stage);
        ASSERT_TRUE(variant.ok()) << variant.status();
        EXPECT_EQ(engine::served_each_step((*variant)->needs()), served) << objective << " " << rl_beta;
        EXPECT_EQ(config::separate_roles(job).reference, served) << objective << " " << rl_beta;
      }
    }
  }
  EXPECT_EQ(checked, 10);
}

TEST(Trainers, SftIsMeanNllOverResponseTokens) {
  auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 1);
  buffer::Example a, b;
  a.prompt = {1, 2, 3};
  a.response = {4, 5};
  b.prompt = {6};
  b.response = {7, 8, 9};
  auto ctx = make_step_context(&policy, nullptr, 0, 0);
  LossOutput out = make("sft")->compute_loss({&a, &b}, ctx);
  // Direct: -log p(4|1 2 3) - log p(5|1 2 3 4) for a, three terms for b, divided by 5.
  double total = 0;
  for (const auto* e : {&a, &b}) {
    std::vector<int64_t> ids = e->prompt;
    ids.insert(ids.end(), e->response.begin(), e->response.end());
    at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
    at::Tensor logp = policy.logits(t, at::ones_like(t)).log_softmax(-1)[0];
    for (size_t k = e->prompt.size(); k < ids.size(); ++k) total -= logp[k - 1][ids[k]].item<double>();
  }
  EXPECT_NEAR(out.loss.item<double>(), total / 5, 1e-5);
  EXPECT_EQ(out.metrics["response_tokens"].value(), 5);
}

// Rollouts carry what a device step would otherwise read back from the device: the positions that
// score completion tokens and the token count, laid out on the host from the lengths.
TEST(Trainers, RolloutsCarryTheirScoredPositionsAndTokenCount) {
  auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 6);
  buffer::Example a, b;
  a.prompt = {1, 2, 3};
  b.prompt = {4};
  StepContext ctx = make_step_context(&policy, nullptr, 0, 2);
  ctx.eos_id = 5;
  ctx.seed = 9;
  model::GenerationOptions gen;
  gen.max_new_tokens = 6;
  RolloutBatch r = sample_rollouts({&a, &b}, ctx, 3, gen);
  const buffer::SequenceBatch& s = r.sequences;
  const int64_t t = s.input_ids.size(1);
  ASSERT_TRUE(s.scored.defined());
  EXPECT_TRUE(at::equal(s.scored, (s.response_mask.narrow(1, 1, t - 1).reshape(-1) > 0).nonzero().squeeze(1)));
  EXPECT_EQ(r.tokens, s.attention_mask.sum().item<int64_t>());
  EXPECT_FALSE(s.right_padded);  // prompts are left-padded
}

// Generating trainers consume: GRPO's loss reads what the engine's producer sampled for its plan,
// refuses a micro-batch nothing was sampled for or whose samples are older than max_staleness, and
// the producer's snapshot (which samples while the policy moves on) survives a checkpoint.
TEST(Trainers, GrpoReadsWhatTheProducerSampled) {
  aln::v1::StageSpec stage;
  auto* o = stage.mutable_trainer()->mutable_grpo();
  o->set_group_size(2);
  o->set_max_new_tokens(4);
  o->set_temperature(1.0);
  o->set_top_p(1.0);
  o->set_epsilon(0.2);
  o->set_reward_rule(aln::v1::LENGTH);
  o->set_max_staleness(1);
  auto trainer = make("grpo", &stage);
  const RolloutPlan plan = trainer->rollout_plan();
  ASSERT_EQ(plan.group_size, 2);
  EXPECT_EQ(plan.max_staleness, 1);
  EXPECT_EQ(make("sft")->rollout_plan().group_size, 0);  // samples nothing

  auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 7);
  buffer::Example a, b;
  a.prompt = {1, 2, 3};
  b.prompt = {4};
  const std::vector<const buffer::Example*> batch = {&a, &b};
  auto context = [&](int64_t step) {
    StepContext ctx = make_step_context(&policy, nullptr, 0, step);
    ctx.eos_id = 5;
    ctx.seed = 9;
    return ctx;
  };
  StepContext ctx = context(0);
  try {
    trainer->compute_loss(batch, ctx);
    ADD_FAILURE() << "a loss without rollouts";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no rollouts were produced"), std::string::npos) << e.what();
  }

  RolloutProducer producer(plan, nullptr, &policy);
  producer.produce(batch, ctx);
  ASSERT_NE(ctx.rollouts, nullptr);
  EXPECT_NE(ctx.sampler, nullptr);  // a snapshot samples (max_staleness 1), taken at step 0
  EXPECT_EQ(ctx.rollouts->policy_version, 0);
  const RolloutBatch on_policy = sample_rollouts(batch, context(0), 2, plan.generation);
  EXPECT_TRUE(at::equal(ctx.rollouts->sequences.input_ids, on_policy.sequences.input_ids));
  const LossOutput out = trainer->compute_loss(batch, ctx);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_EQ(out.tokens, on_policy.tokens);

  // Step 2 with step 0's samples: two versions behind a plan that allows one.
  StepContext late = context(2);
  late.rollouts = ctx.rollouts;
  try {
    trainer->compute_loss(batch, late);
    ADD_FAILURE() << "stale rollouts taken";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("max_staleness 1"), std::string::npos) << e.what();
  }

  // The policy moves on; step 1 still samples with the step-0 snapshot, here and after a resume.
  const std::string dir = ::testing::TempDir() + "/producer_state";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  producer.before_save();
  ASSERT_TRUE(producer.save_state(dir).ok());
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : policy.tensors()) t.add_(0.5);
  }
  RolloutProducer resumed(plan, nullptr, &policy);
  ASSERT_TRUE(resumed.load_state(dir).ok());
  StepContext here = context(1), there = context(1);
  producer.produce(batch, here);
  resumed.produce(batch, there);
  EXPECT_EQ(here.rollouts->policy_version, 0);
  EXPECT_EQ(there.rollouts->policy_version, 0);
  EXPECT_TRUE(at::equal(here.rollouts->sequences.input_ids, there.rollouts->sequences.input_ids));
  EXPECT_TRUE(at::equal(here.rollouts->sampling_logprobs, there.rollouts->sampling_logprobs));
  const RolloutBatch moved = sample_rollouts(batch, context(1), 2, plan.generation);  // the moved policy's
  EXPECT_FALSE(at::equal(here.rollouts->sampling_logprobs, moved.sampling_logprobs));
  // Evaluation samples on-policy (no snapshot, nothing asked ahead).
  StepContext eval = context(0);
  eval.training = false;
  producer.produce(batch, eval);
  EXPECT_EQ(eval.sampler, nullptr);
  EXPECT_TRUE(at::equal(eval.rollouts->sequences.input_ids,
                        sample_rollouts(batch, context(0), 2, plan.generation).sequences.input_ids));
}

TEST(Trainers, RewardIsBradleyTerryOnScores) {
  auto rm = model::DecoderModel::random_init(tiny(model::Head::kSequenceScore), 2);
  auto e1 = pair({1, 2}, {3, 4}, {5}), e2 = pair({6}, {7}, {8, 9, 10});
  auto ctx = make_step_context(&rm, nullptr, 0, 0);
  LossOutput out = make("reward")->compute_loss({&e1, &e2}, ctx);
  auto score = [&](std::vector<int64_t> ids) {
    at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
    return rm.scores(t, at::ones_like(t)).item<double>();
  };
  const double d1 = score({1, 2, 3, 4}) - score({1, 2, 5});
  const double d2 = score({6, 7}) - score({6, 8, 9, 10});
  const double want = (std::log1p(std::exp(-d1)) + std::log1p(std::exp(-d2))) / 2;
  EXPECT_NEAR(out.loss.item<double>(), want, 1e-5);
  EXPECT_DOUBLE_EQ(out.metrics["reward_accuracy"].value(), (d1 > 0) * 0.5 + (d2 > 0) * 0.5);
}

TEST(Trainers, DpoCachedReferenceEqualsOnTheFly) {
  auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 3);
  auto reference = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 4);
  std::vector<buffer::Example> ex = {pair({1, 2}, {3, 4}, {5}), pair({6}, {7}, {8, 9, 10})};
  auto live = make_step_context(&policy, &reference, 0, 0);
  auto trainer = make("dpo");
  const double on_the_fly = trainer->compute_loss({&ex[0], &ex[1]}, live).loss.item<double>();
  reference_pair_logprobs(reference, {&ex[0], &ex[1]}, 0);
  EXPECT_TRUE(std::isfinite(ex[0].reference_chosen));
  auto cached = make_step_context(&policy, nullptr, 0, 0);
  EXPECT_NEAR(trainer->compute_loss({&ex[0], &ex[1]}, cached).loss.item<double>(), on_the_fly, 1e-6);
  // At the start (policy == reference) DPO's sigmoid loss is log 2.
  reference_pair_logprobs(policy, {&ex[0], &ex[1]}, 0);
  EXPECT_NEAR(trainer->compute_loss({&ex[0], &ex[1]}, cached).loss.item<double>(), std::log(2.0), 1e-6);
}

TEST(Trainers, SafeDpoTransformCountsAndMargin) {
  std::vector<buffer::Example> ex = {
      pair({1}, {2}, {3}, 0, 0),  // keep
      pair({1}, {4}, {5}, 0, 1),  // keep (safe vs unsafe: margin applies)
      pair({1}, {6}, {7}, 1, 0),  // swap
      pair({1}, {8}, {9}, 1, 1),  // drop
      pair({1}, {10}, {11}),      // unlabeled: kept, no margin
  };
  std::map<std::string, double> counters;
  aln::v1::StageSpec stage = stage_with("safedpo");
  trainers::PrepareContext prep;
  prep.stage = &stage;
  prep.examples = &ex;
  prep.counters = &counters;
  auto trainer = make("safedpo");
  ASSERT_TRUE(trainer->prepare(prep).ok());
  EXPECT_EQ(ex.size(), 4u);
  EXPECT_EQ(counters["safedpo_kept"], 2);
  EXPECT_EQ(counters["safedpo_swapped"], 1);
  EXPECT_EQ(counters["safedpo_dropped"], 1);
  EXPECT_EQ(counters["safedpo_unlabeled"], 1);
  EXPECT_EQ(ex[2].chosen, std::vector<int64_t>{7});  // swapped: the safe response is preferred
  for (const auto& e : ex) EXPECT_EQ(e.unsafe_chosen, 0);
  // Policy == reference: h = 0, so a pair's loss is -log s(-margin): log 2 without margin,
  // -log s(-10) for the safe-vs-unsafe pairs.
  auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 5);
  std::vector<buffer::Example*> all;
  for (auto& e : ex) all.push_back(&e);
  reference_pair_logprobs(policy, all, 0);
  auto ctx = make_step_context(&policy, nullptr, 0, 0);
  const double got = trainer->compute_loss({&ex[0], &ex[1], &ex[2], &ex[3]}, ctx).loss.item<double>();
  const double margin_pair = std::log1p(std::exp(10.0));
  EXPECT_NEAR(got, (std::log(2.0) + 2 * margin_pair + std::log(2.0)) / 4, 1e-5);
  // All-dropped data leaves an empty set; the engine (not the plugin) reports an empty train set.
  std::vector<buffer::Example> bad = {pair({1}, {2}, {3}, 1, 1)};
  trainers::PrepareContext prep_bad;
  prep_bad.stage = &stage;
  prep_bad.examples = &bad;
  prep_bad.counters = &counters;
  EXPECT_TRUE(make("safedpo")->prepare(prep_bad).ok());
  EXPECT_TRUE(bad.empty());
}

TEST(Trainers, SafeDpoPartialLabelsAndVariants) {
  auto run = [](aln::v1::SafeDpoVariant variant, bool drop_unlabeled, std::vector<buffer::Example> ex,
                std::map<std::string, double>* counters) {
    aln::v1::StageSpec stage = stage_with("safedpo");
    stage.mutable_trainer()->mutable_safedpo()->set_variant(variant);
    stage.mutable_trainer()->mutable_safedpo()->set_drop_unlabeled(drop_unlabeled);
    trainers::PrepareContext prep;
    prep.stage = &stage;
    prep.examples = &ex;
    prep.counters = counters;
    auto trainer = make("safedpo", &stage);
    EXPECT_TRUE(trainer->prepare(prep).ok());
    return ex;
  };
  std::map<std::string, double> c;
  // y_w unsafe, y_l unknown: dropped (a swap could crown an unsafe response); y_w safe, y_l
  // unknown: kept without margin; nothing known: kept (or dropped with drop_unlabeled).
  std::vector<buffer::Example> partial = {pair({1}, {2}, {3}, 1, -1), pair({1}, {4}, {5}, 0, -1), pair({1}, {6}, {7})};
  auto out = run(aln::v1::SAFEDPO, false, partial, &c);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].chosen, std::vector<int64_t>{4});
  EXPECT_EQ(out[0].unsafe_rejected, 0);
  EXPECT_EQ(c["safedpo_dropped"], 1);
  EXPECT_EQ(c["safedpo_unlabeled"], 1);
  out = run(aln::v1::SAFEDPO, true, partial, &c);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(c["safedpo_dropped"], 2);
  // Baselines: better keeps everything as is; safer follows safer_response_id (swap when it is 1,
  // drop when unknown); safe-better drops pairs whose y_w is known unsafe.
  std::vector<buffer::Example> mixed = {pair({1}, {2}, {3}, 1, 0), pair({1}, {4}, {5}, 0, 1), pair({1}, {6}, {7})};
  mixed[0].safer = 1;
  mixed[1].safer = 0;
  out = run(aln::v1::BETTER, false, mixed, &c);
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].chosen, std::vector<int64_t>{2});
  out = run(aln::v1::SAFER, false, mixed, &c);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].chosen, std::vector<int64_t>{3});
  EXPECT_EQ(out[1].chosen, std::vector<int64_t>{4});
  EXPECT_EQ(c["safedpo_swapped"], 1);
  EXPECT_EQ(c["safedpo_dropped"], 1);
  out = run(aln::v1::SAFE_BETTER, false, mixed, &c);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].chosen, std::vector<int64_t>{4});
}

// Few rows: the fused kernel keeps all the logits in one tile (kernels::fused_logprobs_preferred; its
// tiles are tested in kernels_test), at a narrow and a wide hidden size: both equal the full logits.
TEST(Trainers, ResponseOnlyProjectionEqualsFullLogits) {
  for (int64_t hidden : {16, 384}) {
  SCOPED_TRACE(hidden);
  model::ModelConfig config = tiny(model::Head::kCausalLm);
  config.hidden_size = hidden;
  config.head_dim = hidden / config.num_heads;
  auto policy = model::DecoderModel::random_init(config, 11);
  std::vector<buffer::Example> ex = {pair({1, 2, 3, 4}, {5, 6}, {7}), pair({8}, {9, 10, 11}, {12, 13}),
                                     pair({}, {14, 15}, {16})};
  std::vector<const buffer::Example*> view = {&ex[0], &ex[1], &ex[2]};
  buffer::SequenceBatch b = buffer::collate_pairs(view, 0);
  policy.set_requires_grad(true);
  kernels::ResponseLogprobs full =
      kernels::response_logprobs(policy.logits(b.input_ids, b.attention_mask), b.input_ids, b.response_mask);
  kernels::ResponseLogprobs fast = response_logprobs(policy, b);
  EXPECT_TRUE(at::allclose(full.sums, fast.sums, 1e-5, 1e-6)) << full.sums << fast.sums;
  EXPECT_TRUE(at::equal(full.tokens, fast.tokens));
  EXPECT_TRUE(at::allclose(full.per_token, fast.per_token, 1e-5, 1e-6));
  // Gradients agree too (weights of every sequence differ so no term cancels).
  at::Tensor w = at::arange(1, full.sums.size(0) + 1, at::kFloat);
  auto grads = [&](const at::Tensor& sums) {
    for (auto& [name, p] : policy.tensors()) p.mutable_grad() = at::Tensor();
    (sums * w).sum().backward();
    std::map<std::string, at::Tensor> g;
    for (auto& [name, p] : policy.tensors()) g[name] = p.grad().clone();
    return g;
  };
  auto g_full = grads(full.sums);
  auto g_fast = grads(fast.sums);
  for (const auto& [name, g] : g_full) {
    // float32 sums of `hidden` products: the absolute tolerance scales with the largest gradient.
    const double atol = 1e-6 * std::max(1.0, g.abs().max().item<double>());
    EXPECT_TRUE(at::allclose(g, g_fast.at(name), 1e-4, atol))
        << name << ": max difference " << (g - g_fast.at(name)).abs().max().item<double>() << " of max "
        << g.abs().max().item<double>();
  }
  // Sums formed again from the per-token values (as when they come from the reference's ranks):
  // the same bits.
  policy.set_requires_grad(false);
  kernels::ResponseLogprobs again = response_logprobs(policy, b);
  EXPECT_TRUE(at::equal(response_sums(again.per_token, b), again.sums));
  }
}

// TDPO / Ra-DPO through the chunked two-pass trainer path equal the same loss written directly on
// full logits with autograd (METHODS.md formulas), values and every parameter's gradient.
TEST(Trainers, TokenLevelTrainersEqualFullLogitsAutograd) {
  struct Case {
    std::string method;
    aln::v1::RiskMeasure risk;
    bool split;
    aln::v1::PairVariant variant;
  };
  const std::vector<Case> cases = {{"tdpo", aln::v1::CVAR, false, aln::v1::VARIANT_1},
                                   {"tdpo", aln::v1::CVAR, false, aln::v1::VARIANT_2},
                                   {"radpo", aln::v1::CVAR, false, aln::v1::VARIANT_2},
                                   {"radpo", aln::v1::CVAR, true, aln::v1::VARIANT_1},
                                   {"radpo", aln::v1::ERM, false, aln::v1::VARIANT_2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + (c.risk == aln::v1::ERM ? " erm" : " cvar") + (c.split ? " split" : "") + " variant " +
                 std::to_string(c.variant));
    auto policy = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 21);
    auto reference = model::DecoderModel::random_init(tiny(model::Head::kCausalLm), 22);
    std::vector<buffer::Example> ex = {pair({1, 2, 3}, {4, 5, 6}, {7}), pair({8}, {9, 10}, {11, 12, 13, 14})};
    std::vector<const buffer::Example*> view = {&ex[0], &ex[1]};
    aln::v1::StageSpec stage;
    const double mu = c.risk == aln::v1::ERM ? 5.0 : 0.8;
    if (c.method == "tdpo") {
      auto* o = stage.mutable_trainer()->mutable_tdpo();
      o->set_beta(0.5), o->set_alpha(0.5), o->set_variant(c.variant), o->set_chunk_size(3);
    } else {
      auto* o = stage.mutable_trainer()->mutable_radpo();
      o->set_beta(0.5), o->set_alpha(0.5), o->set_variant(c.variant), o->set_chunk_size(3);
      o->set_risk(c.risk), o->set_mu(mu), o->set_split_vocabulary(c.split);
    }
    auto trainer = make(c.method, &stage);
    EXPECT_TRUE(trainer->needs().asks(ReferenceQuery::kHiddenStates));
    policy.set_requires_grad(true);
    auto grads_of = [&](const at::Tensor& loss) {
      for (auto& [name, p] : policy.tensors()) p.mutable_grad() = at::Tensor();
      loss.backward();
      std::map<std::string, at::Tensor> g;
      for (auto& [name, p] : policy.tensors()) g[name] = p.grad().clone();
      return g;
    };
    auto ctx = make_step_context(&policy, &reference, 0, 0);
    LossOutput chunked = trainer->compute_loss(view, ctx);
    auto g_chunked = grads_of(chunked.loss);

    buffer::SequenceBatch b = buffer::collate_pairs(view, 0);
    const int64_t t = b.input_ids.size(1);
    at::Tensor logp = at::log_softmax(policy.logits(b.input_ids, b.attention_mask).narrow(1, 0, t - 1), -1);
    at::Tensor ref_logp =
        at::log_softmax(reference.logits(b.input_ids, b.attention_mask).narrow(1, 0, t - 1), -1).detach();
    at::Tensor mask = b.response_mask.narrow(1, 1, t - 1).to(at::kFloat);
    at::Tensor y = b.input_ids.narrow(1, 1, t - 1).unsqueeze(2);
    at::Tensor d = ref_logp - logp;
    at::Tensor term;
    if (c.method == "tdpo") {
      term = (ref_logp.exp() * d).sum(-1);
    } else if (c.risk == aln::v1::ERM) {
      term = at::log((ref_logp.exp() * at::exp(mu * d)).sum(-1)) / mu;
    } else {
      auto above = [&](const at::Tensor& x) { return (x > at::quantile(x, 1 - mu, -1, true, "linear")).to(x.dtype()); };
      const int64_t v = d.size(-1), first = (v + 1) / 2;
      at::Tensor m =
          c.split ? at::cat({above(d.narrow(-1, 0, first)), above(d.narrow(-1, first, v - first))}, -1) : above(d);
      term = (ref_logp.exp() * d * m).sum(-1);
    }
    at::Tensor lr = ((logp.gather(2, y) - ref_logp.gather(2, y)).squeeze(2) * mask).sum(1);
    at::Tensor div = (term * mask).sum(1);
    const int64_t n = 2;
    at::Tensor h = lr.narrow(0, 0, n) - lr.narrow(0, n, n);
    at::Tensor dw = div.narrow(0, 0, n), dl = div.narrow(0, n, n);
    at::Tensor penalty = c.variant == aln::v1::VARIANT_1 ? dl - dw : 0.5 * (dl - dw.detach());
    at::Tensor direct = -at::log_sigmoid(0.5 * (h - penalty)).mean();
    EXPECT_NEAR(chunked.loss.item<double>(), direct.item<double>(), 1e-5);
    auto g_direct = grads_of(direct);
    for (const auto& [name, g] : g_direct) {
      EXPECT_TRUE(at::allclose(g_chunked.at(name), g, 1e-3, 1e-6))
          << name << " max diff " << (g_chunked.at(name) - g).abs().max().item<double>();
    }
    const std::string key = c.method == "tdpo" ? "seqkl_chosen" : "risk_chosen";
    EXPECT_NEAR(chunked.metrics.at(key).value(), dw.mean().item<double>(), 1e-5);
  }
}

TEST(Trainers, PtAlignTokenWeights) {
  buffer::Example e = pair({1}, {5, 6, 7, 9}, {5, 8, 9, 3, 4, 9});  // 9 = the end token
  EXPECT_EQ(toxic_token_weights(e, aln::v1::NOT_IN_POSITIVE, {}, 9),
            (std::vector<float>{0, 1, 0, 1, 1, 0}));  // 5 is in y+, 8/3/4 are not, the end token never
  EXPECT_EQ(toxic_token_weights(e, aln::v1::ALL_TOKENS, {}, 9), (std::vector<float>{1, 1, 0, 1, 1, 0}));
  const std::vector<std::vector<int64_t>> lexicon = {{3, 4}, {8}, {7, 7}};
  EXPECT_EQ(toxic_token_weights(e, aln::v1::LEXICON, lexicon, 9), (std::vector<float>{0, 1, 0, 1, 1, 0}));
  EXPECT_EQ(toxic_token_weights(e, aln::v1::LEXICON, {{4, 3}}, 9), (std::vector<float>(6, 0.0f)));  // order matters
}

// Span weights: tokens whose text overlaps an annotated span (a span may cut a token); no spans: the
// not_in_positive weights; the end token never.
TEST(Trainers, SpanWeightsCoverTheAnnotatedText) {
  const std::map<int64_t, std::string> vocab = {{1, "Sure"}, {2, " grab"}, {3, " a"}, {4, " pick"}, {9, ""}};
  auto decode = [&](const std::vector<int64_t>& ids) {
    std::string t;
    for (int64_t id : ids) t += vocab.at(id);
    return t;
  };
  buffer::Example e;
  e.chosen = {1, 9};
  e.rejected = {1, 2, 3, 4, 9};
  e.rejected_spans = {"grab a"};
  EXPECT_EQ(span_token_weights(e, decode, 9), (std::vector<float>{0, 1, 1, 0, 0}));
  e.rejected_spans = {"ure", "ick"};  // inside tokens
  EXPECT_EQ(span_token_weights(e, decode, 9), (std::vector<float>{1, 0, 0, 1, 0}));
  e.rejected_spans.clear();
  EXPECT_EQ(span_token_weights(e, decode, 9), (std::vector<float>{0, 1, 1, 1, 0}));
}

TEST(Trainers, ResponsesEndWithTheEndOfTextId) {
  const char* root = std::getenv("ALN_SOURCE_DIR");
  ASSERT_NE(root, nullptr);
  auto enc =
      engine::load_text_encoder(std::string(root) + "/examples/data/tokenizers/gpt2/tokenizer.json", aln::v1::HH);
  ASSERT_TRUE(enc.ok()) << enc.status();
  // " Hello world" is 2 GPT-2 tokens (the hh format puts the space after "Assistant:" in front of
  // the response); the end-of-text id 50256 follows as an id, whatever the tokenizer.json's flags.
  EXPECT_EQ((*enc)->encode_response("Hello world"), (std::vector<int64_t>{18435, 995, 50256}));
  EXPECT_EQ((*enc)->encode_response("Hello world", engine::ResponseText::kVerbatim),
            (std::vector<int64_t>{15496, 995, 50256}));
}

}  // namespace
}  // namespace aln::trainers
