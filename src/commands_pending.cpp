// Temporary: commands not written yet.
#include "btm/commands.hpp"
#include "btm/error.hpp"

namespace btm {
#define BTM_PENDING(name) \
  int name(const Args&, MpiComm&) { throw InputError(#name " is not implemented yet"); }
BTM_PENDING(cmd_eval)
BTM_PENDING(cmd_average)
BTM_PENDING(cmd_bench)
}  // namespace btm
