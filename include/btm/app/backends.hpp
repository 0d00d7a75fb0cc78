// backends.hpp: the compute backends this build has (cpu, and cuda in builds with CUDA), made
// once by main() and passed to every command: the one place that knows which exist.
#pragma once

#include "btm/model/backend.hpp"

namespace btm {

Backends make_builtin_backends();

}  // namespace btm
