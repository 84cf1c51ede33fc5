#include "distributed/host_staged.h"

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace aln::dist {
namespace {

// A staged operation: the wrapped backend's work on host buffers, then the copies back into the
// caller's tensors (once, when the work is first seen done).
class StagedWork final : public Work {
 public:
  StagedWork(std::unique_ptr<Work> inner, std::vector<std::pair<at::Tensor, at::Tensor>> back,
             std::vector<at::Tensor> keep)
      : inner_(std::move(inner)), back_(std::move(back)), keep_(std::move(keep)) {}

  absl::Status wait(std::chrono::milliseconds timeout) override {
    absl::Status s = inner_->wait(timeout);
    if (s.ok()) copy_back();
    return s;
  }
  void progress() override { inner_->progress(); }
  bool done() override {
    if (!inner_->done()) return false;
    copy_back();
    return true;
  }

 private:
  void copy_back() {
    for (auto& [destination, host] : back_) destination.copy_(host);
    back_.clear();
    keep_.clear();
  }

  std::unique_ptr<Work> inner_;
  std::vector<std::pair<at::Tensor, at::Tensor>> back_;  // (caller's tensor, host buffer written by the backend)
  std::vector<at::Tensor> keep_;                         // host buffers the backend reads until it is done
};

class HostStaged final : public Communicator {
 public:
  HostStaged(Communicator* inner, std::unique_ptr<Communicator> owned, bool stage_host)
      : inner_(inner), owned_(std::move(owned)), stage_host_(stage_host) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend_name() const override { return inner_->backend_name() + "+host-staged"; }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& tensor) override {
    if (!staged(tensor)) return inner_->all_reduce_sum(tensor);
    at::Tensor host = to_host(tensor);
    return finish(inner_->all_reduce_sum(host), {{tensor, host}}, {});
  }
  std::unique_ptr<Work> broadcast(at::Tensor& tensor, int root) override {
    if (!staged(tensor)) return inner_->broadcast(tensor, root);
    at::Tensor host = to_host(tensor);
    return finish(inner_->broadcast(host, root), {{tensor, host}}, {});
  }
  std::unique_ptr<Work> all_gather(const at::Tensor& input, at::Tensor& output) override {
    if (!staged(input) && !staged(output)) return inner_->all_gather(input, output);
    at::Tensor in = to_host(input), out = host_like(output);
    return finish(inner_->all_gather(in, out), {{output, out}}, {in});
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    if (!staged(input) && !staged(output)) return inner_->reduce_scatter_sum(input, output);
    at::Tensor in = to_host(input), out = host_like(output);
    return finish(inner_->reduce_scatter_sum(in, out), {{output, out}}, {in});
  }
  std::unique_ptr<Work> barrier() override { return inner_->barrier(); }
  std::unique_ptr<Work> send(const at::Tensor& tensor, int peer, int tag) override {
    if (!staged(tensor)) return inner_->send(tensor, peer, tag);
    at::Tensor host = to_host(tensor);
    return finish(inner_->send(host, peer, tag), {}, {host});
  }
  std::unique_ptr<Work> recv(at::Tensor& tensor, int peer, int tag) override {
    if (!staged(tensor)) return inner_->recv(tensor, peer, tag);
    at::Tensor host = host_like(tensor);
    return finish(inner_->recv(host, peer, tag), {{tensor, host}}, {});
  }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    std::unique_ptr<Communicator> part = inner_->split(color, key, timeout);
    Communicator* raw = part.get();
    return std::make_unique<HostStaged>(raw, std::move(part), stage_host_);
  }

 private:
  bool staged(const at::Tensor& t) const { return stage_host_ || !t.device().is_cpu(); }
  // A host copy (always a new buffer, also for a host tensor when staging those).
  static at::Tensor to_host(const at::Tensor& t) {
    return t.to(t.options().device(at::kCPU), /*non_blocking=*/false, /*copy=*/true).contiguous();
  }
  static at::Tensor host_like(const at::Tensor& t) { return at::empty(t.sizes(), t.options().device(at::kCPU)); }
  static std::unique_ptr<Work> finish(std::unique_ptr<Work> inner, std::vector<std::pair<at::Tensor, at::Tensor>> back,
                                      std::vector<at::Tensor> keep) {
    return std::make_unique<StagedWork>(std::move(inner), std::move(back), std::move(keep));
  }

  Communicator* inner_;
  std::unique_ptr<Communicator> owned_;  // set for communicators made by split()
  bool stage_host_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged(Communicator* inner, bool stage_host_tensors) {
  return std::make_unique<HostStaged>(inner, nullptr, stage_host_tensors);
}

}  // namespace aln::dist
