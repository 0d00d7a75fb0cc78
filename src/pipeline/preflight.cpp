#include "btm/pipeline/preflight.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "btm/data/corpus.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/h5.hpp"
#include "btm/method/budget.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

std::string gigabytes(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GB", bytes / 1e9);
  return text;
}

void check_corpora_hold_a_block(const RunContext& ctx, const PreflightPlan& plan) {
  const Config& c = ctx.config;
  const std::int64_t need = c.model.context + 1;
  std::vector<std::string> all = c.data.domains;
  all.insert(all.end(), c.data.eval_domains.begin(), c.data.eval_domains.end());
  for (const std::string& d : all) {
    const CorpusInfo info = read_corpus_info(domain_corpus(ctx, d));
    const bool train_domain =
        std::find(c.data.domains.begin(), c.data.domains.end(), d) != c.data.domains.end();
    for (int s = 0; s < 3; ++s) {
      // Training validates on the valid split (run.eval_blocks > 0).
      const bool validates = s == 1 && plan.trains && train_domain && c.run.eval_blocks > 0;
      const bool read =
          (s == 0 && plan.trains && train_domain) || validates || (s > 0 && plan.evaluates);
      if (read && info.tokens[s] < need)
        throw InputError(
            "domain '" + d + "': its " + split_name(static_cast<Split>(s)) + " split has " +
            std::to_string(info.tokens[s]) +
            " tokens, fewer than one block of model.context + 1 = " + std::to_string(need) +
            ": lower model.context, or prepare the domain with more text" +
            (validates && !plan.evaluates ? " (or train without validation: run.eval_blocks 0)"
                                          : ""));
    }
  }
}

void check_writable(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path probe = dir / (".btm-write-probe." + std::to_string(::getpid()));
  std::ofstream out(probe);
  const bool ok = out && (out << "probe").good();
  const int error = errno;
  out.close();
  fs::remove(probe, ec);
  if (!ok)
    throw InputError("cannot write in " + dir.string() + " (" + std::strerror(error) +
                     "): choose another run.dir, or fix its permissions");
}

void check_space(const RunContext& ctx, const PreflightPlan& plan) {
  const double per_checkpoint =
      12.0 * static_cast<double>(ParamLayout(ctx.config.model).total());  // params, m, v
  std::size_t missing = 0;
  for (const std::string& name : plan.writes)
    if (!fs::exists(checkpoint_file(ctx.run_dir, name))) ++missing;
  if (plan.writes.empty()) return;
  // The missing checkpoints, plus the temporary copy a rewrite of one of them needs.
  const double need = per_checkpoint * static_cast<double>(missing + 1);
  const double free = static_cast<double>(h5::free_bytes(ctx.run_dir));
  if (free < need)
    throw InputError(ctx.run_dir.string() + ": its filesystem has " + gigabytes(free) +
                     " free, this command writes about " + gigabytes(need) + " (" +
                     std::to_string(missing) + " checkpoints of " + gigabytes(per_checkpoint) +
                     ", plus one being rewritten): free space, or choose another run.dir");
}

}  // namespace

void preflight(RunContext& ctx, const PreflightPlan& plan) {
  collective_check(ctx.world, [&] {
    check_corpora_hold_a_block(ctx, plan);
    if (plan.trains) {
      EngineOptions options;
      options.threads = ctx.threads;
      options.gpu = ctx.gpu;
      options.max_batch = ctx.config.data.batch;
      ctx.backend->check_fits(ctx.config.model, options, ctx.node.local_size);
    }
    if (!ctx.leader()) return;
    for (const fs::path& dir : {ctx.run_dir, ctx.run_dir / "elms", ctx.run_dir / "metrics"})
      check_writable(dir);
    check_space(ctx, plan);
  });
}

}  // namespace btm
