#include "btm/eval/generate.hpp"
#include "btm/util/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <span>
#include <string>

#include "btm/io/checkpoint.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// Logits rows of one decode call hold at most this many floats (a long prompt of many samples
// goes through the engine in chunks of positions).
constexpr std::size_t kPrefillFloats = std::size_t{1} << 26;

// log softmax over the V real ids of a logits row, rounded to float: the form the evaluation's
// log-probabilities have, and the one both sources sample from (so an ensemble of one expert
// draws exactly that model's tokens).
void logprob_row(const float* logits, int V, float* out) {
  double top = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < V; ++v) top = std::max(top, static_cast<double>(logits[v]));
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - top);
  const double norm = top + std::log(sum);
  for (int v = 0; v < V; ++v) out[v] = static_cast<float>(static_cast<double>(logits[v]) - norm);
}

// The prompt (n tokens per sequence, the same for all) through `engine` in chunks of positions:
// use(position of the chunk's first token, chunk length, logits) per chunk.
template <typename Use>
void prefill(Engine& engine, const std::vector<std::int32_t>& feed, int B, int n, Use&& use) {
  const std::size_t Vp = static_cast<std::size_t>(engine.layout().model().padded_vocab());
  const int chunk = static_cast<int>(
      std::max<std::size_t>(1, kPrefillFloats / (static_cast<std::size_t>(B) * Vp)));
  std::vector<float> logits(static_cast<std::size_t>(B) * std::min(chunk, n) * Vp);
  std::vector<std::int32_t> part;
  for (int first = 0; first < n; first += chunk) {
    const int len = std::min(chunk, n - first);
    part.resize(static_cast<std::size_t>(B) * len);
    for (int b = 0; b < B; ++b)
      std::copy_n(feed.begin() + static_cast<std::ptrdiff_t>(b) * n + first, len,
                  part.begin() + static_cast<std::ptrdiff_t>(b) * len);
    engine.decode(part.data(), len, logits.data());
    use(first, len, logits.data());
  }
}

// The token loop of both sources. next(feed, n, logp) appends feed ([B, n]) to every sequence
// and, where this rank draws, fills logp [B, V] with the next token's log-probabilities. The
// drawing rank samples every sequence and sends the tokens (and whether all are done) over
// `leaders`; the others append what they receive.
template <typename Next>
Generated token_loop(const GenerateRequest& request, int V, bool draws, MpiComm* leaders,
                     Next&& next) {
  const int B = request.samples;
  const int n0 = static_cast<int>(request.prompt.size());
  Generated g;
  g.tokens.assign(static_cast<std::size_t>(B), {});
  std::vector<Rng> rngs;
  for (int b = 0; b < B; ++b) rngs.push_back(sampling::sample_rng(request.seed, b));
  std::vector<char> done(static_cast<std::size_t>(B), 0);
  std::vector<std::int32_t> feed;
  for (int b = 0; b < B; ++b) feed.insert(feed.end(), request.prompt.begin(), request.prompt.end());
  int n = n0;
  std::vector<double> logp(draws ? static_cast<std::size_t>(B) * static_cast<std::size_t>(V) : 0);
  std::vector<std::int32_t> message(static_cast<std::size_t>(B) + 1, 0);  // tokens, all done
  const Clock::time_point t0 = Clock::now();
  Clock::time_point t1 = t0;
  while (true) {
    next(feed, n, logp);
    if (g.steps == 0) {
      g.prefill_seconds = seconds_since(t0);
      t1 = Clock::now();
    }
    if (draws) {
#pragma omp parallel for schedule(static)
      for (int b = 0; b < B; ++b) {
        const std::size_t bs = static_cast<std::size_t>(b);
        std::vector<std::int32_t>& mine = g.tokens[bs];
        if (!done[bs]) {
          const std::span<const double> row(logp.data() + bs * static_cast<std::size_t>(V),
                                            static_cast<std::size_t>(V));
          const int token = sampling::sample(row, request.sampling, rngs[bs]);
          mine.push_back(token);
          done[bs] =
              token == request.stop_token || static_cast<int>(mine.size()) >= request.max_tokens;
        }
        message[bs] = mine.empty() ? request.prompt.back() : mine.back();  // done: fed, ignored
      }
      message[static_cast<std::size_t>(B)] =
          std::all_of(done.begin(), done.end(), [](char d) { return d != 0; }) ? 1 : 0;
    }
    if (leaders != nullptr && leaders->size() > 1)
      leaders->broadcast(message.data(), message.size() * sizeof(std::int32_t), 0);
    ++g.steps;
    if (message[static_cast<std::size_t>(B)] != 0) break;
    feed.assign(message.begin(), message.end() - 1);
    n = 1;
  }
  g.decode_seconds = seconds_since(t1);
  if (!draws) g.tokens.clear();
  return g;
}

}  // namespace

void check_request(const GenerateRequest& request, const ModelConfig& model) {
  sampling::check(request.sampling);
  if (request.prompt.empty())
    throw InputError(
        "the prompt is empty: give text with --prompt or on standard input (at least one "
        "token)");
  for (std::int32_t t : request.prompt)
    if (t < 0 || t >= model.vocab_size)
      throw InputError("prompt token " + std::to_string(t) +
                       " is outside the model's vocabulary [0, " +
                       std::to_string(model.vocab_size) + "): use the run's tokenizer");
  if (request.max_tokens < 1)
    throw InputError("--max-tokens " + std::to_string(request.max_tokens) + ": use at least 1");
  if (request.samples < 1)
    throw InputError("--batch " + std::to_string(request.samples) + ": use at least 1 sample");
  const std::int64_t total = static_cast<std::int64_t>(request.prompt.size()) + request.max_tokens;
  if (total > model.context)
    throw InputError("the prompt's " + std::to_string(request.prompt.size()) + " tokens and " +
                     "--max-tokens " + std::to_string(request.max_tokens) + " make " +
                     std::to_string(total) +
                     " tokens, past model.context = " + std::to_string(model.context) +
                     " (the model has no position past it): lower --max-tokens to " +
                     std::to_string(std::max<std::int64_t>(
                         0, model.context - static_cast<std::int64_t>(request.prompt.size()))) +
                     " or shorten the prompt");
}

Generated generate_from_model(Engine& engine, const GenerateRequest& request) {
  const ModelConfig& model = engine.layout().model();
  check_request(request, model);
  const int B = request.samples, V = model.vocab_size;
  const std::size_t Vp = static_cast<std::size_t>(model.padded_vocab());
  engine.begin_decode(B, static_cast<int>(request.prompt.size()) + request.max_tokens);
  std::vector<float> logits(static_cast<std::size_t>(B) * Vp), rows_f(logits.size());
  auto to_logp = [&](const float* rows, int n, std::vector<double>& logp) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; ++b) {
      float* row = rows_f.data() + static_cast<std::size_t>(b) * Vp;
      logprob_row(rows + (static_cast<std::size_t>(b) * n + static_cast<std::size_t>(n - 1)) * Vp,
                  V, row);
      std::copy(row, row + V, logp.begin() + static_cast<std::ptrdiff_t>(b) * V);
    }
  };
  return token_loop(request, V, true, nullptr,
                    [&](const std::vector<std::int32_t>& feed, int n, std::vector<double>& logp) {
                      if (n == 1) {
                        engine.decode(feed.data(), 1, logits.data());
                        to_logp(logits.data(), 1, logp);
                        return;
                      }
                      prefill(engine, feed, B, n, [&](int first, int len, const float* rows) {
                        if (first + len == n) to_logp(rows, len, logp);
                      });
                    });
}

Generated generate_from_ensemble(RunContext& ctx, EvalGroups& groups, const EnsembleSpec& spec,
                                 const GenerateRequest& request) {
  const ModelConfig& model = ctx.config.model;
  const std::size_t K = spec.experts.size();
  collective_check(ctx.world, [&] {
    check_request(request, model);
    if (K == 0 || spec.prior.size() != K)
      throw InputError("the ensemble has " + std::to_string(K) + " experts and " +
                       std::to_string(spec.prior.size()) + " prior weights");
    ensemble::check_distribution(spec.prior, "the ensemble prior");
    if (!ctx.leader()) return;
    if (spec.clusters && (spec.expert_clusters.size() != K || spec.route_topk > K))
      throw InputError("cluster routing over " + std::to_string(K) + " experts with " +
                       std::to_string(spec.expert_clusters.size()) + " clusters, top " +
                       std::to_string(spec.route_topk));
    if (spec.clusters) PrefixRouter(*spec.clusters, spec.expert_clusters, spec.temperature);
    for (const fs::path& file : spec.experts) {
      const CheckpointInfo c = peek_checkpoint(file);
      if (!(c.model == model))
        throw InputError(file.string() + ": model shape " + describe_model(c.model) +
                         " differs from the forest's " + describe_model(model) +
                         ": an ensemble needs experts of one shape");
    }
  });
  if (!groups.leader()) return {};
  const int B = request.samples, V = model.vocab_size;
  const int P = static_cast<int>(request.prompt.size());
  const std::size_t G = static_cast<std::size_t>(groups.groups);
  const std::size_t me = static_cast<std::size_t>(groups.index);
  const std::size_t slots = (K + G - 1) / G;  // experts per group, at most
  const std::size_t Vs = static_cast<std::size_t>(V), Bs = static_cast<std::size_t>(B);
  const std::size_t Vp = static_cast<std::size_t>(model.padded_vocab());

  // This leader's experts i = me, me + G, ... in engines of their own (each keeps its cache).
  std::vector<std::unique_ptr<Engine>> engines;
  std::vector<std::size_t> mine;
  for (std::size_t i = me; i < K; i += G) mine.push_back(i);
  EngineOptions options;
  options.threads = ctx.threads;
  options.gpu = ctx.gpu;
  options.max_batch = B;
  collective_check(*groups.leaders, [&] {
    for (std::size_t i : mine) {
      engines.push_back(ctx.backend->make_engine(model, options));
      engines.back()->set_params(load_checkpoint(spec.experts[i], &model, false).params);
      engines.back()->begin_decode(B, P + request.max_tokens);
    }
  });

  // What a leader sends per step, per expert slot: the prompt's log-probabilities (P - 1, the
  // first step only) and the next token's distribution of every sample [B, V].
  std::vector<float> send, logits(Bs * Vp);
  // On world rank 0: every expert's distributions of the last step [K][B, V] and, per sample,
  // every expert's log-probabilities of the tokens so far (the posterior's history).
  std::vector<std::vector<float>> dist(ctx.leader() ? K : 0);
  std::vector<std::vector<std::vector<float>>> history(ctx.leader() ? Bs : 0,
                                                       std::vector<std::vector<float>>(K));
  const bool draws = ctx.leader();
  // c-BTM routing: one prefix router per sample, fed every token of its text.
  std::vector<PrefixRouter> routers;
  if (draws && spec.clusters)
    for (std::size_t b = 0; b < Bs; ++b)
      routers.emplace_back(*spec.clusters, spec.expert_clusters, spec.temperature);
  // The mixture of every expert's next-token distribution for sample bs under its posterior
  // (or its routing weights).
  auto mix_sample = [&](std::size_t bs, std::vector<double>& logp) {
    const std::size_t len = history[bs][0].size();
    std::vector<std::span<const float>> h, rows;
    for (std::size_t i = 0; i < K; ++i) {
      h.emplace_back(history[bs][i]);
      rows.emplace_back(dist[i].data() + bs * Vs, Vs);
    }
    std::vector<double> log_post(K);
    if (!routers.empty()) {
      std::vector<double> w(K);
      routers[bs].weights(w);
      if (spec.route_topk > 0) w = ensemble::top_k(w, spec.route_topk);
      for (std::size_t i = 0; i < K; ++i)
        log_post[i] = w[i] > 0 ? std::log(w[i]) : -std::numeric_limits<double>::infinity();
    } else {
      const ensemble::LogProbView view(h, std::max<std::size_t>(1, len));
      log_post = ensemble::next_log_posterior(view, spec.prior, spec.form);
    }
    const std::vector<double> mixed = ensemble::mixture_next_token(log_post, rows);
    std::copy(mixed.begin(), mixed.end(), logp.begin() + static_cast<std::ptrdiff_t>(bs * Vs));
  };
  bool started = false;  // the first call is the prompt's
  auto next = [&](const std::vector<std::int32_t>& feed, int n, std::vector<double>& logp) {
    const bool prompt_call = !started;
    started = true;
    // The routers take the prompt (feed: B copies of it), then each sample's new token.
    for (std::size_t b = 0; b < routers.size(); ++b)
      for (int p = 0; p < (prompt_call ? n : 1); ++p)
        routers[b].add(static_cast<std::uint16_t>(
            feed[prompt_call ? b * static_cast<std::size_t>(n) + static_cast<std::size_t>(p) : b]));
    const std::size_t prompt_part = prompt_call ? static_cast<std::size_t>(P - 1) : 0;
    const std::size_t per_slot = prompt_part + Bs * Vs;
    send.assign(slots * per_slot, 0.0f);
    for (std::size_t s = 0; s < engines.size(); ++s) {
      float* out = send.data() + s * per_slot;
      float* dist_out = out + prompt_part;
      if (!prompt_call) {
        engines[s]->decode(feed.data(), 1, logits.data());
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; ++b)
          logprob_row(logits.data() + static_cast<std::size_t>(b) * Vp, V,
                      dist_out + static_cast<std::size_t>(b) * Vs);
        continue;
      }
      std::vector<float> row(Vs);
      prefill(*engines[s], feed, B, n, [&](int first_pos, int len, const float* rows) {
        for (int i = 0; i < len; ++i) {
          const int p = first_pos + i;
          if (p + 1 < n) {  // sample 0's row: every sample has the same prompt
            logprob_row(rows + static_cast<std::size_t>(i) * Vp, V, row.data());
            out[p] = row[static_cast<std::size_t>(feed[static_cast<std::size_t>(p + 1)])];
          }
        }
        if (first_pos + len == n)
          for (std::size_t b = 0; b < Bs; ++b)
            logprob_row(
                rows + (b * static_cast<std::size_t>(len) + static_cast<std::size_t>(len - 1)) * Vp,
                V, dist_out + b * Vs);
      });
    }
    // The history grows by the token each sample was just fed, under every expert's last
    // distribution (world rank 0 keeps it).
    if (draws && !prompt_call)
      for (std::size_t b = 0; b < Bs; ++b)
        for (std::size_t i = 0; i < K; ++i)
          history[b][i].push_back(dist[i][b * Vs + static_cast<std::size_t>(feed[b])]);
    std::vector<char> bytes(send.size() * sizeof(float));
    std::memcpy(bytes.data(), send.data(), bytes.size());
    const std::vector<std::vector<char>> all = groups.leaders->gather_to_root(bytes);
    if (!draws) return;
    for (std::size_t i = 0; i < K; ++i) {
      const float* from = reinterpret_cast<const float*>(all[i % G].data()) + (i / G) * per_slot;
      if (prompt_part > 0)
        for (std::size_t b = 0; b < Bs; ++b) history[b][i].assign(from, from + prompt_part);
      dist[i].assign(from + prompt_part, from + per_slot);
    }
    // An exception must not leave the OpenMP region (a non-finite log-probability of a
    // diverged expert is an InputError): the first one is thrown after it.
    std::exception_ptr failed;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; ++b) {
      try {
        mix_sample(static_cast<std::size_t>(b), logp);
      } catch (...) {
#pragma omp critical
        if (!failed) failed = std::current_exception();
      }
    }
    if (failed && groups.leaders->size() > 1) {
      // The other leaders wait in the next step's collectives: not a clean exit 2 but the
      // job's end (main aborts on a SystemError).
      try {
        std::rethrow_exception(failed);
      } catch (const std::exception& e) {
        throw SystemError(std::string(e.what()) + " (generation stops on every rank)");
      }
    }
    if (failed) std::rethrow_exception(failed);
  };
  return token_loop(request, V, draws, groups.leaders.get(), next);
}

}  // namespace btm
