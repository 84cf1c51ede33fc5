#include "trainers/engine/text_encoder.h"

#include "absl/strings/str_cat.h"
#include "core/tokenizer/chat_format.h"
#include "core/tokenizer/tokenizer.h"

namespace aln::engine {
namespace {

class BpeTextEncoder final : public TextEncoder {
 public:
  BpeTextEncoder(tokenizer::Tokenizer tok, tokenizer::ChatFormat format) : tok_(std::move(tok)), format_(format) {
    // The end-of-response marker of the chat format, else the tokenizer's end-of-text token.
    const char* candidates[] = {format == tokenizer::ChatFormat::kChatML   ? "<|im_end|>"
                                : format == tokenizer::ChatFormat::kLlama3 ? "<|eot_id|>"
                                                                           : "<|endoftext|>",
                                "<|endoftext|>", "</s>", "<|end_of_text|>"};
    for (const char* c : candidates) {
      if (auto id = tok_.token_to_id(c)) {
        eos_text_ = c;
        eos_id_ = *id;
        break;
      }
    }
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    // Chat-formatted text carries its own special tokens; no template tokens are added.
    const auto ids = tok_.encode(text, tokenizer::AddSpecialTokens::kNo);
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int32_t> narrow(ids.begin(), ids.end());
    return tok_.decode(narrow, tokenizer::SkipSpecialTokens::kYes);
  }
  int64_t eos_id() const override { return eos_id_; }
  int64_t pad_id() const override { return eos_id_ >= 0 ? eos_id_ : 0; }
  int64_t vocab_size() const override { return tok_.vocab_size(); }
  std::string render_prompt(const std::vector<data::Message>& messages) const override {
    std::vector<tokenizer::ChatMessage> chat;
    for (const auto& m : messages) chat.push_back({m.role, m.content});
    return tokenizer::render_chat(chat, format_, tokenizer::GenerationPrompt::kYes);
  }
  std::string end_of_response() const override { return eos_text_; }
  std::vector<int64_t> encode_response(const std::string& text, ResponseText form) const override {
    const bool hh = format_ == tokenizer::ChatFormat::kHH && form == ResponseText::kChatFormat;
    std::vector<int64_t> ids = encode(hh ? tokenizer::hh_turn_text(text) : text);
    if (eos_id_ >= 0) ids.push_back(eos_id_);
    return ids;
  }
  std::vector<int64_t> add_special_tokens(const std::vector<std::string>& tokens) override {
    const auto ids = tok_.add_special_tokens(tokens);
    return {ids.begin(), ids.end()};
  }

 private:
  tokenizer::Tokenizer tok_;
  tokenizer::ChatFormat format_;
  std::string eos_text_;
  int64_t eos_id_ = -1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TextEncoder>> load_text_encoder(const std::string& tokenizer_path,
                                                               aln::v1::ChatFormat format) {
  if (tokenizer_path.empty()) {
    return absl::InvalidArgumentError("model.tokenizer: missing; give the path of a tokenizer.json");
  }
  auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
  if (!tok.ok()) return tok.status();
  const tokenizer::ChatFormat chat = format == aln::v1::CHATML   ? tokenizer::ChatFormat::kChatML
                                     : format == aln::v1::LLAMA3 ? tokenizer::ChatFormat::kLlama3
                                                                 : tokenizer::ChatFormat::kHH;
  return std::unique_ptr<TextEncoder>(new BpeTextEncoder(std::move(*tok), chat));
}

}  // namespace aln::engine
