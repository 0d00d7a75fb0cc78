// flash_attention_sm90.cu: the causal flash attention of flash_attention.cu (head dim 64, no
// T x T matrix, q/k/v read from qkv [B, T, 3C], dq/dk/dv written into dqkv) on Hopper's
// warpgroup MMA (wgmma.mma_async m64n64k16, bf16 in, fp32 accumulation).
//
// Why: the mma.sync kernels load every K/V (or Q/dO) fragment from shared memory into registers
// once per warp of 16 rows and issue 16 x 8 products; wgmma reads a B operand from shared memory
// once per warpgroup of 64 rows, asynchronously, and the A operand either from shared memory too
// (Q, K, V, dO) or from registers (the probabilities and dS, straight from the previous product's
// accumulators). On an H200 (124M shape) the attention of a training step went from 12.5 to
// 9.1 ms, and to 8.1 ms once the mask ran only on diagonal tiles and the loads' addresses were
// set up once: the kernels were bound by instructions, not by the tensor cores
// (docs/performance.md).
//
// Layout: a tile is 64 rows of 64 bf16 (128 bytes) stored with the 128-byte swizzle (row r's
// 16-byte chunk c at byte 128 r + 16 (c ^ (r % 8))), 1024-byte aligned, filled by cp.async. The
// same tile serves as a K-major operand (the contraction runs along the 64 columns: advance 32
// bytes per k-step of 16) and as an MN-major, transposed one (the contraction runs along the
// rows: advance 16 rows = 2048 bytes per k-step), which P V, dS K, P^T dO and dS^T Q need.
// Each warpgroup owns 64 rows (queries, or keys for dK/dV); warp w of it holds rows 16 w + g and
// 16 w + g + 8 of every accumulator (g = lane / 4), with columns 8 j + 2 t, +1 (t = lane % 4) in
// registers 4 j + {0, 1} and 4 j + {2, 3}: the mma.sync C layout, so the masking and softmax
// code is the same as there. Loads are double-buffered as in flash_attention.cu; causality skips
// whole tiles per warpgroup and masks only tiles crossing a warp's diagonal.
// Needs sm_90a; without it (another architecture in CMAKE_CUDA_ARCHITECTURES) the kernels compile
// to nothing and sm90::built() is false, so the dispatch never launches them.
#include <cuda_bf16.h>

#include <cstdint>

#include "btm/cuda/check.hpp"
#include "flash_common.cuh"
#include "flash_sm90.hpp"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BTM_SM90_DEVICE 1
#endif

namespace btm::cuda::sm90 {
namespace {
using namespace flash;

constexpr int kTileElements = kTile * kD;      // 64 rows x 128 bytes, swizzled, no padding
constexpr int kGroupThreads = 128;             // a warpgroup
constexpr int kAcc = 64 * 64 / kGroupThreads;  // fp32 accumulator registers of a 64 x 64 product

// The dynamic shared memory, rounded up to 1024 bytes (the swizzle pattern repeats every 8 rows
// of 128 bytes and the hardware applies it to address bits); launches add kAlignSlack.
constexpr int kAlignSlack = 1024;
__device__ __forceinline__ bf16* aligned_shared(unsigned char* p) {
  const std::uint32_t pad = (1024u - (smem_address(p) & 1023u)) & 1023u;
  return reinterpret_cast<bf16*>(p + pad);
}

// Rows [row0, row0 + kNumRows) of a [T, kD] slice (rows row_stride apart) into a swizzled tile by
// cp.async (the caller commits); rows at or past T are zeroed by plain stores. Each thread copies
// the same 16-byte column chunk of rows kRowsPerPass apart, so its swizzle and addresses are set
// up once; only a tile that crosses T checks rows (a uniform branch).
template <int kNumRows, int kThreads>
__device__ __forceinline__ void load_rows_swizzled(bf16* tile, const bf16* src, int row0, int T,
                                                   int row_stride) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kRowsPerPass % 8 == 0 && kNumRows % kRowsPerPass == 0);
  const int c = static_cast<int>(threadIdx.x) % kChunks,
            r = static_cast<int>(threadIdx.x) / kChunks;
  // Row r + kRowsPerPass i has the swizzle of row r: kRowsPerPass is a multiple of 8.
  unsigned char* dst = reinterpret_cast<unsigned char*>(tile) + r * 128 + ((c ^ (r & 7)) << 4);
  const bf16* from = src + static_cast<std::size_t>(row0 + r) * row_stride + c * 8;
  if (row0 + kNumRows <= T) {
#pragma unroll
    for (int i = 0; i < kNumRows / kRowsPerPass; ++i)
      cp_async16(dst + i * kRowsPerPass * 128, from + i * kRowsPerPass * row_stride);
  } else {
#pragma unroll
    for (int i = 0; i < kNumRows / kRowsPerPass; ++i) {
      if (row0 + r + i * kRowsPerPass < T)
        cp_async16(dst + i * kRowsPerPass * 128, from + i * kRowsPerPass * row_stride);
      else
        *reinterpret_cast<int4*>(dst + i * kRowsPerPass * 128) = make_int4(0, 0, 0, 0);
    }
  }
}

// Makes this thread's shared-memory writes (cp.async and plain stores) visible to wgmma, which
// reads through the async proxy; a __syncthreads must follow.
__device__ __forceinline__ void fence_shared_for_wgmma() {
#ifdef BTM_SM90_DEVICE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// The shared-memory matrix descriptor of a swizzled tile (PTX "matrix descriptor"): start address
// / 16 in bits 0-13, leading and stride byte offsets / 16 in bits 16-29 and 32-45, 128-byte
// swizzle in bits 62-63. The stride between 8-row groups is 1024 bytes; the leading offset is
// unused by K-major swizzled operands and, for the MN-major ones, is given the same 1024.
__device__ __forceinline__ std::uint64_t descriptor(const bf16* tile) {
  return static_cast<std::uint64_t>((smem_address(tile) >> 4) & 0x3FFF) |
         (static_cast<std::uint64_t>(1024 >> 4) << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (static_cast<std::uint64_t>(1) << 62);
}
constexpr std::uint64_t kKStepAlongColumns = 32 >> 4;  // 16 columns: 32 bytes
constexpr std::uint64_t kKStepAlongRows = 2048 >> 4;   // 16 rows: 2048 bytes

#define BTM_ACC32(d)                                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),    \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),  \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),  \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define BTM_ACC32_LIST                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

// d (64 x 64) = (accumulate ? d : 0) + A B^T over 16 columns: A and B from shared memory, both
// K-major.
__device__ __forceinline__ void wgmma_ss(float (&d)[kAcc], std::uint64_t a, std::uint64_t b,
                                         int accumulate) {
#ifdef BTM_SM90_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " BTM_ACC32_LIST
      ", %32, %33, p, 1, 1, 0, 0;\n}\n"
      : BTM_ACC32(d)
      : "l"(a), "l"(b), "r"(accumulate));
#endif
}

// d (64 x 64) += A B over 16 rows of B: A (64 x 16) in registers (mma.sync A fragment layout per
// warp), B from shared memory, MN-major (transposed).
__device__ __forceinline__ void wgmma_rs_transposed(float (&d)[kAcc], const std::uint32_t (&a)[4],
                                                    std::uint64_t b) {
#ifdef BTM_SM90_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " BTM_ACC32_LIST
      ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : BTM_ACC32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
#endif
}

// Orders register writes before the wgmmas that follow (accumulators, A fragments).
__device__ __forceinline__ void wgmma_fence() {
#ifdef BTM_SM90_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef BTM_SM90_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits for every committed wgmma of this warpgroup. Then `fence_registers` on the accumulators
// keeps the compiler from moving their reads above the wait.
__device__ __forceinline__ void wgmma_wait_all() {
#ifdef BTM_SM90_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void fence_registers(float (&d)[kAcc]) {
#pragma unroll
  for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Runs `issue` (wgmma products) as one group and waits for it; `out` are the accumulators the
// products wrote, fenced so that no read of them moves above the wait.
template <typename Issue, typename... Acc>
__device__ __forceinline__ void issue_and_wait(Issue issue, Acc&... out) {
  wgmma_fence();
  issue();
  wgmma_commit();
  wgmma_wait_all();
  (fence_registers(out), ...);
}
// The same for products that add to `acc`: their earlier values are fenced in first.
template <typename Issue, typename... Acc>
__device__ __forceinline__ void accumulate_and_wait(Issue issue, Acc&... acc) {
  (fence_registers(acc), ...);
  issue_and_wait(issue, acc...);
}

// acc = A (64 rows at `rows`) times B^T (64 rows at `tile`), contracting the kD columns.
__device__ __forceinline__ void rows_times_rows(float (&acc)[kAcc], const bf16* rows,
                                                const bf16* tile) {
  const std::uint64_t a = descriptor(rows), b = descriptor(tile);
#pragma unroll
  for (int k = 0; k < kD / 16; ++k)
    wgmma_ss(acc, a + k * kKStepAlongColumns, b + k * kKStepAlongColumns, k > 0);
}

// acc (64 x kD) += P (64 x 64, packed A fragments) times the tile (64 rows x kD).
__device__ __forceinline__ void product_with_tile(float (&acc)[kAcc],
                                                  const std::uint32_t (&p)[kTile / 16][4],
                                                  const bf16* tile) {
  const std::uint64_t b = descriptor(tile);
#pragma unroll
  for (int k = 0; k < kTile / 16; ++k) wgmma_rs_transposed(acc, p[k], b + k * kKStepAlongRows);
}

// The A fragments of a 64 x 64 accumulator, as bf16: columns 16 k .. 16 k + 15 in a[k].
__device__ __forceinline__ void pack_a(std::uint32_t (&a)[kTile / 16][4], const float (&s)[kAcc]) {
#pragma unroll
  for (int k = 0; k < kTile / 16; ++k) {
    a[k][0] = pack_bf16(s[8 * k + 0], s[8 * k + 1]);
    a[k][1] = pack_bf16(s[8 * k + 2], s[8 * k + 3]);
    a[k][2] = pack_bf16(s[8 * k + 4], s[8 * k + 5]);
    a[k][3] = pack_bf16(s[8 * k + 6], s[8 * k + 7]);
  }
}

// A 64 x 64 accumulator as the C-layout tile of its warp's 16 rows (register 4 j + e).
__device__ __forceinline__ float (&as_rows(float (&acc)[kAcc]))[kD / 8][4] {
  return reinterpret_cast<float(&)[kD / 8][4]>(acc);
}

// Forward: grid (query blocks, B * NH), the longest (last) first. kGroups warpgroups of 64
// queries. Shared memory: [stage 0: K, V][stage 1: K, V][the block's Q].
template <int kGroups, int kMinBlocks>
__global__ void __launch_bounds__(kGroupThreads* kGroups, kMinBlocks)
    flash_forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
  constexpr int kRows = 64 * kGroups, kThreads = kGroupThreads * kGroups;
  extern __shared__ unsigned char dynamic_smem[];
  bf16* const smem = aligned_shared(dynamic_smem);
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const int group = threadIdx.x / kGroupThreads, warp = threadIdx.x / 32 % 4;
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int group_row0 = q0 + 64 * group, warp_row0 = group_row0 + 16 * warp;
  const int n_kt = (min(q0 + kRows, T) + kTile - 1) / kTile;  // key tiles the block sees

  bf16* const sQ = smem + 4 * kTileElements;
  load_rows_swizzled<kRows, kThreads>(sQ, q_base, q0, T, 3 * C);
  load_rows_swizzled<kTile, kThreads>(smem, k_base, 0, T, 3 * C);
  load_rows_swizzled<kTile, kThreads>(smem + kTileElements, v_base, 0, T, 3 * C);
  cp_async_commit();
  const bf16* const group_q = sQ + 64 * group * kD;

  float o[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) o[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
#pragma unroll 1
  for (int kt = 0; kt < n_kt; ++kt) {
    if (kt + 1 < n_kt) {
      bf16* next = smem + ((kt + 1) & 1) * 2 * kTileElements;
      load_rows_swizzled<kTile, kThreads>(next, k_base, (kt + 1) * kTile, T, 3 * C);
      load_rows_swizzled<kTile, kThreads>(next + kTileElements, v_base, (kt + 1) * kTile, T, 3 * C);
    }
    cp_async_commit();   // possibly empty: keeps the group count uniform
    cp_async_wait<1>();  // tile kt (and, the first time, Q) is in
    fence_shared_for_wgmma();
    __syncthreads();
    const int k0 = kt * kTile;
    // Keys all past this warpgroup's rows: the tile would change nothing; skip it.
    if (k0 <= group_row0 + 63) {
      const bf16* sK = smem + (kt & 1) * 2 * kTileElements;
      const bf16* sV = sK + kTileElements;
      float s[kAcc];
      issue_and_wait([&] { rows_times_rows(s, group_q, sK); }, s);  // S = Q K^T
      const bool diagonal = k0 + kTile - 1 > warp_row0;  // some key past some row of the warp
      if (diagonal)  // warp-uniform: the other tiles skip the masking's instructions
        mask_keys_after_queries(as_rows(s), warp_row0, k0, g, t, -INFINITY);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = fmaxf(s[2 * r], s[2 * r + 1]);
#pragma unroll
        for (int j = 1; j < kTile / 8; ++j)
          mx = fmaxf(mx, fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // Every processed tile shows each row at least one key (tiles and warpgroups are 64-row
        // aligned: the first tile past a row's diagonal is skipped), so m_new is finite.
        // Maxima stay in unscaled score units: the scale goes into one FMA per score below.
        const float m_new = fmaxf(m_run[r], mx);
        const float alpha = fast_exp2((m_run[r] - m_new) * kScaleLog2);
        const float offset = -m_new * kScaleLog2;
        m_run[r] = m_new;
        l_run[r] *= alpha;
#pragma unroll
        for (int n = 0; n < kD / 8; ++n) {
          o[4 * n + 2 * r] *= alpha;
          o[4 * n + 2 * r + 1] *= alpha;
        }
#pragma unroll
        for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
          for (int e = 2 * r; e < 2 * r + 2; ++e) {
            s[4 * j + e] = fast_exp2(fmaf(s[4 * j + e], kScaleLog2, offset));
            l_run[r] += s[4 * j + e];
          }
      }
      std::uint32_t p[kTile / 16][4];
      pack_a(p, s);
      accumulate_and_wait([&] { product_with_tile(o, p, sV); }, o);  // O += P V
    }
    __syncthreads();  // every warpgroup is done with stage kt & 1 before it is refilled
  }
  const int row_a = warp_row0 + g;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    const int row = row_a + 8 * r;
    if (t == 0 && row < T)
      lse[static_cast<std::size_t>(bh) * T + row] = m_run[r] * kScaleLog2 + __log2f(l);
  }
  store_rows(out + head.out_offset, as_rows(o), row_a, T, C, inv[0], inv[1], t);
}

// dK, dV of one key block: loop over the 64-query tiles that see it. grid (key blocks, B * NH),
// block 0 (the longest) first. kGroups warpgroups of 64 keys. Shared memory: [stage 0: Q, dO]
// [stage 1: Q, dO][the block's K][the block's V].
template <int kGroups, int kMinBlocks>
__global__ void __launch_bounds__(kGroupThreads* kGroups, kMinBlocks)
    flash_backward_dkdv_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                               const float* dvec, int T, int NH) {
  constexpr int kRows = 64 * kGroups, kThreads = kGroupThreads * kGroups;
  extern __shared__ unsigned char dynamic_smem[];
  bf16* const smem = aligned_shared(dynamic_smem);
  __shared__ __align__(16) float sLse[2][kTile], sDvec[2][kTile];  // read as float2
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int k0 = blockIdx.x * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + head.out_offset;
  const int group = threadIdx.x / kGroupThreads, warp = threadIdx.x / 32 % 4;
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int group_key0 = k0 + 64 * group, warp_key0 = group_key0 + 16 * warp;
  const int key_a = warp_key0 + g;  // this thread's keys: key_a and key_a + 8
  const float* lse_bh = lse + static_cast<std::size_t>(bh) * T;
  const float* dvec_bh = dvec + static_cast<std::size_t>(bh) * T;
  const int first_qt = k0 / kTile;
  const int n_qt = (T + kTile - 1) / kTile - first_qt;  // query tiles seen (k0 < T: >= 1)

  // Q, dO (and the rows' lse, dvec) of query tile first_qt + i into stage i & 1.
  const auto load_stage = [&](int i) {
    const int s = i & 1, q0 = (first_qt + i) * kTile;
    bf16* sQ = smem + s * 2 * kTileElements;
    load_rows_swizzled<kTile, kThreads>(sQ, q_base, q0, T, 3 * C);
    load_rows_swizzled<kTile, kThreads>(sQ + kTileElements, do_base, q0, T, C);
    stage_query_stats(sLse[s], sDvec[s], lse_bh, dvec_bh, q0, T);
  };

  bf16* const sK = smem + 4 * kTileElements;
  bf16* const sV = sK + kRows * kD;
  load_rows_swizzled<kRows, kThreads>(sK, k_base, k0, T, 3 * C);
  load_rows_swizzled<kRows, kThreads>(sV, v_base, k0, T, 3 * C);
  load_stage(0);
  cp_async_commit();
  const bf16* const group_k = sK + 64 * group * kD;
  const bf16* const group_v = sV + 64 * group * kD;

  float dk[kAcc], dv[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) dk[i] = dv[i] = 0.0f;
#pragma unroll 1
  for (int i = 0; i < n_qt; ++i) {
    if (i + 1 < n_qt) load_stage(i + 1);
    cp_async_commit();
    cp_async_wait<1>();  // stage i & 1 (and, the first time, K and V) is in
    fence_shared_for_wgmma();
    __syncthreads();
    const int q0 = (first_qt + i) * kTile;
    // Queries all before this warpgroup's keys: P is 0 and the tile changes nothing; skip it.
    if (q0 + kTile - 1 >= group_key0) {
      const int s = i & 1;
      const bf16* sQ = smem + s * 2 * kTileElements;
      const bf16* sdO = sQ + kTileElements;
      // P^T = exp2(scale_log2 * K Q^T - lse) and dP^T = V dO^T for this warpgroup's 64 keys x
      // 64 queries, issued together: one wait, and only these two and dK, dV are live (128
      // accumulator registers) where the last products need the registers of neither.
      float p[kAcc], ds[kAcc];
      issue_and_wait(
          [&] {
            rows_times_rows(p, group_k, sQ);
            rows_times_rows(ds, group_v, sdO);
          },
          p, ds);
      const bool diagonal = warp_key0 + 15 > q0;  // some key of the warp past some query
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j) {
        const float2 row_lse = *reinterpret_cast<const float2*>(&sLse[s][j * 8 + 2 * t]);
#pragma unroll
        for (int e = 0; e < 4; ++e)
          p[4 * j + e] =
              fast_exp2(fmaf(p[4 * j + e], kScaleLog2, -(e & 1 ? row_lse.y : row_lse.x)));
      }
      if (diagonal)  // warp-uniform: the other tiles skip the masking's instructions
        mask_keys_after_queries<true>(as_rows(p), warp_key0, q0, g, t, 0.0f);
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j) {
        const float2 row_dvec = *reinterpret_cast<const float2*>(&sDvec[s][j * 8 + 2 * t]);
#pragma unroll
        for (int e = 0; e < 4; ++e)
          ds[4 * j + e] = p[4 * j + e] * (ds[4 * j + e] - (e & 1 ? row_dvec.y : row_dvec.x));
      }
      std::uint32_t a_p[kTile / 16][4], a_ds[kTile / 16][4];
      pack_a(a_p, p);
      pack_a(a_ds, ds);
      accumulate_and_wait(
          [&] {
            product_with_tile(dv, a_p, sdO);  // dV += P^T dO
            product_with_tile(dk, a_ds, sQ);  // dK += dS^T Q
          },
          dv, dk);
    }
    __syncthreads();  // every warpgroup is done with stage i & 1 before it is refilled
  }
  bf16* dst = dqkv + head.qkv_offset;
  store_rows(dst + C, as_rows(dk), key_a, T, row_stride, kScale, kScale, t);
  store_rows(dst + 2 * C, as_rows(dv), key_a, T, row_stride, 1.0f, 1.0f, t);
}

// dQ of one query block: loop over the key tiles it sees. grid (query blocks, B * NH), the
// longest (last) first. kGroups warpgroups of 64 queries. Shared memory: [stage 0: K, V]
// [stage 1: K, V][the block's Q][the block's dO].
template <int kGroups, int kMinBlocks>
__global__ void __launch_bounds__(kGroupThreads* kGroups, kMinBlocks)
    flash_backward_dq_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                             const float* dvec, int T, int NH) {
  constexpr int kRows = 64 * kGroups, kThreads = kGroupThreads * kGroups;
  extern __shared__ unsigned char dynamic_smem[];
  bf16* const smem = aligned_shared(dynamic_smem);
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + head.out_offset;
  const int group = threadIdx.x / kGroupThreads, warp = threadIdx.x / 32 % 4;
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int group_row0 = q0 + 64 * group, warp_row0 = group_row0 + 16 * warp;
  const int n_kt = (min(q0 + kRows, T) + kTile - 1) / kTile;  // key tiles the block sees

  bf16* const sQ = smem + 4 * kTileElements;
  bf16* const sdO = sQ + kRows * kD;
  load_rows_swizzled<kRows, kThreads>(sQ, q_base, q0, T, 3 * C);
  load_rows_swizzled<kRows, kThreads>(sdO, do_base, q0, T, C);
  load_rows_swizzled<kTile, kThreads>(smem, k_base, 0, T, 3 * C);
  load_rows_swizzled<kTile, kThreads>(smem + kTileElements, v_base, 0, T, 3 * C);
  cp_async_commit();
  float row_lse[2], row_dvec[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp_row0 + g + 8 * r;
    row_lse[r] = row < T ? lse[static_cast<std::size_t>(bh) * T + row] : INFINITY;
    row_dvec[r] = row < T ? dvec[static_cast<std::size_t>(bh) * T + row] : 0.0f;
  }
  const bf16* const group_q = sQ + 64 * group * kD;
  const bf16* const group_do = sdO + 64 * group * kD;

  float dq[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) dq[i] = 0.0f;
#pragma unroll 1
  for (int kt = 0; kt < n_kt; ++kt) {
    if (kt + 1 < n_kt) {
      bf16* next = smem + ((kt + 1) & 1) * 2 * kTileElements;
      load_rows_swizzled<kTile, kThreads>(next, k_base, (kt + 1) * kTile, T, 3 * C);
      load_rows_swizzled<kTile, kThreads>(next + kTileElements, v_base, (kt + 1) * kTile, T, 3 * C);
    }
    cp_async_commit();
    cp_async_wait<1>();  // tile kt (and, the first time, Q and dO) is in
    fence_shared_for_wgmma();
    __syncthreads();
    const int k0 = kt * kTile;
    // Keys all past this warpgroup's rows: P is 0 and the tile changes nothing; skip it.
    if (k0 <= group_row0 + 63) {
      const bf16* sK = smem + (kt & 1) * 2 * kTileElements;
      const bf16* sV = sK + kTileElements;
      float p[kAcc], ds[kAcc];
      issue_and_wait(
          [&] {
            rows_times_rows(p, group_q, sK);    // S = Q K^T
            rows_times_rows(ds, group_do, sV);  // dP = dO V^T
          },
          p, ds);
      const bool diagonal = k0 + kTile - 1 > warp_row0;  // some key past some row of the warp
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          p[4 * j + e] = fast_exp2(fmaf(p[4 * j + e], kScaleLog2, -row_lse[e >> 1]));
      if (diagonal)  // warp-uniform: the other tiles skip the masking's instructions
        mask_keys_after_queries(as_rows(p), warp_row0, k0, g, t, 0.0f);
#pragma unroll
      for (int i = 0; i < kAcc; ++i) ds[i] = p[i] * (ds[i] - row_dvec[i / 2 % 2]);
      std::uint32_t a[kTile / 16][4];
      pack_a(a, ds);
      accumulate_and_wait([&] { product_with_tile(dq, a, sK); }, dq);  // dQ += dS K
    }
    __syncthreads();  // every warpgroup is done with stage kt & 1 before it is refilled
  }
  store_rows(dqkv + head.qkv_offset, as_rows(dq), warp_row0 + g, T, row_stride, kScale, kScale, t);
}

// Launch shapes: warpgroups per block and blocks per SM (which bounds the registers). Measured on
// an H200 (124M shape, Nsight Compute, per two training steps) against 2 warpgroups per block:
// one warpgroup per block, more blocks, keeps the tensor cores busier while a warpgroup does its
// softmax: dK/dV (1, 3) 7.66 ms against (2, 1) 9.29 and (1, 2) 8.11; dQ (1, 4) 5.00 against
// (2, 1) 6.88, (2, 2) 5.19, (1, 3) 5.22; the forward 5.03-5.04 for (1, 2), (1, 3), (1, 4)
// against (2, 2) 5.25. ptxas: no spills in any of them.
constexpr int kForwardGroups = 1, kForwardMinBlocks = 3;  // 64 queries
constexpr int kDkdvGroups = 1, kDkdvMinBlocks = 3;        // 64 keys
constexpr int kDqGroups = 1, kDqMinBlocks = 4;            // 64 queries

// Dynamic shared memory of a kernel with `tiles` 64-row tiles, raising the kernel's limit.
template <typename Kernel>
std::size_t prepare_shared(Kernel kernel, int tiles) {
  const std::size_t bytes =
      static_cast<std::size_t>(tiles) * kTileElements * sizeof(bf16) + kAlignSlack;
  BTM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
  return bytes;
}

}  // namespace

bool built() {
#if defined(BTM_CUDA_SM90A)
  return true;
#else
  return false;
#endif
}

void flash_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH,
                   cudaStream_t stream) {
  constexpr int kRows = 64 * kForwardGroups;
  const auto kernel = flash_forward_kernel<kForwardGroups, kForwardMinBlocks>;
  const std::size_t shared = prepare_shared(kernel, 4 + kRows / kTile);
  kernel<<<dim3((T + kRows - 1) / kRows, B * NH), kGroupThreads * kForwardGroups, shared, stream>>>(
      out, lse, qkv, T, NH);
  BTM_CUDA_CHECK_LAUNCH();
}

void flash_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                    const float* dvec, int B, int T, int NH, cudaStream_t stream) {
  {
    constexpr int kRows = 64 * kDkdvGroups;
    const auto kernel = flash_backward_dkdv_kernel<kDkdvGroups, kDkdvMinBlocks>;
    const std::size_t shared = prepare_shared(kernel, 4 + 2 * kRows / kTile);
    kernel<<<dim3((T + kRows - 1) / kRows, B * NH), kGroupThreads * kDkdvGroups, shared, stream>>>(
        dqkv, qkv, dout, lse, dvec, T, NH);
    BTM_CUDA_CHECK_LAUNCH();
  }
  {
    constexpr int kRows = 64 * kDqGroups;
    const auto kernel = flash_backward_dq_kernel<kDqGroups, kDqMinBlocks>;
    const std::size_t shared = prepare_shared(kernel, 4 + 2 * kRows / kTile);
    kernel<<<dim3((T + kRows - 1) / kRows, B * NH), kGroupThreads * kDqGroups, shared, stream>>>(
        dqkv, qkv, dout, lse, dvec, T, NH);
    BTM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace btm::cuda::sm90
