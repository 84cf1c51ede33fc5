#pragma once
// The reference on its own ranks (parallel.placement: separate). The world is the policy's ranks
// followed by the reference's. For every stage whose trainer takes per-pair reference sums (dpo,
// safedpo), the reference ranks build the stage's examples exactly as the policy ranks do, compute
// the sums of their share of micro-batch chunks (dealt round-robin, the chunks one process would
// form, so the numbers are bit-identical to colocated), and a sum over the world hands them to the
// policy ranks, which never hold the reference model. Control messages (which stage, whether to
// compute, the weights when the reference is the policy as the stage starts) are broadcasts from
// world rank 0; every wait is bounded.
//
// Protocol, in order: first stage to run (int64); then for each served stage from it: a flag
// (0 nothing to do: the cache was found; 1 compute with the policy's weights, which follow tensor
// by tensor in name order; 2 compute with the stage's reference.path), and when computing, the sum
// of 2 x (train + eval) float64 sums (chosen, rejected per example); finally, when the policy is
// done, an end code (the reference ranks stay until then, so they keep heartbeating).
#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "distributed/communicator.h"
#include "trainers/engine/examples.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct RemoteReference {
  dist::Communicator* world = nullptr;  // every rank of the job
  int reference_ranks = 0;
  // Long: the other side may be loading, preparing data or computing a whole cache meanwhile.
  std::chrono::milliseconds timeout{0};
};

// Stages the reference ranks serve: per-pair reference sums, no full reference distributions.
bool served_by_reference_ranks(const trainers::Needs& needs);

// Policy side. World rank 0 announces the first stage it runs (all policy ranks call this).
void announce_first_stage(const RemoteReference& remote, int64_t first_stage);
// Tells the reference ranks there is nothing to compute for this stage (the cache was found).
void skip_reference_stage(const RemoteReference& remote);
// Asks the reference ranks for the stage's sums (sending `weights` when the reference is the policy,
// i.e. `weights` non-null) and fills them into the examples.
void receive_reference_logprobs(const RemoteReference& remote, const model::DecoderModel* weights, StageData& data);

// Policy side, when the job has ended well: releases the reference ranks.
void finish_reference_role(const RemoteReference& remote);

// Reference side: the whole role for a job (`index` among the reference ranks).
absl::Status run_reference_role(const aln::v1::JobSpec& spec, const RemoteReference& remote, int index,
                                const Logger& log);

}  // namespace aln::engine
