#pragma once
// Generation on ranks of their own (parallel.rollout.ranks K). The world is every other role's
// ranks, then the rollout ranks; policy rank i is served by rollout rank i % K. A generating
// trainer samples through StepContext::generate, which here sends its rollout rank the weights of
// the policy version it samples with ("weights", only when the rank holds another version: on-policy
// every step, with a bounded-staleness snapshot only when the snapshot is renewed; not at all when
// another policy rank it serves already sent that version, "holds"), then the prompts
// and sampling settings ("generate"); the rollout rank runs the same generation code on the same
// weights with the same seed, so the tokens and sampling log-probs are the ones a colocated run
// samples, bit for bit (with the same number of threads). Scoring, the loss and the rollout records
// stay on the policy rank. The policy rank waits for its rollouts (synchronous: generation does not
// overlap training yet; aln_rollout_wait_seconds_total says how long it waited). Messages are
// aln.v1.ServiceRequest / ServiceReply on the service communicator; every wait is bounded.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "aln/v1/job.pb.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/model/decoder.h"
#include "core/model/generation.h"
#include "distributed/communicator.h"
#include "distributed/service.h"

namespace aln::engine {

struct RolloutPlacement {
  dist::Communicator* channel = nullptr;  // every rank of the job, for service messages only
  int policy_ranks = 1;
  int first_rollout_rank = 1;
  int rollout_ranks = 1;
  std::chrono::milliseconds timeout{0};    // a message's way (the goodbye)
  // A version's weights, and a generate request: generation may take long (max_new_tokens, a real
  // model, other policy ranks' requests queued first); a rollout rank that died or stopped is found
  // by the heartbeats and mpirun, not by this wait.
  std::chrono::milliseconds long_wait{0};
  int rank_shift = 0;  // 1 with a coordinator of its own: mpirun's rank = the channel's + 1 (messages)
  int server_of(int policy_rank) const { return first_rollout_rank + policy_rank % rollout_ranks; }
};

// Policy side: this policy rank's connection to its rollout rank.
class RemoteSampler {
 public:
  RemoteSampler(const RolloutPlacement& placement, int policy_rank, prometheus::Counter* wait_seconds)
      : placement_(placement), client_(placement.channel, placement.server_of(policy_rank)),
        wait_seconds_(wait_seconds) {}
  // What model::generate(sampler, ids, mask, options) returns, computed on the rollout rank with
  // `sampler`'s weights, which are policy version `version` of stage `stage` (sent first when the
  // rollout rank holds another). Throws (naming the rollout rank) when it fails or does not answer.
  model::GenerationOutput generate(const model::DecoderModel& sampler, int64_t stage, int64_t version,
                                   const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                                   const model::GenerationOptions& options);
  // The job ended well: the rollout rank may leave.
  absl::Status finish();
  int server() const { return client_.server(); }
  // "the rollout rank (mpirun rank N)", for messages.
  std::string server_name() const;
  int64_t weight_pushes() const { return pushes_; }
  int64_t weights_found() const { return found_; }  // versions another policy rank had already sent
  double waited_seconds() const { return waited_; }  // in generate, weights included, since the start

 private:
  void push_weights(const model::DecoderModel& sampler, int64_t stage, int64_t version);
  // Whether the rollout rank already holds that version (another policy rank sent it: data-parallel
  // ranks hold the same weights at the same version); it then serves this rank from the same copy.
  bool rollout_rank_holds(int64_t stage, int64_t version);
  RolloutPlacement placement_;
  dist::ServiceClient client_;
  prometheus::Counter* wait_seconds_;
  std::optional<std::pair<int64_t, int64_t>> held_;  // (stage, version) the rollout rank holds
  int64_t pushes_ = 0, found_ = 0;
  double waited_ = 0;
};

// Rollout side: the whole role for a job (`index` among the rollout ranks).
absl::Status run_rollout_role(const RolloutPlacement& placement, int index, const Logger& log,
                              MetricsRegistry& metrics);

}  // namespace aln::engine
