// LibTorch's CUDA graphs behind a C interface, built as a library of its own (aln_cuda_graph) that
// links LibTorch's CUDA libraries. Aln itself does not link them (core/model/device.h: they are loaded
// only by a job that asks for a GPU); core/model/cuda_graph.cpp loads this library after them. Only
// plain C types cross the boundary, and no exception leaves it.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <mutex>

namespace {

void write_error(char* error, int size, const char* what, const char* detail) {
  if (error != nullptr && size > 0) std::snprintf(error, static_cast<size_t>(size), "%s: %s", what, detail);
}

// `waiter` waits for the work queued on `producer` so far.
bool order_after(cudaStream_t producer, cudaStream_t waiter, char* error, int size) {
  cudaEvent_t event = nullptr;
  cudaError_t rc = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  if (rc == cudaSuccess) rc = cudaEventRecord(event, producer);
  if (rc == cudaSuccess) rc = cudaStreamWaitEvent(waiter, event, 0);
  if (event != nullptr) cudaEventDestroy(event);
  if (rc != cudaSuccess) write_error(error, size, "ordering the capture stream", cudaGetErrorString(rc));
  return rc == cudaSuccess;
}

// On every way out of a capture, the caller's stream waits for the side stream's work (the warm-up
// may still be writing what the caller goes on with).
class JoinOnExit {
 public:
  JoinOnExit(cudaStream_t side, cudaStream_t caller) : side_(side), caller_(caller) {}
  ~JoinOnExit() { order_after(side_, caller_, nullptr, 0); }
  JoinOnExit(const JoinOnExit&) = delete;
  JoinOnExit& operator=(const JoinOnExit&) = delete;

 private:
  cudaStream_t side_, caller_;
};

// One memory pool per device for every graph this library captures: graphs here never run at the same
// time (each lives for one generation call, replayed on one stream), so they can share one, and a
// pool per graph would leave each call's memory parked in the allocator until the cache is emptied.
c10::MempoolId_t shared_pool(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, c10::MempoolId_t> pools;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = pools.find(device);
  if (it == pools.end()) it = pools.emplace(device, at::cuda::graph_pool_handle()).first;
  return it->second;
}

}  // namespace

extern "C" {

// Runs body(arg) once on a side stream (the warm-up a capture needs: cuBLAS creates its handle and
// workspace for a stream on first use, which cannot happen inside a capture), then captures a second
// run into a graph whose memory comes from a private pool of the caching allocator (so nothing made
// outside the graph can take the addresses its replays write). The calling stream's earlier work comes
// first; its later work comes after the warm-up, whatever happens. The capture is thread-local: work
// other threads queue meanwhile neither breaks it nor is taken into it. body returns 0, or non-zero
// after writing `error`. Returns the graph, or nullptr with `error` written.
void* aln_cuda_graph_capture(int (*body)(void*), void* arg, char* error, int error_size) {
  try {
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream();
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    if (!order_after(caller.stream(), side.stream(), error, error_size)) return nullptr;
    const JoinOnExit join(side.stream(), caller.stream());
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    const c10::cuda::CUDAStreamGuard on_side(side);
    if (body(arg) != 0) return nullptr;
    graph->capture_begin(shared_pool(caller.device_index()), cudaStreamCaptureModeThreadLocal);
    const int rc = body(arg);  // never throws: the body's exceptions become its return code
    graph->capture_end();      // ends the capture whatever the body did
    if (rc != 0) return nullptr;
    return graph.release();
  } catch (const std::exception& e) {
    write_error(error, error_size, "CUDA graph capture", e.what());
  } catch (...) {
    write_error(error, error_size, "CUDA graph capture", "an exception that is not a std::exception");
  }
  return nullptr;
}

// Replays on the calling thread's current stream. 0, or non-zero with `error` written.
int aln_cuda_graph_replay(void* graph, char* error, int error_size) {
  try {
    static_cast<at::cuda::CUDAGraph*>(graph)->replay();
    return 0;
  } catch (const std::exception& e) {
    write_error(error, error_size, "CUDA graph replay", e.what());
  } catch (...) {
    write_error(error, error_size, "CUDA graph replay", "an exception that is not a std::exception");
  }
  return 1;
}

void aln_cuda_graph_destroy(void* graph) {
  try {
    delete static_cast<at::cuda::CUDAGraph*>(graph);
  } catch (...) {  // a destructor's failure has nowhere to go; the process goes on
  }
}

}  // extern "C"
