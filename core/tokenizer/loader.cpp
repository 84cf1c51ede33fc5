// Parsing and validation of tokenizer.json. Every error names the file and the JSON path, so a
// broken or unsupported tokenizer is diagnosed at load time, not by odd ids later.
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_guard.h"
#include "core/status.h"
#include "core/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace aln::tokenizer {
namespace {

using nlohmann::json;

class Loader {
 public:
  explicit Loader(std::string_view origin) : origin_(origin) {}

  absl::Status error(absl::string_view path, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": ", path, ": ", what));
  }
  absl::Status unsupported(absl::string_view path, absl::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(origin_, ": ", path, ": unsupported ", what));
  }

  // Optional boolean field (absent or null gives `fallback`).
  absl::StatusOr<bool> get_bool(const json& obj, const std::string& path, const char* key, bool fallback) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return error(absl::StrCat(path, ".", key), "expected a boolean");
    return it->get<bool>();
  }

  absl::StatusOr<std::string> get_type(const json& obj, const std::string& path) const {
    if (!obj.is_object()) return error(path, "expected an object");
    const auto it = obj.find("type");
    if (it == obj.end() || !it->is_string()) return error(absl::StrCat(path, ".type"), "missing or not a string");
    return it->get<std::string>();
  }

  absl::Status load_model(const json& root, TokenizerConfig& config) const {
    const auto m = root.find("model");
    if (m == root.end() || !m->is_object()) return error("$.model", "missing or not an object");
    if (const auto t = m->find("type"); t != m->end() && *t != "BPE") {
      return unsupported("$.model.type", absl::StrCat("model type ", json_excerpt(*t), " (only BPE)"));
    }
    const auto v = m->find("vocab");
    if (v == m->end() || !v->is_object()) return error("$.model.vocab", "missing or not an object");
    std::unordered_map<std::string, int32_t> vocab;
    vocab.reserve(v->size());
    for (const auto& [token, id] : v->items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return error(absl::StrCat("$.model.vocab[", json_excerpt(json(token)), "]"),
                     "id is not a non-negative integer");
      }
      vocab.emplace(token, id.get<int32_t>());
    }
    if (const auto d = m->find("dropout"); d != m->end() && !d->is_null()) {
      return unsupported("$.model.dropout", "BPE dropout");
    }
    ALN_ASSIGN_OR_RETURN(const bool byte_fallback, get_bool(*m, "$.model", "byte_fallback", false));
    if (byte_fallback) return unsupported("$.model.byte_fallback", "byte fallback");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const auto it = m->find(key);
      if (it != m->end() && !it->is_null() && *it != "") {
        return unsupported(absl::StrCat("$.model.", key), "subword prefix/suffix in a byte-level BPE");
      }
    }
    std::optional<int32_t> unk_id;
    if (const auto u = m->find("unk_token"); u != m->end() && !u->is_null()) {
      if (!u->is_string()) return error("$.model.unk_token", "expected a string");
      const auto it = vocab.find(u->get<std::string>());
      if (it == vocab.end())
        return error("$.model.unk_token", absl::StrCat(json_excerpt(*u), " is not in the vocabulary"));
      unk_id = it->second;
    }
    ALN_ASSIGN_OR_RETURN(const bool ignore_merges, get_bool(*m, "$.model", "ignore_merges", false));

    const auto mg = m->find("merges");
    if (mg == m->end() || !mg->is_array()) return error("$.model.merges", "missing or not an array");
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(mg->size());
    for (std::size_t i = 0; i < mg->size(); ++i) {
      const json& e = (*mg)[i];
      const std::string path = absl::StrCat("$.model.merges[", i, "]");
      std::pair<std::string, std::string> pair;
      if (e.is_string()) {  // legacy form "a b"
        const std::string s = e.get<std::string>();
        const std::size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          return error(path, absl::StrCat("merge ", json_excerpt(e), " is not two tokens separated by one space"));
        }
        pair = {s.substr(0, space), s.substr(space + 1)};
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        pair = {e[0].get<std::string>(), e[1].get<std::string>()};
      } else {
        return error(path, "a merge must be \"a b\" or [\"a\", \"b\"]");
      }
      for (const std::string& t : {pair.first, pair.second, pair.first + pair.second}) {
        if (!vocab.contains(t)) {
          return error(path, absl::StrCat("merge ", json_excerpt(e), " refers to token ", json_excerpt(json(t)),
                                          " that is not in the vocabulary"));
        }
      }
      merges.push_back(std::move(pair));
    }
    config.model = std::make_unique<BpeModel>(std::move(vocab), merges, unk_id,
                                              ignore_merges ? IgnoreMerges::kYes : IgnoreMerges::kNo);
    return absl::OkStatus();
  }

  absl::Status load_added_tokens(const json& root, TokenizerConfig& config) const {
    const auto a = root.find("added_tokens");
    if (a == root.end() || a->is_null()) return absl::OkStatus();
    if (!a->is_array()) return error("$.added_tokens", "expected an array");
    for (std::size_t i = 0; i < a->size(); ++i) {
      const json& e = (*a)[i];
      const std::string path = absl::StrCat("$.added_tokens[", i, "]");
      if (!e.is_object()) return error(path, "expected an object");
      AddedToken t;
      const auto id = e.find("id");
      const auto content = e.find("content");
      if (id == e.end() || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX) {
        return error(path + ".id", "missing or not a non-negative integer");
      }
      if (content == e.end() || !content->is_string() || content->get<std::string>().empty()) {
        return error(path + ".content", "missing, empty or not a string");
      }
      t.id = id->get<int32_t>();
      t.content = content->get<std::string>();
      ALN_ASSIGN_OR_RETURN(t.special, get_bool(e, path, "special", false));
      ALN_ASSIGN_OR_RETURN(t.single_word, get_bool(e, path, "single_word", false));
      ALN_ASSIGN_OR_RETURN(t.lstrip, get_bool(e, path, "lstrip", false));
      ALN_ASSIGN_OR_RETURN(t.rstrip, get_bool(e, path, "rstrip", false));
      ALN_ASSIGN_OR_RETURN(t.normalized, get_bool(e, path, "normalized", !t.special));
      config.added_tokens.push_back(std::move(t));
    }
    return absl::OkStatus();
  }

  absl::Status load_byte_level(const json& obj, const std::string& path, TokenizerConfig& config) const {
    ALN_ASSIGN_OR_RETURN(config.byte_level_add_prefix_space, get_bool(obj, path, "add_prefix_space", false));
    ALN_ASSIGN_OR_RETURN(config.byte_level_use_regex, get_bool(obj, path, "use_regex", true));
    return absl::OkStatus();
  }

  absl::Status load_split(const json& obj, const std::string& path, TokenizerConfig& config) const {
    const auto pattern = obj.find("pattern");
    if (pattern == obj.end() || !pattern->is_object() || !pattern->contains("Regex") ||
        !(*pattern)["Regex"].is_string()) {
      return unsupported(path + ".pattern", "Split pattern (only {\"Regex\": ...})");
    }
    const auto p = split_pattern_from_regex((*pattern)["Regex"].get<std::string>());
    if (!p.ok()) return unsupported(path + ".pattern.Regex", p.status().message());
    if (obj.value("behavior", std::string()) != "Isolated")
      return unsupported(path + ".behavior", "Split behavior (only Isolated)");
    ALN_ASSIGN_OR_RETURN(const bool invert, get_bool(obj, path, "invert", false));
    if (invert) return unsupported(path + ".invert", "inverted Split");
    if (config.split) return unsupported(path, "second Split");
    config.split = *p;
    return absl::OkStatus();
  }

  absl::Status load_pre_tokenizer(const json& root, TokenizerConfig& config) const {
    const auto pt = root.find("pre_tokenizer");
    if (pt == root.end() || pt->is_null())
      return unsupported("$.pre_tokenizer", "missing pre-tokenizer (need ByteLevel)");
    ALN_ASSIGN_OR_RETURN(const std::string type, get_type(*pt, "$.pre_tokenizer"));
    if (type == "ByteLevel") return load_byte_level(*pt, "$.pre_tokenizer", config);
    if (type != "Sequence") return unsupported("$.pre_tokenizer.type", absl::StrCat("pre-tokenizer ", type));
    const auto list = pt->find("pretokenizers");
    if (list == pt->end() || !list->is_array())
      return error("$.pre_tokenizer.pretokenizers", "missing or not an array");
    bool byte_level = false;
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string path = absl::StrCat("$.pre_tokenizer.pretokenizers[", i, "]");
      ALN_ASSIGN_OR_RETURN(const std::string t, get_type((*list)[i], path));
      if (t == "Split" && !byte_level) {
        ALN_RETURN_IF_ERROR(load_split((*list)[i], path, config));
      } else if (t == "ByteLevel" && !byte_level) {
        ALN_RETURN_IF_ERROR(load_byte_level((*list)[i], path, config));
        byte_level = true;
      } else {
        return unsupported(path, absl::StrCat("pre-tokenizer ", t, " here (need Split... then one ByteLevel last)"));
      }
    }
    if (!byte_level) return unsupported("$.pre_tokenizer", "pre-tokenizer Sequence without ByteLevel");
    return absl::OkStatus();
  }

  absl::Status load_decoder_and_normalizer(const json& root, bool* nfc) const {
    if (const auto n = root.find("normalizer"); n != root.end() && !n->is_null()) {
      // NFC alone, or a Sequence of just NFC (Qwen2's files); anything else changes text in ways
      // this tokenizer does not reproduce.
      const json* one = &*n;
      if (n->is_object() && n->value("type", "") == "Sequence" && n->contains("normalizers") &&
          (*n)["normalizers"].is_array() && (*n)["normalizers"].size() == 1) {
        one = &(*n)["normalizers"][0];
      }
      if (!one->is_object() || one->value("type", "") != "NFC") {
        return unsupported("$.normalizer", absl::StrCat("normalizer ", json_excerpt(*n), " (only NFC is)"));
      }
      *nfc = true;
    }
    const auto d = root.find("decoder");
    if (d == root.end() || d->is_null()) return unsupported("$.decoder", "missing decoder (need ByteLevel)");
    ALN_ASSIGN_OR_RETURN(const std::string type, get_type(*d, "$.decoder"));
    if (type != "ByteLevel") return unsupported("$.decoder.type", absl::StrCat("decoder ", type));
    return absl::OkStatus();
  }

  absl::Status load_template(const json& obj, const std::string& path, TokenizerConfig& config) const {
    const auto single = obj.find("single");
    if (single == obj.end() || !single->is_array()) return error(path + ".single", "missing or not an array");
    const auto specials = obj.find("special_tokens");
    bool seen_sequence = false;
    for (std::size_t i = 0; i < single->size(); ++i) {
      const json& item = (*single)[i];
      const std::string ipath = absl::StrCat(path, ".single[", i, "]");
      if (item.contains("Sequence")) {
        if (seen_sequence) return unsupported(ipath, "second sequence in a single template");
        seen_sequence = true;
      } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id") &&
                 item["SpecialToken"]["id"].is_string()) {
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        if (specials == obj.end() || !specials->is_object() || !specials->contains(name) ||
            !(*specials)[name].contains("ids") || !(*specials)[name]["ids"].is_array()) {
          return error(
              ipath, absl::StrCat("special token ", json_excerpt(json(name)), " is not in ", path, ".special_tokens"));
        }
        auto& target = seen_sequence ? config.template_suffix : config.template_prefix;
        for (const json& id : (*specials)[name]["ids"]) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0)
            return error(ipath, "special token ids must be integers");
          target.push_back(id.get<int32_t>());
        }
      } else {
        return error(ipath, "expected {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
      }
    }
    if (!seen_sequence) return error(path + ".single", "template has no sequence");
    return absl::OkStatus();
  }

  absl::Status load_post_processor(const json& pp, const std::string& path, TokenizerConfig& config) const {
    if (pp.is_null()) return absl::OkStatus();
    ALN_ASSIGN_OR_RETURN(const std::string type, get_type(pp, path));
    if (type == "ByteLevel") return absl::OkStatus();  // only changes offsets
    if (type == "TemplateProcessing") return load_template(pp, path, config);
    if (type == "Sequence") {
      const auto list = pp.find("processors");
      if (list == pp.end() || !list->is_array()) return error(path + ".processors", "missing or not an array");
      for (std::size_t i = 0; i < list->size(); ++i) {
        ALN_RETURN_IF_ERROR(load_post_processor((*list)[i], absl::StrCat(path, ".processors[", i, "]"), config));
      }
      return absl::OkStatus();
    }
    return unsupported(path + ".type", absl::StrCat("post-processor ", type));
  }

 private:
  std::string origin_;
};

absl::StatusOr<TokenizerConfig> load_checked(const Loader& loader, std::string_view json_text) {
  // Depth first: nothing below may copy, compare or print a value nested 10^6 deep.
  if (absl::Status depth = check_json_depth(json_text); !depth.ok()) return loader.error("$", depth.message());
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return loader.error("$", "not valid JSON");
  if (!root.is_object()) return loader.error("$", "expected a JSON object");
  TokenizerConfig config;
  ALN_RETURN_IF_ERROR(loader.load_model(root, config));
  ALN_RETURN_IF_ERROR(loader.load_added_tokens(root, config));
  ALN_RETURN_IF_ERROR(loader.load_decoder_and_normalizer(root, &config.nfc));
  ALN_RETURN_IF_ERROR(loader.load_pre_tokenizer(root, config));
  if (const auto pp = root.find("post_processor"); pp != root.end()) {
    ALN_RETURN_IF_ERROR(loader.load_post_processor(*pp, "$.post_processor", config));
  }
  return config;
}

}  // namespace

absl::StatusOr<TokenizerConfig> load_tokenizer_config(std::string_view json_text, std::string_view origin) {
  const Loader loader(origin);
  try {
    return load_checked(loader, json_text);
  } catch (const json::exception& e) {
    // A field of an unexpected JSON type that a check above did not anticipate.
    return loader.error("$", absl::StrCat("malformed tokenizer: ", capped_excerpt(e.what())));
  }
}

absl::StatusOr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open tokenizer file"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return from_json(buffer.str(), path);
}

}  // namespace aln::tokenizer
