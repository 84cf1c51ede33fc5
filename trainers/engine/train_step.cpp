#include "trainers/engine/train_step.h"

#include <sys/resource.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "core/model/model_config.h"
#include "core/optim/optimizer.h"
#include "trainers/engine/fsdp_checkpoint.h"
#include "trainers/engine/overlap.h"
#include "trainers/engine/pipeline_job.h"
#include "trainers/engine/unconsumed_rollouts.h"

namespace aln::engine {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

optim::ScheduleKind schedule_kind(aln::v1::Schedule s) {
  if (s == aln::v1::LINEAR) return optim::ScheduleKind::kLinear;
  if (s == aln::v1::CONSTANT) return optim::ScheduleKind::kConstant;
  return optim::ScheduleKind::kCosine;
}

double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux reports KiB
}

// One micro-batch's numbers join the step's, without reading them: the loss weighted by the
// micro-batch's share, the metrics averaged over the micro-batches (float64, as the host sums were).
void accumulate(const trainers::LossOutput& out, double weight, int64_t micro_batches, StepResult& r) {
  at::Tensor loss = out.loss.detach().to(at::kDouble);
  if (weight != 1.0) loss = loss * weight;
  r.loss_sum = r.loss_sum.defined() ? r.loss_sum + loss : loss;
  r.tokens += out.tokens;
  const double n = static_cast<double>(micro_batches);
  for (const auto& [k, v] : out.metrics) {
    if (v.on_host()) {
      r.host_metrics[k] += v.host() / n;
    } else {
      at::Tensor part = v.tensor().reshape({}).to(at::kDouble) / n;
      auto it = r.device_metrics.find(k);
      if (it == r.device_metrics.end()) {
        r.device_metrics.emplace(k, part);
      } else {
        it->second = it->second + part;
      }
    }
  }
}

// The step's numbers, all read with the gradient norm in one device-to-host copy.
// The last pipeline stage's values, names, own token count and reads as one message to the other
// stages (they compute no loss, so they have nothing to read; the lead logs the last stage's read
// count): doubles as raw bytes (NaN survives), then the names.
std::string pack_step_numbers(const std::vector<double>& values, const StepResult& r) {
  const int64_t head[3] = {static_cast<int64_t>(values.size()), r.local_tokens, r.host_reads};
  std::string out(sizeof(head) + sizeof(double) * values.size(), '\0');
  std::memcpy(out.data(), head, sizeof(head));
  std::memcpy(out.data() + sizeof(head), values.data(), sizeof(double) * values.size());
  out += absl::StrJoin(r.scalar_names, "\n");
  return out;
}

std::vector<double> unpack_step_numbers(const std::string& bytes, StepResult& r) {
  int64_t head[3] = {0, 0, 0};
  ALN_CHECK(bytes.size() >= sizeof(head), "the last pipeline stage sent a short step message");
  std::memcpy(head, bytes.data(), sizeof(head));
  const size_t value_bytes = sizeof(double) * static_cast<size_t>(head[0]);
  ALN_CHECK(head[0] >= 0 && bytes.size() >= sizeof(head) + value_bytes, "the last pipeline stage sent a short step message");
  std::vector<double> values(static_cast<size_t>(head[0]));
  std::memcpy(values.data(), bytes.data() + sizeof(head), value_bytes);
  r.local_tokens = head[1];
  r.host_reads = static_cast<int>(head[2]);
  r.scalar_names = absl::StrSplit(bytes.substr(sizeof(head) + value_bytes), '\n', absl::SkipEmpty());
  return values;
}

// The step's one read: loss, tokens, samples, metrics and gradient norm on the host. With pipeline
// stages only the last computed them; it hands them on, so the others read nothing.
void read_scalars(const PolicyWorker& w, StepResult& r, const at::Tensor& grad_norm) {
  std::vector<double> values;
  if (r.scalars.defined()) {
    const at::Tensor host = at::cat({r.scalars, grad_norm.reshape({1}).to(r.scalars.device())}).to(at::kCPU);
    ++r.host_reads;
    values.assign(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
  }
  if (w.pipeline && w.pipeline->stages() > 1) {
    const bool last = w.pipeline->last();
    const std::string shared = w.pipeline->share_from_last(last ? pack_step_numbers(values, r) : std::string());
    if (!last) values = unpack_step_numbers(shared, r);
  }
  ALN_CHECK(values.size() == 4 + r.scalar_names.size(), "the step's numbers do not match their names");
  const double* v = values.data();
  r.loss = v[0];
  r.tokens = static_cast<int64_t>(v[1]);
  r.samples = static_cast<int64_t>(v[2]);
  r.metrics.clear();
  // A name reported both ways (a host number in one micro-batch, a tensor in another) adds up.
  for (size_t i = 0; i < r.scalar_names.size(); ++i) r.metrics[r.scalar_names[i]] += v[3 + i];
  r.grad_norm = v[3 + r.scalar_names.size()];
}

// The step's micro-batches through the pipeline's schedule: every stage runs them, the last one
// computes the losses and every stage gets their numbers.
void pipelined_passes(PolicyWorker& w, StageRun& s, int64_t step,
                      const std::vector<std::vector<const buffer::Example*>>& micro_batches,
                      const std::vector<double>& weights, StepResult& r) {
  const auto& opt = s.spec.optimizer();
  // (Methods that sample in their steps do not run on pipeline stages: pipeline_job.cpp refuses them.)
  ALN_CHECK(!s.producer, "rollouts are not sampled on pipeline stages");
  std::vector<trainers::LossOutput> outs = w.pipeline->train_step(
      *w.policy, pipeline_schedule(w.spec.parallel().policy().schedule()),
      [&](int m) {
        trainers::StepContext ctx = s.step_context(w, step);
        return s.trainer->compute_loss(micro_batches[static_cast<size_t>(m)], ctx);
      },
      weights);
  for (size_t a = 0; a < outs.size(); ++a) {
    if (outs[a].loss.defined()) accumulate(outs[a], weights[a], opt.gradient_accumulation(), r);  // the last stage
  }
  r.forward_s = w.pipeline->stats().forward_s;
  r.backward_s = w.pipeline->stats().backward_s;
  sum_tied_embedding_gradients(*w.policy, *w.pipeline);
}

// This rank's micro-batches from micro-batch `a` of step `step` through step `last` (at most the
// last step this run takes: the stage's, or where RunOptions::stop_after_steps ends the run): the
// step's own, then what the Buffer will hand the later steps (its position is put back, so the
// steps themselves read the same).
std::vector<std::pair<int64_t, std::vector<const buffer::Example*>>> upcoming(
    const PolicyWorker& w, StageRun& s, const std::vector<std::vector<const buffer::Example*>>& micro_batches,
    int64_t a, int64_t step, int64_t last) {
  std::vector<std::pair<int64_t, std::vector<const buffer::Example*>>> out;
  for (size_t m = static_cast<size_t>(a); m < micro_batches.size(); ++m) out.emplace_back(step, micro_batches[m]);
  const auto& opt = s.spec.optimizer();
  last = std::min(last, s.total_steps - 1);
  // w.global_step counts the steps already taken; this one is the next.
  const int64_t stop = w.options.stop_after_steps;
  if (stop > 0) last = std::min(last, step + stop - w.global_step - 1);
  const buffer::Position now = s.buffer->position();
  for (int64_t t = step + 1; t <= last; ++t) {
    for (int64_t m = 0; m < opt.gradient_accumulation(); ++m)
      out.emplace_back(t, s.buffer->next(opt.micro_batch_size()));
  }
  s.buffer->seek(now);
  return out;
}

}  // namespace

double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  double pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<double>(sysconf(_SC_PAGESIZE));
}

StepResult run_passes(PolicyWorker& w, StageRun& s, int64_t step) {
  const auto& opt = s.spec.optimizer();
  const int64_t micro = opt.micro_batch_size();
  StepResult r;
  // The step's micro-batches first, so each one's weight in the global mean (its normalizer over
  // the sum across micro-batches and ranks) is known before its backward pass.
  auto t0 = Clock::now();
  std::vector<std::vector<const buffer::Example*>> micro_batches;
  double normalizer_total = 0;
  std::vector<double> normalizers;
  for (int64_t a = 0; a < opt.gradient_accumulation(); ++a) {
    micro_batches.push_back(s.buffer->next(micro));
    normalizers.push_back(s.trainer->normalizer(micro_batches.back()));
    normalizer_total += normalizers.back();
    r.samples += static_cast<int64_t>(micro_batches.back().size());
  }
  normalizer_total = w.dp->sum(normalizer_total);
  r.data_s += since(t0);
  if (w.pipeline) {
    std::vector<double> weights;
    for (double n : normalizers) weights.push_back(n / normalizer_total);
    pipelined_passes(w, s, step, micro_batches, weights, r);
    return r;
  }
  for (int64_t a = 0; a < opt.gradient_accumulation(); ++a) {
    t0 = Clock::now();
    trainers::StepContext ctx = s.step_context(w, step);
    if (ctx.prefetch) {
      ctx.upcoming = [&w, &s, &micro_batches, a, step](int64_t last) {
        return upcoming(w, s, micro_batches, a, step, last);
      };
    }
    // A generating method's samples first (here or on the rollout ranks): the trainer reads them.
    if (s.producer) s.producer->produce(micro_batches[static_cast<size_t>(a)], ctx);
    trainers::LossOutput out = s.trainer->compute_loss(micro_batches[static_cast<size_t>(a)], ctx);
    // In one process without accumulation the weight is exactly 1 and the loss is used as is.
    const double weight = normalizers[static_cast<size_t>(a)] / normalizer_total;
    r.forward_s += since(t0);
    t0 = Clock::now();
    // The step's last backward sums gradient buckets over ranks while it runs (parallel.overlap).
    if (w.dp->size() > 1 && w.spec.parallel().overlap() && a + 1 == opt.gradient_accumulation()) {
      r.overlapped = std::make_unique<OverlappedGradientSum>(*w.dp, w.policy->tensors(),
                                                             w.spec.parallel().deterministic(), &s.ready_order);
    }
    (weight == 1.0 ? out.loss : out.loss * weight).backward();
    r.backward_s += since(t0);
    accumulate(out, weight, opt.gradient_accumulation(), r);
  }
  return r;
}

void sum_over_ranks(PolicyWorker& w, StageRun& s, StepResult& r) {
  const DataParallel& dp = *w.dp;
  const auto t0 = Clock::now();
  r.local_tokens = r.tokens;
  if (dp.size() > 1) {
    if (r.overlapped) {
      r.overlapped->finish();
      w.overlap_share->Set(r.overlapped->started_during_backward());
      r.overlapped.reset();  // removes the hooks
    } else if (s.adamw->shards_parameters()) {
      // Reduce-scattered layer by layer during backward (fully_sharded.h).
    } else if (s.adamw->shards_gradients()) {
      s.adamw->reduce_scatter_gradients(w.policy->tensors(), w.spec.parallel().deterministic());
    } else {
      dp.all_reduce_gradients(w.policy->tensors(), w.spec.parallel().deterministic());
    }
  }
  r.communication_s = since(t0);
  // Pipeline stages before the last computed no loss: their numbers come with the step's read.
  if (!r.loss_sum.defined()) return;
  // One float64 tensor on the loss's device: [loss (already weighted), tokens, samples, metrics].
  // Over ranks the loss, tokens and samples add up and the trainer's scalars are averaged; nothing
  // is read here (update_policy reads it with the gradient norm).
  const double ranks = static_cast<double>(dp.size());
  std::vector<at::Tensor> parts = {r.loss_sum.reshape({1})};
  std::vector<double> host = {static_cast<double>(r.tokens), static_cast<double>(r.samples)};
  r.scalar_names.clear();
  for (const auto& [k, value] : r.host_metrics) {
    r.scalar_names.push_back(k);
    host.push_back(ranks > 1 ? value / ranks : value);
  }
  parts.push_back(at::tensor(host, at::kDouble).to(r.loss_sum.device()));
  for (const auto& [k, value] : r.device_metrics) {
    r.scalar_names.push_back(k);
    parts.push_back((ranks > 1 ? value / ranks : value).reshape({1}));
  }
  r.scalars = at::cat(parts);  // [loss, tokens, samples, host metrics, device metrics]
  if (dp.size() > 1) dp.sum(r.scalars);
  r.communication_s = since(t0);
}

// Every rank's own numbers reach rank 0, which exports them with a rank label: a slow or stalling
// rank shows up as the one with little communication time (the others wait for it). (Only rank 0
// sets them: the other ranks' series reach its /metrics with their heartbeats, and a second copy
// of rank r's numbers would be a duplicate series there.) After the step's read, so pipeline stages
// before the last know their replica's token count.
namespace {
void export_rank_numbers(PolicyWorker& w, const StageRun& s, StepResult& r) {
  const DataParallel& dp = *w.dp;
  if (dp.size() == 1) return;
  const std::vector<double> all = dp.gather({r.forward_s + r.backward_s, r.communication_s,
                                             static_cast<double>(r.local_tokens), peak_rss_bytes()});
  for (int rank = 0; rank < (w.lead ? dp.size() : 0); ++rank) {
    const Labels rank_labels{{"rank", std::to_string(rank)}, {"stage", s.name}};
    w.meters->rank_compute.Add(rank_labels).Set(all[static_cast<size_t>(4 * rank)]);
    w.meters->rank_communication.Add(rank_labels).Set(all[static_cast<size_t>(4 * rank + 1)]);
    w.meters->rank_tokens.Add(rank_labels).Set(all[static_cast<size_t>(4 * rank + 2)]);
    r.rank_peak_rss.push_back(all[static_cast<size_t>(4 * rank + 3)]);
  }
}
}  // namespace

absl::Status update_policy(PolicyWorker& w, StageRun& s, int64_t step, StepResult& r) {
  const auto& opt = s.spec.optimizer();
  const auto t0 = Clock::now();
  optim::TensorMap& params = w.policy->tensors();
  std::function<void(at::Tensor&)> over_stages;
  if (w.pipeline) over_stages = [&](at::Tensor& t) { w.pipeline->sum(t); };
  const at::Tensor norm = s.adamw->clip_grad_norm(params, opt.max_grad_norm(), over_stages,
                                                  w.pipeline ? tied_copy_name(*w.policy) : std::string());
  read_scalars(w, r, norm);  // the step's one read: loss, tokens, samples, metrics, gradient norm
  export_rank_numbers(w, s, r);
  r.lr = optim::scheduled_lr(schedule_kind(opt.schedule()), opt.lr(), step, opt.warmup_steps(), s.total_steps,
                             opt.warmup() == aln::v1::START_AT_ZERO ? optim::WarmupStart::kStartAtZero
                                                                    : optim::WarmupStart::kFirstStepNonzero);
  r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
  if (!r.finite) {
    // Skip the update, count it, and stop after too many in a row: diverged training should fail
    // loudly, not burn the budget producing NaNs.
    w.meters->skipped.Add(s.labels).Increment();
    if (++s.consecutive_bad >= opt.max_consecutive_nonfinite()) {
      return absl::InternalError(absl::StrCat("stage ", s.name, ": ", s.consecutive_bad,
                                              " consecutive non-finite steps (loss ", r.loss, ", grad norm ",
                                              r.grad_norm, "); lower optimizer.lr or check the data"));
    }
    w.log.warning("step %d: non-finite loss or gradient, update skipped", step + 1);
  } else {
    s.consecutive_bad = 0;
    s.adamw->step(params, r.lr);
    w.optimizer_bytes->Set(static_cast<double>(s.adamw->state_bytes()));
  }
  s.adamw->clear_gradients(params);
  trainers::StepContext ctx = s.step_context(w, step);
  // After the update the policy is no longer version `step`: nothing here samples remotely or
  // records rollouts under that version.
  ctx.generate = nullptr;
  ctx.prefetch = nullptr;
  ctx.rollout_sink = nullptr;
  for (const auto& [k, v] : s.trainer->after_step(ctx)) r.metrics[k] = v;
  r.optimizer_s = since(t0);
  return absl::OkStatus();
}

absl::Status report_step(PolicyWorker& w, StageRun& s, int64_t step, const StepResult& r, double seconds) {
  Meters& meters = *w.meters;
  const double rss = peak_rss_bytes();
  const double tokens_per_second = static_cast<double>(r.tokens) / seconds;
  meters.loss.Add(s.labels).Set(r.loss);
  meters.steps.Add(s.labels).Increment();
  meters.tokens.Add(s.labels).Increment(static_cast<double>(r.tokens));
  meters.samples.Add(s.labels).Increment(static_cast<double>(r.samples));
  meters.tokens_per_second.Add(s.labels).Set(tokens_per_second);
  meters.samples_per_second.Add(s.labels).Set(static_cast<double>(r.samples) / seconds);
  meters.lr.Add(s.labels).Set(r.lr);
  meters.grad_norm.Add(s.labels).Set(r.grad_norm);
  meters.memory.Add({}).Set(rss);
  const std::pair<const char*, double> phases[] = {{"data", r.data_s},
                                                   {"forward", r.forward_s},
                                                   {"backward", r.backward_s},
                                                   {"communication", r.communication_s},
                                                   {"optimizer", r.optimizer_s}};
  for (auto [phase, secs] : phases) meters.phase.Add({{"stage", s.name}, {"phase", phase}}).Set(secs);
  for (const auto& [k, v] : r.metrics)
    meters.method.Add({{"stage", s.name}, {"trainer", s.method}, {"name", k}}).Set(v);
  json pipeline_line;
  if (w.pipeline) {
    pipeline_line = export_pipeline_stats(*w.pipeline, static_cast<int>(s.spec.optimizer().gradient_accumulation()),
                                          s.name, w.metrics, w.lead);
  }
  json line = {{"stage", s.name},
               {"trainer", s.method},
               {"step", step + 1},
               {"global_step", w.global_step},
               {"loss", r.loss},
               {"lr", r.lr},
               {"grad_norm", r.grad_norm},
               {"skipped", !r.finite},
               {"tokens", r.tokens},
               {"samples", r.samples},
               {"seconds", seconds},
               {"tokens_per_second", tokens_per_second},
               {"phases",
                {{"data", r.data_s},
                 {"forward", r.forward_s},
                 {"backward", r.backward_s},
                 {"communication", r.communication_s},
                 {"optimizer", r.optimizer_s}}},
               {"peak_rss_bytes", rss},
               {"start_rss_bytes", s.start_rss_bytes},
               {"host_reads", r.host_reads},
               {"metrics", json(r.metrics)}};
  if (w.pipeline) line["pipeline"] = pipeline_line;
  // Every data-parallel rank's peak resident memory so far (one number per rank, in rank order).
  if (!r.rank_peak_rss.empty()) line["rank_peak_rss_bytes"] = r.rank_peak_rss;
  if (w.fsdp) {  // what sharding left this rank holding (rank 0's; the ranks' shards differ by padding only)
    line["fsdp"] = {{"shard_bytes", w.fsdp->shard_bytes()},
                    {"outer_bytes", w.fsdp->outer_bytes()},
                    {"peak_gathered_layer_bytes", w.fsdp->peak_layer_bytes()},
                    {"whole_bytes", w.fsdp->whole_bytes()}};
    w.gathered_peak_bytes->Set(static_cast<double>(w.fsdp->peak_layer_bytes()));
    w.fsdp->reset_peak();
  }
  if (w.sampler) {  // parallel.rollout.ranks: what this step waited for its rollout rank
    const double waited = w.sampler->waited_seconds();
    line["rollout_wait_seconds"] = waited - s.rollout_waited;
    s.rollout_waited = waited;
  }
  return w.outputs ? w.outputs->train_line(line.dump(), step + 1, r.loss, tokens_per_second) : absl::OkStatus();
}

namespace {

// A fully sharded run's checkpoint: every rank writes its part of the parameters and moments into
// the staging folder (rank 0 empties it first and adds the index); every rank learns whether all
// of them could. Nothing is gathered.
absl::Status write_shards(PolicyWorker& w, StageRun& s, int64_t global_step) {
  // Every rank writes at once: each may wait as long as the lead's whole save may take.
  const std::chrono::milliseconds wait = std::max(w.save_timeout, std::chrono::milliseconds(30 * 60 * 1000));
  absl::Status ok = w.lead ? w.checkpoints->prepare_staging(global_step) : absl::OkStatus();
  absl::Status agreed = w.world->agree(
      ok, absl::InternalError("rank 0 could not prepare the checkpoint's shard folder (see its log)"), wait);
  if (!agreed.ok()) return agreed;
  const std::string dir = w.checkpoints->staging_shards(global_step);
  optim::TensorMap parts = s.adamw->local_state();
  parts.merge(w.fsdp->parameter_parts());
  ok = write_rank_shard(dir, w.dp->rank(), w.dp->size(), parts);
  if (ok.ok() && w.lead) {
    ShardIndex index;
    index.ranks = w.dp->size();
    index.config_json = model::to_hf_config_json(w.policy->config());
    index.tensors = w.fsdp->layout();
    ok = write_shard_index(dir, index);
  }
  return w.world->agree(ok, absl::InternalError("another rank could not write its checkpoint shard (see its log)"),
                        wait);
}

}  // namespace

absl::Status save_checkpoint(PolicyWorker& w, StageRun& s, int64_t step) {
  const auto start = Clock::now();
  TrainingState state;
  state.global_step = w.global_step;
  state.stage_index = static_cast<int64_t>(s.index);
  state.stage_name = s.name;
  state.stage_step = step + 1;
  state.position = s.buffer->position();
  state.consecutive_nonfinite = s.consecutive_bad;
  state.reference_cache_key = s.reference.cache_key;
  state.spec_fingerprint = w.fingerprint;
  state.finished = w.report.stages;
  state.stage_before = s.report.before;
  state.data_parallel = w.dp->size();
  absl::StatusOr<std::string> saved = std::string();
  CheckpointContents contents;
  contents.reference = s.reference.to_save;
  std::optional<model::DecoderModel> whole_reference;
  if (s.reference.sharded && s.reference.to_save != nullptr) {
    // Put together on rank 0 for the checkpoint (collective), then dropped.
    whole_reference = s.reference.sharded->whole_on_lead();
    contents.reference = whole_reference ? &*whole_reference : nullptr;
  }
  s.trainer->before_save();  // every rank: what rank 0's save_state writes, put together
  if (s.producer) s.producer->before_save();
  // Rollouts generated ahead and not yet trained on (every rank; collective): kept, not regenerated.
  const io::NamedTensors unconsumed = w.sampler ? gather_unconsumed(*w.sampler, *w.world) : io::NamedTensors();
  contents.trainer_state = [&s, &unconsumed](const std::string& dir) {
    absl::Status saved = s.trainer->save_state(dir);
    if (saved.ok() && s.producer) saved = s.producer->save_state(dir);
    if (saved.ok()) saved = write_unconsumed(dir, unconsumed);
    return saved;
  };
  optim::TensorMap optimizer_state;
  std::optional<model::DecoderModel> whole;
  if (w.fsdp) {
    absl::Status written = write_shards(w, s, state.global_step);
    if (!written.ok()) return written;
    contents.shards = true;
  } else {
    optimizer_state = s.adamw->state();  // collective when sharded
    contents.policy = &*w.policy;
    contents.optimizer = &optimizer_state;
  }
  if (w.pipeline) {
    // Replica 0's stages send theirs to rank 0: the checkpoint holds the whole model and optimizer
    // state, so it resumes with any pipeline (or data-parallel) size.
    auto gathered = gather_whole_policy(w);
    if (w.dp->lead()) optimizer_state = w.pipeline->gather_to_first(optimizer_state);
    if (!gathered.ok()) return gathered.status();
    whole = std::move(*gathered);
    if (whole) contents.policy = &*whole;
  }
  if (w.lead) saved = w.outputs->checkpoint(contents, state);
  // Everyone learns whether rank 0's save worked, so a failed save stops every rank at once.
  absl::Status agreed = w.world->agree(
      saved.status(), absl::InternalError("rank 0 could not write the checkpoint (see its log)"), w.save_timeout);
  if (!agreed.ok()) return agreed;
  w.meters->checkpoint_seconds.Add({}).Set(since(start));
  w.meters->checkpoints.Add({}).Increment();
  w.log.debug("checkpoint %s (%.2f s)", *saved, since(start));
  return absl::OkStatus();
}

}  // namespace aln::engine
