// `aln convert (--checkpoint DIR | --model DIR) --out DIR [--dtype D] [--max-shard-mb N] [--tokenizer FILE]`:
// a training checkpoint's policy, or a Hugging Face directory, written as a Hugging Face directory
// in another dtype or sharding. The weights go through the same loader and writer as training,
// so what transformers saves loads here and what this writes transformers loads.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/io/atomic_file.h"
#include "core/logging.h"
#include "core/model/hf_checkpoint.h"
#include "trainers/cli/commands.h"
#include "trainers/engine/checkpoint.h"
#include "trainers/engine/fsdp_checkpoint.h"

namespace aln::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "usage: aln convert (--checkpoint DIR | --model DIR) --out DIR [--dtype float32|bfloat16|float16]\n"
    "                   [--max-shard-mb N] [--tokenizer FILE]\n"
    "  Writes a Hugging Face model directory (config.json + model.safetensors, or shards and\n"
    "  model.safetensors.index.json) that transformers loads.\n"
    "  --checkpoint DIR  an Aln training checkpoint (DIR/step-NNNNNNNN), or a checkpoints folder: its\n"
    "                    newest complete checkpoint; the policy is converted (a fully sharded\n"
    "                    run's parts put together)\n"
    "  --model DIR       a Hugging Face model directory (to change its dtype or sharding)\n"
    "  --dtype D         the weights' dtype in DIR (default float32)\n"
    "  --max-shard-mb N  shard when the weights exceed N MB (default: one file)\n"
    "  --tokenizer FILE  copied into DIR as tokenizer.json\n"
    "  --out DIR is replaced atomically (written next to it, then renamed).\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "aln convert: %s\n%s", message.c_str(), kUsage);
  return 2;
}

// One-line input errors (a damaged checkpoint, a missing file) exit 2 like every bad input.
int input_error(const absl::Status& status) {
  std::fprintf(stderr, "aln convert: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound ||
                 status.code() == absl::StatusCode::kDataLoss || status.code() == absl::StatusCode::kFailedPrecondition
             ? 2
             : 1;
}

// A step directory, or the newest complete one of a checkpoints folder; checked against its manifest.
absl::StatusOr<std::string> checkpoint_step_dir(const std::string& dir) {
  std::string step = dir;
  if (!fs::exists(fs::path(dir) / "MANIFEST.json")) {
    const engine::CheckpointManager manager(dir, 1);
    auto latest = manager.latest(Logger(0, "convert"));
    if (!latest) {
      return absl::NotFoundError(
          absl::StrCat(dir, ": no complete checkpoint (expected DIR/step-NNNNNNNN with a MANIFEST.json)"));
    }
    step = *latest;
  }
  if (absl::Status s = engine::verify_manifest(step); !s.ok()) return s;
  return step;
}

}  // namespace

int run_convert(const Args& args) {
  std::string checkpoint, model_dir, out, tokenizer, dtype_name = "float32";
  int64_t shard_mb = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= args.size()) return usage_error(absl::StrCat("unknown option or missing value: '", a, "'"));
    const std::string& v = args[++i];
    if (a == "--checkpoint") {
      checkpoint = v;
    } else if (a == "--model") {
      model_dir = v;
    } else if (a == "--out") {
      out = v;
    } else if (a == "--tokenizer") {
      tokenizer = v;
    } else if (a == "--dtype") {
      dtype_name = v;
    } else if (a == "--max-shard-mb") {
      if (!absl::SimpleAtoi(v, &shard_mb) || shard_mb < 1 || shard_mb > 1'000'000) {
        return usage_error(absl::StrCat("--max-shard-mb: '", v, "' is not a whole number from 1 to 1000000"));
      }
    } else {
      return usage_error(absl::StrCat("unknown option '", a, "'"));
    }
  }
  if (checkpoint.empty() == model_dir.empty()) return usage_error("give one of --checkpoint DIR and --model DIR");
  if (out.empty()) return usage_error("--out DIR is required");
  at::ScalarType dtype;
  if (dtype_name == "float32") {
    dtype = at::kFloat;
  } else if (dtype_name == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (dtype_name == "float16") {
    dtype = at::kHalf;
  } else {
    return usage_error(absl::StrCat("--dtype: '", dtype_name, "' is not float32, bfloat16 or float16"));
  }
  std::string source = model_dir;
  if (!checkpoint.empty()) {
    auto dir = checkpoint_step_dir(checkpoint);
    if (!dir.ok()) return input_error(dir.status());
    source = *dir;
  }
  // --out is replaced whole: not the source, not a folder that holds it, and (a checkpoint) nothing
  // inside it.
  const fs::path target = fs::weakly_canonical(out), from_dir = fs::weakly_canonical(source);
  const auto [in_source, in_target] = std::mismatch(from_dir.begin(), from_dir.end(), target.begin(), target.end());
  if (in_target == target.end()) {
    return usage_error("--out must differ from the source directory and not hold it");
  }
  if (!checkpoint.empty() && in_source == from_dir.end()) {
    return usage_error("--out must be outside the checkpoint's directory");
  }
  // Loaded in float32: a bfloat16 or float16 source widens exactly, and the one rounding is the
  // final cast to --dtype.
  const fs::path shards = fs::path(source) / engine::kShardsFolder;
  if (!checkpoint.empty() && shard_mb == 0 && fs::exists(shards)) {
    // A sharded checkpoint into one file: a tensor at a time, so a model larger than memory converts.
    auto index = engine::load_shard_index(shards.string());
    if (!index.ok()) return input_error(index.status());
    absl::Status saved = engine::write_shard_policy(*index, out, dtype);
    if (!saved.ok()) return input_error(saved);
  } else {
    auto model =
        checkpoint.empty() ? model::load_hf_model(source, at::kFloat) : engine::CheckpointManager::load_policy(source);
    if (!model.ok()) return input_error(model.status());
    absl::Status saved = model::save_hf_model(*model, out, dtype, shard_mb * 1'000'000);
    if (!saved.ok()) return input_error(saved);
  }
  // config.json says what the weights are, so transformers' torch_dtype="auto" loads them as such.
  if (dtype != at::kFloat) {
    const std::string config_path = (fs::path(out) / "config.json").string();
    std::ifstream in(config_path);
    nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) return input_error(absl::DataLossError(absl::StrCat(config_path, ": cannot read back")));
    config["torch_dtype"] = dtype_name;
    absl::Status written = io::write_text_atomically(config_path, config.dump(2) + "\n");
    if (!written.ok()) return input_error(written);
  }
  if (!tokenizer.empty()) {
    std::error_code ec;
    fs::copy_file(tokenizer, fs::path(out) / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return input_error(absl::NotFoundError(absl::StrCat(tokenizer, ": cannot copy the tokenizer: ", ec.message())));
    }
  }
  // (What was read: a checkpoint's model/ or shards/, or the Hugging Face directory.)
  const std::string from =
      checkpoint.empty() ? source
                         : (fs::path(source) /
                            (fs::exists(fs::path(source) / engine::kShardsFolder) ? engine::kShardsFolder : "model"))
                               .string();
  std::printf("wrote %s (%s, from %s)\n", out.c_str(), dtype_name.c_str(), from.c_str());
  return 0;
}

}  // namespace aln::cli
