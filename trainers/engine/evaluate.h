#pragma once
// Held-out evaluation, shared by training (before, periodically, after) and `aln eval`.
#include <cstdint>
#include <vector>

#include "core/buffer/buffer.h"
#include "core/model/decoder.h"
#include "trainers/engine/data_parallel.h"
#include "trainers/engine/pipeline.h"
#include "trainers/engine/report.h"
#include "trainers/trainer.h"

namespace aln::engine {

// The trainer's loss and metrics averaged over the examples (weighted by batch size), plus, for
// preference pairs scored by a language model:
//   preference_accuracy      share of pairs where the policy alone gives the chosen response the
//                            higher mean log-probability per token (needs no reference, so before
//                            and after compare the policy itself);
//   safe_vs_unsafe_accuracy  the same on pairs whose responses differ in safety, the safe one
//                            counting as the one that should win;
//   safe_vs_unsafe_pairs     how many such pairs there are.
// The DPO-family trainers add TRL-named reward metrics (rewards_accuracy, rewards_margin, ...),
// logratio_chosen/rejected (mean Δlr) and kl_estimate from their loss output.
// With `with_loss` false only the policy-alone metrics are computed (for `aln eval` without a
// reference model, where the trainer's loss cannot be evaluated).
// `extras` (optional) supplies what rollout-based trainers need (decoder, end id, seed, reward models).
// `pipeline` (a pipeline-parallel policy): the passes run through the stages; every stage returns
// the last stage's numbers.
// `ranks` (the policy's data-parallel ranks, every one calling): each evaluates every size()-th
// micro-batch and the per-batch numbers are shared and added in batch order, so the result is the
// same bits as one process evaluating them all (unless the trainer's evaluation_splits() is false).
MetricMap evaluate(trainers::Trainer& trainer, const model::DecoderModel& policy, const model::DecoderModel* reference,
                   const std::vector<buffer::Example>& eval, int64_t micro, int64_t pad_id, bool with_loss = true,
                   const trainers::StepContext* extras = nullptr, Pipeline* pipeline = nullptr,
                   const DataParallel* ranks = nullptr);

}  // namespace aln::engine
