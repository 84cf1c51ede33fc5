#pragma once
// What the engine needs from a tokenizer: text -> ids, plus the special ids used for padding and
// end of sequence. Implemented over core/tokenizer (byte-level BPE from tokenizer.json).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aln/v1/job.pb.h"
#include "core/data/records.h"

namespace aln::engine {

// Whether a response's text is taken as the data wrote it (HH-RLHF dialogues, whose responses already
// begin with the format's space) or is put into the job's chat format first.
enum class ResponseText { kChatFormat, kVerbatim };

class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t eos_id() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t vocab_size() const = 0;
  // The prompt text for a conversation in the job's chat format, ending where the response starts.
  virtual std::string render_prompt(const std::vector<data::Message>& messages) const = 0;
  // The end-of-turn marker of a response (as text, for messages).
  virtual std::string end_of_response() const = 0;
  // A response's ids followed by the end-of-turn token id. Appended as an id, not as text, so the end
  // never depends on how a tokenizer.json declares the token (a single_word <|endoftext|> after a
  // letter would tokenise into its literal characters). In the HH format the text first gets the
  // one space after "Assistant:" (tokenizer::hh_turn_text) unless it is kVerbatim.
  virtual std::vector<int64_t> encode_response(const std::string& text,
                                               ResponseText form = ResponseText::kChatFormat) const = 0;
  // Adds special tokens (matched whole in text, never split) after the current vocabulary; tokens
  // already known keep their ids. Returns the ids in order.
  virtual std::vector<int64_t> add_special_tokens(const std::vector<std::string>& tokens) = 0;
};

absl::StatusOr<std::unique_ptr<TextEncoder>> load_text_encoder(const std::string& tokenizer_path,
                                                               aln::v1::ChatFormat format);

}  // namespace aln::engine
