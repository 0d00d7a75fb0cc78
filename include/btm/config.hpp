// config.hpp: the plain structs that describe a run (model, optimizer, data, run, eval) and
// their defaults. cli.hpp fills them from flags and INI files; nothing else parses text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace btm {

struct ModelConfig {
  int n_layer = 2;
  int n_head = 2;
  int d_model = 64;
  int context = 64;         // T: maximum sequence length, also the training block length
  int vocab_size = 257;     // real token ids are [0, vocab_size)
  int vocab_multiple = 64;  // the embedding table is padded to a multiple of this

  int padded_vocab() const {
    return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  }
  int head_dim() const { return d_model / n_head; }
  bool operator==(const ModelConfig&) const = default;
};

struct OptimConfig {
  double lr = 5e-4;               // peak learning rate
  double min_lr_ratio = 0.0;      // floor of the decay, as a fraction of lr
  double warmup_fraction = 0.08;  // linear warmup over this share of the total steps
  std::string decay = "linear";   // linear | cosine
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled, on 2-D weights only
  double grad_clip = 1.0;     // global-norm clipping; 0 disables
};

struct DataConfig {
  std::string corpus = "data/corpus";     // directory of DOMAIN.h5 corpora
  std::vector<std::string> domains;       // train domains, one ELM each
  std::vector<std::string> eval_domains;  // held-out domains that no ELM trains on
  int batch = 4;                          // sequences per rank per micro-step
  int accum = 1;                          // micro-steps per optimizer step
};

struct RunConfig {
  std::string dir = "run";      // the forest directory
  std::int64_t steps = 100;     // total step budget of the forest (seed + branch-train)
  double seed_share = 0.5;      // share of steps spent on the seed LM; 0 branches from init
  std::string seed_checkpoint;  // start the forest from this checkpoint instead of training a seed
  int ranks_per_elm = 1;
  std::int64_t checkpoint_every = 50;
  std::int64_t log_every = 10;
  std::uint64_t seed = 1234;
  std::string device = "auto";   // auto | cpu | cuda
  int threads = 0;               // CPU threads per rank; 0 = cores / ranks on the node
  std::string split = "domain";  // domain | random (the paper's random-split ablation)
  // seed: every ELM branches from the seed LM (at step 0 when seed_share is 0: one shared
  // initialisation) | random: each ELM from an initialisation of its own (needs seed_share 0;
  // the paper's check that parameter averaging needs a shared seed)
  std::string elm_init = "seed";
  bool dense = true;        // also train the compute-matched dense baseline
  bool share_gpus = false;  // ranks of a node may share GPUs (testing a layout on fewer GPUs)
};

struct EvalConfig {
  std::int64_t blocks = 64;         // test blocks (of the context length) per domain; 0 = all
  std::int64_t prior_blocks = 100;  // validation blocks for the cached prior
  int prior_batch = 8;              // blocks per EMA update of the cached prior
  double prior_ema = 0.3;
  std::string posterior = "prefix";  // prefix (paper) | prev-token (reference code)
  std::vector<int> topk;             // ensemble sizes to report; empty = 1..K
};

struct Config {
  ModelConfig model;
  OptimConfig optim;
  DataConfig data;
  RunConfig run;
  EvalConfig eval;
};

// Throws InputError naming the first invalid value and what would be valid.
void validate(const Config& config);

// The config as INI text, the form recorded in checkpoints, metrics and the forest manifest.
std::string to_ini(const Config& config);

}  // namespace btm
