#include "btm/data/clustering.hpp"
#include "btm/util/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <ostream>

#include "btm/data/readers.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"
#include "input_plan.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// Text bytes a file holds, for the sampling probability: its size, and for gzip a typical
// compression ratio of text (the sample is then a little smaller or larger, never wrong).
double text_bytes(const input::InputFile& f) {
  return static_cast<double>(f.size) * (f.kind == FileKind::GzipJsonLines ? 4.0 : 1.0);
}

void check_options(const ClusterOptions& o) {
  if (o.out.empty()) throw InputError("--out: name the clusters file to write (clusters.h5)");
  if (fs::is_directory(o.out))
    throw InputError("--out " + o.out.string() + " is a directory: name a file (clusters.h5)");
  if (o.fit.clusters < 1) throw InputError("--clusters must be at least 1");
  if (!(o.sample_mb >= 0) || !std::isfinite(o.sample_mb))
    throw InputError("--sample-mb must be >= 0 (0: every document)");
  if (!(o.fit.temperature > 0) || !std::isfinite(o.fit.temperature))
    throw InputError("--temperature must be > 0");
  if (!fs::is_directory(o.input))
    throw InputError("input directory '" + o.input.string() +
                     "' does not exist: pass --input DIR with the corpus's text files");
}

}  // namespace

ClusterResult cluster_corpus(const ClusterOptions& options, MpiComm& comm, std::ostream* log) {
  const auto start = Clock::now();
  std::unique_ptr<Tokenizer> tokenizer;
  collective_check(comm, [&] {
    check_options(options);
    tokenizer = make_tokenizer(options.tokenizer, options.bpe_dir);
  });
  std::vector<char> plan_bytes;
  input::agreed_on_root(comm, [&] {
    plan_bytes = input::serialize({input::list_domain(options.input, "corpus", false)});
  });
  comm.broadcast_vector(plan_bytes, 0);
  const input::DomainPlan plan = input::deserialize(plan_bytes).front();
  const std::vector<int> owner = input::assign_files(plan.files, plan.files.size(), comm.size());

  // 1. This rank's sample: its files' documents, each kept with probability p.
  double corpus_bytes = 0;
  for (const input::InputFile& f : plan.files) corpus_bytes += text_bytes(f);
  const double cap = options.sample_mb * 1e6;
  const double p = cap > 0 ? std::min(1.0, cap * comm.size() / std::max(corpus_bytes, 1.0)) : 1.0;
  if (comm.rank() == 0 && log)
    *log << "cluster: " << plan.files.size() << " files (~" << corpus_bytes / 1e6
         << " MB of text) from " << options.input.string() << ", sampling " << 100 * p
         << "% of the documents"
         << (cap > 0 ? ", at most " + std::to_string(options.sample_mb) + " MB per rank"
                     : std::string())
         << ", " << comm.size() << " rank" << (comm.size() > 1 ? "s" : "") << std::endl;
  const auto read_start = Clock::now();
  std::vector<TermCounts> docs;
  double sample[2] = {0, 0};  // documents, bytes
  const bool need_utf8 = tokenizer->name() == "gpt2";
  collective_check(comm, [&] {
    std::vector<std::uint16_t> tokens;
    for (std::size_t i = 0; i < plan.files.size(); ++i) {
      if (owner[i] != comm.rank()) continue;
      if (cap > 0 && sample[1] >= cap) break;
      const std::uint64_t file_hash = input::fnv1a(plan.files[i].relative);
      std::uint64_t index = 0;
      read_documents(options.input / plan.files[i].relative, plan.files[i].kind, need_utf8,
                     std::numeric_limits<std::uint64_t>::max(), options.reader,
                     [&](std::string_view text) {
                       const std::uint64_t h = mix64(options.fit.seed ^ file_hash ^ mix64(index++));
                       if (static_cast<double>(h >> 11) * 0x1.0p-53 >= p) return;
                       if (cap > 0 && sample[1] >= cap) return;
                       tokens.clear();
                       tokenizer->encode(text, tokens);
                       docs.push_back(term_counts(tokens, tokenizer->eot_token()));
                       sample[0] += 1;
                       sample[1] += static_cast<double>(text.size());
                     });
    }
  });
  ClusterResult result;
  const double read_seconds = seconds_since(read_start);
  std::vector<double> all_read(static_cast<std::size_t>(comm.size()));
  comm.allgather(&read_seconds, all_read.data(), sizeof(double));
  result.read_seconds = *std::max_element(all_read.begin(), all_read.end());
  comm.allreduce_sum(sample, 2);

  // 2. The fit over every rank, then the file (rank 0, atomically).
  const auto fit_start = Clock::now();
  result.model =
      fit_clusters(docs, tokenizer->vocab_size(), tokenizer->eot_token(), options.fit, comm, log);
  result.fit_seconds = seconds_since(fit_start);
  result.model.tokenizer = tokenizer->name();
  result.model.vocab_hash = vocabulary_hash(*tokenizer);
  result.model.sample_bytes = static_cast<std::int64_t>(sample[1]);
  input::agreed_on_root(comm, [&] {
    if (!options.out.parent_path().empty()) fs::create_directories(options.out.parent_path());
    write_clusters(options.out, result.model);
  });
  if (comm.rank() == 0 && log)
    *log << "cluster: " << result.model.sample_docs << " documents, " << sample[1] / 1e6
         << " MB sampled in " << result.read_seconds << " s, fitted in " << result.fit_seconds
         << " s (" << seconds_since(start) << " s in all) -> " << options.out.string() << std::endl;
  return result;
}

}  // namespace btm
