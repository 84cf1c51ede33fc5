#pragma once
// Escaping for text that came from users (job names, paths, data problems) before it reaches a
// line-oriented log or terminal.
#include <string>
#include <string_view>

namespace aln {

// `text` with control characters written as escapes (\n, \r, \t, \x1b, ...), so a user string
// cannot end a log line early, forge the next one or send terminal escape sequences. UTF-8 is kept.
// Every line a Logger writes goes through it.
std::string escape_for_log(std::string_view text);

}  // namespace aln
