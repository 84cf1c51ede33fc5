#pragma once
// Generic YAML -> protobuf conversion by reflection. Keys are field names; defaults and ranges come
// from the field options in proto/aln/v1/options.proto. Errors name the file, line and key path:
//   job.yaml:7: stages[0].trainer.dpo.bogus: unknown field
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace YAML {
class Node;
}

namespace aln::config {

// Where each key path was found in the YAML text (1-based lines), for later validation messages.
using LineMap = std::map<std::string, int>;

// YAML aliases let a few kilobytes stand for millions of nodes; the conversion visits each use of
// an alias again, so it stops after this many nodes (a real job spec has a few hundred). Lists are
// also capped per field by (max_items) in options.proto, or kMaxListItems without it.
inline constexpr int64_t kMaxSpecNodes = 100'000;
inline constexpr int64_t kMaxListItems = 10'000;

// Fills every field that declares (default_value), recursing into singular message fields that are
// not part of a oneof. Does not touch repeated fields.
void apply_defaults(google::protobuf::Message* message);

// Parses `text` (the contents of `file_name`, used only in messages) into `message`, after applying
// defaults. On error returns InvalidArgument with "file:line: path: what is wrong", also when the
// text expands past kMaxSpecNodes or a list is longer than its cap.
absl::Status yaml_to_proto(const std::string& text, const std::string& file_name,
                           google::protobuf::Message* message, LineMap* lines);

// Checks (min)/(max)/(gt) on every set numeric field; for specs that did not come from YAML.
absl::Status check_ranges(const google::protobuf::Message& message, const std::string& path_prefix = "");

}  // namespace aln::config
