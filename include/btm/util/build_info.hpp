// build_info.hpp: which btm wrote a file. The definitions are generated at build time by
// cmake/build_info.cmake; checkpoints and eval.h5 record both (btm_version, btm_commit).
#pragma once

namespace btm {

const char* btm_version();  // the project version of CMakeLists.txt, e.g. "0.1.0"
// The git commit the build was made from (40 hex digits, "-dirty" with uncommitted changes to
// tracked files), "unknown" when built outside a git checkout.
const char* btm_commit();

}  // namespace btm
