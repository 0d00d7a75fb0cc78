// btm prepare and btm encode: the commands over data/prepare.hpp and data/tokenizer.hpp.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/prepare.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

int cmd_prepare(const Args& args, MpiComm& world, const Backends&) {
  PrepareOptions o;
  std::string input, out, bpe_dir, domains, clusters;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("input", po::value(&input)->required(),
       "directory with one subdirectory per domain holding .txt files (one document each, or "
       "see --split-lines) or .jsonl / .jsonl.gz files (one {\"text\": ...} per line)")
      ("out", po::value(&out)->required(), "corpus directory to write: OUT/DOMAIN.h5")
      ("tokenizer", po::value(&o.tokenizer)->default_value(o.tokenizer), "byte | gpt2")
      ("bpe-dir", po::value(&bpe_dir),
       "directory with GPT-2's encoder.json and vocab.bpe (default: $BTM_GPT2_DIR, then "
       "data/gpt2 of the source tree; tools/fetch-gpt2-bpe.sh fetches them)")
      ("domains", po::value(&domains), "comma-separated domains (default: every subdirectory)")
      ("valid-fraction", po::value(&o.valid_fraction)->default_value(o.valid_fraction, "0.05"),
       "share of each domain's documents held out for validation")
      ("test-fraction", po::value(&o.test_fraction)->default_value(o.test_fraction, "0.05"),
       "share of each domain's documents held out for testing")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed of the valid/test choice")
      ("max-mb", po::value(&o.max_mb)->default_value(o.max_mb),
       "cap per domain in MB of text, for balanced domains (0: no cap)")
      ("clusters", po::value(&clusters),
       "clusters.h5 of btm cluster: --input is one unlabelled corpus (folders below it are not "
       "domains) and each document goes to its nearest centre, OUT/cluster_00.h5 ...");
  // clang-format on
  options.add(reader_options(o.reader));
  const auto vm = parse_command(
      "prepare",
      "Tokenize text into one HDF5 corpus per domain; the domains' files are spread over "
      "the MPI ranks.",
      args, options, nullptr, world.rank() == 0);
  check_reader_flags(vm, o.reader);
  o.input = input;
  o.out = out;
  o.bpe_dir = bpe_dir;
  o.domains = split_list(domains);
  o.clusters = clusters;
  const auto results = prepare_corpus(o, world, &std::cout);
  if (world.rank() == 0) {
    std::int64_t bytes = 0, tokens = 0;
    for (const auto& r : results)
      for (int s = 0; s < 3; ++s) bytes += r.bytes[s], tokens += r.tokens[s];
    std::printf("prepare: done, %s, %.2f MB, %lld tokens\n",
                counted(static_cast<std::int64_t>(results.size()), "domain").c_str(),
                static_cast<double>(bytes) / 1e6, static_cast<long long>(tokens));
  }
  return kExitOk;
}

int cmd_encode(const Args& args, MpiComm& world, const Backends&) {
  std::string name = "gpt2", bpe_dir, text, ids_text;
  bool eot = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("tokenizer", po::value(&name)->default_value(name), "byte | gpt2")
      ("bpe-dir", po::value(&bpe_dir), "directory with GPT-2's encoder.json and vocab.bpe")
      ("text", po::value(&text), "text to encode: prints the ids, space separated")
      ("eot", po::bool_switch(&eot), "append the end-of-text id")
      ("decode", po::value(&ids_text), "ids to decode instead (space or comma separated)");
  // clang-format on
  const auto vm = parse_command("encode", "Tokenize a string and print the ids (or decode ids).",
                                args, options, nullptr, world.rank() == 0);
  if (vm.count("text") == vm.count("decode"))
    throw InputError("btm encode: give either --text or --decode");
  const auto tokenizer = make_tokenizer(name, bpe_dir);
  if (world.rank() != 0) return kExitOk;
  if (vm.count("text")) {
    std::vector<std::uint16_t> ids;
    tokenizer->encode(text, ids);
    if (eot) ids.push_back(static_cast<std::uint16_t>(tokenizer->eot_token()));
    for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
    return kExitOk;
  }
  std::vector<std::uint16_t> ids;
  for (char& c : ids_text)
    if (c == ',') c = ' ';
  std::istringstream in(ids_text);
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long id = -1;
    try {
      id = std::stol(word, &used);
    } catch (const std::exception&) {
    }
    if (used != word.size() || id < 0 || id >= tokenizer->vocab_size())
      throw InputError("btm encode --decode: '" + word + "' is not a token id of " + name);
    ids.push_back(static_cast<std::uint16_t>(id));
  }
  std::cout << tokenizer->decode(ids) << "\n";
  return kExitOk;
}

}  // namespace btm
