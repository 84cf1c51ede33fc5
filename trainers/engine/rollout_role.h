#pragma once
// Generation on ranks of their own (parallel.rollout.ranks K). The world is every other role's
// ranks, then the rollout ranks; policy rank i is served by rollout rank i % K. A generating
// trainer samples through StepContext::generate, which here sends its rollout rank the weights of
// the policy version it samples with ("weights", only when the rank holds another version: on-policy
// every step, with a bounded-staleness snapshot only when the snapshot is renewed; the requests name
// the tensors, which follow as broadcasts on a tensor channel that rollout rank j shares with policy
// rank j; the other policy ranks it serves wait until it holds that version, "holds"), then the prompts
// and sampling settings ("generate"); the rollout rank runs the same generation code on the same
// weights with the same seed, so the tokens and sampling log-probs are the ones a colocated run
// samples, bit for bit (with the same number of threads). Beside a fully sharded policy
// (parallel.policy.shard: full) the weights are gathered a unit at a time by every policy rank at
// once and sent on as they pass by the first policy rank each rollout rank serves (no rank holds
// more than one unit of them; the rollout rank holds the whole model, as it does unsharded). Scoring, the loss and the
// rollout records stay on the policy rank. With parallel.rollout.ahead the policy rank asks for a sampling version's
// rollouts when the version starts and trains while they are generated (RemoteSampler::prefetch);
// aln_rollout_wait_seconds_total says how long it still waited. Messages are
// aln.v1.ServiceRequest / ServiceReply on the service communicator; every wait is bounded.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

class FullySharded;
class WeightsSender;

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
  // The tensor channel between rollout rank j and policy rank j, which sends it the policy's weights
  // (rank 0 of it, the sender; rank 1, the rollout rank). Null on every other rank.
  dist::Communicator* weights = nullptr;
  int server_of(int policy_rank) const { return first_rollout_rank + policy_rank % rollout_ranks; }
};

// Policy side: this policy rank's connection to its rollout rank. With `ahead` (parallel.rollout.ahead
// and MPI_THREAD_MULTIPLE) every message goes through a thread of its own, so requests sent ahead
// (prefetch) are answered while the training thread computes, and each answer is taken as soon as
// it comes (the rollout rank sends an answer before it reads its next request: one left waiting
// would hold up the other policy ranks it serves). Without it every call is made and waited for
// on the calling thread.
class RemoteSampler {
 public:
  RemoteSampler(const RolloutPlacement& placement, int policy_rank, prometheus::Counter* wait_seconds, bool ahead);
  ~RemoteSampler();  // a call in flight is abandoned (its thread ends within a millisecond or so)
  RemoteSampler(const RemoteSampler&) = delete;
  RemoteSampler& operator=(const RemoteSampler&) = delete;

  // What model::generate(sampler, ids, mask, options) returns, computed on the rollout rank with
  // `sampler`'s weights, which are policy version `version` of stage `stage` (sent first when the
  // rollout rank holds another). An answer asked for ahead (prefetch) with the same arguments is
  // taken instead of asking again. Throws (naming the rollout rank) when it fails or does not answer.
  model::GenerationOutput generate(const model::DecoderModel& sampler, int64_t stage, int64_t version,
                                   const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                                   const model::GenerationOptions& options);
  // Asks now for what generate() will be asked later with the same arguments (no-op without
  // `ahead`). The weights go first, and are waited for, when the rollout rank holds another
  // version; so `sampler` is not read after this returns. Answers asked for with an older version
  // and never taken are dropped.
  void prefetch(const model::DecoderModel& sampler, int64_t stage, int64_t version, const at::Tensor& prompt_ids,
                const at::Tensor& prompt_mask, const model::GenerationOptions& options);
  bool asks_ahead() const;
  // Rollouts generated and not yet taken: a generate request's bytes and its answer. unconsumed()
  // waits for every answer asked for ahead (each wait bounded as generate's is), and leaves them to
  // be taken as before; answers that failed are left out and counted in `*failed` (generate()
  // reports them when they are taken). restore() hands answers kept that way (in a checkpoint) to
  // prefetch() and generate() as if this run had asked for them ahead: a prefetch of the same
  // request claims one instead of sending it (nor the weights for it), and generate() takes it.
  // Restored answers of an older version than one asked for are dropped (they can match nothing).
  struct Answer {
    std::string request;
    aln::v1::ServiceReply reply;
  };
  std::vector<Answer> unconsumed(int64_t* failed);
  void restore(std::vector<Answer> answers);
  int64_t restored_taken() const { return restored_taken_; }  // generate() calls answered by restore()'s
  // The job ended well: the rollout rank may leave (after the answers still on their way).
  absl::Status finish();
  int server() const { return server_; }
  std::chrono::milliseconds long_wait() const { return placement_.long_wait; }
  // "the rollout rank (mpirun rank N)", for messages.
  std::string server_name() const;
  int64_t weight_pushes() const { return pushes_; }
  int64_t weights_found() const { return found_; }  // versions another policy rank had already sent
  int64_t taken_ahead() const { return taken_ahead_; }  // generate() calls answered by a prefetch
  int64_t asked_ahead() const { return asked_ahead_; }
  double waited_seconds() const { return waited_; }  // in generate and prefetch, weights included
  int64_t weight_bytes_sent() const { return bytes_sent_; }  // on the tensor channel
  double weight_seconds() const { return weight_seconds_; }  // sending them (a sharded policy: gathers included)

 private:
  struct Calls;  // the message thread (or none) and its queue
  struct Pending;
  void ensure_version(const model::DecoderModel& sampler, int64_t stage, int64_t version);
  WeightsSender weights_sender(const model::DecoderModel& sampler, int64_t stage, int64_t version);
  // The first policy rank a rollout rank serves sends it every version (it alone shares a tensor
  // channel with it); the others wait until it holds the version (bounded by long_wait).
  void push_weights(const model::DecoderModel& sampler, int64_t stage, int64_t version);
  void wait_until_held(int64_t stage, int64_t version);
  // A fully sharded sampler: every policy rank gathers it a unit at a time (collective), the first
  // policy rank each rollout rank serves sends the tensors as they pass, and the others, once every
  // send is done, find that version on their rollout rank ("holds").
  void push_sharded(const FullySharded& shards, const model::DecoderModel& sampler, int64_t stage, int64_t version);
  // Whether the rollout rank already holds that version (another policy rank sent it: data-parallel
  // ranks hold the same weights at the same version); it then serves this rank from the same copy.
  bool rollout_rank_holds(int64_t stage, int64_t version);
  aln::v1::ServiceReply call(const aln::v1::ServiceRequest& request, const char* what);
  RolloutPlacement placement_;
  int policy_rank_;
  int server_;
  std::unique_ptr<Calls> calls_;
  std::vector<Pending> pending_;  // asked ahead, not yet taken, in the order asked
  prometheus::Counter* wait_seconds_;
  std::optional<std::pair<int64_t, int64_t>> held_;  // (stage, version) the rollout rank holds
  int64_t pushes_ = 0, found_ = 0, taken_ahead_ = 0, asked_ahead_ = 0, bytes_sent_ = 0, restored_taken_ = 0;
  double waited_ = 0, weight_seconds_ = 0;
};

// The generate request RemoteSampler sends for these arguments; its bytes are what an answer asked
// for ahead (or kept in a checkpoint) is matched by.
aln::v1::ServiceRequest generate_request(int64_t stage, int64_t version, const at::Tensor& prompt_ids,
                                         const at::Tensor& prompt_mask, const model::GenerationOptions& options);

// Rollout side: the whole role for a job (`index` among the rollout ranks).
absl::Status run_rollout_role(const RolloutPlacement& placement, int index, const Logger& log,
                              MetricsRegistry& metrics);

}  // namespace aln::engine
