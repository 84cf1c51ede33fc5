#include "core/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace aln::io {
namespace {

absl::Status errno_status(const std::string& what, const std::string& path, int err) {
  return absl::UnavailableError(absl::StrCat(path, ": ", what, ": ", std::strerror(err)));
}

// Closes on every return path; the explicit close() in the happy path reports its error.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

absl::Status fsync_dir(const std::string& dir_path) {
  Fd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return errno_status("cannot open directory to sync it", dir_path, errno);
  // Some file systems (e.g. certain network mounts) refuse fsync on directories; the entries are
  // still there, so only real I/O errors count.
  if (::fsync(dir.get()) != 0 && errno != EINVAL && errno != ENOTSUP) {
    return errno_status("fsync of directory failed", dir_path, errno);
  }
  return absl::OkStatus();
}

absl::Status fsync_parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return fsync_dir(parent.empty() ? std::string(".") : parent.string());
}

}  // namespace

absl::Status sync_directory(const std::string& dir) { return fsync_dir(dir); }

absl::Status write_text_atomically(const std::string& path, const std::string& text) {
  return write_file_atomically(path, [&](FileWriter& w) { return w.write(text.data(), text.size()); });
}

absl::Status FileWriter::write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("write failed", path_, errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status write_file_atomically(const std::string& path, const std::function<absl::Status(FileWriter&)>& content) {
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return errno_status("cannot create", tmp, errno);
  auto fail = [&](absl::Status status) {
    ::close(fd.release());
    ::unlink(tmp.c_str());
    return status;
  };
  FileWriter writer(fd.get(), tmp);
  absl::Status written = content(writer);
  if (!written.ok()) return fail(written);
  if (::fsync(fd.get()) != 0) return fail(errno_status("fsync failed", tmp, errno));
  if (::close(fd.release()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_status("close failed", tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_status(absl::StrCat("cannot rename ", tmp, " to"), path, err);
  }
  return fsync_parent_dir(path);
}

}  // namespace aln::io
