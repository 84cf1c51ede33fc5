// The device-routed communicator (NCCL for GPU tensors beside MPI for the rest) without a GPU: two
// thread-backend worlds stand for the two sides, and a rule that sends double tensors to the
// "device" side stands for "is on a GPU". Each side counts what reached it. Also the table of
// parallel.backend choices.
#include "distributed/device_routed.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "distributed/thread_backend.h"

namespace aln::dist {
namespace {

constexpr std::chrono::milliseconds kWait{10000};

// Forwards everything to `inner`, counting the operations.
class Counting final : public Communicator {
 public:
  Counting(std::unique_ptr<Communicator> inner, std::atomic<int>* ops) : inner_(std::move(inner)), ops_(ops) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend_name() const override { return inner_->backend_name(); }
  std::unique_ptr<Work> all_reduce_sum(at::Tensor& t) override { return count(inner_->all_reduce_sum(t)); }
  std::unique_ptr<Work> broadcast(at::Tensor& t, int root) override { return count(inner_->broadcast(t, root)); }
  std::unique_ptr<Work> all_gather(const at::Tensor& in, at::Tensor& out) override {
    return count(inner_->all_gather(in, out));
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& in, at::Tensor& out) override {
    return count(inner_->reduce_scatter_sum(in, out));
  }
  std::unique_ptr<Work> barrier() override { return count(inner_->barrier()); }
  std::unique_ptr<Work> send(const at::Tensor& t, int peer, int tag) override {
    return count(inner_->send(t, peer, tag));
  }
  std::unique_ptr<Work> recv(at::Tensor& t, int peer, int tag) override { return count(inner_->recv(t, peer, tag)); }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    return std::make_unique<Counting>(inner_->split(color, key, timeout), ops_);
  }

 private:
  std::unique_ptr<Work> count(std::unique_ptr<Work> w) {
    ++*ops_;
    return w;
  }
  std::unique_ptr<Communicator> inner_;
  std::atomic<int>* ops_;
};

TEST(DeviceRouted, EachOperationGoesWholeToTheSideItsTensorsAreOn) {
  constexpr int kRanks = 2;
  auto device_world = make_thread_communicators(kRanks), host_world = make_thread_communicators(kRanks);
  std::atomic<int> device_ops{0}, host_ops{0};
  const auto on_device = [](const at::Tensor& t) { return t.scalar_type() == at::kDouble; };
  std::vector<std::thread> ranks;
  for (int r = 0; r < kRanks; ++r) {
    ranks.emplace_back([&, r] {
      Counting host(std::move(host_world[static_cast<size_t>(r)]), &host_ops);
      std::unique_ptr<Communicator> comm = make_device_routed(
          std::make_unique<Counting>(std::move(device_world[static_cast<size_t>(r)]), &device_ops), &host, on_device);
      EXPECT_EQ(comm->rank(), r);
      EXPECT_EQ(comm->backend_name(), "thread+thread");
      at::Tensor gradient = at::full({4}, r + 1.0, at::kDouble), flag = at::full({1}, r + 1.0F);
      ASSERT_TRUE(comm->all_reduce_sum(gradient)->wait(kWait).ok());  // device
      ASSERT_TRUE(comm->all_reduce_sum(flag)->wait(kWait).ok());      // host
      EXPECT_TRUE(at::equal(gradient, at::full({4}, 3.0, at::kDouble)));
      EXPECT_TRUE(at::equal(flag, at::full({1}, 3.0F)));
      at::Tensor gathered = at::empty({8}, at::kDouble);
      ASSERT_TRUE(comm->all_gather(gradient, gathered)->wait(kWait).ok());  // device
      at::Tensor on_host = at::empty({8}, at::kFloat);
      EXPECT_THROW(comm->all_gather(gradient, on_host), Error);  // one side each, or neither can move it
      ASSERT_TRUE(comm->barrier()->wait(kWait).ok());            // host: orders host work
      // A 1F1B exchange on the device; then one with a tensor on each side, each going to its own:
      // rank 0 sends on the device and receives on the host, rank 1 the other way round.
      at::Tensor out = at::full({3}, 10.0 * r, at::kDouble), in = at::empty({3}, at::kDouble);
      ASSERT_TRUE(comm->send_recv(out, 1 - r, 1, in, 1 - r, 1)->wait(kWait).ok());
      EXPECT_TRUE(at::equal(in, at::full({3}, 10.0 * (1 - r), at::kDouble)));
      at::Tensor host_out = at::full({3}, 5.0F), host_in = at::empty({3}, at::kFloat);
      if (r == 0) {
        ASSERT_TRUE(comm->send_recv(out, 1, 2, host_in, 1, 3)->wait(kWait).ok());
        EXPECT_TRUE(at::equal(host_in, host_out));
      } else {
        ASSERT_TRUE(comm->send_recv(host_out, 0, 3, in, 0, 2)->wait(kWait).ok());
        EXPECT_TRUE(at::equal(in, at::zeros({3}, at::kDouble)));
      }
      // Groups split from it route the same way.
      std::unique_ptr<Communicator> alone = comm->split(r, 0, kWait);
      EXPECT_EQ(alone->size(), 1);
      at::Tensor mine = at::full({2}, 1.0, at::kDouble);
      ASSERT_TRUE(alone->all_reduce_sum(mine)->wait(kWait).ok());
    });
  }
  for (auto& t : ranks) t.join();
  // A rank: all_reduce, all_gather, the exchange's send and recv, one side of the mixed exchange and
  // the split group's all_reduce on the device; all_reduce, barrier and the other side on the host.
  EXPECT_EQ(device_ops.load(), kRanks * 6);
  EXPECT_EQ(host_ops.load(), kRanks * 3);
}

TEST(CollectivePath, ParallelBackendChoices) {
  BackendFacts cpu{false, 4, 2, 0, true, "h"};
  EXPECT_EQ(*choose_collective_path("auto", cpu), CollectivePath::kHost);
  EXPECT_EQ(*choose_collective_path("mpi", cpu), CollectivePath::kHost);
  BackendFacts gpus{true, 8, 8, 8, true, "node3"};
  EXPECT_EQ(*choose_collective_path("auto", gpus), CollectivePath::kHostStaged);  // NCCL is asked for by name
  EXPECT_EQ(*choose_collective_path("mpi", gpus), CollectivePath::kHostStaged);
  EXPECT_EQ(*choose_collective_path("nccl", gpus), CollectivePath::kNccl);
  BackendFacts one{true, 1, 1, 1, true, "h"};
  EXPECT_EQ(*choose_collective_path("nccl", one), CollectivePath::kHost);  // one rank moves nothing
  EXPECT_EQ(*choose_collective_path("local", one), CollectivePath::kHost);
  const auto refused = [](std::string_view wanted, const BackendFacts& facts) {
    auto path = choose_collective_path(wanted, facts);
    EXPECT_EQ(path.status().code(), absl::StatusCode::kInvalidArgument) << wanted;
    return std::string(path.status().message());
  };
  EXPECT_NE(refused("nccl", cpu).find("runtime.device is cpu"), std::string::npos);
  BackendFacts shared{true, 2, 2, 1, true, "node3"};
  EXPECT_NE(refused("nccl", shared).find("2 ranks on node3 share 1 GPU"), std::string::npos);
  EXPECT_EQ(*choose_collective_path("auto", shared), CollectivePath::kHostStaged);
  BackendFacts unbuilt{true, 2, 2, 2, false, "h"};
  EXPECT_NE(refused("nccl", unbuilt).find("no NCCL"), std::string::npos);
  EXPECT_NE(refused("local", cpu).find("has 4 ranks"), std::string::npos);
  EXPECT_NE(refused("gloo", cpu).find("'gloo' is not a backend"), std::string::npos);
}

}  // namespace
}  // namespace aln::dist
