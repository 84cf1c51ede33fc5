#include "core/config/yaml_proto.h"

#include <cmath>
#include <limits>
#include <optional>

// yaml-cpp 0.7's node templates trip GCC 12's -Wdangling-pointer (a false positive in its headers).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>
#pragma GCC diagnostic pop

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "aln/v1/options.pb.h"
#include "core/status.h"
#include "google/protobuf/descriptor.h"

namespace aln::config {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string join_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : absl::StrCat(prefix, ".", name);
}

const char* yaml_type_name(FieldDescriptor::CppType type) {
  switch (type) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64: return "an integer";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: return "a number";
    case FieldDescriptor::CPPTYPE_BOOL: return "true or false";
    case FieldDescriptor::CPPTYPE_ENUM: return "one of the listed names";
    case FieldDescriptor::CPPTYPE_STRING: return "a string";
    case FieldDescriptor::CPPTYPE_MESSAGE: return "a mapping";
  }
  return "a value";
}

std::string enum_choices(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) {
    if (e->value(i)->number() == 0) continue;  // *_UNSPECIFIED is never a valid choice
    names.push_back(absl::AsciiStrToLower(e->value(i)->name()));
  }
  return absl::StrJoin(names, ", ");
}

std::optional<double> numeric_value(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return static_cast<double>(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32: return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return static_cast<double>(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_DOUBLE: return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT: return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    default: return std::nullopt;
  }
}

// Empty string when `value` satisfies the field's declared range, else what is wrong.
std::string range_problem(const FieldDescriptor* f, double value) {
  const auto& o = f->options();
  auto fmt = [](double v) { return absl::StrCat(v); };
  if (!std::isfinite(value)) return "out of range: must be a finite number";
  if (o.HasExtension(aln::v1::min) && value < o.GetExtension(aln::v1::min)) {
    return absl::StrCat("out of range: ", fmt(value), " < minimum ", fmt(o.GetExtension(aln::v1::min)));
  }
  if (o.HasExtension(aln::v1::max) && value > o.GetExtension(aln::v1::max)) {
    return absl::StrCat("out of range: ", fmt(value), " > maximum ", fmt(o.GetExtension(aln::v1::max)));
  }
  if (o.HasExtension(aln::v1::gt) && !(value > o.GetExtension(aln::v1::gt))) {
    return absl::StrCat("out of range: ", fmt(value), " must be greater than ", fmt(o.GetExtension(aln::v1::gt)));
  }
  return "";
}

// Parses `text` into field `f` of `m` (appending when repeated). Returns "" or the problem.
std::string assign_scalar(Message* m, const FieldDescriptor* f, const std::string& text) {
  const Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  const std::string t(absl::StripAsciiWhitespace(text));
  auto wrong_type = [&]() { return absl::StrCat("wrong type: expected ", yaml_type_name(f->cpp_type()), ", got '", text, "'"); };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(t, &v)) return wrong_type();
      rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
      return "";
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(t, &v)) return wrong_type();
      rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
      return "";
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(t, &v)) return wrong_type();
      rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
      return "";
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(t, &v)) return wrong_type();
      rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
      return "";
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      // SimpleAtod accepts "inf"/"nan"; the range check rejects non-finite values.
      if (!absl::SimpleAtod(t, &v)) return wrong_type();
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
      } else {
        rep ? r->AddFloat(m, f, static_cast<float>(v)) : r->SetFloat(m, f, static_cast<float>(v));
      }
      return "";
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = absl::AsciiStrToLower(t);
      bool v;
      if (lower == "true" || lower == "yes" || lower == "on") v = true;
      else if (lower == "false" || lower == "no" || lower == "off") v = false;
      else return wrong_type();
      rep ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
      return "";
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* e = f->enum_type();
      const auto* value = e->FindValueByName(absl::AsciiStrToUpper(t));
      if (value == nullptr || value->number() == 0) {
        return absl::StrCat("unknown value '", text, "'; expected one of: ", enum_choices(e));
      }
      rep ? r->AddEnum(m, f, value) : r->SetEnum(m, f, value);
      return "";
    }
    case FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(m, f, text) : r->SetString(m, f, text);
      return "";
    case FieldDescriptor::CPPTYPE_MESSAGE: return "expected a mapping";
  }
  return "unsupported field type";
}

class Converter {
 public:
  Converter(std::string file, LineMap* lines) : file_(std::move(file)), lines_(lines) {}

  absl::Status error(const YAML::Mark& mark, const std::string& path, const std::string& what) const {
    const int line = mark.is_null() ? 0 : mark.line + 1;
    return absl::InvalidArgumentError(absl::StrCat(file_, ":", line, ": ", path.empty() ? "(top level)" : path, ": ", what));
  }

  void note(const std::string& path, const YAML::Mark& mark) {
    if (lines_ != nullptr && !mark.is_null()) (*lines_)[path] = mark.line + 1;
  }

  absl::Status fill_message(const YAML::Node& node, Message* m, const std::string& path) {
    ALN_RETURN_IF_ERROR(visit(node, path));
    if (node.IsNull()) return absl::OkStatus();  // "key:" with nothing = all defaults
    if (!node.IsMap()) {
      return error(node.Mark(), path, absl::StrCat("wrong type: expected a mapping of ", m->GetDescriptor()->name(), " fields"));
    }
    const Descriptor* d = m->GetDescriptor();
    std::map<const google::protobuf::OneofDescriptor*, std::string> oneof_seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node& key = it->first;
      const YAML::Node& value = it->second;
      ALN_RETURN_IF_ERROR(visit(key, path));
      if (!key.IsScalar()) return error(key.Mark(), path, "keys must be plain names");
      const std::string name = key.Scalar();
      const std::string field_path = join_path(path, name);
      const FieldDescriptor* f = d->FindFieldByName(name);
      if (f == nullptr) return error(key.Mark(), field_path, unknown_field_hint(d));
      note(field_path, key.Mark());
      if (const auto* oneof = f->containing_oneof(); oneof != nullptr) {
        auto [pos, inserted] = oneof_seen.emplace(oneof, name);
        if (!inserted) {
          return error(key.Mark(), field_path,
                       absl::StrCat("conflicts with '", pos->second, "': only one ", oneof->name(), " may be set"));
        }
      }
      ALN_RETURN_IF_ERROR(fill_field(value, m, f, field_path, key.Mark()));
    }
    return absl::OkStatus();
  }

 private:
  // Counts one node against kMaxSpecNodes; aliases count every time they are used.
  absl::Status visit(const YAML::Node& node, const std::string& path) {
    if (++visited_ <= kMaxSpecNodes) return absl::OkStatus();
    return error(node.Mark(), path,
                 absl::StrCat("the spec expands to more than ", kMaxSpecNodes,
                              " YAML nodes (limit kMaxSpecNodes; each use of an alias counts again)"));
  }

  static int64_t max_items(const FieldDescriptor* f) {
    const auto& o = f->options();
    return o.HasExtension(aln::v1::max_items) ? int64_t{o.GetExtension(aln::v1::max_items)} : kMaxListItems;
  }

  static std::string unknown_field_hint(const Descriptor* d) {
    std::vector<std::string> names;
    for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
    return absl::StrCat("unknown field (", d->name(), " has: ", absl::StrJoin(names, ", "), ")");
  }

  absl::Status fill_field(const YAML::Node& value, Message* m, const FieldDescriptor* f, const std::string& path,
                          const YAML::Mark& key_mark) {
    const Reflection* r = m->GetReflection();
    if (f->is_repeated()) {
      if (value.IsNull()) return absl::OkStatus();
      if (!value.IsSequence()) return error(value.Mark(), path, "wrong type: expected a list");
      if (const int64_t cap = max_items(f); static_cast<int64_t>(value.size()) > cap) {
        return error(key_mark, path,
                     absl::StrCat("too many items: ", value.size(), " > maximum ", cap, " (max_items in job.proto)"));
      }
      r->ClearField(m, f);
      for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string item_path = absl::StrCat(path, "[", i, "]");
        const YAML::Node item = value[i];
        note(item_path, item.Mark());
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          Message* child = r->AddMessage(m, f);
          apply_defaults(child);
          ALN_RETURN_IF_ERROR(fill_message(item, child, item_path));
        } else {
          ALN_RETURN_IF_ERROR(fill_scalar(item, m, f, item_path));
        }
      }
      return absl::OkStatus();
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      Message* child = r->MutableMessage(m, f);
      if (f->containing_oneof() != nullptr) apply_defaults(child);
      return fill_message(value, child, path);
    }
    if (value.IsNull()) return error(key_mark, path, absl::StrCat("missing value: expected ", yaml_type_name(f->cpp_type())));
    return fill_scalar(value, m, f, path);
  }

  absl::Status fill_scalar(const YAML::Node& value, Message* m, const FieldDescriptor* f, const std::string& path) {
    ALN_RETURN_IF_ERROR(visit(value, path));
    if (!value.IsScalar()) {
      return error(value.Mark(), path, absl::StrCat("wrong type: expected ", yaml_type_name(f->cpp_type()),
                                                    value.IsMap() ? ", got a mapping" : ", got a list"));
    }
    const std::string problem = assign_scalar(m, f, value.Scalar());
    if (!problem.empty()) return error(value.Mark(), path, problem);
    const int index = f->is_repeated() ? m->GetReflection()->FieldSize(*m, f) - 1 : 0;
    if (auto number = numeric_value(*m, f, index)) {
      const std::string range = range_problem(f, *number);
      if (!range.empty()) return error(value.Mark(), path, range);
    }
    return absl::OkStatus();
  }

  std::string file_;
  LineMap* lines_;
  int64_t visited_ = 0;
};

}  // namespace

void apply_defaults(Message* message) {
  const Descriptor* d = message->GetDescriptor();
  const Reflection* r = message->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->containing_oneof() == nullptr) apply_defaults(r->MutableMessage(message, f));
      continue;
    }
    if (f->options().HasExtension(aln::v1::default_value)) {
      const std::string problem = assign_scalar(message, f, f->options().GetExtension(aln::v1::default_value));
      // A bad default is a bug in job.proto; the unit tests load every default, so this never ships.
      if (!problem.empty()) throw std::logic_error(absl::StrCat("bad default for ", f->full_name(), ": ", problem));
    }
  }
}

absl::Status yaml_to_proto(const std::string& text, const std::string& file_name, Message* message,
                           LineMap* lines) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message is only "bad file"; a job file is a dozen levels deep at most.
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    return absl::InvalidArgumentError(absl::StrCat(
        file_name, ":", line, ": (yaml): nested more than ", e.depth() - 1,
        " levels deep (brackets or indentation); a job file needs about a dozen: look for unclosed brackets"));
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": (yaml): syntax error: ", e.msg));
  }
  apply_defaults(message);
  if (!root.IsDefined() || root.IsNull()) return absl::OkStatus();  // empty file = all defaults
  Converter converter(file_name, lines);
  try {
    return converter.fill_message(root, message, "");
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": (yaml): ", e.msg));
  }
}

absl::Status check_ranges(const Message& message, const std::string& path_prefix) {
  const Descriptor* d = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = join_path(path_prefix, f->name());
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int k = 0; k < r->FieldSize(message, f); ++k) {
          absl::Status s = check_ranges(r->GetRepeatedMessage(message, f, k), absl::StrCat(path, "[", k, "]"));
          if (!s.ok()) return s;
        }
      } else if (r->HasField(message, f)) {
        absl::Status s = check_ranges(r->GetMessage(message, f), path);
        if (!s.ok()) return s;
      }
      continue;
    }
    const int n = f->is_repeated() ? r->FieldSize(message, f) : 1;
    for (int k = 0; k < n; ++k) {
      if (auto number = numeric_value(message, f, k)) {
        const std::string problem = range_problem(f, *number);
        if (!problem.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace aln::config
