#include "core/model/cuda_graph.h"

#include <dlfcn.h>

#include <exception>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/model/device.h"

// Set by CMake where the graph library is built (LibTorch with CUDA, nvcc found); empty elsewhere.
#ifndef ALN_CUDA_GRAPH_LIB
#define ALN_CUDA_GRAPH_LIB ""
#endif

namespace aln::model {
namespace {

struct GraphLibrary {
  void* (*capture)(int (*)(void*), void*, char*, int) = nullptr;
  int (*replay)(void*, char*, int) = nullptr;
  void (*destroy)(void*) = nullptr;
  absl::Status status;  // of the load, then of the first failed capture
  std::mutex mutex;     // over `status` after the load
};

GraphLibrary& library() {
  static std::once_flag once;
  static GraphLibrary lib;
  std::call_once(once, [] {
    if (absl::Status s = load_cuda_backend(); !s.ok()) {
      lib.status = s;
      return;
    }
    const std::string path = ALN_CUDA_GRAPH_LIB;
    if (path.empty()) {
      lib.status = absl::UnavailableError("this build has no CUDA graph library (LibTorch without CUDA, or no nvcc)");
      return;
    }
    // Never closed: a graph may live until the process ends.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      lib.status = absl::UnavailableError(absl::StrCat("cannot load ", path, ": ", why != nullptr ? why : "?"));
      return;
    }
    lib.capture = reinterpret_cast<decltype(lib.capture)>(dlsym(handle, "aln_cuda_graph_capture"));
    lib.replay = reinterpret_cast<decltype(lib.replay)>(dlsym(handle, "aln_cuda_graph_replay"));
    lib.destroy = reinterpret_cast<decltype(lib.destroy)>(dlsym(handle, "aln_cuda_graph_destroy"));
    if (lib.capture == nullptr || lib.replay == nullptr || lib.destroy == nullptr) {
      lib.status = absl::UnavailableError(absl::StrCat(path, " lacks the aln_cuda_graph_* functions: rebuild Aln"));
    }
  });
  return lib;
}

// What crosses the C boundary: the body, and the first error it raised.
struct Call {
  const std::function<void()>* body;
  std::string error;
};

int run_body(void* arg) {
  auto* call = static_cast<Call*>(arg);
  try {
    (*call->body)();
    return 0;
  } catch (const std::exception& e) {
    if (call->error.empty()) call->error = e.what();
  } catch (...) {
    if (call->error.empty()) call->error = "an exception that is not a std::exception";
  }
  return 1;
}

}  // namespace

absl::Status CudaGraph::available() {
  GraphLibrary& lib = library();
  std::lock_guard<std::mutex> lock(lib.mutex);
  return lib.status;
}

absl::StatusOr<std::unique_ptr<CudaGraph>> CudaGraph::capture(const std::function<void()>& body) {
  if (absl::Status s = available(); !s.ok()) return s;
  GraphLibrary& lib = library();
  Call call{&body, {}};
  char error[1024] = {0};
  void* handle = lib.capture(&run_body, &call, error, sizeof(error));
  if (handle == nullptr) {
    // The first failure ends graphs for the process: a capture that failed may have left LibTorch's
    // allocator mid-capture (its 2.11 ends the pool's routing only on success), so none is tried again.
    const absl::Status failed =
        absl::InternalError(absl::StrCat("CUDA graph capture failed (graphs are off for this process from now on): ",
                                         call.error.empty() ? std::string(error) : call.error));
    std::lock_guard<std::mutex> lock(lib.mutex);
    lib.status = failed;
    return failed;
  }
  return std::unique_ptr<CudaGraph>(new CudaGraph(handle));
}

absl::Status CudaGraph::replay() {
  char error[1024] = {0};
  if (library().replay(handle_, error, sizeof(error)) != 0) return absl::InternalError(error);
  return absl::OkStatus();
}

CudaGraph::~CudaGraph() {
  if (handle_ != nullptr) library().destroy(handle_);
}

}  // namespace aln::model
