// attention.cu: the materialized causal self-attention (cuda/kernels/attention.hpp): the head
// split and merge between the token-major [B, T, 3C] and per-head [B, NH, T, hs] layouts, the
// causal softmax (a warp per row), and the attention forward and backward built from them and
// the batched GEMMs of Blas.
#include <cmath>
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/attention.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

template <int P, bool kSplit>
__global__ void heads_kernel(bf16* out, const bf16* inp, int B, int T, int NH, int hs,
                             int row_stride, int col_offset) {
  const int packs = hs / P;
  const std::size_t total = static_cast<std::size_t>(B) * NH * T * packs;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    // i enumerates [b, h, t, pack] (the per-head layout) ...
    const int d = static_cast<int>(i % packs) * P;
    std::size_t rest = i / packs;
    const int t = static_cast<int>(rest % T);
    rest /= T;
    const int h = static_cast<int>(rest % NH);
    const std::size_t b = rest / NH;
    // ... and its element in the token-major layout.
    const std::size_t token_index =
        (b * T + t) * static_cast<std::size_t>(row_stride) + col_offset + h * hs + d;
    const std::size_t head_index = i * P;
    float v[P];
    if constexpr (kSplit) {
      load_bf16<P>(v, inp + token_index);
      store_bf16<P>(out + head_index, v);
    } else {
      load_bf16<P>(v, inp + head_index);
      store_bf16<P>(out + token_index, v);
    }
  }
}

// One warp per row of [BH * T, T]; row t attends to columns 0..t.
__global__ void softmax_causal_forward_kernel(bf16* att, const bf16* preatt, int rows, int T,
                                              float scale) {
  const int warps = blockDim.x / kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int t = row % T;
  const std::size_t base = static_cast<std::size_t>(row) * T;
  float maxv = -INFINITY, sum = 0;
  for (int j = lane; j <= t; j += kWarp) {
    const float x = __bfloat162float(preatt[base + j]) * scale;
    if (x > maxv) {
      sum *= __expf(maxv - x);
      maxv = x;
    }
    sum += __expf(x - maxv);
  }
  const float row_max = warp_max(maxv);
  sum = warp_sum(maxv == -INFINITY ? 0.0f : sum * __expf(maxv - row_max));
  const float inv = 1.0f / sum;
  for (int j = lane; j < T; j += kWarp) {
    const float p =
        j <= t ? __expf(__bfloat162float(preatt[base + j]) * scale - row_max) * inv : 0.0f;
    att[base + j] = __float2bfloat16(p);
  }
}

__global__ void softmax_causal_backward_kernel(bf16* dpreatt, const bf16* datt, const bf16* att,
                                               int rows, int T, float scale) {
  const int warps = blockDim.x / kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int t = row % T;
  const std::size_t base = static_cast<std::size_t>(row) * T;
  float dot = 0;
  for (int j = lane; j <= t; j += kWarp)
    dot += __bfloat162float(att[base + j]) * __bfloat162float(datt[base + j]);
  dot = warp_sum(dot);
  for (int j = lane; j < T; j += kWarp) {
    float g = 0;
    if (j <= t)
      g = scale * __bfloat162float(att[base + j]) * (__bfloat162float(datt[base + j]) - dot);
    dpreatt[base + j] = __float2bfloat16(g);
  }
}

}  // namespace

namespace {
template <bool kSplit>
void launch_heads(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                  int col_offset, cudaStream_t stream) {
  const std::size_t elements = static_cast<std::size_t>(B) * NH * T * hs;
  const bool vector =
      hs % 8 == 0 && row_stride % 8 == 0 && col_offset % 8 == 0 && aligned16(out) && aligned16(inp);
  if (vector)
    heads_kernel<8, kSplit><<<grid_for(elements / 8, 256), 256, 0, stream>>>(
        out, inp, B, T, NH, hs, row_stride, col_offset);
  else
    heads_kernel<1, kSplit><<<grid_for(elements, 256), 256, 0, stream>>>(out, inp, B, T, NH, hs,
                                                                         row_stride, col_offset);
  BTM_CUDA_CHECK_LAUNCH();
}
}  // namespace

void heads_split(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream) {
  launch_heads<true>(out, inp, B, T, NH, hs, row_stride, col_offset, stream);
}

void heads_merge(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream) {
  launch_heads<false>(out, inp, B, T, NH, hs, row_stride, col_offset, stream);
}

void softmax_causal_forward(bf16* att, const bf16* preatt, int BH, int T, float scale,
                            cudaStream_t stream) {
  const int rows = BH * T;
  softmax_causal_forward_kernel<<<(rows + 7) / 8, 256, 0, stream>>>(att, preatt, rows, T, scale);
  BTM_CUDA_CHECK_LAUNCH();
}

void softmax_causal_backward(bf16* dpreatt, const bf16* datt, const bf16* att, int BH, int T,
                             float scale, cudaStream_t stream) {
  const int rows = BH * T;
  softmax_causal_backward_kernel<<<(rows + 7) / 8, 256, 0, stream>>>(dpreatt, datt, att, rows, T,
                                                                     scale);
  BTM_CUDA_CHECK_LAUNCH();
}

void attention_forward(Blas& blas, bf16* out, bf16* qkvr, bf16* att, bf16* vaccum, const bf16* qkv,
                       int B, int T, int C, int NH, cudaStream_t stream) {
  const int hs = C / NH;
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  bf16* q = qkvr;
  bf16* k = qkvr + NC;
  bf16* v = qkvr + 2 * NC;
  heads_split(q, qkv, B, T, NH, hs, 3 * C, 0, stream);
  heads_split(k, qkv, B, T, NH, hs, 3 * C, C, stream);
  heads_split(v, qkv, B, T, NH, hs, 3 * C, 2 * C, stream);
  const long long head = static_cast<long long>(T) * hs, square = static_cast<long long>(T) * T;
  // Column-major: preatt^T = K @ Q^T per head, written into att and normalised in place.
  Blas::Gemm s;
  s.trans_a = true, s.m = T, s.n = T, s.k = hs;
  s.a = k, s.lda = hs, s.stride_a = head;
  s.b = q, s.ldb = hs, s.stride_b = head;
  s.d = att, s.ldd = T, s.stride_d = square, s.batch = B * NH;
  blas.gemm(s, stream);
  softmax_causal_forward(att, att, B * NH, T, 1.0f / std::sqrt(static_cast<float>(hs)), stream);
  // vaccum^T = V^T @ att^T per head.
  Blas::Gemm y;
  y.m = hs, y.n = T, y.k = T;
  y.a = v, y.lda = hs, y.stride_a = head;
  y.b = att, y.ldb = T, y.stride_b = square;
  y.d = vaccum, y.ldd = hs, y.stride_d = head, y.batch = B * NH;
  blas.gemm(y, stream);
  heads_merge(out, vaccum, B, T, NH, hs, C, 0, stream);
}

void attention_backward(Blas& blas, bf16* dqkv, bf16* dqkvr, bf16* datt, bf16* dvaccum,
                        const bf16* dout, const bf16* qkvr, const bf16* att, int B, int T, int C,
                        int NH, cudaStream_t stream) {
  const int hs = C / NH;
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  const bf16* q = qkvr;
  const bf16* k = qkvr + NC;
  const bf16* v = qkvr + 2 * NC;
  bf16* dq = dqkvr;
  bf16* dk = dqkvr + NC;
  bf16* dv = dqkvr + 2 * NC;
  const long long head = static_cast<long long>(T) * hs, square = static_cast<long long>(T) * T;
  const int batch = B * NH;
  heads_split(dvaccum, dout, B, T, NH, hs, C, 0, stream);
  auto gemm = [&](bool ta, bool tb, int m, int n, int kk, const bf16* a, int lda, long long sa,
                  const bf16* b, int ldb, long long sb, bf16* d, int ldd, long long sd) {
    Blas::Gemm g;
    g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = kk;
    g.a = a, g.lda = lda, g.stride_a = sa;
    g.b = b, g.ldb = ldb, g.stride_b = sb;
    g.d = d, g.ldd = ldd, g.stride_d = sd, g.batch = batch;
    blas.gemm(g, stream);
  };
  // datt = dO @ V^T (column-major datt^T = V @ dO^T)
  gemm(true, false, T, T, hs, v, hs, head, dvaccum, hs, head, datt, T, square);
  // dV = att^T @ dO (column-major dV^T = dO^T @ att)
  gemm(false, true, hs, T, T, dvaccum, hs, head, att, T, square, dv, hs, head);
  softmax_causal_backward(datt, datt, att, B * NH, T, 1.0f / std::sqrt(static_cast<float>(hs)),
                          stream);
  // dQ = dpreatt @ K (column-major dQ^T = K^T @ dpreatt^T)
  gemm(false, false, hs, T, T, k, hs, head, datt, T, square, dq, hs, head);
  // dK = dpreatt^T @ Q (column-major dK^T = Q^T @ dpreatt)
  gemm(false, true, hs, T, T, q, hs, head, datt, T, square, dk, hs, head);
  heads_merge(dqkv, dq, B, T, NH, hs, 3 * C, 0, stream);
  heads_merge(dqkv, dk, B, T, NH, hs, 3 * C, C, stream);
  heads_merge(dqkv, dv, B, T, NH, hs, 3 * C, 2 * C, stream);
}

}  // namespace btm::cuda
