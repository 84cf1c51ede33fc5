#include <ATen/ATen.h>

#include "core/error.h"
#include "distributed/communicator.h"

namespace aln::dist {
namespace {

class DoneWork final : public Work {
 public:
  absl::Status wait(std::chrono::milliseconds) override { return absl::OkStatus(); }
  bool done() override { return true; }
};

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "local"; }
  std::unique_ptr<Work> all_reduce_sum(at::Tensor&) override { return std::make_unique<DoneWork>(); }
  std::unique_ptr<Work> broadcast(at::Tensor&, int root) override {
    ALN_CHECK(root == 0, "broadcast root ", root, " does not exist in a world of size 1");
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather(const at::Tensor& input, at::Tensor& output) override {
    ALN_CHECK(output.numel() == input.numel(), "all_gather: output must hold ", input.numel(), " elements");
    output.view(input.sizes()).copy_(input);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    ALN_CHECK(output.numel() == input.numel() && output.scalar_type() == input.scalar_type(),
              "reduce_scatter: output must hold ", input.numel(), " elements of the input's dtype");
    output.view(input.sizes()).copy_(input);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> barrier() override { return std::make_unique<DoneWork>(); }
  std::unique_ptr<Work> send(const at::Tensor&, int peer, int) override {
    ALN_FAIL("send to rank ", peer, ": a world of size 1 has no peer");
  }
  std::unique_ptr<Work> recv(at::Tensor&, int peer, int) override {
    ALN_FAIL("recv from rank ", peer, ": a world of size 1 has no peer");
  }
  std::unique_ptr<Communicator> split(int, int, std::chrono::milliseconds) override { return std::make_unique<LocalCommunicator>(); }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace aln::dist
