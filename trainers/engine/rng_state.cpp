#include "trainers/engine/rng_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace aln::engine {
namespace {

constexpr char kCudaPrefix[] = "cuda:";

at::Tensor read_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void write_state(at::Generator gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

int cuda_devices() { return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0; }

}  // namespace

model::TensorMap rng_states() {
  model::TensorMap out;
  out["cpu"] = read_state(at::detail::getDefaultCPUGenerator());
  const int devices = cuda_devices();
  for (int i = 0; i < devices; ++i) {
    const auto index = static_cast<c10::DeviceIndex>(i);
    if (!at::detail::getCUDAHooks().hasPrimaryContext(index)) continue;
    out[absl::StrCat(kCudaPrefix, i)] = read_state(at::globalContext().defaultGenerator(at::Device(at::kCUDA, index)));
  }
  return out;
}

std::vector<std::string> set_rng_states(const model::TensorMap& states) {
  auto cpu = states.find("cpu");
  ALN_CHECK(cpu != states.end(), "the checkpoint's generator states have no 'cpu' entry");
  write_state(at::detail::getDefaultCPUGenerator(), cpu->second);
  std::vector<std::string> missing;
  const int devices = cuda_devices();
  for (const auto& [name, state] : states) {
    if (name == "cpu") continue;
    int index = -1;
    if (name.rfind(kCudaPrefix, 0) == 0 && absl::SimpleAtoi(name.substr(sizeof(kCudaPrefix) - 1), &index) &&
        index >= 0 && index < devices) {
      write_state(at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index))),
                  state);
    } else {
      missing.push_back(name);
    }
  }
  return missing;
}

}  // namespace aln::engine
