#include "launcher/job_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace aln::launcher {

bool is_terminal(aln::v1::JobState state) {
  return state == aln::v1::SUCCEEDED || state == aln::v1::FAILED || state == aln::v1::CANCELLED ||
         state == aln::v1::LOST;
}

namespace {

// RAII over a prepared statement.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

// The status proto goes in as bytes (every field, forward compatible); the columns beside it are
// what queries and people reading the database with `sqlite3` need.
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " seq INTEGER PRIMARY KEY, job_id TEXT UNIQUE NOT NULL, user TEXT NOT NULL, state INTEGER NOT NULL,"
    " status BLOB NOT NULL, spec_yaml TEXT NOT NULL, workdir TEXT NOT NULL, metrics_port INTEGER NOT NULL,"
    " pgid INTEGER NOT NULL, start_ticks INTEGER NOT NULL, progress_offset INTEGER NOT NULL)";

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot open the job store: ", message, "; check --data-dir and its permissions"));
  }
  std::unique_ptr<JobStore> store(new JobStore(db, path));
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", kSchema}) {
    if (auto s = store->exec(sql); !s.ok()) return s;
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::exec(const char* sql) const {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return absl::InternalError(absl::StrCat(path_, ": ", message, " (in: ", sql, ")"));
  }
  return absl::OkStatus();
}

absl::Status JobStore::put(const JobRecord& job) {
  Statement st(db_,
               "INSERT OR REPLACE INTO jobs (seq, job_id, user, state, status, spec_yaml, workdir, metrics_port, pgid,"
               " start_ticks, progress_offset) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
  if (!st.ok()) return absl::InternalError(absl::StrCat(path_, ": ", sqlite3_errmsg(db_)));
  const std::string blob = job.status.SerializeAsString();
  sqlite3_stmt* s = st.get();
  sqlite3_bind_int64(s, 1, job.seq);
  sqlite3_bind_text(s, 2, job.status.job_id().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 3, job.status.user().c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 4, job.status.state());
  sqlite3_bind_blob(s, 5, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 6, job.spec_yaml.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 7, job.workdir.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 8, job.metrics_port);
  sqlite3_bind_int64(s, 9, job.pgid);
  sqlite3_bind_int64(s, 10, job.start_ticks);
  sqlite3_bind_int64(s, 11, job.progress_offset);
  if (sqlite3_step(s) != SQLITE_DONE) {
    return absl::InternalError(
        absl::StrCat(path_, ": writing job ", job.status.job_id(), ": ", sqlite3_errmsg(db_), "; is the disk full?"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> JobStore::load_all() const {
  Statement st(db_,
               "SELECT seq, status, spec_yaml, workdir, metrics_port, pgid, start_ticks, progress_offset FROM jobs"
               " ORDER BY seq");
  if (!st.ok()) return absl::InternalError(absl::StrCat(path_, ": ", sqlite3_errmsg(db_)));
  std::vector<JobRecord> jobs;
  sqlite3_stmt* s = st.get();
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    JobRecord job;
    job.seq = sqlite3_column_int64(s, 0);
    const void* blob = sqlite3_column_blob(s, 1);
    if (!job.status.ParseFromArray(blob, sqlite3_column_bytes(s, 1))) {
      return absl::DataLossError(absl::StrCat(path_, ": job row ", job.seq, " has an unreadable status"));
    }
    job.spec_yaml = reinterpret_cast<const char*>(sqlite3_column_text(s, 2));
    job.workdir = reinterpret_cast<const char*>(sqlite3_column_text(s, 3));
    job.metrics_port = sqlite3_column_int(s, 4);
    job.pgid = sqlite3_column_int64(s, 5);
    job.start_ticks = sqlite3_column_int64(s, 6);
    job.progress_offset = sqlite3_column_int64(s, 7);
    jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat(path_, ": ", sqlite3_errmsg(db_)));
  return jobs;
}

}  // namespace aln::launcher
