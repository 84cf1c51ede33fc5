#include "core/config/input_paths.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace aln::config {
namespace {
namespace fs = std::filesystem;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

bool names_an_input(const FieldDescriptor& field) {
  const std::string& name = field.name();
  return field.type() == FieldDescriptor::TYPE_STRING &&
         (name == "path" || name == "tokenizer" || absl::EndsWith(name, "_path"));
}

void collect(const Message& message, const std::string& prefix, std::vector<InputPath>* out) {
  std::vector<const FieldDescriptor*> fields;
  message.GetReflection()->ListFields(message, &fields);
  const auto* reflection = message.GetReflection();
  for (const FieldDescriptor* field : fields) {
    const std::string key = prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          collect(reflection->GetRepeatedMessage(message, field, i), absl::StrCat(key, "[", i, "]"), out);
        }
      } else {
        collect(reflection->GetMessage(message, field), key, out);
      }
    } else if (names_an_input(*field) && !field->is_repeated()) {
      std::string value = reflection->GetString(message, field);
      if (!value.empty()) out->push_back({key, std::move(value)});
    }
  }
}

// Absolute, normalised, symlinks resolved for the part that exists (weakly_canonical), so neither
// "..", nor a link inside an allowed directory pointing out of it, passes the prefix test.
fs::path resolved(const fs::path& path) {
  std::error_code ec;
  fs::path out = fs::weakly_canonical(path, ec);
  return ec ? path.lexically_normal() : out;
}

bool inside(const fs::path& path, const fs::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p) {
    if (d->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *d) return false;
  }
  return true;
}

}  // namespace

std::vector<InputPath> input_paths(const aln::v1::JobSpec& spec) {
  std::vector<InputPath> out;
  collect(spec, "", &out);
  return out;
}

absl::Status confine_read_paths(const LoadedJob& job, const std::string& workdir,
                                const std::vector<std::string>& allowed) {
  if (allowed.empty()) return absl::OkStatus();
  std::vector<fs::path> dirs;
  for (const std::string& dir : allowed) dirs.push_back(resolved(dir));
  for (const InputPath& input : input_paths(job.spec)) {
    const fs::path value(input.value);
    const fs::path full = resolved(value.is_absolute() ? value : fs::path(workdir) / value);
    bool ok = false;
    for (const fs::path& dir : dirs) ok = ok || inside(full, dir);
    if (!ok) {
      return error_at(job, input.key,
                      absl::StrCat("'", input.value, "' is ", full.string(),
                                   ", outside the directories this launcher lets jobs read (",
                                   absl::StrJoin(allowed, ", "),
                                   "); copy the file into one of them or ask the launcher's operator"));
    }
  }
  return absl::OkStatus();
}

}  // namespace aln::config
