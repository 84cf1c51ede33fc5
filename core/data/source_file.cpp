#include "core/data/source_file.h"

#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/utf8.h"
#include "core/json_guard.h"

namespace aln::data {
namespace {

// Reads lines from plain or gzip-compressed files (zlib reads plain files transparently too).
class LineSource {
 public:
  explicit LineSource(const std::string& path) : file_(gzopen(path.c_str(), "rb")) {}
  ~LineSource() {
    if (file_ != nullptr) gzclose(file_);
  }
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;
  bool ok() const { return file_ != nullptr; }

  // False at end of file. The newline is removed; a trailing '\r' too.
  bool next(std::string* line, bool* error) {
    line->clear();
    char buffer[1 << 16];
    while (true) {
      if (gzgets(file_, buffer, sizeof(buffer)) == nullptr) {
        int code = 0;
        gzerror(file_, &code);
        *error = code != Z_OK && code != Z_STREAM_END;
        return !line->empty();
      }
      line->append(buffer);
      if (!line->empty() && line->back() == '\n') {
        line->pop_back();
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return true;
      }
    }
  }

 private:
  gzFile file_;
};

// Splits CSV records; a record may continue over several physical lines inside quotes.
bool parse_csv_record(LineSource& src, int64_t* line_no, std::vector<std::string>* fields, bool* io_error,
                      std::string* problem) {
  fields->clear();
  std::string line;
  if (!src.next(&line, io_error)) return false;
  ++*line_no;
  std::string field;
  bool quoted = false;
  size_t i = 0;
  while (true) {
    if (i >= line.size()) {
      if (quoted) {
        std::string more;
        if (!src.next(&more, io_error)) {
          *problem = "unterminated quoted field";
          fields->push_back(field);
          return true;
        }
        ++*line_no;
        field.push_back('\n');
        line = more;
        i = 0;
        continue;
      }
      fields->push_back(field);
      return true;
    }
    const char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        field.push_back(c);
      }
    } else if (c == '"' && field.empty()) {
      quoted = true;
    } else if (c == ',') {
      fields->push_back(field);
      field.clear();
    } else {
      field.push_back(c);
    }
    ++i;
  }
}

}  // namespace

absl::Status file_kind(const std::string& path, FileKind* kind) {
  if (absl::EndsWith(path, ".jsonl.gz") || absl::EndsWith(path, ".json.gz")) *kind = FileKind::kJsonlGz;
  else if (absl::EndsWith(path, ".jsonl")) *kind = FileKind::kJsonl;
  else if (absl::EndsWith(path, ".csv")) *kind = FileKind::kCsv;
  else if (absl::EndsWith(path, ".json")) *kind = FileKind::kJson;
  else return absl::InvalidArgumentError(absl::StrCat(path, ": unknown file type; use .jsonl, .jsonl.gz, .json or .csv"));
  return absl::OkStatus();
}

absl::Status for_each_row(const std::string& path,
                          const std::function<absl::Status(int64_t, const nlohmann::json&)>& row,
                          const std::function<absl::Status(int64_t, const std::string&)>& bad_row) {
  FileKind kind;
  absl::Status s = file_kind(path, &kind);
  if (!s.ok()) return s;
  if (kind == FileKind::kJson) {
    // A JSON array of objects (prompt lists are often shipped this way); lines are not tracked inside.
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    std::ostringstream text;
    text << in.rdbuf();
    nlohmann::json all;
    if (absl::Status parsed = parse_untrusted_json(text.str(), &all); !parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":1: invalid JSON: ", parsed.message()));
    }
    if (!all.is_array()) return absl::InvalidArgumentError(absl::StrCat(path, ":1: expected a JSON array of records"));
    for (size_t i = 0; i < all.size(); ++i) {
      if (!all[i].is_object()) {
        s = bad_row(1, absl::StrCat("item ", i, " is not an object"));
      } else {
        s = row(1, all[i]);
      }
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  LineSource src(path);
  if (!src.ok()) return absl::NotFoundError(absl::StrCat(path, ": cannot open; check the path"));
  bool io_error = false;
  int64_t line_no = 0;
  if (kind == FileKind::kCsv) {
    std::vector<std::string> header, fields;
    std::string problem;
    if (!parse_csv_record(src, &line_no, &header, &io_error, &problem)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":1: empty CSV file (no header)"));
    }
    while (true) {
      const int64_t start = line_no + 1;
      problem.clear();
      if (!parse_csv_record(src, &line_no, &fields, &io_error, &problem)) break;
      if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
      if (problem.empty() && fields.size() != header.size()) {
        problem = absl::StrCat("expected ", header.size(), " fields like the header, got ", fields.size());
      }
      if (!problem.empty()) {
        s = bad_row(start, problem);
      } else {
        nlohmann::json object = nlohmann::json::object();
        for (size_t i = 0; i < header.size(); ++i) object[header[i]] = fields[i];
        s = row(start, object);
      }
      if (!s.ok()) return s;
    }
  } else {
    std::string line;
    while (src.next(&line, &io_error)) {
      ++line_no;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      if (const int64_t bad = first_invalid_utf8(line); bad >= 0) {
        s = bad_row(line_no, absl::StrCat("not valid UTF-8 (byte ", bad, " of the line)"));
        if (!s.ok()) return s;
        continue;
      }
      nlohmann::json object;
      if (absl::Status parsed = parse_untrusted_json(line, &object); !parsed.ok()) {
        s = bad_row(line_no, absl::StrCat("invalid JSON: ", parsed.message()));
        if (!s.ok()) return s;
        continue;
      }
      s = object.is_object() ? row(line_no, object) : bad_row(line_no, "expected a JSON object");
      if (!s.ok()) return s;
    }
  }
  if (io_error) return absl::DataLossError(absl::StrCat(path, ":", line_no + 1, ": read error (truncated or corrupt gzip?)"));
  return absl::OkStatus();
}

}  // namespace aln::data
