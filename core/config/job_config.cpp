#include "core/config/job_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config/method_traits.h"
#include "core/status.h"
#include "google/protobuf/text_format.h"

namespace aln::config {
namespace {

// Builds "file:line: path: message", using the line of the closest key path that was in the YAML.
absl::Status at(const LoadedJob& job, const std::string& path, const std::string& message) {
  int line = 0;
  for (std::string p = path; !p.empty();) {
    auto it = job.lines.find(p);
    if (it != job.lines.end()) {
      line = it->second;
      break;
    }
    const auto cut = p.find_last_of(".[");
    p = cut == std::string::npos ? std::string() : p.substr(0, cut);
  }
  return absl::InvalidArgumentError(absl::StrCat(job.file, ":", line, ": ", path, ": ", message));
}

// A stage's name is the folder of its outputs under output_dir (and the single stage of a job
// without `stages` takes the job's name).
absl::Status check_folder_name(const LoadedJob& job, const std::string& path, const std::string& name) {
  if (name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    return at(job, path,
              absl::StrCat("'", name,
                           "' cannot name a folder (it holds the stage's outputs under output_dir): use a "
                           "plain name without '/', not '.' or '..'"));
  }
  return absl::OkStatus();
}

// Rebases one written path under run_dir; refuses absolute and escaping ones.
absl::Status confine(const LoadedJob& job, const std::string& path, const std::string& run_dir, std::string* value) {
  if (value->empty()) return absl::OkStatus();  // the default, below output_dir
  const std::filesystem::path p(*value);
  const char* rule =
      "a job run by the launcher writes only inside its run directory: give a path relative to it, or leave the key "
      "out";
  if (p.is_absolute()) return at(job, path, absl::StrCat("'", *value, "' is an absolute path; ", rule));
  for (const auto& part : p) {
    if (part == "..") return at(job, path, absl::StrCat("'", *value, "' leaves the run directory ('..'); ", rule));
  }
  *value = (std::filesystem::path(run_dir) / p).lexically_normal().string();
  return absl::OkStatus();
}

bool has_top_level_stage_keys(const LoadedJob& job) {
  for (const char* key : {"trainer", "data", "optimizer", "reference", "reward_models"}) {
    if (job.lines.count(key) != 0) return true;
  }
  return false;
}

absl::Status validate_stage(const LoadedJob& job, const aln::v1::StageSpec& stage, const std::string& prefix) {
  auto key = [&](const std::string& rest) { return prefix.empty() ? rest : absl::StrCat(prefix, ".", rest); };
  ALN_RETURN_IF_ERROR(check_folder_name(job, prefix.empty() ? "name" : key("name"), stage.name()));
  const MethodTraits traits = method_traits(stage.trainer());
  if (traits.name.empty()) {
    return at(job, key("trainer"), absl::StrCat("no method set; add one of ", absl::StrJoin(method_names(), ", ")));
  }
  if (stage.data().train_size() == 0 && !traits.generates) {
    return at(job, key("data.train"), "no training data; list at least one file under data.train");
  }
  for (int i = 0; i < stage.data().train_size(); ++i) {
    if (stage.data().train(i).path().empty()) {
      return at(job, key(absl::StrCat("data.train[", i, "].path")), "missing: every data source needs a path");
    }
  }
  return absl::OkStatus();
}

// parallel.*.shard: what is implemented, said with the key's file and line.
absl::Status validate_sharding(const LoadedJob& job) {
  const auto& p = job.spec.parallel();
  // (Unset, as in a job that never names the frozen grids, is none.)
  if (p.reference().shard() > aln::v1::NONE || p.reward().shard() > aln::v1::NONE) {
    const bool ref = p.reference().shard() > aln::v1::NONE;
    return at(job, ref ? "parallel.reference.shard" : "parallel.reward.shard",
              "the frozen models are not sharded yet (they have no gradients or moments to shard); set it to none");
  }
  const aln::v1::ShardLevel level = policy_shard(job.spec);
  if (level == aln::v1::FULL) {
    if (p.policy().pipeline_parallel() > 1) {
      return at(job, "parallel.policy.shard",
                "full is not combined with pipeline stages yet; use optimizer with pipeline_parallel > 1");
    }
    if (p.overlap()) {
      return at(job, "parallel.overlap",
                "not combined with parallel.policy.shard: full (its gradients are reduce-scattered layer by layer "
                "during backward already); set it to false");
    }
    // Generation runs a pass per token, each gathering every layer: the ranks must decode in step.
    // Training steps' sampling does (the engine's generate hook); a stage's own data generation and
    // evaluation give every rank the same prompts and seeds, so they stay in step by themselves.
    // GRPO's bounded-staleness snapshot is sharded as the policy is; rollout ranks are sent the
    // weights as the ranks gather them a unit at a time.
  }
  if (level == aln::v1::GRADIENTS && p.policy().pipeline_parallel() > 1) {
    return at(job, "parallel.policy.shard",
              "gradients is not combined with pipeline stages yet; use optimizer with pipeline_parallel > 1");
  }
  if (level == aln::v1::GRADIENTS && p.overlap()) {
    return at(job, "parallel.overlap",
              "not combined with parallel.policy.shard: gradients yet (the reduce-scatter runs after backward); set it "
              "to false");
  }
  return absl::OkStatus();
}

// Rollout ranks generate for the methods that sample in their steps; without one they would idle.
// (The layout's other limits, checked here too so that --dry-run says them.)
absl::Status validate_rollout(const LoadedJob& job) {
  const auto& p = job.spec.parallel();
  const int k = p.rollout().ranks();
  if (k == 0) return absl::OkStatus();
  if (p.policy().pipeline_parallel() > 1) {
    return at(job, "parallel.rollout.ranks",
              "rollout ranks serve unsplit policies for now; set parallel.policy.pipeline_parallel to 1 or this to 0");
  }
  const int policy_ranks = std::max(1, p.policy().data_parallel());
  if (k > policy_ranks) {
    return at(job, "parallel.rollout.ranks",
              absl::StrCat(k, " rollout ranks for ", policy_ranks,
                           " policy rank(s): each serves at least one policy rank; set it to at most ", policy_ranks));
  }
  for (const auto& stage : effective_stages(job.spec)) {
    if (method_traits(stage.trainer()).samples_in_steps) return absl::OkStatus();
  }
  return at(job, "parallel.rollout.ranks",
            "no stage samples in its training steps (the GRPO and HAIR trainers, the controllable one with objective "
            "rl do), so rollout ranks would idle; set it to 0");
}

}  // namespace

aln::v1::ShardLevel policy_shard(const aln::v1::JobSpec& spec) {
  const aln::v1::ShardLevel level = spec.parallel().policy().shard();
  if (spec.parallel().zero1() && (level == aln::v1::NONE || level == aln::v1::SHARD_LEVEL_UNSPECIFIED)) {
    return aln::v1::OPTIMIZER;
  }
  return level == aln::v1::SHARD_LEVEL_UNSPECIFIED ? aln::v1::NONE : level;
}

int64_t effective_init_seed(const aln::v1::JobSpec& spec) {
  return spec.model().has_init_seed() ? spec.model().init_seed() : spec.seed();
}

StageSeeds stage_seeds(const aln::v1::JobSpec& spec, const aln::v1::StageSpec& stage, size_t index) {
  StageSeeds out;
  out.shuffle_explicit = stage.data().has_shuffle_seed();
  out.shuffle = out.shuffle_explicit ? stage.data().shuffle_seed() : spec.seed();
  const auto seed = static_cast<uint64_t>(spec.seed());
  out.eval_split = seed + index;
  out.sampling = seed + index;
  out.prepare = seed * 1000003ULL + index;
  return out;
}

std::string method_name(const aln::v1::TrainerSpec& trainer) {
  const auto* oneof = trainer.GetDescriptor()->FindOneofByName("method");
  const auto* field = trainer.GetReflection()->GetOneofFieldDescriptor(trainer, oneof);
  return field == nullptr ? std::string() : field->name();
}

SeparateRoles separate_roles(const aln::v1::JobSpec& spec) {
  SeparateRoles roles;
  for (const auto& stage : effective_stages(spec)) {
    // Each method's rule is declared on its options in job.proto (MethodTraits.reference_ranks_when).
    roles.reference = roles.reference || method_traits(stage.trainer()).reference_ranks;
    roles.reward = roles.reward || stage.reward_models_size() > 0;
  }
  return roles;
}

std::chrono::milliseconds startup_timeout(const aln::v1::JobSpec& spec) {
  const auto& p = spec.parallel();
  const double seconds = p.startup_timeout_s() > 0 ? p.startup_timeout_s() : std::max(p.timeout_s(), 60.0);
  // At least 1 ms: a positive setting below a millisecond must not become "no time at all".
  return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(seconds * 1000)));
}

int job_world_size(const aln::v1::JobSpec& spec) {
  auto grid = [](const aln::v1::GridSpec& g) {
    return std::max(1, g.data_parallel()) * std::max(1, g.pipeline_parallel());
  };
  int n = grid(spec.parallel().policy()) + (spec.parallel().coordinator() == aln::v1::OWN_RANK ? 1 : 0);
  if (spec.parallel().placement() == aln::v1::SEPARATE) {
    const SeparateRoles roles = separate_roles(spec);
    if (roles.reference) n += grid(spec.parallel().reference());
    if (roles.reward) n += grid(spec.parallel().reward());
  }
  return n + spec.parallel().rollout().ranks();
}

absl::StatusOr<LoadedJob> load_job_text(const std::string& text, const std::string& file_name) {
  LoadedJob job;
  job.file = file_name;
  absl::Status status = yaml_to_proto(text, file_name, &job.spec, &job.lines);
  if (!status.ok()) return status;
  status = validate_job(job);
  if (!status.ok()) return status;
  return job;
}

absl::StatusOr<LoadedJob> load_job_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ":0: (file): cannot open the job file; check the path"));
  std::ostringstream text;
  text << in.rdbuf();
  return load_job_text(text.str(), path);
}

absl::Status validate_job(const LoadedJob& job) {
  const auto& spec = job.spec;
  const auto& model = spec.model().config();
  if (spec.model().path().empty()) {
    if (model.hidden_size() % model.num_heads() != 0) {
      return at(job, "model.config.num_heads",
                absl::StrCat("hidden_size ", model.hidden_size(), " is not divisible by num_heads ", model.num_heads()));
    }
    const int kv = model.num_kv_heads() == 0 ? model.num_heads() : model.num_kv_heads();
    if (model.num_heads() % kv != 0) {
      return at(job, "model.config.num_kv_heads",
                absl::StrCat("num_heads ", model.num_heads(), " is not divisible by num_kv_heads ", kv));
    }
  }
  {
    absl::Status s = validate_sharding(job);
    if (s.ok()) s = validate_rollout(job);
    if (!s.ok()) return s;
  }
  if (spec.stages_size() > 0 && has_top_level_stage_keys(job)) {
    return at(job, "stages", "use either `stages` or the top-level trainer/data/optimizer keys, not both");
  }
  if (spec.stages_size() == 0) {
    aln::v1::StageSpec single = effective_stages(spec).front();
    return validate_stage(job, single, "");
  }
  for (int i = 0; i < spec.stages_size(); ++i) {
    { absl::Status s = validate_stage(job, spec.stages(i), absl::StrCat("stages[", i, "]")); if (!s.ok()) return s; }
  }
  return absl::OkStatus();
}

absl::Status error_at(const LoadedJob& job, const std::string& key_path, const std::string& message) {
  return at(job, key_path, message);
}

absl::Status confine_written_paths(LoadedJob* job, const std::string& run_dir) {
  aln::v1::JobSpec& spec = job->spec;
  spec.set_output_dir(run_dir);
  ALN_RETURN_IF_ERROR(confine(*job, "checkpoint.dir", run_dir, spec.mutable_checkpoint()->mutable_dir()));
  ALN_RETURN_IF_ERROR(confine(*job, "reference.cache_dir", run_dir, spec.mutable_reference()->mutable_cache_dir()));
  for (int i = 0; i < spec.stages_size(); ++i) {
    ALN_RETURN_IF_ERROR(confine(*job, absl::StrCat("stages[", i, "].reference.cache_dir"), run_dir,
                                spec.mutable_stages(i)->mutable_reference()->mutable_cache_dir()));
  }
  return absl::OkStatus();
}

std::vector<aln::v1::StageSpec> effective_stages(const aln::v1::JobSpec& spec) {
  if (spec.stages_size() > 0) return {spec.stages().begin(), spec.stages().end()};
  aln::v1::StageSpec stage;
  stage.set_name(spec.name());
  *stage.mutable_trainer() = spec.trainer();
  *stage.mutable_data() = spec.data();
  *stage.mutable_optimizer() = spec.optimizer();
  *stage.mutable_reference() = spec.reference();
  *stage.mutable_reward_models() = spec.reward_models();
  return {stage};
}

std::string to_text(const aln::v1::JobSpec& spec) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(spec, &out);
  return out;
}

}  // namespace aln::config
