#include "distributed/device_routed.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace aln::dist {
namespace {

class DeviceRouted final : public Communicator {
 public:
  DeviceRouted(std::unique_ptr<Communicator> device, Communicator* host, std::unique_ptr<Communicator> owned_host,
               std::function<bool(const at::Tensor&)> on_device)
      : device_(std::move(device)), host_(host), owned_host_(std::move(owned_host)), on_device_(std::move(on_device)) {
    ALN_CHECK(device_->rank() == host_->rank() && device_->size() == host_->size(),
              "device-routed communicator: the device group (rank ", device_->rank(), " of ", device_->size(),
              ") and the host group (rank ", host_->rank(), " of ", host_->size(), ") differ");
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend_name() const override { return device_->backend_name() + "+" + host_->backend_name(); }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& t) override { return side(t).all_reduce_sum(t); }
  std::unique_ptr<Work> broadcast(at::Tensor& t, int root) override { return side(t).broadcast(t, root); }
  std::unique_ptr<Work> all_gather(const at::Tensor& in, at::Tensor& out) override {
    return side(in, out, "all_gather").all_gather(in, out);
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& in, at::Tensor& out) override {
    return side(in, out, "reduce_scatter").reduce_scatter_sum(in, out);
  }
  std::unique_ptr<Work> barrier() override { return host_->barrier(); }
  std::unique_ptr<Work> send(const at::Tensor& t, int peer, int tag) override { return side(t).send(t, peer, tag); }
  std::unique_ptr<Work> recv(at::Tensor& t, int peer, int tag) override { return side(t).recv(t, peer, tag); }
  std::unique_ptr<Work> send_recv(const at::Tensor& out, int send_peer, int send_tag, at::Tensor& in, int recv_peer,
                                  int recv_tag) override {
    if (on_device_(out) == on_device_(in)) return side(in).send_recv(out, send_peer, send_tag, in, recv_peer, recv_tag);
    return Communicator::send_recv(out, send_peer, send_tag, in, recv_peer, recv_tag);  // each to its side
  }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    // The host first: its split has the timeout that finds a missing rank.
    std::unique_ptr<Communicator> host = host_->split(color, key, timeout);
    std::unique_ptr<Communicator> device = device_->split(color, key, timeout);
    Communicator* raw = host.get();
    return std::make_unique<DeviceRouted>(std::move(device), raw, std::move(host), on_device_);
  }

 private:
  Communicator& side(const at::Tensor& t) { return on_device_(t) ? *device_ : *host_; }
  Communicator& side(const at::Tensor& in, const at::Tensor& out, const char* op) {
    ALN_CHECK(on_device_(in) == on_device_(out), op,
              ": the input and the output must both be on the device or both on the host (NCCL moves device "
              "memory, MPI host memory)");
    return side(in);
  }

  std::unique_ptr<Communicator> device_;
  Communicator* host_;
  std::unique_ptr<Communicator> owned_host_;  // set for communicators made by split()
  std::function<bool(const at::Tensor&)> on_device_;
};

}  // namespace

std::unique_ptr<Communicator> make_device_routed(std::unique_ptr<Communicator> device, Communicator* host,
                                                 std::function<bool(const at::Tensor&)> on_device) {
  if (!on_device) on_device = [](const at::Tensor& t) { return t.is_cuda(); };
  return std::make_unique<DeviceRouted>(std::move(device), host, nullptr, std::move(on_device));
}

absl::StatusOr<CollectivePath> choose_collective_path(std::string_view wanted, const BackendFacts& facts) {
  if (wanted == "nccl") {
    if (!facts.cuda) {
      return absl::InvalidArgumentError(
          "parallel.backend: nccl moves CUDA tensors, but runtime.device is cpu; set runtime.device: cuda, or "
          "parallel.backend: auto to train on the CPU over MPI");
    }
    if (!facts.nccl_built) {
      return absl::InvalidArgumentError(
          "parallel.backend: nccl, but this build has no NCCL (configured without CUDA); rebuild with the CUDA "
          "toolkit, or set parallel.backend: auto (GPU tensors through host buffers over MPI)");
    }
    if (facts.ranks > 1 && facts.node_ranks > facts.node_devices) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.backend: nccl: ", facts.node_ranks, " ranks on ", facts.host, " share ", facts.node_devices, " GPU",
          facts.node_devices == 1 ? "" : "s", ", and NCCL needs a GPU of its own for each rank; start at most ",
          facts.node_devices, " rank", facts.node_devices == 1 ? "" : "s",
          " a host, or set parallel.backend: auto (GPU tensors through host buffers over MPI)"));
    }
  } else if (wanted == "local") {
    if (facts.ranks > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.backend: local runs one process, but this job's policy has ", facts.ranks,
                       " ranks; set parallel.backend: auto"));
    }
  } else if (wanted != "auto" && wanted != "mpi") {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.backend: '", std::string(wanted), "' is not a backend; use auto, local, mpi or nccl"));
  }
  if (facts.ranks == 1) return CollectivePath::kHost;  // nothing to move
  if (!facts.cuda) return CollectivePath::kHost;
  return wanted == "nccl" ? CollectivePath::kNccl : CollectivePath::kHostStaged;
}

}  // namespace aln::dist
