#include "btm/app/backends.hpp"

#include "btm/cpu/engine.hpp"
#ifdef BTM_HAVE_CUDA
#include "btm/cuda/backend.hpp"
#endif

namespace btm {

Backends make_builtin_backends() {
  std::vector<std::unique_ptr<Backend>> list;
  list.push_back(make_cpu_backend());
#ifdef BTM_HAVE_CUDA
  list.push_back(make_cuda_backend());
#endif
  return Backends(std::move(list));
}

}  // namespace btm
