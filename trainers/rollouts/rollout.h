#pragma once
// Rollouts: the policy samples `group_size` completions per prompt (batched, with the KV cache),
// each tagged with the policy version that produced it, and rewards score them (a rule on the
// decoded text and/or reward models with score heads). The engine's producer (producer.h) samples;
// GRPO, HAIR and the controllable method's rl objective read what it sampled (take_rollouts),
// score it, hand the records out (publish_rollouts) and take the loss (rollout_grpo_loss).
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "aln/v1/job.pb.h"
#include "core/buffer/buffer.h"
#include "core/model/generation.h"
#include "kernels/grpo_loss.h"
#include "trainers/trainer.h"

namespace aln::trainers {

struct RolloutBatch {
  buffer::SequenceBatch sequences;  // prompt (left-padded) + completion (right-padded); response_mask = completion
  at::Tensor completion_mask;       // [rows, N] 1 on completion tokens
  int64_t prompt_width = 0;         // columns of the prompt part
  at::Tensor lengths;               // [rows] completion tokens (the end token included)
  std::vector<std::vector<int64_t>> completions;  // ids per row, end token excluded
  at::Tensor sampling_logprobs;                   // [rows, N] float32: each sampled token's, as sampled
  int64_t policy_version = 0;
  uint64_t seed = 0;   // the sampling seed
  int64_t tokens = 0;  // real tokens of `sequences` (prompts + completions), counted on the host
};

// Samples group_size completions for each prompt (row r comes from prompt r / group_size). The
// seed derives from the context's seed, the step and the prompts' tokens, so the same step of the
// same data samples the same completions in any run, on any number of ranks, and after a resume.
RolloutBatch sample_rollouts(const std::vector<const buffer::Example*>& prompts, const StepContext& ctx,
                             int64_t group_size, const model::GenerationOptions& base);

// What sample_rollouts asks the generator for: the prompts (left-padded, each repeated
// group_size times), the sampling settings with the micro-batch's seed, and the policy version.
struct RolloutRequest {
  at::Tensor ids;   // [rows, width] int64
  at::Tensor mask;  // [rows, width] int64
  model::GenerationOptions options;
  int64_t version = 0;
  int64_t prompt_tokens = 0;  // real prompt tokens over all rows (counted on the host)
};
RolloutRequest rollout_request(const std::vector<const buffer::Example*>& prompts, const StepContext& ctx,
                               int64_t group_size, const model::GenerationOptions& base);

// Asks ahead (StepContext::prefetch, a no-op when unset): every micro-batch this rank will sample
// with ctx's policy and version, from the current one through step `last`, so its rollout rank
// generates them while this rank trains. Call it once when a sampling version starts; each
// sample_rollouts call then takes its answer (the same request, so the same tokens).
void ask_ahead(const StepContext& ctx, int64_t last, int64_t group_size, const model::GenerationOptions& base);

// Rewards [rows] (double): the rule's value plus each reward model's score of prompt + completion.
// `parts` receives the mean of each component ("reward_rule", "reward_model_<i>"), not read here;
// `per_row` (when given) each component's [rows] values.
at::Tensor score_rollouts(const RolloutBatch& rollouts, const StepContext& ctx, aln::v1::RewardRule rule,
                          int64_t max_new_tokens, Metrics* parts, RewardSources* per_row = nullptr);

// Hands the rollouts to the context's rollout sink as records (training steps only; nothing when
// the job does not keep them): `prompts` as sampled, `rewards` [rows] what the method optimised,
// `sources` its parts by name, each [rows]. Copies the tokens, log-probs and rewards to the host.
void publish_rollouts(const RolloutBatch& rollouts, const std::vector<const buffer::Example*>& prompts,
                      int64_t group_size, const at::Tensor& rewards, const RewardSources& sources,
                      const StepContext& ctx);

// GRPO's loss on rollouts (shared by grpo, hair and the controllable rl objective): per-token
// log-probs of the completions under the policy (temperature-scaled, as sampled), `sampler`'s as the
// old policy when given (bounded staleness; else on-policy), the reference's for the KL when beta > 0.
struct RolloutLossOptions {
  double temperature = 1.0;
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  double beta = 0.0;
  bool token_mean = false;
  const model::DecoderModel* sampler = nullptr;
};
kernels::GrpoLossOutput rollout_grpo_loss(const RolloutBatch& rollouts, const StepContext& ctx,
                                          const at::Tensor& advantages, const RolloutLossOptions& options);

// A plan from the sampling options GRPO and HAIR share (the controllable method sets fewer).
RolloutPlan sampling_plan(int64_t group_size, int64_t max_new_tokens, double temperature, int64_t top_k, double top_p,
                          int64_t max_staleness = 0);

// The micro-batch's rollouts the engine produced for `method`'s plan (StepContext::rollouts),
// checked: one row per prompt and sample, sampled by a policy at most plan.max_staleness versions
// behind ctx.step (training; evaluation samples on-policy). Throws naming the method otherwise.
const RolloutBatch& take_rollouts(const std::vector<const buffer::Example*>& batch, const StepContext& ctx,
                                  const RolloutPlan& plan, const char* method);

// The REFUSAL rule on one decoded completion (case-insensitive phrase search).
bool looks_like_refusal(const std::string& text);

}  // namespace aln::trainers
