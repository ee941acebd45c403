// RankGrid: which tensor-, pipeline- and data-parallel coordinates a world rank has, and who its peers are.
//
// Pure rank math, no MPI. Rank order: tp fastest, then dp, then pp:
//   world_rank = tp_rank + tp * (dp_rank + dp * pp_rank)
// so the ranks of one TP group are adjacent (on one node, where bandwidth is highest) and a pipeline stage
// is a contiguous block of tp*dp ranks.
#pragma once

#include <string>
#include <vector>

namespace tessera {

struct GridCoord {
  int tp = 0;
  int pp = 0;
  int dp = 0;
};

class RankGrid {
 public:
  // Throws ConfigError unless every size is >= 1.
  RankGrid(int tp, int pp, int dp);

  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int world_size() const { return tp_ * pp_ * dp_; }

  GridCoord coord(int world_rank) const;
  int rank(GridCoord coord) const;

  // World ranks of the group that contains world_rank, ordered by their coordinate along that axis.
  std::vector<int> tp_group(int world_rank) const;
  std::vector<int> pp_group(int world_rank) const;
  std::vector<int> dp_group(int world_rank) const;

  // "tp=2 pp=2 dp=2"
  std::string to_string() const;

 private:
  int tp_, pp_, dp_;
};

}  // namespace tessera
