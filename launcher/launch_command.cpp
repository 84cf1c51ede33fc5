#include "launcher/launch_command.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aln::launcher {

std::string default_launch_template(int world_size) {
  if (world_size <= 1) return "{aln} train {spec}";
  // -x forwards the variables the launcher sets for the job to every rank.
  return "mpirun -np {np} --host {hosts} --bind-to none -x ALN_OUTPUT_DIR -x ALN_METRICS_PORT -x ALN_JOB_ID "
         "{aln} train {spec}";
}

absl::StatusOr<std::vector<std::string>> expand_launch_template(const std::string& templ,
                                                                const std::map<std::string, std::string>& values) {
  std::vector<std::string> words;
  for (absl::string_view word : absl::StrSplit(templ, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
    std::string out;
    size_t i = 0;
    while (i < word.size()) {
      const size_t open = word.find('{', i);
      if (open == absl::string_view::npos) {
        absl::StrAppend(&out, word.substr(i));
        break;
      }
      absl::StrAppend(&out, word.substr(i, open - i));
      const size_t close = word.find('}', open);
      if (close == absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat("--launch-template: unclosed '{' in '", std::string(word), "'"));
      }
      const std::string name(word.substr(open + 1, close - open - 1));
      auto it = values.find(name);
      if (it == values.end()) {
        std::string known;
        for (const auto& [k, v] : values) absl::StrAppend(&known, known.empty() ? "" : " ", "{", k, "}");
        return absl::InvalidArgumentError(
            absl::StrCat("--launch-template: unknown placeholder {", name, "}; known: ", known));
      }
      absl::StrAppend(&out, it->second);
      i = close + 1;
    }
    words.push_back(std::move(out));
  }
  if (words.empty()) return absl::InvalidArgumentError("--launch-template: empty command");
  return words;
}

}  // namespace aln::launcher
