// generate.hpp: text generation (btm generate) from one model or from the forest's ensemble,
// token by token over the engines' key/value caches (Engine::begin_decode / decode).
//   - One model (an ELM, the seed, the dense model, an average): its next-token distribution.
//   - The ensemble (method/ensemble.hpp, the paper's domain posterior): per token, the mixture of
//   the experts'
//     next-token distributions weighted by the domain posterior over the text so far (the
//     prompt and what was generated), from a prior (a domain's cached prior, or uniform;
//     method/ensemble's posterior and mixture, the evaluation's arithmetic), or by c-BTM's
//     routing (method/cluster: the text's distance to the clusters' centres). As in the
//     evaluation, expert i runs on group i % G (eval/groups), on the group's rank 0; only the
//     next-token log-probabilities travel (to world rank 0), never weights, and world rank 0
//     draws every token and sends it to the groups. Other ranks of a group wait.
// Every sample has its own seeded random stream (sampling::sample_rng), so a seed gives the
// same text on any rank count.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "btm/eval/groups.hpp"
#include "btm/method/cluster.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/sampling.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// B samples continuing one prompt.
struct GenerateRequest {
  std::vector<std::int32_t> prompt;  // at least one token
  int max_tokens = 64;               // new tokens per sample, at most
  int samples = 1;                   // B
  std::uint64_t seed = 1;
  sampling::Options sampling;
  int stop_token = -1;  // a sample ends after drawing this token (-1: none)
};

struct Generated {
  std::vector<std::vector<std::int32_t>> tokens;  // [B] the new tokens (a stop token included)
  std::int64_t steps = 0;                         // tokens drawn per sample, the longest
  double prefill_seconds = 0;                     // the prompt through the model(s)
  double decode_seconds = 0;                      // every later token
};

// InputError (naming the option) for an empty prompt, max_tokens < 1, prompt + max_tokens past
// model.context (there is no position embedding past it: shorten one of them), samples < 1,
// a token outside the vocabulary, or bad sampling options.
void check_request(const GenerateRequest& request, const ModelConfig& model);

// From the model whose parameters `engine` holds (made for request.samples sequences).
Generated generate_from_model(Engine& engine, const GenerateRequest& request);

// The ensemble's experts: checkpoints and their prior (every entry > 0, summing to 1).
struct EnsembleSpec {
  std::vector<std::filesystem::path> experts;
  std::vector<double> prior;
  ensemble::PosteriorForm form = ensemble::PosteriorForm::prefix;
  // c-BTM routing instead of the posterior (btm generate --route clusters): per token, expert i
  // weighted by softmax(-||h(text so far) - c||^2 / temperature) over the centres
  // expert_clusters, its top route_topk kept (0: all); the prior is then not used. Needed on
  // world rank 0 only (it draws).
  std::shared_ptr<const ClusterModel> clusters;
  std::vector<std::size_t> expert_clusters;
  double temperature = 0.1;
  std::size_t route_topk = 0;
};

// Collective over the world: the groups' leaders load their experts (expert i: group i % G)
// into engines of ctx.backend and generate together. The result on world rank 0 (elsewhere
// empty). InputError, on every rank, for an expert of another shape than ctx.config.model.
Generated generate_from_ensemble(RunContext& ctx, EvalGroups& groups, const EnsembleSpec& spec,
                                 const GenerateRequest& request);

}  // namespace btm
