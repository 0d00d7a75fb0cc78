// btm forest: list, add or remove models of a forest.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/run_lock.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

int cmd_forest(const Args& args, MpiComm& world, const Backends&) {
  std::string action, name, checkpoint, domain, run_dir = "run";
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("action", po::value(&action), "list | add | remove")
      ("run.dir", po::value(&run_dir)->default_value(run_dir), "the forest directory")
      ("name", po::value(&name), "add/remove: the ELM's name")
      ("checkpoint", po::value(&checkpoint), "add: a btm checkpoint file to copy into the forest")
      ("domain", po::value(&domain), "add: the domain it is an expert of (default: its name)");
  // clang-format on
  std::vector<std::string> rest = args;
  if (!rest.empty() && !rest[0].starts_with("-")) rest[0].insert(0, "--action=");
  parse_command("forest",
                "Manage a forest: `btm forest list`, `btm forest add --name N --checkpoint F`,\n"
                "`btm forest remove --name N` (drops it from the manifest; its files are kept).",
                rest, options, nullptr, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;
  const fs::path dir(run_dir);
  if (!fs::exists(forest_file(dir)))
    throw InputError("no forest at " + forest_file(dir).string() +
                     " (run btm run or btm seed first)");
  // add and remove write the manifest: one writer at a time.
  std::optional<RunLock> lock;
  if (action == "add" || action == "remove") lock.emplace(dir, "forest " + action);
  Forest forest = load_forest(dir);
  if (action == "list" || action.empty()) {
    // Columns as wide as their longest entry, two spaces apart.
    std::vector<std::vector<std::string>> rows = {
        {"name", "kind", "status", "steps", "global batch", "tokens", "parents"}};
    for (const ModelRecord& r : forest.models) {
      std::string parents;
      for (std::size_t j = 0; j < r.parents.size(); ++j) {
        std::ostringstream w;
        w << r.parents[j] << "(" << std::setprecision(3) << r.parent_weights[j] << ")";
        parents += (j > 0 ? " " : "") + w.str();
      }
      rows.push_back(
          {r.name, std::string(word_of(r.kind)), std::string(word_of(r.status)), grouped(r.steps),
           // An average is not trained: it has no batch.
           r.global_batch > 0 ? grouped(r.global_batch) : "-", grouped(r.tokens), parents});
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& row : rows)
      for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    for (const auto& row : rows) {
      std::string line;
      for (std::size_t c = 0; c < row.size(); ++c) {
        std::string cell = row[c];
        if (c + 1 < row.size()) cell.resize(width[c] + 2, ' ');
        line += cell;
      }
      std::cout << line << "\n";
    }
    return kExitOk;
  }
  if (name.empty()) throw InputError("btm forest " + action + ": --name is required");
  if (action == "remove") {
    if (!forest.remove(name)) throw InputError("no model named '" + name + "' in " + run_dir);
    save_forest(dir, forest);
    std::cout << "removed '" << name << "' from the forest (its checkpoint stays in "
              << checkpoint_file(dir, name).string() << ")\n";
    return kExitOk;
  }
  if (action == "add") {
    if (checkpoint.empty()) throw InputError("btm forest add: --checkpoint is required");
    if (forest.find(name))
      throw InputError("a model named '" + name + "' is already in the forest");
    const ModelConfig model = config_from_ini(forest.config_ini, forest_file(dir).string()).model;
    // A weights-only checkpoint (btm export --weights-only) joins with zero moments: it is
    // added as trained, to be evaluated, exported or sampled from.
    const bool weights_only = peek_checkpoint(checkpoint).weights_only;
    Checkpoint c = load_checkpoint(checkpoint, nullptr, !weights_only);
    if (weights_only) {
      c.adam_m.assign(c.params.size(), 0.0f);
      c.adam_v.assign(c.params.size(), 0.0f);
    }
    if (!(c.model == model))
      throw InputError(checkpoint + ": model shape " + describe_model(c.model) +
                       " differs from the forest's " + describe_model(model) +
                       ": a forest's models share one shape (their parameters are averaged)");
    c.name = name;
    c.domains = {domain.empty() ? name : domain};
    c.target_steps = c.step;  // added as trained
    c.schedule_steps = std::max(c.schedule_steps, c.step);
    save_checkpoint(checkpoint_file(dir, name), c);
    ModelRecord r;
    r.name = name;
    r.kind = ModelKind::elm;
    r.domains = c.domains;
    r.status = ModelStatus::trained;
    r.steps = c.step;
    r.global_batch = c.batch.sequences();
    r.tokens = static_cast<std::int64_t>(c.tokens);
    r.flops = static_cast<double>(c.tokens) * train_flops_per_token(ParamLayout(c.model));
    r.checkpoint = fs::path("elms") / (name + ".h5");
    forest.upsert(r);
    save_forest(dir, forest);
    std::cout << "added '" << name << "' (" << c.domains[0] << ") from " << checkpoint << "\n";
    return kExitOk;
  }
  throw InputError("btm forest: unknown action '" + action + "' (use list, add or remove)");
}

}  // namespace btm
