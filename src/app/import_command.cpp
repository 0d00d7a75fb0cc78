// btm import: a Hugging Face GPT-2 model directory (config.json + model.safetensors) as a btm
// checkpoint at step 0 with fresh AdamW moments, for run.seed_checkpoint (c-BTM's start from a
// pretrained model).
#include <filesystem>
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/hf_gpt2.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// The [model] settings given on the command line or in a --config file that differ from the
// imported shape: such a config would refuse the checkpoint as its run.seed_checkpoint.
std::vector<std::pair<std::string, int>> model_fields(ModelConfig m) {
  std::vector<std::pair<std::string, int>> out;
  for_each_model_field(m, [&](const char* key, int& value) { out.emplace_back(key, value); });
  return out;
}

void check_against_config(const po::variables_map& vm, const ModelConfig& given,
                          const ModelConfig& imported, const fs::path& dir) {
  const auto theirs = model_fields(imported);
  const auto ours = model_fields(given);
  std::string differ;
  for (std::size_t k = 0; k < ours.size(); ++k) {
    const std::string name = "model." + ours[k].first;
    if (vm.count(name) && !vm[name].defaulted() && ours[k].second != theirs[k].second)
      differ += (differ.empty() ? "" : ", ") + name + " = " + std::to_string(ours[k].second) +
                " (the model has " + std::to_string(theirs[k].second) + ")";
  }
  if (!differ.empty())
    throw InputError(dir.string() + " is " + describe_model(imported) +
                     "; the configuration says " + differ +
                     ": a run with it would refuse the checkpoint as run.seed_checkpoint; set "
                     "[model] to the imported shape");
}

// Every corpus of the run (data.domains and data.eval_domains, or every DOMAIN.h5 of the
// directory when none are named) must be tokenized with the model's vocabulary.
void check_corpus(const Config& config, const ModelConfig& model, const fs::path& dir) {
  const fs::path corpus = config.data.corpus;
  std::vector<fs::path> files;
  for (const auto* list : {&config.data.domains, &config.data.eval_domains})
    for (const std::string& d : *list) files.push_back(corpus_path(corpus, d));
  if (files.empty() && fs::is_directory(corpus))
    for (const auto& entry : fs::directory_iterator(corpus))
      if (entry.path().extension() == ".h5") files.push_back(entry.path());
  if (files.empty())
    throw InputError("data.corpus " + corpus.string() + ": no DOMAIN.h5 corpus to check");
  for (const fs::path& f : files) {
    if (!fs::exists(f)) {  // not prepared yet: the run checks it against the seed later
      std::cout << "[import] note: " << f.string() << " not found, its vocabulary not checked"
                << std::endl;
      continue;
    }
    const CorpusInfo info = read_corpus_info(f);
    if (info.vocab_size != model.vocab_size)
      throw InputError(f.string() + ": tokenized with " + info.tokenizer + " (" +
                       std::to_string(info.vocab_size) + " ids), but " + dir.string() +
                       " has a vocabulary of " + std::to_string(model.vocab_size) +
                       " ids: a pretrained model only reads text of its own tokenizer; prepare "
                       "the corpus with --tokenizer gpt2, or import a model of that vocabulary");
  }
}

}  // namespace

int cmd_import(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  std::string hf_dir, out, name;
  bool force = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("hf", po::value(&hf_dir)->required(),
       "a Hugging Face GPT-2 model directory: config.json and model.safetensors (or shards), "
       "F32, F16 or BF16")
      ("out", po::value(&out)->required(), "the btm checkpoint to write (.h5)")
      ("name", po::value(&name), "the checkpoint's model name (default: the directory's name)")
      ("force", po::bool_switch(&force), "replace --out if it exists");
  // clang-format on
  const auto vm = parse_command(
      "import",
      "Read a Hugging Face GPT-2 model (GPT2LMHeadModel.save_pretrained) into a btm checkpoint\n"
      "at step 0 with fresh AdamW moments, to start BTM from it: --run.seed_checkpoint FILE\n"
      "(with run.elm_schedule = fresh for c-BTM's new warmup and decay per ELM). The [model]\n"
      "shape comes from config.json, model.vocab_multiple from the configuration; [model]\n"
      "settings given (--config) must agree with it, and a data.corpus given is checked to\n"
      "have the model's vocabulary.",
      args, options, &config, world.rank() == 0, false);  // writes --out, reads no forest
  if (world.rank() != 0) return kExitOk;

  const fs::path dir = hf_dir;
  if (!fs::is_directory(dir))
    throw InputError("--hf " + hf_dir + ": not a directory (a save_pretrained model directory)");
  if (fs::exists(out) && !force)
    throw InputError(out + " exists: choose another --out, or give --force to replace it");
  Checkpoint c;
  c.model = hf::read_config(dir, config.model.vocab_multiple);
  check_against_config(vm, config.model, c.model, dir);
  if (!vm["data.corpus"].defaulted()) check_corpus(config, c.model, dir);
  c.params = hf::read_weights(dir, c.model);
  c.adam_m.assign(c.params.size(), 0.0f);
  c.adam_v.assign(c.params.size(), 0.0f);
  // A GPT-2 reads GPT-2's ids; its vocab_hash is filled in by its first training on a corpus.
  if (c.model.vocab_size == hf::kGpt2Vocab) c.tokenizer = "gpt2";
  fs::path whole = fs::absolute(dir).lexically_normal();
  if (!whole.has_filename()) whole = whole.parent_path();  // "gpt2/" -> "gpt2"
  c.name = !name.empty() ? name : whole.has_filename() ? whole.filename().string() : "imported";
  config.model = c.model;
  c.config_ini = to_ini(config);
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());
  save_checkpoint(out, c);  // step 0 of 0: trained as far as btm knows, no schedule of its own
  std::cout << "[import] " << dir.string() << " (" << describe_model(c.model) << ", "
            << ParamLayout(c.model).total() << " parameters) -> " << out << "\n"
            << "[import] start a forest from it: --run.seed_checkpoint " << out
            << " --model.n_layer " << c.model.n_layer << " --model.n_head " << c.model.n_head
            << " --model.d_model " << c.model.d_model << " --model.context " << c.model.context
            << " --model.vocab_size " << c.model.vocab_size << " --model.vocab_multiple "
            << c.model.vocab_multiple << " (and --run.elm_schedule fresh)" << std::endl;
  return kExitOk;
}

}  // namespace btm
