// kernels.hpp: host-callable launchers of the CUDA engine's kernels, on device pointers,
// each the bf16 counterpart of a function of cpu/kernels.hpp (the kernel harness,
// tests/gpu/test_kernels.cpp, checks every one against it), and the cuBLASLt GEMM context.
// Conventions follow cpu/kernels.hpp: row-major, weights [out, in]; activations and activation
// gradients are bf16, parameter gradients fp32 and ACCUMULATED (+=). Every launcher enqueues
// on `stream` and returns at once; every kernel is deterministic (no floating-point atomics), so
// the same inputs give the same bits on the same GPU. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace btm::cuda {

using bf16 = __nv_bfloat16;

// ---- conversions and small helpers -------------------------------------------------------
void float_to_bf16(bf16* out, const float* in, std::size_t n, cudaStream_t stream);
void bf16_to_float(float* out, const bf16* in, std::size_t n, cudaStream_t stream);
// out[0] = mean of values[0..n), summed in a fixed order.
void mean_of(float* out, const float* values, int n, cudaStream_t stream);

// ---- encoder ------------------------------------------------------------------------------
// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; inp on the device.
void encoder_forward(bf16* out, const std::int32_t* inp, const bf16* wte, const bf16* wpe, int B,
                     int T, int C, cudaStream_t stream);

// The positions of a batch grouped by token id (a counting sort on the host), so that the
// embedding gradient is summed per token in a fixed order instead of with atomics.
struct TokenBuckets {
  std::vector<std::int32_t> tokens;     // the distinct token ids, ascending
  std::vector<std::int32_t> offsets;    // bucket u holds positions[offsets[u] .. offsets[u+1])
  std::vector<std::int32_t> positions;  // row indices b*T + t, ascending inside a bucket
  void build(const std::int32_t* inp, std::size_t n, int vocab);
};
// dwte[tokens[u], :] += sum over the bucket's positions p of dout[p, :].
void encoder_backward_wte(float* dwte, const bf16* dout, const std::int32_t* bucket_tokens,
                          const std::int32_t* bucket_offsets, const std::int32_t* positions,
                          int num_buckets, int C, cudaStream_t stream);
// dwpe[t, :] += sum over b of dout[b, t, :].
void encoder_backward_wpe(float* dwpe, const bf16* dout, int B, int T, int C, cudaStream_t stream);

// ---- LayerNorm ----------------------------------------------------------------------------
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w,
                       const bf16* b, int N, int C, cudaStream_t stream);
// Floats of scratch layernorm_backward needs for rows of C channels.
std::size_t layernorm_backward_scratch_floats(int C);
// dinp = (accumulate ? dinp : 0) + d/dinp; dw += ..., db += ... (fp32). dinp must not alias dout.
void layernorm_backward(bf16* dinp, float* dw, float* db, float* scratch, const bf16* dout,
                        const bf16* inp, const bf16* w, const float* mean, const float* rstd, int N,
                        int C, bool accumulate, cudaStream_t stream);

// ---- linear layers ------------------------------------------------------------------------
std::size_t bias_backward_scratch_floats(int OC);
// dbias[OC] += column sums of dout[N, OC].
void bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                   cudaStream_t stream);

// Owns a cuBLASLt handle and workspace; caches the heuristic's algorithm per GEMM shape.
class Blas {
 public:
  explicit Blas(std::size_t workspace_bytes = 64u << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Column-major D[m, n] = alpha * op(A) @ op(B) + beta * D (+ bias[m] broadcast over columns),
  // A and B bf16, D bf16 or fp32 (d_is_float), fp32 accumulation; `batch` strided batches.
  struct Gemm {
    bool trans_a = false, trans_b = false;
    int m = 0, n = 0, k = 0;
    const bf16* a = nullptr;
    int lda = 0;
    long long stride_a = 0;
    const bf16* b = nullptr;
    int ldb = 0;
    long long stride_b = 0;
    void* d = nullptr;
    bool d_is_float = false;
    int ldd = 0;
    long long stride_d = 0;
    int batch = 1;
    float alpha = 1, beta = 0;
    // C of D = alpha op(A) op(B) + beta C: same type and layout as D; null means D itself.
    const void* c = nullptr;
    const bf16* bias = nullptr;  // bf16, only with a bf16 D
    // The GELU epilogues (tanh approximation), bf16 D and batch 1 only. Forward: D = gelu(X)
    // with X = op(A) @ op(B) (+ bias) also written to gelu_aux unless gelu_aux is null (an
    // inference forward keeps no pre-GELU values). Backward: D = X * gelu'(aux), no bias.
    // gelu_aux is [m, n] column-major with leading dimension gelu_aux_ld.
    enum class Gelu { None, Forward, Backward };
    Gelu gelu = Gelu::None;
    bf16* gelu_aux = nullptr;  // read only in the backward
    int gelu_aux_ld = 0;
  };
  void gemm(const Gemm& g, cudaStream_t stream);

  // Whether the GELU epilogues accept an aux (pre-GELU) matrix at `aux` with `rows` rows per
  // column (the leading dimension): cuBLASLt needs it a multiple of 8 (cublasLt.h,
  // EPILOGUE_AUX_LD); the 16-byte alignment is ours, as for the bias. Callers that get false run
  // linear_forward + gelu_forward (and gelu_backward) instead.
  static bool gelu_epilogue_supported(const bf16* aux, int rows);

  // out[N, OC] = inp[N, IC] @ w[OC, IC]^T (+ bias), bf16 out.
  void linear_forward(bf16* out, const bf16* inp, const bf16* w, const bf16* bias, int N, int IC,
                      int OC, cudaStream_t stream);
  // out[N, OC] = residual[N, OC] + inp @ w^T + bias, in one GEMM (the residual is its C
  // matrix, summed in fp32 and rounded to bf16 once).
  void linear_residual_forward(bf16* out, const bf16* residual, const bf16* inp, const bf16* w,
                               const bf16* bias, int N, int IC, int OC, cudaStream_t stream);
  // Same as linear_forward with an fp32 out (the evaluation logits).
  void linear_forward_float(float* out, const bf16* inp, const bf16* w, int N, int IC, int OC,
                            cudaStream_t stream);
  // out[N, OC] = gelu(pre), pre[N, OC] = inp @ w^T + bias, in one GEMM (the bias is required).
  // Needs gelu_epilogue_supported(pre, OC), or pre null: pre is then not written (inference).
  void linear_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* w, const bf16* bias,
                           int N, int IC, int OC, cudaStream_t stream);
  // dinp[N, IC] = dout[N, OC] @ w[OC, IC].
  void linear_backward_input(bf16* dinp, const bf16* dout, const bf16* w, int N, int IC, int OC,
                             cudaStream_t stream);
  // dpre[N, IC] = (dout[N, OC] @ w[OC, IC]) * gelu'(pre[N, IC]): the input gradient through the
  // linear layer and the GELU before it, in one GEMM. Needs gelu_epilogue_supported(pre, IC).
  void linear_backward_input_dgelu(bf16* dpre, const bf16* dout, const bf16* w, const bf16* pre,
                                   int N, int IC, int OC, cudaStream_t stream);
  // dw[OC, IC] += dout^T @ inp (fp32).
  void linear_backward_weight(float* dw, const bf16* dout, const bf16* inp, int N, int IC, int OC,
                              cudaStream_t stream);

 private:
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::map<std::array<long long, 21>, cublasLtMatmulAlgo_t> algos_;
};

// ---- GELU (tanh approximation) and attention ----------------------------------------------
void gelu_forward(bf16* out, const bf16* inp, std::size_t n, cudaStream_t stream);
// dinp may alias dout.
void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, std::size_t n,
                   cudaStream_t stream);

// out[b, h, t, :] = inp[(b*T + t) * row_stride + col_offset + h*hs + 0..hs) and its inverse.
void heads_split(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream);
void heads_merge(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream);
// Causal softmax of scale * rows of preatt[BH, T, T] (in place allowed); zeros above the
// diagonal. Backward: dpreatt = scale * att * (datt - sum(att * datt)), in place allowed.
void softmax_causal_forward(bf16* att, const bf16* preatt, int BH, int T, float scale,
                            cudaStream_t stream);
void softmax_causal_backward(bf16* dpreatt, const bf16* datt, const bf16* att, int BH, int T,
                             float scale, cudaStream_t stream);

// Causal self-attention from qkv[B, T, 3C] (q | k | v) to out[B, T, C], materialising the
// probabilities att[B, NH, T, T] (kept for the backward). qkvr[3, B, NH, T, hs] receives the
// per-head q, k, v (kept for the backward); vaccum is [B, T, C] scratch.
void attention_forward(Blas& blas, bf16* out, bf16* qkvr, bf16* att, bf16* vaccum, const bf16* qkv,
                       int B, int T, int C, int NH, cudaStream_t stream);
// dqkv[B, T, 3C] from dout[B, T, C]. Scratch: dqkvr (3 * B*T*C), datt (B*NH*T*T), dvaccum (B*T*C).
void attention_backward(Blas& blas, bf16* dqkv, bf16* dqkvr, bf16* datt, bf16* dvaccum,
                        const bf16* dout, const bf16* qkvr, const bf16* att, int B, int T, int C,
                        int NH, cudaStream_t stream);

// Fused causal attention (flash_attention.cu), no T x T matrix: for head dims where
// flash_attention_supported() holds. lse[B, NH, T] keeps each row's log2-sum-exp of the scaled
// scores for the backward. The backward fills all of dqkv[B, T, 3C]; dvec is [B, NH, T] scratch.
// Two implementations: wgmma (Hopper: an sm_90a build on a compute capability 9.0 GPU) and
// mma.sync (sm_80 and later); `automatic` takes wgmma where it can run, `wgmma` throws where it
// cannot. Both give the same results up to fp32 summation order.
enum class FlashKernels { automatic, mma_sync, wgmma };
bool flash_attention_supported(int head_dim);
bool flash_wgmma_available();
void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashKernels kernels = FlashKernels::automatic);
void flash_attention_backward(bf16* dqkv, float* dvec, const bf16* dout, const bf16* qkv,
                              const bf16* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream, FlashKernels kernels = FlashKernels::automatic);

// ---- classifier ---------------------------------------------------------------------------
// Softmax over the first V of Vp logits per row and cross-entropy against targets (device):
// losses[i] = -log p(targets[i]); if dlogits is not null it receives (p - onehot) * dloss
// (0 in the padded columns); dlogits may alias logits.
void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss,
                                   cudaStream_t stream);
// The same on fp32 logits without gradient (evaluation).
void crossentropy_forward(float* losses, const float* logits, const std::int32_t* targets, int N,
                          int V, int Vp, cudaStream_t stream);

// ---- exact sums in 64-bit fixed point (fixed_point.cu) -----------------------------------
// The arithmetic of fixed_point.hpp on the device, bit for bit: a term is
// llrint((double(x) * w) * 2^40) (no FMA contraction), a term with !(|double(x) * w| < limit)
// (also NaN and infinities) is left out and counted in *count (an int64 on the device, added
// to with one atomic per block; the sums use none), a sum back to float is
// float(double(sum) * factor) with factor = fixed::factor_for(divisor). Integer sums do not
// depend on the order of their terms, so any grid gives the host's bits.

// A micro-batch gradient into a step's exact sum (fixed::accumulate of g with `weight`), and
// g[i] = 0 once read, so the next micro-batch's backward starts from zero: one pass of read g,
// write 0, read-modify-write sum.
void fixed_accumulate(std::int64_t* sum, std::int64_t* count, float* g, std::size_t n,
                      double weight, double limit, cudaStream_t stream);
// out[i] = fixed::to_float(sum[i], factor); NaN everywhere instead when count is not null and
// *count > 0 (read on the device: no host synchronisation).
void fixed_to_floats(float* out, const std::int64_t* sum, const std::int64_t* count, std::size_t n,
                     double factor, cudaStream_t stream);
// A weighted sum of K vectors x[0..K) (a device array of K device pointers, weights w a device
// array of K doubles; K <= 256): out[i] = to_float(sum_k to_fixed(x[k][i], w[k]), factor), the
// terms outside `limit` left out and counted in *count. out may not alias any x[k].
void fixed_weighted_sum(float* out, std::int64_t* count, const float* const* x, const double* w,
                        int K, std::size_t n, double limit, double factor, cudaStream_t stream);
// The same terms added into an exact sum: sum[i] += sum_k to_fixed(x[k][offset + i], w[k]) for
// i in [0, n) (offset: a chunk of longer vectors).
void fixed_weighted_add(std::int64_t* sum, std::int64_t* count, const float* const* x,
                        const double* w, int K, std::size_t offset, std::size_t n, double limit,
                        cudaStream_t stream);

// ---- optimizer ----------------------------------------------------------------------------
// Floats of scratch (as doubles) global_sum_of_squares needs.
std::size_t sum_of_squares_scratch_doubles();
// out[0] = sum of g[i]^2 over [0, n), in double, fixed order.
void sum_of_squares(double* out, double* scratch, const float* g, std::size_t n,
                    cudaStream_t stream);

// The weight-decay segments of a flat vector: segment s covers [ends[s-1], ends[s]).
struct DecaySegments {
  const std::uint64_t* ends = nullptr;  // device, ascending, ends[count-1] = n
  const std::uint8_t* decay = nullptr;  // device, 1 where the segment's tensor decays
  int count = 0;
  bool ends_multiple_of_4 = false;  // lets the kernel update 4 floats per access
};
// AdamW as cpu::adamw_update over all n elements, with decay per segment, the gradient scaled
// by the clip factor min(1, grad_clip / (sqrt(*sumsq) + 1e-6)) (1 if grad_clip <= 0 or sumsq is
// null), and params_bf16 refreshed from the updated fp32 parameters. When sumsq is not null and
// *sumsq is not finite (a NaN or infinite gradient), p, p_bf16, m and v are left unchanged: the
// kernel reads *sumsq on the device, so skipping a step needs no host synchronisation.
void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, std::size_t n,
                  const DecaySegments& segments, float lr, float beta1, float beta2, float eps,
                  float weight_decay, float bias1, float bias2, const double* sumsq,
                  float grad_clip, cudaStream_t stream);

}  // namespace btm::cuda
