#include "distributed/mpi_backend.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "distributed/dist_error.h"
#include "distributed/flight_recorder.h"

namespace aln::dist {
namespace {

// `moved`: the operation only moves the bytes (send, receive, broadcast, all-gather), so 16-bit
// floats travel as 16-bit words; MPI has no bfloat16 type, so a sum of them is refused.
MPI_Datatype mpi_type(const at::Tensor& t, bool moved = false) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
    case at::kHalf:
      ALN_CHECK(moved, "MPI backend: a sum of ", std::string(c10::toString(t.scalar_type())),
                " tensors is not supported (MPI has no such type); sum them in float32");
      return MPI_UINT16_T;
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kByte:
      return MPI_UINT8_T;
    default:
      ALN_FAIL("MPI backend: unsupported dtype ", std::string(c10::toString(t.scalar_type())));
  }
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}

// A non-blocking MPI request; wait() polls MPI_Test so that it can give up after the timeout
// instead of blocking forever inside MPI_Wait when a peer is dead or stopped.
class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request request, int rank, std::string op, int64_t seq, std::shared_ptr<FlightRecorder> recorder,
          std::vector<at::Tensor> buffers)
      : request_(request),
        rank_(rank),
        op_(std::move(op)),
        seq_(seq),
        recorder_(std::move(recorder)),
        buffers_(std::move(buffers)) {}

  // Dropped before the operation finished (its wait timed out; the job is ending): MPI may still
  // read or write the buffers, so they are kept alive on purpose instead of being freed under it.
  ~MpiWork() override {
    if (!done_) {
      for (const at::Tensor& t : buffers_) new at::Tensor(t);
    }
  }
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  void progress() override {
    if (done_) return;
    int done = 0;
    if (MPI_Test(&request_, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
      done_ = true;
      recorder_->finished(seq_);
    }
  }

  bool done() override {
    progress();
    return done_;
  }

  absl::Status wait(std::chrono::milliseconds timeout) override {
    if (done_) return absl::OkStatus();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::microseconds(1);
    while (true) {
      int done = 0;
      const int rc = MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        return absl::InternalError(
            absl::StrCat("rank ", rank_, " on ", host_name(), ": ", op_, " #", seq_, ": ", mpi_error_string(rc)));
      }
      if (done) {
        done_ = true;
        recorder_->finished(seq_);
        return absl::OkStatus();
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("rank ", rank_, " on ", host_name(), ": ", op_, " #", seq_, " did not complete within ",
                         timeout.count(), " ms; a peer rank is dead, stopped or not calling it. ", recorder_->dump()));
      }
      // Back off up to 1 ms so a long wait does not burn a core the peers need.
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

 private:
  MPI_Request request_;
  int rank_;
  std::string op_;
  int64_t seq_;
  std::shared_ptr<FlightRecorder> recorder_;
  std::vector<at::Tensor> buffers_;  // what MPI reads or writes until the operation is done
  bool done_ = false;
};

// Runs `expired` on a thread of its own unless the scope ends within `timeout` (RAII: the
// destructor wakes and joins the thread).
class Watchdog {
 public:
  Watchdog(std::chrono::milliseconds timeout, std::function<void()> expired)
      : thread_([this, timeout, expired = std::move(expired)] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (!wake_.wait_for(lock, timeout, [this] { return over_; })) expired();
        }) {}
  ~Watchdog() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      over_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool over_ = false;
  std::thread thread_;  // last: started once the members it reads exist
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& tensor) override {
    check_tensor(tensor, "all_reduce");
    MPI_Request request;
    const int rc = MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor),
                                  MPI_SUM, comm_, &request);
    return started(rc, request, "all_reduce", &tensor);
  }

  std::unique_ptr<Work> broadcast(at::Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast");
    ALN_CHECK(root >= 0 && root < size_, "broadcast root ", root, " is not a rank of this group of ", size_);
    MPI_Request request;
    const int rc =
        MPI_Ibcast(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor, true), root, comm_, &request);
    return started(rc, request, "broadcast", &tensor);
  }

  std::unique_ptr<Work> all_gather(const at::Tensor& input, at::Tensor& output) override {
    check_tensor(input, "all_gather");
    check_tensor(output, "all_gather");
    ALN_CHECK(output.scalar_type() == input.scalar_type(), "all_gather: output dtype differs from input's");
    ALN_CHECK(output.numel() == input.numel() * size_, "all_gather: output must hold ", input.numel() * size_,
              " elements (", size_, " ranks x ", input.numel(), ")");
    MPI_Request request;
    const int count = static_cast<int>(input.numel());
    const int rc = MPI_Iallgather(input.data_ptr(), count, mpi_type(input, true), output.data_ptr(), count,
                                  mpi_type(output, true), comm_, &request);
    return started(rc, request, "all_gather", &input, &output);
  }

  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    check_tensor(input, "reduce_scatter");
    check_tensor(output, "reduce_scatter");
    ALN_CHECK(output.scalar_type() == input.scalar_type(), "reduce_scatter: output dtype differs from input's");
    ALN_CHECK(input.numel() == output.numel() * size_, "reduce_scatter: input must hold ", output.numel() * size_,
              " elements (", size_, " ranks x ", output.numel(), "), has ", input.numel());
    MPI_Request request;
    const int count = static_cast<int>(output.numel());
    const int rc = MPI_Ireduce_scatter_block(input.data_ptr(), output.data_ptr(), count, mpi_type(output), MPI_SUM,
                                             comm_, &request);
    return started(rc, request, "reduce_scatter", &input, &output);
  }

  std::unique_ptr<Work> barrier() override {
    MPI_Request request;
    const int rc = MPI_Ibarrier(comm_, &request);
    return started(rc, request, "barrier");
  }

  std::unique_ptr<Work> send(const at::Tensor& tensor, int peer, int tag) override {
    check_tensor(tensor, "send");
    check_peer(peer, "send");
    MPI_Request request;
    const int rc = MPI_Isend(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor, true), peer, tag,
                             comm_, &request);
    return started(rc, request, absl::StrCat("send to ", peer, " tag ", tag), &tensor);
  }

  std::unique_ptr<Work> recv(at::Tensor& tensor, int peer, int tag) override {
    check_tensor(tensor, "recv");
    check_peer(peer, "recv");
    MPI_Request request;
    const int rc = MPI_Irecv(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor, true), peer, tag,
                             comm_, &request);
    return started(rc, request, absl::StrCat("recv from ", peer, " tag ", tag), &tensor);
  }

  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    // Every rank of the group is in the barrier before any enters MPI_Comm_split, which cannot be
    // given a timeout: a rank stopped or dead before the split is found here, as a DistError.
    absl::Status met = barrier()->wait(timeout);
    if (!met.ok()) {
      throw DistError(absl::StrCat("not every one of the ", size_, " ranks reached the communicator split (color ",
                                   color, "); a rank stopped or died while the job started: ", met.message()),
                      rank_, host_name(), "split", seq_.load(), __FILE__, __LINE__);
    }
    // One that stops in the instant between the barrier and the split would still hang the others
    // inside MPI_Comm_split, which no thread can leave. Past the barrier the split should take
    // milliseconds, so a watchdog with the same bound ends this process instead (as MPI_Init's
    // does), and mpirun then ends the job.
    MPI_Comm sub = MPI_COMM_NULL;
    int rc = MPI_SUCCESS;
    {
      const std::string history = recorder_->dump();
      const Watchdog watchdog(timeout, [this, color, timeout, &history] {
        std::fprintf(stderr,
                     "aln: rank %d on %s: MPI_Comm_split (color %d) did not finish within %lld ms after every rank had "
                     "reached it: another rank stopped or died in between (mpirun's output names it); ending this "
                     "process. %s\n",
                     rank_, host_name().c_str(), color, static_cast<long long>(timeout.count()), history.c_str());
        std::fflush(stderr);
        std::_Exit(1);
      });
      rc = MPI_Comm_split(comm_, color, key, &sub);
    }
    if (rc != MPI_SUCCESS)
      throw DistError(mpi_error_string(rc), rank_, host_name(), "split", seq_.load(), __FILE__, __LINE__);
    return std::make_unique<MpiCommunicator>(sub);
  }

 private:
  void check_peer(int peer, const char* op) const {
    ALN_CHECK(peer >= 0 && peer < size_ && peer != rank_, op, ": rank ", peer, " is not another rank of this group of ",
              size_);
  }

  void check_tensor(const at::Tensor& tensor, const char* op) const {
    ALN_CHECK(tensor.device().is_cpu(), op, ": the MPI backend takes CPU tensors");
    ALN_CHECK(tensor.is_contiguous(), op, ": tensor must be contiguous");
    ALN_CHECK(tensor.numel() < (int64_t{1} << 31), op, ": tensor too large for one MPI call");
  }

  std::unique_ptr<Work> started(int rc, MPI_Request request, const std::string& op, const at::Tensor* tensor = nullptr,
                                const at::Tensor* also = nullptr) {
    const int64_t seq = ++seq_;
    recorder_->started(seq, op, tensor != nullptr ? tensor->numel() : 0,
                       tensor != nullptr ? std::string(c10::toString(tensor->scalar_type())) : "-");
    if (rc != MPI_SUCCESS) throw DistError(mpi_error_string(rc), rank_, host_name(), op, seq, __FILE__, __LINE__);
    std::vector<at::Tensor> buffers;
    for (const at::Tensor* t : {tensor, also}) {
      if (t != nullptr) buffers.push_back(*t);
    }
    return std::make_unique<MpiWork>(request, rank_, op, seq, recorder_, std::move(buffers));
  }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  // Atomic: a policy rank's rollout thread calls on the service channel beside its training thread.
  std::atomic<int64_t> seq_{0};
  std::shared_ptr<FlightRecorder> recorder_ = std::make_shared<FlightRecorder>();
};


}  // namespace

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::init(int* argc, char*** argv,
                                                             std::chrono::milliseconds timeout) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return absl::FailedPreconditionError("MPI is already initialised in this process");
  std::unique_ptr<MpiRuntime> runtime(new MpiRuntime());
  int rc = MPI_SUCCESS;
  {
    // MPI_Init waits for every process of the job (Open MPI exchanges their addresses) and takes no
    // timeout; nor can this process leave it for MPI_Abort. A process that is stopped or dead before
    // it gets there would hang the others here, so a watchdog ends this one, and mpirun the job.
    const Watchdog watchdog(timeout, [timeout] {
      std::fprintf(stderr,
                   "aln: MPI_Init on %s did not finish within %lld ms: another process of the job is stopped, dead or "
                   "unreachable (mpirun's output names it, or check the hosts and network interfaces); ending this "
                   "process\n",
                   host_name().c_str(), static_cast<long long>(timeout.count()));
      std::fflush(stderr);
      std::_Exit(1);
    });
    rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &runtime->thread_level_);
  }
  if (rc != MPI_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("MPI_Init_thread failed: ", mpi_error_string(rc),
                                               "; start the job with mpirun or check the MPI installation"));
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &runtime->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &runtime->size_);
  {
    // The processes sharing this host's memory, in world order: a rank's place among them picks its
    // GPU. Collective and without a timeout, like MPI_Init, hence the same watchdog.
    const Watchdog watchdog(timeout, [timeout] {
      std::fprintf(stderr, "aln: finding the ranks on %s did not finish within %lld ms; ending this process\n",
                   host_name().c_str(), static_cast<long long>(timeout.count()));
      std::fflush(stderr);
      std::_Exit(1);
    });
    // (MPI_COMM_WORLD's errors are fatal: a failure here ends the job with MPI's own message.)
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, runtime->rank_, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &runtime->local_rank_);
    MPI_Comm_size(node, &runtime->local_size_);
    MPI_Comm_free(&node);
  }
  return runtime;
}

bool MpiRuntime::threads_supported() const { return thread_level_ >= MPI_THREAD_MULTIPLE; }

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::abort(int exit_code) const {
  std::fflush(stdout);
  std::fflush(stderr);
  // What this rank just wrote sits in a pipe that mpirun's output forwarder reads; MPI_Abort has the
  // launcher kill every process, and a loaded machine can lose those last lines with them (the one
  // saying why the job ends: seen once in CI). A second's grace lets the forwarder read them first.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
}

std::unique_ptr<Communicator> MpiRuntime::world(std::chrono::milliseconds timeout) const {
  // MPI_Comm_dup is collective without a timeout; its non-blocking form is polled against one. MPI
  // writes the new communicator when the operation completes, which after a timeout may still
  // happen: the handle and the request then stay allocated (the job is ending anyway).
  struct Pending {
    MPI_Comm comm = MPI_COMM_NULL;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  auto pending = std::make_unique<Pending>();
  const int rc = MPI_Comm_idup(MPI_COMM_WORLD, &pending->comm, &pending->request);
  if (rc != MPI_SUCCESS) throw DistError(mpi_error_string(rc), rank_, host_name(), "world", 0, __FILE__, __LINE__);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(10);
  for (int done = 0; !done;) {
    MPI_Test(&pending->request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      pending.release();  // still MPI's to write (see above)
      throw DistError(absl::StrCat("not every one of the ", size_, " ranks joined the job's communicator within ",
                                   timeout.count(), " ms; a rank stopped or died while the job started"),
                      rank_, host_name(), "world", 0, __FILE__, __LINE__);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
  return std::make_unique<MpiCommunicator>(pending->comm);
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string out(text, length);
  // Open MPI appends the repo revision and date after a comma; the first part is the useful one.
  const auto cut = out.find_first_of(",\n");
  return cut == std::string::npos ? out : out.substr(0, cut);
}

}  // namespace aln::dist
