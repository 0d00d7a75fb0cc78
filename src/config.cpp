#include "btm/config.hpp"

#include <cmath>
#include <set>
#include <sstream>

#include "btm/error.hpp"

namespace btm {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw InputError("invalid configuration: " + what);
}

void check_domain_name(const std::string& name, const char* option) {
  require(!name.empty(), std::string(option) + " has an empty domain name");
  for (char c : name)
    require(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.',
            std::string(option) + ": domain name '" + name +
                "' may only use letters, digits, '_', '-' and '.'");
  require(
      name != "seed" && name != "dense" && !name.starts_with("average"),
      std::string(option) + ": '" + name + "' is reserved for the seed / dense / averaged models");
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

void validate(const Config& c) {
  const ModelConfig& m = c.model;
  require(m.n_layer >= 1, "model.n_layer must be >= 1");
  require(m.n_head >= 1, "model.n_head must be >= 1");
  require(m.d_model >= 1 && m.d_model % m.n_head == 0,
          "model.d_model (" + std::to_string(m.d_model) +
              ") must be a positive multiple of model.n_head (" + std::to_string(m.n_head) + ")");
  require(m.context >= 2, "model.context must be >= 2");
  require(m.vocab_size >= 2 && m.vocab_size <= 65536,
          "model.vocab_size must be in [2, 65536] (corpora store uint16 ids)");
  require(m.vocab_multiple >= 1, "model.vocab_multiple must be >= 1");

  const OptimConfig& o = c.optim;
  require(o.lr > 0 && std::isfinite(o.lr), "optim.lr must be > 0");
  require(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]");
  require(o.warmup_fraction >= 0 && o.warmup_fraction < 1,
          "optim.warmup_fraction must be in [0, 1)");
  require(o.decay == "linear" || o.decay == "cosine",
          "optim.decay is '" + o.decay + "': use linear or cosine");
  require(o.beta1 >= 0 && o.beta1 < 1, "optim.beta1 must be in [0, 1)");
  require(o.beta2 >= 0 && o.beta2 < 1, "optim.beta2 must be in [0, 1)");
  require(o.eps > 0, "optim.eps must be > 0");
  require(o.weight_decay >= 0, "optim.weight_decay must be >= 0");
  require(o.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables clipping)");

  const DataConfig& d = c.data;
  require(d.batch >= 1, "data.batch must be >= 1");
  require(d.accum >= 1, "data.accum must be >= 1");
  std::set<std::string> seen;
  for (const std::string& name : d.domains) {
    check_domain_name(name, "data.domains");
    require(seen.insert(name).second, "data.domains lists '" + name + "' twice");
  }
  for (const std::string& name : d.eval_domains) {
    check_domain_name(name, "data.eval_domains");
    require(seen.insert(name).second,
            "data.eval_domains: '" + name +
                "' is also a train domain or listed twice (held-out "
                "domains must be domains no ELM trains on; train domains are evaluated anyway)");
  }

  const RunConfig& r = c.run;
  require(!r.dir.empty(), "run.dir must not be empty");
  require(r.steps >= 1, "run.steps must be >= 1");
  require(r.seed_share >= 0 && r.seed_share < 1, "run.seed_share must be in [0, 1)");
  require(r.ranks_per_elm >= 1, "run.ranks_per_elm must be >= 1");
  require(r.checkpoint_every >= 1, "run.checkpoint_every must be >= 1");
  require(r.log_every >= 1, "run.log_every must be >= 1");
  require(r.device == "auto" || r.device == "cpu" || r.device == "cuda",
          "run.device is '" + r.device + "': use auto, cpu or cuda");
  require(r.threads >= 0, "run.threads must be >= 0");
  require(r.split == "domain" || r.split == "random",
          "run.split is '" + r.split + "': use domain or random");
  require(r.elm_init == "seed" || r.elm_init == "random",
          "run.elm_init is '" + r.elm_init + "': use seed or random");
  require(r.elm_init == "seed" || (r.seed_share == 0 && r.seed_checkpoint.empty()),
          "run.elm_init = random gives every ELM an initialisation of its own, so there is no "
          "seed: set run.seed_share = 0 (and no run.seed_checkpoint)");

  const EvalConfig& e = c.eval;
  require(e.blocks >= 0, "eval.blocks must be >= 0 (0 = the whole test split)");
  require(e.prior_blocks >= 1, "eval.prior_blocks must be >= 1");
  require(e.prior_batch >= 1, "eval.prior_batch must be >= 1");
  require(e.prior_ema > 0 && e.prior_ema <= 1, "eval.prior_ema must be in (0, 1]");
  require(e.posterior == "prefix" || e.posterior == "prev-token",
          "eval.posterior is '" + e.posterior + "': use prefix or prev-token");
  for (int k : e.topk) require(k >= 1, "eval.topk entries must be >= 1");
}

std::string to_ini(const Config& c) {
  std::ostringstream s;
  s.precision(17);
  s << "[model]\n"
    << "n_layer = " << c.model.n_layer << "\n"
    << "n_head = " << c.model.n_head << "\n"
    << "d_model = " << c.model.d_model << "\n"
    << "context = " << c.model.context << "\n"
    << "vocab_size = " << c.model.vocab_size << "\n"
    << "vocab_multiple = " << c.model.vocab_multiple << "\n\n"
    << "[optim]\n"
    << "lr = " << c.optim.lr << "\n"
    << "min_lr_ratio = " << c.optim.min_lr_ratio << "\n"
    << "warmup_fraction = " << c.optim.warmup_fraction << "\n"
    << "decay = " << c.optim.decay << "\n"
    << "beta1 = " << c.optim.beta1 << "\n"
    << "beta2 = " << c.optim.beta2 << "\n"
    << "eps = " << c.optim.eps << "\n"
    << "weight_decay = " << c.optim.weight_decay << "\n"
    << "grad_clip = " << c.optim.grad_clip << "\n\n"
    << "[data]\n"
    << "corpus = " << c.data.corpus << "\n"
    << "domains = " << join(c.data.domains) << "\n"
    << "eval_domains = " << join(c.data.eval_domains) << "\n"
    << "batch = " << c.data.batch << "\n"
    << "accum = " << c.data.accum << "\n\n"
    << "[run]\n"
    << "dir = " << c.run.dir << "\n"
    << "steps = " << c.run.steps << "\n"
    << "seed_share = " << c.run.seed_share << "\n"
    << "seed_checkpoint = " << c.run.seed_checkpoint << "\n"
    << "ranks_per_elm = " << c.run.ranks_per_elm << "\n"
    << "checkpoint_every = " << c.run.checkpoint_every << "\n"
    << "log_every = " << c.run.log_every << "\n"
    << "seed = " << c.run.seed << "\n"
    << "device = " << c.run.device << "\n"
    << "threads = " << c.run.threads << "\n"
    << "split = " << c.run.split << "\n"
    << "elm_init = " << c.run.elm_init << "\n"
    << "dense = " << (c.run.dense ? "true" : "false") << "\n"
    << "share_gpus = " << (c.run.share_gpus ? "true" : "false") << "\n\n"
    << "[eval]\n"
    << "blocks = " << c.eval.blocks << "\n"
    << "prior_blocks = " << c.eval.prior_blocks << "\n"
    << "prior_batch = " << c.eval.prior_batch << "\n"
    << "prior_ema = " << c.eval.prior_ema << "\n"
    << "posterior = " << c.eval.posterior << "\n"
    << "topk = ";
  for (std::size_t i = 0; i < c.eval.topk.size(); ++i) s << (i ? "," : "") << c.eval.topk[i];
  s << "\n";
  return s.str();
}

}  // namespace btm
