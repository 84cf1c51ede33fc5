#pragma once
// The durable job store: one SQLite database (WAL journal) under the launcher's data directory.
// Every state change is written before it is reported, so a restarted launcher knows every job.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/job_record.h"

struct sqlite3;

namespace aln::launcher {

class JobStore {
 public:
  // Opens (creating if needed) the database at `path`. Errors name the file and what to do.
  static absl::StatusOr<std::unique_ptr<JobStore>> open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts or replaces the job's row (one transaction).
  absl::Status put(const JobRecord& job);
  absl::StatusOr<std::vector<JobRecord>> load_all() const;

 private:
  explicit JobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::Status exec(const char* sql) const;
  sqlite3* db_;
  std::string path_;
};

}  // namespace aln::launcher
