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
#include "trainers/controllable/control_tokens.h"
#include "trainers/controllable/levels.h"
#include "trainers/rollouts/rollout.h"

namespace aln::cli {
namespace {

constexpr const char* kUsage =
    "usage: aln generate --model DIR (--prompt TEXT ... | --prompts FILE) [--tokenizer FILE]\n"
    "                    [--chat hh|chatml|llama3|none] [--max-new-tokens N] [--temperature T] [--top-k K]\n"
    "                    [--top-p P] [--seed S] [--batch-size B] [--stop STRING ...] [--threads N]\n"
    "                    [--control H,S [--levels L] [--control-mode tokens|prompt|rerank] [--candidates N]\n"
    "                     [--helpful-model DIR | --helpful-rule R] [--harmless-model DIR | --harmless-rule R]]\n"
    "  Greedy unless --temperature is given. Output: one JSON line per prompt.\n"
    "  --control asks for helpfulness level H and harmlessness level S (0..L-1): `tokens` puts the control\n"
    "  tokens of a model trained with the controllable method before the prompt; `prompt` states the levels\n"
    "  in words (no training needed); `rerank` samples N candidates and keeps the one whose levels, measured\n"
    "  by the two scorers (reward-model directories or rules: length, brevity, refusal) and binned by\n"
    "  quantile among the candidates, are closest to the request.\n";

// A rerank scorer: a reward model (score head) or a rule on the completion.
struct Scorer {
  std::optional<aln::model::DecoderModel> model;
  aln::v1::RewardRule rule = aln::v1::REWARD_RULE_UNSPECIFIED;
};

bool parse_rule(const std::string& name, aln::v1::RewardRule* rule) {
  if (name == "length")
    *rule = aln::v1::LENGTH;
  else if (name == "brevity")
    *rule = aln::v1::BREVITY;
  else if (name == "refusal")
    *rule = aln::v1::REFUSAL;
  else
    return false;
  return true;
}

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
  std::string control, mode = "tokens", helpful_model, harmless_model;
  int levels = 5;
  int64_t candidates = 4;
  Scorer scorers[2];
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--model" && value(&model_dir)) continue;
    if (a == "--tokenizer" && value(&tokenizer_path)) continue;
    if (a == "--prompt" && value(&v)) {
      prompts.push_back(v);
      continue;
    }
    if (a == "--prompts" && value(&prompts_file)) continue;
    if (a == "--chat" && value(&chat)) continue;
    if (a == "--stop" && value(&v)) {
      stops.push_back(v);
      continue;
    }
    if (a == "--max-new-tokens" && value(&v) && absl::SimpleAtoi(v, &options.max_new_tokens) &&
        options.max_new_tokens >= 0)
      continue;
    if (a == "--temperature" && value(&v) && absl::SimpleAtod(v, &options.temperature) && options.temperature > 0) {
      options.decoding = model::Decoding::kSample;
      continue;
    }
    if (a == "--top-k" && value(&v) && absl::SimpleAtoi(v, &options.top_k) && options.top_k >= 0) continue;
    if (a == "--top-p" && value(&v) && absl::SimpleAtod(v, &options.top_p) && options.top_p > 0 && options.top_p <= 1)
      continue;
    if (a == "--seed" && value(&v) && absl::SimpleAtoi(v, &options.seed)) continue;
    if (a == "--batch-size" && value(&v) && absl::SimpleAtoi(v, &batch_size) && batch_size > 0) continue;
    if (a == "--threads" && value(&v) && absl::SimpleAtoi(v, &threads) && threads >= 0) continue;
    if (a == "--control" && value(&control)) continue;
    if (a == "--levels" && value(&v) && absl::SimpleAtoi(v, &levels) && levels >= 2) continue;
    if (a == "--control-mode" && value(&mode) && (mode == "tokens" || mode == "prompt" || mode == "rerank")) continue;
    if (a == "--candidates" && value(&v) && absl::SimpleAtoi(v, &candidates) && candidates >= 2) continue;
    if (a == "--helpful-model" && value(&helpful_model)) continue;
    if (a == "--harmless-model" && value(&harmless_model)) continue;
    if (a == "--helpful-rule" && value(&v) && parse_rule(v, &scorers[0].rule)) continue;
    if (a == "--harmless-rule" && value(&v) && parse_rule(v, &scorers[1].rule)) continue;
    return usage_error(absl::StrCat("bad or incomplete option '", a, "'"));
  }
  if (model_dir.empty()) return usage_error("--model is required");
  if (prompts.empty() == prompts_file.empty()) return usage_error("give --prompt TEXT (repeatable) or --prompts FILE");
  if (threads > 0) at::set_num_threads(threads);
  int want[2] = {-1, -1};
  if (!control.empty()) {
    const auto comma = control.find(',');
    if (comma == std::string::npos || !absl::SimpleAtoi(control.substr(0, comma), &want[0]) ||
        !absl::SimpleAtoi(control.substr(comma + 1), &want[1]) || want[0] < 0 || want[1] < 0 || want[0] >= levels ||
        want[1] >= levels) {
      return usage_error(absl::StrCat("--control wants H,S with levels in 0..", levels - 1, " (got '", control, "')"));
    }
  }
  const bool rerank = !control.empty() && mode == "rerank";
  if (rerank) {
    const std::string* dirs[2] = {&helpful_model, &harmless_model};
    for (int a = 0; a < 2; ++a) {
      if (!dirs[a]->empty()) {
        auto m = model::load_hf_model(*dirs[a]);
        if (!m.ok()) return usage_error(std::string(m.status().message()));
        scorers[a].model = std::move(*m);
      } else if (scorers[a].rule == aln::v1::REWARD_RULE_UNSPECIFIED) {
        return usage_error(absl::StrCat("--control-mode rerank needs a ", a == 0 ? "helpful" : "harmless",
                                        " scorer: --", a == 0 ? "helpful" : "harmless", "-model DIR or -rule R"));
      }
    }
    if (options.decoding != model::Decoding::kSample) {
      options.decoding = model::Decoding::kSample;  // candidates must differ
      options.temperature = 1.0;
    }
  }
  if (!prompts_file.empty()) {
    auto records = data::read_prompts(prompts_file, data::ReadOptions{}, nullptr);
    if (!records.ok()) return usage_error(std::string(records.status().message()));
    for (const auto& r : *records) prompts.push_back(r.prompt);
  }
  if (tokenizer_path.empty()) tokenizer_path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
  if (!tok.ok()) {
    // A bad file, not bad usage: one line, like every other input error.
    std::fprintf(stderr, "aln generate: %s%s\n", std::string(tok.status().message()).c_str(),
                 tok.status().code() == absl::StatusCode::kNotFound ? " (pass --tokenizer FILE)" : "");
    return 2;
  }
  if (!control.empty() && mode == "tokens")
    tok->add_special_tokens(trainers::controllable::control_token_names(levels));
  auto model = model::load_hf_model(model_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "aln generate: %s\n", std::string(model.status().message()).c_str());
    return 2;
  }
  if (model->config().vocab_size < tok->vocab_size()) {
    std::fprintf(stderr,
                 "aln generate: the model has %lld token rows but the tokenizer with the control tokens needs %d; "
                 "--control-mode tokens needs a model trained by the controllable method with --levels %d (or use "
                 "--control-mode prompt or rerank)\n",
                 static_cast<long long>(model->config().vocab_size), tok->vocab_size(), levels);
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
      if (!control.empty() && mode == "tokens") text = trainers::controllable::control_prefix(want[0], want[1]) + text;
      if (!control.empty() && mode == "prompt") {
        // The training-free prompt mode [D]: the levels in words before the request.
        text = absl::StrCat("(Answer with helpfulness level ", want[0], " and harmlessness level ", want[1],
                            " on a scale from 0 to ", levels - 1, ".) ", text);
      }
      const int64_t copies = rerank ? candidates : 1;
      for (int64_t c = 1; c < copies; ++c) encoded.push_back({});  // placeholders, filled below
      if (format) {
        std::vector<tokenizer::ChatMessage> chat_messages{{"user", text}};
        text = tokenizer::render_chat(chat_messages, *format, tokenizer::GenerationPrompt::kYes);
      }
      encoded.push_back(
          tok->encode(text, format ? tokenizer::AddSpecialTokens::kNo : tokenizer::AddSpecialTokens::kYes));
      for (int64_t c = 1; c < copies; ++c) encoded[encoded.size() - 1 - static_cast<size_t>(c)] = encoded.back();
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
    const int64_t copies = rerank ? candidates : 1;
    std::vector<int64_t> picked;  // the row printed for each prompt
    std::vector<std::array<double, 2>> picked_scores;
    for (int64_t p = 0; p < b / copies; ++p) {
      if (!rerank) {
        picked.push_back(p);
        continue;
      }
      // Score every candidate, bin the scores by quantile among the candidates, keep the closest.
      std::vector<double> sc[2];
      for (int64_t c = 0; c < copies; ++c) {
        const int64_t r = p * copies + c;
        const int64_t n = out.lengths[r].item<int64_t>();
        for (int a = 0; a < 2; ++a) {
          if (scorers[a].model) {
            at::Tensor seq = at::cat({ids[r], out.tokens[r].narrow(0, 0, n)}).unsqueeze(0);
            at::Tensor m = at::cat({mask[r], at::ones({n}, at::kLong)}).unsqueeze(0);
            sc[a].push_back(scorers[a].model->scores(seq, m)[0][0].item<double>());
          } else if (scorers[a].rule == aln::v1::REFUSAL) {
            std::vector<int32_t> gen;
            for (int64_t k = 0; k < n; ++k) gen.push_back(static_cast<int32_t>(out.tokens[r][k].item<int64_t>()));
            sc[a].push_back(trainers::looks_like_refusal(tok->decode(gen, tokenizer::SkipSpecialTokens::kYes)) ? 1 : 0);
          } else {
            const double share =
                static_cast<double>(n) / static_cast<double>(std::max<int64_t>(1, options.max_new_tokens));
            sc[a].push_back(scorers[a].rule == aln::v1::LENGTH ? share : 1 - share);
          }
        }
      }
      trainers::controllable::LevelScale scale[2] = {{sc[0], levels}, {sc[1], levels}};
      int64_t best = 0;
      int best_d = 1 << 30;
      for (int64_t c = 0; c < copies; ++c) {
        const int d = std::abs(scale[0].level(sc[0][static_cast<size_t>(c)]) - want[0]) +
                      std::abs(scale[1].level(sc[1][static_cast<size_t>(c)]) - want[1]);
        if (d < best_d) {
          best_d = d;
          best = c;
        }
      }
      picked.push_back(p * copies + best);
      picked_scores.push_back({sc[0][static_cast<size_t>(best)], sc[1][static_cast<size_t>(best)]});
    }
    for (size_t q = 0; q < picked.size(); ++q) {
      const int64_t r = picked[q];
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
      nlohmann::json line = {
          {"prompt", prompts[start + q]}, {"completion", text}, {"token_ids", gen}, {"logprobs", lps}};
      if (!control.empty()) line["control"] = {{"helpful", want[0]}, {"harmless", want[1]}, {"mode", mode}};
      if (rerank) line["scores"] = {{"helpful", picked_scores[q][0]}, {"harmless", picked_scores[q][1]}};
      std::printf("%s\n", line.dump().c_str());
    }
  }
  return 0;
}

}  // namespace aln::cli
