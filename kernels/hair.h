#pragma once
// HAIR's hardness-aware advantage scaling (METHODS.md §5; parity: tests/parity/hair_parity.py).
//
// Data hardness of a sampled output o against the prompt's demonstration d, from sentence
// embeddings (rows = sentences): s_kl = cos(o_k, d_l), W = (1/K) sum_k max_l s_kl, delta = 1 - W
// (an output without sentences has W = 0). Within each group of G samples of one prompt:
// alpha^D_i = sigmoid(delta_i) / sigmoid(mean_group delta).
//
// Model responsiveness from reward gaps R_i = R(x, o_i) - R(x, d): per group, samples with
// (R_i - mean R)^2 > tau are outliers, R_P = mean of the kept gaps (all gaps when none is kept),
// alpha^M = sigmoid(R_P) / sigmoid(mean R).
//
// Scaled advantages: A_i = alpha^D_i * alpha^M_group(i) * (r_i - mean_G) / (std_G + 1e-4).
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace aln::kernels {

// W for one output: output [K, H], demonstration [L, H] sentence embeddings (K may be 0; L >= 1).
// A 0-dim float64 tensor on the embeddings' device: a trainer stacks one per sample without a host
// read per sample.
at::Tensor hair_similarity(const at::Tensor& output, const at::Tensor& demonstration);

// alpha^D [rows] from delta [rows] (groups of group_size rows, laid out group after group).
at::Tensor hair_data_alpha(const at::Tensor& delta, int64_t group_size);

struct HairResponsiveness {
  at::Tensor alpha;  // [groups] alpha^M
  at::Tensor kept;   // [rows] 1 where the gap was kept (not an outlier)
};
HairResponsiveness hair_model_alpha(const at::Tensor& gaps, int64_t group_size, double tau);

// A_i = alpha_d_i * alpha_m[group(i)] * group_advantages(rewards)_i.
at::Tensor hair_advantages(const at::Tensor& rewards, const at::Tensor& alpha_d, const at::Tensor& alpha_m,
                           int64_t group_size);

}  // namespace aln::kernels
