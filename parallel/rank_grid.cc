// Rank math for the (tp, dp, pp) grid.
#include "parallel/rank_grid.h"

#include "core/check.h"

namespace tessera {

RankGrid::RankGrid(int tp, int pp, int dp) : tp_(tp), pp_(pp), dp_(dp) {
  TS_CHECK(tp >= 1 && pp >= 1 && dp >= 1, ConfigError, "parallel sizes must be at least 1, got tp=", tp,
           " pp=", pp, " dp=", dp);
}

GridCoord RankGrid::coord(int world_rank) const {
  TS_ASSERT(world_rank >= 0 && world_rank < world_size(), "rank ", world_rank, " outside ", to_string());
  GridCoord c;
  c.tp = world_rank % tp_;
  c.dp = (world_rank / tp_) % dp_;
  c.pp = world_rank / (tp_ * dp_);
  return c;
}

int RankGrid::rank(GridCoord c) const {
  TS_ASSERT(c.tp >= 0 && c.tp < tp_ && c.pp >= 0 && c.pp < pp_ && c.dp >= 0 && c.dp < dp_, "coordinate outside ",
            to_string());
  return c.tp + tp_ * (c.dp + dp_ * c.pp);
}

std::vector<int> RankGrid::tp_group(int world_rank) const {
  GridCoord c = coord(world_rank);
  std::vector<int> ranks;
  for (c.tp = 0; c.tp < tp_; ++c.tp) ranks.push_back(rank(c));
  return ranks;
}

std::vector<int> RankGrid::pp_group(int world_rank) const {
  GridCoord c = coord(world_rank);
  std::vector<int> ranks;
  for (c.pp = 0; c.pp < pp_; ++c.pp) ranks.push_back(rank(c));
  return ranks;
}

std::vector<int> RankGrid::dp_group(int world_rank) const {
  GridCoord c = coord(world_rank);
  std::vector<int> ranks;
  for (c.dp = 0; c.dp < dp_; ++c.dp) ranks.push_back(rank(c));
  return ranks;
}

std::string RankGrid::to_string() const { return str_cat("tp=", tp_, " pp=", pp_, " dp=", dp_); }

}  // namespace tessera
