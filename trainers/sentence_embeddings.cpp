#include "trainers/sentence_embeddings.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "core/error.h"

namespace aln::trainers {

at::Tensor mean_pooled_embeddings(const model::DecoderModel& encoder,
                                  const std::vector<std::vector<int64_t>>& sentences, int64_t pad_id, int64_t batch) {
  at::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(sentences.size());
  const at::Device device = encoder.device();
  at::Tensor out = at::zeros({n, encoder.config().hidden_size}, at::TensorOptions().dtype(at::kFloat).device(device));
  const int64_t max_len = encoder.config().max_position;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t b = std::min(batch, n - start);
    int64_t width = 1;
    for (int64_t i = 0; i < b; ++i) {
      const auto& s = sentences[static_cast<size_t>(start + i)];
      ALN_CHECK(!s.empty(), "an empty sentence cannot be embedded");
      width = std::max<int64_t>(width, std::min<int64_t>(static_cast<int64_t>(s.size()), max_len));
    }
    at::Tensor ids = at::full({b, width}, pad_id, at::kLong);
    at::Tensor mask = at::zeros({b, width}, at::kLong);
    for (int64_t i = 0; i < b; ++i) {
      const auto& s = sentences[static_cast<size_t>(start + i)];
      const int64_t len = std::min<int64_t>(static_cast<int64_t>(s.size()), width);
      ids[i].narrow(0, 0, len).copy_(at::tensor(std::vector<int64_t>(s.begin(), s.begin() + len), at::kLong));
      mask[i].narrow(0, 0, len).fill_(1);
    }
    // Laid out on the host (right padded), then moved to the encoder's device in one copy each.
    mask = mask.to(device);
    const at::Tensor h = encoder.hidden_states(ids.to(device), mask, nullptr, /*right_padded=*/true).to(at::kFloat);
    const at::Tensor m = mask.to(at::kFloat).unsqueeze(2);
    out.narrow(0, start, b).copy_((h * m).sum(1) / m.sum(1));
  }
  return out;
}

}  // namespace aln::trainers
