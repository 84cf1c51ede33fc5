#pragma once
// The per-row arithmetic of the CUDA vocabulary-tile kernels (kernels/cuda/fused_tiles.cu), written
// once for host and device: the kernels call these functions, and a CPU test calls the same ones in
// the kernels' order (each lane's strided slice, then the block's halving tree), so the device math,
// the tile bookkeeping (offsets, the target inside or outside the tile, the temperature) and the
// reduction order are checked on machines without a GPU. Logits arrive in their storage type (float,
// or bfloat16 converted by the caller's `to_float`); everything is computed in float.
#include <cstdint>

#include "kernels/logsumexp_math.h"

namespace aln::kernels {

// One lane's share of a row: logits[lane], logits[lane + lanes], ... of the tile's `size`, each / temperature.
template <typename T, typename ToFloat>
ALN_HOST_DEVICE LseState<float> tile_lane_state(const T* row, int64_t size, float temperature, int lane, int lanes,
                                                ToFloat to_float) {
  LseState<float> s = lse_empty<float>();
  for (int64_t v = lane; v < size; v += lanes) s = lse_push(s, to_float(row[v]) / temperature);
  return s;
}

// Folds a row's merged tile state into the running state of the tiles before it, and adds the picked
// logit when the row's target falls in this tile [start, start + size).
template <typename T, typename ToFloat>
ALN_HOST_DEVICE void tile_row_finish(LseState<float> tile, const T* row, int64_t size, float temperature,
                                     int64_t target, int64_t start, float* running_max, float* running_sum,
                                     float* picked, ToFloat to_float) {
  const LseState<float> merged = lse_combine(LseState<float>{*running_max, *running_sum}, tile);
  *running_max = merged.max;
  *running_sum = merged.sum;
  const int64_t local = target - start;
  if (local >= 0 && local < size) *picked += to_float(row[local]) / temperature;
}

// One element of the gradient of (picked - logsumexp) times `grad` with respect to a raw logit:
// (exp(x - lse) (-grad) + grad 1[target]) / temperature, x = logit / temperature (the CPU row sweep's
// order of operations, core/model/tile_softmax.h).
ALN_HOST_DEVICE float tile_grad_value(float logit, float temperature, float lse, float grad, bool is_target) {
  float value = lse_exp(logit / temperature - lse) * -grad;
  if (is_target) value += grad;
  return value / temperature;
}

// One lane's share of a row's columns [first, last) of a tile, overwritten with their gradients
// (tile_grad_value) in the logits' storage type: columns first + lane, first + lane + lanes, ...
// `local_target` is the row's target minus the tile's start (outside [0, size) when not in the tile).
template <typename T, typename ToFloat, typename FromFloat>
ALN_HOST_DEVICE void tile_grad_lane(T* row, int64_t first, int64_t last, int lane, int lanes, float temperature,
                                    int64_t local_target, float lse, float grad, ToFloat to_float,
                                    FromFloat from_float) {
  for (int64_t v = first + lane; v < last; v += lanes) {
    row[v] = from_float(tile_grad_value(to_float(row[v]), temperature, lse, grad, v == local_target));
  }
}

}  // namespace aln::kernels
