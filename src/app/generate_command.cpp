// btm generate: sample text from one model of the forest, a parameter average of ELMs, or the
// forest's ensemble (eval/generate), decoded with the run's tokenizer to standard output.
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/eval/generate.hpp"
#include "btm/eval/groups.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/average.hpp"
#include "btm/method/cluster.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

struct GenerateOptions {
  std::string model, parents, weights, prior = "uniform", tokenizer = "auto", bpe_dir, prompt,
                                       format = "text", route = "posterior";
  bool average = false, ensemble = false, ignore_eot = false, has_prompt = false;
  int experts = 0;
  GenerateRequest request;
};

// --tokenizer auto: the tokenizer of the corpora the run was trained on.
std::string run_tokenizer(const Config& config, const std::string& asked) {
  if (asked != "auto") return asked;
  std::vector<std::string> domains = config.data.domains;
  domains.insert(domains.end(), config.data.eval_domains.begin(), config.data.eval_domains.end());
  for (const std::string& d : domains) {
    const fs::path file = corpus_path(config.data.corpus, d);
    if (fs::exists(file)) return read_corpus_info(file).tokenizer;
  }
  throw InputError(
      "--tokenizer auto: none of the run's corpora (data.corpus = " + config.data.corpus +
      ") is here to say which tokenizer it used: give --tokenizer byte or gpt2");
}

// The cached prior of `domain` from RUN/eval.h5, over its ELMs (names[j]).
std::vector<double> cached_prior_of(const fs::path& run_dir, const std::string& domain,
                                    std::vector<std::string>& names,
                                    ensemble::PosteriorForm& form) {
  const fs::path file = eval_file(run_dir);
  if (!fs::exists(file))
    throw InputError("--prior " + domain + ": " + file.string() +
                     " does not exist; run btm eval first for cached priors, or use --prior "
                     "uniform");
  const EvalResults r = read_eval_file(file);
  const auto it = std::find(r.domains.begin(), r.domains.end(), domain);
  if (it == r.domains.end()) {
    std::string known;
    for (const std::string& d : r.domains) known += (known.empty() ? "" : ", ") + d;
    throw InputError("--prior " + domain + ": no cached prior of that domain in " + file.string() +
                     " (it has " + known + ", or use uniform)");
  }
  const std::size_t d = static_cast<std::size_t>(it - r.domains.begin()), K = r.elms.size();
  names = r.elms;
  if (!r.posterior.empty()) parse_field(r.posterior, form, "eval.posterior");
  return {r.priors.begin() + static_cast<std::ptrdiff_t>(d * K),
          r.priors.begin() + static_cast<std::ptrdiff_t>((d + 1) * K)};
}

// The prior's top --experts entries (all with 0), those > 0 only: the ELMs that take part.
void keep_top_experts(std::vector<std::string>& names, std::vector<double>& prior, int experts) {
  if (experts < 0) throw InputError("--experts " + std::to_string(experts) + ": use k >= 0");
  if (experts > static_cast<int>(prior.size()))
    throw InputError("--experts " + std::to_string(experts) + ": the prior has " +
                     std::to_string(prior.size()) + " ELMs");
  if (experts > 0) prior = ensemble::top_k(prior, static_cast<std::size_t>(experts));
  std::vector<std::string> kept_names;
  std::vector<double> kept;
  for (std::size_t j = 0; j < prior.size(); ++j)
    if (prior[j] > 0) {
      kept_names.push_back(names[j]);
      kept.push_back(prior[j]);
    }
  names = kept_names;
  prior = ensemble::normalise_weights(kept);
}

fs::path model_file(const fs::path& run_dir, const Forest& forest, const std::string& name) {
  const fs::path file = checkpoint_file(run_dir, name);
  if (!fs::exists(file)) {
    std::string known;
    for (const ModelRecord& r : forest.models) known += (known.empty() ? "" : ", ") + r.name;
    throw InputError("--model " + name + ": no such model in " + run_dir.string() + " (" +
                     (known.empty() ? std::string("the forest has none") : "it has " + known) +
                     "; btm forest list shows them)");
  }
  return file;
}

void print(const GenerateOptions& o, const GenerateRequest& request, const Generated& g,
           const Tokenizer& tokenizer, const std::string& engine) {
  const auto text_of = [&](const std::vector<std::int32_t>& ids) {
    std::vector<std::uint16_t> u;
    for (std::int32_t t : ids)
      if (t != request.stop_token) u.push_back(static_cast<std::uint16_t>(t));
    return tokenizer.decode(u);
  };
  std::size_t total = 0;
  for (const auto& t : g.tokens) total += t.size();
  const double tokens_per_s =
      g.decode_seconds > 0 ? static_cast<double>(total - g.tokens.size()) / g.decode_seconds : 0;
  const std::string prompt = text_of(request.prompt);
  for (std::size_t b = 0; b < g.tokens.size(); ++b) {
    const std::vector<std::int32_t>& t = g.tokens[b];
    const bool stopped = !t.empty() && t.back() == request.stop_token;
    if (o.format == "jsonl") {
      nlohmann::json j = {{"sample", b},
                          {"prompt_tokens", request.prompt.size()},
                          {"tokens", t},
                          {"text", text_of(t)},
                          {"stop", stopped ? "eot" : "max-tokens"}};
      // Invalid UTF-8 (a byte-level sample cut inside a character) becomes U+FFFD.
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      if (g.tokens.size() > 1) std::cout << "=== sample " << b << " ===\n";
      std::cout << prompt << text_of(t) << "\n";
    }
  }
  const nlohmann::json summary = {{"summary", true},
                                  {"samples", g.tokens.size()},
                                  {"tokens", total},
                                  {"steps", g.steps},
                                  {"prefill_s", g.prefill_seconds},
                                  {"decode_s", g.decode_seconds},
                                  {"tokens_per_s", tokens_per_s},
                                  {"engine", engine}};
  if (o.format == "jsonl") std::cout << summary.dump() << "\n";
  std::cout.flush();
  std::cerr << "[generate] " << g.tokens.size() << " x " << g.steps << " tokens, prefill "
            << g.prefill_seconds << " s, decode " << tokens_per_s << " tokens/s (" << engine
            << ")\n";
}

}  // namespace

int cmd_generate(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  GenerateOptions o;
  GenerateRequest& r = o.request;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("model", po::value(&o.model), "sample from this model of the forest (an ELM, seed, dense, an average)")
      ("average", po::bool_switch(&o.average),
       "sample from a parameter average of ELMs: --parents/--weights as in btm average, or the "
       "cached prior of --prior DOMAIN (top --experts)")
      ("ensemble", po::bool_switch(&o.ensemble),
       "sample from the forest's ensemble: per token, the experts' next-token distributions "
       "mixed by the domain posterior over the text so far")
      ("parents", po::value(&o.parents), "the ELMs of --average or --ensemble (default: every trained ELM)")
      ("weights", po::value(&o.weights),
       "their weights, comma separated: the average's, or the ensemble's prior (default: uniform)")
      ("prior", po::value(&o.prior)->default_value(o.prior),
       "uniform, or a domain whose cached prior (RUN/eval.h5) starts the posterior (--ensemble) "
       "or weighs the average (--average)")
      ("experts", po::value(&o.experts)->default_value(0),
       "keep the top k ELMs of the prior (0: all); with --route clusters, per token")
      ("route", po::value(&o.route)->default_value(o.route),
       "--ensemble: posterior (the domain posterior) | clusters (c-BTM: the prefix's distance to "
       "the centres of the forest's clusters.h5, eval.cluster_temperature)")
      ("prompt", po::value(&o.prompt), "the text to continue (default: standard input, one trailing newline dropped)")
      ("max-tokens", po::value(&r.max_tokens)->default_value(r.max_tokens),
       "new tokens per sample, at most (prompt + max tokens <= model.context)")
      ("temperature", po::value(&r.sampling.temperature)->default_value(1.0, "1"), "0: greedy")
      ("top-k", po::value(&r.sampling.top_k)->default_value(0), "keep the k most likely tokens (0: all)")
      ("top-p", po::value(&r.sampling.top_p)->default_value(1.0, "1"),
       "nucleus: keep the most likely tokens up to this probability (1: all)")
      ("seed", po::value(&r.seed)->default_value(r.seed), "seed of the draws (the same seed, the same text)")
      ("batch", po::value(&r.samples)->default_value(1), "samples of the prompt, generated together")
      ("ignore-eot", po::bool_switch(&o.ignore_eot), "go on past the end-of-text token")
      ("tokenizer", po::value(&o.tokenizer)->default_value(o.tokenizer),
       "auto (the run's corpora say) | byte | gpt2")
      ("bpe-dir", po::value(&o.bpe_dir), "directory with GPT-2's encoder.json and vocab.bpe")
      ("format", po::value(&o.format)->default_value(o.format),
       "text (prompt and continuation) | jsonl (one line per sample, then a summary line)");
  // clang-format on
  const auto vm = parse_command(
      "generate",
      "Sample text from one model of the forest (--model), a parameter average (--average) or\n"
      "the forest's ensemble (--ensemble), with a key/value cache. Example:\n"
      "  btm generate --run.dir runs/tiny --ensemble --prior religious --prompt 'In the'",
      args, options, &config, world.rank() == 0);
  o.has_prompt = vm.count("prompt") > 0;
  RunContext ctx = make_context(config, world, backends);

  // Every decision on rank 0, shared with the others: the models, their weights, the prompt.
  std::vector<std::string> names;
  std::vector<double> weights;
  ensemble::PosteriorForm form = config.eval.posterior;
  std::unique_ptr<Tokenizer> tokenizer;
  ModelConfig model;
  EnsembleSpec routed;  // --route clusters: its routing fields (world rank 0)
  collective_check(world, [&] {
    const int modes = (vm.count("model") ? 1 : 0) + (o.average ? 1 : 0) + (o.ensemble ? 1 : 0);
    if (modes != 1)
      throw InputError("btm generate: give one of --model NAME, --average or --ensemble");
    if (vm.count("model") &&
        (!o.parents.empty() || !o.weights.empty() || o.prior != "uniform" || o.experts != 0))
      throw InputError(
          "--parents, --weights, --prior and --experts choose the ELMs of --average or "
          "--ensemble: leave them out with --model");
    if (o.format != "text" && o.format != "jsonl")
      throw InputError("--format " + o.format + ": use text or jsonl");
    sampling::check(r.sampling);
    if (!ctx.leader()) return;
    const Forest forest = load_forest(ctx.run_dir);
    if (!fs::exists(forest_file(ctx.run_dir)))
      throw InputError("no forest at " + ctx.run_dir.string() +
                       " (set run.dir to a run directory)");
    // config holds the forest's recorded settings under the flags (parse_command).
    tokenizer = make_tokenizer(run_tokenizer(config, o.tokenizer), o.bpe_dir);
    if (vm.count("model")) {
      names = {o.model};
      weights = {1.0};
      model = peek_checkpoint(model_file(ctx.run_dir, forest, o.model)).model;
    } else {
      if (o.prior != "uniform" && !o.weights.empty())
        throw InputError("--average: give --weights or --prior DOMAIN, not both");
      if (o.prior != "uniform") {
        if (!o.parents.empty())
          throw InputError("--prior " + o.prior +
                           " weighs the ELMs eval.h5 has: leave --parents out");
        weights = cached_prior_of(ctx.run_dir, o.prior, names, form);
      } else {
        names = parents_or_trained_elms(o.parents, forest, ctx.run_dir, "to generate from");
        weights = o.weights.empty() ? ensemble::uniform(names.size())
                                    : parse_parent_weights(o.weights, names.size());
      }
      if (o.route == "clusters") {
        // c-BTM: each expert's cluster, the clustering of the forest (world rank 0 routes).
        if (!o.ensemble || o.prior != "uniform" || !o.weights.empty())
          throw InputError(
              "--route clusters weighs the experts of --ensemble by the text: leave "
              "--prior and --weights out");
        const fs::path file = !config.data.clusters.empty() ? fs::path(config.data.clusters)
                                                            : fs::path(forest.clusters);
        if (file.empty())
          throw InputError("--route clusters: the forest at " + ctx.run_dir.string() +
                           " has no clusters (data.clusters): its domains are labels");
        auto clusters = std::make_shared<ClusterModel>(read_clusters(file));
        for (const std::string& n : names) {
          const ModelRecord* m = forest.find(n);
          const std::optional<std::size_t> c =
              m && m->domains.size() == 1 ? cluster_of(m->domains[0]) : std::nullopt;
          if (!c) throw InputError("--route clusters: ELM '" + n + "' trains on no one cluster");
          routed.expert_clusters.push_back(*c);
        }
        if (o.experts < 0 || o.experts > static_cast<int>(names.size()))
          throw InputError("--experts " + std::to_string(o.experts) + ": 0 to " +
                           std::to_string(names.size()) + " with --route clusters");
        routed.route_topk = static_cast<std::size_t>(o.experts);
        routed.temperature = config.eval.cluster_temperature > 0 ? config.eval.cluster_temperature
                                                                 : clusters->temperature;
        routed.clusters = std::move(clusters);
      } else if (o.route != "posterior") {
        throw InputError("--route " + o.route + ": use posterior or clusters");
      } else {
        keep_top_experts(names, weights, o.experts);
      }
      for (const std::string& n : names) model_file(ctx.run_dir, forest, n);
      model = peek_checkpoint(checkpoint_file(ctx.run_dir, names[0])).model;
    }
    if (tokenizer->vocab_size() > model.vocab_size)
      throw InputError("the tokenizer " + tokenizer->name() + " has " +
                       std::to_string(tokenizer->vocab_size()) + " ids, the model " +
                       std::to_string(model.vocab_size) + ": give the run's --tokenizer");
    std::string text = o.prompt;
    if (!o.has_prompt) {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      if (!text.empty() && text.back() == '\n') text.pop_back();
    }
    std::vector<std::uint16_t> ids;
    tokenizer->encode(text, ids);
    r.prompt.assign(ids.begin(), ids.end());
    r.stop_token = o.ignore_eot ? -1 : tokenizer->eot_token();
    check_request(r, model);
  });

  if (!o.ensemble) {
    // One model or an average: world rank 0 generates alone.
    collective_check(world, [&] {
      if (!ctx.leader()) return;
      std::vector<float> params;
      if (o.average) {
        std::vector<fs::path> files;
        for (const std::string& n : names) files.push_back(checkpoint_file(ctx.run_dir, n));
        params = average_checkpoints(files, weights, model, false).params;
      } else {
        params = load_checkpoint(checkpoint_file(ctx.run_dir, names[0]), &model, false).params;
      }
      EngineOptions eo;
      eo.threads = ctx.threads;
      eo.gpu = ctx.gpu;
      eo.max_batch = r.samples;
      std::unique_ptr<Engine> engine = ctx.backend->make_engine(model, eo);
      engine->set_params(params);
      const Generated g = generate_from_model(*engine, r);
      print(o, r, g, *tokenizer, engine->kind() + ", " + engine->decode_mode());
    });
    return kExitOk;
  }

  // The ensemble: every rank takes part (the groups' leaders run the experts).
  std::vector<std::int32_t> shared(r.prompt);
  world.broadcast_vector(shared, 0);
  r.prompt = shared;
  world.broadcast(&r.stop_token, sizeof(r.stop_token), 0);
  world.broadcast(&model, sizeof(ModelConfig), 0);
  world.broadcast(&form, sizeof(form), 0);
  std::uint64_t count = names.size();
  world.broadcast(&count, sizeof(count), 0);
  names.resize(count);
  for (std::string& n : names) world.broadcast_string(n, 0);
  world.broadcast_vector(weights, 0);
  ctx.config.model = model;
  EvalGroups groups = make_eval_groups(ctx);
  EnsembleSpec spec = routed;
  for (const std::string& n : names) spec.experts.push_back(checkpoint_file(ctx.run_dir, n));
  spec.prior = weights;
  spec.form = form;
  const Generated g = generate_from_ensemble(ctx, groups, spec, r);
  if (ctx.leader())
    print(o, r, g, *tokenizer,
          std::string(word_of(ctx.backend->device())) + ", ensemble of " +
              std::to_string(names.size()) + " on " + counted(groups.groups, "group") +
              (spec.clusters ? ", routed by the clusters" : ""));
  return kExitOk;
}

}  // namespace btm
