// `btm bench`: throughput of the engine this build and machine run, one JSON line per case.
// The world is cut into groups of run.ranks_per_elm ranks exactly as for training; every group
// trains its own replica on random tokens (data parallel inside the group, nothing between
// groups), all groups at once, so the aggregate line measures how groups scale.
//   train      per group: step ms, tokens/s, MFU, memory
//   aggregate  all groups: the sum of their tokens/s (timed over the same interval)
//   eval       per-token log-probabilities (the evaluation's forward), tokens/s per rank
//   allreduce  per group of >1 rank: one all-reduce of a step's gradient sums (int64 per
//              parameter, as training sends them), algbw and busbw
//   average    the collective phase's heaviest step: one parameter average of --elms ELMs
//              held by the group leaders, formed as `btm eval` forms it (not in the default
//              cases)
//   kernels    every case of the kernel-case table (cuda/kernel_cases.hpp, the one the GPU
//              tests check), or those whose name holds --kernels, timed on rank 0's GPU: ms,
//              GB/s from the case's bytes, TFLOP/s from its FLOPs (not in the default cases;
//              CUDA builds only)
// MFU = tokens/s x (6N + 12 L d T) / (ranks x peak), N the parameters in matmuls, the
// convention of llm.c and nanoGPT; busbw = algbw x 2(r-1)/r, the nccl-tests convention.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/model/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/run_context.hpp"
#include "btm/util/error.hpp"
#include "btm/util/json_line.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct BenchOptions {
  int steps = 20;
  int warmup = 3;
  double peak_tflops = 0;  // 0: the backend's figure (Backend::peak_tflops), none on cpu
  int elms = 8;            // the average case's parents
  std::string attention = "auto";
  std::string kernels;  // the kernel cases whose name holds this ("": all)
  std::vector<std::string> cases;
};

std::unique_ptr<Engine> bench_engine(const RunContext& ctx, const std::string& attention) {
  EngineOptions options;
  options.threads = ctx.threads;
  options.gpu = ctx.gpu;
  options.max_batch = ctx.config.data.batch;
  options.attention = attention;
  return ctx.backend->make_engine(ctx.config.model, options);
}

bool wants(const BenchOptions& o, const std::string& name) {
  return std::find(o.cases.begin(), o.cases.end(), name) != o.cases.end();
}

// Rank 0 prints the lines of every group leader in group order.
void print_from_leaders(MpiComm& world, bool leader, const std::string& line) {
  const std::string mine = leader ? line : std::string();
  std::uint64_t length = mine.size();
  std::vector<std::uint64_t> lengths(static_cast<std::size_t>(world.size()));
  world.allgather(&length, lengths.data(), sizeof(length));
  std::uint64_t longest = *std::max_element(lengths.begin(), lengths.end());
  std::string padded = mine;
  padded.resize(longest, ' ');
  std::string all(longest * static_cast<std::size_t>(world.size()), ' ');
  if (longest > 0) world.allgather(padded.data(), all.data(), longest);
  if (world.rank() == 0)
    for (int r = 0; r < world.size(); ++r)
      if (lengths[static_cast<std::size_t>(r)] > 0)
        std::cout << all.substr(static_cast<std::size_t>(r) * longest,
                                lengths[static_cast<std::size_t>(r)])
                  << "\n";
  if (world.rank() == 0) std::cout << std::flush;
}

// One parameter average of `elms` ELMs (random parameters of the model's size; ELM j held by the
// leader of group j % G, as btm eval deals them) formed as btm eval forms it
// (set_average_params: in the engine, on the device on GPUs), timed over --steps repeats after
// --warmup; rank 0 prints the line.
void bench_average(RunContext& ctx, EvalGroups& g, Engine& engine, const BenchOptions& o) {
  const std::size_t n = engine.layout().total();
  if (g.leader())
    for (int j = g.index; j < o.elms; j += g.groups) {
      std::vector<float> params(n);
      Rng rng(7 + static_cast<std::uint64_t>(j));
      for (float& p : params) p = static_cast<float>(rng.next_u64() % 1000) * 1e-3f - 0.5f;
      engine.hold_parent(static_cast<std::size_t>(j), std::move(params));
    }
  const std::vector<double> weights(static_cast<std::size_t>(o.elms), 1.0 / o.elms);
  for (int i = 0; i < o.warmup; ++i) set_average_params(g, engine, weights, 0);
  ctx.world.barrier();
  const auto start = Clock::now();
  for (int i = 0; i < o.steps; ++i) set_average_params(g, engine, weights, 0);
  ctx.world.barrier();
  const double ms = Ms(Clock::now() - start).count() / o.steps;
  engine.drop_parents();
  if (ctx.world.rank() == 0) {
    const double elm_gb_per_s = static_cast<double>(n) * sizeof(float) * o.elms / (ms * 1e-3) / 1e9;
    std::cout << json_line({{"case", "average"},
                            {"system", "btm-" + engine.kind()},
                            {"params", n},
                            {"elms", o.elms},
                            {"groups", g.groups},
                            {"ranks", ctx.world.size()},
                            {"ranks_per_elm", ctx.config.run.ranks_per_elm},
                            {"steps", o.steps},
                            {"time_ms", rounded(ms, 3)},
                            {"elm_gb_per_s", rounded(elm_gb_per_s, 1)}})
              << std::endl;
  }
}

// --cases kernels: the kernel cases whose name holds --kernels, timed by the CUDA backend on
// rank 0's GPU (Backend::bench_kernel_cases), one JSON line each; the other ranks wait.
void bench_kernels(MpiComm& world, const Backends& backends, const BenchOptions& o) {
  const Backend* cuda = backends.find(Device::cuda);
  if (cuda == nullptr)
    throw InputError(
        "bench --cases kernels times the CUDA kernels: it needs a CUDA build of btm (cmake "
        "-DBTM_CUDA=ON, with the CUDA toolkit and NCCL) and a GPU; this build has no CUDA");
  const int gpus = world.rank() == 0 ? cuda->device_count() : 1;
  if (world.allreduce_max(gpus == 0 ? 1 : 0) != 0)
    throw InputError(
        "bench --cases kernels times the CUDA kernels: it needs a GPU, and rank 0 sees none "
        "(check CUDA_VISIBLE_DEVICES)");
  collective_check(world, [&] {
    if (world.rank() == 0) cuda->bench_kernel_cases(o.kernels, o.warmup, o.steps, std::cout);
  });
}

}  // namespace

int cmd_bench(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  BenchOptions o;
  std::string cases_text = "train,eval,allreduce";
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("steps", po::value(&o.steps)->default_value(o.steps), "timed training steps")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps first")
      ("peak-tflops", po::value(&o.peak_tflops)->default_value(0),
       "peak of one device for MFU (default: the GPU's bf16 dense figure, 989 on H100/H200, 312 on A100; no MFU on cpu)")
      ("attention", po::value(&o.attention)->default_value(o.attention), "cuda: auto | flash | flash-mma.sync (the pre-Hopper flash kernels, also on Hopper) | materialized")
      ("cases", po::value(&cases_text)->default_value(cases_text), "train, eval, allreduce, average, kernels (comma separated)")
      ("elms", po::value(&o.elms)->default_value(o.elms), "average: the number of parent ELMs")
      ("kernels", po::value(&o.kernels)->default_value(o.kernels), "kernels: only the kernel cases whose name holds this (default: all)");
  // clang-format on
  parse_command(
      "bench",
      "Throughput of training steps on random tokens: one JSON line per group and case. The\n"
      "model comes from [model], the batch per rank from data.batch, groups from\n"
      "run.ranks_per_elm, the device from run.device. No corpus or run directory is used.\n"
      "--cases kernels times every CUDA kernel case (the GPU tests' table) on rank 0's GPU.",
      args, options, &config, world.rank() == 0);
  if (o.steps < 1 || o.warmup < 0 || o.elms < 1)
    throw InputError("bench: --steps and --elms must be >= 1 and --warmup >= 0");
  if (o.attention != "auto" && o.attention != "flash" && o.attention != "flash-mma.sync" &&
      o.attention != "materialized")
    throw InputError("--attention is '" + o.attention +
                     "': use auto, flash, flash-mma.sync or materialized");
  o.cases = split_list(cases_text);
  for (const std::string& c : o.cases)
    if (c != "train" && c != "eval" && c != "allreduce" && c != "average" && c != "kernels")
      throw InputError("--cases: unknown case '" + c +
                       "' (use train, eval, allreduce, average, kernels)");
  if (wants(o, "kernels")) {
    bench_kernels(world, backends, o);
    if (!wants(o, "train") && !wants(o, "eval") && !wants(o, "allreduce") && !wants(o, "average"))
      return kExitOk;
  }

  RunContext ctx = make_context(config, world, backends);
  const int r = config.run.ranks_per_elm;
  EvalGroups eval_groups = make_eval_groups(ctx);  // the groups, exactly as training cuts them
  const int groups = eval_groups.groups;
  const int group_index = eval_groups.index;
  MpiComm* group = eval_groups.group.get();
  const bool leader = eval_groups.leader();
  std::unique_ptr<Engine> engine = bench_engine(ctx, o.attention);  // on its device from here
  const double peak = o.peak_tflops > 0 ? o.peak_tflops : ctx.backend->peak_tflops();
  if (wants(o, "average")) bench_average(ctx, eval_groups, *engine, o);
  if (!wants(o, "train") && !wants(o, "eval") && !wants(o, "allreduce")) return kExitOk;

  const ParamLayout& layout = engine->layout();
  std::vector<float> params(layout.total());
  init_gpt2(layout, params, 1234);
  engine->set_params(params);
  std::unique_ptr<Communicator> nccl;
  Communicator* grads = gradient_comm(ctx, *group, nccl);

  const ModelConfig& m = config.model;
  const int B = config.data.batch, T = m.context;
  const std::size_t tokens = static_cast<std::size_t>(B) * T;
  std::vector<std::int32_t> inputs(tokens), targets(tokens);
  Rng rng(42 + static_cast<std::uint64_t>(world.rank()));
  for (std::size_t i = 0; i < tokens; ++i) {
    inputs[i] =
        static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(m.vocab_size));
    targets[i] =
        static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(m.vocab_size));
  }
  const Batch batch{inputs.data(), targets.data(), B, T};
  // The fields every train and eval line starts with, after its "case".
  const auto line_of_case = [&](const std::string& name) {
    nlohmann::ordered_json line = {{"case", name},
                                   {"system", "btm-" + engine->kind()},
                                   {"params", layout.total()},
                                   {"layers", m.n_layer},
                                   {"dim", m.d_model},
                                   {"heads", m.n_head},
                                   {"seq", T},
                                   {"vocab", m.vocab_size},
                                   {"batch_per_rank", B}};
    const Engine::Facts facts = engine->facts();
    if (!facts.attention.empty()) line["attention"] = facts.attention;
    if (!facts.flash_kernels.empty()) line["flash_kernels"] = facts.flash_kernels;
    return line;
  };
  if (world.rank() == 0)
    std::cout << "# bench: " << groups << " group" << (groups == 1 ? "" : "s") << " of " << r
              << " rank" << (r == 1 ? "" : "s") << " on " << word_of(ctx.backend->device())
              << "; MFU = tokens/s x (6N + 12 L d T) / (ranks x "
              << (peak > 0 ? std::to_string(static_cast<int>(peak)) + " TFLOP/s"
                           : std::string("peak: none given"))
              << "); busbw = algbw x 2(r-1)/r" << std::endl;

  if (wants(o, "train")) {
    AdamWStep update;
    update.lr = 3e-4f;
    float first_loss = 0, loss = 0;
    auto step = [&](std::int64_t t) {
      engine->begin_step(r);  // one micro-batch per rank of the group
      loss = engine->forward_backward(batch, grads);
      if (t == 1) first_loss = loss;
      update.t = t;
      engine->optimizer_step(update);  // returns the norm: synchronises the device
    };
    for (int i = 0; i < o.warmup; ++i) step(i + 1);
    world.barrier();  // every group starts the timed steps together
    std::vector<double> step_ms;
    const auto start = Clock::now();
    auto last = start;
    for (int i = 0; i < o.steps; ++i) {
      step(o.warmup + i + 1);
      const auto now = Clock::now();
      step_ms.push_back(Ms(now - last).count());
      last = now;
    }
    // A group's time is its slowest rank's.
    double total_ms = Ms(last - start).count();
    {
      std::vector<double> all(static_cast<std::size_t>(group->size()));
      group->allgather(&total_ms, all.data(), sizeof(double));
      total_ms = *std::max_element(all.begin(), all.end());
    }
    std::sort(step_ms.begin(), step_ms.end());
    const double mean_ms = total_ms / o.steps;
    const double group_tokens_per_s = static_cast<double>(tokens) * r / (mean_ms * 1e-3);
    const double flops_per_token = train_flops_per_token(layout);
    const double mem = static_cast<double>(ctx.backend->memory_used()) / kGiB;
    nlohmann::ordered_json line = line_of_case("train");
    line["group"] = group_index;
    line["ranks"] = r;
    line["global_batch"] = B * r;
    line["steps"] = o.steps;
    line["step_ms"] = rounded(mean_ms, 2);
    line["step_ms_median"] = rounded(step_ms[step_ms.size() / 2], 2);
    line["tokens_per_s"] = std::llround(group_tokens_per_s);
    line["flops_per_token"] = std::llround(flops_per_token);
    if (peak > 0)
      line["mfu"] =
          rounded(model_flops_utilization(group_tokens_per_s, flops_per_token, r, peak), 4);
    line["loss_first"] = rounded(first_loss, 4);
    line["loss"] = rounded(loss, 4);
    line["mem_gib"] = rounded(mem, 2);
    print_from_leaders(world, leader, json_line(line));
    // Aggregate over groups (leaders' figures; other ranks add zero).
    const double total = world.allreduce_sum(leader ? group_tokens_per_s : 0.0);
    if (world.rank() == 0) {
      std::cout << json_line({{"case", "aggregate"},
                              {"system", "btm-" + engine->kind()},
                              {"groups", groups},
                              {"ranks_per_group", r},
                              {"ranks", world.size()},
                              {"tokens_per_s", std::llround(total)},
                              {"tokens_per_s_per_group", std::llround(total / groups)}})
                << std::endl;
    }
  }

  if (wants(o, "eval")) {
    std::vector<float> logprobs(tokens);
    engine->token_logprobs(batch, logprobs.data());
    world.barrier();
    const auto start = Clock::now();
    for (int i = 0; i < o.steps; ++i) engine->token_logprobs(batch, logprobs.data());
    const double ms = Ms(Clock::now() - start).count() / o.steps;
    nlohmann::ordered_json line = line_of_case("eval");
    line["group"] = group_index;
    line["rank"] = world.rank();
    line["batch_ms"] = rounded(ms, 2);
    line["tokens_per_s"] = std::llround(static_cast<double>(tokens) / (ms * 1e-3));
    print_from_leaders(world, leader, json_line(line));
  }

  if (wants(o, "allreduce") && r > 1) {
    Communicator& comm = grads ? *grads : *group;
    const std::size_t count = layout.total();
    const double ms = ctx.backend->time_allreduce_ms(comm, count, o.steps, o.warmup);
    // The gradient's exact sums (fixed_point.hpp): one int64 per parameter.
    const double bytes = static_cast<double>(count) * sizeof(std::int64_t);
    const double algbw = bytes / (ms * 1e-3) / 1e9;
    const double busbw = algbw * 2.0 * (r - 1) / r;
    const nlohmann::ordered_json line = {
        {"case", "allreduce"},
        {"system", "btm-" + engine->kind()},
        {"comm", comm.space() == MemorySpace::Device ? "nccl" : "mpi"},
        {"group", group_index},
        {"ranks", r},
        {"bytes", static_cast<std::size_t>(bytes)},
        {"time_ms", rounded(ms, 3)},
        {"algbw_gbs", rounded(algbw, 3)},
        {"busbw_gbs", rounded(busbw, 3)}};
    print_from_leaders(world, leader, json_line(line));
  }
  return kExitOk;
}

}  // namespace btm
