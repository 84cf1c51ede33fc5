// What the engine feeds the model for each record kind (issue 25): HH-RLHF dialogues and the same
// conversations given as messages or plain prompts become the same token ids in the hh chat format
// (one space after "Assistant:"), and the GPT-2 tokenizer's end-of-text flags do not change Aln's ids.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/data/readers.h"
#include "nlohmann/json.hpp"
#include "trainers/engine/examples.h"
#include "trainers/engine/text_encoder.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string repo(const std::string& rel) {
  const char* root = std::getenv("ALN_SOURCE_DIR");
  return std::string(root == nullptr ? "." : root) + "/" + rel;
}

const std::string kHhFile = "examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz";
const std::string kGpt2 = "examples/data/tokenizers/gpt2/tokenizer.json";

std::unique_ptr<TextEncoder> encoder(const std::string& tokenizer) {
  auto enc = load_text_encoder(tokenizer, aln::v1::HH);
  if (!enc.ok()) ADD_FAILURE() << enc.status();
  return enc.ok() ? std::move(*enc) : nullptr;
}

// "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:" -> user a, assistant b, user c; false when
// a turn does not begin with exactly one space, which messages cannot say.
bool hh_turns(const std::string& prompt, std::vector<json>* messages) {
  static const std::string kHuman = "\n\nHuman:", kAssistant = "\n\nAssistant:";
  auto next_marker = [&](size_t from) { return std::min(prompt.find(kHuman, from), prompt.find(kAssistant, from)); };
  for (size_t at = next_marker(0); at != std::string::npos;) {
    const bool user = prompt.compare(at, kHuman.size(), kHuman) == 0;
    const size_t begin = at + (user ? kHuman : kAssistant).size();
    const size_t end = next_marker(begin);
    const std::string text = prompt.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    at = end;
    if (!user && text.empty() && end == std::string::npos) break;  // the generation prompt at the end
    if (text.size() < 2 || text[0] != ' ' || text[1] == ' ') return false;
    messages->push_back({{"role", user ? "user" : "assistant"}, {"content", text.substr(1)}});
  }
  return true;
}

struct Rewritten {
  int hh_records = 0;
  int single_turn = 0;
};

// Writes the HH file's usable dialogues three ways: as HH dialogues, as conversational preference
// records (messages, responses without their leading space, as TRL-style data have them), and the
// single-turn ones also as plain-text prompts (half of the responses keep a leading space, as about a
// third of XSTest's do).
Rewritten rewrite_hh(const fs::path& dir) {
  data::ReadOptions options;
  options.format = aln::v1::HH_RLHF;
  options.bad_records = aln::v1::SKIP;
  data::ReadReport report;
  auto pairs = data::read_preferences(repo(kHhFile), options, &report);
  EXPECT_TRUE(pairs.ok()) << pairs.status();
  std::ofstream hh(dir / "hh.jsonl"), conv(dir / "messages.jsonl"), hh1(dir / "hh_single.jsonl"),
      plain(dir / "plain.jsonl");
  Rewritten n;
  for (const auto& p : *pairs) {
    std::vector<json> turns;
    if (!hh_turns(p.prompt, &turns) || p.chosen.size() < 2 || p.rejected.size() < 2 || p.chosen[1] == ' ' ||
        p.rejected[1] == ' ') {
      continue;
    }
    const std::string chosen = p.chosen.substr(1), rejected = p.rejected.substr(1);
    hh << json{{"chosen", p.prompt + p.chosen}, {"rejected", p.prompt + p.rejected}}.dump() << "\n";
    conv << json{{"prompt", turns},
                 {"chosen", {{{"role", "assistant"}, {"content", chosen}}}},
                 {"rejected", {{{"role", "assistant"}, {"content", rejected}}}}}
                .dump()
         << "\n";
    ++n.hh_records;
    if (turns.size() == 1) {
      const bool keep_space = n.single_turn % 2 == 0;
      hh1 << json{{"chosen", p.prompt + p.chosen}, {"rejected", p.prompt + p.rejected}}.dump() << "\n";
      plain << json{{"prompt", turns[0]["content"]},
                    {"chosen", keep_space ? p.chosen : chosen},
                    {"rejected", keep_space ? p.rejected : rejected}}
                   .dump()
            << "\n";
      ++n.single_turn;
    }
  }
  return n;
}

aln::v1::StageSpec stage_reading(const fs::path& file, aln::v1::DataFormat format) {
  aln::v1::StageSpec stage;
  stage.mutable_trainer()->mutable_dpo();
  auto* source = stage.mutable_data()->add_train();
  source->set_path(file.string());
  source->set_format(format);
  stage.mutable_data()->set_eval_fraction(0);
  stage.mutable_data()->set_max_prompt_length(100000);
  stage.mutable_data()->set_max_response_length(100000);
  stage.mutable_data()->set_truncation(aln::v1::KEEP_END);
  stage.mutable_data()->set_bad_records(aln::v1::FAIL);
  return stage;
}

// Every example's ids, in the order build_stage_data gives them.
std::vector<std::vector<int64_t>> stage_ids(const fs::path& file, aln::v1::DataFormat format,
                                            const TextEncoder& enc) {
  auto data = build_stage_data(stage_reading(file, format), trainers::RecordKind::kPreferencePairs, enc, 7);
  EXPECT_TRUE(data.ok()) << data.status();
  std::vector<std::vector<int64_t>> out;
  if (!data.ok()) return out;
  for (const auto& e : data->train) {
    out.push_back(e.prompt);
    out.push_back(e.chosen);
    out.push_back(e.rejected);
  }
  return out;
}

class TextEncoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("aln_text_encoder_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(TextEncoderTest, EveryRecordKindRendersLikeTheHhData) {
  const Rewritten n = rewrite_hh(dir_);
  // 1,312 dialogues: 4 end in an empty response, 1 has a response with two spaces after "Assistant:".
  EXPECT_EQ(n.hh_records, 1307);
  EXPECT_EQ(n.single_turn, 387);
  auto enc = encoder(repo(kGpt2));
  ASSERT_NE(enc, nullptr);
  const auto hh = stage_ids(dir_ / "hh.jsonl", aln::v1::HH_RLHF, *enc);
  ASSERT_EQ(hh.size(), 3u * 1307);
  // Conversations as messages, responses without the space: the same ids as the HH text.
  EXPECT_TRUE(hh == stage_ids(dir_ / "messages.jsonl", aln::v1::PREFERENCE, *enc));
  // Plain-text prompts, responses with and without a leading space of their own: the same ids too.
  const auto plain = stage_ids(dir_ / "plain.jsonl", aln::v1::PREFERENCE, *enc);
  ASSERT_EQ(plain.size(), 3u * 387);
  EXPECT_TRUE(stage_ids(dir_ / "hh_single.jsonl", aln::v1::HH_RLHF, *enc) == plain);
  // The text itself: "...\n\nAssistant:" then " Sure" (GPT-2 id 10889, "ĠSure"), never "Sure" glued on.
  EXPECT_EQ(enc->render_prompt({{"user", "Hi"}}), "\n\nHuman: Hi\n\nAssistant:");
  EXPECT_EQ(enc->encode_response("Sure"), enc->encode_response(" Sure"));
  EXPECT_EQ(enc->encode_response("Sure"), (std::vector<int64_t>{10889, 50256}));
  EXPECT_EQ(enc->encode_response("Sure", ResponseText::kVerbatim), (std::vector<int64_t>{19457, 50256}));
}

TEST_F(TextEncoderTest, EndOfTextFlagsDoNotChangeAlnsIds) {
  // The GPT-2 tokenizer.json as first shipped: <|endoftext|> single_word + lstrip + rstrip.
  std::ifstream in(repo(kGpt2));
  json j = json::parse(in);
  for (auto& t : j["added_tokens"]) t["single_word"] = t["lstrip"] = t["rstrip"] = true;
  std::ofstream(dir_ / "old_tokenizer.json") << j.dump();
  auto shipped = encoder(repo(kGpt2));
  auto old = encoder((dir_ / "old_tokenizer.json").string());
  ASSERT_TRUE(shipped && old);
  // Aln's own path (render the prompt, encode it, append the end-of-text id to each response) gives
  // the same ids with either file, over every HH and XSTest record the quickstart reads.
  for (const auto& [file, format] : {std::pair{repo(kHhFile), aln::v1::HH_RLHF},
                                     std::pair{repo("examples/data/xstest/xstest_pairs_shared.jsonl"),
                                               aln::v1::SAFERLHF}}) {
    aln::v1::StageSpec stage = stage_reading(file, format);
    stage.mutable_data()->set_bad_records(aln::v1::SKIP);
    auto a = build_stage_data(stage, trainers::RecordKind::kPreferencePairs, *shipped, 3);
    auto b = build_stage_data(stage, trainers::RecordKind::kPreferencePairs, *old, 3);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->train.size(), b->train.size());
    EXPECT_GT(a->train.size(), 400u);
    for (size_t i = 0; i < a->train.size(); ++i) {
      ASSERT_EQ(a->train[i].prompt, b->train[i].prompt) << file << " example " << i;
      ASSERT_EQ(a->train[i].chosen, b->train[i].chosen) << file << " example " << i;
      ASSERT_EQ(a->train[i].rejected, b->train[i].rejected) << file << " example " << i;
    }
  }
  // The end-of-text appended as text (what TRL does) is where the files differ: after a letter the old
  // flags never match the token (and it would swallow the newline after it).
  EXPECT_EQ(shipped->encode("Bye.<|endoftext|>"), (std::vector<int64_t>{3886, 68, 13, 50256}));
  EXPECT_NE(old->encode("Bye<|endoftext|>"), shipped->encode("Bye<|endoftext|>"));
}

}  // namespace
}  // namespace aln::engine
