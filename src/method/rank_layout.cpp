#include "btm/method/rank_layout.hpp"

#include <sstream>

#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

std::vector<std::string> RankLayout::elms_of_group(int group) const {
  std::vector<std::string> out;
  for (const ElmAssignment& a : elms)
    if (a.group == group) out.push_back(a.name);
  return out;
}

std::string valid_ranks_per_elm(int world) {
  std::string out;
  for (int r = 1; r <= world; ++r)
    if (world % r == 0) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

void check_ranks_per_elm(int world, int ranks_per_elm) {
  if (world < 1) throw InputError("rank layout: the world has no ranks");
  if (ranks_per_elm < 1)
    throw InputError("rank layout: run.ranks_per_elm must be >= 1 (valid for " +
                     counted(world, "rank") + ": " + valid_ranks_per_elm(world) + ")");
  if (ranks_per_elm > world)
    throw InputError("rank layout: run.ranks_per_elm = " + std::to_string(ranks_per_elm) +
                     " is larger than the " + counted(world, "rank") + " started: start at least " +
                     std::to_string(ranks_per_elm) + " ranks, or use one of " +
                     valid_ranks_per_elm(world));
  if (world % ranks_per_elm != 0)
    throw InputError("rank layout: " + counted(world, "rank") + " cannot be cut into groups of " +
                     std::to_string(ranks_per_elm) + ": use run.ranks_per_elm in {" +
                     valid_ranks_per_elm(world) + "} or start a multiple of " +
                     std::to_string(ranks_per_elm) + " ranks");
}

RankLayout plan_layout(int world, int ranks_per_elm, const std::vector<std::string>& elms) {
  check_ranks_per_elm(world, ranks_per_elm);
  if (elms.empty())
    throw InputError(
        "rank layout: no domains to train: list them in data.domains (--data.domains a,b,c)");
  RankLayout layout;
  layout.world = world;
  layout.ranks_per_elm = ranks_per_elm;
  layout.groups = world / ranks_per_elm;
  const int K = static_cast<int>(elms.size());
  layout.waves = (K + layout.groups - 1) / layout.groups;
  for (int k = 0; k < K; ++k)
    layout.elms.push_back(
        {elms[static_cast<std::size_t>(k)], k % layout.groups, k / layout.groups});
  return layout;
}

std::string describe_layout(const RankLayout& layout, std::int64_t steps_per_elm,
                            std::int64_t tokens_per_elm_step) {
  std::ostringstream s;
  const int K = static_cast<int>(layout.elms.size());
  s << "rank layout: " << counted(layout.world, "rank") << ", " << layout.ranks_per_elm
    << " per ELM -> " << counted(layout.groups, "group") << "; " << counted(K, "ELM") << " in "
    << counted(layout.waves, "wave") << "\n";
  const int idle = layout.groups * layout.waves - K;
  for (int w = 0; w < layout.waves; ++w) {
    s << "  wave " << w << ":\n";
    for (const ElmAssignment& a : layout.elms) {
      if (a.wave != w) continue;
      const int first = layout.first_rank(a.group);
      s << "    group " << a.group << " (rank" << (layout.ranks_per_elm > 1 ? "s " : " ") << first;
      if (layout.ranks_per_elm > 1) s << "-" << first + layout.ranks_per_elm - 1;
      s << ") trains ELM '" << a.name << "'";
      if (steps_per_elm > 0) {
        s << ": " << grouped(steps_per_elm) << " steps";
        if (tokens_per_elm_step > 0)
          s << ", " << grouped(steps_per_elm * tokens_per_elm_step) << " tokens";
      }
      s << "\n";
    }
  }
  if (idle > 0)
    s << "  note: " << idle << " group-wave slot" << (idle == 1 ? " is" : "s are")
      << " idle (K = " << K << " is not a multiple of G = " << layout.groups << ")\n";
  return s.str();
}

}  // namespace btm
