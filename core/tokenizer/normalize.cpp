#include "core/tokenizer/normalize.h"

#include <algorithm>
#include <vector>

#include "core/tokenizer/unicode_normalization_tables.h"
#include "core/tokenizer/utf8.h"

namespace aln::tokenizer {
namespace {

// Hangul syllables compose and decompose arithmetically (Unicode ch. 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = kCombiningClasses + kCombiningClassCount;
  const auto* it =
      std::upper_bound(kCombiningClasses, end, cp, [](char32_t c, const CombiningClassRange& r) { return c < r.lo; });
  if (it == kCombiningClasses) return 0;
  --it;
  return cp <= it->hi ? it->ccc : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    const auto* end = kDecompositions + kDecompositionCount;
    const auto* it =
        std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, char32_t c) { return d.cp < c; });
    if (it != end && it->cp == cp) {
      out.insert(out.end(), kDecompositionData + it->offset, kDecompositionData + it->offset + it->length);
      return;
    }
  }
  out.push_back(cp);
}

// The primary composite of (first, second), or 0.
char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const auto* end = kCompositions + kCompositionCount;
  const auto* it = std::lower_bound(kCompositions, end, std::make_pair(first, second),
                                    [](const Composition& c, const std::pair<char32_t, char32_t>& k) {
                                      return c.first != k.first ? c.first < k.first : c.second < k.second;
                                    });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

// NFC of a run of valid code points, appended as UTF-8.
void normalize_run(std::vector<char32_t>& cps, std::string& out) {
  std::vector<char32_t> d;
  d.reserve(cps.size() + 4);
  for (char32_t cp : cps) decompose(cp, d);
  // Canonical ordering: stable sort of every run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<long>(i), d.begin() + static_cast<long>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition: each character combines with the last starter unless blocked (a
  // character between them with a class of 0 or not lower than its own).
  std::vector<char32_t> c;
  c.reserve(d.size());
  long starter = -1;
  uint8_t last_class = 0;
  for (char32_t cp : d) {
    const uint8_t cc = combining_class(cp);
    if (starter >= 0) {
      const bool blocked = static_cast<long>(c.size()) - 1 != starter && (last_class == 0 || last_class >= cc);
      if (!blocked) {
        if (char32_t composite = compose_pair(c[static_cast<size_t>(starter)], cp)) {
          c[static_cast<size_t>(starter)] = composite;
          continue;
        }
      }
    }
    if (cc == 0) starter = static_cast<long>(c.size());
    last_class = cc;
    c.push_back(cp);
  }
  for (char32_t cp : c) append_utf8(cp, out);
  cps.clear();
}

}  // namespace

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; })) {
    return std::string(text);
  }
  std::string out;
  out.reserve(text.size());
  std::vector<char32_t> run;
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Unit u = decode_utf8(text, pos);
    if (u.valid) {
      run.push_back(u.cp);
    } else {
      normalize_run(run, out);
      out.append(text.substr(pos, u.length));
    }
    pos += u.length;
  }
  normalize_run(run, out);
  return out;
}

const char* normalization_unicode_version() { return kNormalizationUnicodeVersion; }

}  // namespace aln::tokenizer
