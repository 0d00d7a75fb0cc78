// engine.hpp (cpu): the fp32 CPU reference engine (cpu_engine.cpp) and the CPU backend that
// makes it (backend.cpp).
#pragma once

#include <memory>

#include "btm/config/config.hpp"
#include "btm/model/backend.hpp"
#include "btm/model/engine.hpp"

namespace btm {

// `threads` OpenMP threads (0: OpenMP's default).
std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& model, int threads);
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace btm
