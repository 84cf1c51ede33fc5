#include "trainers/engine/data_parallel.h"

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "core/status.h"

namespace aln::engine {

void DataParallel::sum(at::Tensor& tensor, std::chrono::milliseconds timeout) const {
  if (size() == 1) return;
  ALN_THROW_IF_ERROR(comm_->all_reduce_sum(tensor)->wait(timeout.count() > 0 ? timeout : timeout_));
}

double DataParallel::sum(double value, std::chrono::milliseconds timeout) const {
  if (size() == 1) return value;
  at::Tensor t = at::full({1}, value, at::kDouble);
  sum(t, timeout);
  return t.item<double>();
}

absl::Status DataParallel::agree(const absl::Status& local, const absl::Status& elsewhere,
                                 std::chrono::milliseconds timeout) const {
  if (sum(local.ok() ? 0.0 : 1.0, timeout) == 0) return absl::OkStatus();
  return local.ok() ? elsewhere : local;
}

std::vector<double> DataParallel::gather(const std::vector<double>& values) const {
  if (size() == 1) return values;
  at::Tensor in = at::tensor(values, at::kDouble);
  at::Tensor out = at::empty({size() * in.numel()}, at::kDouble);
  ALN_THROW_IF_ERROR(comm_->all_gather(in, out)->wait(timeout_));
  return std::vector<double>(out.data_ptr<double>(), out.data_ptr<double>() + out.numel());
}

at::Tensor DataParallel::all_gather(const at::Tensor& tensor) const {
  at::Tensor in = tensor.contiguous();
  if (size() == 1) return in.clone();
  at::Tensor out = at::empty({size() * in.numel()}, in.options());
  ALN_THROW_IF_ERROR(comm_->all_gather(in, out)->wait(timeout_));
  return out;
}

void DataParallel::broadcast(optim::TensorMap& tensors) const {
  if (size() == 1) return;
  std::vector<std::unique_ptr<dist::Work>> pending;
  std::vector<at::Tensor> buffers;
  buffers.reserve(tensors.size());  // the communicator holds references to these until wait()
  for (auto& [name, t] : tensors) {
    buffers.push_back(t.detach().contiguous());
    pending.push_back(comm_->broadcast(buffers.back(), 0));
  }
  for (auto& w : pending) ALN_THROW_IF_ERROR(w->wait(timeout_));
  size_t i = 0;
  for (auto& [name, t] : tensors) {
    at::Tensor& b = buffers[i++];
    if (!b.is_same(t)) t.detach().copy_(b);
  }
}

void DataParallel::all_reduce_gradients(optim::TensorMap& params, bool deterministic, int64_t bucket_bytes) const {
  if (size() == 1) return;
  struct Bucket {
    std::vector<at::Tensor*> params;
    at::Tensor flat;
    at::Tensor gathered;  // deterministic mode: every rank's bucket
    std::unique_ptr<dist::Work> work;
  };
  std::vector<Bucket> buckets(1);
  int64_t bytes = 0;
  for (auto& [name, p] : params) {
    if (bytes >= bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().params.push_back(&p);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  // Launch every bucket, then wait: the later buckets' packing overlaps the earlier reductions.
  for (auto& b : buckets) {
    std::vector<at::Tensor> flat;
    for (at::Tensor* p : b.params) {
      const at::Tensor& g = p->grad();
      flat.push_back(g.defined() ? g.reshape(-1) : at::zeros({p->numel()}, p->options()));
    }
    b.flat = at::cat(flat).contiguous();
    if (deterministic) {
      b.gathered = at::empty({size() * b.flat.numel()}, b.flat.options());
      b.work = comm_->all_gather(b.flat, b.gathered);
    } else {
      b.work = comm_->all_reduce_sum(b.flat);
    }
  }
  for (auto& b : buckets) {
    ALN_THROW_IF_ERROR(b.work->wait(timeout_));
    if (deterministic) add_in_rank_order(b.gathered, b.flat);
    int64_t offset = 0;
    for (at::Tensor* p : b.params) {
      at::Tensor summed = b.flat.narrow(0, offset, p->numel()).view(p->sizes());
      offset += p->numel();
      if (p->grad().defined()) {
        p->mutable_grad().copy_(summed);
      } else {
        p->mutable_grad() = summed.clone();
      }
    }
  }
}

void DataParallel::add_in_rank_order(const at::Tensor& gathered, at::Tensor& flat) const {
  const int64_t n = flat.numel();
  flat.copy_(gathered.narrow(0, 0, n));
  for (int r = 1; r < size(); ++r) flat.add_(gathered.narrow(0, r * n, n));
}

}  // namespace aln::engine
