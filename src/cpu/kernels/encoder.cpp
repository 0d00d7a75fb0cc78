// encoder.cpp: the fp32 reference of the token and position embeddings (cpu/kernels/encoder.hpp).
// Work is cut by partitions that do not depend on the thread count and each reduction is summed
// in a fixed order, so the result has the same bytes for any number of OpenMP threads.
#include <cstddef>
#include <cstdint>

#include "btm/cpu/kernels/encoder.hpp"
#include "common.hpp"

namespace btm::cpu {

void encoder_forward(float* out, const std::int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C) {
  const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
#pragma omp parallel for schedule(static)
  for (size_t bt = 0; bt < BT; ++bt) {
    const float* token = wte + static_cast<size_t>(inp[bt]) * Cs;
    const float* position = wpe + (bt % static_cast<size_t>(T)) * Cs;
    float* o = out + bt * Cs;
    for (size_t c = 0; c < Cs; ++c) o[c] = token[c] + position[c];
  }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const std::int32_t* inp, int B,
                      int T, int C) {
  const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
  // Several positions may share a token: split by channel so that each gradient element is
  // summed by one thread, in token order.
#pragma omp parallel
  {
    const Range share = thread_share(Cs);
    for (size_t bt = 0; bt < BT; ++bt) {
      const float* d = dout + bt * Cs;
      float* token = dwte + static_cast<size_t>(inp[bt]) * Cs;
      float* position = dwpe + (bt % static_cast<size_t>(T)) * Cs;
      for (size_t c = share.begin; c < share.end; ++c) {
        token[c] += d[c];
        position[c] += d[c];
      }
    }
  }
}

}  // namespace btm::cpu
