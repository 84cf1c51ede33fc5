// `aln data inspect` on a rollout dump (rollouts: {dump: true}): what was sampled, when, by which
// policy version, and how it was rewarded, step by step, with a few samples to read.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/buffer/rollout_record.h"
#include "trainers/cli/commands.h"

namespace aln::cli {
namespace {

// One line of at most `width` characters, newlines shown as "\n".
std::string one_line(const std::string& text, size_t width) {
  std::string out;
  for (char c : text) {
    if (out.size() >= width) return out + "...";
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

struct Moments {
  double n = 0, sum = 0, sum2 = 0;
  void add(double v) { n += 1; sum += v; sum2 += v * v; }
  double mean() const { return n > 0 ? sum / n : 0; }
  double stddev() const { return n > 1 ? std::sqrt(std::max(0.0, (sum2 - sum * sum / n) / (n - 1))) : 0; }
};

}  // namespace

int inspect_rollouts(const std::string& path, bool validate, int show) {
  int64_t torn = 0;
  auto records = buffer::read_rollouts(path, &torn);
  if (!records.ok()) {
    std::fprintf(stderr, "%s\nThe file should be what a job wrote with rollouts: {dump: true}.\n",
                 std::string(records.status().message()).c_str());
    return 2;
  }
  const auto& rs = *records;
  std::printf("%s: %zu rollout records", path.c_str(), rs.size());
  if (torn > 0) std::printf(" (%lld torn last lines skipped: a run was killed while writing)", (long long)torn);
  std::printf("\n");
  if (rs.empty() || validate) return 0;

  // Per stage and step: counts, rewards, lengths, staleness.
  struct StepStats {
    Moments reward, length, logprob;
    std::map<std::string, Moments> sources;
    int64_t terminated = 0, global_step = 0;
    std::set<int> ranks;
    std::set<int64_t> versions;
  };
  std::map<std::string, std::map<int64_t, StepStats>> stages;
  std::map<int64_t, int64_t> staleness;
  std::map<std::string, Moments> sources;
  Moments reward, length;
  int64_t terminated = 0;
  for (const auto& r : rs) {
    StepStats& st = stages[r.stage][r.step];
    st.global_step = r.global_step;
    st.reward.add(r.reward);
    st.length.add(static_cast<double>(r.response_ids.size()));
    for (float lp : r.sampling_logprobs) st.logprob.add(lp);
    for (const auto& [k, v] : r.rewards) {
      st.sources[k].add(v);
      sources[k].add(v);
    }
    st.terminated += r.terminated;
    st.ranks.insert(r.rank);
    st.versions.insert(r.policy_version);
    ++staleness[r.step - 1 - r.policy_version];
    reward.add(r.reward);
    length.add(static_cast<double>(r.response_ids.size()));
    terminated += r.terminated;
  }
  std::printf("  reward             mean %.4f  std %.4f\n", reward.mean(), reward.stddev());
  for (const auto& [k, m] : sources) std::printf("    %-16s mean %.4f  std %.4f\n", k.c_str(), m.mean(), m.stddev());
  std::printf("  response length    mean %.1f tokens, %.1f%% ended with the end token\n", length.mean(),
              100.0 * static_cast<double>(terminated) / static_cast<double>(rs.size()));
  std::printf("  staleness (steps between the sampling policy and the one trained):");
  for (const auto& [s, n] : staleness) std::printf("  %lld: %lld", (long long)s, (long long)n);
  std::printf("\n");
  for (const auto& [stage, steps] : stages) {
    std::printf("  stage %s: steps %lld-%lld\n", stage.c_str(), (long long)steps.begin()->first,
                (long long)steps.rbegin()->first);
    std::printf("    %6s %7s %7s %9s %9s %8s %10s %8s\n", "step", "global", "records", "reward", "r_std", "length",
                "logp/token", "versions");
    // At most 20 rows, evenly spaced, the last step always.
    const size_t n = steps.size(), every = std::max<size_t>(1, (n + 19) / 20);
    size_t i = 0;
    for (const auto& [step, st] : steps) {
      const bool last = ++i == n;
      if ((i - 1) % every != 0 && !last) continue;
      std::printf("    %6lld %7lld %7.0f %9.4f %9.4f %8.1f %10.3f %4lld-%lld\n", (long long)step,
                  (long long)st.global_step, st.reward.n, st.reward.mean(), st.reward.stddev(), st.length.mean(),
                  st.logprob.mean(), (long long)*st.versions.begin(), (long long)*st.versions.rbegin());
    }
  }
  // The last step's highest- and lowest-rewarded samples.
  if (show > 0) {
    // The job's last step in the dump (files are read by name, so not necessarily the last record).
    const buffer::RolloutRecord* latest = &rs.front();
    for (const auto& r : rs) {
      if (r.global_step > latest->global_step) latest = &r;
    }
    const int64_t last_step = latest->step;
    std::vector<const buffer::RolloutRecord*> last;
    for (const auto& r : rs) {
      if (r.global_step == latest->global_step) last.push_back(&r);
    }
    std::stable_sort(last.begin(), last.end(), [](auto* a, auto* b) { return a->reward > b->reward; });
    std::vector<const buffer::RolloutRecord*> picked;
    for (size_t k = 0; k < last.size() && static_cast<int>(picked.size()) < (show + 1) / 2; ++k) picked.push_back(last[k]);
    for (size_t k = last.size(); k-- > 0 && static_cast<int>(picked.size()) < show;) {
      if (std::find(picked.begin(), picked.end(), last[k]) == picked.end()) picked.push_back(last[k]);
    }
    std::printf("  samples of stage %s step %lld (highest and lowest reward):\n", latest->stage.c_str(),
                (long long)last_step);
    for (const auto* r : picked) {
      std::string parts;
      for (const auto& [k, v] : r->rewards) absl::StrAppend(&parts, " ", k, "=", v);
      std::printf("    [rank %d group %lld sample %lld, version %lld] reward %.4f (%s )\n", r->rank,
                  (long long)r->group, (long long)r->sample, (long long)r->policy_version, r->reward, parts.c_str());
      std::printf("      prompt:   %s\n", one_line(r->prompt_text, 160).c_str());
      std::printf("      response: %s%s\n", one_line(r->response_text, 160).c_str(), r->terminated ? "" : " [cut]");
    }
  }
  return 0;
}

}  // namespace aln::cli
