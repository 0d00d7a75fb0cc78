// backend.hpp (cuda): the CUDA backend (backend.cpp): the visible GPUs, CUDA engines, NCCL
// communicators for the gradients of a group, device memory in use. Only in builds with
// BTM_HAVE_CUDA.
#pragma once

#include <memory>

#include "btm/model/backend.hpp"

namespace btm {

std::unique_ptr<Backend> make_cuda_backend();

}  // namespace btm
