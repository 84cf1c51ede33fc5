#pragma once
// Whole-file writes that readers never see half done: the content goes to `path + ".tmp"`, is
// fsync'ed, then renamed over `path` (atomic on POSIX), and the directory is fsync'ed so the rename
// itself survives a crash. A failed write removes the temporary file and leaves `path` untouched.
#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace aln::io {

// Sequential writer handed to the content callback; errors name the file being written.
class FileWriter {
 public:
  FileWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  absl::Status write(const void* data, size_t size);
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

absl::Status write_file_atomically(const std::string& path, const std::function<absl::Status(FileWriter&)>& content);

// Writes `text` atomically (as above).
absl::Status write_text_atomically(const std::string& path, const std::string& text);

// fsyncs a directory, so entries created or renamed in it survive a crash.
absl::Status sync_directory(const std::string& dir);

}  // namespace aln::io
