#include "core/tokenizer/chat_format.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace aln::tokenizer {

absl::StatusOr<ChatFormat> chat_format_from_name(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(std::string(name));
  if (n == "hh") return ChatFormat::kHH;
  if (n == "chatml") return ChatFormat::kChatML;
  if (n == "llama3" || n == "llama-3") return ChatFormat::kLlama3;
  return absl::InvalidArgumentError(absl::StrCat("unknown chat format '", std::string(name), "' (expected hh, chatml or llama3)"));
}

std::string_view chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kHH:
      return "hh";
    case ChatFormat::kChatML:
      return "chatml";
    case ChatFormat::kLlama3:
      return "llama3";
  }
  return "?";
}

std::string hh_turn_text(std::string_view text) {
  const size_t start = text.find_first_not_of(' ');
  if (start == std::string_view::npos) return std::string();
  return " " + std::string(text.substr(start));
}

std::string render_chat(std::span<const ChatMessage> messages, ChatFormat format, GenerationPrompt generation_prompt) {
  std::string out;
  const bool gen = generation_prompt == GenerationPrompt::kYes;
  switch (format) {
    case ChatFormat::kHH:
      for (const ChatMessage& m : messages) {
        ALN_CHECK(m.role == "user" || m.role == "assistant", "HH chat format has no role '", m.role,
                  "' (only user and assistant)");
        absl::StrAppend(&out, m.role == "user" ? "\n\nHuman:" : "\n\nAssistant:", hh_turn_text(m.content));
      }
      if (gen) out += "\n\nAssistant:";
      break;
    case ChatFormat::kChatML:
      for (const ChatMessage& m : messages) {
        ALN_CHECK(!m.role.empty(), "chat message without a role");
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (gen) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::kLlama3:
      out = "<|begin_of_text|>";
      for (const ChatMessage& m : messages) {
        ALN_CHECK(!m.role.empty(), "chat message without a role");
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", m.content, "<|eot_id|>");
      }
      if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
  }
  return out;
}

}  // namespace aln::tokenizer
