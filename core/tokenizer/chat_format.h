#pragma once
// Chat formats: render a conversation as the exact text a model was trained on.
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace aln::tokenizer {

enum class ChatFormat {
  kHH,      // Anthropic HH-RLHF: "\n\nHuman: {user}\n\nAssistant: {assistant}"
  kChatML,  // "<|im_start|>{role}\n{content}<|im_end|>\n" (Qwen and others)
  kLlama3,  // "<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
};

enum class GenerationPrompt { kNo, kYes };  // end with the opening of an assistant turn

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (HH knows only user and assistant)
  std::string content;
};

// "hh", "chatml", "llama3" (also "llama-3"); anything else is InvalidArgument.
absl::StatusOr<ChatFormat> chat_format_from_name(std::string_view name);
std::string_view chat_format_name(ChatFormat format);

// Renders the messages; throws aln::Error for a role the format cannot express. The HH generation
// prompt ends in "\n\nAssistant:" without the space, as the prompts in the HH-RLHF data do (the
// response text then starts with the space: see hh_turn_text). Every HH turn is written with
// exactly one space after "Human:"/"Assistant:". Llama 3 text already holds <|begin_of_text|>, so
// encode it with AddSpecialTokens::kNo.
std::string render_chat(std::span<const ChatMessage> messages, ChatFormat format,
                        GenerationPrompt generation_prompt = GenerationPrompt::kNo);

// The text of an HH turn as it follows "Human:" or "Assistant:": exactly one space, then the text
// without the spaces it began with (the HH-RLHF data's own convention, " There are..."). Applied to
// every response that follows an HH generation prompt, so records of every kind read alike: a
// response that began with a space of its own (as about a third of XSTest's do) and one that did not
// tokenise the same way. Empty text stays empty.
std::string hh_turn_text(std::string_view text);

}  // namespace aln::tokenizer
