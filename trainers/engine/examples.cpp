#include "trainers/engine/examples.h"

#include <random>

#include "absl/strings/str_cat.h"

namespace aln::engine {
namespace {

std::string prompt_text(const TextEncoder& encoder, const std::string& prompt,
                        const std::vector<data::Message>& messages, aln::v1::DataFormat format) {
  if (!messages.empty()) return encoder.render_prompt(messages);
  // HH dialogues are already in their format; plain prompts become one user turn.
  if (format == aln::v1::HH_RLHF) return prompt;
  return encoder.render_prompt({{"user", prompt}});
}

// HH dialogues carry their own text after "Assistant:" (kept as the data wrote it); responses of
// every other record kind are put into the chat format, so both read "Assistant: text".
ResponseText response_text(aln::v1::DataFormat format, const std::vector<data::Message>& messages) {
  return messages.empty() && format == aln::v1::HH_RLHF ? ResponseText::kVerbatim : ResponseText::kChatFormat;
}

}  // namespace

absl::StatusOr<StageData> build_stage_data(const aln::v1::StageSpec& stage, trainers::RecordKind kind,
                                           const TextEncoder& encoder, uint64_t seed) {
  StageData out;
  const auto& d = stage.data();
  const bool keep_start = d.truncation() == aln::v1::KEEP_START;
  std::vector<buffer::Example> all;
  std::vector<buffer::Example>* target = &all;
  auto add = [&](std::vector<int64_t> prompt, std::vector<int64_t> a, std::vector<int64_t> b, buffer::Example e) {
    const size_t before = prompt.size() + a.size() + b.size();
    buffer::truncate(&prompt, d.max_prompt_length(), &a, d.max_response_length(), keep_start);
    if (!b.empty()) {
      std::vector<int64_t> unused;
      buffer::truncate(&unused, 0, &b, d.max_response_length());
    }
    if (prompt.size() + a.size() + b.size() != before) ++out.truncated;
    e.prompt = std::move(prompt);
    if (kind == trainers::RecordKind::kSequences) {
      e.response = std::move(a);
    } else {
      e.chosen = std::move(a);
      e.rejected = std::move(b);
    }
    target->push_back(std::move(e));
  };
  auto read_sources = [&](const auto& sources) -> absl::Status {
    for (const auto& source : sources) {
      data::ReadOptions options;
      options.format = source.format();
      options.bad_records = d.bad_records();
      options.limit = source.limit();
      data::ReadReport report;
      if (kind == trainers::RecordKind::kSequences) {
        auto records = data::read_sft(source.path(), options, &report);
        if (!records.ok()) return records.status();
        for (const auto& r : *records) {
          buffer::Example e;
          e.source = absl::StrCat(r.origin.file, ":", r.origin.line);
          const aln::v1::DataFormat fmt =
              r.prompt_messages.empty() && r.prompt.rfind("\n\nHuman:", 0) == 0 ? aln::v1::HH_RLHF : source.format();
          add(encoder.encode(prompt_text(encoder, r.prompt, r.prompt_messages, fmt)),
              encoder.encode_response(r.response, response_text(fmt, r.prompt_messages)), {}, std::move(e));
        }
      } else if (kind == trainers::RecordKind::kPrompts) {
        auto records = data::read_prompts(source.path(), options, &report);
        if (!records.ok()) return records.status();
        for (const auto& r : *records) {
          buffer::Example e;
          e.source = absl::StrCat(r.origin.file, ":", r.origin.line);
          e.category = r.category;
          e.prompt_text = r.prompt;
          const aln::v1::DataFormat fmt = r.prompt.rfind("\n\nHuman:", 0) == 0 ? aln::v1::HH_RLHF : source.format();
          add(encoder.encode(prompt_text(encoder, r.prompt, {}, fmt)), {}, {}, std::move(e));
        }
      } else {
        auto records = data::read_preferences(source.path(), options, &report);
        if (!records.ok()) return records.status();
        for (const auto& p : *records) {
          buffer::Example e;
          e.source = absl::StrCat(p.origin.file, ":", p.origin.line);
          e.unsafe_chosen = p.unsafe_chosen.value_or(-1);
          e.unsafe_rejected = p.unsafe_rejected.value_or(-1);
          e.safer = p.safer_index.value_or(-1);
          e.rejected_spans = p.rejected_spans;
          if (p.prompt_messages.empty()) e.prompt_text = p.prompt;
          const aln::v1::DataFormat fmt = p.prompt.rfind("\n\nHuman:", 0) == 0 ? aln::v1::HH_RLHF : source.format();
          const ResponseText form = response_text(fmt, p.prompt_messages);
          add(encoder.encode(prompt_text(encoder, p.prompt, p.prompt_messages, fmt)),
              encoder.encode_response(p.chosen, form), encoder.encode_response(p.rejected, form), std::move(e));
        }
      }
      out.rows += report.rows;
      out.skipped += report.skipped;
      for (auto& problem : report.problems) {
        if (out.problems.size() < 20) out.problems.push_back(problem);
      }
    }
    return absl::OkStatus();
  };
  absl::Status read = read_sources(d.train());
  if (!read.ok()) return read;
  // Explicit eval sources replace the held-out fraction of train.
  target = &out.eval;
  read = read_sources(d.eval());
  if (!read.ok()) return read;
  if (all.empty()) return absl::InvalidArgumentError("the stage has no usable training examples");
  // Deterministic hold-out: a seeded permutation, the first eval_fraction of it is the eval set.
  std::vector<size_t> idx(all.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::mt19937_64 rng(seed ^ 0x5eed5eedULL);
  for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng() % i]);
  const size_t n_eval =
      d.eval_size() > 0 ? 0 : static_cast<size_t>(d.eval_fraction() * static_cast<double>(all.size()));
  for (size_t k = 0; k < idx.size(); ++k) (k < n_eval ? out.eval : out.train).push_back(std::move(all[idx[k]]));
  return out;
}

}  // namespace aln::engine
