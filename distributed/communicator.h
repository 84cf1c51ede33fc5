#pragma once
// The communicator contract, in the c10d manner: a Communicator issues collectives and returns a
// Work handle; every wait takes a timeout. Backends: local (world size 1), mpi (CPU tensors),
// nccl (CUDA tensors; lands with the distributed runtime). Tensors are reduced in place.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace aln::dist {

class Work {
 public:
  virtual ~Work() = default;
  // OK when the operation finished; DeadlineExceeded (naming rank, op and sequence number) when it
  // did not finish within `timeout`.
  virtual absl::Status wait(std::chrono::milliseconds timeout) = 0;
  // For device tensors: orders the caller's current device stream after the operation and returns
  // without blocking the host (what overlap needs); what the caller queues next on that stream
  // reads the result. The operation must still finish within `timeout`: a backend that cannot tell
  // at once enforces it later (NCCL: a watchdog that ends the process, since results already used
  // cannot be taken back). Backends without device streams: wait(timeout).
  virtual absl::Status wait_on_stream(std::chrono::milliseconds timeout) { return wait(timeout); }
  // Lets the operation advance without waiting (MPI progresses non-blocking collectives only inside
  // MPI calls, so code that overlaps them with compute calls this now and then). Never blocks.
  virtual void progress() {}
  // True once the operation has finished (advances it like progress()). Never blocks.
  virtual bool done() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;

  // Sum over ranks, in place; the tensor must be contiguous and stay alive until wait() returns.
  virtual std::unique_ptr<Work> all_reduce_sum(at::Tensor& tensor) = 0;
  virtual std::unique_ptr<Work> broadcast(at::Tensor& tensor, int root) = 0;
  // `output` (contiguous, size() * input.numel() elements, same dtype) receives every rank's
  // `input` in rank order. Both must stay alive until wait() returns.
  virtual std::unique_ptr<Work> all_gather(const at::Tensor& input, at::Tensor& output) = 0;
  // The inverse of all_gather with a sum (sharded gradients): `input` (contiguous, size() *
  // output.numel() elements) is cut into size() equal blocks in rank order; `output` receives the
  // sum over ranks of block rank(). Both must stay alive until wait() returns.
  virtual std::unique_ptr<Work> reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) = 0;
  virtual std::unique_ptr<Work> barrier() = 0;
  // Point to point (pipeline stages pass activations and gradients): `tensor` goes to rank `peer`,
  // which posts a recv of the same size, dtype and tag. Messages between two ranks with one tag
  // arrive in the order sent. The tensor must stay alive (and, for send, unchanged) until wait().
  virtual std::unique_ptr<Work> send(const at::Tensor& tensor, int peer, int tag) = 0;
  virtual std::unique_ptr<Work> recv(at::Tensor& tensor, int peer, int tag) = 0;
  // A send and a recv posted together, one Work for both (a 1F1B step's "send my output, receive
  // the next gradient"). Backends that run point-to-point operations one after another on a queue
  // (NCCL: one stream) must group them (ncclGroupStart/End): otherwise two neighbours that each
  // queue their send before their recv wait for each other forever, each send needing the peer's
  // recv, which sits behind the peer's own send. The pipeline schedule pairs them so that every
  // stage's groups match its neighbours' in order (dist::pipeline_messages). The default posts
  // both operations (backends whose operations progress independently, as MPI's do).
  virtual std::unique_ptr<Work> send_recv(const at::Tensor& send_tensor, int send_peer, int send_tag,
                                          at::Tensor& recv_tensor, int recv_peer, int recv_tag);
  // A sub-group of the ranks passing the same `color`, ordered by `key` (MPI_Comm_split): the
  // data-parallel group of one pipeline stage, the pipeline of one data-parallel replica. Every rank
  // of this group must call it. A rank that never arrives (stopped or dead while the job starts) is
  // a DistError after `timeout` instead of a hang: the split itself has no timeout in MPI, so the
  // ranks first meet in a barrier they wait for with one. A rank that stops after that barrier but
  // before the split leaves the others inside MPI's split, which no thread can leave: the MPI
  // backend then ends the waiting processes (exit 1, with a message) after a further `timeout`.
  virtual std::unique_ptr<Communicator> split(int color, int key, std::chrono::milliseconds timeout) = 0;
};

// One Work for several: waits for each in turn, the first with the whole timeout and the others
// with what is left of it; done when all are.
std::unique_ptr<Work> joined_work(std::vector<std::unique_ptr<Work>> parts);

// World size 1: every collective is the identity and completes at once.
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace aln::dist
