#include "trainers/engine/data_share.h"

#include <ATen/ATen.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "aln/v1/control.pb.h"
#include "core/status.h"
#include "distributed/control_channel.h"

namespace aln::engine {
namespace {

void to_message(const buffer::Example& e, aln::v1::ExampleData* m) {
  m->mutable_prompt()->Add(e.prompt.begin(), e.prompt.end());
  m->mutable_response()->Add(e.response.begin(), e.response.end());
  m->mutable_chosen()->Add(e.chosen.begin(), e.chosen.end());
  m->mutable_rejected()->Add(e.rejected.begin(), e.rejected.end());
  m->set_unsafe_chosen(e.unsafe_chosen);
  m->set_unsafe_rejected(e.unsafe_rejected);
  m->set_safer(e.safer);
  m->set_reference_chosen(e.reference_chosen);
  m->set_reference_rejected(e.reference_rejected);
  m->set_category(e.category);
  m->set_prompt_text(e.prompt_text);
  m->mutable_rejected_weights()->Add(e.rejected_weights.begin(), e.rejected_weights.end());
  for (const auto& s : e.rejected_spans) m->add_rejected_spans(s);
  m->set_source(e.source);
}

buffer::Example from_message(const aln::v1::ExampleData& m) {
  buffer::Example e;
  e.prompt.assign(m.prompt().begin(), m.prompt().end());
  e.response.assign(m.response().begin(), m.response().end());
  e.chosen.assign(m.chosen().begin(), m.chosen().end());
  e.rejected.assign(m.rejected().begin(), m.rejected().end());
  e.unsafe_chosen = m.unsafe_chosen();
  e.unsafe_rejected = m.unsafe_rejected();
  e.safer = m.safer();
  e.reference_chosen = m.reference_chosen();
  e.reference_rejected = m.reference_rejected();
  e.category = m.category();
  e.prompt_text = m.prompt_text();
  e.rejected_weights.assign(m.rejected_weights().begin(), m.rejected_weights().end());
  e.rejected_spans.assign(m.rejected_spans().begin(), m.rejected_spans().end());
  e.source = m.source();
  return e;
}

}  // namespace

aln::v1::StageExamples stage_message(absl::StatusOr<StageData>& data) {
  aln::v1::StageExamples message;
  if (!data.ok()) {
    message.set_error(std::string(data.status().message()));
    return message;
  }
  for (const auto& e : data->train) to_message(e, message.add_train());
  for (const auto& e : data->eval) to_message(e, message.add_eval());
  message.set_rows(data->rows);
  message.set_skipped(data->skipped);
  message.set_truncated(data->truncated);
  for (const auto& p : data->problems) message.add_problems(p);
  if (static_cast<int64_t>(message.ByteSizeLong()) > dist::kMaxFrameBytes) {
    const size_t size = message.ByteSizeLong();
    message.Clear();
    message.set_error(absl::StrCat("the stage's examples are ", size,
                                   " bytes, over the 2 GiB one message can carry; set parallel.data_reader: "
                                   "every_rank for this data"));
    data = absl::InvalidArgumentError(message.error());
  }
  return message;
}

absl::StatusOr<StageData> stage_from_message(const aln::v1::StageExamples& message, const std::string& reader) {
  if (!message.error().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(reader, " could not read the stage's data: ", message.error()));
  }
  StageData out;
  out.train.reserve(static_cast<size_t>(message.train_size()));
  for (const auto& m : message.train()) out.train.push_back(from_message(m));
  for (const auto& m : message.eval()) out.eval.push_back(from_message(m));
  out.rows = message.rows();
  out.skipped = message.skipped();
  out.truncated = message.truncated();
  out.problems.assign(message.problems().begin(), message.problems().end());
  return out;
}

void share_stage_data(dist::Communicator& comm, absl::StatusOr<StageData>& data, std::chrono::milliseconds timeout) {
  const bool root = comm.rank() == 0;
  std::string bytes;
  if (root) bytes = stage_message(data).SerializeAsString();
  absl::Status sent = dist::broadcast_frame(comm, 0, &bytes, timeout);
  if (!sent.ok()) {
    data = absl::Status(sent.code(), absl::StrCat("receiving the stage's examples from rank 0: ", sent.message()));
    return;
  }
  if (root) return;
  aln::v1::StageExamples message;
  if (!message.ParseFromString(bytes)) {
    data =
        absl::DataLossError(absl::StrCat("the stage's examples from rank 0 (", bytes.size(), " bytes) do not parse"));
    return;
  }
  data = stage_from_message(message, "rank 0");
}

}  // namespace aln::engine
