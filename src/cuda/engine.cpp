// engine.cpp: the CUDA engine (make_cuda_engine in cuda/engine.hpp). fp32 master weights,
// AdamW moments and gradients live on the device in the ParamLayout order (so get/set_state
// are plain copies); a bf16 copy of the parameters feeds the kernels and is refreshed by the
// fused AdamW kernel. Activations are bf16, preallocated for max_batch x context at
// construction (cudaMalloc only). One compute stream. A step of M > 1 micro-batches sums their
// gradients exactly (fixed_point.hpp, the CPU engine's arithmetic bit for bit): each layer's
// range goes into an int64 sum as soon as its backward is done and, on the last micro-step with
// a device communicator, is all-reduced on a second stream while the backward goes on.
// Parents of parameter averages are kept in device memory where they fit.
#include "btm/cuda/engine.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels.hpp"
#include "btm/cuda/memory.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {

int cuda_visible_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error: no driver or no device is not a failure here
    return 0;
  }
  return count;
}

std::string cuda_pci_bus_id(int gpu) {
  char id[32] = {};
  BTM_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof(id)), gpu));
  return id;
}

namespace {

using cuda::bf16;
using cuda::DeviceArray;
using cuda::PinnedArray;
using std::size_t;

// The logits of one classifier chunk are at most this many bytes (bf16 in training).
constexpr size_t kLogitsChunkBytes = size_t{4} << 30;
// Parents of one fixed-point kernel launch (cuda::fixed_weighted_sum's limit).
constexpr size_t kParentsPerLaunch = 256;
// add_parents moves the host's sum through the device in chunks of this many int64 (128 MiB).
constexpr size_t kAddChunk = size_t{1} << 24;
// Device memory hold_parent leaves free for the engine (step sums, cuBLAS workspaces, other
// processes on the GPU): 2 GiB + 10 % of the GPU.
constexpr size_t kParentHeadroomBytes = size_t{2} << 30;

void check_size(std::span<const float> v, size_t expected, const char* what) {
  if (v.size() != expected)
    throw std::invalid_argument(std::string("cuda engine: ") + what + " has " +
                                std::to_string(v.size()) + " floats, the layout has " +
                                std::to_string(expected));
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& model, int gpu, int max_batch, CudaAttention attention,
             CudaGelu gelu)
      : model_(model), layout_(model), gpu_(gpu), max_batch_(max_batch) {
    validate_model(model);  // InputError naming the setting
    if (model.d_model % 8 != 0)
      throw InputError("model.d_model = " + std::to_string(model.d_model) +
                       ": the cuda engine needs a multiple of 8 (use e.g. " +
                       std::to_string((model.d_model + 7) / 8 * 8) + ", or run.device = cpu)");
    if (max_batch < 1) throw std::invalid_argument("cuda engine: max_batch must be >= 1");
    const bool flash_ok = cuda::flash_attention_supported(model.head_dim());
    const bool flash_asked =
        attention == CudaAttention::Flash || attention == CudaAttention::FlashMmaSync;
    if (flash_asked && !flash_ok)
      throw InputError(
          "cuda engine: flash attention needs a head dimension (d_model / n_head) "
          "of 64, not " +
          std::to_string(model.head_dim()) +
          ": change the model or use the materialized attention");
    flash_ = flash_asked || (attention == CudaAttention::Auto && flash_ok);
    if (attention == CudaAttention::FlashMmaSync) flash_kernels_ = cuda::FlashKernels::mma_sync;
    const int devices = cuda_visible_devices();
    if (gpu < 0 || gpu >= devices)
      throw InputError("cuda engine: GPU " + std::to_string(gpu) + " requested but " +
                       std::to_string(devices) + " visible (check CUDA_VISIBLE_DEVICES)");
    // The fused GELU's aux matrix is fch [N, 4C] (per-layer slices of a cudaMalloc'ed buffer,
    // 16-byte aligned with C a multiple of 8): its leading dimension 4C decides.
    const bool fused_ok = 4 * model.d_model % 8 == 0;
    if (gelu == CudaGelu::Fused && !fused_ok)
      throw InputError("cuda engine: the fused GELU needs 4 * d_model a multiple of 8");
    fuse_gelu_ = gelu == CudaGelu::Fused || (gelu == CudaGelu::Auto && fused_ok);
    BTM_CUDA_CHECK(cudaSetDevice(gpu_));
    // Which flash kernels this GPU runs, decided once (the calls then name them).
    if (flash_ && flash_kernels_ == cuda::FlashKernels::automatic)
      flash_kernels_ =
          cuda::flash_wgmma_available() ? cuda::FlashKernels::wgmma : cuda::FlashKernels::mma_sync;
    BTM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    BTM_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    BTM_CUDA_CHECK(cudaEventCreateWithFlags(&loss_ready_, cudaEventDisableTiming));
    BTM_CUDA_CHECK(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming));
    BTM_CUDA_CHECK(cudaEventCreateWithFlags(&layer_done_, cudaEventDisableTiming));
    BTM_CUDA_CHECK(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
    blas_ = std::make_unique<cuda::Blas>();
    allocate();
  }

  ~CudaEngine() override {
    cudaSetDevice(gpu_);
    cudaStreamSynchronize(stream_);
    cudaStreamSynchronize(comm_stream_);
    cudaEventDestroy(loss_ready_);
    cudaEventDestroy(uploaded_);
    cudaEventDestroy(layer_done_);
    cudaEventDestroy(comm_done_);
    cudaStreamDestroy(comm_stream_);
    cudaStreamDestroy(stream_);
  }

  std::string kind() const override { return "cuda"; }
  Facts facts() const override {
    return {flash_ ? "flash" : "materialized", flash_kernels(), fuse_gelu_ ? "fused" : "unfused"};
  }
  const ParamLayout& layout() const override { return layout_; }
  size_t allocated_bytes() const { return allocated_bytes_; }
  bool flash() const { return flash_; }
  // The flash kernels this engine's GPU runs ("" with the materialized attention).
  std::string flash_kernels() const {
    if (!flash_) return "";
    return flash_kernels_ == cuda::FlashKernels::wgmma ? "wgmma" : "mma.sync";
  }
  bool fused_gelu() const { return fuse_gelu_; }

  void set_state(std::span<const float> params, std::span<const float> m,
                 std::span<const float> v) override {
    check_size(params, layout_.total(), "params");
    check_size(m, layout_.total(), "first moments");
    check_size(v, layout_.total(), "second moments");
    use_device();
    to_device(params_.get(), params);
    to_device(m_.get(), m);
    to_device(v_.get(), v);
    refresh_bf16();
    sync();
  }
  void get_state(std::span<float> params, std::span<float> m, std::span<float> v) const override {
    check_size(params, layout_.total(), "params");
    check_size(m, layout_.total(), "first moments");
    check_size(v, layout_.total(), "second moments");
    use_device();
    to_host(params, params_.get());
    to_host(m, m_.get());
    to_host(v, v_.get());
    sync();
  }
  void get_params(std::span<float> params) const override {
    check_size(params, layout_.total(), "params");
    use_device();
    to_host(params, params_.get());
    sync();
  }
  void set_params(std::span<const float> params) override {
    check_size(params, layout_.total(), "params");
    use_device();
    to_device(params_.get(), params);
    refresh_bf16();
    sync();
  }
  void begin_step(std::int64_t micro_batches) override {
    if (micro_batches < 1)
      throw std::invalid_argument("cuda engine: a step needs at least one micro-batch");
    use_device();
    micro_batches_ = micro_batches;
    finished_ = false;
    BTM_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
    if (micro_batches > 1) {
      // The exact sum: one int64 per parameter, then the count of rejected terms; allocated by
      // the first step that needs it (8 bytes per parameter).
      if (step_sum_.size() == 0) alloc(step_sum_, layout_.total() + 1);
      BTM_CUDA_CHECK(cudaMemsetAsync(step_sum_.get(), 0, step_sum_.bytes(), stream_));
    }
  }

  float forward_backward(const Batch& batch, Communicator* reduce) override {
    check_batch(batch, true);
    const bool group = reduce != nullptr && reduce->size() > 1;
    if (group && micro_batches_ <= 1)
      throw std::invalid_argument(
          "cuda engine: a step of one micro-batch cannot be reduced over several ranks");
    use_device();
    const int N = batch.B * batch.T;
    upload_tokens(batch, true);
    forward(batch.B, batch.T, true);
    classifier(N, 1.0f / static_cast<float>(N), true);
    cuda::mean_of(loss_.get(), losses_.get(), N, stream_);
    BTM_CUDA_CHECK(cudaMemcpyAsync(loss_host_.get(), loss_.get(), sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
    BTM_CUDA_CHECK(cudaEventRecord(loss_ready_, stream_));
    // The token buckets of the embedding gradient are built while the GPU runs the forward.
    upload_buckets(batch);
    const bool on_device = group && reduce->space() == MemorySpace::Device;
    backward(batch.B, batch.T, on_device ? reduce : nullptr);
    if (group && !on_device) reduce_on_host(*reduce);
    BTM_CUDA_CHECK(cudaEventSynchronize(loss_ready_));
    return loss_host_[0];
  }

  void get_grads(std::span<float> grads) override {
    check_size(grads, layout_.total(), "grads");
    use_device();
    finish_gradient();
    to_host(grads, grads_.get());
    sync();
  }

  float optimizer_step(const AdamWStep& step) override {
    if (step.t < 1) throw std::invalid_argument("cuda engine: AdamW step count t must be >= 1");
    use_device();
    finish_gradient();
    // A non-finite sum of squares makes the AdamW kernel leave everything unchanged (it reads
    // the sum on the device), and the norm returned is then not finite either.
    cuda::sum_of_squares(sumsq_.get(), sumsq_scratch_.get(), grads_.get(), layout_.total(),
                         stream_);
    const auto t = static_cast<double>(step.t);
    const float bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(step.beta1), t));
    const float bias2 = static_cast<float>(1.0 - std::pow(static_cast<double>(step.beta2), t));
    cuda::DecaySegments segments;
    segments.ends = segment_ends_.get();
    segments.decay = segment_decay_.get();
    segments.count = static_cast<int>(segment_ends_.size());
    segments.ends_multiple_of_4 = segment_ends_aligned4_;
    cuda::adamw_update(params_.get(), params_bf16_.get(), grads_.get(), m_.get(), v_.get(),
                       layout_.total(), segments, step.lr, step.beta1, step.beta2, step.eps,
                       step.weight_decay, bias1, bias2, sumsq_.get(), step.grad_clip, stream_);
    BTM_CUDA_CHECK(cudaMemcpyAsync(sumsq_host_.get(), sumsq_.get(), sizeof(double),
                                   cudaMemcpyDeviceToHost, stream_));
    sync();  // the one host synchronisation of a step: the norm is returned
    return static_cast<float>(std::sqrt(sumsq_host_[0]));
  }

  void token_logprobs(const Batch& batch, float* out) override {
    check_batch(batch, true);
    const int N = batch.B * batch.T;
    for_each_eval_chunk(batch, true, [&](int r0, int rows, const float* logits) {
      cuda::crossentropy_forward(losses_.get() + r0, logits, tokens_.get() + max_bt_ + r0, rows,
                                 model_.vocab_size, model_.padded_vocab(), stream_);
    });
    BTM_CUDA_CHECK(cudaMemcpyAsync(out, losses_.get(), static_cast<size_t>(N) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
    sync();
    for (int i = 0; i < N; ++i) out[i] = -out[i];
  }

  void logits(const Batch& batch, float* out) override {
    check_batch(batch, false);
    const size_t Vp = static_cast<size_t>(model_.padded_vocab());
    for_each_eval_chunk(batch, false, [&](int r0, int rows, const float* logits) {
      BTM_CUDA_CHECK(cudaMemcpyAsync(out + static_cast<size_t>(r0) * Vp, logits,
                                     static_cast<size_t>(rows) * Vp * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
      sync();
    });
  }

  // The kept state in device memory, where it fits beside the engine (the headroom of
  // parent_fits); else none (a copy of a large model's state per rank would crowd the node's
  // host memory; the models then read it from the checkpoint).
  bool keep_state() override {
    use_device();
    drop_state();
    const size_t n = layout_.total();
    if (!parent_fits(3 * n * sizeof(float))) return false;
    for (DeviceArray<float>* a : {&kept_params_d_, &kept_m_d_, &kept_v_d_}) a->allocate(n);
    copy_on_device(kept_params_d_.get(), params_.get(), n);
    copy_on_device(kept_m_d_.get(), m_.get(), n);
    copy_on_device(kept_v_d_.get(), v_.get(), n);
    sync();
    return true;
  }
  void restore_state() override {
    if (kept_params_d_.size() == 0) throw std::logic_error("restore_state: no state is kept");
    use_device();
    const size_t n = layout_.total();
    copy_on_device(params_.get(), kept_params_d_.get(), n);
    copy_on_device(m_.get(), kept_m_d_.get(), n);
    copy_on_device(v_.get(), kept_v_d_.get(), n);
    refresh_bf16();
    sync();
  }
  void drop_state() override {
    use_device();
    sync();
    for (DeviceArray<float>* a : {&kept_params_d_, &kept_m_d_, &kept_v_d_})
      *a = DeviceArray<float>();
  }

  // Parents in device memory where they fit (parent_fits), else in the base class's host
  // storage; a parent held again replaces the old one.
  void hold_parent(std::size_t j, std::vector<float> params) override {
    const size_t n = layout_.total();
    if (params.size() != n)
      throw std::invalid_argument("hold_parent: parent " + std::to_string(j) + " has " +
                                  std::to_string(params.size()) + " parameters, the layout " +
                                  std::to_string(n));
    use_device();
    sync();  // no kernel still reads a parent that is replaced
    release_parent(j);
    const size_t bytes = n * sizeof(float);
    if (!parent_fits(bytes)) {
      Engine::hold_parent(j, std::move(params));
      return;
    }
    DeviceArray<float> parent(n);
    // On the compute stream (not the legacy default stream), so the kernels that read the
    // parent are ordered after the copy.
    to_device(parent.get(), params);
    sync();
    device_parent_bytes_ += bytes;
    device_parents_.emplace(j, std::move(parent));
  }

  void drop_parents() override {
    use_device();
    sync();
    device_parents_.clear();
    device_parent_bytes_ = 0;
    Engine::drop_parents();
  }

  // The device parents' terms are summed on the device, a chunk of `sum` at a time (uploaded,
  // added into, downloaded), the host parents' on the host: the same integers either way.
  void add_parents(std::span<const double> weights, fixed::Sum& sum) override {
    const size_t n = layout_.total();
    if (sum.raw().size() != n)
      throw std::invalid_argument("add_parents: the sum has " + std::to_string(sum.raw().size()) +
                                  " entries, the layout " + std::to_string(n));
    use_device();
    // Parents held elsewhere (another group's) are theirs to add.
    const std::vector<std::size_t> on_host = stage_parents(weights, false);
    for (std::size_t j : on_host) sum.add(held_parents_.at(j), weights[j]);
    const size_t K = staged_weights_.size();
    if (K == 0) return;
    const size_t chunk = std::min(n, kAddChunk);
    if (add_chunk_.size() < chunk) add_chunk_.allocate(chunk);
    BTM_CUDA_CHECK(cudaMemsetAsync(parent_count_.get(), 0, sizeof(std::int64_t), stream_));
    const double limit = sum.limit();
    std::int64_t* raw = sum.raw().data();
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
      const size_t len = std::min(chunk, n - c0);
      BTM_CUDA_CHECK(cudaMemcpyAsync(add_chunk_.get(), raw + c0, len * sizeof(std::int64_t),
                                     cudaMemcpyHostToDevice, stream_));
      for (size_t k0 = 0; k0 < K; k0 += kParentsPerLaunch)
        cuda::fixed_weighted_add(add_chunk_.get(), parent_count_.get(), parent_ptrs_.get() + k0,
                                 parent_weights_.get() + k0,
                                 static_cast<int>(std::min(kParentsPerLaunch, K - k0)), c0, len,
                                 limit, stream_);
      // To pageable memory: returns once the copy is done, before the next chunk's upload.
      BTM_CUDA_CHECK(cudaMemcpyAsync(raw + c0, add_chunk_.get(), len * sizeof(std::int64_t),
                                     cudaMemcpyDeviceToHost, stream_));
    }
    const std::int64_t rejected = read_parent_count();
    sum.add_rejected(rejected);
  }

  // With every weighted parent in device memory: one kernel forms the average (into the
  // gradient buffer, so the parameters stay unchanged when a term is rejected), then the
  // buffers trade places. Otherwise a host sum over add_parents.
  void set_params_to_average(std::span<const double> weights) override {
    use_device();
    const std::vector<std::size_t> on_host = stage_parents(weights, true);
    const size_t K = staged_weights_.size();
    const size_t n = layout_.total();
    if (!on_host.empty() || K > kParentsPerLaunch) {
      // Host parents too: one host sum of both kinds (add_parents), then the parameters.
      set_params_to_sum_of_parents(weights);
      return;
    }
    BTM_CUDA_CHECK(cudaMemsetAsync(parent_count_.get(), 0, sizeof(std::int64_t), stream_));
    cuda::fixed_weighted_sum(grads_.get(), parent_count_.get(), parent_ptrs_.get(),
                             parent_weights_.get(), static_cast<int>(K), n,
                             fixed::term_limit(static_cast<std::int64_t>(K)),
                             fixed::factor_for(1.0), stream_);
    if (read_parent_count() > 0)
      throw std::runtime_error(
          "set_params_to_average: a parent parameter is outside the fixed-point "
          "range (|w * x| > 2^23): not a trained model");
    std::swap(params_, grads_);
    refresh_bf16();
    // The gradient buffer held the old parameters: zero, as between micro-batches. A step of
    // M > 1 keeps its exact sum (converted again); a step of one micro-batch loses its gradient.
    BTM_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
    finished_ = false;
    sync();
  }

  // Decoding: the keys and values of every layer in bf16 caches [L][B, NH, capacity, hs]
  // (allocated by the first begin_decode that needs them, kept for later ones), the new
  // positions through the training forward's kernels and buffers with the attention over the
  // cache (kv_attention_forward), the fp32 logits as in evaluation.
  void begin_decode(int B, int capacity) override {
    start_decode(B, capacity, max_batch_, "cuda");
    if (capacity > cuda::kKvAttentionMaxCapacity)
      throw InputError("cuda engine: decoding " + std::to_string(capacity) +
                       " positions; the key/value attention takes at most " +
                       std::to_string(cuda::kKvAttentionMaxCapacity));
    use_device();
    sync();
    const size_t need = static_cast<size_t>(model_.n_layer) * static_cast<size_t>(B) *
                        static_cast<size_t>(capacity) * static_cast<size_t>(C());
    if (k_cache_.size() < need) {
      k_cache_.allocate(need);
      v_cache_.allocate(need);
    }
    decode_capacity_ = capacity;
  }

  void decode(const std::int32_t* tokens, int n, float* out) override {
    const int B = decode_batch();
    const int pos = advance_decode(n, "cuda");
    const Batch batch{tokens, nullptr, B, n};
    check_batch(batch, false);
    use_device();
    upload_tokens(batch, false);
    decode_forward(B, n, pos);
    const size_t Vp = static_cast<size_t>(model_.padded_vocab());
    for_each_logit_chunk(B * n, [&](int r0, int rows, const float* logits) {
      BTM_CUDA_CHECK(cudaMemcpyAsync(out + static_cast<size_t>(r0) * Vp, logits,
                                     static_cast<size_t>(rows) * Vp * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
      sync();
    });
  }

  std::string decode_mode() const override { return "kv-cache"; }

  void limit_parent_memory(size_t bytes) { device_parent_limit_ = bytes; }
  size_t device_parents() const { return device_parents_.size(); }

 private:
  int C() const { return model_.d_model; }

  // The evaluation forward of `batch`, then its fp32 logits in row chunks of bounded memory:
  // use(first row, rows, the chunk's logits on the device) per chunk, on the compute stream.
  template <typename Use>
  void for_each_eval_chunk(const Batch& batch, bool with_targets, Use&& use) {
    use_device();
    upload_tokens(batch, with_targets);
    forward(batch.B, batch.T, false);
    for_each_logit_chunk(batch.B * batch.T, use);
  }

  // The fp32 logits of the N rows of lnf_ in row chunks of bounded memory: use(first row, rows,
  // the chunk's logits on the device) per chunk, on the compute stream.
  template <typename Use>
  void for_each_logit_chunk(int N, Use&& use) {
    float* logits = reinterpret_cast<float*>(logits_.get());
    for (int r0 = 0; r0 < N; r0 += eval_chunk_rows_) {
      const int rows = std::min(eval_chunk_rows_, N - r0);
      blas_->linear_forward_float(logits, lnf_.get() + static_cast<size_t>(r0) * C(),
                                  params_bf16_.get() + layout_.wte(), rows, C(),
                                  model_.padded_vocab(), stream_);
      use(r0, rows, logits);
    }
  }

  // Every buffer, sized for max_batch x context tokens.
  void allocate() {
    const size_t L = static_cast<size_t>(model_.n_layer);
    const size_t Cs = static_cast<size_t>(C());
    const size_t T = static_cast<size_t>(model_.context);
    const size_t Vp = static_cast<size_t>(model_.padded_vocab());
    max_bt_ = static_cast<size_t>(max_batch_) * T;
    att_per_layer_ = static_cast<size_t>(max_batch_) * model_.n_head * T * T;
    const size_t n = layout_.total();
    const size_t bt = max_bt_;

    alloc(params_, n);
    alloc(grads_, n);
    alloc(m_, n);
    alloc(v_, n);
    alloc(params_bf16_, n);
    BTM_CUDA_CHECK(cudaMemset(params_.get(), 0, params_.bytes()));
    BTM_CUDA_CHECK(cudaMemset(grads_.get(), 0, grads_.bytes()));
    BTM_CUDA_CHECK(cudaMemset(m_.get(), 0, m_.bytes()));
    BTM_CUDA_CHECK(cudaMemset(v_.get(), 0, v_.bytes()));
    BTM_CUDA_CHECK(cudaMemset(params_bf16_.get(), 0, params_bf16_.bytes()));

    alloc(encoded_, bt * Cs);
    alloc(ln1_, L * bt * Cs);
    alloc(ln1_mean_, L * bt);
    alloc(ln1_rstd_, L * bt);
    // Per layer: flash keeps the qkv GEMM's output and the rows' log-sum-exp; materialized
    // keeps q, k, v per head and the probabilities.
    alloc(qkvr_, L * bt * 3 * Cs);
    alloc(atty_, L * bt * Cs);
    const size_t rows_per_layer = static_cast<size_t>(max_batch_) * model_.n_head * T;
    if (flash_) {
      alloc(lse_, L * rows_per_layer);
      alloc(dvec_, rows_per_layer);
    } else {
      alloc(att_, L * att_per_layer_);
    }
    alloc(residual2_, L * bt * Cs);
    alloc(ln2_, L * bt * Cs);
    alloc(ln2_mean_, L * bt);
    alloc(ln2_rstd_, L * bt);
    alloc(fch_, L * bt * 4 * Cs);
    alloc(fch_gelu_, L * bt * 4 * Cs);
    alloc(residual3_, L * bt * Cs);
    alloc(lnf_, bt * Cs);
    alloc(lnf_mean_, bt);
    alloc(lnf_rstd_, bt);
    alloc(losses_, bt);
    alloc(loss_, 1);

    // Training chunks hold bf16 logits; evaluation chunks fp32 logits in the same buffer.
    const size_t chunk_rows = std::min(bt, std::max<size_t>(2, kLogitsChunkBytes / (Vp * 2)));
    train_chunk_rows_ = static_cast<int>(chunk_rows);
    eval_chunk_rows_ = static_cast<int>(std::max<size_t>(1, chunk_rows / 2));
    alloc(logits_, std::max<size_t>(2, chunk_rows) * Vp);

    alloc(qkv_, bt * 3 * Cs);  // forward: the qkv GEMM's output; backward: dqkv
    if (!flash_) {
      alloc(vaccum_, bt * Cs);  // forward: attention output per head; backward: its gradient
      alloc(dqkvr_, bt * 3 * Cs);
      alloc(datt_, att_per_layer_);
    }
    alloc(dresidual_, bt * Cs);
    alloc(dsmall_, bt * Cs);
    alloc(dfch_, bt * 4 * Cs);
    alloc(layernorm_scratch_, cuda::layernorm_backward_scratch_floats(C()));
    alloc(bias_scratch_, cuda::bias_backward_scratch_floats(4 * C()));
    alloc(sumsq_, 1);
    alloc(sumsq_scratch_, cuda::sum_of_squares_scratch_doubles());

    // Tokens: inputs | targets | bucket tokens | bucket offsets (bt + 1) | positions.
    alloc(tokens_, 5 * bt + 1);
    tokens_host_ = PinnedArray<std::int32_t>(5 * bt + 1);
    loss_host_ = PinnedArray<float>(1);
    sumsq_host_ = PinnedArray<double>(1);
    count_host_ = PinnedArray<std::int64_t>(1);

    std::vector<std::uint64_t> ends;
    std::vector<std::uint8_t> decay;
    segment_ends_aligned4_ = true;
    for (const TensorSpec& t : layout_.tensors()) {
      ends.push_back(t.offset + t.size);
      decay.push_back(t.weight_decay ? 1 : 0);
      segment_ends_aligned4_ = segment_ends_aligned4_ && (t.offset + t.size) % 4 == 0;
    }
    alloc(segment_ends_, ends.size());
    alloc(segment_decay_, decay.size());
    segment_ends_.upload(ends);
    segment_decay_.upload(decay);
  }

  template <typename T>
  void alloc(DeviceArray<T>& array, size_t count) {
    array.allocate(count);
    allocated_bytes_ += array.bytes();
  }

  void use_device() const { BTM_CUDA_CHECK(cudaSetDevice(gpu_)); }
  void sync() const { BTM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  void to_device(float* dst, std::span<const float> src) {
    BTM_CUDA_CHECK(
        cudaMemcpyAsync(dst, src.data(), src.size_bytes(), cudaMemcpyHostToDevice, stream_));
  }
  void to_host(std::span<float> dst, const float* src) const {
    BTM_CUDA_CHECK(
        cudaMemcpyAsync(dst.data(), src, dst.size_bytes(), cudaMemcpyDeviceToHost, stream_));
  }
  void copy_on_device(float* dst, const float* src, size_t n) {
    BTM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  void refresh_bf16() {
    cuda::float_to_bf16(params_bf16_.get(), params_.get(), layout_.total(), stream_);
  }

  void check_batch(const Batch& batch, bool need_targets) const {
    btm::check_batch(batch, need_targets, model_, max_batch_, "cuda");
  }

  // Inputs (and targets) through the pinned staging buffer; the previous upload out of it must
  // have finished before it is overwritten.
  void upload_tokens(const Batch& batch, bool with_targets) {
    BTM_CUDA_CHECK(cudaEventSynchronize(uploaded_));
    const size_t BT = static_cast<size_t>(batch.B) * batch.T;
    std::int32_t* host = tokens_host_.get();
    std::copy(batch.inputs, batch.inputs + BT, host);
    BTM_CUDA_CHECK(cudaMemcpyAsync(tokens_.get(), host, BT * sizeof(std::int32_t),
                                   cudaMemcpyHostToDevice, stream_));
    if (with_targets) {
      std::copy(batch.targets, batch.targets + BT, host + max_bt_);
      BTM_CUDA_CHECK(cudaMemcpyAsync(tokens_.get() + max_bt_, host + max_bt_,
                                     BT * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_));
    }
    BTM_CUDA_CHECK(cudaEventRecord(uploaded_, stream_));
  }

  void upload_buckets(const Batch& batch) {
    const size_t BT = static_cast<size_t>(batch.B) * batch.T;
    buckets_.build(batch.inputs, BT, model_.vocab_size);
    num_buckets_ = static_cast<int>(buckets_.tokens.size());
    // The pinned region past inputs | targets is not read by the pending copies.
    std::int32_t* host = tokens_host_.get() + 2 * max_bt_;
    std::copy(buckets_.tokens.begin(), buckets_.tokens.end(), host);
    std::copy(buckets_.offsets.begin(), buckets_.offsets.end(), host + max_bt_);
    std::copy(buckets_.positions.begin(), buckets_.positions.end(), host + 2 * max_bt_ + 1);
    BTM_CUDA_CHECK(cudaMemcpyAsync(tokens_.get() + 2 * max_bt_, host,
                                   (3 * max_bt_ + 1) * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                                   stream_));
    BTM_CUDA_CHECK(cudaEventRecord(uploaded_, stream_));
  }

  // Per-layer slices of the activation buffers.
  template <typename T>
  T* layer(DeviceArray<T>& buffer, int l, size_t per_layer) {
    return buffer.get() + static_cast<size_t>(l) * per_layer;
  }

  // The rest of block l after its attention output atty: residual2 = residual + proj(atty)
  // (the residual adds are the GEMMs' C input), ln_2, the MLP, residual3 = residual2 +
  // fcproj(gelu(fc(ln2))). Shared by the forward and the decode.
  void block_tail(int l, const bf16* residual, int N, bool keep_for_backward) {
    const int C = this->C();
    const size_t bc = max_bt_ * C, bt = max_bt_;
    const bf16* p = params_bf16_.get();
    const BlockOffsets& o = layout_.block(l);
    cudaStream_t s = stream_;
    bf16* residual2 = layer(residual2_, l, bc);
    bf16* ln2 = layer(ln2_, l, bc);
    bf16* fch = layer(fch_, l, 4 * bc);
    bf16* fch_gelu = layer(fch_gelu_, l, 4 * bc);
    blas_->linear_residual_forward(residual2, residual, layer(atty_, l, bc), p + o.proj_w,
                                   p + o.proj_b, N, C, C, s);
    cuda::layernorm_forward(ln2, layer(ln2_mean_, l, bt), layer(ln2_rstd_, l, bt), residual2,
                            p + o.ln2_w, p + o.ln2_b, N, C, s);
    if (fuse_gelu_) {
      // fch (pre-GELU, kept for the backward) is the epilogue's aux output.
      blas_->linear_gelu_forward(fch_gelu, keep_for_backward ? fch : nullptr, ln2, p + o.fc_w,
                                 p + o.fc_b, N, C, 4 * C, s);
    } else {
      blas_->linear_forward(fch, ln2, p + o.fc_w, p + o.fc_b, N, C, 4 * C, s);
      cuda::gelu_forward(fch_gelu, fch, static_cast<size_t>(N) * 4 * C, s);
    }
    blas_->linear_residual_forward(layer(residual3_, l, bc), residual2, fch_gelu, p + o.fcproj_w,
                                   p + o.fcproj_b, N, 4 * C, C, s);
  }

  // keep_for_backward: also write what only the backward reads (the pre-GELU activations, in
  // the fused path); an evaluation forward skips those writes.
  void forward(int B, int T, bool keep_for_backward) {
    const int C = this->C(), L = model_.n_layer, NH = model_.n_head;
    const int N = B * T;
    const size_t bc = max_bt_ * C, bt = max_bt_;
    const bf16* p = params_bf16_.get();
    cudaStream_t s = stream_;
    cuda::encoder_forward(encoded_.get(), tokens_.get(), p + layout_.wte(), p + layout_.wpe(), B, T,
                          C, s);
    cuda::layernorm_forward(ln1_.get(), ln1_mean_.get(), ln1_rstd_.get(), encoded_.get(),
                            p + layout_.block(0).ln1_w, p + layout_.block(0).ln1_b, N, C, s);
    for (int l = 0; l < L; ++l) {
      const BlockOffsets& o = layout_.block(l);
      const bf16* residual = l == 0 ? encoded_.get() : layer(residual3_, l - 1, bc);
      bf16* ln1 = layer(ln1_, l, bc);
      bf16* atty = layer(atty_, l, bc);
      if (flash_) {
        bf16* qkv = layer(qkvr_, l, 3 * bc);
        blas_->linear_forward(qkv, ln1, p + o.qkv_w, p + o.qkv_b, N, C, 3 * C, s);
        cuda::flash_attention_forward(atty, layer(lse_, l, bt * NH), qkv, B, T, C, NH, s,
                                      flash_kernels_);
      } else {
        blas_->linear_forward(qkv_.get(), ln1, p + o.qkv_w, p + o.qkv_b, N, C, 3 * C, s);
        cuda::attention_forward(*blas_, atty, layer(qkvr_, l, 3 * bc),
                                layer(att_, l, att_per_layer_), vaccum_.get(), qkv_.get(), B, T, C,
                                NH, s);
      }
      block_tail(l, residual, N, keep_for_backward);
      bf16* residual3 = layer(residual3_, l, bc);
      // ln_1 of the next block, or ln_f.
      if (l + 1 < L) {
        const BlockOffsets& next = layout_.block(l + 1);
        cuda::layernorm_forward(layer(ln1_, l + 1, bc), layer(ln1_mean_, l + 1, bt),
                                layer(ln1_rstd_, l + 1, bt), residual3, p + next.ln1_w,
                                p + next.ln1_b, N, C, s);
      } else {
        cuda::layernorm_forward(lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(), residual3,
                                p + layout_.lnf_w(), p + layout_.lnf_b(), N, C, s);
      }
    }
  }

  // The forward of n new positions per sequence (pos.. of B sequences) over the key/value
  // cache, into lnf_: forward()'s kernels on the same buffers (nothing kept for a backward).
  void decode_forward(int B, int n, int pos) {
    const int C = this->C(), L = model_.n_layer, NH = model_.n_head;
    const int N = B * n;
    const size_t bc = max_bt_ * C, bt = max_bt_;
    const size_t cache_layer = static_cast<size_t>(B) * static_cast<size_t>(decode_capacity_) * C;
    const bf16* p = params_bf16_.get();
    cudaStream_t s = stream_;
    // Their position embeddings start at row pos.
    cuda::encoder_forward(encoded_.get(), tokens_.get(), p + layout_.wte(),
                          p + layout_.wpe() + static_cast<size_t>(pos) * C, B, n, C, s);
    for (int l = 0; l < L; ++l) {
      const BlockOffsets& o = layout_.block(l);
      const bf16* residual = l == 0 ? encoded_.get() : layer(residual3_, l - 1, bc);
      bf16* ln1 = layer(ln1_, l, bc);
      bf16* atty = layer(atty_, l, bc);
      cuda::layernorm_forward(ln1, layer(ln1_mean_, l, bt), layer(ln1_rstd_, l, bt), residual,
                              p + o.ln1_w, p + o.ln1_b, N, C, s);
      blas_->linear_forward(qkv_.get(), ln1, p + o.qkv_w, p + o.qkv_b, N, C, 3 * C, s);
      cuda::kv_attention_forward(atty, k_cache_.get() + static_cast<size_t>(l) * cache_layer,
                                 v_cache_.get() + static_cast<size_t>(l) * cache_layer, qkv_.get(),
                                 B, n, pos, decode_capacity_, C, NH, s);
      block_tail(l, residual, N, false);
    }
    cuda::layernorm_forward(lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(),
                            layer(residual3_, L - 1, bc), p + layout_.lnf_w(), p + layout_.lnf_b(),
                            N, C, s);
  }

  // Logits, loss and (with backward) the head's gradients, in row chunks of bounded memory.
  // d(loss)/d(ln_f output) goes to dsmall_.
  void classifier(int N, float dloss, bool backward) {
    const int C = this->C(), Vp = model_.padded_vocab();
    const bf16* wte = params_bf16_.get() + layout_.wte();
    bf16* logits = logits_.get();
    for (int r0 = 0; r0 < N; r0 += train_chunk_rows_) {
      const int rows = std::min(train_chunk_rows_, N - r0);
      const bf16* lnf = lnf_.get() + static_cast<size_t>(r0) * C;
      blas_->linear_forward(logits, lnf, wte, nullptr, rows, C, Vp, stream_);
      cuda::crossentropy_forward_backward(losses_.get() + r0, backward ? logits : nullptr, logits,
                                          tokens_.get() + max_bt_ + r0, rows, model_.vocab_size, Vp,
                                          dloss, stream_);
      if (!backward) continue;
      blas_->linear_backward_input(dsmall_.get() + static_cast<size_t>(r0) * C, logits, wte, rows,
                                   C, Vp, stream_);
      blas_->linear_backward_weight(grads_.get() + layout_.wte(), logits, lnf, rows, C, Vp,
                                    stream_);
    }
  }

  void backward(int B, int T, Communicator* reduce) {
    const int C = this->C(), L = model_.n_layer, NH = model_.n_head;
    const int N = B * T;
    const size_t bc = max_bt_ * C, bt = max_bt_;
    const bf16* p = params_bf16_.get();
    float* g = grads_.get();
    cudaStream_t s = stream_;
    bf16* dres = dresidual_.get();
    bf16* dsmall = dsmall_.get();
    bf16* dfch = dfch_.get();
    bf16* dqkv = qkv_.get();
    // With M > 1 micro-batches, each finished range [begin, end) of the gradients goes into
    // the step's exact sum (and is zeroed for the next micro-batch) on the compute stream; with
    // `reduce` (a device communicator, the last micro-step) that range of the sum is then
    // all-reduced on the comm stream while the backward goes on.
    const bool exact = micro_batches_ > 1;
    std::int64_t* sum = exact ? step_sum_.get() : nullptr;
    std::int64_t* rejected = exact ? sum + layout_.total() : nullptr;
    const double limit = fixed::term_limit(micro_batches_);
    auto reduce_range = [&](size_t begin, size_t end) {
      if (!exact) return;
      cuda::fixed_accumulate(sum + begin, rejected, g + begin, end - begin, 1.0, limit, s);
      if (reduce == nullptr) return;
      BTM_CUDA_CHECK(cudaEventRecord(layer_done_, s));
      BTM_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, layer_done_, 0));
      reduce->allreduce_sum(sum + begin, end - begin, comm_stream_);
    };

    cuda::layernorm_backward(dres, g + layout_.lnf_w(), g + layout_.lnf_b(),
                             layernorm_scratch_.get(), dsmall, layer(residual3_, L - 1, bc),
                             p + layout_.lnf_w(), lnf_mean_.get(), lnf_rstd_.get(), N, C, false, s);
    reduce_range(layout_.lnf_w(), layout_.total());
    for (int l = L - 1; l >= 0; --l) {
      const BlockOffsets& o = layout_.block(l);
      const bf16* residual = l == 0 ? encoded_.get() : layer(residual3_, l - 1, bc);
      // dres holds d(loss)/d(block output): it flows into the MLP and on to residual2.
      // dfch = d(loss)/d(pre-GELU fch): the GELU's derivative is applied in the GEMM's
      // epilogue when fused, by a separate kernel otherwise.
      const bf16* fch = layer(fch_, l, 4 * bc);
      if (fuse_gelu_)
        blas_->linear_backward_input_dgelu(dfch, dres, p + o.fcproj_w, fch, N, 4 * C, C, s);
      else
        blas_->linear_backward_input(dfch, dres, p + o.fcproj_w, N, 4 * C, C, s);
      blas_->linear_backward_weight(g + o.fcproj_w, dres, layer(fch_gelu_, l, 4 * bc), N, 4 * C, C,
                                    s);
      cuda::bias_backward(g + o.fcproj_b, bias_scratch_.get(), dres, N, C, s);
      if (!fuse_gelu_) cuda::gelu_backward(dfch, fch, dfch, static_cast<size_t>(N) * 4 * C, s);
      blas_->linear_backward_input(dsmall, dfch, p + o.fc_w, N, C, 4 * C, s);
      blas_->linear_backward_weight(g + o.fc_w, dfch, layer(ln2_, l, bc), N, C, 4 * C, s);
      cuda::bias_backward(g + o.fc_b, bias_scratch_.get(), dfch, N, 4 * C, s);
      cuda::layernorm_backward(dres, g + o.ln2_w, g + o.ln2_b, layernorm_scratch_.get(), dsmall,
                               layer(residual2_, l, bc), p + o.ln2_w, layer(ln2_mean_, l, bt),
                               layer(ln2_rstd_, l, bt), N, C, true, s);
      // dres now holds d(loss)/d(residual2): into the block input and through the attention.
      blas_->linear_backward_input(dsmall, dres, p + o.proj_w, N, C, C, s);
      blas_->linear_backward_weight(g + o.proj_w, dres, layer(atty_, l, bc), N, C, C, s);
      cuda::bias_backward(g + o.proj_b, bias_scratch_.get(), dres, N, C, s);
      if (flash_)
        cuda::flash_attention_backward(dqkv, dvec_.get(), dsmall, layer(qkvr_, l, 3 * bc),
                                       layer(atty_, l, bc), layer(lse_, l, bt * NH), B, T, C, NH, s,
                                       flash_kernels_);
      else
        cuda::attention_backward(*blas_, dqkv, dqkvr_.get(), datt_.get(), vaccum_.get(), dsmall,
                                 layer(qkvr_, l, 3 * bc), layer(att_, l, att_per_layer_), B, T, C,
                                 NH, s);
      blas_->linear_backward_input(dsmall, dqkv, p + o.qkv_w, N, C, 3 * C, s);
      blas_->linear_backward_weight(g + o.qkv_w, dqkv, layer(ln1_, l, bc), N, C, 3 * C, s);
      cuda::bias_backward(g + o.qkv_b, bias_scratch_.get(), dqkv, N, 3 * C, s);
      cuda::layernorm_backward(dres, g + o.ln1_w, g + o.ln1_b, layernorm_scratch_.get(), dsmall,
                               residual, p + o.ln1_w, layer(ln1_mean_, l, bt),
                               layer(ln1_rstd_, l, bt), N, C, true, s);
      reduce_range(o.begin, o.end);
    }
    const std::int32_t* buckets = tokens_.get() + 2 * max_bt_;
    cuda::encoder_backward_wte(g + layout_.wte(), dres, buckets, buckets + max_bt_,
                               buckets + 2 * max_bt_ + 1, num_buckets_, C, s);
    cuda::encoder_backward_wpe(g + layout_.wpe(), dres, B, T, C, s);
    reduce_range(0, layout_.block(0).begin);
    if (exact && reduce != nullptr) {
      // The rejected-term count last: the comm stream has waited for the last range's
      // accumulation, so every range has added to it.
      reduce->allreduce_sum(rejected, 1, comm_stream_);
      // Later work on the compute stream (optimizer, next step) sees the group's sum.
      BTM_CUDA_CHECK(cudaEventRecord(comm_done_, comm_stream_));
      BTM_CUDA_CHECK(cudaStreamWaitEvent(s, comm_done_, 0));
    }
  }

  // The slow path for a host communicator (MPI): the step's sum (and count) through host
  // memory, then back.
  void reduce_on_host(Communicator& reduce) {
    const size_t count = layout_.total() + 1;
    host_sum_.resize(count);
    BTM_CUDA_CHECK(cudaMemcpyAsync(host_sum_.data(), step_sum_.get(), count * sizeof(std::int64_t),
                                   cudaMemcpyDeviceToHost, stream_));
    sync();
    reduce.allreduce_sum(host_sum_.data(), count);
    BTM_CUDA_CHECK(cudaMemcpyAsync(step_sum_.get(), host_sum_.data(), count * sizeof(std::int64_t),
                                   cudaMemcpyHostToDevice, stream_));
    sync();
  }

  // The step's mean gradient into grads_ (once per step, enqueued only): the exact sum over M
  // micro-batches divided by M, or NaN everywhere where a term was rejected.
  void finish_gradient() {
    if (finished_ || micro_batches_ <= 1) return;
    finished_ = true;
    const size_t n = layout_.total();
    cuda::fixed_to_floats(grads_.get(), step_sum_.get(), step_sum_.get() + n, n,
                          fixed::factor_for(static_cast<double>(micro_batches_)), stream_);
  }

  // Whether a parent of `bytes` may go to device memory: under the cap (tests) and leaving the
  // headroom free.
  bool parent_fits(size_t bytes) const {
    if (device_parent_bytes_ + bytes > device_parent_limit_) return false;
    size_t free = 0, total = 0;
    BTM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    const size_t headroom = kParentHeadroomBytes + total / 10;
    return free >= headroom && free - headroom >= bytes;
  }

  void release_parent(std::size_t j) {
    const auto it = device_parents_.find(j);
    if (it != device_parents_.end()) {
      device_parent_bytes_ -= it->second.bytes();
      device_parents_.erase(it);
    }
    held_parents_.erase(j);
  }

  // Uploads the pointers and weights of the held device parents with a non-zero weight
  // (parent_ptrs_, parent_weights_; staged_weights_ keeps their count) and returns the held
  // host ones; with `require_all`, a parent with a weight that is not held is an error.
  std::vector<std::size_t> stage_parents(std::span<const double> weights, bool require_all) {
    std::vector<std::size_t> on_host;
    staged_ptrs_.clear();
    staged_weights_.clear();
    for (std::size_t j = 0; j < weights.size(); ++j) {
      if (weights[j] == 0) continue;
      if (const auto it = device_parents_.find(j); it != device_parents_.end()) {
        staged_ptrs_.push_back(it->second.get());
        staged_weights_.push_back(weights[j]);
      } else if (held_parents_.count(j) != 0) {
        on_host.push_back(j);
      } else if (require_all) {
        throw std::logic_error("set_params_to_average: parent " + std::to_string(j) +
                               " has a weight but is not held");
      }
    }
    const size_t K = staged_weights_.size();
    if (parent_ptrs_.size() < K) {
      parent_ptrs_.allocate(K);
      parent_weights_.allocate(K);
    }
    if (parent_count_.size() == 0) parent_count_.allocate(1);
    if (K > 0) {
      BTM_CUDA_CHECK(cudaMemcpyAsync(parent_ptrs_.get(), staged_ptrs_.data(), K * sizeof(float*),
                                     cudaMemcpyHostToDevice, stream_));
      BTM_CUDA_CHECK(cudaMemcpyAsync(parent_weights_.get(), staged_weights_.data(),
                                     K * sizeof(double), cudaMemcpyHostToDevice, stream_));
    }
    return on_host;
  }

  // The rejected-term count of the parent kernels (synchronises the compute stream).
  std::int64_t read_parent_count() {
    BTM_CUDA_CHECK(cudaMemcpyAsync(count_host_.get(), parent_count_.get(), sizeof(std::int64_t),
                                   cudaMemcpyDeviceToHost, stream_));
    sync();
    return count_host_[0];
  }

  ModelConfig model_;
  ParamLayout layout_;
  int gpu_;
  int max_batch_;
  bool flash_ = false;
  cuda::FlashKernels flash_kernels_ = cuda::FlashKernels::automatic;
  bool fuse_gelu_ = false;
  size_t max_bt_ = 0, att_per_layer_ = 0;
  int train_chunk_rows_ = 1, eval_chunk_rows_ = 1;
  size_t allocated_bytes_ = 0;

  cudaStream_t stream_ = nullptr, comm_stream_ = nullptr;
  cudaEvent_t loss_ready_ = nullptr, uploaded_ = nullptr, layer_done_ = nullptr,
              comm_done_ = nullptr;
  std::unique_ptr<cuda::Blas> blas_;

  DeviceArray<float> params_, grads_, m_, v_;
  DeviceArray<bf16> params_bf16_;
  DeviceArray<std::uint64_t> segment_ends_;
  DeviceArray<std::uint8_t> segment_decay_;
  bool segment_ends_aligned4_ = false;

  DeviceArray<bf16> encoded_, ln1_, qkvr_, atty_, att_, residual2_, ln2_, fch_, fch_gelu_,
      residual3_, lnf_, logits_;
  DeviceArray<float> ln1_mean_, ln1_rstd_, ln2_mean_, ln2_rstd_, lnf_mean_, lnf_rstd_, losses_,
      loss_;
  DeviceArray<bf16> qkv_, vaccum_, dresidual_, dsmall_, dfch_, dqkvr_, datt_;
  DeviceArray<float> layernorm_scratch_, bias_scratch_, lse_, dvec_;
  DeviceArray<bf16> k_cache_, v_cache_;  // decoding: [L][B, NH, capacity, hs]
  int decode_capacity_ = 0;
  DeviceArray<double> sumsq_, sumsq_scratch_;
  DeviceArray<std::int32_t> tokens_;
  PinnedArray<std::int32_t> tokens_host_;
  PinnedArray<float> loss_host_;
  PinnedArray<double> sumsq_host_;
  cuda::TokenBuckets buckets_;
  int num_buckets_ = 0;

  // The current step (begin_step): its micro-batch count and, with M > 1, its exact sum of n
  // int64 and the rejected-term count after them.
  std::int64_t micro_batches_ = 1;
  bool finished_ = false;  // grads_ holds the step's mean gradient
  DeviceArray<std::int64_t> step_sum_;
  std::vector<std::int64_t> host_sum_;  // a host communicator's copy

  // Parents held in device memory (the others in Engine::held_parents_), and the staging of the
  // fixed-point kernels over them.
  std::map<std::size_t, DeviceArray<float>> device_parents_;
  DeviceArray<float> kept_params_d_, kept_m_d_, kept_v_d_;  // keep_state's copy
  size_t device_parent_bytes_ = 0;
  size_t device_parent_limit_ = std::numeric_limits<size_t>::max();
  std::vector<const float*> staged_ptrs_;
  std::vector<double> staged_weights_;
  DeviceArray<const float*> parent_ptrs_;
  DeviceArray<double> parent_weights_;
  DeviceArray<std::int64_t> parent_count_, add_chunk_;
  PinnedArray<std::int64_t> count_host_;
};

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& model, int gpu, int max_batch,
                                         CudaAttention attention, CudaGelu gelu) {
  return std::make_unique<CudaEngine>(model, gpu, max_batch, attention, gelu);
}

std::size_t cuda_engine_allocated_bytes(const Engine& engine) {
  const auto* cuda_engine = dynamic_cast<const CudaEngine*>(&engine);
  return cuda_engine != nullptr ? cuda_engine->allocated_bytes() : 0;
}

void cuda_engine_limit_parent_memory(Engine& engine, std::size_t bytes) {
  if (auto* cuda_engine = dynamic_cast<CudaEngine*>(&engine))
    cuda_engine->limit_parent_memory(bytes);
}

std::size_t cuda_engine_device_parents(const Engine& engine) {
  const auto* cuda_engine = dynamic_cast<const CudaEngine*>(&engine);
  return cuda_engine != nullptr ? cuda_engine->device_parents() : 0;
}

}  // namespace btm
