// The in-process backend honours the Communicator contract the MPI backend does (tests/dist/
// mpi_communicator_test.cpp checks MPI the same way): inputs built of small integers so the exact
// results are known and compared with ==.
#include "distributed/thread_backend.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "distributed/dist_error.h"

namespace aln::dist {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kWait{10000};

TEST(ThreadBackend, CollectivesGiveExactResults) {
  for (int n : {1, 2, 3, 4}) {
    run_thread_ranks(n, [n](Communicator& comm) {
      const int r = comm.rank();
      EXPECT_EQ(comm.size(), n);
      at::Tensor x = at::arange(5, at::kFloat) + static_cast<float>(r);
      ASSERT_TRUE(comm.all_reduce_sum(x)->wait(kWait).ok());
      const float ranks = static_cast<float>(n * (n - 1) / 2);
      EXPECT_TRUE(at::equal(x, at::arange(5, at::kFloat) * n + ranks));

      at::Tensor b = at::full({3}, static_cast<double>(r), at::kDouble);
      ASSERT_TRUE(comm.broadcast(b, n - 1)->wait(kWait).ok());
      EXPECT_TRUE(at::equal(b, at::full({3}, static_cast<double>(n - 1), at::kDouble)));

      at::Tensor in = at::full({2}, r, at::kLong);
      at::Tensor out = at::empty({2 * n}, at::kLong);
      ASSERT_TRUE(comm.all_gather(in, out)->wait(kWait).ok());
      EXPECT_TRUE(at::equal(out, at::arange(n, at::kLong).repeat_interleave(2)));

      // Block k of rank r's input holds 100 * k + r: rank r's output is 100 * r * n + n(n-1)/2.
      at::Tensor blocks = (at::arange(n, at::kDouble) * 100).repeat_interleave(3) + r;
      at::Tensor mine = at::empty({3}, at::kDouble);
      ASSERT_TRUE(comm.reduce_scatter_sum(blocks, mine)->wait(kWait).ok());
      EXPECT_TRUE(at::equal(mine, at::full({3}, 100.0 * r * n + n * (n - 1) / 2, at::kDouble)));
      at::Tensor short_input = at::zeros({3 * n + 1}, at::kDouble);
      EXPECT_THROW(comm.reduce_scatter_sum(short_input, mine), Error);
      ASSERT_TRUE(comm.barrier()->wait(kWait).ok());
    });
  }
}

TEST(ThreadBackend, SumsAddInRankOrder) {
  // 1e8 + 1 - 1e8 in float32 depends on the order: rank order gives (1e8 + 1) + -1e8 = 0.
  run_thread_ranks(3, [](Communicator& comm) {
    const float v[] = {1e8f, 1.0f, -1e8f};
    at::Tensor x = at::full({1}, v[comm.rank()], at::kFloat);
    ASSERT_TRUE(comm.all_reduce_sum(x)->wait(kWait).ok());
    EXPECT_EQ(x.item<float>(), (1e8f + 1.0f) + -1e8f);
  });
}

TEST(ThreadBackend, ReduceScatterGivesTheBitsOfAnAllReduce) {
  // Each rank's block of a reduce-scatter is the same bits as that block of an all-reduce (both add
  // in rank order), which the sharded optimizer's equality with the unsharded one rests on.
  run_thread_ranks(3, [](Communicator& comm) {
    at::Tensor x = at::sin(at::arange(3 * 5, at::kFloat) * static_cast<float>(comm.rank() + 1)) * 1e4f;
    at::Tensor whole = x.clone();
    ASSERT_TRUE(comm.all_reduce_sum(whole)->wait(kWait).ok());
    at::Tensor mine = at::empty({5}, at::kFloat);
    ASSERT_TRUE(comm.reduce_scatter_sum(x, mine)->wait(kWait).ok());
    EXPECT_TRUE(at::equal(mine, whole.narrow(0, comm.rank() * 5, 5)));
  });
}

TEST(ThreadBackend, MessagesArriveInOrderPerTag) {
  run_thread_ranks(2, [](Communicator& comm) {
    if (comm.rank() == 0) {
      for (int k = 0; k < 3; ++k) {
        at::Tensor t = at::full({4}, k, at::kFloat);
        ASSERT_TRUE(comm.send(t, 1, 7)->wait(kWait).ok());
      }
      at::Tensor other = at::full({2}, 99, at::kFloat);
      ASSERT_TRUE(comm.send(other, 1, 8)->wait(kWait).ok());
    } else {
      // The tag-8 message is received first although it was sent last.
      at::Tensor other = at::empty({2}, at::kFloat);
      ASSERT_TRUE(comm.recv(other, 0, 8)->wait(kWait).ok());
      EXPECT_EQ(other[0].item<float>(), 99.0f);
      std::vector<at::Tensor> got(3, at::Tensor());
      std::vector<std::unique_ptr<Work>> pending;
      for (int k = 0; k < 3; ++k) {
        got[static_cast<size_t>(k)] = at::empty({4}, at::kFloat);
        pending.push_back(comm.recv(got[static_cast<size_t>(k)], 0, 7));
      }
      for (int k = 2; k >= 0; --k) ASSERT_TRUE(pending[static_cast<size_t>(k)]->wait(kWait).ok());
      for (int k = 0; k < 3; ++k) EXPECT_EQ(got[static_cast<size_t>(k)][0].item<float>(), static_cast<float>(k));
    }
  });
}

TEST(ThreadBackend, SplitOrdersByKeyAndKeepsGroupsApart) {
  run_thread_ranks(4, [](Communicator& comm) {
    const int r = comm.rank();
    // Colors: even and odd ranks; keys reverse the order inside each group.
    auto sub = comm.split(r % 2, -r, kWait);
    EXPECT_EQ(sub->size(), 2);
    EXPECT_EQ(sub->rank(), r < 2 ? 1 : 0);
    at::Tensor x = at::full({1}, r, at::kLong);
    ASSERT_TRUE(sub->all_reduce_sum(x)->wait(kWait).ok());
    EXPECT_EQ(x.item<int64_t>(), r % 2 == 0 ? 0 + 2 : 1 + 3);
  });
}

TEST(ThreadBackend, AMissingRankIsATimeoutNamingTheOperation) {
  std::atomic<bool> checked{false};
  run_thread_ranks(2, [&](Communicator& comm) {
    if (comm.rank() == 1) return;  // never joins
    at::Tensor x = at::ones({1}, at::kFloat);
    absl::Status s = comm.all_reduce_sum(x)->wait(milliseconds(50));
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(s.message().find("rank 0 (thread backend): all_reduce_sum #0 did not complete within 50 ms"),
              std::string::npos)
        << s.message();
    EXPECT_THROW(comm.split(0, 0, milliseconds(50)), DistError);
    checked = true;
  });
  EXPECT_TRUE(checked);
}

TEST(ThreadBackend, MismatchedCollectivesAreAnError) {
  EXPECT_THROW(run_thread_ranks(2,
                                [](Communicator& comm) {
                                  at::Tensor x = at::ones({1}, at::kFloat);
                                  if (comm.rank() == 0) {
                                    (void)comm.all_reduce_sum(x)->wait(milliseconds(200));
                                  } else {
                                    std::this_thread::sleep_for(milliseconds(20));
                                    (void)comm.broadcast(x, 0)->wait(milliseconds(200));
                                  }
                                }),
               Error);
}

}  // namespace
}  // namespace aln::dist
