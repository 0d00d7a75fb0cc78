#include "btm/pipeline/trainer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "btm/data/corpus.hpp"
#include "btm/data/sampler.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/checkpoint_writer.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/metrics.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/schedule.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/progress.hpp"
#include "btm/pipeline/validation.hpp"
#include "btm/util/clock.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"
#include "btm/util/host_memory.hpp"

namespace btm {

namespace {

// The state copied to host memory and written while training goes on (CheckpointWriter).
// With `keep_params`, the writer moves the parameters there once they are written.
void save_state(const Engine& engine, const CheckpointInfo& head, const std::filesystem::path& file,
                CheckpointWriter& writer, std::vector<float>* keep_params = nullptr) {
  Checkpoint c = writer.buffer();
  static_cast<CheckpointInfo&>(c) = head;
  c.state_from.clear();
  const std::size_t n = engine.layout().total();
  c.params.resize(n);
  c.adam_m.resize(n);
  c.adam_v.resize(n);
  engine.get_state(c.params, c.adam_m, c.adam_v);
  writer.write(file, std::move(c), keep_params);
}

// Where the model's final parameters go for the evaluation that follows (RunContext::
// trained_params; not the seed, which it does not score), or nullptr: none is to follow, or
// the models kept would take more than a quarter of the memory left.
std::vector<float>* trained_params_slot(RunContext& ctx, const std::string& name,
                                        const std::filesystem::path& file, std::size_t n) {
  if (!ctx.keep_trained_params || name == "seed") return nullptr;
  std::size_t held = n;
  for (const auto& [_, p] : ctx.trained_params) held += p.size();
  if (static_cast<double>(held) * sizeof(float) > available_host_bytes() / 4) return nullptr;
  return &ctx.trained_params[file];
}

}  // namespace

void check_trainable(const CheckpointInfo& c, const std::filesystem::path& file, int ranks,
                     int data_batch) {
  if (c.finished()) return;
  if (c.batch.micro_batch == 0)
    throw InputError(file.string() +
                     ": this checkpoint does not record its global batch (checkpoint format 1, "
                     "from an older btm): it can be evaluated and branched from, not trained "
                     "further; train the model again");
  if (c.batch.micro_batch != data_batch)
    throw InputError(file.string() + ": '" + c.name + "' trains with micro-batches of " +
                     std::to_string(c.batch.micro_batch) +
                     " sequences (data.batch when it started), this run has data.batch = " +
                     std::to_string(data_batch) + ": set --data.batch " +
                     std::to_string(c.batch.micro_batch) + " to continue it bit-exactly");
  accumulation(c.batch, ranks, c.name);
}

void check_vocabulary(const CheckpointInfo& c, const std::filesystem::path& file,
                      const CorpusInfo& corpus, const std::filesystem::path& corpus_file) {
  const std::string theirs = corpus_file.string() + " is tokenized with " + corpus.tokenizer +
                             " (" + std::to_string(corpus.vocab_size) + " ids" +
                             (corpus.vocab_hash.empty() ? "" : ", " + corpus.vocab_hash) + ")";
  const std::string fix =
      ": prepare the corpus with the model's tokenizer (btm prepare --tokenizer), or train a "
      "model of the corpus's vocabulary (model.vocab_size, run.seed_checkpoint)";
  if (c.model.vocab_size != corpus.vocab_size)
    throw InputError(file.string() + ": '" + c.name + "' has model.vocab_size " +
                     std::to_string(c.model.vocab_size) + ", but " + theirs + fix);
  if (!c.tokenizer.empty() && c.tokenizer != corpus.tokenizer)
    throw InputError(file.string() + ": '" + c.name + "' was trained on text tokenized with " +
                     c.tokenizer + ", but " + theirs + fix);
  if (!c.vocab_hash.empty() && !corpus.vocab_hash.empty() && c.vocab_hash != corpus.vocab_hash)
    throw InputError(file.string() + ": '" + c.name + "' was trained with the " + c.tokenizer +
                     " vocabulary " + c.vocab_hash + ", but " + theirs +
                     ": the two vocabularies differ (another encoder.json or vocab.bpe)" + fix);
}

TrainResult train_model(RunContext& ctx, MpiComm& group, Engine& engine, Communicator* grads,
                        const std::string& name, const std::vector<std::string>& later_elms) {
  const Config& config = ctx.config;
  const bool leader = group.rank() == 0;
  const auto file = checkpoint_file(ctx.run_dir, name);
  const auto entered = Clock::now();
  const double training_before = ctx.training_s;
  // The end's line: where the time went. Checkpoints: waiting for the previous checkpoint's
  // write (it overlaps training unless writing takes longer), the metrics file, the state copy.
  double validation_s = 0, write_wait_s = 0, metrics_s = 0, copy_s = 0;
  // A new seed the engine was given from memory starts there (its file may be in flight), and a
  // branch referring to the state the engine keeps starts from that copy: no file read.
  const bool in_engine = !ctx.engine_state_of.empty() && ctx.engine_state_of == file;
  const CheckpointInfo head =
      in_engine ? ctx.engine_state_info : peek_checkpoint_in_group(group, file);
  ctx.engine_state_of.clear();
  const bool from_kept = !in_engine && !head.state_from.empty() && !ctx.kept_state_of.empty() &&
                         file.parent_path() / head.state_from == ctx.kept_state_of &&
                         head.state_from_step == ctx.kept_state_step && head.model == config.model;
  Checkpoint state;
  if (in_engine || from_kept)
    static_cast<CheckpointInfo&>(state) = head;
  else
    state = load_checkpoint_in_group(group, file, &config.model);
  collective_check(group, [&] { check_trainable(state, file, group.size(), config.data.batch); });
  if (from_kept)
    engine.restore_state();
  else if (!in_engine)
    engine.set_state(state.params, state.adam_m, state.adam_v);
  // From here the engine holds the state; checkpoints copy it from there.
  state.params = {};
  state.adam_m = {};
  state.adam_v = {};

  std::vector<DomainCorpus> corpora;
  std::vector<const TokenArray*> sources;
  collective_check(group, [&] {
    for (const std::string& domain : state.domains)
      corpora.push_back(load_corpus(domain_corpus(ctx, domain), config.model.vocab_size));
  });
  for (const DomainCorpus& c : corpora) sources.push_back(&c.split(Split::Train));
  collective_check(group, [&] {
    for (std::size_t d = 0; d < corpora.size(); ++d)
      check_vocabulary(state, file, corpora[d].info, domain_corpus(ctx, state.domains[d]));
  });
  // Its checkpoints from here record the vocabulary it trains on.
  if (!corpora.empty()) {
    state.tokenizer = corpora[0].info.tokenizer;
    if (!corpora[0].info.vocab_hash.empty()) state.vocab_hash = corpora[0].info.vocab_hash;
  }
  std::unique_ptr<BatchSampler> sampler;
  collective_check(group, [&] {
    sampler = std::make_unique<BatchSampler>(sources, state.domains, config.model.context,
                                             state.sampler_seed);
  });

  // The model's own global batch, fixed when its phase started: M micro-batches of B
  // sequences, micro-batch m = a * ranks + rank drawn as samples [pos + m B, pos + (m + 1) B).
  const int B = state.batch.micro_batch, T = config.model.context;
  const std::int64_t M = state.batch.micro_batches;
  const int ranks = group.size();
  const int A = state.finished() ? 1 : accumulation(state.batch, ranks, name);
  const std::uint64_t samples_per_micro = static_cast<std::uint64_t>(ranks) * B;
  const std::uint64_t tokens_per_step = static_cast<std::uint64_t>(M) * B * T;
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(B) * T), targets(inputs.size());

  // Validation (budget.hpp says after which steps) on the valid splits of its own corpora.
  const Budget budget = budget_of(ctx);
  Validation validation;
  collective_check(
      group, [&] { validation = plan_validation(state.domains, corpora, T, budget.eval_blocks); });

  MetricsLog metrics(metrics_file(ctx.run_dir, name), name, state.config_ini);
  metrics.set_validation_domains(validation.domains, validation.tokens());
  if (leader) metrics.resume(state.step);
  const double elapsed_before = metrics.rows().empty() ? 0.0 : metrics.rows().back().elapsed_s;

  if (leader && !state.finished()) {
    const bool continues_seed =
        state.step > 0 && state.domains.size() == 1 && state.sampler_position == 0;
    std::cout << "[" << name << "] "
              << (state.step > 0 && !continues_seed ? "continuing at" : "starting at") << " step "
              << state.step << " of " << state.target_steps;
    if (continues_seed)
      std::cout << ": it continues the seed's schedule (steps 1-" << state.step
                << " are the seed's share; this ELM trains the last "
                << state.target_steps - state.step << ")";
    std::cout << " on " << counted(ranks, "rank") << " (" << engine.kind() << "): " << M
              << " micro-batch" << (M == 1 ? "" : "es") << " of " << B << " sequences per step ("
              << A << " per rank), " << tokens_per_step << " tokens per step" << std::endl;
    if (!validation.empty()) {
      std::cout << "[" << name << "] validation every " << counted(budget.eval_every, "step")
                << " and at step " << state.target_steps << ": the first "
                << counted(budget.eval_blocks, "block") << " of the valid split of ";
      for (std::size_t d = 0; d < validation.domains.size(); ++d)
        std::cout << (d ? ", " : "") << validation.domains[d];
      std::cout << std::endl;
    }
  }
  // For the progress lines: the FLOPs of MFU, the device's peak, the work after this model.
  const double flops_per_token = train_flops_per_token(engine.layout());
  const double peak_tflops = ctx.backend ? ctx.backend->peak_tflops() : 0.0;
  const WorkAhead ahead = leader ? work_after(ctx, name, later_elms) : WorkAhead{};

  const OptimConfig& o = config.optim;
  const auto start = Clock::now();
  auto window_start = start;
  std::int64_t window_steps = 0;
  const std::int64_t first_step = state.step;
  auto last_flush = start;

  while (state.step < state.target_steps) {
    const bool step_limit =
        ctx.max_steps_per_run > 0 && state.step - first_step >= ctx.max_steps_per_run;
    if (group.allreduce_max(stop_requested() || step_limit ? 1 : 0)) {
      if (leader) {
        // Metrics first: a kill between the two writes leaves them ahead of the checkpoint,
        // and a resume drops the rows after its step (the other order would lose rows).
        metrics.flush();
        save_state(engine, state, file, *ctx.writer);
        ctx.writer->wait();
        std::cout << "[" << name << "] stop requested: checkpointed at step " << state.step
                  << std::endl;
      }
      group.barrier();
      return TrainResult::Stopped;
    }
    const auto step_start = Clock::now();
    engine.begin_step(M);
    double loss = 0;
    for (int a = 0; a < A; ++a) {
      const std::uint64_t first = state.sampler_position + a * samples_per_micro +
                                  static_cast<std::uint64_t>(group.rank()) * B;
      sampler->fill(first, B, inputs.data(), targets.data());
      loss += engine.forward_backward({inputs.data(), targets.data(), B, T},
                                      a == A - 1 ? grads : nullptr);
    }
    loss /= A;
    const double lr = learning_rate(o, state.step, state.schedule_steps);
    AdamWStep update;
    update.lr = static_cast<float>(lr);
    update.beta1 = static_cast<float>(o.beta1);
    update.beta2 = static_cast<float>(o.beta2);
    update.eps = static_cast<float>(o.eps);
    update.weight_decay = static_cast<float>(o.weight_decay);
    update.grad_clip = static_cast<float>(o.grad_clip);
    update.t = state.step + 1;
    const float norm = engine.optimizer_step(update);
    ctx.training_s += seconds_since(step_start);
    // The norm is the same on every rank of the group (one reduced gradient): all stop together,
    // before the last good checkpoint is overwritten.
    if (!std::isfinite(norm))
      throw SystemError("[" + name + "] the gradient is not finite at step " +
                        std::to_string(state.step + 1) +
                        ": training diverged (lower optim.lr or raise optim.warmup_fraction); the "
                        "last good checkpoint is kept");
    state.step += 1;
    state.sampler_position += samples_per_micro * A;
    state.tokens += tokens_per_step;
    ++window_steps;

    const bool last = state.step == state.target_steps;
    if (state.step % config.run.log_every == 0 || last) {
      const double mean_loss = ranks > 1 ? group.allreduce_sum(loss) / ranks : loss;
      if (!std::isfinite(mean_loss))
        throw SystemError("[" + name + "] loss is " + std::to_string(mean_loss) + " at step " +
                          std::to_string(state.step) +
                          ": training diverged (lower optim.lr); the "
                          "last good checkpoint is kept");
      const auto now = Clock::now();
      const double window_s = seconds_between(window_start, now);
      const double total_s = seconds_between(start, now);
      const double tokens_per_s = window_s > 0 ? window_steps * tokens_per_step / window_s : 0;
      const double s_per_step = total_s / static_cast<double>(state.step - first_step);
      if (leader) {
        ProgressLine p;
        p.name = name;
        p.step = state.step;
        p.target_steps = state.target_steps;
        p.loss = mean_loss;
        p.lr = lr;
        p.grad_norm = norm;
        p.step_ms = window_steps > 0 ? 1e3 * window_s / static_cast<double>(window_steps) : 0;
        p.tokens_per_s = tokens_per_s;
        p.mfu = model_flops_utilization(tokens_per_s, flops_per_token, ranks, peak_tflops);
        p.memory_bytes = ctx.backend ? static_cast<double>(ctx.backend->memory_used()) : 0.0;
        p.tokens = static_cast<std::int64_t>(state.tokens);
        // The ETA counts everything the steps so far took (validations, checkpoints too).
        p.model_eta_s = s_per_step * static_cast<double>(state.target_steps - state.step);
        const double rate_per_rank = static_cast<double>(tokens_per_step) / s_per_step / ranks;
        p.run_eta_s = ahead.empty() ? -1 : p.model_eta_s + ahead.seconds(rate_per_rank);
        p.now = std::time(nullptr);
        metrics.append({state.step, static_cast<std::int64_t>(state.tokens), mean_loss, lr, norm,
                        tokens_per_s, elapsed_before + total_s, p.step_ms, p.mfu,
                        static_cast<std::int64_t>(p.memory_bytes)});
        std::cout << format_progress(p) << std::endl;
      }
      window_start = now;
      window_steps = 0;
    }
    if (!validation.empty() && budget.validates_at(state.step, state.target_steps)) {
      const auto begin = Clock::now();
      const std::vector<double> loss_per_domain = validation_loss(engine, group, validation, B);
      const auto end = Clock::now();
      if (leader) {
        metrics.append_validation(
            {state.step, static_cast<std::int64_t>(state.tokens), loss_per_domain});
        std::cout << format_validation(name, state.step, state.target_steps, validation.domains,
                                       loss_per_domain, static_cast<std::int64_t>(state.tokens),
                                       seconds_between(begin, end))
                  << std::endl;
      }
      window_start += end - begin;  // the window's ms/step and tok/s count training only
      validation_s += seconds_between(begin, end);
    }
    if (state.step % config.run.checkpoint_every == 0 || last) {
      if (leader) {
        // Metrics first: a kill between the two writes leaves them ahead of the checkpoint,
        // and a resume drops the rows after its step (the other order would lose rows).
        const auto begin = Clock::now();
        ctx.writer->wait();
        const auto waited = Clock::now();
        metrics.flush();
        const auto flushed = Clock::now();
        save_state(engine, state, file, *ctx.writer,
                   last ? trained_params_slot(ctx, name, file, engine.layout().total()) : nullptr);
        last_flush = Clock::now();
        write_wait_s += seconds_between(begin, waited);
        metrics_s += seconds_between(waited, flushed);
        copy_s += seconds_between(flushed, last_flush);
      }
    } else if (leader && Clock::now() - last_flush > std::chrono::seconds(60)) {
      metrics.flush();  // keep the metrics file fresh on long checkpoint intervals
      last_flush = Clock::now();
    }
  }
  group.barrier();
  if (leader && state.step > first_step)
    std::printf(
        "[%s] %lld steps in %.1f s: training %.1f s, before the first step %.1f s, validation "
        "%.1f s; checkpoints: waiting for the previous write %.1f s, metrics file %.1f s, state "
        "copy %.1f s\n",
        name.c_str(), static_cast<long long>(state.step - first_step), seconds_since(entered),
        ctx.training_s - training_before, seconds_between(entered, start), validation_s,
        write_wait_s, metrics_s, copy_s);
  std::fflush(stdout);
  return TrainResult::Finished;
}

}  // namespace btm
