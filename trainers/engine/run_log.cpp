#include "trainers/engine/run_log.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/io/atomic_file.h"

namespace aln::engine {

absl::StatusOr<JsonlLog> JsonlLog::open(const std::string& path, int64_t keep_through_step) {
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create its directory: ", ec.message()));
  if (keep_through_step >= 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::string kept, line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A torn last line (the process died mid-write) is dropped with the redone steps.
      if (j.is_discarded() || !j.is_object()) continue;
      if (j.value("global_step", int64_t{0}) <= keep_through_step) kept += line + "\n";
    }
    absl::Status s = io::write_text_atomically(path, kept);
    if (!s.ok()) return s;
  }
  std::ofstream out(path, std::ios::app);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for appending"));
  return JsonlLog(path, std::move(out));
}

absl::Status JsonlLog::append(const std::string& json) {
  out_ << json << '\n';
  out_.flush();
  if (!out_) return absl::UnavailableError(absl::StrCat(path_, ": write failed (disk full?)"));
  return absl::OkStatus();
}

}  // namespace aln::engine
