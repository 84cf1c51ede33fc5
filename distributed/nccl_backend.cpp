#include "distributed/nccl_backend.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <ATen/ATen.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/status.h"
#include "distributed/dist_error.h"
#include "distributed/flight_recorder.h"

namespace aln::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::string cuda_text(cudaError_t e) { return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)); }

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

// One collective in flight: done when its event (recorded on the communicator's stream after it)
// has completed.
class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t event, ncclComm_t comm, int rank, std::string op, int64_t seq,
           std::shared_ptr<FlightRecorder> recorder)
      : event_(event), comm_(comm), rank_(rank), op_(std::move(op)), seq_(seq), recorder_(std::move(recorder)) {}
  ~NcclWork() override { cudaEventDestroy(event_); }

  bool done() override {
    if (done_) return true;
    if (cudaEventQuery(event_) == cudaSuccess) {
      done_ = true;
      recorder_->finished(seq_);
    }
    return done_;
  }

  absl::Status wait(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        return absl::InternalError(absl::StrCat("rank ", rank_, " on ", host_name(), ": ", op_, " #", seq_, ": ",
                                                ncclGetErrorString(state), ". ", recorder_->dump()));
      }
      if (Clock::now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("rank ", rank_, " on ", host_name(), ": ", op_, " #", seq_, " did not complete within ",
                         timeout.count(), " ms; a peer rank is dead, stopped or not calling it. ", recorder_->dump()));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return absl::OkStatus();
  }

 private:
  cudaEvent_t event_;
  ncclComm_t comm_;
  int rank_;
  std::string op_;
  int64_t seq_;
  std::shared_ptr<FlightRecorder> recorder_;
  bool done_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device) : comm_(comm), device_(device) {
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
    cudaSetDevice(device_);
    cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
  }
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "nccl"; }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& t) override {
    check(t, "all_reduce");
    return run("all_reduce", &t,
               [&] { return ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), type(t), ncclSum, comm_, stream_); });
  }
  std::unique_ptr<Work> broadcast(at::Tensor& t, int root) override {
    check(t, "broadcast");
    ALN_CHECK(root >= 0 && root < size_, "broadcast root ", root, " is not a rank of this group of ", size_);
    return run("broadcast", &t,
               [&] { return ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), type(t), root, comm_, stream_); });
  }
  std::unique_ptr<Work> all_gather(const at::Tensor& in, at::Tensor& out) override {
    check(in, "all_gather");
    check(out, "all_gather");
    ALN_CHECK(out.scalar_type() == in.scalar_type() && out.numel() == in.numel() * size_,
              "all_gather: output must hold ", in.numel() * size_, " elements of the input's dtype");
    return run("all_gather", &in,
               [&] { return ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), type(in), comm_, stream_); });
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& in, at::Tensor& out) override {
    check(in, "reduce_scatter");
    check(out, "reduce_scatter");
    ALN_CHECK(out.scalar_type() == in.scalar_type() && in.numel() == out.numel() * size_,
              "reduce_scatter: input must hold ", out.numel() * size_, " elements of the output's dtype");
    return run("reduce_scatter", &in, [&] {
      return ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), type(out), ncclSum, comm_, stream_);
    });
  }
  std::unique_ptr<Work> barrier() override {
    if (!token_.defined()) token_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_));
    return all_reduce_sum(token_);
  }
  std::unique_ptr<Work> send(const at::Tensor& t, int peer, int tag) override {
    check(t, "send");
    ALN_CHECK(peer >= 0 && peer < size_ && peer != rank_, "send: rank ", peer, " is not another rank of this group");
    // NCCL orders point-to-point messages per peer; tags only name them in the flight recorder.
    return run(absl::StrCat("send to ", peer, " tag ", tag), &t,
               [&] { return ncclSend(t.data_ptr(), t.numel(), type(t), peer, comm_, stream_); });
  }
  std::unique_ptr<Work> recv(at::Tensor& t, int peer, int tag) override {
    check(t, "recv");
    ALN_CHECK(peer >= 0 && peer < size_ && peer != rank_, "recv: rank ", peer, " is not another rank of this group");
    return run(absl::StrCat("recv from ", peer, " tag ", tag), &t,
               [&] { return ncclRecv(t.data_ptr(), t.numel(), type(t), peer, comm_, stream_); });
  }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t sub = nullptr;
    const ncclResult_t r = ncclCommSplit(comm_, color, key, &sub, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      throw DistError(ncclGetErrorString(r), rank_, host_name(), "split", seq_, __FILE__, __LINE__);
    }
    ALN_THROW_IF_ERROR(wait_ready(sub, timeout, "ncclCommSplit"));
    return std::make_unique<NcclCommunicator>(sub, device_);
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

  template <typename Launch>
  std::unique_ptr<Work> run(const std::string& op, const at::Tensor* t, Launch launch) {
    const int64_t seq = ++seq_;
    recorder_->started(seq, op, t->numel(), std::string(c10::toString(t->scalar_type())));
    cudaSetDevice(device_);
    // After the work already queued on the default stream (where the tensor was produced).
    cudaEvent_t ready = nullptr, finished = nullptr;
    cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    cudaEventRecord(ready, nullptr);
    cudaStreamWaitEvent(stream_, ready, 0);
    cudaEventDestroy(ready);
    const ncclResult_t r = launch();
    if (r != ncclSuccess && r != ncclInProgress) {
      throw DistError(absl::StrCat(ncclGetErrorString(r), ": ", ncclGetLastError(comm_)), rank_, host_name(), op, seq,
                      __FILE__, __LINE__);
    }
    cudaEventCreateWithFlags(&finished, cudaEventDisableTiming);
    cudaEventRecord(finished, stream_);
    return std::make_unique<NcclWork>(finished, comm_, rank_, op, seq, recorder_);
  }

  ncclComm_t comm_;
  int device_;
  cudaStream_t stream_ = nullptr;
  int rank_ = 0, size_ = 1;
  int64_t seq_ = 0;
  at::Tensor token_;
  std::shared_ptr<FlightRecorder> recorder_ = std::make_shared<FlightRecorder>();
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
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, device));
}

}  // namespace aln::dist
