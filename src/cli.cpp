#include "btm/cli.hpp"

#include <filesystem>
#include <fstream>
#include <iostream>

#include "btm/error.hpp"

namespace btm {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  auto flush = [&] {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) items.push_back(item.substr(b, e - b + 1));
    item.clear();
  };
  for (char c : text) {
    if (c == ',')
      flush();
    else
      item += c;
  }
  flush();
  return items;
}

namespace {

std::vector<int> parse_int_list(const std::string& text, const char* option) {
  std::vector<int> out;
  for (const std::string& s : split_list(text)) {
    try {
      std::size_t used = 0;
      out.push_back(std::stoi(s, &used));
      if (used != s.size()) throw std::invalid_argument(s);
    } catch (const std::exception&) {
      throw InputError(std::string("option '") + option + "': '" + s + "' is not an integer");
    }
  }
  return out;
}

bool parse_bool(const std::string& text, const char* option) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  throw InputError(std::string("option '") + option + "': '" + text + "' is not true or false");
}

}  // namespace

po::options_description config_options(Config& c) {
  po::options_description all(
      "Configuration (INI sections [model] [optim] [data] [run] [eval]; "
      "a flag --section.key overrides the file)");
  po::options_description model("[model]");
  // clang-format off
  model.add_options()
      ("model.n_layer", po::value(&c.model.n_layer)->default_value(c.model.n_layer), "transformer blocks")
      ("model.n_head", po::value(&c.model.n_head)->default_value(c.model.n_head), "attention heads")
      ("model.d_model", po::value(&c.model.d_model)->default_value(c.model.d_model), "width")
      ("model.context", po::value(&c.model.context)->default_value(c.model.context), "context length T")
      ("model.vocab_size", po::value(&c.model.vocab_size)->default_value(c.model.vocab_size),
       "vocabulary (byte: 257, gpt2: 50257)")
      ("model.vocab_multiple", po::value(&c.model.vocab_multiple)->default_value(c.model.vocab_multiple),
       "pad the embedding table to a multiple of this");
  // clang-format on
  po::options_description optim("[optim]");
  // clang-format off
  optim.add_options()
      ("optim.lr", po::value(&c.optim.lr)->default_value(c.optim.lr), "peak learning rate")
      ("optim.min_lr_ratio", po::value(&c.optim.min_lr_ratio)->default_value(c.optim.min_lr_ratio),
       "decay floor as a fraction of lr")
      ("optim.warmup_fraction", po::value(&c.optim.warmup_fraction)->default_value(c.optim.warmup_fraction),
       "linear warmup over this share of all steps")
      ("optim.decay", po::value(&c.optim.decay)->default_value(c.optim.decay), "linear | cosine")
      ("optim.beta1", po::value(&c.optim.beta1)->default_value(c.optim.beta1), "AdamW beta1")
      ("optim.beta2", po::value(&c.optim.beta2)->default_value(c.optim.beta2), "AdamW beta2")
      ("optim.eps", po::value(&c.optim.eps)->default_value(c.optim.eps), "AdamW epsilon")
      ("optim.weight_decay", po::value(&c.optim.weight_decay)->default_value(c.optim.weight_decay),
       "decoupled weight decay (2-D weights only)")
      ("optim.grad_clip", po::value(&c.optim.grad_clip)->default_value(c.optim.grad_clip),
       "clip the global gradient norm (0: off)");
  // clang-format on
  po::options_description data("[data]");
  // clang-format off
  data.add_options()
      ("data.corpus", po::value(&c.data.corpus)->default_value(c.data.corpus),
       "directory of DOMAIN.h5 corpora (btm prepare)")
      ("data.domains", po::value<std::string>()->notifier([&c](const std::string& s) {
         c.data.domains = split_list(s);
        // clang-format on
      }),
      "train domains, comma separated: one ELM each")(
      "data.eval_domains", po::value<std::string>()->notifier([&c](const std::string& s) {
        c.data.eval_domains = split_list(s);
      }),
      "held-out domains (no ELM trains on them), comma separated")(
      "data.batch", po::value(&c.data.batch)->default_value(c.data.batch),
      "sequences per rank per micro-step")("data.accum",
                                           po::value(&c.data.accum)->default_value(c.data.accum),
                                           "micro-steps per optimizer step");
  po::options_description run("[run]");
  // clang-format off
  run.add_options()
      ("run.dir", po::value(&c.run.dir)->default_value(c.run.dir), "the forest directory")
      ("run.steps", po::value(&c.run.steps)->default_value(c.run.steps),
       "total step budget (seed + ELM training)")
      ("run.seed_share", po::value(&c.run.seed_share)->default_value(c.run.seed_share),
       "share of the steps spent on the seed LM (0: branch from the initialisation)")
      ("run.seed_checkpoint", po::value(&c.run.seed_checkpoint),
       "branch from this existing checkpoint instead of training a seed")
      ("run.ranks_per_elm", po::value(&c.run.ranks_per_elm)->default_value(c.run.ranks_per_elm),
       "ranks that train one ELM together (data parallel)")
      ("run.checkpoint_every", po::value(&c.run.checkpoint_every)->default_value(c.run.checkpoint_every),
       "checkpoint every N steps")
      ("run.log_every", po::value(&c.run.log_every)->default_value(c.run.log_every),
       "progress line and metrics row every N steps")
      ("run.seed", po::value(&c.run.seed)->default_value(c.run.seed), "random seed")
      ("run.device", po::value(&c.run.device)->default_value(c.run.device), "auto | cpu | cuda")
      ("run.threads", po::value(&c.run.threads)->default_value(c.run.threads),
       "CPU threads per rank (0: cores / ranks on the node)")
      ("run.split", po::value(&c.run.split)->default_value(c.run.split),
       "domain | random (K pseudo-domains of shuffled documents: the paper's ablation)")
      ("run.elm_init", po::value(&c.run.elm_init)->default_value(c.run.elm_init),
       "seed (ELMs branch from the seed LM) | random (each ELM from its own initialisation, "
       "with run.seed_share 0: the check that averaging needs a shared seed)")
      ("run.dense", po::value<std::string>()->notifier([&c](const std::string& s) {
         c.run.dense = parse_bool(s, "run.dense");
        // clang-format on
      }),
      "also train the compute-matched dense baseline (true | false)")(
      "run.share_gpus", po::value<std::string>()->notifier([&c](const std::string& s) {
        c.run.share_gpus = parse_bool(s, "run.share_gpus");
      }),
      "let ranks of a node share GPUs, to test a rank layout on fewer GPUs (slower than one "
      "rank per GPU; gradients then go through MPI, not NCCL) (true | false)");
  po::options_description eval("[eval]");
  // clang-format off
  eval.add_options()
      ("eval.blocks", po::value(&c.eval.blocks)->default_value(c.eval.blocks),
       "test blocks per domain (0: all)")
      ("eval.prior_blocks", po::value(&c.eval.prior_blocks)->default_value(c.eval.prior_blocks),
       "validation blocks for the cached prior")
      ("eval.prior_batch", po::value(&c.eval.prior_batch)->default_value(c.eval.prior_batch),
       "blocks per EMA update of the cached prior")
      ("eval.prior_ema", po::value(&c.eval.prior_ema)->default_value(c.eval.prior_ema),
       "EMA weight of each batch's mean posterior")
      ("eval.posterior", po::value(&c.eval.posterior)->default_value(c.eval.posterior),
       "prefix (paper: full-prefix likelihood) | prev-token (reference code)")
      ("eval.topk", po::value<std::string>()->notifier([&c](const std::string& s) {
         c.eval.topk = parse_int_list(s, "eval.topk");
        // clang-format on
      }),
      "ensemble sizes to report, comma separated (default 1..K)");
  all.add(model).add(optim).add(data).add(run).add(eval);
  return all;
}

po::variables_map parse_command(const std::string& command, const std::string& summary,
                                const std::vector<std::string>& args,
                                const po::options_description& command_options, Config* config,
                                bool print_help) {
  po::options_description generic("General");
  // clang-format off
  generic.add_options()("help,h", "print this help");
  // clang-format on
  po::options_description visible;
  visible.add(generic).add(command_options);
  std::unique_ptr<po::options_description> config_desc;
  if (config) {
    // clang-format off
    visible.add_options()("config,c", po::value<std::vector<std::string>>()->composing(),
                          "INI config file (repeatable; later files win)");
    // clang-format on
    config_desc = std::make_unique<po::options_description>(config_options(*config));
    visible.add(*config_desc);
  }

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(visible).run(), vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + e.what() + " (btm " + command +
                     " --help lists the options)");
  }
  if (vm.count("help")) {
    if (print_help)
      std::cout << "usage: btm " << command << " [options]\n\n"
                << summary << "\n\n"
                << visible << "\n";
    throw HelpShown{};
  }
  if (config && vm.count("config")) {
    // po::store keeps values already stored, so flags win over files; later files win over
    // earlier ones by storing them first.
    std::vector<std::string> files = vm["config"].as<std::vector<std::string>>();
    for (auto it = files.rbegin(); it != files.rend(); ++it) {
      std::ifstream in(*it);
      if (!std::filesystem::is_regular_file(*it) || !in)
        throw InputError("btm " + command + ": config file '" + *it + "' not found or unreadable");
      try {
        po::store(po::parse_config_file(in, *config_desc, false), vm);
      } catch (const po::error& e) {
        throw InputError("btm " + command + ": config file '" + *it + "': " + e.what());
      }
    }
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + e.what());
  }
  if (config) validate(*config);
  return vm;
}

}  // namespace btm
