#include "distributed/thread_backend.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "distributed/dist_error.h"

namespace aln::dist {
namespace {

// What the ranks of one group share. Collective number `seq` of every rank meets in slots[seq].
struct Hub {
  explicit Hub(int n) : size(n) {}
  struct Slot {
    std::string op;
    std::vector<at::Tensor> inputs;                // copies, by rank
    std::vector<std::pair<int, int>> split_args;   // (color, key) by rank
    std::map<int, std::shared_ptr<Hub>> children;  // split: one hub per color
    int arrived = 0;
    int finished = 0;
  };
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, Slot> slots;
  // Point to point: message k from `from` to `to` with `tag`, in the order sent.
  using Channel = std::tuple<int, int, int>;
  std::map<Channel, std::map<int64_t, at::Tensor>> mail;
  std::map<Channel, int64_t> sent, posted;
};

std::string describe(int rank, const std::string& op, int64_t seq) {
  return absl::StrCat("rank ", rank, " (thread backend): ", op, " #", seq);
}

class CollectiveWork final : public Work {
 public:
  using Finish = std::function<void(Hub::Slot&)>;
  CollectiveWork(std::shared_ptr<Hub> hub, int rank, int64_t seq, Finish finish)
      : hub_(std::move(hub)), rank_(rank), seq_(seq), finish_(std::move(finish)) {}
  ~CollectiveWork() override {
    if (!done_) release();
  }

  absl::Status wait(std::chrono::milliseconds timeout) override {
    if (done_) return absl::OkStatus();
    std::unique_lock<std::mutex> lock(hub_->mu);
    Hub::Slot& slot = hub_->slots.at(seq_);
    if (!hub_->cv.wait_for(lock, timeout, [&] { return slot.arrived == hub_->size; })) {
      return absl::DeadlineExceededError(absl::StrCat(describe(rank_, slot.op, seq_), " did not complete within ",
                                                      timeout.count(), " ms: ", slot.arrived, " of ", hub_->size,
                                                      " ranks had issued it"));
    }
    finish_(slot);
    done_ = true;
    if (++slot.finished == hub_->size) hub_->slots.erase(seq_);
    return absl::OkStatus();
  }
  bool done() override {
    if (done_) return true;
    std::lock_guard<std::mutex> lock(hub_->mu);
    return hub_->slots.at(seq_).arrived == hub_->size;
  }

 private:
  // Dropped unwaited (the job is failing): count this rank out so the slot can be freed.
  void release() {
    std::lock_guard<std::mutex> lock(hub_->mu);
    auto it = hub_->slots.find(seq_);
    if (it != hub_->slots.end() && ++it->second.finished == hub_->size) hub_->slots.erase(it);
  }
  std::shared_ptr<Hub> hub_;
  int rank_;
  int64_t seq_;
  Finish finish_;
  bool done_ = false;
};

class ReceiveWork final : public Work {
 public:
  ReceiveWork(std::shared_ptr<Hub> hub, Hub::Channel channel, int64_t index, at::Tensor out, std::string what)
      : hub_(std::move(hub)), channel_(channel), index_(index), out_(std::move(out)), what_(std::move(what)) {}
  absl::Status wait(std::chrono::milliseconds timeout) override {
    if (done_) return absl::OkStatus();
    std::unique_lock<std::mutex> lock(hub_->mu);
    auto& box = hub_->mail[channel_];
    if (!hub_->cv.wait_for(lock, timeout, [&] { return box.count(index_) > 0; })) {
      return absl::DeadlineExceededError(absl::StrCat(what_, " did not complete within ", timeout.count(), " ms"));
    }
    deliver_locked();
    return absl::OkStatus();
  }
  // Finished means the data is in the receiver's tensor (as with MPI_Test), so a caller that polls
  // done() may read it at once.
  bool done() override {
    if (done_) return true;
    std::lock_guard<std::mutex> lock(hub_->mu);
    if (hub_->mail[channel_].count(index_) == 0) return false;
    deliver_locked();
    return true;
  }

 private:
  void deliver_locked() {
    auto& box = hub_->mail[channel_];
    at::Tensor message = std::move(box.at(index_));
    box.erase(index_);
    ALN_CHECK(message.numel() == out_.numel() && message.scalar_type() == out_.scalar_type(), what_,
              ": the message has ", message.numel(), " elements of ", message.scalar_type(), ", the receiver expects ",
              out_.numel(), " of ", out_.scalar_type());
    out_.view(message.sizes()).copy_(message);
    done_ = true;
  }

  std::shared_ptr<Hub> hub_;
  Hub::Channel channel_;
  int64_t index_;
  at::Tensor out_;
  std::string what_;
  bool done_ = false;
};

class DoneWork final : public Work {
 public:
  absl::Status wait(std::chrono::milliseconds) override { return absl::OkStatus(); }
  bool done() override { return true; }
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<Hub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->size; }
  std::string backend_name() const override { return "thread"; }

  std::unique_ptr<Work> all_reduce_sum(at::Tensor& tensor) override {
    check_contiguous(tensor, "all_reduce_sum");
    at::Tensor out = tensor;
    return issue("all_reduce_sum", tensor, [out](Hub::Slot& slot) mutable {
      at::Tensor flat = out.view({-1});
      flat.copy_(slot.inputs[0].view({-1}));
      for (size_t r = 1; r < slot.inputs.size(); ++r) flat.add_(slot.inputs[r].view({-1}));
    });
  }
  std::unique_ptr<Work> broadcast(at::Tensor& tensor, int root) override {
    check_contiguous(tensor, "broadcast");
    check_peer(root, "broadcast");
    at::Tensor out = tensor;
    return issue("broadcast", tensor, [out, root](Hub::Slot& slot) mutable {
      out.view({-1}).copy_(slot.inputs[static_cast<size_t>(root)].view({-1}));
    });
  }
  std::unique_ptr<Work> all_gather(const at::Tensor& input, at::Tensor& output) override {
    check_contiguous(output, "all_gather");
    ALN_CHECK(output.numel() == input.numel() * size(), "all_gather: output must hold ", input.numel() * size(),
              " elements, has ", output.numel());
    at::Tensor out = output;
    const int64_t n = input.numel();
    return issue("all_gather", input, [out, n](Hub::Slot& slot) mutable {
      at::Tensor flat = out.view({-1});
      for (size_t r = 0; r < slot.inputs.size(); ++r) {
        flat.narrow(0, static_cast<int64_t>(r) * n, n).copy_(slot.inputs[r].view({-1}));
      }
    });
  }
  std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    check_contiguous(output, "reduce_scatter_sum");
    ALN_CHECK(input.scalar_type() == output.scalar_type(), "reduce_scatter_sum: output dtype differs from input's");
    ALN_CHECK(input.numel() == output.numel() * size(), "reduce_scatter_sum: input must hold ",
              output.numel() * size(), " elements (", size(), " ranks x ", output.numel(), "), has ", input.numel());
    at::Tensor out = output;
    const int64_t n = output.numel();
    const int64_t first = static_cast<int64_t>(rank_) * n;
    // Added in rank order, as all_reduce_sum: the same bits as block rank() of an all-reduce.
    return issue("reduce_scatter_sum", input, [out, n, first](Hub::Slot& slot) mutable {
      at::Tensor flat = out.view({-1});
      flat.copy_(slot.inputs[0].view({-1}).narrow(0, first, n));
      for (size_t r = 1; r < slot.inputs.size(); ++r) flat.add_(slot.inputs[r].view({-1}).narrow(0, first, n));
    });
  }
  std::unique_ptr<Work> barrier() override {
    return issue("barrier", at::Tensor(), [](Hub::Slot&) {});
  }
  std::unique_ptr<Work> send(const at::Tensor& tensor, int peer, int tag) override {
    check_peer(peer, "send");
    std::lock_guard<std::mutex> lock(hub_->mu);
    const Hub::Channel channel{rank_, peer, tag};
    hub_->mail[channel].emplace(hub_->sent[channel]++, tensor.detach().contiguous().clone());
    hub_->cv.notify_all();
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> recv(at::Tensor& tensor, int peer, int tag) override {
    check_contiguous(tensor, "recv");
    check_peer(peer, "recv");
    std::lock_guard<std::mutex> lock(hub_->mu);
    const Hub::Channel channel{peer, rank_, tag};
    return std::make_unique<ReceiveWork>(
        hub_, channel, hub_->posted[channel]++, tensor,
        absl::StrCat("rank ", rank_, " (thread backend): recv from ", peer, " tag ", tag));
  }
  std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) override {
    std::shared_ptr<Hub> child;
    int child_rank = 0;
    auto work = issue(
        "split", at::Tensor(),
        [&, color](Hub::Slot& slot) {
          // The members of this color, ordered by key (then by rank, as MPI breaks ties).
          std::vector<std::pair<int, int>> members;  // (key, rank)
          for (int r = 0; r < static_cast<int>(slot.split_args.size()); ++r) {
            if (slot.split_args[static_cast<size_t>(r)].first == color) {
              members.emplace_back(slot.split_args[static_cast<size_t>(r)].second, r);
            }
          }
          std::sort(members.begin(), members.end());
          for (size_t i = 0; i < members.size(); ++i) {
            if (members[i].second == rank_) child_rank = static_cast<int>(i);
          }
          auto& made = slot.children[color];
          if (!made) made = std::make_shared<Hub>(static_cast<int>(members.size()));
          child = made;
        },
        std::pair{color, key});
    absl::Status met = work->wait(timeout);
    if (!met.ok()) {
      throw DistError(absl::StrCat("not every one of the ", size(), " ranks reached the split (color ", color,
                                   "): ", met.message()),
                      rank_, host_name(), "split", seq_ - 1, __FILE__, __LINE__);
    }
    return std::make_unique<ThreadCommunicator>(child, child_rank);
  }

 private:
  std::unique_ptr<Work> issue(const std::string& op, const at::Tensor& input, CollectiveWork::Finish finish,
                              std::pair<int, int> split_arg = {0, 0}) {
    std::lock_guard<std::mutex> lock(hub_->mu);
    const int64_t seq = seq_++;
    Hub::Slot& slot = hub_->slots[seq];
    if (slot.inputs.empty()) {
      slot.op = op;
      slot.inputs.resize(static_cast<size_t>(hub_->size));
      slot.split_args.resize(static_cast<size_t>(hub_->size));
    }
    ALN_CHECK(slot.op == op, describe(rank_, op, seq), ": another rank issued ", slot.op,
              " as this collective (the ranks' collectives are out of order)");
    if (input.defined()) slot.inputs[static_cast<size_t>(rank_)] = input.detach().contiguous().clone();
    slot.split_args[static_cast<size_t>(rank_)] = split_arg;
    ++slot.arrived;
    hub_->cv.notify_all();
    return std::make_unique<CollectiveWork>(hub_, rank_, seq, std::move(finish));
  }
  void check_contiguous(const at::Tensor& t, const char* op) const {
    ALN_CHECK(t.is_contiguous(), describe(rank_, op, seq_), ": the tensor must be contiguous");
  }
  void check_peer(int peer, const char* op) const {
    ALN_CHECK(peer >= 0 && peer < size(), describe(rank_, op, seq_), ": rank ", peer, " does not exist in a world of ",
              size());
  }

  std::shared_ptr<Hub> hub_;
  int rank_;
  int64_t seq_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int world_size) {
  ALN_CHECK(world_size >= 1, "a world needs at least one rank, not ", world_size);
  auto hub = std::make_shared<Hub>(world_size);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < world_size; ++r) comms.push_back(std::make_unique<ThreadCommunicator>(hub, r));
  return comms;
}

void run_thread_ranks(int world_size, const std::function<void(Communicator&)>& body) {
  auto comms = make_thread_communicators(world_size);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world_size));
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(*comms[static_cast<size_t>(r)]);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace aln::dist
