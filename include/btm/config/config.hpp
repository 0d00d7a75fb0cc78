// config.hpp: the settings of a run (model, optimizer, data, run, eval), declared once in the
// field table below. The table makes the structs and their defaults, the command-line options
// and INI keys (cli.hpp), the INI text recorded in checkpoints and manifests (to_ini), the range
// checks (validate), `btm config --get KEY`, and the model attributes of checkpoints.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "btm/util/enum_words.hpp"

namespace btm {

enum class Decay { linear, cosine };
enum class Device { automatic, cpu, cuda };
enum class SplitMode { domain, random };
enum class ElmInit { seed, random };
enum class ElmSchedule { continued, fresh };
enum class Posterior { prefix, prev_token };
// How parameters of ELMs become one model (method/merge.hpp): the weighted average, or a merge of
// the task vectors theta_j - theta_seed.
enum class MergeMethod { average, task_arithmetic, ties, dare, dare_ties };

template <>
struct EnumWords<Decay> {
  static constexpr std::array<std::pair<Decay, std::string_view>, 2> words{
      {{Decay::linear, "linear"}, {Decay::cosine, "cosine"}}};
};
template <>
struct EnumWords<Device> {
  static constexpr std::array<std::pair<Device, std::string_view>, 3> words{
      {{Device::automatic, "auto"}, {Device::cpu, "cpu"}, {Device::cuda, "cuda"}}};
};
template <>
struct EnumWords<SplitMode> {
  static constexpr std::array<std::pair<SplitMode, std::string_view>, 2> words{
      {{SplitMode::domain, "domain"}, {SplitMode::random, "random"}}};
};
template <>
struct EnumWords<ElmInit> {
  static constexpr std::array<std::pair<ElmInit, std::string_view>, 2> words{
      {{ElmInit::seed, "seed"}, {ElmInit::random, "random"}}};
};
template <>
struct EnumWords<ElmSchedule> {
  static constexpr std::array<std::pair<ElmSchedule, std::string_view>, 2> words{
      {{ElmSchedule::continued, "continue"}, {ElmSchedule::fresh, "fresh"}}};
};
template <>
struct EnumWords<Posterior> {
  static constexpr std::array<std::pair<Posterior, std::string_view>, 2> words{
      {{Posterior::prefix, "prefix"}, {Posterior::prev_token, "prev-token"}}};
};
template <>
struct EnumWords<MergeMethod> {
  static constexpr std::array<std::pair<MergeMethod, std::string_view>, 5> words{
      {{MergeMethod::average, "average"},
       {MergeMethod::task_arithmetic, "task-arithmetic"},
       {MergeMethod::ties, "ties"},
       {MergeMethod::dare, "dare"},
       {MergeMethod::dare_ties, "dare-ties"}}};
};

// The range a number must lie in (validate); `any` for fields that are not numbers.
struct Limits {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
};
namespace limits {
constexpr Limits any{};
constexpr Limits at_least(double lo) {
  return {lo, std::numeric_limits<double>::infinity()};
}
constexpr Limits above(double lo) {
  return {lo, std::numeric_limits<double>::infinity(), true, false};
}
constexpr Limits closed(double lo, double hi) {
  return {lo, hi};
}
constexpr Limits right_open(double lo, double hi) {
  return {lo, hi, false, true};
}
constexpr Limits left_open(double lo, double hi) {
  return {lo, hi, true, false};
}
}  // namespace limits

using Names = std::vector<std::string>;  // a comma-separated list of names
using Ints = std::vector<int>;           // a comma-separated list of integers

// X(section, key, type, default, limits, help), one line per setting, in INI order.
#define BTM_MODEL_FIELDS(X)                                                    \
  X(model, n_layer, int, 2, limits::at_least(1), "transformer blocks")         \
  X(model, n_head, int, 2, limits::at_least(1), "attention heads")             \
  X(model, d_model, int, 64, limits::at_least(1), "width")                     \
  X(model, context, int, 64, limits::at_least(2),                              \
    "context length T: the longest sequence, also the training block length")  \
  X(model, vocab_size, int, 257, limits::closed(2, 65536),                     \
    "vocabulary: real token ids are [0, vocab_size) (byte: 257, gpt2: 50257)") \
  X(model, vocab_multiple, int, 64, limits::at_least(1),                       \
    "pad the embedding table to a multiple of this")
#define BTM_OPTIM_FIELDS(X)                                                                     \
  X(optim, lr, double, 5e-4, limits::above(0), "peak learning rate")                            \
  X(optim, min_lr_ratio, double, 0.0, limits::closed(0, 1), "decay floor as a fraction of lr")  \
  X(optim, warmup_fraction, double, 0.08, limits::right_open(0, 1),                             \
    "linear warmup over this share of all steps")                                               \
  X(optim, decay, Decay, Decay::linear, limits::any, "decay after the warmup: linear | cosine") \
  X(optim, beta1, double, 0.9, limits::right_open(0, 1), "AdamW beta1")                         \
  X(optim, beta2, double, 0.95, limits::right_open(0, 1), "AdamW beta2")                        \
  X(optim, eps, double, 1e-8, limits::above(0), "AdamW epsilon")                                \
  X(optim, weight_decay, double, 0.1, limits::at_least(0),                                      \
    "decoupled weight decay (2-D weights only)")                                                \
  X(optim, grad_clip, double, 1.0, limits::at_least(0), "clip the global gradient norm (0: off)")
#define BTM_DATA_FIELDS(X)                                                                 \
  X(data, corpus, std::string, "data/corpus", limits::any,                                 \
    "directory of DOMAIN.h5 corpora (btm prepare)")                                        \
  X(data, domains, Names, {}, limits::any, "train domains, comma separated: one ELM each") \
  X(data, eval_domains, Names, {}, limits::any,                                            \
    "held-out domains (no ELM trains on them), comma separated")                           \
  X(data, clusters, std::string, "", limits::any,                                          \
    "clusters.h5 of btm cluster when the domains are its clusters (cluster_00 ...): eval " \
    "routes by it (rows ensemble:cluster-top-k)")                                          \
  X(data, batch, int, 4, limits::at_least(1), "sequences per rank per micro-step")         \
  X(data, accum, int, 1, limits::at_least(1),                                              \
    "micro-steps per optimizer step of an ELM rank (budget.hpp: the seed and dense take K x)")
#define BTM_RUN_FIELDS(X)                                                                       \
  X(run, dir, std::string, "run", limits::any, "the forest directory")                          \
  X(run, steps, std::int64_t, 100, limits::at_least(1),                                         \
    "optimizer steps of every model path (seed + ELM, and the dense baseline)")                 \
  X(run, seed_share, double, 0.5, limits::right_open(0, 1),                                     \
    "share of the steps spent on the seed LM (0: branch from the initialisation)")              \
  X(run, seed_checkpoint, std::string, "", limits::any,                                         \
    "branch from this existing checkpoint instead of training a seed")                          \
  X(run, ranks_per_elm, int, 1, limits::at_least(1),                                            \
    "ranks that train one ELM together (data parallel)")                                        \
  X(run, checkpoint_every, std::int64_t, 50, limits::at_least(1), "checkpoint every N steps")   \
  X(run, log_every, std::int64_t, 10, limits::at_least(1),                                      \
    "progress line and metrics row every N steps")                                              \
  X(run, eval_every, std::int64_t, 0, limits::at_least(0),                                      \
    "validation perplexity every N steps and at a model's last step (0: a quarter of an ELM's " \
    "steps, about 4 times per model)")                                                          \
  X(run, eval_blocks, std::int64_t, 8, limits::at_least(0),                                     \
    "validation blocks per domain, the first of its valid split (0: no validation)")            \
  X(run, seed, std::uint64_t, 1234, limits::any, "random seed")                                 \
  X(run, device, Device, Device::automatic, limits::any, "auto | cpu | cuda")                   \
  X(run, threads, int, 0, limits::at_least(0),                                                  \
    "CPU threads per rank (0: cores / ranks on the node)")                                      \
  X(run, split, SplitMode, SplitMode::domain, limits::any,                                      \
    "domain | random (K pseudo-domains of shuffled documents: the paper's ablation)")           \
  X(run, elm_init, ElmInit, ElmInit::seed, limits::any,                                         \
    "seed (ELMs branch from the seed LM) | random (each ELM from its own initialisation, with " \
    "run.seed_share 0: the check that averaging needs a shared seed)")                          \
  X(run, elm_schedule, ElmSchedule, ElmSchedule::continued, limits::any,                        \
    "continue (the paper: an ELM continues the seed's learning-rate schedule and AdamW state) " \
    "| fresh (c-BTM, for a pretrained run.seed_checkpoint: each ELM starts a new warmup and "   \
    "decay over its run.steps x (1 - run.seed_share) steps, with fresh AdamW moments; the "     \
    "dense baseline starts from the seed checkpoint with a fresh schedule too)")                \
  X(run, dense, bool, true, limits::any,                                                        \
    "also train the compute-matched dense baseline (true | false)")                             \
  X(run, share_gpus, bool, false, limits::any,                                                  \
    "let ranks of a node share GPUs, to test a rank layout on fewer GPUs (slower than one "     \
    "rank per GPU; gradients then go through MPI, not NCCL) (true | false)")
#define BTM_EVAL_FIELDS(X)                                                                       \
  X(eval, blocks, std::int64_t, 64, limits::at_least(0), "test blocks per domain (0: all)")      \
  X(eval, prior_blocks, std::int64_t, 100, limits::at_least(1),                                  \
    "validation blocks for the cached prior")                                                    \
  X(eval, prior_batch, int, 8, limits::at_least(1), "blocks per EMA update of the cached prior") \
  X(eval, prior_ema, double, 0.3, limits::left_open(0, 1),                                       \
    "EMA weight of each batch's mean posterior")                                                 \
  X(eval, posterior, Posterior, Posterior::prefix, limits::any,                                  \
    "prefix (paper: full-prefix likelihood) | prev-token (reference code)")                      \
  X(eval, merges, Names, {}, limits::any,                                                        \
    "task-vector merges to evaluate beside the averages, comma separated: task-arithmetic, "     \
    "ties, dare, dare-ties (rows merge:METHOD:uniform and merge:METHOD:cached-prior)")           \
  X(eval, merge_lambda, double, 1.0, limits::any,                                                \
    "merges: theta_seed + lambda x the merged task vector")                                      \
  X(eval, merge_density, double, 0.2, limits::left_open(0, 1),                                   \
    "ties: share of each tensor's task vector kept (largest |tau|)")                             \
  X(eval, merge_drop, double, 0.9, limits::right_open(0, 1),                                     \
    "dare, dare-ties: probability of dropping a task-vector entry (kept ones x 1/(1-p))")        \
  X(eval, merge_seed, std::uint64_t, 1, limits::any, "dare, dare-ties: seed of the drop masks")  \
  X(eval, cluster_temperature, double, 0.0, limits::at_least(0),                                 \
    "T of the cluster routing softmax(-||h - c||^2 / T) (0: the one data.clusters holds)")       \
  X(eval, topk, Ints, {}, limits::any, "ensemble sizes to report, comma separated (default 1..K)")

#define BTM_CONFIG_FIELDS(X) \
  BTM_MODEL_FIELDS(X) BTM_OPTIM_FIELDS(X) BTM_DATA_FIELDS(X) BTM_RUN_FIELDS(X) BTM_EVAL_FIELDS(X)

#define BTM_DECLARE_FIELD(section, key, type, init, lim, help) type key = init;

struct ModelConfig {
  BTM_MODEL_FIELDS(BTM_DECLARE_FIELD)

  int padded_vocab() const {
    return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  }
  int head_dim() const { return d_model / n_head; }
  bool operator==(const ModelConfig&) const = default;
};

struct OptimConfig {
  BTM_OPTIM_FIELDS(BTM_DECLARE_FIELD)
};

struct DataConfig {
  BTM_DATA_FIELDS(BTM_DECLARE_FIELD)
};

struct RunConfig {
  BTM_RUN_FIELDS(BTM_DECLARE_FIELD)
};

struct EvalConfig {
  BTM_EVAL_FIELDS(BTM_DECLARE_FIELD)
};

struct Config {
  ModelConfig model;
  OptimConfig optim;
  DataConfig data;
  RunConfig run;
  EvalConfig eval;
};

// Calls f(name, value, limits, help) for every setting of `config` (const or not), name being
// "section.key", in the table's order.
template <typename C, typename F>
void for_each_field(C& config, F&& f) {
#define BTM_VISIT_FIELD(section, key, type, init, lim, help) \
  f(#section "." #key, config.section.key, lim, help);
  BTM_CONFIG_FIELDS(BTM_VISIT_FIELD)
#undef BTM_VISIT_FIELD
}
// The same over the model's settings only (checkpoint attributes, shape messages), name "key".
template <typename M, typename F>
void for_each_model_field(M& model, F&& f) {
#define BTM_VISIT_MODEL_FIELD(section, key, type, init, lim, help) f(#key, model.key);
  BTM_MODEL_FIELDS(BTM_VISIT_MODEL_FIELD)
#undef BTM_VISIT_MODEL_FIELD
}

// A setting's value as INI text, and back (InputError naming `name` and what it expects).
std::string field_text(int value);
std::string field_text(std::int64_t value);
std::string field_text(std::uint64_t value);
std::string field_text(double value);
std::string field_text(bool value);
std::string field_text(const std::string& value);
std::string field_text(const Names& value);
std::string field_text(const Ints& value);
template <typename E>
requires std::is_enum_v<E> std::string field_text(E value) {
  return std::string(word_of(value));
}
void parse_field(const std::string& text, int& out, const std::string& name);
void parse_field(const std::string& text, std::int64_t& out, const std::string& name);
void parse_field(const std::string& text, std::uint64_t& out, const std::string& name);
void parse_field(const std::string& text, double& out, const std::string& name);
void parse_field(const std::string& text, bool& out, const std::string& name);
void parse_field(const std::string& text, std::string& out, const std::string& name);
void parse_field(const std::string& text, Names& out, const std::string& name);
void parse_field(const std::string& text, Ints& out, const std::string& name);
void throw_bad_word(const std::string& name, const std::string& text, const std::string& words);
template <typename E>
requires std::is_enum_v<E>
void parse_field(const std::string& text, E& out, const std::string& name) {
  const auto value = from_word<E>(text);
  if (!value) throw_bad_word(name, text, word_list<E>());
  out = *value;
}

// "a, b , c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> split_list(const std::string& text);

// Throws InputError naming the first invalid value and what would be valid.
void validate(const Config& config);
// The model shape alone (the engines and checkpoint readers check it too).
void validate_model(const ModelConfig& model);

// The config as INI text, the form recorded in checkpoints, metrics and the forest manifest.
std::string to_ini(const Config& config);
// One setting's value as text, by its name "section.key" (btm config --get); InputError for an
// unknown name.
std::string get_field(const Config& config, const std::string& name);
// A setting as the glossary shows it (btm config --list, docs/config.md), from the field table.
struct FieldDoc {
  std::string name;   // "section.key"
  std::string type;   // "integer", "number", "text", "linear or cosine", ...
  std::string value;  // the default, as INI text
  std::string range;  // "" where every value of the type is allowed
  std::string help;
};
// Every setting, in the table's order.
std::vector<FieldDoc> field_docs();
// The settings that make a different forest (not where or how it runs: run.dir, data.corpus,
// run.device, run.threads, run.share_gpus, run.checkpoint_every, run.log_every, run.eval_every,
// run.eval_blocks) in which `a`
// and `b` differ, as "key (a value here, b value there)" items.
std::vector<std::string> differing_settings(const Config& a, const Config& b);
// "L=12 H=12 d=768 T=1024 V=50257" for messages.
std::string describe_model(const ModelConfig& model);

}  // namespace btm
