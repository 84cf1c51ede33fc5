// `aln generate --model DIR [--tokenizer FILE] (--prompt TEXT | --prompts FILE) [options]`:
// batched sampling with the KV cache; prints one JSON line per prompt (text, token ids, log-probs).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/data/readers.h"
#include "core/model/generation.h"
#include "core/model/hf_checkpoint.h"
#include "core/tokenizer/chat_format.h"
#include "core/tokenizer/tokenizer.h"
#include "trainers/cli/commands.h"

namespace aln::cli {
namespace {

constexpr const char* kUsage =
    "usage: aln generate --model DIR (--prompt TEXT ... | --prompts FILE) [--tokenizer FILE]\n"
    "                    [--chat hh|chatml|llama3|none] [--max-new-tokens N] [--temperature T] [--top-k K]\n"
    "                    [--top-p P] [--seed S] [--batch-size B] [--stop STRING ...] [--threads N]\n"
    "  Greedy unless --temperature is given. Output: one JSON line per prompt.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "aln generate: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

int run_generate(const Args& args) {
  std::string model_dir, tokenizer_path, prompts_file, chat = "hh";
  std::vector<std::string> prompts, stops;
  model::GenerationOptions options;
  options.max_new_tokens = 64;
  int64_t batch_size = 8;
  int threads = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    };
    std::string v;
    if (a == "--model" && value(&model_dir)) continue;
    if (a == "--tokenizer" && value(&tokenizer_path)) continue;
    if (a == "--prompt" && value(&v)) { prompts.push_back(v); continue; }
    if (a == "--prompts" && value(&prompts_file)) continue;
    if (a == "--chat" && value(&chat)) continue;
    if (a == "--stop" && value(&v)) { stops.push_back(v); continue; }
    if (a == "--max-new-tokens" && value(&v) && absl::SimpleAtoi(v, &options.max_new_tokens) && options.max_new_tokens >= 0) continue;
    if (a == "--temperature" && value(&v) && absl::SimpleAtod(v, &options.temperature) && options.temperature > 0) {
      options.decoding = model::Decoding::kSample;
      continue;
    }
    if (a == "--top-k" && value(&v) && absl::SimpleAtoi(v, &options.top_k) && options.top_k >= 0) continue;
    if (a == "--top-p" && value(&v) && absl::SimpleAtod(v, &options.top_p) && options.top_p > 0 && options.top_p <= 1) continue;
    if (a == "--seed" && value(&v) && absl::SimpleAtoi(v, &options.seed)) continue;
    if (a == "--batch-size" && value(&v) && absl::SimpleAtoi(v, &batch_size) && batch_size > 0) continue;
    if (a == "--threads" && value(&v) && absl::SimpleAtoi(v, &threads) && threads >= 0) continue;
    return usage_error(absl::StrCat("bad or incomplete option '", a, "'"));
  }
  if (model_dir.empty()) return usage_error("--model is required");
  if (prompts.empty() == prompts_file.empty()) return usage_error("give --prompt TEXT (repeatable) or --prompts FILE");
  if (threads > 0) at::set_num_threads(threads);
  if (!prompts_file.empty()) {
    auto records = data::read_prompts(prompts_file, data::ReadOptions{}, nullptr);
    if (!records.ok()) return usage_error(std::string(records.status().message()));
    for (const auto& r : *records) prompts.push_back(r.prompt);
  }
  if (tokenizer_path.empty()) tokenizer_path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
  if (!tok.ok()) return usage_error(absl::StrCat(tok.status().message(), " (pass --tokenizer FILE)"));
  auto model = model::load_hf_model(model_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "aln generate: %s\n", std::string(model.status().message()).c_str());
    return 2;
  }
  std::optional<tokenizer::ChatFormat> format;
  if (chat != "none") {
    auto f = tokenizer::chat_format_from_name(chat);
    if (!f.ok()) return usage_error(std::string(f.status().message()));
    format = *f;
  }
  const int64_t eos = model->config().eos_token_id;
  if (eos >= 0) options.stop_tokens.push_back(eos);
  options.pad_token_id = std::max<int64_t>(0, model->config().pad_token_id >= 0 ? model->config().pad_token_id : eos);
  at::NoGradGuard no_grad;
  for (size_t start = 0; start < prompts.size(); start += batch_size) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> encoded;
    int64_t longest = 1;
    for (size_t i = start; i < end; ++i) {
      std::string text = prompts[i];
      if (format) {
        std::vector<tokenizer::ChatMessage> chat_messages{{"user", text}};
        text = tokenizer::render_chat(chat_messages, *format, tokenizer::GenerationPrompt::kYes);
      }
      encoded.push_back(tok->encode(text, format ? tokenizer::AddSpecialTokens::kNo : tokenizer::AddSpecialTokens::kYes));
      longest = std::max<int64_t>(longest, static_cast<int64_t>(encoded.back().size()));
    }
    // Left padding: generation appends on the right.
    const int64_t b = static_cast<int64_t>(encoded.size());
    at::Tensor ids = at::full({b, longest}, options.pad_token_id, at::kLong);
    at::Tensor mask = at::zeros({b, longest}, at::kLong);
    for (int64_t r = 0; r < b; ++r) {
      const int64_t off = longest - static_cast<int64_t>(encoded[r].size());
      for (size_t k = 0; k < encoded[r].size(); ++k) {
        ids[r][off + static_cast<int64_t>(k)] = encoded[r][k];
        mask[r][off + static_cast<int64_t>(k)] = 1;
      }
    }
    options.stop_condition = [&](int64_t, const std::vector<int64_t>& generated) {
      if (stops.empty()) return false;
      std::vector<int32_t> narrow(generated.begin(), generated.end());
      const std::string text = tok->decode(narrow, tokenizer::SkipSpecialTokens::kYes);
      for (const auto& s : stops) {
        if (text.find(s) != std::string::npos) return true;
      }
      return false;
    };
    model::GenerationOutput out = model::generate(*model, ids, mask, options);
    for (int64_t r = 0; r < b; ++r) {
      const int64_t n = out.lengths[r].item<int64_t>();
      std::vector<int32_t> gen;
      std::vector<double> lps;
      for (int64_t k = 0; k < n; ++k) {
        gen.push_back(static_cast<int32_t>(out.tokens[r][k].item<int64_t>()));
        lps.push_back(out.logprobs[r][k].item<double>());
      }
      std::string text = tok->decode(gen, tokenizer::SkipSpecialTokens::kYes);
      for (const auto& s : stops) {
        const auto cut = text.find(s);
        if (cut != std::string::npos) text = text.substr(0, cut);
      }
      nlohmann::json line = {{"prompt", prompts[start + r]}, {"completion", text}, {"token_ids", gen}, {"logprobs", lps}};
      std::printf("%s\n", line.dump().c_str());
    }
  }
  return 0;
}

}  // namespace aln::cli
