// The frozen reference of a stage, by strategy: a given checkpoint (reference.path) or the policy as
// the stage starts; its log-probs cached (computed once, here or on the reference ranks, or found on
// disk) with the model dropped; kept for passes on the fly (trainers that need its full
// distributions, or reference.mode: on_the_fly); or served each step by the reference ranks.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/model/hf_checkpoint.h"
#include "core/status.h"
#include "trainers/engine/reference_cache.h"
#include "trainers/engine/reference_role.h"
#include "trainers/engine/sharded_start.h"
#include "trainers/engine/stage_runner.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;

// Cached mode: the per-pair log-probs go into the stage's examples (from the disk cache, computed
// here through the pipeline and the data-parallel ranks, or by the reference ranks).
absl::Status fill_cache(PolicyWorker& w, StageRun& s, bool remote_reference) {
  const bool resuming = s.resuming;
  if (resuming && w.resumed->state.reference_cache_key.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(w.resumed->path, " has no reference-cache key for stage ", s.name, "; cannot resume it mid-way"));
  }
  const std::string resume_key = resuming ? w.resumed->state.reference_cache_key : "";
  const RemoteReference* remote = remote_reference ? &*w.process.remote_reference : nullptr;
  // A pipelined policy holds one stage per rank; the reference ranks get the whole model, which
  // replica 0's stages gather on world rank 0 when the weights are to be sent.
  // A fully sharded one is put together on world rank 0 the same way (every rank sends its shards).
  std::function<std::optional<model::DecoderModel>()> whole_model;
  if (remote_reference && w.pipeline) {
    whole_model = [&w]() -> std::optional<model::DecoderModel> {
      auto whole = gather_whole_policy(w);
      ALN_THROW_IF_ERROR(whole.status());
      return std::move(*whole);
    };
  } else if (remote_reference && w.fsdp) {
    whole_model = [&w]() { return w.fsdp->whole_on_lead(); };
  }
  const model::DecoderModel& scorer = s.reference.model ? *s.reference.model : *w.policy;
  auto key = fill_reference_logprobs(w.spec, s.spec, scorer, s.data(), s.spec.optimizer().micro_batch_size(), w.pad_id,
                                     resume_key, *w.dp, w.log, w.pp(), remote, whole_model);
  if (!key.ok()) return key.status();
  s.reference.cache_key = *key;
  s.reference.model.reset();
  return absl::OkStatus();
}

// Served each step: world rank 0's copy goes to the reference ranks (when it exists nowhere else,
// rank 0 keeps it for checkpoints; the other policy ranks drop theirs). Trainers that take hidden
// states keep the reference's output projection here (from the copy, or read with the last layer
// from reference.path).
absl::Status open_remote_each_step(PolicyWorker& w, StageRun& s) {
  StageReference& ref = s.reference;
  if (s.needs.asks(trainers::ReferenceQuery::kHiddenStates)) {
    if (ref.model) {
      ref.head = ref.model->output_weight().detach().clone();
    } else {
      const std::string& path = s.spec.reference().path();
      auto config = model::load_hf_config((fs::path(path) / "config.json").string());
      if (!config.ok()) return config.status();
      auto last = model::load_hf_stage(path, config->num_layers - 1, config->num_layers);
      if (!last.ok()) return last.status();
      ref.head = last->output_weight().detach().to(compute_dtype(w), /*non_blocking=*/false, /*copy=*/true);
    }
  }
  ref.for_trainers = open_reference_stage(*w.process.remote_reference, ref.model ? &*ref.model : nullptr,
                                          w.process.world_rank, ref.head);
  if (!w.lead || !s.spec.reference().path().empty()) ref.model.reset();
  w.log.info("stage %s: the reference ranks answer the per-token %s requests", s.name,
             s.needs.asks(trainers::ReferenceQuery::kHiddenStates)        ? "hidden-state"
             : s.needs.asks(trainers::ReferenceQuery::kSentenceEmbeddings) ? "log-prob and sentence-embedding"
                                                                           : "log-prob");
  return absl::OkStatus();
}

// A read every policy rank makes (a folder some nodes may not see): all go on, or all stop, with the
// error where it happened, instead of one leaving the others in the next collective.
absl::Status agree_on_read(PolicyWorker& w, const absl::Status& read, const std::string& what) {
  return w.dp->agree(read, absl::DataLossError(absl::StrCat("another rank could not read ", what, " (see its log)")));
}

// On the fly beside a fully sharded policy: the reference is sharded as the policy is, so no rank
// keeps it whole. The policy as the stage starts is copied shard for shard (each rank its own
// ranges: nothing is gathered); a model in a folder (`stream_from`: reference.path, or a resumed
// checkpoint's copy) is streamed as the sharded start streams the policy (data-parallel rank 0 reads
// a layer at a time and broadcasts each tensor, each rank keeps its ranges); a model already read
// whole is cut.
absl::Status shard_reference(PolicyWorker& w, StageRun& s, const std::string& stream_from) {
  StageReference& ref = s.reference;
  const bool deterministic = w.spec.parallel().deterministic();
  if (ref.model) {
    ref.sharded = std::make_unique<FullySharded>(*w.dp, *ref.model, deterministic);
  } else if (!stream_from.empty()) {
    auto config = model::load_hf_config((fs::path(stream_from) / "config.json").string());
    absl::Status read = agree_on_read(w, config.status(), stream_from);
    if (!read.ok()) return read;
    auto made = shapes_only_model(*config);
    if (!made.ok()) return made.status();
    ref.model.emplace(std::move(*made));
    ref.sharded = std::make_unique<FullySharded>(*w.dp, *ref.model, deterministic, FullySharded::ShapesOnly{});
    absl::Status filled = fill_shards_from_directory(stream_from, *config, *w.dp, *ref.sharded);
    if (!filled.ok()) return filled;
    w.log.info("stage %s: the reference was streamed into the shards from %s, one layer at a time", s.name,
               stream_from);
  } else {
    auto made = shapes_only_model(w.policy->config());
    if (!made.ok()) return made.status();
    ref.model.emplace(std::move(*made));
    ref.sharded = std::make_unique<FullySharded>(*w.dp, *ref.model, deterministic, FullySharded::ShapesOnly{});
    ref.sharded->take_parts(w.fsdp->parameter_parts());
  }
  // Computing as a whole frozen copy stored in the compute dtype does (bfloat16 under mixed
  // precision); the shards stay float32 and each pass casts what it gathers.
  if (compute_dtype(w) != at::kFloat) ref.model->set_compute_dtype(compute_dtype(w));
  constexpr double mib = 1024.0 * 1024.0;
  w.log.info(
      "stage %s: the reference runs on the fly, fully sharded as the policy is: this rank keeps %.2f MiB of "
      "its %.2f MiB",
      s.name, ref.sharded->shard_bytes() / mib, ref.sharded->whole_bytes() / mib);
  return absl::OkStatus();
}

}  // namespace

absl::Status provide_reference(PolicyWorker& w, StageRun& s) {
  const trainers::Needs& needs = s.needs;
  StageReference& ref = s.reference;
  // With the reference on its own ranks, per-pair sums always come from them up front; per-token
  // log-probs of what the trainer samples, each step.
  const bool remote_reference = w.process.remote_reference && served_by_reference_ranks(needs);
  ref.remote_each_step = remote_reference && served_each_step(needs);
  const bool on_the_fly =
      needs.reference_each_step() || (s.spec.reference().mode() == aln::v1::ON_THE_FLY && !remote_reference);
  // Sentence embeddings (HAIR's data hardness) take as many passes as a rank's own samples hold
  // sentences, which a sharded reference (each pass a collective with every rank) cannot serve:
  // beside a fully sharded policy that reference stays whole.
  const bool shard_it =
      w.fsdp && on_the_fly && !ref.remote_each_step && !needs.asks(trainers::ReferenceQuery::kSentenceEmbeddings);
  if (needs.reference_each_step() && s.spec.reference().mode() != aln::v1::ON_THE_FLY && !ref.remote_each_step) {
    w.log.info("stage %s: %s needs the reference's full distributions; the reference runs on the fly", s.name,
               s.method);
  }
  if (!needs.reference.empty()) {
    const auto start = std::chrono::steady_clock::now();
    // A model in a folder that shard_reference streams into the shards instead of a whole read here.
    std::string stream_from;
    // Read whole (on every policy rank), unless streamed.
    auto read_whole = [&](const std::string& dir) -> absl::Status {
      if (shard_it) {
        stream_from = dir;
        return absl::OkStatus();
      }
      auto loaded = model::load_hf_model(dir);
      absl::Status read = agree_on_read(w, loaded.status(), dir);
      if (!read.ok()) return read;
      ref.model = placed(w, std::move(*loaded));
      return absl::OkStatus();
    };
    if (s.resuming && !w.resumed->reference_dir.empty()) {
      absl::Status read = read_whole(w.resumed->reference_dir);
      if (!read.ok()) return read;
      w.resumed->reference_dir.clear();  // this stage's; a later stage makes its own
    } else if (!s.spec.reference().path().empty()) {
      if (!ref.remote_each_step) {
        absl::Status read = read_whole(s.spec.reference().path());
        if (!read.ok()) return read;
      }
    } else if (!(s.resuming && !on_the_fly) && (!remote_reference || ref.remote_each_step)) {
      // Served each step, the copy is world rank 0's to send (and keep for checkpoints); the other
      // policy ranks need at most its output projection (hidden-state trainers).
      const bool wanted = !ref.remote_each_step || w.lead || needs.asks(trainers::ReferenceQuery::kHiddenStates);
      if (w.fsdp && !on_the_fly) {
        // Cached: the policy as the stage starts is the reference, and it scores the cache itself
        // (its passes gather a layer at a time): no rank holds a whole copy.
        w.log.info("stage %s: the fully sharded policy, as the stage starts, scores the reference cache", s.name);
      } else if (shard_it) {
        // Sharded below, from the policy's shards.
      } else if (w.fsdp && ref.remote_each_step && !needs.asks(trainers::ReferenceQuery::kHiddenStates)) {
        // Only world rank 0 sends it to the reference ranks (and keeps it for checkpoints).
        std::optional<model::DecoderModel> whole = w.fsdp->whole_on_lead();  // every policy rank sends its shards
        if (whole && wanted) ref.model = std::move(*whole);
      } else if (w.fsdp) {
        model::DecoderModel whole = w.policy_copy();  // collective: every policy rank takes part
        // Stored as the unsharded run's frozen copy is (bfloat16 under mixed precision): the same
        // answers, and the same head for hidden-state trainers whichever ranks hold it.
        if (wanted) ref.model = placed(w, std::move(whole));
      } else if (wanted) {
        ref.model = frozen_copy(w, *w.policy);
      }
    }
    // Pipelined: the reference is cut like the policy and its passes run through the stages.
    if (w.pipeline && ref.model && ref.model->is_whole()) {
      const int st = w.pipeline->stage();
      ref.model = std::move(*ref.model).stage(w.stage_bounds[st], w.stage_bounds[st + 1]);
    }
    if (!on_the_fly) {
      absl::Status filled = fill_cache(w, s, remote_reference);
      if (!filled.ok()) return filled;
    } else if (s.resuming && !ref.model && stream_from.empty() && s.spec.reference().path().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(w.resumed->path, " holds no reference model for stage ", s.name, "; cannot resume it"));
    } else if (shard_it) {
      absl::Status sharded = shard_reference(w, s, stream_from);
      if (!sharded.ok()) return sharded;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    w.meters->phase.Add({{"stage", s.name}, {"phase", "reference"}}).Set(seconds);
  }
  if (ref.remote_each_step) {
    absl::Status opened = open_remote_each_step(w, s);
    if (!opened.ok()) return opened;
  }
  ref.for_steps = ref.model && !ref.remote_each_step ? &*ref.model : nullptr;
  if (ref.for_steps != nullptr) ref.for_trainers = std::make_shared<trainers::LocalReference>(*ref.for_steps);
  // Saved with checkpoints only when it exists nowhere else (the policy as the stage started).
  ref.to_save = s.spec.reference().path().empty() && ref.model ? &*ref.model : nullptr;
  return absl::OkStatus();
}

}  // namespace aln::engine
