#include "trainers/rollouts/rollout.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "trainers/sequence_logprobs.h"

namespace aln::trainers {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

}  // namespace

RolloutRequest rollout_request(const std::vector<const buffer::Example*>& prompts, const StepContext& ctx,
                               int64_t group_size, const model::GenerationOptions& base) {
  ALN_CHECK(!prompts.empty(), "no prompts to roll out");
  const int64_t p = static_cast<int64_t>(prompts.size());
  const int64_t rows = p * group_size;
  int64_t width = 1;
  for (const auto* e : prompts) width = std::max<int64_t>(width, static_cast<int64_t>(e->prompt.size()));
  RolloutRequest r;
  r.ids = at::full({rows, width}, ctx.pad_id, at::kLong);
  r.mask = at::zeros({rows, width}, at::kLong);
  uint64_t seed = mix(mix(ctx.seed, 0x67727030ULL), static_cast<uint64_t>(ctx.step));
  for (int64_t i = 0; i < p; ++i) {
    const auto& prompt = prompts[static_cast<size_t>(i)]->prompt;
    ALN_CHECK(!prompt.empty(), "an empty prompt cannot be rolled out (", prompts[static_cast<size_t>(i)]->source, ")");
    for (int64_t tok : prompt) seed = mix(seed, static_cast<uint64_t>(tok));
    const int64_t n = static_cast<int64_t>(prompt.size());
    at::Tensor row = at::tensor(prompt, at::kLong);
    r.prompt_tokens += n * group_size;
    for (int64_t g = 0; g < group_size; ++g) {
      r.ids[i * group_size + g].narrow(0, width - n, n).copy_(row);
      r.mask[i * group_size + g].narrow(0, width - n, n).fill_(1);
    }
  }
  // Laid out on the host, then placed where the policy is (generation on the rollout ranks sends
  // them over MPI, which takes host tensors: a policy there is on the CPU).
  if (ctx.policy != nullptr) {
    r.ids = r.ids.to(ctx.policy->device());
    r.mask = r.mask.to(ctx.policy->device());
  }
  r.options = base;
  r.options.decoding = model::Decoding::kSample;
  r.options.seed = seed;
  r.options.pad_token_id = ctx.pad_id;
  if (ctx.eos_id >= 0) r.options.stop_tokens = {ctx.eos_id};
  r.version = ctx.sampler_version >= 0 ? ctx.sampler_version : ctx.step;
  return r;
}

void ask_ahead(const StepContext& ctx, int64_t last, int64_t group_size, const model::GenerationOptions& base) {
  if (!ctx.prefetch || !ctx.upcoming || !ctx.training) return;
  at::NoGradGuard no_grad;
  for (const auto& [step, prompts] : ctx.upcoming(last)) {
    StepContext at_step = ctx;
    at_step.step = step;  // the seed is the step's; the version stays the sampler's
    if (at_step.sampler_version < 0) at_step.sampler_version = ctx.step;
    const RolloutRequest r = rollout_request(prompts, at_step, group_size, base);
    ctx.prefetch(*ctx.policy, r.version, r.ids, r.mask, r.options);
  }
}

RolloutBatch sample_rollouts(const std::vector<const buffer::Example*>& prompts, const StepContext& ctx,
                             int64_t group_size, const model::GenerationOptions& base) {
  at::NoGradGuard no_grad;
  const RolloutRequest request = rollout_request(prompts, ctx, group_size, base);
  const at::Tensor& ids = request.ids;
  const at::Tensor& mask = request.mask;
  const int64_t rows = ids.size(0);
  const int64_t width = ids.size(1);
  const uint64_t seed = request.options.seed;
  const int64_t version = request.version;
  model::GenerationOutput gen = ctx.generate ? ctx.generate(*ctx.policy, version, ids, mask, request.options)
                                             : model::generate(*ctx.policy, ids, mask, request.options);

  RolloutBatch out;
  out.prompt_width = width;
  out.policy_version = version;
  out.lengths = gen.lengths;
  out.sampling_logprobs = gen.logprobs;
  out.seed = seed;
  const int64_t n = gen.tokens.size(1);
  out.completion_mask =
      (at::arange(n, gen.lengths.options().dtype(at::kLong)).unsqueeze(0) < gen.lengths.unsqueeze(1)).to(at::kLong);
  out.sequences.input_ids = at::cat({ids, at::where(out.completion_mask > 0, gen.tokens, ctx.pad_id)}, 1);
  out.sequences.attention_mask = at::cat({mask, out.completion_mask}, 1);
  out.sequences.response_mask = at::cat({at::zeros_like(mask), out.completion_mask}, 1);
  // The completions as token lists: one copy of the tokens and lengths to the host for them all.
  const at::Tensor tokens = gen.tokens.to(at::kCPU).contiguous();
  const at::Tensor lengths = gen.lengths.to(at::kCPU).contiguous();
  const int64_t* length_of = lengths.data_ptr<int64_t>();
  // From the same host copy: the token count and the positions that score completion tokens
  // (column width + j is predicted at width + j - 1), so scoring these sequences on a device needs
  // no nonzero() (a host sync).
  std::vector<int64_t> scored;
  out.tokens = request.prompt_tokens;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = length_of[r];
    const int64_t* row = tokens[r].data_ptr<int64_t>();
    std::vector<int64_t> c(row, row + len);
    if (!c.empty() && c.back() == ctx.eos_id) c.pop_back();
    out.completions.push_back(std::move(c));
    out.tokens += len;
    for (int64_t j = 0; j < len; ++j) scored.push_back(r * (width + n - 1) + width - 1 + j);
  }
  out.sequences.scored = at::tensor(scored, at::kLong).to(ids.device());
  return out;
}

kernels::GrpoLossOutput rollout_grpo_loss(const RolloutBatch& rollouts, const StepContext& ctx,
                                          const at::Tensor& advantages, const RolloutLossOptions& options) {
  // Completion token j sits at column prompt_width + j and is predicted from the column before it.
  const int64_t w = rollouts.prompt_width;
  const int64_t n = rollouts.completion_mask.size(1);
  auto completion_logps = [&](const model::DecoderModel& m) {
    return response_logprobs(m, rollouts.sequences, options.temperature).per_token.narrow(1, w - 1, n);
  };
  kernels::GrpoLossInputs in;
  in.logps = completion_logps(*ctx.policy);
  in.mask = rollouts.completion_mask;
  in.advantages = advantages.to(in.logps.scalar_type());
  {
    at::NoGradGuard no_grad;  // the old and reference log-probs are constants of the loss
    if (options.sampler != nullptr) in.old_logps = completion_logps(*options.sampler);
    if (options.beta > 0) {
      ALN_CHECK(ctx.reference != nullptr, "a KL term (beta > 0) needs the reference model");
      in.ref_logps = ctx.reference->token_logprobs(rollouts.sequences, options.temperature).narrow(1, w - 1, n);
    }
  }
  return kernels::grpo_loss(
      in, options.epsilon_low, options.epsilon_high, options.beta,
      options.token_mean ? kernels::GrpoNormalization::kTokenMean : kernels::GrpoNormalization::kSequenceMean);
}

RolloutPlan sampling_plan(int64_t group_size, int64_t max_new_tokens, double temperature, int64_t top_k, double top_p,
                          int64_t max_staleness) {
  RolloutPlan plan;
  plan.group_size = group_size;
  plan.generation.max_new_tokens = max_new_tokens;
  plan.generation.temperature = temperature;
  plan.generation.top_k = top_k;
  plan.generation.top_p = top_p;
  plan.max_staleness = max_staleness;
  return plan;
}

const RolloutBatch& take_rollouts(const std::vector<const buffer::Example*>& batch, const StepContext& ctx,
                                  const RolloutPlan& plan, const char* method) {
  ALN_CHECK(ctx.rollouts != nullptr, method,
            ": no rollouts were produced for this micro-batch (the engine's rollout producer samples them before "
            "compute_loss; a caller outside the engine sets StepContext::rollouts)");
  const RolloutBatch& r = *ctx.rollouts;
  const auto rows = static_cast<int64_t>(r.completions.size());
  ALN_CHECK(rows == static_cast<int64_t>(batch.size()) * plan.group_size, method, ": ", rows,
            " rollouts for a micro-batch of ", batch.size(), " prompts with ", plan.group_size, " samples each");
  const int64_t staleness = ctx.step - r.policy_version;
  ALN_CHECK(staleness >= 0 && staleness <= (ctx.training ? plan.max_staleness : 0), method,
            ": rollouts sampled by policy version ", r.policy_version, " reached step ", ctx.step, " (max_staleness ",
            plan.max_staleness, ")");
  return r;
}

bool looks_like_refusal(const std::string& text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* phrase : {"i can't", "i cannot", "i can not", "i'm sorry", "i am sorry", "i won't", "i will not",
                             "as an ai", "i'm not able", "i am not able", "i must decline", "i apologize", "i'm unable",
                             "i am unable", "not appropriate"}) {
    if (lower.find(phrase) != std::string::npos) return true;
  }
  return false;
}

at::Tensor score_rollouts(const RolloutBatch& rollouts, const StepContext& ctx, aln::v1::RewardRule rule,
                          int64_t max_new_tokens, Metrics* parts, RewardSources* per_row) {
  at::NoGradGuard no_grad;
  const int64_t rows = static_cast<int64_t>(rollouts.completions.size());
  at::Tensor rewards = at::zeros({rows}, rollouts.sequences.input_ids.options().dtype(at::kDouble));
  if (rule != aln::v1::REWARD_RULE_UNSPECIFIED) {
    std::vector<double> values;
    const at::Tensor lengths = rollouts.lengths.to(at::kCPU).contiguous();  // one copy for every row
    const int64_t* length_of = lengths.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const auto& c = rollouts.completions[static_cast<size_t>(r)];
      if (rule == aln::v1::REFUSAL) {
        ALN_CHECK(static_cast<bool>(ctx.decode), "the refusal rule needs the tokenizer (no decoder in the context)");
        values.push_back(looks_like_refusal(ctx.decode(c)) ? 1.0 : 0.0);
      } else {
        const double share =
            static_cast<double>(length_of[r]) / static_cast<double>(std::max<int64_t>(1, max_new_tokens));
        values.push_back(rule == aln::v1::LENGTH ? share : 1.0 - share);
      }
    }
    at::Tensor v = at::tensor(values, at::kDouble).to(rewards.device());
    (*parts)["reward_rule"] = v.mean();
    if (per_row != nullptr) (*per_row)["reward_rule"] = v;
    rewards += v;
  }
  for (size_t i = 0; i < ctx.reward_models.size(); ++i) {
    const auto& s = rollouts.sequences;
    at::Tensor score = ctx.reward_models[i]->scores(s.input_ids, s.attention_mask).select(1, 0).to(at::kDouble);
    (*parts)[absl::StrCat("reward_model_", i)] = score.mean();
    if (per_row != nullptr) (*per_row)[absl::StrCat("reward_model_", i)] = score;
    rewards += score;
  }
  ALN_CHECK(rule != aln::v1::REWARD_RULE_UNSPECIFIED || !ctx.reward_models.empty(),
            "no reward: set trainer.grpo.reward_rule or list reward_models in the stage");
  return rewards;
}

void publish_rollouts(const RolloutBatch& rollouts, const std::vector<const buffer::Example*>& prompts,
                      int64_t group_size, const at::Tensor& rewards, const RewardSources& sources,
                      const StepContext& ctx) {
  if (!ctx.training || !ctx.rollout_sink) return;
  const int64_t rows = static_cast<int64_t>(rollouts.completions.size());
  ALN_CHECK(rows == static_cast<int64_t>(prompts.size()) * group_size, "publish_rollouts: ", rows, " rows for ",
            prompts.size(), " prompts of ", group_size, " samples");
  // One copy of each tensor to the host for every row (the dump is an opt-in inspection aid).
  auto host = [](const at::Tensor& t, at::ScalarType type) { return t.detach().to(at::kCPU, type).contiguous(); };
  const at::Tensor tokens =
      host(rollouts.sequences.input_ids.narrow(1, rollouts.prompt_width, rollouts.completion_mask.size(1)), at::kLong);
  const at::Tensor logps = host(rollouts.sampling_logprobs, at::kFloat);
  const at::Tensor lengths = host(rollouts.lengths, at::kLong);
  const at::Tensor total = host(rewards, at::kDouble);
  std::vector<std::pair<std::string, at::Tensor>> parts;
  for (const auto& [name, values] : sources) parts.emplace_back(name, host(values, at::kDouble));
  std::vector<buffer::RolloutRecord> records;
  records.reserve(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const buffer::Example& e = *prompts[static_cast<size_t>(r / group_size)];
    buffer::RolloutRecord rec;
    rec.policy_version = rollouts.policy_version;
    rec.seed = rollouts.seed;
    rec.group = r / group_size;
    rec.sample = r % group_size;
    rec.prompt_ids = e.prompt;
    const int64_t len = lengths.data_ptr<int64_t>()[r];
    const int64_t* row = tokens[r].data_ptr<int64_t>();
    const float* lp = logps[r].data_ptr<float>();
    rec.response_ids.assign(row, row + len);
    rec.sampling_logprobs.assign(lp, lp + len);
    rec.terminated = len > 0 && ctx.eos_id >= 0 && row[len - 1] == ctx.eos_id;
    for (const auto& [name, values] : parts) rec.rewards[name] = values.data_ptr<double>()[r];
    rec.reward = total.data_ptr<double>()[r];
    if (ctx.decode) {
      rec.prompt_text = e.prompt_text.empty() ? ctx.decode(e.prompt) : e.prompt_text;
      rec.response_text = ctx.decode(rollouts.completions[static_cast<size_t>(r)]);
    }
    rec.source = e.source;
    records.push_back(std::move(rec));
  }
  ctx.rollout_sink(std::move(records));
}

}  // namespace aln::trainers
