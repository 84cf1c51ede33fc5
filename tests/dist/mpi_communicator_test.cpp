// Runs under `mpirun -np N`. Inputs are small integers so the reduced result is exact and compared
// with ==, not a tolerance (the nccl-tests habit).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include <ATen/ATen.h>

#include <mpi.h>

#include "core/error.h"
#include "core/status.h"
#include "distributed/dist_error.h"
#include "distributed/mpi_backend.h"
#include "distributed/nccl_backend.h"
#include "distributed/nccl_info.h"
#include "distributed/service.h"

namespace aln::dist {
namespace {

MpiRuntime* g_runtime = nullptr;  // owned by main(); tests only borrow it

TEST(MpiCommunicator, AllReduceSumIsExact) {
  auto comm = g_runtime->world();
  const int n = comm->size();
  for (auto dtype : {at::kFloat, at::kDouble, at::kLong}) {
    // Element k on rank r holds r * 1000 + k; the sum is n*(n-1)/2 * 1000 + n*k.
    at::Tensor t = at::arange(4099, at::TensorOptions().dtype(dtype)) + comm->rank() * 1000;
    ASSERT_TRUE(comm->all_reduce_sum(t)->wait(std::chrono::seconds(30)).ok());
    at::Tensor want = at::arange(4099, at::TensorOptions().dtype(dtype)) * n + (n * (n - 1) / 2) * 1000;
    EXPECT_TRUE(at::equal(t, want)) << "dtype " << dtype;
  }
}

TEST(MpiCommunicator, AllGatherInRankOrder) {
  auto comm = g_runtime->world();
  const int n = comm->size();
  at::Tensor in = at::arange(37, at::kDouble) + comm->rank() * 1000;
  at::Tensor out = at::empty({n * 37}, at::kDouble);
  ASSERT_TRUE(comm->all_gather(in, out)->wait(std::chrono::seconds(30)).ok());
  for (int r = 0; r < n; ++r) EXPECT_TRUE(at::equal(out.narrow(0, r * 37, 37), at::arange(37, at::kDouble) + r * 1000));
  at::Tensor wrong = at::empty({5}, at::kDouble);
  EXPECT_THROW(comm->all_gather(in, wrong), Error);
}

TEST(MpiCommunicator, ReduceScatterSumsEachRanksBlock) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  for (auto dtype : {at::kFloat, at::kDouble, at::kLong}) {
    // Element k of block b on rank q holds b * 1000 + q * 10 + k % 7 (small integers: exact sums).
    at::Tensor in = (at::arange(n, at::TensorOptions().dtype(dtype)) * 1000).repeat_interleave(41) +
                    at::arange(41, at::TensorOptions().dtype(dtype)).remainder(7).repeat({n}) + r * 10;
    at::Tensor out = at::empty({41}, at::TensorOptions().dtype(dtype));
    ASSERT_TRUE(comm->reduce_scatter_sum(in, out)->wait(std::chrono::seconds(30)).ok());
    at::Tensor want = at::arange(41, at::TensorOptions().dtype(dtype)).remainder(7) * n + (r * 1000) * n +
                      (n * (n - 1) / 2) * 10;
    EXPECT_TRUE(at::equal(out, want)) << "dtype " << dtype;
  }
  at::Tensor wrong = at::empty({5}, at::kDouble);
  at::Tensor in = at::zeros({41 * n}, at::kDouble);
  EXPECT_THROW(comm->reduce_scatter_sum(in, wrong), Error);
}

TEST(MpiRuntime, NodeLocalRanksNumberTheRanksOfThisHost) {
  // Every rank of this test runs on one host (mpirun on loopback): node-local rank = world rank.
  auto comm = g_runtime->world();
  EXPECT_EQ(g_runtime->node_local_size(), comm->size());
  EXPECT_EQ(g_runtime->node_local_rank(), comm->rank());
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  auto comm = g_runtime->world();
  for (int root = 0; root < comm->size(); ++root) {
    at::Tensor t = at::full({17}, comm->rank() == root ? 42 + root : -1, at::kInt);
    ASSERT_TRUE(comm->broadcast(t, root)->wait(std::chrono::seconds(30)).ok());
    EXPECT_TRUE(at::equal(t, at::full({17}, 42 + root, at::kInt)));
  }
}

TEST(MpiCommunicator, SendRecvAlongARing) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  // Each rank sends to the next and receives from the previous, with two tags in flight at once
  // (a pipeline stage's activations and gradients).
  at::Tensor out_a = at::arange(1000, at::kFloat) + r, out_b = at::full({3, 5}, r * 10.0, at::kDouble);
  at::Tensor in_a = at::empty({1000}, at::kFloat), in_b = at::empty({3, 5}, at::kDouble);
  auto recv_b = comm->recv(in_b, (r + n - 1) % n, 1);
  auto recv_a = comm->recv(in_a, (r + n - 1) % n, 0);
  auto send_a = comm->send(out_a, (r + 1) % n, 0);
  auto send_b = comm->send(out_b, (r + 1) % n, 1);
  for (auto* w : {recv_a.get(), recv_b.get(), send_a.get(), send_b.get()}) {
    ASSERT_TRUE(w->wait(std::chrono::seconds(30)).ok());
  }
  const int prev = (r + n - 1) % n;
  EXPECT_TRUE(at::equal(in_a, at::arange(1000, at::kFloat) + prev));
  EXPECT_TRUE(at::equal(in_b, at::full({3, 5}, prev * 10.0, at::kDouble)));
  EXPECT_THROW(comm->send(out_a, r, 0), Error);  // to itself
  EXPECT_THROW(comm->recv(in_a, n, 0), Error);   // no such rank
}

// A 1F1B step's grouped exchange: every rank sends to the next and receives from the previous in
// one send_recv, all at once, with messages past MPI's eager size (each send completes only once
// its receive is posted). One Work covers both; a stalled peer shows as the receive, in full time.
TEST(MpiCommunicator, SendRecvTogetherAlongARing) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  const int64_t big = 1 << 20;  // 4 MiB of floats
  at::Tensor out = at::arange(big, at::kFloat) + r, in = at::empty({big}, at::kFloat);
  auto both = comm->send_recv(out, (r + 1) % n, 3, in, (r + n - 1) % n, 3);
  ASSERT_TRUE(both->wait(std::chrono::seconds(30)).ok());
  EXPECT_TRUE(both->done());
  EXPECT_TRUE(at::equal(in, at::arange(big, at::kFloat) + (r + n - 1) % n));
  // Rank 0 alone: nobody answers within the wait, which names the receive and the whole 200 ms.
  at::Tensor lone_out = at::ones({4}), twice = at::full({4}, 2.0F), lone_in = at::empty({4});
  std::unique_ptr<Work> lone;
  if (r == 0) {
    lone = comm->send_recv(lone_out, 1, 4, lone_in, 1, 5);
    const absl::Status s = lone->wait(std::chrono::milliseconds(200));
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(s.message().find("recv from 1 tag 5"), std::string::npos) << s;
    EXPECT_NE(s.message().find("did not complete within 200 ms"), std::string::npos) << s;
  }
  ASSERT_TRUE(g_runtime->world()->barrier()->wait(std::chrono::seconds(30)).ok());
  if (r == 1) lone = comm->send_recv(twice, 0, 5, lone_in, 0, 4);
  if (r <= 1) {
    ASSERT_TRUE(lone->wait(std::chrono::seconds(30)).ok());
    EXPECT_TRUE(at::equal(lone_in, at::full({4}, r == 0 ? 2.0F : 1.0F)));
  }
}

// 16-bit floats (pipeline activations under mixed precision) are moved as 16-bit words, every bit
// kept; a sum of them is refused (MPI has no such type).
TEST(MpiCommunicator, SixteenBitFloatsAreMovedNotSummed) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // Values no 16-bit float holds exactly, rounded: the bits must arrive as they left.
    const at::Tensor mine = (at::randn({257}, at::TensorOptions().dtype(at::kFloat)) * (r + 1) / 3).to(dtype);
    at::Tensor all = at::empty({n * 257}, mine.options());
    ASSERT_TRUE(comm->all_gather(mine, all)->wait(std::chrono::seconds(30)).ok());
    EXPECT_TRUE(at::equal(all.narrow(0, r * 257, 257), mine)) << dtype;
    at::Tensor root = mine.clone();
    ASSERT_TRUE(comm->broadcast(root, 0)->wait(std::chrono::seconds(30)).ok());
    EXPECT_TRUE(at::equal(root, all.narrow(0, 0, 257))) << dtype;
    if (n >= 2) {
      at::Tensor in = at::empty_like(mine);
      auto recv = comm->recv(in, (r + n - 1) % n, 0);
      auto send = comm->send(mine, (r + 1) % n, 0);
      ASSERT_TRUE(recv->wait(std::chrono::seconds(30)).ok());
      ASSERT_TRUE(send->wait(std::chrono::seconds(30)).ok());
      EXPECT_TRUE(at::equal(in, all.narrow(0, ((r + n - 1) % n) * 257, 257))) << dtype;
    }
    at::Tensor sum = mine.clone();
    try {
      comm->all_reduce_sum(sum);
      ADD_FAILURE() << "a sum of " << dtype << " was started";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sum them in float32"), std::string::npos) << e.what();
    }
  }
}

TEST(MpiCommunicator, SplitMakesIndependentGroups) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  // Even and odd ranks, ordered by descending world rank.
  auto group = comm->split(r % 2, -r, std::chrono::seconds(30));
  const int members = (n + 1 - r % 2) / 2;
  EXPECT_EQ(group->size(), members);
  at::Tensor t = at::full({4}, static_cast<double>(r), at::kDouble);
  ASSERT_TRUE(group->all_reduce_sum(t)->wait(std::chrono::seconds(30)).ok());
  double want = 0;
  for (int k = r % 2; k < n; k += 2) want += k;
  EXPECT_TRUE(at::equal(t, at::full({4}, want, at::kDouble)));
  // Rank 0 of the group is its highest world rank.
  at::Tensor top = at::full({1}, static_cast<double>(r), at::kDouble);
  ASSERT_TRUE(group->broadcast(top, 0)->wait(std::chrono::seconds(30)).ok());
  EXPECT_EQ(top.item<double>(), static_cast<double>(r % 2 + 2 * (members - 1)));
}

// A rank that does not come to a split (stopped or dead while the job starts) is a DistError on the
// others after their timeout, not a hang in MPI_Comm_split. Rank 0 stands for the stopped rank: only
// when every other rank has said (on a second communicator) that its split gave up does it join the
// barrier their splits posted, so the groups end in step and no rank can reach MPI_Comm_split.
TEST(MpiCommunicator, SplitTimesOutWhenARankNeverComes) {
  auto comm = g_runtime->world();
  auto side = g_runtime->world();
  if (comm->rank() == 0) {
    for (int r = 1; r < comm->size(); ++r) {
      at::Tensor gave_up = at::zeros({1}, at::kLong);
      ASSERT_TRUE(side->recv(gave_up, r, 7)->wait(std::chrono::seconds(30)).ok());
      EXPECT_EQ(gave_up.item<int64_t>(), 1) << "rank " << r;
    }
    ASSERT_TRUE(comm->barrier()->wait(std::chrono::seconds(30)).ok());
    return;
  }
  // The barrier this rank posted stays in flight until rank 0 comes: the communicator must outlive it
  // (a job frees nothing here: it aborts), so the test lets it go unfreed.
  Communicator* kept = comm.release();
  try {
    kept->split(0, kept->rank(), std::chrono::milliseconds(300));
    ADD_FAILURE() << "the split returned without rank 0";
  } catch (const DistError& e) {
    EXPECT_EQ(e.op(), "split");
    EXPECT_NE(std::string(e.what()).find("ranks reached the communicator split"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("did not complete within 300 ms"), std::string::npos) << e.what();
  }
  at::Tensor gave_up = at::ones({1}, at::kLong);
  ASSERT_TRUE(side->send(gave_up, 0, 7)->wait(std::chrono::seconds(30)).ok());
}

// The NCCL backend's parts that run without a GPU: the unique id made by rank 0 reaches every rank
// over MPI intact; without a device, creating the communicator fails on every rank with a message
// that says so (no crash, no hang); the dtype table.
// Rank 0 serves the others (the reward ranks' pattern): each client asks several times, one request
// fails in the handler (an error reply; the server goes on), then says goodbye.
TEST(Service, ServerAnswersEveryClientUntilGoodbye) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  const auto timeout = std::chrono::seconds(30);
  if (r == 0) {
    std::vector<int> clients;
    for (int c = 1; c < n; ++c) clients.push_back(c);
    int served = 0;
    absl::Status s = serve(
        comm.get(), clients,
        [&](int client, const aln::v1::ServiceRequest& request) {
          ALN_CHECK(request.method() == "double", "cannot ", request.method());
          auto t = from_proto(request.tensors(0));
          ALN_THROW_IF_ERROR(t.status());
          aln::v1::ServiceReply reply;
          to_proto(*t * 2 + client, reply.add_tensors());
          ++served;
          return reply;
        },
        timeout);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(served, 3 * (n - 1));
  } else {
    ServiceClient client(comm.get(), 0);
    for (int k = 0; k < 3; ++k) {
      aln::v1::ServiceRequest request;
      request.set_method("double");
      to_proto(at::arange(6, at::kLong).reshape({2, 3}) + k, request.add_tensors());
      auto reply = client.call(request, timeout);
      ASSERT_TRUE(reply.ok()) << reply.status();
      auto t = from_proto(reply->tensors(0));
      ASSERT_TRUE(t.ok());
      EXPECT_TRUE(at::equal(*t, (at::arange(6, at::kLong).reshape({2, 3}) + k) * 2 + r));
    }
    aln::v1::ServiceRequest bad;
    bad.set_method("triple");
    auto failed = client.call(bad, timeout);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
    EXPECT_NE(failed.status().message().find("request \"triple\" to rank 0 failed there: "), std::string::npos)
        << failed.status();
    EXPECT_NE(failed.status().message().find("cannot triple"), std::string::npos) << failed.status();
    EXPECT_TRUE(client.goodbye(timeout).ok());
  }
}

// A policy rank's rollout thread: calls made from a thread of their own, beside collectives on
// another communicator in the main thread, are answered; a call whose owner goes away (the flag
// set while the server is still working) ends Cancelled at once instead of waiting out its timeout.
TEST(Service, CallsFromAThreadAreAnsweredOrCancelled) {
  auto comm = g_runtime->world();
  const int n = comm->size(), r = comm->rank();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  auto side = comm->split(0, r, std::chrono::seconds(30));  // the training thread's collectives
  const auto timeout = std::chrono::seconds(30);
  if (r == 0) {
    std::vector<int> clients;
    for (int c = 1; c < n; ++c) clients.push_back(c);
    std::thread training([&] {
      for (int k = 0; k < 20; ++k) {
        at::Tensor t = at::ones({4}, at::kLong);
        ASSERT_TRUE(side->all_reduce_sum(t)->wait(timeout).ok());
        EXPECT_EQ(t[0].item<int64_t>(), n);
      }
    });
    absl::Status s = serve(
        comm.get(), clients,
        [&](int, const aln::v1::ServiceRequest& request) {
          std::this_thread::sleep_for(std::chrono::milliseconds(request.method() == "slow" ? 2000 : 10));
          aln::v1::ServiceReply reply;
          reply.set_text(request.method());
          return reply;
        },
        timeout);
    EXPECT_TRUE(s.ok()) << s;
    training.join();
  } else {
    ServiceClient client(comm.get(), 0);
    std::atomic<bool> cancelled{false};
    std::thread caller([&] {
      aln::v1::ServiceRequest quick;
      quick.set_method("quick");
      for (int k = 0; k < 5; ++k) {
        auto reply = client.call(quick, timeout, cancelled);
        ASSERT_TRUE(reply.ok()) << reply.status();
        EXPECT_EQ(reply->text(), "quick");
      }
    });
    for (int k = 0; k < 20; ++k) {
      at::Tensor t = at::ones({4}, at::kLong);
      ASSERT_TRUE(side->all_reduce_sum(t)->wait(timeout).ok());
      EXPECT_EQ(t[0].item<int64_t>(), n);
    }
    caller.join();
    std::thread owner([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      cancelled = true;
    });
    aln::v1::ServiceRequest slow;
    slow.set_method("slow");
    const auto start = std::chrono::steady_clock::now();
    auto abandoned = client.call(slow, timeout, cancelled);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    owner.join();
    EXPECT_EQ(abandoned.status().code(), absl::StatusCode::kCancelled) << abandoned.status();
    EXPECT_LT(took, 1.5) << "the cancelled call waited for the server";
    // Its reply may still come: the client refuses further calls rather than take it for theirs.
    std::atomic<bool> fresh{false};
    aln::v1::ServiceRequest quick;
    quick.set_method("quick");
    auto refused = client.call(quick, timeout, fresh);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kCancelled) << refused.status();
    EXPECT_NE(refused.status().message().find("not sent: an earlier request \"slow\""), std::string::npos)
        << refused.status();
    EXPECT_TRUE(client.goodbye(timeout).ok());  // the only message a cancelled client may still send
  }
}

TEST(Service, TensorsSurviveTheTripAndBadOnesAreRefused) {
  for (const at::Tensor& t :
       {at::randn({3, 4}, at::kFloat), at::randn({5}, at::kDouble).t(), at::arange(12, at::kLong).reshape({3, 4}).t(),
        at::ones({2, 2}, at::kBool), at::randn({4}, at::kFloat).to(at::kBFloat16), at::empty({0, 3}, at::kInt)}) {
    aln::v1::TensorData data;
    to_proto(t, &data);
    auto back = from_proto(data);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(at::equal(*back, t)) << t.scalar_type();
  }
  aln::v1::TensorData data;
  to_proto(at::ones({2, 3}, at::kFloat), &data);
  data.mutable_data()->resize(20);
  EXPECT_NE(from_proto(data).status().message().find("6 float32 elements arrived with 20 bytes"), std::string::npos);
  data.set_dtype("complex7");
  EXPECT_NE(from_proto(data).status().message().find("\"complex7\" unknown"), std::string::npos);
}

TEST(NcclBackend, BootstrapsTheUniqueIdOverMpi) {
  if (!nccl_compiled()) GTEST_SKIP() << "built without CUDA/NCCL";
  auto comm = g_runtime->world();
  auto id = bootstrap_nccl_unique_id(*comm, std::chrono::seconds(30));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_EQ(id->size(), 128u);  // NCCL_UNIQUE_ID_BYTES
  EXPECT_NE(*id, std::string(128, '\0'));
  // Every rank holds rank 0's bytes.
  at::Tensor mine = at::empty({128}, at::kByte);
  std::memcpy(mine.data_ptr(), id->data(), 128);
  at::Tensor all = at::empty({128 * comm->size()}, at::kByte);
  ASSERT_TRUE(comm->all_gather(mine, all)->wait(std::chrono::seconds(30)).ok());
  for (int r = 1; r < comm->size(); ++r) EXPECT_TRUE(at::equal(all.narrow(0, r * 128, 128), mine));
}

TEST(NcclBackend, WithoutAGpuCreationFailsClearlyOnEveryRank) {
  if (!nccl_compiled()) GTEST_SKIP() << "built without CUDA/NCCL";
  auto comm = g_runtime->world();
  auto nccl = make_nccl_communicator(*comm, 0, std::chrono::seconds(30));
  if (nccl.ok()) GTEST_SKIP() << "a GPU is present";
  EXPECT_EQ(nccl.status().code(), absl::StatusCode::kFailedPrecondition) << nccl.status();
  EXPECT_NE(nccl.status().message().find("needs a CUDA device"), std::string::npos) << nccl.status();
}

TEST(NcclBackend, DtypeTable) {
  if (!nccl_compiled()) GTEST_SKIP() << "built without CUDA/NCCL";
  EXPECT_TRUE(nccl_data_type(at::kFloat).has_value());
  EXPECT_TRUE(nccl_data_type(at::kBFloat16).has_value());
  EXPECT_NE(nccl_data_type(at::kFloat), nccl_data_type(at::kDouble));
  EXPECT_FALSE(nccl_data_type(at::kBool).has_value());
  EXPECT_FALSE(nccl_data_type(at::kComplexFloat).has_value());
}

TEST(MpiCommunicator, WaitTimesOutNamingRankAndOperation) {
  auto comm = g_runtime->world();
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  // Rank 0 enters an all-reduce the others join only after it gave up: its wait must time out
  // with a message naming the rank and the operation instead of hanging.
  at::Tensor t = at::ones({8});
  std::unique_ptr<Work> work;
  if (comm->rank() == 0) {
    work = comm->all_reduce_sum(t);
    absl::Status s = work->wait(std::chrono::milliseconds(200));
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(s.message().find("rank 0 on "), std::string::npos) << s;
    EXPECT_NE(s.message().find("all_reduce #1 did not complete within 200 ms"), std::string::npos) << s;
    // The flight recorder names what this rank was doing.
    EXPECT_NE(s.message().find("last collectives of this rank (oldest first): #1 all_reduce 8 x Float, pending for"),
              std::string::npos)
        << s;
  }
  // Everyone meets at a barrier, then the late ranks join so the operation completes cleanly.
  ASSERT_TRUE(g_runtime->world()->barrier()->wait(std::chrono::seconds(30)).ok());
  if (comm->rank() != 0) work = comm->all_reduce_sum(t);
  ASSERT_TRUE(work->wait(std::chrono::seconds(30)).ok());
  EXPECT_TRUE(at::equal(t, at::full({8}, static_cast<float>(comm->size()))));
}

}  // namespace
}  // namespace aln::dist

namespace {

// `--stall-inside-split` (ctest mpi_split_stall_np2): rank 1 meets rank 0 in the barrier that opens
// rank 0's split, then stops answering, which leaves rank 0 inside MPI_Comm_split itself. Its
// watchdog must end it (exit 1, with a message) after the 3 s timeout (3 s, not less, so that a
// loaded machine cannot make rank 0 give up in the barrier already), and mpirun the job, long
// before rank 1's sleep ends. Returns this rank's exit code if the job was not ended.
int stall_inside_split(aln::dist::MpiRuntime& runtime) {
  auto comm = runtime.world(std::chrono::seconds(30));
  if (comm->rank() == 0) {
    comm->split(0, 0, std::chrono::seconds(3));
    std::fprintf(stderr, "FAIL: the split returned although rank 1 never entered it\n");
    return 1;
  }
  if (!comm->barrier()->wait(std::chrono::seconds(30)).ok()) return 1;
  std::this_thread::sleep_for(std::chrono::minutes(10));
  std::fprintf(stderr, "FAIL: the job was not ended while rank 0 waited inside the split\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto runtime = aln::dist::MpiRuntime::init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  if (argc > 1 && std::strcmp(argv[1], "--stall-inside-split") == 0) return stall_inside_split(**runtime);
  aln::dist::g_runtime = runtime->get();
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints gtest's report, so the ctest log is one readable report.
  if ((*runtime)->world_rank() != 0) {
    delete ::testing::UnitTest::GetInstance()->listeners().Release(
        ::testing::UnitTest::GetInstance()->listeners().default_result_printer());
  }
  int result = RUN_ALL_TESTS();
  // Every rank must agree on failure so mpirun's exit code reflects any rank's failure.
  int global = 0;
  MPI_Allreduce(&result, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return global;
}
