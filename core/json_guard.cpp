#include "core/json_guard.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace aln {
namespace {

using nlohmann::json;

// Containers deeper than this are shown as "[...]" / "{...}": enough for a shape or a pair of
// offsets, and the recursion below stays a few frames deep whatever the value.
constexpr int kExcerptLevels = 3;

// Length of the longest prefix of `s` of at most `n` bytes that does not split a UTF-8 sequence.
std::size_t utf8_prefix(std::string_view s, std::size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

void render_string(const std::string& s, std::size_t room, std::string* out) {
  const std::size_t keep = utf8_prefix(s, std::max<std::size_t>(room, 8));
  // replace: a value that did not come from our parser may hold invalid UTF-8; never throw here.
  std::string quoted = json(s.substr(0, keep)).dump(-1, ' ', false, json::error_handler_t::replace);
  if (keep < s.size()) quoted.insert(quoted.size() - 1, "...");
  out->append(quoted);
}

void render(const json& v, int level, std::size_t limit, std::string* out) {
  const std::size_t room = limit > out->size() ? limit - out->size() : 0;
  switch (v.type()) {
    case json::value_t::array:
    case json::value_t::object: {
      const bool is_object = v.is_object();
      const char* open = is_object ? "{" : "[";
      const char* close = is_object ? "}" : "]";
      out->append(open);
      if (!v.empty() && (level >= kExcerptLevels || room == 0)) {
        out->append("...").append(close);
        return;
      }
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out->append(",");
        if (out->size() >= limit) {
          out->append("...");
          break;
        }
        first = false;
        if (is_object) {
          render_string(it.key(), limit > out->size() ? limit - out->size() : 0, out);
          out->append(":");
        }
        render(it.value(), level + 1, limit, out);
      }
      out->append(close);
      return;
    }
    case json::value_t::string:
      render_string(v.get_ref<const std::string&>(), room, out);
      return;
    case json::value_t::discarded:
      out->append("<invalid>");
      return;
    default:
      out->append(v.dump());
      return;  // numbers, booleans, null: short and not recursive
  }
}

}  // namespace

absl::Status check_json_depth(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", max_depth, " levels (at byte ", i, ")"));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

std::string json_excerpt(const json& value, std::size_t max_chars) {
  std::string out;
  render(value, 0, max_chars, &out);
  return out;
}

std::string capped_excerpt(std::string_view text, std::size_t max_chars) {
  const std::size_t keep = utf8_prefix(text, max_chars);
  std::string out;
  out.reserve(keep + 32);
  for (std::size_t i = 0; i < keep; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7F)
      out += absl::StrFormat("\\x%02x", c);
    else
      out += static_cast<char>(c);
  }
  if (keep < text.size()) absl::StrAppend(&out, "... (", text.size() - keep, " more bytes)");
  return out;
}

absl::Status parse_untrusted_json(std::string_view text, json* out, int max_depth) {
  if (absl::Status s = check_json_depth(text, max_depth); !s.ok()) return s;
  try {
    *out = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(capped_excerpt(e.what()));
  }
  return absl::OkStatus();
}

}  // namespace aln
