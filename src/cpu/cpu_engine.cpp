// cpu_engine.cpp: the fp32 CPU reference engine (make_cpu_engine in cpu/engine.hpp), built from the
// kernels of cpu/kernels.hpp. Parameters, gradients and AdamW moments are flat vectors in the
// ParamLayout order; activations are kept per layer for the backward and grow with the largest
// batch seen. Deterministic: the same inputs give the same bytes, whatever the thread count.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "btm/cpu/engine.hpp"
#include "btm/cpu/kernels.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {
namespace {

using std::size_t;

// The activations of one forward pass (and the backward's scratch) for up to max_bt tokens.
// Each per-layer buffer holds n_layer consecutive slices of the current batch's size.
struct Activations {
  size_t max_bt = 0;   // capacity in tokens (B * T)
  size_t max_att = 0;  // capacity of one layer's attention probabilities (B * NH * T * T)

  std::vector<float> encoded;                  // [BT, C]
  std::vector<float> ln1, ln1_mean, ln1_rstd;  // [L, BT, C], [L, BT]
  std::vector<float> qkv;                      // [L, BT, 3C]
  std::vector<float> atty;                     // [L, BT, C] attention output
  std::vector<float> att;                      // [L, B, NH, T, T] probabilities
  std::vector<float> residual2;                // [L, BT, C] after the attention residual
  std::vector<float> ln2, ln2_mean, ln2_rstd;  // [L, BT, C], [L, BT]
  std::vector<float> fch, fch_gelu;            // [L, BT, 4C]
  std::vector<float> residual3;                // [L, BT, C] the block's output
  std::vector<float> lnf, lnf_mean, lnf_rstd;  // [BT, C], [BT]
  std::vector<float> logits;                   // [BT, Vp], then d(loss)/d(logits)
  std::vector<float> losses;                   // [BT]
  std::vector<float> projected;                // [BT, C] a projection before its residual add
  std::vector<float> dresidual, dln, dtmp;     // [BT, C] backward scratch
  std::vector<float> dqkv;                     // [BT, 3C]
  std::vector<float> dfch;                     // [BT, 4C]

  // Grows every buffer to hold bt tokens and att_per_layer attention probabilities per layer.
  void reserve(size_t bt, size_t att_per_layer, size_t L, size_t C, size_t Vp) {
    if (bt <= max_bt && att_per_layer <= max_att) return;
    max_bt = std::max(max_bt, bt);
    max_att = std::max(max_att, att_per_layer);
    const size_t n = max_bt;
    encoded.resize(n * C);
    ln1.resize(L * n * C);
    ln1_mean.resize(L * n);
    ln1_rstd.resize(L * n);
    qkv.resize(L * n * 3 * C);
    atty.resize(L * n * C);
    att.resize(L * max_att);
    residual2.resize(L * n * C);
    ln2.resize(L * n * C);
    ln2_mean.resize(L * n);
    ln2_rstd.resize(L * n);
    fch.resize(L * n * 4 * C);
    fch_gelu.resize(L * n * 4 * C);
    residual3.resize(L * n * C);
    lnf.resize(n * C);
    lnf_mean.resize(n);
    lnf_rstd.resize(n);
    logits.resize(n * Vp);
    losses.resize(n);
    projected.resize(n * C);
    dresidual.resize(n * C);
    dln.resize(n * C);
    dtmp.resize(n * C);
    dqkv.resize(n * 3 * C);
    dfch.resize(n * 4 * C);
  }
};

void check_size(std::span<const float> v, size_t expected, const char* what) {
  if (v.size() != expected)
    throw std::invalid_argument(std::string("cpu engine: ") + what + " has " +
                                std::to_string(v.size()) + " floats, the layout has " +
                                std::to_string(expected));
}

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& model, int threads)
      : model_(model), layout_(model), threads_(threads) {
    validate_model(model);  // InputError naming the setting
    if (threads < 0) throw std::invalid_argument("cpu engine: threads must be >= 0");
    // Parameters start at zero: the caller sets them (init_gpt2, a checkpoint, a branch).
    const size_t n = layout_.total();
    params_.assign(n, 0.0f);
    grads_.assign(n, 0.0f);
    m_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }

  std::string kind() const override { return "cpu"; }
  const ParamLayout& layout() const override { return layout_; }

  void set_state(std::span<const float> params, std::span<const float> m,
                 std::span<const float> v) override {
    check_size(params, layout_.total(), "params");
    check_size(m, layout_.total(), "first moments");
    check_size(v, layout_.total(), "second moments");
    std::copy(params.begin(), params.end(), params_.begin());
    std::copy(m.begin(), m.end(), m_.begin());
    std::copy(v.begin(), v.end(), v_.begin());
  }
  void get_state(std::span<float> params, std::span<float> m, std::span<float> v) const override {
    check_size(params, layout_.total(), "params");
    check_size(m, layout_.total(), "first moments");
    check_size(v, layout_.total(), "second moments");
    std::copy(params_.begin(), params_.end(), params.begin());
    std::copy(m_.begin(), m_.end(), m.begin());
    std::copy(v_.begin(), v_.end(), v.begin());
  }
  void get_params(std::span<float> params) const override {
    check_size(params, layout_.total(), "params");
    std::copy(params_.begin(), params_.end(), params.begin());
  }
  void set_params(std::span<const float> params) override {
    check_size(params, layout_.total(), "params");
    std::copy(params.begin(), params.end(), params_.begin());
  }
  void begin_step(std::int64_t micro_batches) override {
    if (micro_batches < 1)
      throw std::invalid_argument("cpu engine: a step needs at least one micro-batch");
    micro_batches_ = micro_batches;
    finished_ = false;
    std::fill(grads_.begin(), grads_.end(), 0.0f);
    // The exact sum: one int64 per parameter, then the count of rejected terms.
    if (micro_batches > 1) step_sum_.assign(grads_.size() + 1, 0);
  }

  float forward_backward(const Batch& batch, Communicator* reduce) override {
    check_batch(batch, true);
    use_threads();
    forward(batch);
    const size_t BT = static_cast<size_t>(batch.B) * batch.T;
    const float dloss = 1.0f / static_cast<float>(BT);
    float* logits = acts_.logits.data();
    cpu::crossentropy_forward_backward(acts_.losses.data(), logits, logits, batch.targets,
                                       static_cast<int>(BT), model_.vocab_size,
                                       model_.padded_vocab(), dloss);
    const float loss = mean_loss(BT);
    backward(batch);
    if (micro_batches_ > 1) {
      // This micro-batch's gradient into the exact sum; grads_ starts the next one at zero.
      const std::span<std::int64_t> sum(step_sum_.data(), grads_.size());
      step_sum_.back() += fixed::accumulate(sum, grads_, 1.0, fixed::term_limit(micro_batches_));
      std::fill(grads_.begin(), grads_.end(), 0.0f);
    }
    if (reduce != nullptr && reduce->size() > 1) {
      if (reduce->space() != MemorySpace::Host)
        throw std::invalid_argument(
            "cpu engine: the gradient communicator must work on host memory");
      if (micro_batches_ <= 1)
        throw std::invalid_argument(
            "cpu engine: a step of one micro-batch cannot be reduced over several ranks");
      reduce->allreduce_sum(step_sum_.data(), step_sum_.size());
    }
    return loss;
  }

  void get_grads(std::span<float> grads) override {
    check_size(grads, layout_.total(), "grads");
    finish_gradient();
    std::copy(grads_.begin(), grads_.end(), grads.begin());
  }

  float optimizer_step(const AdamWStep& step) override {
    if (step.t < 1) throw std::invalid_argument("cpu engine: AdamW step count t must be >= 1");
    use_threads();
    finish_gradient();
    const double norm = std::sqrt(cpu::sum_of_squares(grads_.data(), grads_.size()));
    if (!std::isfinite(norm)) return static_cast<float>(norm);
    const float clip = step.grad_clip > 0
                           ? static_cast<float>(std::min(1.0, step.grad_clip / (norm + 1e-6)))
                           : 1.0f;
    const auto t = static_cast<double>(step.t);
    const float bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(step.beta1), t));
    const float bias2 = static_cast<float>(1.0 - std::pow(static_cast<double>(step.beta2), t));
    for (const TensorSpec& spec : layout_.tensors()) {
      const size_t o = spec.offset;
      cpu::adamw_update(params_.data() + o, grads_.data() + o, m_.data() + o, v_.data() + o,
                        spec.size, step.lr, step.beta1, step.beta2, step.eps,
                        spec.weight_decay ? step.weight_decay : 0.0f, bias1, bias2, clip);
    }
    return static_cast<float>(norm);
  }

  void token_logprobs(const Batch& batch, float* out) override {
    check_batch(batch, true);
    use_threads();
    forward(batch);
    const size_t BT = static_cast<size_t>(batch.B) * batch.T;
    cpu::crossentropy_forward_backward(acts_.losses.data(), nullptr, acts_.logits.data(),
                                       batch.targets, static_cast<int>(BT), model_.vocab_size,
                                       model_.padded_vocab(), 0.0f);
    for (size_t i = 0; i < BT; ++i) out[i] = -acts_.losses[i];
  }

  // The padded columns j >= vocab_size hold ln_f(x) @ wte[j]; wte's padded rows stay zero under
  // init_gpt2 and AdamW (their gradient is exactly zero), so these columns are zero in practice.
  void logits(const Batch& batch, float* out) override {
    check_batch(batch, false);
    use_threads();
    forward(batch);
    const size_t n = static_cast<size_t>(batch.B) * batch.T * model_.padded_vocab();
    std::copy(acts_.logits.begin(), acts_.logits.begin() + static_cast<std::ptrdiff_t>(n), out);
  }

  // The key/value cache of every layer, [L][B, NH, capacity, hs] each, and the scratch of the
  // new positions' forward (apart from the training activations).
  void begin_decode(int B, int capacity) override {
    start_decode(B, capacity, 0, "cpu");
    const size_t per_layer = static_cast<size_t>(B) * static_cast<size_t>(model_.d_model) *
                             static_cast<size_t>(capacity);
    decode_.capacity = capacity;
    decode_.k.assign(static_cast<size_t>(model_.n_layer) * per_layer, 0.0f);
    decode_.v.assign(decode_.k.size(), 0.0f);
  }

  void decode(const std::int32_t* tokens, int n, float* out) override {
    const int B = decode_batch();
    const int pos = advance_decode(n, "cpu");
    const ModelConfig& m = model_;
    const Batch batch{tokens, nullptr, B, n};
    check_batch(batch, false);
    use_threads();
    const int C = m.d_model, NH = m.n_head, L = m.n_layer, Vp = m.padded_vocab();
    const size_t N = static_cast<size_t>(B) * n, Cs = static_cast<size_t>(C);
    const int Ni = static_cast<int>(N);
    DecodeScratch& d = decode_;
    d.x.resize(N * Cs);
    d.ln.resize(N * Cs);
    d.mean.resize(N);
    d.rstd.resize(N);
    d.qkv.resize(N * 3 * Cs);
    d.atty.resize(N * Cs);
    d.proj.resize(N * Cs);
    d.fch.resize(N * 4 * Cs);
    d.fch_gelu.resize(N * 4 * Cs);
    const float* p = params_.data();
    const size_t per_layer = static_cast<size_t>(B) * Cs * static_cast<size_t>(d.capacity);
    // The new tokens sit at positions pos..pos+n-1: their position embeddings start at row pos.
    cpu::encoder_forward(d.x.data(), tokens, p + layout_.wte(),
                         p + layout_.wpe() + static_cast<size_t>(pos) * Cs, B, n, C);
    for (int l = 0; l < L; ++l) {
      const BlockOffsets& o = layout_.block(l);
      const size_t ls = static_cast<size_t>(l);
      cpu::layernorm_forward(d.ln.data(), d.mean.data(), d.rstd.data(), d.x.data(), p + o.ln1_w,
                             p + o.ln1_b, Ni, C);
      cpu::matmul_forward(d.qkv.data(), d.ln.data(), p + o.qkv_w, p + o.qkv_b, Ni, C, 3 * C);
      cpu::kv_attention_forward(d.atty.data(), d.k.data() + ls * per_layer,
                                d.v.data() + ls * per_layer, d.qkv.data(), B, n, pos, d.capacity, C,
                                NH);
      cpu::matmul_forward(d.proj.data(), d.atty.data(), p + o.proj_w, p + o.proj_b, Ni, C, C);
      cpu::residual_forward(d.x.data(), d.x.data(), d.proj.data(), N * Cs);
      cpu::layernorm_forward(d.ln.data(), d.mean.data(), d.rstd.data(), d.x.data(), p + o.ln2_w,
                             p + o.ln2_b, Ni, C);
      cpu::matmul_forward(d.fch.data(), d.ln.data(), p + o.fc_w, p + o.fc_b, Ni, C, 4 * C);
      cpu::gelu_forward(d.fch_gelu.data(), d.fch.data(), N * 4 * Cs);
      cpu::matmul_forward(d.proj.data(), d.fch_gelu.data(), p + o.fcproj_w, p + o.fcproj_b, Ni,
                          4 * C, C);
      cpu::residual_forward(d.x.data(), d.x.data(), d.proj.data(), N * Cs);
    }
    cpu::layernorm_forward(d.ln.data(), d.mean.data(), d.rstd.data(), d.x.data(),
                           p + layout_.lnf_w(), p + layout_.lnf_b(), Ni, C);
    cpu::matmul_forward(out, d.ln.data(), p + layout_.wte(), nullptr, Ni, C, Vp);
  }

  std::string decode_mode() const override { return "kv-cache"; }

 private:
  // The decoding state: the caches and the new positions' activations.
  struct DecodeScratch {
    int capacity = 0;
    std::vector<float> k, v;  // [L][B, NH, capacity, hs]
    std::vector<float> x, ln, mean, rstd, qkv, atty, proj, fch, fch_gelu;
  };

  // The kernels split every sgemm over OpenMP threads themselves and run OpenBLAS on one thread
  // inside (OpenBLAS's own threads, next to spinning OpenMP threads, made 2 cores slower than
  // 1), so the OpenMP thread count is the engine's whole parallelism. OpenBLAS is set too, for
  // anything in this process that calls it outside the kernels.
  void use_threads() const {
    if (threads_ <= 0) return;
    omp_set_num_threads(threads_);
    openblas_set_num_threads(threads_);
  }

  void check_batch(const Batch& batch, bool need_targets) const {
    btm::check_batch(batch, need_targets, model_, 0, "cpu");
  }

  // Runs the model up to the logits (acts_.logits) for batch.inputs.
  void forward(const Batch& batch) {
    const int B = batch.B, T = batch.T, C = model_.d_model, NH = model_.n_head;
    const int L = model_.n_layer, Vp = model_.padded_vocab();
    const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
    const size_t att_size = BT * static_cast<size_t>(NH) * T;
    acts_.reserve(BT, att_size, static_cast<size_t>(L), Cs, static_cast<size_t>(Vp));
    const float* p = params_.data();
    const int N = static_cast<int>(BT);

    cpu::encoder_forward(acts_.encoded.data(), batch.inputs, p + layout_.wte(), p + layout_.wpe(),
                         B, T, C);
    for (int l = 0; l < L; ++l) {
      const BlockOffsets& o = layout_.block(l);
      const size_t ls = static_cast<size_t>(l);
      const float* residual =
          l == 0 ? acts_.encoded.data() : layer(acts_.residual3, l - 1, BT * Cs);
      float* ln1 = layer(acts_.ln1, l, BT * Cs);
      float* qkv = layer(acts_.qkv, l, BT * 3 * Cs);
      float* atty = layer(acts_.atty, l, BT * Cs);
      float* att = acts_.att.data() + ls * att_size;
      float* residual2 = layer(acts_.residual2, l, BT * Cs);
      float* ln2 = layer(acts_.ln2, l, BT * Cs);
      float* fch = layer(acts_.fch, l, BT * 4 * Cs);
      float* fch_gelu = layer(acts_.fch_gelu, l, BT * 4 * Cs);
      float* residual3 = layer(acts_.residual3, l, BT * Cs);

      cpu::layernorm_forward(ln1, layer(acts_.ln1_mean, l, BT), layer(acts_.ln1_rstd, l, BT),
                             residual, p + o.ln1_w, p + o.ln1_b, N, C);
      cpu::matmul_forward(qkv, ln1, p + o.qkv_w, p + o.qkv_b, N, C, 3 * C);
      cpu::attention_forward(atty, att, qkv, B, T, C, NH);
      cpu::matmul_forward(acts_.projected.data(), atty, p + o.proj_w, p + o.proj_b, N, C, C);
      cpu::residual_forward(residual2, residual, acts_.projected.data(), BT * Cs);
      cpu::layernorm_forward(ln2, layer(acts_.ln2_mean, l, BT), layer(acts_.ln2_rstd, l, BT),
                             residual2, p + o.ln2_w, p + o.ln2_b, N, C);
      cpu::matmul_forward(fch, ln2, p + o.fc_w, p + o.fc_b, N, C, 4 * C);
      cpu::gelu_forward(fch_gelu, fch, BT * 4 * Cs);
      cpu::matmul_forward(acts_.projected.data(), fch_gelu, p + o.fcproj_w, p + o.fcproj_b, N,
                          4 * C, C);
      cpu::residual_forward(residual3, residual2, acts_.projected.data(), BT * Cs);
    }
    cpu::layernorm_forward(acts_.lnf.data(), acts_.lnf_mean.data(), acts_.lnf_rstd.data(),
                           layer(acts_.residual3, L - 1, BT * Cs), p + layout_.lnf_w(),
                           p + layout_.lnf_b(), N, C);
    // Tied head: logits = ln_f(x) @ wte^T over all padded rows.
    cpu::matmul_forward(acts_.logits.data(), acts_.lnf.data(), p + layout_.wte(), nullptr, N, C,
                        Vp);
  }

  // Back-propagates d(loss)/d(logits), already in acts_.logits, into grads_ (accumulated).
  void backward(const Batch& batch) {
    const int B = batch.B, T = batch.T, C = model_.d_model, NH = model_.n_head;
    const int L = model_.n_layer, Vp = model_.padded_vocab();
    const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
    const size_t att_size = BT * static_cast<size_t>(NH) * T;
    const int N = static_cast<int>(BT);
    const float* p = params_.data();
    float* g = grads_.data();
    float* dresidual = acts_.dresidual.data();
    float* dln = acts_.dln.data();
    float* dtmp = acts_.dtmp.data();
    float* dqkv = acts_.dqkv.data();
    float* dfch = acts_.dfch.data();

    cpu::matmul_backward(dln, g + layout_.wte(), nullptr, acts_.logits.data(), acts_.lnf.data(),
                         p + layout_.wte(), N, C, Vp);
    cpu::layernorm_backward(dresidual, g + layout_.lnf_w(), g + layout_.lnf_b(), dln,
                            layer(acts_.residual3, L - 1, BT * Cs), p + layout_.lnf_w(),
                            acts_.lnf_mean.data(), acts_.lnf_rstd.data(), N, C);
    for (int l = L - 1; l >= 0; --l) {
      const BlockOffsets& o = layout_.block(l);
      const size_t ls = static_cast<size_t>(l);
      const float* residual =
          l == 0 ? acts_.encoded.data() : layer(acts_.residual3, l - 1, BT * Cs);
      // dresidual holds d(loss)/d(residual3), which flows unchanged into residual2 and the MLP.
      cpu::matmul_backward(dfch, g + o.fcproj_w, g + o.fcproj_b, dresidual,
                           layer(acts_.fch_gelu, l, BT * 4 * Cs), p + o.fcproj_w, N, 4 * C, C);
      cpu::gelu_backward(dfch, layer(acts_.fch, l, BT * 4 * Cs), dfch, BT * 4 * Cs);
      cpu::matmul_backward(dln, g + o.fc_w, g + o.fc_b, dfch, layer(acts_.ln2, l, BT * Cs),
                           p + o.fc_w, N, C, 4 * C);
      cpu::layernorm_backward(dtmp, g + o.ln2_w, g + o.ln2_b, dln,
                              layer(acts_.residual2, l, BT * Cs), p + o.ln2_w,
                              layer(acts_.ln2_mean, l, BT), layer(acts_.ln2_rstd, l, BT), N, C);
      add_into(dresidual, dtmp, BT * Cs);
      // Now d(loss)/d(residual2): into the block input and through the attention.
      cpu::matmul_backward(dln, g + o.proj_w, g + o.proj_b, dresidual,
                           layer(acts_.atty, l, BT * Cs), p + o.proj_w, N, C, C);
      cpu::attention_backward(dqkv, dln, layer(acts_.qkv, l, BT * 3 * Cs),
                              acts_.att.data() + ls * att_size, B, T, C, NH);
      cpu::matmul_backward(dln, g + o.qkv_w, g + o.qkv_b, dqkv, layer(acts_.ln1, l, BT * Cs),
                           p + o.qkv_w, N, C, 3 * C);
      cpu::layernorm_backward(dtmp, g + o.ln1_w, g + o.ln1_b, dln, residual, p + o.ln1_w,
                              layer(acts_.ln1_mean, l, BT), layer(acts_.ln1_rstd, l, BT), N, C);
      add_into(dresidual, dtmp, BT * Cs);
    }
    cpu::encoder_backward(g + layout_.wte(), g + layout_.wpe(), dresidual, batch.inputs, B, T, C);
  }

  // The step's mean gradient into grads_ (once per step): the exact sum over M micro-batches
  // divided by M, or NaN where a term was rejected.
  void finish_gradient() {
    if (finished_ || micro_batches_ <= 1) return;
    finished_ = true;
    if (step_sum_.back() > 0) {
      std::fill(grads_.begin(), grads_.end(), std::numeric_limits<float>::quiet_NaN());
      return;
    }
    fixed::to_floats(std::span<const std::int64_t>(step_sum_.data(), grads_.size()), grads_,
                     static_cast<double>(micro_batches_));
  }

  // The mean of acts_.losses over the batch, summed in double in token order.
  float mean_loss(size_t BT) const {
    double sum = 0;
    for (size_t i = 0; i < BT; ++i) sum += acts_.losses[i];
    return static_cast<float>(sum / static_cast<double>(BT));
  }

  static float* layer(std::vector<float>& buffer, int l, size_t per_layer) {
    return buffer.data() + static_cast<size_t>(l) * per_layer;
  }

  static void add_into(float* acc, const float* x, size_t n) {
    cpu::residual_forward(acc, acc, x, n);
  }

  ModelConfig model_;
  ParamLayout layout_;
  int threads_;
  std::vector<float> params_, grads_, m_, v_;
  std::int64_t micro_batches_ = 1;      // of the current step
  std::vector<std::int64_t> step_sum_;  // its exact sum when micro_batches_ > 1
  bool finished_ = false;               // grads_ holds the step's mean gradient
  Activations acts_;
  DecodeScratch decode_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& model, int threads) {
  return std::make_unique<CpuEngine>(model, threads);
}

}  // namespace btm
