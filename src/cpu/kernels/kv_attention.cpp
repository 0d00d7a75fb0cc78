// kv_attention.cpp: the fp32 reference of attention over a key/value cache
// (cpu/kernels/kv_attention.hpp): one (batch, head) pair per iteration, fixed loop orders, the
// softmax sums in double, so the bytes do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/kv_attention.hpp"

namespace btm::cpu {

void kv_attention_forward(float* out, float* k_cache, float* v_cache, const float* qkv, int B,
                          int n, int pos, int cap, int C, int NH) {
  const size_t hs = static_cast<size_t>(C / NH), Cs = static_cast<size_t>(C);
  const size_t ns = static_cast<size_t>(n), caps = static_cast<size_t>(cap);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel
  {
    std::vector<float> scores(caps);
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const size_t b = static_cast<size_t>(bh / NH), h = static_cast<size_t>(bh % NH);
      float* kc = k_cache + static_cast<size_t>(bh) * caps * hs;
      float* vc = v_cache + static_cast<size_t>(bh) * caps * hs;
      for (size_t i = 0; i < ns; ++i) {
        const float* row = qkv + (b * ns + i) * 3 * Cs + h * hs;
        std::copy_n(row + Cs, hs, kc + (static_cast<size_t>(pos) + i) * hs);
        std::copy_n(row + 2 * Cs, hs, vc + (static_cast<size_t>(pos) + i) * hs);
      }
      for (size_t i = 0; i < ns; ++i) {
        const float* q = qkv + (b * ns + i) * 3 * Cs + h * hs;
        const size_t keys = static_cast<size_t>(pos) + i + 1;
        float max = -INFINITY;
        for (size_t j = 0; j < keys; ++j) {
          float dot = 0;
          for (size_t d = 0; d < hs; ++d) dot += q[d] * kc[j * hs + d];
          scores[j] = dot * scale;
          max = std::max(max, scores[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < keys; ++j) {
          scores[j] = std::exp(scores[j] - max);
          sum += scores[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        float* o = out + (b * ns + i) * Cs + h * hs;
        std::fill_n(o, hs, 0.0f);
        for (size_t j = 0; j < keys; ++j) {
          const float p = scores[j] * inv;
          for (size_t d = 0; d < hs; ++d) o[d] += p * vc[j * hs + d];
        }
      }
    }
  }
}

}  // namespace btm::cpu
