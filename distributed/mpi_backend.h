#pragma once
// MPI backend for CPU tensors. MpiRuntime is the RAII owner of MPI_Init/MPI_Finalize (one per
// process, created by main); MpiCommunicator wraps a duplicated communicator so Aln's traffic never
// mixes with anyone else's.
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "distributed/communicator.h"

namespace aln::dist {

class MpiRuntime {
 public:
  // Initialises MPI with MPI_THREAD_MULTIPLE when available (falls back to what MPI provides). If
  // MPI_Init has not returned after `timeout` (another process of the job stopped or died before
  // it), this process prints why and exits with 1, which makes mpirun end the job.
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> init(int* argc, char*** argv,
                                                          std::chrono::milliseconds timeout = std::chrono::minutes(5));
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return rank_; }
  int world_size() const { return size_; }
  int thread_level() const { return thread_level_; }
  // This process's place among the job's processes on its host (MPI_COMM_TYPE_SHARED), in world
  // rank order: the GPU a rank uses is its node-local rank.
  int node_local_rank() const { return local_rank_; }
  int node_local_size() const { return local_size_; }
  // Whether any thread may call MPI at any time (MPI_THREAD_MULTIPLE): heartbeats need it.
  bool threads_supported() const;

  // Ends every rank of the job (MPI_Abort): the way out after a failure, since MPI_Finalize would
  // wait for peers that may be dead or stuck.
  [[noreturn]] void abort(int exit_code) const;

  // A communicator over the whole world (a duplicate of MPI_COMM_WORLD). Throws DistError when not
  // every rank joins within `timeout`.
  std::unique_ptr<Communicator> world(std::chrono::milliseconds timeout = std::chrono::minutes(5)) const;

 private:
  MpiRuntime() = default;
  int rank_ = 0;
  int size_ = 1;
  int thread_level_ = 0;
  int local_rank_ = 0;
  int local_size_ = 1;
};

// "Open MPI v4.1.4, ..." — callable before MPI_Init.
std::string mpi_library_version();

}  // namespace aln::dist
