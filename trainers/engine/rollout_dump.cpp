#include "trainers/engine/rollout_dump.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aln::engine {

std::string rollout_dump_path(const std::string& output_dir, const std::string& stage, int rank) {
  return (std::filesystem::path(output_dir) / "rollouts" / stage / absl::StrCat("rank", rank, ".jsonl")).string();
}

absl::Status trim_other_rank_dumps(const std::string& output_dir, const std::string& stage, int from_rank,
                                   int64_t keep_through_step) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(rollout_dump_path(output_dir, stage, 0)).parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::OkStatus();
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    int rank = -1;
    if (!absl::StartsWith(name, "rank") || !absl::EndsWith(name, ".jsonl") ||
        !absl::SimpleAtoi(name.substr(4, name.size() - 10), &rank) || rank < from_rank) {
      continue;
    }
    auto trimmed = JsonlLog::open(entry.path().string(), keep_through_step);  // rewrites it, then closes
    if (!trimmed.ok()) return trimmed.status();
  }
  return absl::OkStatus();
}

void RolloutDump::add(std::vector<buffer::RolloutRecord> records, int64_t global_step, int64_t step) {
  if (!status_.ok()) return;  // reported once, after the step that failed
  if (!log_) {
    auto opened = JsonlLog::open(path_, keep_through_);
    if (!opened.ok()) {
      status_ = opened.status();
      return;
    }
    log_.emplace(std::move(*opened));
  }
  for (auto& r : records) {
    r.stage = stage_;
    r.global_step = global_step;
    r.step = step;
    r.rank = rank_;
    status_ = log_->append(buffer::to_json_line(r));
    if (!status_.ok()) return;
    ++written_;
  }
}

}  // namespace aln::engine
