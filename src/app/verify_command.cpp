// btm verify: reads every file of a run directory as btm would, checksums included, and says
// which are sound: the manifest, every checkpoint, metrics file and eval file, the run's own
// corpora (the random split's) and the corpora its config names.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/metrics.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

int cmd_verify(const Args& args, MpiComm& world, const Backends&) {
  std::string run_dir;
  po::options_description options("Options");
  // clang-format off
  options.add_options()("run.dir", po::value(&run_dir)->required(), "the run directory to check");
  // clang-format on
  std::vector<std::string> rest = args;
  if (!rest.empty() && !rest[0].starts_with("-")) rest[0].insert(0, "--run.dir=");
  parse_command("verify",
                "Read every file of a run directory as btm would (checksums, shapes, finite "
                "values) and say which are sound: btm verify RUN",
                rest, options, nullptr, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;
  const fs::path dir(run_dir);
  if (!fs::exists(forest_file(dir)))
    throw InputError("no forest at " + forest_file(dir).string() + ": not a btm run directory");
  int sound = 0, damaged = 0;
  auto check = [&](const fs::path& file, const std::string& what,
                   const std::function<std::string()>& read) {
    try {
      const std::string detail = read();
      std::cout << "ok       " << file.string() << " (" << what
                << (detail.empty() ? "" : ", " + detail) << ")\n";
      ++sound;
    } catch (const std::exception& e) {
      std::cout << "DAMAGED  " << file.string() << ": " << e.what() << "\n";
      ++damaged;
    }
  };
  Forest forest;
  check(forest_file(dir), "manifest", [&] {
    forest = load_forest(dir);
    return std::to_string(forest.models.size()) + " models";
  });
  auto each_h5 = [&](const fs::path& folder, const std::function<void(const fs::path&)>& f) {
    if (!fs::is_directory(folder)) return;
    std::vector<fs::path> files;
    for (const fs::directory_entry& e : fs::directory_iterator(folder))
      if (e.path().extension() == ".h5") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& p : files) f(p);
  };
  each_h5(dir / "elms", [&](const fs::path& p) {
    check(p, "checkpoint", [&] {
      const Checkpoint c = load_checkpoint(p);
      return "step " + std::to_string(c.step) + " of " + std::to_string(c.target_steps) +
             (c.state_from.empty() ? "" : ", the state of " + c.state_from);
    });
  });
  each_h5(dir / "metrics", [&](const fs::path& p) {
    check(p, "metrics", [&] { return std::to_string(MetricsLog::read(p).size()) + " rows"; });
  });
  if (fs::exists(eval_file(dir)))
    check(eval_file(dir), "evaluation", [&] {
      const EvalResults r = read_eval_file(eval_file(dir));
      return std::to_string(r.methods.size()) + " methods x " + std::to_string(r.domains.size()) +
             " domains";
    });
  each_h5(dir / "corpus", [&](const fs::path& p) {
    check(p, "corpus",
          [&] { return std::to_string(load_corpus(p, 0).info.tokens[0]) + " train tokens"; });
  });
  if (!forest.config_ini.empty()) {
    const Config config = config_from_ini(forest.config_ini, forest_file(dir).string());
    std::vector<std::string> domains = config.data.domains;
    domains.insert(domains.end(), config.data.eval_domains.begin(), config.data.eval_domains.end());
    for (const std::string& d : domains) {
      const fs::path p = corpus_path(config.data.corpus, d);
      if (fs::exists(dir / "corpus" / (d + ".h5"))) continue;
      check(p, "corpus of domain '" + d + "'",
            [&] { return std::to_string(load_corpus(p, 0).info.tokens[0]) + " train tokens"; });
    }
  }
  std::cout << "verify: " << sound << " files sound, " << damaged << " damaged"
            << (damaged ? ": train the damaged models again (btm run continues the forest), or "
                          "restore the files from a copy"
                        : "")
            << "\n";
  return damaged ? kExitBadInput : kExitOk;
}

}  // namespace btm
