#include "trainers/controllable/levels.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace aln::trainers::controllable {

LevelScale::LevelScale(std::vector<double> scores, int levels) : sorted_(std::move(scores)), levels_(levels) {
  ALN_CHECK(levels >= 2, "levels must be at least 2");
  std::sort(sorted_.begin(), sorted_.end());
}

double LevelScale::position(double score) const {
  ALN_CHECK(!sorted_.empty(), "no scores to place a level on");
  const double lo = static_cast<double>(std::lower_bound(sorted_.begin(), sorted_.end(), score) - sorted_.begin());
  const double hi = static_cast<double>(std::upper_bound(sorted_.begin(), sorted_.end(), score) - sorted_.begin());
  return (lo + hi) / 2 / static_cast<double>(sorted_.size());
}

int LevelScale::level(double score) const {
  return std::min(levels_ - 1, static_cast<int>(std::floor(position(score) * levels_)));
}

double LevelScale::inside(double score) const { return position(score) * levels_ - level(score); }

namespace {

std::vector<double> mid_ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (static_cast<double>(i) + static_cast<double>(j)) / 2 + 1;
    i = j + 1;
  }
  return ranks;
}

}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  ALN_CHECK(x.size() == y.size(), "spearman: sizes differ");
  if (x.size() < 2) return 0;
  const auto rx = mid_ranks(x), ry = mid_ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n;
  const double my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0;
}

double ordered_pair_rate(const std::vector<std::vector<double>>& groups) {
  double right = 0, pairs = 0;
  for (const auto& g : groups) {
    for (size_t a = 0; a < g.size(); ++a) {
      for (size_t b = a + 1; b < g.size(); ++b) {
        pairs += 1;
        right += g[a] < g[b] ? 1.0 : (g[a] == g[b] ? 0.5 : 0.0);
      }
    }
  }
  return pairs > 0 ? right / pairs : 0;
}

}  // namespace aln::trainers::controllable
