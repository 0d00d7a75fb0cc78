// btm export: a model of the forest, or an average of its ELMs, as a Hugging Face
// GPT2LMHeadModel directory (io/hf_gpt2.hpp, data/hf_tokenizer.hpp), written atomically.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <tuple>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/hf_tokenizer.hpp"
#include "btm/io/atomic_dir.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/hf_gpt2.hpp"
#include "btm/method/average.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/util/build_info.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ",") + s;
  return out;
}

// The weights of the cached prior of `domain` from RUN/eval.h5, and the ELMs they weight.
std::pair<std::vector<std::string>, std::vector<double>> cached_prior(const fs::path& run_dir,
                                                                      const std::string& domain) {
  const fs::path file = run_dir / "eval.h5";
  if (!fs::exists(file))
    throw InputError(file.string() + " not found: --prior needs the cached priors of btm eval");
  const EvalResults e = read_eval_file(file);
  const auto it = std::find(e.domains.begin(), e.domains.end(), domain);
  if (it == e.domains.end())
    throw InputError("--prior " + domain + ": " + file.string() +
                     " has no cached prior of that domain (it has " + joined(e.domains) + ")");
  const std::size_t d = static_cast<std::size_t>(it - e.domains.begin()), K = e.elms.size();
  std::vector<double> w(e.priors.begin() + static_cast<long>(d * K),
                        e.priors.begin() + static_cast<long>((d + 1) * K));
  return {e.elms, ensemble::normalise_weights(w)};
}

}  // namespace

int cmd_export(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  std::string model_name, parents_text, weights_text, prior, out, bpe_dir;
  std::string dtype_text = "fp32", tokenizer = "auto";
  bool force = false, weights_only = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("model", po::value(&model_name),
       "a model of the forest: an ELM, seed, dense, or an average made by btm average")
      ("parents", po::value(&parents_text),
       "export the parameter average of these ELMs instead (default with --weights: every "
       "trained ELM)")
      ("weights", po::value(&weights_text),
       "their weights, comma separated, normalised to sum 1 (default: uniform)")
      ("prior", po::value(&prior),
       "export the average weighted by this domain's cached prior (RUN/eval.h5)")
      ("out", po::value(&out)->required(), "the model directory to write")
      ("dtype", po::value(&dtype_text)->default_value(dtype_text), "fp32 | bf16")
      ("tokenizer", po::value(&tokenizer)->default_value(tokenizer),
       "auto (GPT-2's files for a 50,257-id model, none for a byte model) | gpt2 | none")
      ("bpe-dir", po::value(&bpe_dir), "directory with GPT-2's encoder.json and vocab.bpe")
      ("weights-only", po::bool_switch(&weights_only),
       "write one HDF5 file --out instead, for sharing: btm's checkpoint format with the "
       "parameters alone (float32, or bfloat16 with --dtype bf16), their /layout, the config "
       "and tokenizer; no AdamW moments (docs/files.md)")
      ("force", po::bool_switch(&force), "replace --out if it exists");
  // clang-format on
  const auto vm = parse_command(
      "export",
      "Write a model of the forest (--model), or an average of its ELMs (--parents/--weights,\n"
      "or --prior DOMAIN), as a Hugging Face GPT2LMHeadModel directory: config.json,\n"
      "model.safetensors (weights only) and the GPT-2 tokenizer files, for\n"
      "GPT2LMHeadModel.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR).\n"
      "--weights-only writes the weights as one btm HDF5 file instead (h5py reads it; btm eval,\n"
      "generate and logits read it after btm forest add).",
      args, options, &config, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;

  const int sources = (vm.count("model") ? 1 : 0) +
                      (vm.count("parents") || vm.count("weights") ? 1 : 0) +
                      (vm.count("prior") ? 1 : 0);
  if (sources != 1)
    throw InputError("btm export: give one of --model NAME, --parents/--weights, --prior DOMAIN");
  safetensors::Dtype dtype;
  if (dtype_text == "fp32")
    dtype = safetensors::Dtype::f32;
  else if (dtype_text == "bf16")
    dtype = safetensors::Dtype::bf16;
  else
    throw InputError("--dtype '" + dtype_text + "': use fp32 or bf16");
  if (tokenizer != "auto" && tokenizer != "gpt2" && tokenizer != "none")
    throw InputError("--tokenizer '" + tokenizer + "': use auto, gpt2 or none");

  const fs::path run_dir = config.run.dir;
  if (!fs::exists(forest_file(run_dir)))
    throw InputError(forest_file(run_dir).string() +
                     " not found: --run.dir must be a forest directory (btm run)");
  const Forest forest = load_forest(run_dir);
  Checkpoint c;
  std::map<std::string, std::string> metadata;
  std::string description;
  if (vm.count("model")) {
    const fs::path file = checkpoint_file(run_dir, model_name);
    if (!forest.find(model_name) && !fs::exists(file)) {
      std::vector<std::string> names;
      for (const ModelRecord& r : forest.models) names.push_back(r.name);
      throw InputError("--model " + model_name + ": no such model in " + run_dir.string() +
                       " (it has " + joined(names) + ")");
    }
    c = load_checkpoint(file, nullptr, false);
    metadata["btm_model"] = model_name;
    description = model_name + " (step " + std::to_string(c.step) + ")";
    if (!c.finished())
      std::cout << "[export] note: " << model_name << " is at step " << c.step << " of "
                << c.target_steps << " (still training)" << std::endl;
  } else {
    std::vector<std::string> parents;
    std::vector<double> weights;
    if (vm.count("prior")) {
      std::tie(parents, weights) = cached_prior(run_dir, prior);
      metadata["btm_prior"] = prior;
    } else {
      parents = parents_or_trained_elms(parents_text, forest, run_dir, "to average");
      weights = weights_text.empty()
                    ? ensemble::normalise_weights(std::vector<double>(parents.size(), 1.0))
                    : parse_parent_weights(weights_text, parents.size());
    }
    std::vector<fs::path> files;
    for (const std::string& p : parents) files.push_back(checkpoint_file(run_dir, p));
    const ModelConfig model = peek_checkpoint(files.at(0)).model;
    c = average_checkpoints(files, weights, model, false);
    std::ostringstream w;
    w.precision(17);
    for (std::size_t j = 0; j < weights.size(); ++j) w << (j ? "," : "") << weights[j];
    metadata["btm_model"] = "average";
    metadata["btm_parents"] = joined(parents);
    metadata["btm_weights"] = w.str();
    description = "average of " + joined(parents) + " (weights " + w.str() + ")";
  }
  metadata["btm_version"] = btm_version();
  metadata["btm_commit"] = btm_commit();
  metadata["btm_step"] = std::to_string(c.step);
  metadata["btm_tokens"] = std::to_string(c.tokens);

  if (weights_only) {
    if (fs::exists(out) && !force)
      throw InputError(out + " exists: choose another --out, or give --force to replace it");
    c.name = vm.count("model") ? model_name : "average";
    save_weights_only(out, c, dtype == safetensors::Dtype::bf16);
    std::cout << "[export] " << description << " -> " << out << ": weights only ("
              << safetensors::dtype_name(dtype) << ", " << describe_model(c.model) << ")"
              << std::endl;
    return kExitOk;
  }
  const int V = c.model.vocab_size;
  if (tokenizer == "gpt2" && V != hf::kGpt2Vocab)
    throw InputError("--tokenizer gpt2: the model has " + std::to_string(V) +
                     " token ids, GPT-2's tokenizer 50,257: use --tokenizer none");
  const bool gpt2 = tokenizer == "gpt2" || (tokenizer == "auto" && V == hf::kGpt2Vocab);

  AtomicDir dir(out, force);
  hf::write_config(dir.tmp() / "config.json", c.model, dtype);
  hf::write_weights(dir.tmp() / "model.safetensors", c.model, c.params, dtype, metadata);
  if (gpt2) write_hf_gpt2_tokenizer(dir.tmp(), bpe_dir, c.model.context);
  dir.commit();
  std::cout << "[export] " << description << " -> " << out << ": config.json, model.safetensors ("
            << safetensors::dtype_name(dtype) << ", " << describe_model(c.model) << ")"
            << (gpt2 ? ", GPT-2 tokenizer files" : "") << std::endl;
  if (!gpt2)
    std::cout << "[export] no tokenizer files written: "
              << (V == 257 ? "the model uses btm's byte tokenizer (ids 0-255 are the bytes, 256 "
                             "is end-of-text), which has no Hugging Face tokenizer; feed it "
                             "byte ids"
                           : "--tokenizer none (or a vocabulary that is not GPT-2's)")
              << std::endl;
  return kExitOk;
}

}  // namespace btm
