// btm cluster: the command over data/clustering.hpp.
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/clustering.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_cluster(const Args& args, MpiComm& world, const Backends&) {
  ClusterOptions o;
  std::string input, out, bpe_dir;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("input", po::value(&input)->required(),
       "the unlabelled corpus: .txt files (one document each) or .jsonl / .jsonl.gz files (one "
       "{\"text\": ...} per line), in it or in folders below it")
      ("out", po::value(&out)->required(), "the clusters file to write (clusters.h5)")
      ("clusters", po::value(&o.fit.clusters)->default_value(o.fit.clusters), "K, the clusters")
      ("sample-mb", po::value(&o.sample_mb)->default_value(o.sample_mb, "20"),
       "MB of text per rank the fit samples (0: every document)")
      ("seed", po::value(&o.fit.seed)->default_value(o.fit.seed),
       "seed of the sample, the SVD's test matrix and the k-means start")
      ("temperature", po::value(&o.fit.temperature)->default_value(o.fit.temperature, "0.1"),
       "T of the routing weights softmax(-||h - c||^2 / T) (eval.cluster_temperature overrides)")
      ("dims", po::value(&o.fit.dims)->default_value(o.fit.dims), "dimensions of the truncated SVD")
      ("tokenizer", po::value(&o.tokenizer)->default_value(o.tokenizer),
       "byte | gpt2: its ids are the TF-IDF vocabulary (prepare the corpus with the same)")
      ("bpe-dir", po::value(&bpe_dir), "directory with GPT-2's encoder.json and vocab.bpe");
  // clang-format on
  // Documents as prepare --clusters will read them.
  options.add(reader_options(o.reader));
  const po::variables_map vm = parse_command(
      "cluster",
      "Fit c-BTM's clustering on an unlabelled corpus: TF-IDF over the tokenizer's ids, "
      "a truncated SVD, balanced k-means; over the MPI ranks. Then btm prepare "
      "--clusters writes one corpus per cluster.",
      args, options, nullptr, world.rank() == 0);
  check_reader_flags(vm, o.reader);
  o.input = input;
  o.out = out;
  o.bpe_dir = bpe_dir;
  cluster_corpus(o, world, &std::cout);
  return kExitOk;
}

}  // namespace btm
