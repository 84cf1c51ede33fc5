// The NCCL communicator on a GPU at world size 1 (one process, bootstrapped over the local
// communicator): every collective gives the values it must, in float32 and bfloat16, on the
// communicator and on a split of it; a collective reads a tensor made on a side stream that is
// current (ordered after that stream's work, not the legacy default stream's); wait_on_stream
// orders the current stream after the collective; a grouped send and receive (to itself); a wait that times out leaves
// the communicator usable; tensors on the wrong device are refused; the routed communicator `aln train` makes with
// parallel.backend: nccl sends GPU tensors to NCCL and host tensors to the host's backend. Built where CUDA and NCCL
// are (ALN_CUDA_ENABLED); every test skips without a GPU. scripts/device_check.sh runs it on the GPU machine.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>
#include <memory>

#include "core/model/device.h"
#include "distributed/communicator.h"
#include "distributed/device_routed.h"
#include "distributed/nccl_backend.h"

namespace aln::dist {
namespace {

constexpr std::chrono::milliseconds kWait{30000};

struct OnGpu {
  c10::Device device{c10::DeviceType::CPU};
  std::unique_ptr<Communicator> bootstrap;
  std::unique_ptr<Communicator> nccl;
};

// The GPU, or why there is none (the test then skips); with a GPU the NCCL communicator must come up.
absl::StatusOr<OnGpu> on_gpu() {
  absl::StatusOr<c10::Device> device = model::cuda_device_for(0);
  if (!device.ok()) return device.status();
  OnGpu g;
  g.device = *device;
  g.bootstrap = make_local_communicator();
  auto nccl = make_nccl_communicator(*g.bootstrap, g.device.index(), kWait);
  EXPECT_TRUE(nccl.ok()) << "a GPU is here, but the NCCL communicator did not come up: " << nccl.status();
  if (nccl.ok()) g.nccl = std::move(*nccl);
  return g;
}

#define ALN_ON_GPU(g)                                \
  auto g = on_gpu();                                 \
  if (!g.ok()) GTEST_SKIP() << g.status().message(); \
  ASSERT_NE(g->nccl, nullptr)

// A pool stream made current for a scope: a non-blocking stream, which the legacy default stream
// does not wait for, so a collective ordered only after that one would read unfinished tensors.
class SideStream {
 public:
  explicit SideStream(const c10::Device& device)
      : impl_(c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)),
        before_(impl_->exchangeStream(impl_->getStreamFromGlobalPool(device, false))) {}
  ~SideStream() { impl_->exchangeStream(before_); }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

 private:
  const c10::impl::DeviceGuardImplInterface* impl_;
  c10::Stream before_;
};

// About a few hundred milliseconds of work on the current stream whose last result is a row of
// 2048 + k (each mm keeps the matrix all ones, exactly).
at::Tensor after_long_chain(const c10::Device& device, int k, int chain = 20) {
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor a = at::full({2048, 2048}, 1.0 / 2048, options);
  at::Tensor x = at::ones({2048, 2048}, options);
  for (int i = 0; i < chain; ++i) x = at::mm(x, a);
  return x.sum(1) + k;
}

void every_collective(Communicator& c, const c10::Device& device, at::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  const at::Tensor values = at::arange(1, 4097, options.dtype(at::kFloat)).to(dtype);

  at::Tensor summed = values.clone();
  ASSERT_TRUE(c.all_reduce_sum(summed)->wait(kWait).ok());
  EXPECT_TRUE(at::equal(summed.cpu(), values.cpu()));  // one rank: the sum is the tensor

  at::Tensor sent = values.clone();
  ASSERT_TRUE(c.broadcast(sent, 0)->wait(kWait).ok());
  EXPECT_TRUE(at::equal(sent.cpu(), values.cpu()));

  at::Tensor gathered = at::zeros({values.numel()}, options);
  ASSERT_TRUE(c.all_gather(values, gathered)->wait(kWait).ok());
  EXPECT_TRUE(at::equal(gathered.cpu(), values.cpu()));

  at::Tensor scattered = at::zeros({values.numel()}, options);
  ASSERT_TRUE(c.reduce_scatter_sum(values, scattered)->wait(kWait).ok());
  EXPECT_TRUE(at::equal(scattered.cpu(), values.cpu()));

  ASSERT_TRUE(c.barrier()->wait(kWait).ok());
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.backend_name(), "nccl");
}

TEST(NcclOnGpu, EveryCollectiveAtWorldSizeOne) {
  ALN_ON_GPU(g);
  every_collective(*g->nccl, g->device, at::kFloat);
  every_collective(*g->nccl, g->device, at::kBFloat16);
  std::unique_ptr<Communicator> sub = g->nccl->split(0, 0, kWait);
  every_collective(*sub, g->device, at::kFloat);
}

TEST(NcclOnGpu, ReadsWhatTheCurrentStreamMade) {
  ALN_ON_GPU(g);
  const SideStream side(g->device);
  for (int round = 0; round < 5; ++round) {
    const at::Tensor made = after_long_chain(g->device, round);  // 2048 + round, only at the end
    at::Tensor gathered = at::zeros({2048}, made.options());
    ASSERT_TRUE(g->nccl->all_gather(made, gathered)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(gathered.cpu(), at::full({2048}, 2048.0 + round))) << "round " << round;
  }
}

TEST(NcclOnGpu, WaitOnStreamOrdersTheStreamWithoutBlockingTheHost) {
  ALN_ON_GPU(g);
  const SideStream side(g->device);
  for (int round = 0; round < 3; ++round) {
    const at::Tensor made = after_long_chain(g->device, round, 60);
    at::Tensor gathered = at::zeros({2048}, made.options());
    std::unique_ptr<Work> work = g->nccl->all_gather(made, gathered);
    ASSERT_TRUE(work->wait_on_stream(kWait).ok());
    // Queued after the wait on the current stream: reads the gathered values.
    const at::Tensor doubled = gathered * 2;
    EXPECT_TRUE(at::equal(doubled.cpu(), at::full({2048}, 2.0 * (2048.0 + round)))) << "round " << round;
    EXPECT_TRUE(work->done());
  }
}

TEST(NcclOnGpu, AWaitThatTimesOutLeavesTheCommunicatorUsable) {
  ALN_ON_GPU(g);
  const SideStream side(g->device);
  const at::Tensor made = after_long_chain(g->device, 7, 200);  // far longer than a millisecond
  at::Tensor summed = made.clone();
  std::unique_ptr<Work> work = g->nccl->all_reduce_sum(summed);
  const absl::Status early = work->wait(std::chrono::milliseconds(1));
  if (!early.ok()) {
    EXPECT_EQ(early.code(), absl::StatusCode::kDeadlineExceeded) << early;
    EXPECT_NE(early.message().find("all_reduce"), std::string::npos) << early;
  }
  ASSERT_TRUE(work->wait(kWait).ok());  // waited for again, to the end
  EXPECT_TRUE(at::equal(summed.cpu(), at::full({2048}, 2055.0)));
  every_collective(*g->nccl, g->device, at::kFloat);  // and the communicator still works
}

TEST(NcclOnGpu, RefusesTensorsOnTheCpu) {
  ALN_ON_GPU(g);
  at::Tensor cpu = at::ones({4});
  try {
    (void)g->nccl->all_reduce_sum(cpu);
    FAIL() << "a CPU tensor was taken";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("takes tensors on cuda:"), std::string::npos) << e.what();
  }
}

// A 1F1B step's grouped send and receive (ncclGroupStart/End) at world size 1: the rank sends to
// itself, which NCCL allows inside a group; in float32 and bfloat16, from a side stream.
TEST(NcclOnGpu, GroupedSendRecvToItself) {
  ALN_ON_GPU(g);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const SideStream side(g->device);
    at::Tensor out = after_long_chain(g->device, 3).to(dtype);
    at::Tensor in = at::zeros_like(out);
    ASSERT_TRUE(g->nccl->send_recv(out, 0, 1, in, 0, 1)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(in.cpu(), out.cpu())) << c10::toString(dtype);
  }
}

// What `aln train` makes with parallel.backend: nccl: GPU tensors over NCCL, host tensors over the
// host's backend (here the local one), each operation whole to one side.
TEST(NcclOnGpu, RoutedBesideTheHostBackend) {
  ALN_ON_GPU(g);
  std::unique_ptr<Communicator> host = make_local_communicator();
  std::unique_ptr<Communicator> routed = make_device_routed(std::move(g->nccl), host.get());
  EXPECT_EQ(routed->backend_name(), "nccl+local");
  at::Tensor on_gpu = at::arange(8, at::TensorOptions().dtype(at::kFloat).device(g->device));
  at::Tensor on_host = at::arange(8, at::kFloat);
  ASSERT_TRUE(routed->all_reduce_sum(on_gpu)->wait(kWait).ok());
  ASSERT_TRUE(routed->all_reduce_sum(on_host)->wait(kWait).ok());
  EXPECT_TRUE(at::equal(on_gpu.cpu(), on_host));
  at::Tensor gathered = at::empty({8}, on_host.options());
  EXPECT_ANY_THROW(routed->all_gather(on_gpu, gathered));  // one side each
  ASSERT_TRUE(routed->barrier()->wait(kWait).ok());
}

}  // namespace
}  // namespace aln::dist
