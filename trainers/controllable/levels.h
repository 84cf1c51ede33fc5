#pragma once
// Scores -> levels for the controllable method [D]: quantile bins over the self-generated set, and
// the controllability metrics (Spearman correlation, ordered-pair rate).
#include <cstdint>
#include <vector>

namespace aln::trainers::controllable {

// The empirical distribution of one attribute's scores over the self-generated set.
class LevelScale {
 public:
  LevelScale() = default;
  LevelScale(std::vector<double> scores, int levels);

  // Mid-rank quantile position of a score in [0, 1]: tied scores share the middle of their run, so
  // a binary scorer puts its two values at about 0.25 and 0.75 (not at the ends of the range).
  double position(double score) const;
  // The bin of that position, 0..levels-1 (equal-count bins).
  int level(double score) const;
  // Where inside its bin the score sits, 0..1 (the distillation filter keeps the middle).
  double inside(double score) const;
  int levels() const { return levels_; }
  bool empty() const { return sorted_.empty(); }

 private:
  std::vector<double> sorted_;
  int levels_ = 0;
};

// Spearman's rank correlation (Pearson on mid-ranks; 0 when either side is constant).
double spearman(const std::vector<double>& x, const std::vector<double>& y);

// Over groups (one prompt and attribute each: measured scores at requested levels 0..L-1 in order),
// the share of level pairs k < k' whose measured scores are in the same order (ties count half).
double ordered_pair_rate(const std::vector<std::vector<double>>& groups);

}  // namespace aln::trainers::controllable
