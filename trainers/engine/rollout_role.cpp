#include "trainers/engine/rollout_role.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/model/model_config.h"
#include "core/status.h"
#include "trainers/engine/fully_sharded.h"
#include "trainers/engine/tensor_pieces.h"

namespace aln::engine {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The sampling settings as JSON (doubles print so that they read back bit for bit).
std::string options_json(const model::GenerationOptions& o) {
  return json{{"decoding", o.decoding == model::Decoding::kSample ? "sample" : "greedy"},
              {"max_new_tokens", o.max_new_tokens},
              {"temperature", o.temperature},
              {"top_k", o.top_k},
              {"top_p", o.top_p},
              {"seed", o.seed},
              {"stop_tokens", o.stop_tokens},
              {"pad_token_id", o.pad_token_id}}
      .dump();
}

model::GenerationOptions parse_options(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  ALN_CHECK(j.is_object(), "a generate request's options are not a JSON object");
  model::GenerationOptions o;
  try {
    o.decoding = j.at("decoding").get<std::string>() == "sample" ? model::Decoding::kSample : model::Decoding::kGreedy;
    o.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
    o.temperature = j.at("temperature").get<double>();
    o.top_k = j.at("top_k").get<int64_t>();
    o.top_p = j.at("top_p").get<double>();
    o.seed = j.at("seed").get<uint64_t>();
    o.stop_tokens = j.at("stop_tokens").get<std::vector<int64_t>>();
    o.pad_token_id = j.at("pad_token_id").get<int64_t>();
  } catch (const json::exception& e) {
    ALN_FAIL("a generate request's options: ", e.what());
  }
  return o;
}

at::Tensor tensor_of(const aln::v1::TensorData& data, const char* what, int rank) {
  auto t = dist::from_proto(data);
  if (!t.ok()) ALN_FAIL(what, " from rank ", rank, ": ", t.status().message());
  return *t;
}

using Version = std::pair<int64_t, int64_t>;  // (stage, optimizer steps of the stage)

// What a rollout rank keeps for one policy rank: the weights of the version it samples with (shared
// with the other policy ranks at that version), and a version's tensors while they arrive (several
// messages for a large model).
struct ClientState {
  std::shared_ptr<const model::DecoderModel> model;
  Version version{-1, -1};
  model::TensorMap arriving;
  std::string config_json;
  at::ScalarType compute = at::ScalarType::Undefined;  // the arriving version's compute dtype
};

// A weights request names the dtype the sampler computes in ("" when it computes in its tensors').
std::string compute_dtype_name(const model::DecoderModel& sampler) {
  const at::ScalarType compute = sampler.compute_dtype();
  return compute == at::ScalarType::Undefined ? "" : c10::toString(compute);
}

at::ScalarType compute_dtype_of(const std::string& name, int rank) {
  if (name.empty()) return at::ScalarType::Undefined;
  for (at::ScalarType t : {at::kBFloat16, at::kFloat, at::kHalf}) {
    if (name == c10::toString(t)) return t;
  }
  ALN_FAIL("rank ", rank, " sent weights computing in \"", name, "\", which this rollout rank does not know");
}

// One tensor broadcast from rank 0 of `channel` (the weights' sender), in flat pieces of at most
// kBroadcastBytes: MPI counts in an int, and implementations overflow on single messages past 2 GiB
// (embeddings of large models are bigger). Both sides cut a tensor alike: same shape, same dtype.
constexpr int64_t kBroadcastBytes = int64_t{64} << 20;

int64_t piece_elements(const at::Tensor& tensor) {
  return std::max<int64_t>(1, kBroadcastBytes / static_cast<int64_t>(tensor.element_size()));
}

absl::Status broadcast_whole(dist::Communicator& channel, const at::Tensor& tensor, std::chrono::milliseconds wait) {
  return capture_status([&] {
    const int64_t most = piece_elements(tensor);
    const at::Tensor flat = tensor.view({-1});
    std::vector<at::Tensor> pieces;  // the communicator holds references to these until wait()
    std::vector<std::unique_ptr<dist::Work>> pending;
    for (int64_t at = 0; at < flat.numel(); at += most) {
      pieces.push_back(flat.narrow(0, at, std::min(most, flat.numel() - at)));
      pending.push_back(channel.broadcast(pieces.back(), 0));
    }
    for (auto& work : pending) ALN_RETURN_IF_ERROR(work->wait(wait));
    return absl::OkStatus();
  });
}

// Receives what broadcast_whole sends of a tensor this rank could not allocate, into one piece's
// worth of scratch, so the channel stays in step with the sender (which then gets the error reply).
absl::Status drain_broadcast(dist::Communicator& channel, int64_t numel, at::ScalarType dtype,
                             std::chrono::milliseconds wait) {
  return capture_status([&] {
    at::Tensor scratch = at::empty({0}, at::TensorOptions().dtype(dtype));
    const int64_t most = piece_elements(scratch);
    scratch = at::empty({std::min(most, numel)}, scratch.options());
    for (int64_t at = 0; at < numel; at += most) {
      at::Tensor piece = scratch.narrow(0, 0, std::min(most, numel - at));
      ALN_RETURN_IF_ERROR(channel.broadcast(piece, 0)->wait(wait));
    }
    return absl::OkStatus();
  });
}

// The dtypes a policy's weights come in.
at::ScalarType weights_dtype_of(int32_t value, const std::string& name, int rank) {
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    if (value == static_cast<int32_t>(t)) return t;
  }
  ALN_FAIL("rank ", rank, " announced weight tensor ", name, " with dtype code ", value,
           ", which is not a floating-point dtype this rollout rank takes");
}

}  // namespace

// A policy version on the tensor channel to the rollout rank: "weights" requests, each naming its
// tensors (name, shape, dtype) and followed by their broadcasts once it has gone, so the rollout
// rank receives them straight into the tensors it keeps (no serialisation, no 2 GiB message limit).
// A request covers at most kPieceBytes of tensors, which are held until it goes: the memory the
// pieces of control messages held before.
class WeightsSender {
 public:
  using Start = std::function<void(aln::v1::ServiceRequest&)>;
  using Call = std::function<absl::Status(const aln::v1::ServiceRequest&, const dist::ServiceClient::Between&)>;
  WeightsSender(dist::Communicator* channel, std::chrono::milliseconds wait, const std::string& config_json,
                Start start, Call call)
      : channel_(channel), wait_(wait), start_(std::move(start)), call_(std::move(call)) {
    ALN_CHECK(channel_ != nullptr,
              "this policy rank sends a rollout rank weights but shares no tensor channel with it");
    start_(request_);
    aln::v1::FileData* config = request_.add_files();
    config->set_path("config.json");
    config->set_data(config_json);
  }
  // `tensor` is kept (not copied) until its request goes.
  absl::Status add(const std::string& name, at::Tensor tensor) {
    // Host tensors: the channel is split from the MPI world (rollout ranks run on the CPU).
    tensor = tensor.detach().to(at::kCPU).contiguous();
    const size_t size = static_cast<size_t>(tensor.numel()) * tensor.element_size();
    if (piece_bytes_ > 0 && piece_bytes_ + size > kPieceBytes) ALN_RETURN_IF_ERROR(flush());
    aln::v1::TensorHeader* header = request_.mutable_headers()->add_tensors();
    header->set_name(name);
    for (int64_t d : tensor.sizes()) header->add_shape(d);
    header->set_dtype(static_cast<int32_t>(tensor.scalar_type()));
    tensors_.push_back(std::move(tensor));
    piece_bytes_ += size;
    bytes_ += static_cast<int64_t>(size);
    return piece_bytes_ >= kPieceBytes ? flush() : absl::OkStatus();
  }
  absl::Status finish() { return tensors_.empty() && requests_ > 0 ? absl::OkStatus() : flush(); }
  int64_t bytes() const { return bytes_; }

 private:
  absl::Status flush() {
    absl::Status sent = call_(request_, [this] {
      for (const at::Tensor& t : tensors_) ALN_RETURN_IF_ERROR(broadcast_whole(*channel_, t, wait_));
      return absl::OkStatus();
    });
    ++requests_;
    tensors_.clear();
    piece_bytes_ = 0;
    request_.Clear();
    start_(request_);
    return sent;
  }
  dist::Communicator* channel_;
  std::chrono::milliseconds wait_;
  Start start_;
  Call call_;
  aln::v1::ServiceRequest request_;
  std::vector<at::Tensor> tensors_;
  size_t piece_bytes_ = 0;
  int64_t bytes_ = 0;
  int requests_ = 0;
};

// One thread that makes the calls in the order they were handed in (or, without it, each call
// made at once on the caller's thread). Each call's result is kept until its owner takes it.
struct RemoteSampler::Calls {
  using Result = absl::StatusOr<aln::v1::ServiceReply>;
  using Task = std::function<Result()>;
  Calls(dist::Communicator* channel, int server, std::chrono::milliseconds wait, bool threaded)
      : client(channel, server), wait(wait), threaded(threaded) {
    if (threaded) thread = std::thread([this] { loop(); });
  }
  ~Calls() {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
      cancelled = true;
    }
    ready.notify_all();
    if (thread.joinable()) thread.join();
  }
  using Wanted = std::shared_ptr<std::atomic<bool>>;
  struct Job {
    Task task;
    std::promise<Result> promise;
    Wanted wanted;  // set false by its owner: skipped if not yet started (null: always run)
  };
  std::future<Result> submit(Task task, Wanted wanted = nullptr) {
    std::promise<Result> promise;
    std::future<Result> result = promise.get_future();
    if (!threaded) {
      promise.set_value(task());
      return result;
    }
    {
      const std::lock_guard<std::mutex> lock(mutex);
      queue.push_back(Job{std::move(task), std::move(promise), std::move(wanted)});
    }
    ready.notify_all();
    return result;
  }
  // A call kept for later (a generate request asked ahead): the job owns its request.
  std::future<Result> submit(std::shared_ptr<const aln::v1::ServiceRequest> request, Wanted wanted = nullptr) {
    return submit([this, request = std::move(request)] { return call(*request); }, std::move(wanted));
  }
  // Makes the call (after the ones queued before it) and waits for it: `request` is read in place.
  Result call_and_wait(const aln::v1::ServiceRequest& request) {
    return submit([this, &request] { return call(request); }).get();
  }
  Result call(const aln::v1::ServiceRequest& request, const dist::ServiceClient::Between& between = nullptr) {
    return client.call(request, wait, threaded ? &cancelled : nullptr, between);
  }
  // A call whose request is followed by `between` (tensors on the tensor channel), waited for.
  absl::Status call_between_and_wait(const aln::v1::ServiceRequest& request,
                                     const dist::ServiceClient::Between& between) {
    return submit([this, &request, &between] { return call(request, between); }).get().status();
  }
  void loop() {
    while (true) {
      Job next;
      {
        std::unique_lock<std::mutex> lock(mutex);
        ready.wait(lock, [this] { return stopping || !queue.empty(); });
        if (stopping) return;  // what is left is abandoned (its owner is going away)
        next = std::move(queue.front());
        queue.pop_front();
      }
      if (next.wanted && !next.wanted->load()) {  // never sent: nothing to take from the rollout rank
        next.promise.set_value(absl::CancelledError("no longer wanted"));
        continue;
      }
      Result result = absl::UnknownError("not run");
      try {
        result = next.task();
      } catch (const std::exception& e) {
        result = absl::InternalError(e.what());
      }
      next.promise.set_value(std::move(result));
    }
  }
  dist::ServiceClient client;
  std::chrono::milliseconds wait;
  const bool threaded;
  std::atomic<bool> cancelled{false};
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Job> queue;
  bool stopping = false;
  std::thread thread;  // last: started once everything it uses exists
};

struct RemoteSampler::Pending {
  std::pair<int64_t, int64_t> version;
  std::string request;  // the generate request's bytes: what a later generate() must match
  std::future<Calls::Result> reply;
  Calls::Wanted wanted;   // false: dropped (not sent if it has not been yet)
  bool restored = false;  // from a checkpoint (restore()), never sent in this run
  bool claimed = false;   // restored, and a prefetch of this run has asked for it
};

namespace {

std::future<absl::StatusOr<aln::v1::ServiceReply>> ready(absl::StatusOr<aln::v1::ServiceReply> result) {
  std::promise<absl::StatusOr<aln::v1::ServiceReply>> promise;
  promise.set_value(std::move(result));
  return promise.get_future();
}

}  // namespace

RemoteSampler::RemoteSampler(const RolloutPlacement& placement, int policy_rank, prometheus::Counter* wait_seconds,
                             bool ahead)
    : placement_(placement),
      policy_rank_(policy_rank),
      server_(placement.server_of(policy_rank)),
      calls_(std::make_unique<Calls>(placement.channel, server_, placement.long_wait, ahead)),
      wait_seconds_(wait_seconds) {}

RemoteSampler::~RemoteSampler() = default;

bool RemoteSampler::asks_ahead() const { return calls_->threaded; }

aln::v1::ServiceReply RemoteSampler::call(const aln::v1::ServiceRequest& request, const char* what) {
  // Bounded: the calls queued before it and it each wait at most long_wait per message.
  Calls::Result result = calls_->call_and_wait(request);
  if (!result.ok()) ALN_FAIL(server_name(), " (", what, "): ", result.status().message());
  return std::move(*result);
}

WeightsSender RemoteSampler::weights_sender(const model::DecoderModel& sampler, int64_t stage, int64_t version) {
  const auto total = static_cast<int64_t>(sampler.tensors().size());
  return WeightsSender(
      placement_.weights, placement_.long_wait, model::to_hf_config_json(sampler.config()),
      [stage, version, total, dtype = compute_dtype_name(sampler)](aln::v1::ServiceRequest& request) {
        request.set_method("weights");
        request.set_stage(stage);
        request.set_step(version);
        request.set_total(total);
        request.set_text(dtype);
      },
      [calls = calls_.get()](const aln::v1::ServiceRequest& request, const dist::ServiceClient::Between& between) {
        return calls->call_between_and_wait(request, between);
      });
}

void RemoteSampler::push_weights(const model::DecoderModel& sampler, int64_t stage, int64_t version) {
  const auto start = Clock::now();
  WeightsSender sender = weights_sender(sampler, stage, version);
  absl::Status sent = absl::OkStatus();
  for (const auto& [name, tensor] : sampler.tensors()) {
    sent = sender.add(name, tensor);
    if (!sent.ok()) break;
  }
  if (sent.ok()) sent = sender.finish();
  if (!sent.ok()) ALN_FAIL(server_name(), " (weights): ", sent.message());
  held_ = std::make_pair(stage, version);
  ++pushes_;
  bytes_sent_ += sender.bytes();
  weight_seconds_ += since(start);
}

void RemoteSampler::wait_until_held(int64_t stage, int64_t version) {
  const auto start = Clock::now();
  auto pause = std::chrono::milliseconds(1);
  while (!rollout_rank_holds(stage, version)) {
    ALN_CHECK(Clock::now() - start < placement_.long_wait, server_name(), " did not receive stage ", stage, " version ",
              version, " of the policy from policy rank ", policy_rank_ % placement_.rollout_ranks,
              ", which sends it every version, within ", placement_.long_wait.count(),
              " ms (see that rank's log; parallel.timeout_s sets how long generation may take)");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  held_ = std::make_pair(stage, version);
  ++found_;
}

bool RemoteSampler::rollout_rank_holds(int64_t stage, int64_t version) {
  aln::v1::ServiceRequest request;
  request.set_method("holds");
  request.set_stage(stage);
  request.set_step(version);
  return call(request, "holds").text() == "yes";
}

void RemoteSampler::push_sharded(const FullySharded& shards, const model::DecoderModel& sampler, int64_t stage,
                                 int64_t version) {
  // The first policy rank each rollout rank serves sends; the rest only gather with it.
  const bool sends = policy_rank_ < placement_.rollout_ranks;
  const auto start = Clock::now();
  std::optional<WeightsSender> sender;
  if (sends) sender.emplace(weights_sender(sampler, stage, version));
  // The gathers below are bounded by parallel.timeout_s, so nothing slow may run inside them: each
  // rank first waits until its rollout rank has answered everything it asked for (one round trip:
  // a generate asked ahead may still run), then all wait for each other as long as a generation may.
  rollout_rank_holds(stage, version);
  shards.group().sum(0.0, placement_.long_wait);
  // A failed send stops sending, not gathering: the other ranks are in the same gathers.
  absl::Status sent = absl::OkStatus();
  shards.for_each_whole([&](const std::string& name, const at::Tensor& whole) {
    if (sender && sent.ok())
      sent = sender->add(name, whole.detach().to(at::kCPU, false, /*copy=*/true));  // `whole` goes with its unit
  });
  if (sender && sent.ok()) sent = sender->finish();
  // Every rank learns whether the weights arrived; the others wait here for the senders.
  const absl::Status agreed = shards.group().agree(
      sent.ok() ? sent : absl::InternalError(absl::StrCat(server_name(), " (weights): ", sent.message())),
      absl::InternalError(absl::StrCat("another policy rank could not send its rollout rank stage ", stage, " version ",
                                       version, " of the policy (see its log)")),
      placement_.long_wait);
  if (!agreed.ok()) ALN_FAIL(agreed.message());
  if (sends) {
    ++pushes_;
    bytes_sent_ += sender->bytes();
    weight_seconds_ += since(start);
  } else {
    ALN_CHECK(rollout_rank_holds(stage, version), server_name(), " does not hold stage ", stage, " version ", version,
              " after policy rank ", policy_rank_ % placement_.rollout_ranks, " sent it");
    ++found_;
  }
  held_ = std::make_pair(stage, version);
}

void RemoteSampler::ensure_version(const model::DecoderModel& sampler, int64_t stage, int64_t version) {
  if (held_ && *held_ == std::make_pair(stage, version)) return;
  // Fully sharded (the policy or its snapshot): put together by every policy rank at once, each
  // gather a collective, so a version change is collective too (every rank changes versions at the
  // same calls).
  if (const auto* shards = dynamic_cast<const FullySharded*>(sampler.param_gather())) {
    push_sharded(*shards, sampler, stage, version);
    return;
  }
  // Data-parallel ranks sample with the same versions at the same steps: the first rank the rollout
  // rank serves sends each one (it alone shares a tensor channel with it), the others wait for it.
  // This relies on every policy rank generating at every step where any does (every data-parallel
  // rank runs the same micro-batches; evaluation samples locally): a rank that sampled alone would
  // wait here for a version nobody sends, until long_wait ends it naming the sender.
  if (policy_rank_ < placement_.rollout_ranks) {
    push_weights(sampler, stage, version);
  } else {
    wait_until_held(stage, version);
  }
}

aln::v1::ServiceRequest generate_request(int64_t stage, int64_t version, const at::Tensor& prompt_ids,
                                         const at::Tensor& prompt_mask, const model::GenerationOptions& options) {
  ALN_CHECK(!options.stop_condition, "rollout ranks take stop tokens, not stop conditions (code on the policy rank)");
  aln::v1::ServiceRequest request;
  request.set_method("generate");
  request.set_stage(stage);
  request.set_step(version);
  request.set_text(options_json(options));
  dist::to_proto(prompt_ids.to(at::kCPU), request.add_tensors());
  dist::to_proto(prompt_mask.to(at::kCPU), request.add_tensors());
  return request;
}

void RemoteSampler::prefetch(const model::DecoderModel& sampler, int64_t stage, int64_t version,
                             const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                             const model::GenerationOptions& options) {
  if (!asks_ahead()) return;
  const auto start = Clock::now();
  const auto key = std::make_pair(stage, version);
  // Answers of an older version nobody took (a prediction that missed): the thread still takes
  // them from the rollout rank; they are dropped with their futures.
  std::erase_if(pending_, [&](const Pending& p) {
    if (p.version == key) return false;
    p.wanted->store(false);
    return true;
  });
  auto request = std::make_shared<const aln::v1::ServiceRequest>(
      generate_request(stage, version, prompt_ids, prompt_mask, options));
  std::string bytes = request->SerializeAsString();
  // Already at hand (restored from a checkpoint): neither the request nor, for it, the weights go.
  // One prefetch claims one restored answer, so a request asked twice is kept (and found) twice.
  auto restored = std::find_if(pending_.begin(), pending_.end(),
                               [&](const Pending& p) { return p.restored && !p.claimed && p.request == bytes; });
  if (restored != pending_.end()) {
    restored->claimed = true;
    return;
  }
  ensure_version(sampler, stage, version);  // waited for: `sampler` is not read after this returns
  auto wanted = std::make_shared<std::atomic<bool>>(true);
  pending_.push_back(Pending{key, std::move(bytes), calls_->submit(request, wanted), wanted});
  ++asked_ahead_;
  const double waited = since(start);
  waited_ += waited;
  if (wait_seconds_ != nullptr) wait_seconds_->Increment(waited);
}

model::GenerationOutput RemoteSampler::generate(const model::DecoderModel& sampler, int64_t stage, int64_t version,
                                                const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                                                const model::GenerationOptions& options) {
  const auto start = Clock::now();
  // Restored answers of another version can match nothing from now on (versions only move on).
  std::erase_if(pending_, [&](const Pending& p) { return p.restored && p.version != std::make_pair(stage, version); });
  aln::v1::ServiceRequest request = generate_request(stage, version, prompt_ids, prompt_mask, options);
  const std::string bytes = request.SerializeAsString();
  auto asked = std::find_if(pending_.begin(), pending_.end(), [&](const Pending& p) { return p.request == bytes; });
  std::future<Calls::Result> answer;
  if (asked != pending_.end()) {  // asked for ahead: the same weights, prompts and seed
    answer = std::move(asked->reply);
    ++(asked->restored ? restored_taken_ : taken_ahead_);
    pending_.erase(asked);
  } else {
    // Queued behind anything still asked ahead (so those stay answered with the version they asked).
    ensure_version(sampler, stage, version);
    answer = calls_->submit(std::make_shared<const aln::v1::ServiceRequest>(std::move(request)));
  }
  Calls::Result reply = answer.get();
  if (!reply.ok()) ALN_FAIL(server_name(), " (generate): ", reply.status().message());
  ALN_CHECK(reply->tensors_size() == 3, server_name(), " sent ", reply->tensors_size(),
            " tensors for one generate request (tokens, log-probs, lengths)");
  model::GenerationOutput out;
  const auto& device = prompt_ids.device();
  const int shown = server_ + placement_.rank_shift;
  out.tokens = tensor_of(reply->tensors(0), "tokens", shown).to(device);
  out.logprobs = tensor_of(reply->tensors(1), "log-probs", shown).to(device);
  out.lengths = tensor_of(reply->tensors(2), "lengths", shown).to(device);
  const int64_t rows = prompt_ids.size(0);
  ALN_CHECK(out.tokens.dim() == 2 && out.tokens.size(0) == rows && out.logprobs.sizes() == out.tokens.sizes() &&
                out.lengths.dim() == 1 && out.lengths.size(0) == rows,
            server_name(), " sent tokens of shape ", c10::str(out.tokens.sizes()),
            " and lengths of shape ", c10::str(out.lengths.sizes()), " for ", rows, " prompts");
  const double waited = since(start);
  waited_ += waited;
  if (wait_seconds_ != nullptr) wait_seconds_->Increment(waited);
  return out;
}

std::vector<RemoteSampler::Answer> RemoteSampler::unconsumed(int64_t* failed) {
  std::vector<Answer> out;
  *failed = 0;
  for (Pending& p : pending_) {
    Calls::Result result = p.reply.get();  // bounded: the calls before it and it wait long_wait each
    if (result.ok()) {
      out.push_back(Answer{p.request, *result});
    } else {
      ++*failed;
    }
    p.reply = ready(std::move(result));  // still there for generate() to take
  }
  return out;
}

void RemoteSampler::restore(std::vector<Answer> answers) {
  for (Answer& a : answers) {
    aln::v1::ServiceRequest request;
    ALN_CHECK(request.ParseFromString(a.request) && request.method() == "generate",
              "a kept rollout's request is not a generate request");
    pending_.push_back(Pending{std::make_pair(request.stage(), request.step()), std::move(a.request),
                               ready(std::move(a.reply)), std::make_shared<std::atomic<bool>>(true),
                               /*restored=*/true});
  }
}

absl::Status RemoteSampler::finish() {
  // Requests asked ahead and not sent yet are dropped; those on their way are answered first (the
  // thread takes the answers, in order), then the goodbye goes.
  for (Pending& p : pending_) p.wanted->store(false);
  pending_.clear();
  Calls* calls = calls_.get();
  Calls::Result bye = calls_
                          ->submit([calls, timeout = placement_.timeout]() -> Calls::Result {
                            absl::Status sent = calls->client.goodbye(timeout);
                            if (!sent.ok()) return sent;
                            return aln::v1::ServiceReply();
                          })
                          .get();
  return bye.status();
}

std::string RemoteSampler::server_name() const {
  return absl::StrCat("the rollout rank (mpirun rank ", server_ + placement_.rank_shift, ")");
}

absl::Status run_rollout_role(const RolloutPlacement& placement, int index, const Logger& log,
                              MetricsRegistry& metrics) {
  std::vector<int> clients;
  for (int r = 0; r < placement.policy_ranks; ++r) {
    if (placement.server_of(r) == placement.first_rollout_rank + index) clients.push_back(r);
  }
  auto& requests = metrics.counter_family("aln_rollout_requests_total", "Requests a rollout rank served, by method");
  auto& sequences = metrics.counter("aln_rollout_sequences_total", "Sequences a rollout rank generated");
  auto& tokens = metrics.counter("aln_rollout_tokens_total", "Tokens a rollout rank generated");
  auto& seconds = metrics.counter("aln_rollout_generate_seconds_total", "Seconds a rollout rank spent generating");
  std::map<int, ClientState> states;
  // Every version some policy rank still samples with, once (a version no rank holds is freed).
  std::map<Version, std::weak_ptr<const model::DecoderModel>> versions;
  auto handler = [&](int client, const aln::v1::ServiceRequest& request) {
    aln::v1::ServiceReply reply;
    requests.Add({{"method", request.method()}}).Increment();
    ClientState& state = states[client];
    const Version asked{request.stage(), request.step()};
    if (request.method() == "holds") {
      auto found = versions.find(asked);
      std::shared_ptr<const model::DecoderModel> model = found == versions.end() ? nullptr : found->second.lock();
      if (model) {
        state.model = std::move(model);
        state.version = asked;
      }
      reply.set_text(state.model && state.version == asked ? "yes" : "no");
      return reply;
    }
    if (request.method() == "weights") {
      if (request.files_size() > 0) {  // a version's first message
        state.arriving.clear();
        state.config_json = request.files(0).data();
        state.compute = compute_dtype_of(request.text(), client);
      }
      const auto& headers = request.headers().tensors();
      if (!headers.empty()) {
        ALN_CHECK(placement.weights != nullptr && client == index, "rank ", client,
                  " sent weights, but this rollout rank shares a tensor channel only with policy rank ", index);
      }
      // Every header is checked before anything is received (the sender's build matches ours, so a
      // bad one means a broken channel); a tensor that cannot be allocated is still received, into
      // scratch, so the sender's broadcasts finish and it gets this error as the reply.
      std::vector<at::ScalarType> dtypes;
      for (const auto& header : headers) {
        dtypes.push_back(weights_dtype_of(header.dtype(), header.name(), client));
        for (int64_t d : header.shape()) ALN_CHECK(d >= 0, "weight tensor ", header.name(), " has a negative size");
      }
      absl::Status failed = absl::OkStatus();
      for (int i = 0; i < headers.size(); ++i) {
        const auto& header = headers[i];
        const std::vector<int64_t> shape(header.shape().begin(), header.shape().end());
        at::Tensor tensor;
        absl::Status made = capture_status([&] {
          tensor = at::empty(shape, at::TensorOptions().dtype(dtypes[static_cast<size_t>(i)]));
          return absl::OkStatus();
        });
        if (made.ok() && failed.ok()) {
          absl::Status got = broadcast_whole(*placement.weights, tensor, placement.long_wait);
          if (!got.ok()) ALN_FAIL("weight tensor ", header.name(), " from rank ", client, ": ", got.message());
          state.arriving[header.name()] = std::move(tensor);
          continue;
        }
        if (failed.ok())
          failed = absl::ResourceExhaustedError(absl::StrCat("weight tensor ", header.name(), ": ", made.message()));
        int64_t numel = 1;
        for (int64_t d : shape) numel *= d;
        absl::Status drained =
            drain_broadcast(*placement.weights, numel, dtypes[static_cast<size_t>(i)], placement.long_wait);
        if (!drained.ok()) ALN_FAIL("weight tensor ", header.name(), " from rank ", client, ": ", drained.message());
      }
      if (!failed.ok()) {
        state.arriving.clear();
        ALN_FAIL("this rollout rank could not hold the policy's weights: ", failed.message());
      }
      if (static_cast<int64_t>(state.arriving.size()) == request.total()) {
        auto config = model::parse_hf_config(state.config_json, absl::StrCat("rank ", client, "'s config.json"));
        ALN_THROW_IF_ERROR(config.status());
        auto made = model::DecoderModel::from_tensors(*config, std::move(state.arriving));
        ALN_THROW_IF_ERROR(made.status());
        made->set_requires_grad(false);
        made->set_compute_dtype(state.compute);  // mixed precision: as the policy rank's sampler computes
        state.model = std::make_shared<const model::DecoderModel>(std::move(*made));
        state.version = asked;
        state.arriving.clear();
        versions[asked] = state.model;
        for (auto it = versions.begin(); it != versions.end();) {  // forget versions no rank samples with
          it = it->second.expired() ? versions.erase(it) : std::next(it);
        }
      }
      return reply;
    }
    ALN_CHECK(request.method() == "generate", "unknown request \"", request.method(), "\" from rank ", client);
    ALN_CHECK(state.model && state.version == asked, "rank ", client, " asked for rollouts of stage ", asked.first,
              " version ", asked.second, " but this rollout rank holds ",
              state.model ? absl::StrCat("stage ", state.version.first, " version ", state.version.second)
                          : "no weights");
    ALN_CHECK(request.tensors_size() == 2, "a generate request carries prompt ids and mask");
    const at::Tensor ids = tensor_of(request.tensors(0), "prompt ids", client);
    const at::Tensor mask = tensor_of(request.tensors(1), "prompt mask", client);
    const model::GenerationOptions options = parse_options(request.text());
    const auto start = Clock::now();
    at::NoGradGuard no_grad;
    model::GenerationOutput out = model::generate(*state.model, ids, mask, options);
    seconds.Increment(since(start));
    sequences.Increment(static_cast<double>(ids.size(0)));
    tokens.Increment(static_cast<double>(out.lengths.sum().item<int64_t>()));
    dist::to_proto(out.tokens, reply.add_tensors());
    dist::to_proto(out.logprobs, reply.add_tensors());
    dist::to_proto(out.lengths, reply.add_tensors());
    return reply;
  };
  log.info("rollout rank %d generates for policy rank(s) %s", index, absl::StrJoin(clients, ", "));
  return dist::serve(placement.channel, clients, handler, placement.timeout);
}

}  // namespace aln::engine
