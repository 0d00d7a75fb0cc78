// engine.hpp: the compute engine interface. A CPU reference engine (fp32, cpu_engine.cpp) and a
// CUDA engine (bf16 compute, fp32 master weights, src/cuda) implement it; nothing above this
// interface knows which one runs. All state crosses the interface as fp32 flat vectors in the
// ParamLayout order, so checkpoints, averaging and resume are identical for both.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/params.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {

// A batch of B sequences of T tokens, host memory, row-major [B, T].
struct Batch {
  const std::int32_t* inputs = nullptr;
  const std::int32_t* targets = nullptr;
  int B = 0;
  int T = 0;
};

// Refuses a batch an engine cannot take: std::invalid_argument where B is outside [1, max_batch]
// (max_batch 0: no limit), T outside [1, model.context] or an array is missing (a programming
// error), InputError naming the token where an id is outside [0, model.vocab_size) (bad data).
// `engine` names the engine in the message.
void check_batch(const Batch& batch, bool need_targets, const ModelConfig& model, int max_batch,
                 const std::string& engine);

// One AdamW update (PyTorch semantics: decoupled decay p -= lr*wd*p on 2-D weights only,
// bias-corrected moments, eps outside the square root).
struct AdamWStep {
  float lr = 0;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float grad_clip = 1.0f;  // clip the global gradient norm to this; 0 disables
  std::int64_t t = 1;      // 1-based count of updates, for bias correction
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string kind() const = 0;  // "cpu" or "cuda"
  // How it computes, for benchmark lines and logs: the attention ("flash", "materialized"), the
  // flash kernels ("wgmma", "mma.sync") and the GELU ("fused", "unfused"); "" where it has no
  // such choice (the CPU engine).
  struct Facts {
    std::string attention, flash_kernels, gelu;
  };
  virtual Facts facts() const { return {}; }
  virtual const ParamLayout& layout() const = 0;

  // Full training state as fp32 flat vectors (params, AdamW first and second moments).
  virtual void set_state(std::span<const float> params, std::span<const float> m,
                         std::span<const float> v) = 0;
  virtual void get_state(std::span<float> params, std::span<float> m, std::span<float> v) const = 0;
  virtual void get_params(std::span<float> params) const = 0;
  virtual void set_params(std::span<const float> params) = 0;

  // The gradient of an optimizer step is the mean, over the step's M micro-batches (spread over
  // a group's ranks and their micro-steps), of each micro-batch's mean-token-loss gradient. With
  // M > 1 the micro-batch gradients are summed exactly (fixed_point.hpp), so a step has the same
  // bits however its micro-batches are spread over ranks; with M = 1 the gradient is used as
  // computed. begin_step(M) starts a step.
  virtual void begin_step(std::int64_t micro_batches) = 0;
  // Adds the gradient of this micro-batch's mean token loss to the step and returns that loss.
  // With `reduce` set (on each rank's last micro-step of the step, collectively) the step's sum
  // is then summed over that group (the CUDA engine overlaps this with the backward pass).
  virtual float forward_backward(const Batch& batch, Communicator* reduce) = 0;
  // The step's gradient (mean over its micro-batches); NaN everywhere when a micro-batch
  // gradient was not finite or outside the fixed-point range.
  virtual void get_grads(std::span<float> grads) = 0;
  // Clips the step's gradient by global norm and applies AdamW; returns the norm before
  // clipping. A non-finite norm leaves the parameters and moments unchanged.
  virtual float optimizer_step(const AdamWStep& step) = 0;

  // out[b*T + t] = log p(targets[b,t] | inputs[b, 0..t]), host memory.
  virtual void token_logprobs(const Batch& batch, float* out) = 0;
  // out[(b*T + t) * padded_vocab + j]: the logits (tests and the PyTorch comparison).
  virtual void logits(const Batch& batch, float* out) = 0;

  // A copy of the whole training state kept where the engine computes, for the models that start
  // from one state (a wave's ELMs and the dense baseline start from the seed): keep_state copies
  // the current state (false where no copy fits: then nothing is kept), restore_state sets the
  // state to that copy exactly as set_state would (std::logic_error when none is kept),
  // drop_state frees it. These defaults keep it in host memory.
  virtual bool keep_state();
  virtual void restore_state();
  virtual void drop_state();

  // Parameter averages formed where the engine computes (see fixed_point.hpp: the same bits
  // wherever they are formed). hold_parent keeps parent j's parameters until drop_parents (in
  // device memory on GPUs, when they fit). add_parents adds sum_j weights[j] * parent_j over the
  // held parents with a non-zero weight to `sum` (the parents other engines hold are theirs to
  // add); set_params_to_average sets the parameters to that sum, and needs every parent with a
  // non-zero weight held (std::logic_error otherwise). weights is indexed by j.
  // These defaults keep the parents in host memory.
  virtual void hold_parent(std::size_t j, std::vector<float> params);
  virtual void drop_parents();
  virtual void add_parents(std::span<const double> weights, fixed::Sum& sum);
  virtual void set_params_to_average(std::span<const double> weights);

  // Incremental decoding (text generation, eval/generate) with a key/value cache.
  // begin_decode(B, capacity) starts B empty sequences of at most `capacity` tokens each
  // (1 <= capacity <= model.context; B within the engine's max_batch), dropping any earlier
  // ones. decode(tokens, n, out) appends n tokens to every sequence (tokens row-major [B, n]) and
  // writes the logits of the n new positions, out[(b*n + i) * padded_vocab + j]: the logits()
  // of the sequences so far at those positions, up to the engine's arithmetic. A sequence
  // never grows past its capacity: positions past model.context have no position embedding,
  // so callers refuse them before they start (InputError here). The cache is apart from the
  // training state; other calls leave it alone, set_params makes it stale (begin again).
  // This default keeps the tokens and runs logits() on the whole sequences at every call (no
  // cache: the fallback of an engine without one); the CPU and CUDA engines keep the keys and
  // values of every layer instead and run only the new positions.
  virtual void begin_decode(int B, int capacity);
  virtual void decode(const std::int32_t* tokens, int n, float* out);
  // Whether decode reuses a key/value cache ("kv-cache") or recomputes ("full-forward").
  virtual std::string decode_mode() const { return "full-forward"; }
  int decode_batch() const { return decode_batch_; }
  int decode_length() const { return decode_length_; }

 protected:
  // begin_decode's checks and bookkeeping for the implementations: B within max_batch (0: any;
  // std::invalid_argument otherwise) and a capacity within the context (InputError);
  // advance_decode(n) refuses n < 1 (std::invalid_argument) or growing past the capacity
  // (InputError) and advances the length, returning the position of the first new token.
  void start_decode(int B, int capacity, int max_batch, const std::string& engine);
  int advance_decode(int n, const std::string& engine);
  // The parameters set to a host fixed-point sum over add_parents (std::runtime_error for a
  // parent value outside the fixed-point range).
  void set_params_to_sum_of_parents(std::span<const double> weights);
  // The held parents of the host-memory defaults.
  std::map<std::size_t, std::vector<float>> held_parents_;
  // The kept state of the host-memory defaults (params, m, v; empty: none).
  std::vector<float> kept_params_, kept_m_, kept_v_;

 private:
  int decode_batch_ = 0, decode_length_ = 0, decode_capacity_ = 0;
  std::vector<std::int32_t> decode_tokens_;  // the default decode's sequences, [B, capacity]
};

struct EngineOptions {
  int threads = 0;    // CPU: OpenMP threads, 0 = leave OpenMP's default
  int gpu = 0;        // CUDA: device index on this node
  int max_batch = 1;  // largest B passed to any call (the CUDA engine preallocates)
  // CUDA: auto | flash | flash-mma.sync | materialized (cuda/engine.hpp); cpu takes auto only.
  std::string attention = "auto";
};

}  // namespace btm
