// A user string inside a log message stays inside its line.
#include "core/text_escape.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "core/logging.h"

namespace aln {
namespace {

TEST(TextEscape, ControlCharactersBecomeEscapes) {
  EXPECT_EQ(escape_for_log("plain é text"), "plain é text");
  EXPECT_EQ(escape_for_log("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(escape_for_log(std::string("\x1b[2J\x7f\0", 6)), "\\x1b[2J\\x7f\\x00");
}

// A job named "x\nI 00:00:00.000 r0/launcher] FORGED" must not produce a line that looks like the
// launcher's own.
TEST(TextEscape, LoggerWritesOneLinePerCall) {
  std::FILE* sink = std::tmpfile();
  ASSERT_NE(sink, nullptr);
  Logger log(0, "launcher", LogLevel::kInfo, sink);
  log.info("job %s queued by %s", "x\nI 00:00:00.000 r0/launcher] FORGED", "bob");
  std::rewind(sink);
  char buffer[512] = {};
  const size_t n = std::fread(buffer, 1, sizeof buffer - 1, sink);
  std::fclose(sink);
  const std::string text(buffer, n);
  EXPECT_EQ(text.find('\n'), text.size() - 1) << text;  // exactly one line
  EXPECT_NE(text.find("job x\\nI 00:00:00.000 r0/launcher] FORGED queued by bob"), std::string::npos) << text;
}

}  // namespace
}  // namespace aln
