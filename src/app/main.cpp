// btm: Branch-Train-Merge training of expert language models. One MPI executable; see README.md.
#include <mpi.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "btm/app/backends.hpp"
#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/io/h5.hpp"
#include "btm/util/build_info.hpp"
#include "btm/util/error.hpp"

namespace {

struct CommandEntry {
  int (*run)(const btm::Args&, btm::MpiComm&, const btm::Backends&);
  const char* summary;
};

const std::map<std::string, CommandEntry>& commands() {
  static const std::map<std::string, CommandEntry> table = {
      {"prepare", {btm::cmd_prepare, "tokenize text files into per-domain HDF5 corpora"}},
      {"cluster", {btm::cmd_cluster, "fit c-BTM's clusters on an unlabelled corpus (clusters.h5)"}},
      {"layout",
       {btm::cmd_layout, "print the rank layout: which ranks train which ELM, in which wave"}},
      {"config", {btm::cmd_config, "print the configuration (INI), or one setting with --get KEY"}},
      {"run",
       {btm::cmd_run, "the whole pipeline: seed, branch, train, merge, dense baseline, eval"}},
      {"seed", {btm::cmd_seed, "train the seed LM on all train domains (whole world)"}},
      {"branch", {btm::cmd_branch, "create ELMs from the seed or from a weighted average of ELMs"}},
      {"train", {btm::cmd_train, "train the forest's unfinished ELMs, one group each"}},
      {"dense", {btm::cmd_dense, "train the compute-matched dense baseline (whole world)"}},
      {"eval", {btm::cmd_eval, "evaluate ELMs, ensembles and averages; write eval.h5"}},
      {"average", {btm::cmd_average, "average or merge ELMs (TIES, DARE) into one checkpoint"}},
      {"forest", {btm::cmd_forest, "list, add or remove ELMs of a forest"}},
      {"verify",
       {btm::cmd_verify, "check that every file of a run directory is sound (checksums)"}},
      {"bench", {btm::cmd_bench, "throughput benchmark: one JSON line per case"}},
      {"encode", {btm::cmd_encode, "tokenize a string and print the ids"}},
      {"export", {btm::cmd_export, "a model or an average as a Hugging Face GPT-2 directory"}},
      {"import", {btm::cmd_import, "a Hugging Face GPT-2 directory as a checkpoint (a seed)"}},
      {"generate",
       {btm::cmd_generate, "sample text from a model, an average or the forest's ensemble"}},
      {"logits", {btm::cmd_logits, "a checkpoint's logits and log-probs on given tokens (HDF5)"}},
  };
  return table;
}

void print_usage(std::ostream& out) {
  out << "btm " << btm::btm_version()
      << ": Branch-Train-Merge training of expert language models\n\n"
      << "usage: [mpirun -np W] btm COMMAND [options]     (btm COMMAND --help for its options)\n\n"
      << "commands:\n";
  for (const auto& [name, entry] : commands()) {
    std::string padded = name;
    padded.resize(10, ' ');
    out << "  " << padded << entry.summary << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  btm::h5::quiet_errors();
  int code = btm::kExitOk;
  {
    btm::MpiComm world(MPI_COMM_WORLD, false);
    const btm::Backends backends = btm::make_builtin_backends();
    const bool leader = world.rank() == 0;
    std::vector<std::string> args(argv + 1, argv + argc);
    try {
      if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        if (leader) print_usage(std::cout);
        code = args.empty() ? btm::kExitBadInput : btm::kExitOk;
      } else if (args[0] == "--version") {
        if (leader)
          std::cout << "btm " << btm::btm_version() << " (commit " << btm::btm_commit() << ")\n";
      } else {
        auto it = commands().find(args[0]);
        if (it == commands().end())
          throw btm::InputError("unknown command '" + args[0] + "' (btm --help lists them)");
        code = it->second.run(btm::Args(args.begin() + 1, args.end()), world, backends);
      }
    } catch (const btm::HelpShown&) {
      code = btm::kExitOk;
    } catch (const btm::InputError& e) {
      if (leader) std::cerr << "btm: error: " << e.what() << "\n";
      code = btm::kExitBadInput;
    } catch (const std::exception& e) {
      std::cerr << "btm: rank " << world.rank() << ": fatal: " << e.what() << "\n";
      std::cerr.flush();
      // Other ranks may be blocked in a collective: take the whole job down.
      MPI_Abort(MPI_COMM_WORLD, btm::kExitFailure);
    }
  }
  MPI_Finalize();
  return code;
}
