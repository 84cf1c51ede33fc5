#include "core/config/method_traits.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "aln/v1/options.pb.h"
#include "core/error.h"
#include "google/protobuf/descriptor.h"

namespace aln::config {
namespace {
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

const google::protobuf::OneofDescriptor& method_oneof() {
  const auto* oneof = aln::v1::TrainerSpec::descriptor()->FindOneofByName("method");
  ALN_CHECK(oneof != nullptr, "TrainerSpec has no `method` oneof");
  return *oneof;
}

double number(const Message& m, const FieldDescriptor& f) {
  const auto* r = m.GetReflection();
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE: return r->GetDouble(m, &f);
    case FieldDescriptor::CPPTYPE_FLOAT: return r->GetFloat(m, &f);
    case FieldDescriptor::CPPTYPE_INT32: return r->GetInt32(m, &f);
    case FieldDescriptor::CPPTYPE_INT64: return static_cast<double>(r->GetInt64(m, &f));
    case FieldDescriptor::CPPTYPE_UINT32: return r->GetUInt32(m, &f);
    case FieldDescriptor::CPPTYPE_UINT64: return static_cast<double>(r->GetUInt64(m, &f));
    default: ALN_FAIL("method traits: ", f.full_name(), " is not a number");
  }
}

// "FIELD > 0", "FIELD == ''" or "FIELD == ENUM_VALUE" over the options message `m`.
bool condition_holds(const Message& m, absl::string_view condition) {
  condition = absl::StripAsciiWhitespace(condition);
  const bool greater = condition.find(" > ") != absl::string_view::npos;
  std::vector<std::string> sides = absl::StrSplit(condition, greater ? " > " : " == ");
  ALN_CHECK(sides.size() == 2, "method traits of ", m.GetTypeName(), ": cannot read the condition '",
            std::string(condition), "'");
  const FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(sides[0]);
  ALN_CHECK(f != nullptr && !f->is_repeated(), "method traits of ", m.GetTypeName(), ": no field '", sides[0], "'");
  if (greater) {
    double bound = 0;
    ALN_CHECK(absl::SimpleAtod(sides[1], &bound), "method traits: '", sides[1], "' is not a number");
    return number(m, *f) > bound;
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    ALN_CHECK(sides[1] == "''", "method traits: strings compare with '' only, got ", sides[1]);
    return m.GetReflection()->GetString(m, f).empty();
  }
  ALN_CHECK(f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM, "method traits: ", f->full_name(),
            " compares with == only as a string or an enum");
  ALN_CHECK(f->enum_type()->FindValueByName(sides[1]) != nullptr, "method traits: ", f->enum_type()->full_name(),
            " has no value ", sides[1]);
  return m.GetReflection()->GetEnum(m, f)->name() == sides[1];
}

bool rule_holds(const Message& m, const std::string& rule) {
  if (rule == "always") return true;
  for (absl::string_view condition : absl::StrSplit(rule, "&&")) {
    if (!condition_holds(m, condition)) return false;
  }
  return true;
}

}  // namespace

MethodTraits method_traits(const aln::v1::TrainerSpec& trainer) {
  MethodTraits out;
  const FieldDescriptor* field = trainer.GetReflection()->GetOneofFieldDescriptor(trainer, &method_oneof());
  if (field == nullptr) return out;
  out.name = field->name();
  const Message& options = trainer.GetReflection()->GetMessage(trainer, field);
  const aln::v1::MethodTraits& declared = field->message_type()->options().GetExtension(aln::v1::method);
  out.generates = declared.generates();
  out.pipeline = declared.pipeline();
  for (const std::string& rule : declared.reference_ranks_when()) {
    out.reference_ranks = out.reference_ranks || rule_holds(options, rule);
  }
  for (const std::string& rule : declared.samples_in_steps_when()) {
    out.samples_in_steps = out.samples_in_steps || rule_holds(options, rule);
  }
  return out;
}

std::vector<std::string> method_names(bool pipeline_only) {
  std::vector<std::string> out;
  const auto& oneof = method_oneof();
  for (int i = 0; i < oneof.field_count(); ++i) {
    const FieldDescriptor* f = oneof.field(i);
    if (pipeline_only && !f->message_type()->options().GetExtension(aln::v1::method).pipeline()) continue;
    out.push_back(f->name());
  }
  return out;
}

}  // namespace aln::config
