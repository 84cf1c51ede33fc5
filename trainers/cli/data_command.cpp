// `aln data inspect|validate FILE [--format F] [--skip-bad]`: counts, length histograms and every
// problem with its file:line, so bad rows are found before a job starts; on a rollout dump, what
// was sampled and how it was rewarded (rollouts_inspect.cpp).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/buffer/rollout_record.h"
#include "core/data/readers.h"
#include "trainers/cli/commands.h"

namespace aln::cli {
namespace {

void histogram(const char* title, std::vector<size_t> lengths) {
  if (lengths.empty()) return;
  std::sort(lengths.begin(), lengths.end());
  auto pct = [&](double p) { return lengths[std::min(lengths.size() - 1, static_cast<size_t>(p * lengths.size()))]; };
  std::printf("  %-18s min %zu  p50 %zu  p90 %zu  p99 %zu  max %zu (characters)\n", title, lengths.front(), pct(0.5),
              pct(0.9), pct(0.99), lengths.back());
  // Power-of-two buckets, as a bar chart.
  std::map<size_t, size_t> buckets;
  for (size_t n : lengths) {
    size_t b = 1;
    while (b < n) b <<= 1;
    ++buckets[b];
  }
  for (const auto& [b, count] : buckets) {
    std::printf("    <= %-7zu %6zu %s\n", b, count,
                std::string(std::max<size_t>(1, 40 * count / lengths.size()), '#').c_str());
  }
}

// A rollout dump: a folder (the job's rollouts/ or one stage's) or a file whose first line is a record.
bool looks_like_rollouts(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) return true;
  std::ifstream in(file);
  std::string line;
  return std::getline(in, line) && buffer::is_rollout_line(line);
}

}  // namespace

int run_data(const Args& args) {
  constexpr const char* kUsage =
      "usage: aln data inspect|validate FILE [--format preference|hh_rlhf|saferlhf|prompts|sft_text]\n"
      "       aln data inspect|validate ROLLOUTS [--show N]   (a rollout dump: a rank<R>.jsonl file or its folder,\n"
      "                                                       written with rollouts: {dump: true})\n";
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.empty() || (args[0] != "inspect" && args[0] != "validate")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const bool validate = args[0] == "validate";
  std::string file;
  data::ReadOptions options;
  options.bad_records = aln::v1::SKIP;  // collect every problem, then decide
  int show = 4;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--show" && i + 1 < args.size()) {
      if (!absl::SimpleAtoi(args[++i], &show) || show < 0) {
        std::fprintf(stderr, "aln data: --show wants a count, not '%s'\n", args[i].c_str());
        return 2;
      }
    } else if (args[i] == "--format" && i + 1 < args.size()) {
      aln::v1::DataFormat f;
      if (!aln::v1::DataFormat_Parse(absl::AsciiStrToUpper(args[++i]), &f)) {
        std::fprintf(stderr, "aln data: unknown format '%s'\n", args[i].c_str());
        return 2;
      }
      options.format = f;
    } else if (file.empty()) {
      file = args[i];
    } else {
      std::fprintf(stderr, "aln data: unexpected argument '%s'\n", args[i].c_str());
      return 2;
    }
  }
  if (file.empty()) {
    std::fprintf(stderr, "aln data %s: missing FILE\n", args[0].c_str());
    return 2;
  }
  if (looks_like_rollouts(file)) return inspect_rollouts(file, validate, show);
  data::ReadReport report;
  const bool prompts = options.format == aln::v1::PROMPTS || absl::EndsWith(file, ".csv");
  std::vector<size_t> prompt_len, a_len, b_len;
  absl::Status status;
  if (options.format == aln::v1::SFT_TEXT) {
    auto r = data::read_sft(file, options, &report);
    status = r.status();
    if (r.ok()) {
      for (const auto& x : *r) { prompt_len.push_back(x.prompt.size()); a_len.push_back(x.response.size()); }
    }
  } else if (prompts) {
    auto r = data::read_prompts(file, options, &report);
    status = r.status();
    if (r.ok()) for (const auto& x : *r) prompt_len.push_back(x.prompt.size());
  } else {
    auto r = data::read_preferences(file, options, &report);
    status = r.status();
    if (r.ok()) {
      int64_t labeled = 0, safe_vs_unsafe = 0;
      for (const auto& x : *r) {
        prompt_len.push_back(x.prompt.size());
        a_len.push_back(x.chosen.size());
        b_len.push_back(x.rejected.size());
        if (x.unsafe_chosen && x.unsafe_rejected) {
          ++labeled;
          safe_vs_unsafe += *x.unsafe_chosen != *x.unsafe_rejected;
        }
      }
      if (labeled > 0) std::printf("  safety labels on %lld pairs, %lld safe-vs-unsafe\n", (long long)labeled, (long long)safe_vs_unsafe);
    }
  }
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
    return 2;
  }
  std::printf("%s: %lld rows, %lld records, %lld problems\n", file.c_str(), (long long)report.rows,
              (long long)report.records, (long long)report.skipped);
  for (const auto& [reason, count] : report.skip_reasons) std::printf("  %-22s %lld\n", reason.c_str(), (long long)count);
  if (!validate) {
    histogram("prompt", prompt_len);
    histogram(b_len.empty() ? "response" : "chosen", a_len);
    histogram("rejected", b_len);
  }
  for (const auto& p : report.problems) std::fprintf(stderr, "%s\n", p.c_str());
  return validate && report.skipped > 0 ? 1 : 0;
}

}  // namespace aln::cli
