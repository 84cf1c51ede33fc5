// Control frames (distributed/control_channel.h) over the in-process backend: a message goes and
// comes back whole, a receiver watching several peers sees each frame once, a broadcast reaches
// every rank, and a broken size or payload is a clear error instead of a huge allocation or a hang.
#include "distributed/control_channel.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "aln/v1/control.pb.h"
#include "distributed/thread_backend.h"

namespace aln::dist {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kWait{10000};
constexpr FrameTags kTags{7, 8};

TEST(ControlChannel, MessagesArriveWhole) {
  run_thread_ranks(2, [](Communicator& comm) {
    if (comm.rank() == 0) {
      aln::v1::ServiceRequest request;
      request.set_method("score");
      request.set_text(std::string(100000, 'x'));
      ASSERT_TRUE(send_message(comm, 1, kTags, request, kWait).ok());
      aln::v1::ServiceRequest empty;
      ASSERT_TRUE(send_message(comm, 1, kTags, empty, kWait).ok());  // zero bytes is a frame too
    } else {
      aln::v1::ServiceRequest got;
      ASSERT_TRUE(receive_message(comm, 0, kTags, &got, kWait).ok());
      EXPECT_EQ(got.method(), "score");
      EXPECT_EQ(got.text().size(), 100000u);
      aln::v1::ServiceRequest second;
      second.set_method("stale");
      ASSERT_TRUE(receive_message(comm, 0, kTags, &second, kWait).ok());
      EXPECT_EQ(second.method(), "");
    }
  });
}

TEST(ControlChannel, ReceiverSeesEachFrameOnceFromEveryPeer) {
  run_thread_ranks(3, [](Communicator& comm) {
    if (comm.rank() != 0) {
      for (int i = 0; i < 3; ++i) {
        aln::v1::Heartbeat beat;
        beat.set_rank(comm.rank());
        beat.set_sequence(i);
        ASSERT_TRUE(send_message(comm, 0, kTags, beat, kWait).ok());
      }
      return;
    }
    std::vector<FrameReceiver> peers;
    for (int r = 1; r < 3; ++r) peers.emplace_back(comm, r, kTags);
    std::vector<std::vector<int64_t>> seen(3);
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while ((seen[1].size() < 3 || seen[2].size() < 3) && std::chrono::steady_clock::now() < deadline) {
      for (FrameReceiver& p : peers) {
        auto arrived = p.poll(kWait);
        ASSERT_TRUE(arrived.ok()) << arrived.status();
        if (!*arrived) continue;
        aln::v1::Heartbeat beat;
        ASSERT_TRUE(p.parse(&beat).ok());
        EXPECT_EQ(beat.rank(), p.peer());
        seen[p.peer()].push_back(beat.sequence());
        p.next();
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
    EXPECT_EQ(seen[1], (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(seen[2], (std::vector<int64_t>{0, 1, 2}));
  });
}

TEST(ControlChannel, BroadcastReachesEveryRank) {
  run_thread_ranks(3, [](Communicator& comm) {
    std::string payload = comm.rank() == 2 ? std::string("from the last stage\0with a zero", 31) : "ignored";
    ASSERT_TRUE(broadcast_frame(comm, 2, &payload, kWait).ok());
    EXPECT_EQ(payload, std::string("from the last stage\0with a zero", 31));
    std::string empty = comm.rank() == 0 ? "" : "stale";
    ASSERT_TRUE(broadcast_frame(comm, 0, &empty, kWait).ok());
    EXPECT_EQ(empty, "");
  });
}

TEST(ControlChannel, BrokenFramesAreClearErrors) {
  run_thread_ranks(2, [](Communicator& comm) {
    if (comm.rank() == 0) {
      at::Tensor size = at::full({1}, int64_t{1} << 40, at::kLong);  // no such frame
      ASSERT_TRUE(comm.send(size, 1, kTags.size)->wait(kWait).ok());
      at::Tensor small = at::full({1}, int64_t{3}, at::kLong);
      at::Tensor junk = at::full({3}, 0xff, at::kByte);
      ASSERT_TRUE(comm.send(small, 1, kTags.size)->wait(kWait).ok());
      ASSERT_TRUE(comm.send(junk, 1, kTags.bytes)->wait(kWait).ok());
      at::Tensor lonely = at::full({1}, int64_t{5}, at::kLong);  // a size whose bytes never come
      ASSERT_TRUE(comm.send(lonely, 1, kTags.size)->wait(kWait).ok());
    } else {
      aln::v1::Heartbeat beat;
      absl::Status huge = receive_message(comm, 0, kTags, &beat, kWait);
      EXPECT_EQ(huge.code(), absl::StatusCode::kDataLoss);
      EXPECT_NE(huge.message().find("announced 1099511627776 bytes"), std::string_view::npos) << huge;
      absl::Status junk = receive_message(comm, 0, kTags, &beat, kWait);
      EXPECT_EQ(junk.code(), absl::StatusCode::kDataLoss);
      EXPECT_NE(junk.message().find("(3 bytes) does not parse as aln.v1.Heartbeat"), std::string_view::npos) << junk;
      FrameReceiver receiver(comm, 0, kTags);
      absl::StatusOr<bool> arrived = false;
      for (int i = 0; i < 1000 && arrived.ok() && !*arrived; ++i) arrived = receiver.poll(milliseconds(50));
      ASSERT_FALSE(arrived.ok());
      EXPECT_EQ(arrived.status().code(), absl::StatusCode::kDeadlineExceeded);
    }
  });
}

}  // namespace
}  // namespace aln::dist
