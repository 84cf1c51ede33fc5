#include "distributed/nccl_backend.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <ATen/ATen.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/status.h"
#include "distributed/dist_error.h"
#include "distributed/flight_recorder.h"

namespace aln::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::string cuda_text(cudaError_t e) { return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)); }

// LibTorch's CUDA backend, registered once its CUDA library is in the process (model::
// load_cuda_backend, which any job with CUDA tensors has called): a device's current stream, a
// stream from its pool, and the caching allocator's record of the streams that use a block.
const c10::impl::DeviceGuardImplInterface* torch_cuda() {
  return c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA) ? c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
                                                              : nullptr;
}

cudaStream_t native(const c10::Stream& stream) { return static_cast<cudaStream_t>(stream.native_handle()); }

// Polls a non-blocking NCCL communicator until its pending operation (init, split) is done.
absl::Status wait_ready(ncclComm_t comm, std::chrono::milliseconds timeout, const std::string& what) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm, &state);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(state), " (", ncclGetLastError(comm),
                                              "); check NCCL_DEBUG=INFO output and the network interfaces"));
    }
    if (Clock::now() > deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(
          absl::StrCat(what, " did not finish within ", timeout.count(), " ms; a peer rank is missing or unreachable"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// A CUDA event, destroyed with its last owner (a Work and the watchdog may both hold it; CUDA
// releases an event destroyed while streams still wait on it once they are past it).
class Event {
 public:
  Event() {
    const cudaError_t e = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming);
    ALN_CHECK(e == cudaSuccess, "cudaEventCreateWithFlags: ", cuda_text(e));
  }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }
  bool done() const { return cudaEventQuery(event_) == cudaSuccess; }

 private:
  cudaEvent_t event_ = nullptr;
};

// What a communicator and its Works share: the NCCL communicator (aborted, once, when NCCL reports
// a failed peer; destroyed when closed idle), and a watchdog thread for wait_on_stream's timeouts.
// Why a thread: wait_on_stream only makes the caller's stream wait for the collective on the GPU
// (the host goes on queueing work), so nothing on the host would notice a collective that never
// ends; the watchdog does, says which operation it was, aborts the communicator and ends the
// process (end_process). It also ends it when NCCL reports an asynchronous error while a stream
// waits on one of its collectives.
class Shared {
 public:
  Shared(ncclComm_t comm, int rank, int device) : comm_(comm), rank_(rank), device_(device) {}
  ~Shared() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  int rank() const { return rank_; }
  FlightRecorder& recorder() { return *recorder_; }

  // Runs `use(comm)` unless the communicator was aborted or closed (then returns why). Every use
  // of the NCCL communicator goes through here, under the lock the watchdog aborts under: an
  // aborted communicator is freed by NCCL and must not be touched again.
  template <typename Use>
  absl::Status with_comm(Use use) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!aborted_.ok()) return aborted_;
    return use(comm_);
  }

  // OK, or why this communicator can no longer be used (an abort, or NCCL's asynchronous error,
  // which aborts it now).
  absl::Status health() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!aborted_.ok()) return aborted_;
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state == ncclSuccess || state == ncclInProgress) return absl::OkStatus();
    abort_locked(absl::InternalError(absl::StrCat("rank ", rank_, " on ", host_name(), ": NCCL reported ",
                                                  ncclGetErrorString(state), " (", ncclGetLastError(comm_),
                                                  "); a peer rank failed or the network did. ", recorder_->dump())));
    return aborted_;
  }

  bool aborted() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return !aborted_.ok();
  }
  // The communicator's owner is done with it: destroyed when nothing is in flight, else aborted.
  void close(bool idle) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!aborted_.ok()) return;
    if (idle) {
      ncclCommDestroy(comm_);
      aborted_ = absl::FailedPreconditionError("the NCCL communicator was closed");
    } else {
      abort_locked(absl::CancelledError("the NCCL communicator was destroyed with work in flight"));
    }
  }

  // The operation behind `event` must be done by `deadline`, or the communicator is aborted.
  void watch(std::shared_ptr<Event> event, Clock::time_point deadline, std::string op, int64_t seq,
             std::chrono::milliseconds timeout) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      watched_.push_back(Watched{std::move(event), deadline, std::move(op), seq, timeout});
      if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    }
    wake_.notify_all();
  }

 private:
  // A stream already waited on a collective that failed or never ended, and what was queued after it
  // may have used its result: nothing can be trusted, so the process ends (mpirun then ends the
  // job, naming this rank) after the communicator is aborted and the reason printed. Under the lock.
  [[noreturn]] void end_process(const std::string& why) {
    std::fprintf(stderr, "[aln] NCCL watchdog: %s; aborting the communicator and ending this process\n", why.c_str());
    std::fflush(stderr);
    abort_locked(absl::DeadlineExceededError(why));
    std::_Exit(1);
  }

  // ncclCommAbort once (not ncclCommDestroy, which would wait for a dead peer), with the reason.
  void abort_locked(absl::Status why) {
    if (!aborted_.ok()) return;
    aborted_ = std::move(why);
    ncclCommAbort(comm_);
  }

  struct Watched {
    std::shared_ptr<Event> event;
    Clock::time_point deadline;
    std::string op;
    int64_t seq;
    std::chrono::milliseconds timeout;
  };

  void loop() {
    cudaSetDevice(device_);  // event queries on this thread
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      if (watched_.empty()) {
        wake_.wait(lock, [this] { return stopping_ || !watched_.empty(); });
        continue;
      }
      std::vector<Watched> late;
      const auto now = Clock::now();
      ncclResult_t state = ncclSuccess;
      if (aborted_.ok()) ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        end_process(absl::StrCat("rank ", rank_, " on ", host_name(), ": NCCL reported ", ncclGetErrorString(state),
                                 " (", ncclGetLastError(comm_), "); a peer rank failed or the network did. ",
                                 recorder_->dump()));
      }
      std::erase_if(watched_, [&](Watched& w) {
        if (w.event->done()) {
          recorder_->finished(w.seq);
          return true;
        }
        if (now < w.deadline) return false;
        late.push_back(std::move(w));
        return true;
      });
      if (!late.empty() && aborted_.ok()) {
        const Watched& w = late.front();
        end_process(absl::StrCat("rank ", rank_, " on ", host_name(), ": ", w.op, " #", w.seq,
                                 " did not complete within ", w.timeout.count(),
                                 " ms; a peer rank is dead, stopped or not calling it (see the other ranks' logs; "
                                 "parallel.timeout_s sets the bound). ",
                                 recorder_->dump()));
      }
      if (!aborted_.ok()) watched_.clear();  // closed: nothing left to enforce
      wake_.wait_for(lock, std::chrono::milliseconds(1), [this] { return stopping_; });
    }
  }

  ncclComm_t comm_;
  int rank_;
  int device_;
  std::shared_ptr<FlightRecorder> recorder_ = std::make_shared<FlightRecorder>();
  std::mutex mutex_;
  std::condition_variable wake_;
  absl::Status aborted_;
  std::vector<Watched> watched_;
  bool stopping_ = false;
  std::thread thread_;  // started with the first watch
};

// One collective in flight, done when its event (recorded on the communicator's stream after it)
// has completed. wait() polls that event on the host, bounded (a timeout leaves the communicator
// usable: the caller may wait again); wait_on_stream() makes the caller's current stream wait for it
// and hands the timeout to the communicator's watchdog.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Event> finished, std::shared_ptr<Shared> shared, int device, std::string op, int64_t seq)
      : finished_(std::move(finished)), shared_(std::move(shared)), device_(device), op_(std::move(op)), seq_(seq) {}

  bool done() override {
    if (!done_ && finished_->done()) {
      done_ = true;
      shared_->recorder().finished(seq_);
    }
    return done_;
  }

  absl::Status wait(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      ALN_RETURN_IF_ERROR(shared_->health());
      if (Clock::now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "rank ", shared_->rank(), " on ", host_name(), ": ", op_, " #", seq_, " did not complete within ",
            timeout.count(), " ms; a peer rank is dead, stopped or not calling it. ", shared_->recorder().dump()));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return shared_->health();
  }

  absl::Status wait_on_stream(std::chrono::milliseconds timeout) override {
    ALN_RETURN_IF_ERROR(shared_->health());
    if (done()) return absl::OkStatus();
    const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device_));
    const cudaError_t e = cudaStreamWaitEvent(native(torch_cuda()->getStream(device)), finished_->get(), 0);
    if (e != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("rank ", shared_->rank(), ": ", op_, " #", seq_, ": cudaStreamWaitEvent: ", cuda_text(e)));
    }
    shared_->watch(finished_, Clock::now() + timeout, op_, seq_, timeout);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<Event> finished_;
  std::shared_ptr<Shared> shared_;
  int device_;
  std::string op_;
  int64_t seq_;
  bool done_ = false;
};

// Collectives run on a stream from LibTorch's pool (not the legacy default stream, which would
// serialise with every stream of the device), each ordered after the work already queued on the
// caller's current stream; every tensor in flight is recorded on that stream with the caching
// allocator, so a tensor freed before its collective is done is not handed out again until it is.
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, std::chrono::milliseconds timeout)
      : device_(device),
        timeout_(timeout),
        stream_(torch_cuda()->getStreamFromGlobalPool(
            c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)), /*isHighPriority=*/false)) {
    int rank = 0;
    ncclResult_t r = ncclCommUserRank(comm, &rank);
    if (r == ncclSuccess) r = ncclCommCount(comm, &size_);
    if (r != ncclSuccess) {
      ncclCommAbort(comm);
      throw DistError(absl::StrCat("ncclCommUserRank/Count: ", ncclGetErrorString(r)), rank, host_name(), "create", 0,
                      __FILE__, __LINE__);
    }
    rank_ = rank;
    try {
      check_cuda(cudaSetDevice(device_), "cudaSetDevice", "create", 0);
      ready_ = std::make_unique<Event>();
    } catch (...) {
      ncclCommAbort(comm);
      throw;
    }
    shared_ = std::make_shared<Shared>(comm, rank, device);
  }
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    // A peer that failed leaves our kernels waiting: bounded, then aborted instead of destroyed.
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!shared_->aborted() && cudaStreamQuery(native(stream_)) == cudaErrorNotReady && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    shared_->close(cudaStreamQuery(native(stream_)) == cudaSuccess);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "nccl"; }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& t) override {
    check(t, "all_reduce");
    return run("all_reduce", t, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), type(t), ncclSum, comm, s);
    });
  }
  std::unique_ptr<Work> broadcast(at::Tensor& t, int root) override {
    check(t, "broadcast");
    ALN_CHECK(root >= 0 && root < size_, "broadcast root ", root, " is not a rank of this group of ", size_);
    return run("broadcast", t, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), type(t), root, comm, s);
    });
  }
  std::unique_ptr<Work> all_gather(const at::Tensor& in, at::Tensor& out) override {
    check(in, "all_gather");
    check(out, "all_gather");
    ALN_CHECK(out.scalar_type() == in.scalar_type() && out.numel() == in.numel() * size_,
              "all_gather: output must hold ", in.numel() * size_, " elements of the input's dtype");
    return run("all_gather", in, {in, out}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), type(in), comm, s);
    });
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& in, at::Tensor& out) override {
    check(in, "reduce_scatter");
    check(out, "reduce_scatter");
    ALN_CHECK(out.scalar_type() == in.scalar_type() && in.numel() == out.numel() * size_,
              "reduce_scatter: input must hold ", out.numel() * size_, " elements of the output's dtype");
    return run("reduce_scatter", in, {in, out}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), type(out), ncclSum, comm, s);
    });
  }
  std::unique_ptr<Work> barrier() override {
    if (!token_.defined()) token_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_));
    return run("barrier", token_, {token_}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclAllReduce(token_.data_ptr(), token_.data_ptr(), 1, ncclFloat32, ncclSum, comm, s);
    });
  }
  std::unique_ptr<Work> send(const at::Tensor& t, int peer, int tag) override {
    check(t, "send");
    ALN_CHECK(peer >= 0 && peer < size_ && peer != rank_, "send: rank ", peer, " is not another rank of this group");
    // NCCL orders point-to-point messages per peer; tags only name them in the flight recorder.
    return run(absl::StrCat("send to ", peer, " tag ", tag), t, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclSend(t.data_ptr(), t.numel(), type(t), peer, comm, s);
    });
  }
  std::unique_ptr<Work> recv(at::Tensor& t, int peer, int tag) override {
    check(t, "recv");
    ALN_CHECK(peer >= 0 && peer < size_ && peer != rank_, "recv: rank ", peer, " is not another rank of this group");
    return run(absl::StrCat("recv from ", peer, " tag ", tag), t, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      return ncclRecv(t.data_ptr(), t.numel(), type(t), peer, comm, s);
    });
  }
  // One NCCL group: both operations go on the stream together, so neither waits behind the other
  // (two ungrouped ones queued as send-then-recv on both neighbours would wait for each other).
  std::unique_ptr<Work> send_recv(const at::Tensor& out, int send_peer, int send_tag, at::Tensor& in, int recv_peer,
                                  int recv_tag) override {
    check(out, "send");
    check(in, "recv");
    // In a group a rank may also send to itself (NCCL pairs the two), which lets a world of one run it.
    ALN_CHECK(send_peer >= 0 && send_peer < size_, "send: rank ", send_peer, " is not a rank of this group");
    ALN_CHECK(recv_peer >= 0 && recv_peer < size_, "recv: rank ", recv_peer, " is not a rank of this group");
    const std::string op =
        absl::StrCat("send to ", send_peer, " tag ", send_tag, " with recv from ", recv_peer, " tag ", recv_tag);
    return run(op, in, {out, in}, [&](ncclComm_t comm, cudaStream_t s) {
      const auto failed = [](ncclResult_t r) { return r != ncclSuccess && r != ncclInProgress; };
      const ncclResult_t started = ncclGroupStart();
      if (failed(started)) return started;
      const ncclResult_t sent = ncclSend(out.data_ptr(), out.numel(), type(out), send_peer, comm, s);
      const ncclResult_t received =
          failed(sent) ? sent : ncclRecv(in.data_ptr(), in.numel(), type(in), recv_peer, comm, s);
      const ncclResult_t ended = ncclGroupEnd();  // always: a started group must be closed
      if (failed(sent)) return sent;
      if (failed(received)) return received;
      return ended;
    });
  }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    ALN_THROW_IF_ERROR(shared_->health());
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t sub = nullptr;
    ncclResult_t r = ncclSuccess;
    ALN_THROW_IF_ERROR(shared_->with_comm([&](ncclComm_t comm) {
      r = ncclCommSplit(comm, color, key, &sub, &config);
      return absl::OkStatus();
    }));
    if (r != ncclSuccess && r != ncclInProgress) {
      throw DistError(ncclGetErrorString(r), rank_, host_name(), "split", seq_, __FILE__, __LINE__);
    }
    ALN_THROW_IF_ERROR(wait_ready(sub, timeout, "ncclCommSplit"));
    return std::make_unique<NcclCommunicator>(sub, device_, timeout_);
  }

 private:
  static ncclDataType_t type(const at::Tensor& t) {
    auto dt = nccl_data_type(t.scalar_type());
    ALN_CHECK(dt.has_value(), "NCCL backend: unsupported dtype ", std::string(c10::toString(t.scalar_type())));
    return static_cast<ncclDataType_t>(*dt);
  }
  void check(const at::Tensor& t, const char* op) const {
    ALN_CHECK(t.is_cuda() && t.device().index() == device_, op, ": the NCCL backend takes tensors on cuda:", device_);
    ALN_CHECK(t.is_contiguous(), op, ": tensor must be contiguous");
  }
  void check_cuda(cudaError_t e, const char* call, const std::string& op, int64_t seq) const {
    if (e != cudaSuccess) {
      throw DistError(absl::StrCat(call, ": ", cuda_text(e)), rank_, host_name(), op, seq, __FILE__, __LINE__);
    }
  }

  template <typename Launch>
  std::unique_ptr<Work> run(const std::string& op, const at::Tensor& shown, std::initializer_list<at::Tensor> in_flight,
                            Launch launch) {
    ALN_THROW_IF_ERROR(shared_->health());
    const int64_t seq = ++seq_;
    shared_->recorder().started(seq, op, shown.numel(), std::string(c10::toString(shown.scalar_type())));
    check_cuda(cudaSetDevice(device_), "cudaSetDevice", op, seq);
    const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device_));
    // After the work already queued on the caller's current stream (where the tensors were made).
    check_cuda(cudaEventRecord(ready_->get(), native(torch_cuda()->getStream(device))), "cudaEventRecord", op, seq);
    check_cuda(cudaStreamWaitEvent(native(stream_), ready_->get(), 0), "cudaStreamWaitEvent", op, seq);
    const absl::Status launched = shared_->with_comm([&](ncclComm_t comm) {
      ncclResult_t r = launch(comm, native(stream_));
      // A non-blocking communicator may return before the operation is on the stream: nothing else
      // may use the communicator, and the event must not be recorded, until it is.
      const auto deadline = Clock::now() + timeout_;
      while (r == ncclInProgress) {
        if (Clock::now() > deadline) {
          return absl::DeadlineExceededError(
              absl::StrCat("NCCL did not queue the operation within ", timeout_.count(), " ms"));
        }
        std::this_thread::yield();
        ncclCommGetAsyncError(comm, &r);
      }
      if (r == ncclSuccess) return absl::OkStatus();
      return absl::InternalError(absl::StrCat(ncclGetErrorString(r), ": ", ncclGetLastError(comm)));
    });
    if (!launched.ok())
      throw DistError(std::string(launched.message()), rank_, host_name(), op, seq, __FILE__, __LINE__);
    for (const at::Tensor& t : in_flight) torch_cuda()->recordDataPtrOnStream(t.storage().data_ptr(), stream_);
    auto finished = std::make_shared<Event>();
    check_cuda(cudaEventRecord(finished->get(), native(stream_)), "cudaEventRecord", op, seq);
    return std::make_unique<NcclWork>(std::move(finished), shared_, device_, op, seq);
  }

  int device_;
  std::chrono::milliseconds timeout_;  // for NCCL to queue an operation (the job's collective timeout)
  c10::Stream stream_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<Event> ready_;  // re-recorded by every operation
  int rank_ = 0, size_ = 1;
  int64_t seq_ = 0;
  at::Tensor token_;
};

}  // namespace

std::optional<int> nccl_data_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
      return ncclUint8;
    case at::kChar:
      return ncclInt8;
    default:
      return std::nullopt;
  }
}

absl::StatusOr<std::string> bootstrap_nccl_unique_id(Communicator& bootstrap, std::chrono::milliseconds timeout) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  ncclResult_t made = ncclSuccess;
  if (bootstrap.rank() == 0) made = ncclGetUniqueId(&id);
  // Everyone learns whether rank 0 could make one (a failure there must not leave the others waiting).
  at::Tensor bytes = at::empty({static_cast<int64_t>(sizeof(id)) + 1}, at::kByte);
  std::memcpy(bytes.data_ptr(), &id, sizeof(id));
  static_cast<uint8_t*>(bytes.data_ptr())[sizeof(id)] = made == ncclSuccess ? 1 : 0;
  absl::Status sent = bootstrap.broadcast(bytes, 0)->wait(timeout);
  if (!sent.ok()) return sent;
  if (static_cast<uint8_t*>(bytes.data_ptr())[sizeof(id)] != 1) {
    return absl::UnavailableError(
        absl::StrCat("rank 0 could not make an NCCL unique id",
                     bootstrap.rank() == 0 ? absl::StrCat(" (", ncclGetErrorString(made), ")") : std::string(),
                     "; check NCCL_SOCKET_IFNAME and that rank 0's host has a usable network interface"));
  }
  return std::string(static_cast<const char*>(bytes.data_ptr()), sizeof(id));
}

absl::StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Communicator& bootstrap, int device,
                                                                     std::chrono::milliseconds timeout) {
  int devices = 0;
  const cudaError_t counted = cudaGetDeviceCount(&devices);
  // Every rank takes part in the id broadcast first, so one rank without a GPU fails them all alike.
  auto id_bytes = bootstrap_nccl_unique_id(bootstrap, timeout);
  if (!id_bytes.ok()) return id_bytes.status();
  if (counted != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the NCCL backend needs a CUDA device, but rank ", bootstrap.rank(), " on ", host_name(), " has none (",
        counted == cudaSuccess ? "0 devices" : cuda_text(counted), "); use parallel.backend: mpi on CPU"));
  }
  if (device < 0 || device >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist on ", host_name(), " (", devices, " devices)"));
  }
  if (torch_cuda() == nullptr) {
    return absl::FailedPreconditionError(
        "the NCCL backend runs on LibTorch's CUDA streams, and LibTorch's CUDA backend is not loaded in this process "
        "(model::load_cuda_backend loads it; runtime.device: cuda does)");
  }
  const cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) return absl::InternalError(absl::StrCat("cudaSetDevice(", device, "): ", cuda_text(set)));
  ncclUniqueId id;
  std::memcpy(&id, id_bytes->data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a missing peer is a timeout, not a hang
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, bootstrap.size(), id, bootstrap.rank(), &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::InternalError(absl::StrCat("ncclCommInitRankConfig: ", ncclGetErrorString(r)));
  }
  absl::Status ready = wait_ready(comm, timeout, absl::StrCat("NCCL init of rank ", bootstrap.rank()));
  if (!ready.ok()) return ready;
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, device, timeout));
}

}  // namespace aln::dist
