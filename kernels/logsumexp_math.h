#pragma once
// Online log-sum-exp state shared by the CUDA kernels and their CPU tests: the same combine rule
// runs in a CUDA block reduction and in the CPU test that replays arbitrary reduction trees, so
// the device math is checked on machines without a GPU.
#include <cmath>

#if defined(__CUDACC__)
#define ALN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define ALN_HOST_DEVICE inline
#endif

namespace aln::kernels {

// Precision-preserving exp/log for host and device (plain exp() on a float would go through double
// on the host and round differently from the device).
ALN_HOST_DEVICE float lse_exp(float x) { return expf(x); }
ALN_HOST_DEVICE double lse_exp(double x) { return exp(x); }
ALN_HOST_DEVICE float lse_log(float x) { return logf(x); }
ALN_HOST_DEVICE double lse_log(double x) { return log(x); }

// Represents sum_i exp(x_i) as exp(max) * sum, so it never overflows.
template <typename T>
struct LseState {
  T max;
  T sum;
};

template <typename T>
ALN_HOST_DEVICE LseState<T> lse_empty() {
  return {-INFINITY, T(0)};
}

template <typename T>
ALN_HOST_DEVICE LseState<T> lse_push(LseState<T> s, T x) {
  if (x <= s.max) return {s.max, s.sum + lse_exp(x - s.max)};
  return {x, s.sum * lse_exp(s.max - x) + T(1)};
}

// Associative (up to rounding): merging partial states of any split of the row gives the row's state.
template <typename T>
ALN_HOST_DEVICE LseState<T> lse_combine(LseState<T> a, LseState<T> b) {
  if (a.max == -INFINITY) return b;
  if (b.max == -INFINITY) return a;
  if (a.max >= b.max) return {a.max, a.sum + b.sum * lse_exp(b.max - a.max)};
  return {b.max, b.sum + a.sum * lse_exp(a.max - b.max)};
}

template <typename T>
ALN_HOST_DEVICE T lse_value(LseState<T> s) {
  return s.max + lse_log(s.sum);
}

}  // namespace aln::kernels
