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
// Stages whose trainer needs only per-token log-probs of sequences it makes as it trains (GRPO's KL
// term), or only the reference's final hidden states and output projection (TDPO and Ra-DPO, which
// form the full distributions themselves), or per-token log-probs and mean-pooled sentence
// embeddings (HAIR with the reference as its sentence encoder), are served each step instead: the reference ranks take
// the reference's weights as the stage starts and answer requests (per-token log-probs of input ids
// with attention and response masks at a temperature; or hidden states of input ids with an
// attention mask; computed by the code a colocated run uses) until each of their policy ranks says
// the stage is done. Policy rank r asks reference rank r % reference_ranks. Those
// messages are aln.v1.ServiceRequest / ServiceReply on the service channel.
//
// Protocol, in order: first stage to run (int64); then for each served stage from it: a flag
// (0 nothing to do: the cache was found; 1 compute with the policy's weights, which follow tensor
// by tensor in name order; 2 compute with the stage's reference.path; 3 and 4 the same for a stage
// served each step), and when computing sums, the sum of 2 x (train + eval) float64 sums (chosen,
// rejected per example); finally, when the policy is done, an end code (the reference ranks stay
// until then, so they keep heartbeating).
#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/model/decoder.h"
#include "distributed/communicator.h"
#include "distributed/service.h"
#include "trainers/reference.h"
#include "trainers/engine/examples.h"
#include "trainers/trainer.h"

namespace aln::engine {

struct RemoteReference {
  dist::Communicator* world = nullptr;  // the policy's and the reference's ranks
  // World rank 0 and the reference ranks (rank 0 sends the weights; the other policy ranks, which
  // take no part, have none). A pipelined policy's rank 0 sends the whole model.
  dist::Communicator* weights = nullptr;
  int reference_ranks = 0;
  // Long: the other side may be loading, preparing data or computing a whole cache meanwhile.
  std::chrono::milliseconds timeout{0};
  // Stages served each step: requests on `service` (every rank of the job), where the reference
  // ranks start at `first_service_rank`; each request waits at most `request_timeout`.
  dist::Communicator* service = nullptr;
  int first_service_rank = 0;
  int policy_ranks = 0;
  std::chrono::milliseconds request_timeout{0};
  // parallel.data_reader: lead: the reference ranks do not read the data either; world rank 0 sends
  // them each served stage's prepared examples after the weights.
  bool share_data = false;
};

// Stages whose reference work the reference ranks take: per-pair sums up front (dpo, safedpo), or
// per-token log-probs each step (served_each_step).
bool served_by_reference_ranks(const trainers::Needs& needs);
bool served_each_step(const trainers::Needs& needs);

// Policy side. World rank 0 announces the first stage it runs (all policy ranks call this).
void announce_first_stage(const RemoteReference& remote, int64_t first_stage);
// Tells the reference ranks there is nothing to compute for this stage (the cache was found).
void skip_reference_stage(const RemoteReference& remote);
// Asks the reference ranks for the stage's sums (sending `weights` when the reference is the policy,
// i.e. `weights` non-null on world rank 0, which decides) and fills them into the examples.
void receive_reference_logprobs(const RemoteReference& remote, const model::DecoderModel* weights, StageData& data);

// Policy side, as a stage served each step starts (all policy ranks): sends the reference's weights
// (`weights` non-null on world rank 0, whose are sent) or has the reference ranks load the stage's
// reference.path, and returns the reference trainers get in their StepContext from this policy rank:
// each call a request to its reference rank ("logprobs", "hidden", "embed"); the output projection
// is `head` (held here: hidden-state trainers form the full distributions themselves).
std::shared_ptr<const trainers::Reference> open_reference_stage(const RemoteReference& remote,
                                                                const model::DecoderModel* weights, int policy_rank,
                                                                at::Tensor head);
// Policy side, when that stage has ended (after its last evaluation).
absl::Status close_reference_stage(const RemoteReference& remote, int policy_rank);

// Policy side, when the job has ended well: releases the reference ranks.
void finish_reference_role(const RemoteReference& remote);

// Reference side: the whole role for a job (`index` among the reference ranks).
absl::Status run_reference_role(const aln::v1::JobSpec& spec, const RemoteReference& remote, int index,
                                const Logger& log);

}  // namespace aln::engine
