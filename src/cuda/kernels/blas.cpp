// blas.cpp: the cuBLASLt GEMM context (Blas in cuda/kernels/blas.hpp): bf16 operands, fp32
// accumulation, bf16 or fp32 output, an optional C (residual) input, optional bias and GELU
// epilogues, strided batches. The heuristic's algorithm is cached per shape and alignment, so a
// training step asks it once.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/blas.hpp"
#include "btm/util/error.hpp"

namespace btm::cuda {
namespace {

// The largest power of two up to 256 dividing the address (and every batch's offset).
std::uint32_t alignment_of(const void* p, long long stride_bytes, int batch) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t align = 256;
  while (align > 1 && (address % align != 0 ||
                       (batch > 1 && static_cast<unsigned long long>(stride_bytes) % align != 0)))
    align /= 2;
  return align;
}

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                   const T& value) {
  BTM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

// Owns the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, int rows, int cols, int ld,
                 int batch, long long stride) {
  BTM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(layout, type, static_cast<std::uint64_t>(rows),
                                              static_cast<std::uint64_t>(cols), ld));
  if (batch > 1) {
    const std::int32_t count = batch;
    const std::int64_t offset = stride;
    BTM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &count, sizeof(count)));
    BTM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        *layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset, sizeof(offset)));
  }
}

// The forward GEMM of a linear layer, column-major: out^T[OC, N] = W[OC, IC] (stored as its
// transpose) @ inp^T[IC, N]. The caller sets the output type, C and the epilogue.
Blas::Gemm forward_gemm(void* out, const bf16* inp, const bf16* w, int N, int IC, int OC) {
  Blas::Gemm g;
  g.trans_a = true, g.m = OC, g.n = N, g.k = IC;
  g.a = w, g.lda = IC, g.b = inp, g.ldb = IC, g.d = out, g.ldd = OC;
  return g;
}

// The input-gradient GEMM, column-major: dinp^T[IC, N] = W^T[IC, OC] (as stored) @ dout^T[OC, N].
Blas::Gemm backward_input_gemm(bf16* dinp, const bf16* dout, const bf16* w, int N, int IC, int OC) {
  Blas::Gemm g;
  g.m = IC, g.n = N, g.k = OC;
  g.a = w, g.lda = IC, g.b = dout, g.ldb = OC, g.d = dinp, g.ldd = IC;
  return g;
}

}  // namespace

Blas::Blas(std::size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  BTM_CUBLAS_CHECK(cublasLtCreate(&handle_));
  BTM_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

Blas::~Blas() {
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

bool Blas::gelu_epilogue_supported(const bf16* aux, int rows) {
  return aux != nullptr && rows > 0 && rows % 8 == 0 &&
         reinterpret_cast<std::uintptr_t>(aux) % 16 == 0;
}

void Blas::gemm(const Gemm& g, cudaStream_t stream) {
  if (g.bias != nullptr && (g.d_is_float || reinterpret_cast<std::uintptr_t>(g.bias) % 16 != 0))
    throw_system_error(
        "Blas::gemm: the bias epilogue needs a bf16 output and a 16-byte aligned "
        "bias");
  const bool gelu = g.gelu != Gemm::Gelu::None;
  const bool aux = gelu && (g.gelu == Gemm::Gelu::Backward || g.gelu_aux != nullptr);
  if (gelu &&
      (g.d_is_float || g.batch != 1 ||
       (aux && (g.gelu_aux_ld < g.m || !gelu_epilogue_supported(g.gelu_aux, g.gelu_aux_ld)))))
    throw_system_error(
        "Blas::gemm: the GELU epilogues need a bf16 output, one batch and a 16-byte aligned "
        "aux matrix whose leading dimension is a multiple of 8 and at least m");
  if (g.gelu == Gemm::Gelu::Backward && g.bias != nullptr)
    throw_system_error("Blas::gemm: the GELU backward epilogue takes no bias");
  const std::size_t d_bytes = g.d_is_float ? sizeof(float) : sizeof(bf16);
  const std::uint32_t align_a = alignment_of(g.a, g.stride_a * 2, g.batch);
  const std::uint32_t align_b = alignment_of(g.b, g.stride_b * 2, g.batch);
  const std::uint32_t align_d =
      alignment_of(g.d, g.stride_d * static_cast<long long>(d_bytes), g.batch);
  const void* c = g.c != nullptr ? g.c : g.d;
  const std::uint32_t align_c =
      alignment_of(c, g.stride_d * static_cast<long long>(d_bytes), g.batch);
  // The heuristic's choice depends on the aux pointer's alignment (cublasLt.h), so it is keyed.
  const std::uint32_t align_aux = aux ? alignment_of(g.gelu_aux, 0, 1) : 0;

  cublasLtEpilogue_t epilogue =
      g.bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (g.gelu == Gemm::Gelu::Forward && aux)
    epilogue = g.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  else if (g.gelu == Gemm::Gelu::Forward)
    epilogue = g.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  else if (g.gelu == Gemm::Gelu::Backward)
    epilogue = CUBLASLT_EPILOGUE_DGELU;

  Descriptors desc;
  BTM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t trans_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, trans_a);
  set_attribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, trans_b);
  if (epilogue != CUBLASLT_EPILOGUE_DEFAULT)
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  if (g.bias != nullptr) {
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_16BF);
  }
  if (aux) {
    // The aux type defaults to D's (bf16): the pre-GELU values are stored as the unfused path
    // stores them.
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                  static_cast<void*>(g.gelu_aux));
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                  static_cast<std::int64_t>(g.gelu_aux_ld));
  }
  make_layout(&desc.a, CUDA_R_16BF, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda, g.batch,
              g.stride_a);
  make_layout(&desc.b, CUDA_R_16BF, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb, g.batch,
              g.stride_b);
  const cudaDataType_t d_type = g.d_is_float ? CUDA_R_32F : CUDA_R_16BF;
  make_layout(&desc.d, d_type, g.m, g.n, g.ldd, g.batch, g.stride_d);

  const std::array<long long, 21> key = {
      g.trans_a, g.trans_b, g.m,        g.n,        g.k,        g.lda,        g.ldb,
      g.ldd,     g.batch,   g.stride_a, g.stride_b, g.stride_d, g.d_is_float, g.bias != nullptr,
      align_a,   align_b,   align_c,    align_d,    epilogue,   align_aux,    g.gelu_aux_ld};
  auto found = algos_.find(key);
  if (found == algos_.end()) {
    BTM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&desc.preference));
    const std::uint64_t workspace = workspace_bytes_;
    BTM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
    for (const auto& [attribute, value] : alignments)
      BTM_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(desc.preference, attribute, &value, sizeof(value)));
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    BTM_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(
        handle_, desc.op, desc.a, desc.b, desc.d, desc.d, desc.preference, 1, &result, &returned));
    if (returned == 0)
      throw_system_error("cuBLASLt has no algorithm for a GEMM of m=" + std::to_string(g.m) +
                         " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) +
                         " batch=" + std::to_string(g.batch));
    found = algos_.emplace(key, result.algo).first;
  }
  BTM_CUBLAS_CHECK(cublasLtMatmul(handle_, desc.op, &g.alpha, g.a, desc.a, g.b, desc.b, &g.beta, c,
                                  desc.d, g.d, desc.d, &found->second, workspace_, workspace_bytes_,
                                  stream));
}

void Blas::linear_forward(bf16* out, const bf16* inp, const bf16* w, const bf16* bias, int N,
                          int IC, int OC, cudaStream_t stream) {
  Gemm g = forward_gemm(out, inp, w, N, IC, OC);
  g.bias = bias;
  gemm(g, stream);
}

void Blas::linear_residual_forward(bf16* out, const bf16* residual, const bf16* inp, const bf16* w,
                                   const bf16* bias, int N, int IC, int OC, cudaStream_t stream) {
  Gemm g = forward_gemm(out, inp, w, N, IC, OC);
  g.bias = bias, g.c = residual, g.beta = 1;
  gemm(g, stream);
}

void Blas::linear_forward_float(float* out, const bf16* inp, const bf16* w, int N, int IC, int OC,
                                cudaStream_t stream) {
  Gemm g = forward_gemm(out, inp, w, N, IC, OC);
  g.d_is_float = true;
  gemm(g, stream);
}

void Blas::linear_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* w,
                               const bf16* bias, int N, int IC, int OC, cudaStream_t stream) {
  if (bias == nullptr) throw_system_error("Blas::linear_gelu_forward: needs a bias");
  Gemm g = forward_gemm(out, inp, w, N, IC, OC);
  g.bias = bias;
  g.gelu = Gemm::Gelu::Forward, g.gelu_aux = pre, g.gelu_aux_ld = OC;
  gemm(g, stream);
}

void Blas::linear_backward_input(bf16* dinp, const bf16* dout, const bf16* w, int N, int IC, int OC,
                                 cudaStream_t stream) {
  gemm(backward_input_gemm(dinp, dout, w, N, IC, OC), stream);
}

void Blas::linear_backward_input_dgelu(bf16* dpre, const bf16* dout, const bf16* w, const bf16* pre,
                                       int N, int IC, int OC, cudaStream_t stream) {
  Gemm g = backward_input_gemm(dpre, dout, w, N, IC, OC);
  // The backward epilogue only reads the aux matrix; cuBLASLt takes one pointer attribute.
  g.gelu = Gemm::Gelu::Backward, g.gelu_aux = const_cast<bf16*>(pre), g.gelu_aux_ld = IC;
  gemm(g, stream);
}

void Blas::linear_backward_weight(float* dw, const bf16* dout, const bf16* inp, int N, int IC,
                                  int OC, cudaStream_t stream) {
  // Column-major dW^T[IC, OC] += inp^T[IC, N] @ dout[N, OC].
  Gemm g;
  g.trans_b = true, g.m = IC, g.n = OC, g.k = N;
  g.a = inp, g.lda = IC, g.b = dout, g.ldb = OC, g.d = dw, g.d_is_float = true, g.ldd = IC;
  g.beta = 1;
  gemm(g, stream);
}

}  // namespace btm::cuda
