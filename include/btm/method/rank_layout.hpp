// rank_layout.hpp: how the world of W ranks is cut into ELM groups. With r ranks per ELM there
// are G = W / r groups (MPI_Comm_split by color = world_rank / r); K domains are dealt to the
// groups round robin, in waves when K > G. Invalid layouts are refused before any work, with a
// message that says what would work.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace btm {

struct ElmAssignment {
  std::string name;  // the ELM (its domain)
  int group = 0;
  int wave = 0;
};

struct RankLayout {
  int world = 1;
  int ranks_per_elm = 1;
  int groups = 1;
  int waves = 0;
  std::vector<ElmAssignment> elms;

  int group_of(int world_rank) const { return world_rank / ranks_per_elm; }
  int first_rank(int group) const { return group * ranks_per_elm; }
  // The ELMs one group trains, in wave order.
  std::vector<std::string> elms_of_group(int group) const;
};

// Throws InputError, saying which values would work, unless the world of W ranks cuts into
// groups of r: r >= 1, r <= W, W % r == 0.
void check_ranks_per_elm(int world, int ranks_per_elm);

// Throws InputError for W % r != 0, r > W or r < 1 (check_ranks_per_elm), or no ELMs.
RankLayout plan_layout(int world, int ranks_per_elm, const std::vector<std::string>& elms);

// Valid ranks-per-ELM values for a world, for error messages: "1, 2, 4, 8".
std::string valid_ranks_per_elm(int world);

// Human-readable plan: one line per ELM (ranks, group, wave) plus a summary; steps and tokens
// per ELM when given (> 0).
std::string describe_layout(const RankLayout& layout, std::int64_t steps_per_elm,
                            std::int64_t tokens_per_elm_step);

}  // namespace btm
