// The host-staged communicator (how GPU ranks use MPI): made to stage host tensors too, so every copy
// in and back runs here without a GPU, over the thread backend. Results must be exactly those of
// the unstaged backend, written into the caller's tensors (not into the staging buffers).
#include "distributed/host_staged.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>

#include "distributed/thread_backend.h"

namespace aln::dist {
namespace {

constexpr std::chrono::milliseconds kWait{10000};

TEST(HostStaged, CollectivesWriteTheirResultsBackIntoTheCallersTensors) {
  run_thread_ranks(3, [](Communicator& inner) {
    std::unique_ptr<Communicator> comm = make_host_staged(&inner, /*stage_host_tensors=*/true);
    const int r = comm->rank();
    EXPECT_EQ(comm->size(), 3);
    EXPECT_EQ(comm->backend_name(), "thread+host-staged");

    at::Tensor x = at::arange(5, at::kFloat) + static_cast<float>(r);
    const void* before = x.data_ptr();
    ASSERT_TRUE(comm->all_reduce_sum(x)->wait(kWait).ok());
    EXPECT_EQ(x.data_ptr(), before);  // in place, as the contract says
    EXPECT_TRUE(at::equal(x, at::arange(5, at::kFloat) * 3 + 3));

    at::Tensor b = at::full({4}, static_cast<double>(r + 10), at::kDouble);
    ASSERT_TRUE(comm->broadcast(b, 2)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(b, at::full({4}, 12.0, at::kDouble)));

    at::Tensor mine = at::full({2}, static_cast<int64_t>(r), at::kLong);
    at::Tensor all = at::empty({6}, at::kLong);
    ASSERT_TRUE(comm->all_gather(mine, all)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(all, at::tensor({0, 0, 1, 1, 2, 2}, at::kLong)));

    at::Tensor in = at::arange(6, at::kFloat) * static_cast<float>(r + 1);
    at::Tensor out = at::empty({2}, at::kFloat);
    ASSERT_TRUE(comm->reduce_scatter_sum(in, out)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(out, (at::arange(6, at::kFloat) * 6).narrow(0, 2 * r, 2)));

    // Point to point, and done() as the way to finish (the overlap code polls it).
    if (r == 0) {
      at::Tensor msg = at::tensor({7.0f, 8.0f});
      auto sent = comm->send(msg, 1, 5);
      msg.fill_(-1);  // the staged copy was taken when the send was issued
      ASSERT_TRUE(sent->wait(kWait).ok());
    } else if (r == 1) {
      at::Tensor got = at::zeros({2}, at::kFloat);
      auto work = comm->recv(got, 0, 5);
      while (!work->done()) {
      }
      EXPECT_TRUE(at::equal(got, at::tensor({7.0f, 8.0f})));
    }

    // Groups split from a staged communicator stage too.
    std::unique_ptr<Communicator> half = comm->split(r % 2, r, kWait);
    EXPECT_EQ(half->backend_name(), "thread+host-staged");
    at::Tensor s = at::full({1}, static_cast<float>(r), at::kFloat);
    ASSERT_TRUE(half->all_reduce_sum(s)->wait(kWait).ok());
    EXPECT_EQ(s.item<float>(), r % 2 == 0 ? 2.0f : 1.0f);
  });
}

TEST(HostStaged, HostTensorsPassStraightThroughByDefault) {
  run_thread_ranks(2, [](Communicator& inner) {
    std::unique_ptr<Communicator> comm = make_host_staged(&inner);
    at::Tensor x = at::full({3}, 1.5f);
    ASSERT_TRUE(comm->all_reduce_sum(x)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(x, at::full({3}, 3.0f)));
  });
}

}  // namespace
}  // namespace aln::dist
