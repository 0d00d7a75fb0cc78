// prepare.cpp: `btm prepare` over the ranks of a communicator: rank 0 lists the input (the
// plan, input_plan.hpp), every rank tokenizes its share of the files (documents come from
// readers.hpp) and, with --clusters, gives each document its nearest centre; rank 0 gathers the
// documents in order, splits them and writes each domain or cluster (corpus.hpp). Errors are
// agreed between the ranks with collective_check, so every rank throws the same one.
#include "btm/data/prepare.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>

#include "btm/data/corpus.hpp"
#include "btm/data/readers.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/method/cluster.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"
#include "btm/util/rng.hpp"
#include "byte_buffer.hpp"
#include "input_plan.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

constexpr double kMB = 1e6;

// ---------------------------------------------------------------------------------------------
// The plan: domains and their files (made by rank 0, broadcast)
// ---------------------------------------------------------------------------------------------

using input::DomainPlan;

void make_out_dir(const fs::path& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec || !fs::is_directory(out))
    throw InputError("cannot create the output directory '" + out.string() + "' (" +
                     (ec ? ec.message() : std::string("a file is in the way")) +
                     "): pass --out a writable directory");
}

std::vector<DomainPlan> make_plan(const PrepareOptions& options) {
  const bool unlabelled = !options.clusters.empty();
  if (!fs::is_directory(options.input))
    throw InputError(
        "input directory '" + options.input.string() + "' does not exist: pass --input DIR with " +
        (unlabelled ? "the corpus's text files (in it or in folders below it)"
                    : "one subdirectory of text files per domain (tools/build_corpus.py "
                      "makes one)"));
  if (unlabelled) {
    if (!options.domains.empty())
      throw InputError(
          "--domains with --clusters: the clusters are the domains, leave out --domains");
    std::vector<DomainPlan> plan{input::list_domain(options.input, "corpus", false)};
    make_out_dir(options.out);
    return plan;
  }
  std::vector<std::string> available;
  for (const auto& entry : fs::directory_iterator(options.input))
    if (entry.is_directory() && !input::hidden(entry.path()))
      available.push_back(entry.path().filename().string());
  std::sort(available.begin(), available.end());
  std::vector<std::string> names = options.domains.empty() ? available : options.domains;
  if (names.empty())
    throw InputError("input directory '" + options.input.string() +
                     "' has no domain subdirectories: make one directory of text files per domain");
  std::vector<DomainPlan> plan;
  for (const std::string& name : names) {
    if (std::count(names.begin(), names.end(), name) > 1)
      throw InputError("--domains names '" + name + "' twice");
    if (!std::binary_search(available.begin(), available.end(), name)) {
      std::string list;
      for (const auto& a : available) list += (list.empty() ? "" : ", ") + a;
      throw InputError("domain '" + name + "': no directory " + (options.input / name).string() +
                       " (domains found there: " + (list.empty() ? "none" : list) + ")");
    }
    plan.push_back(input::list_domain(options.input / name, name, true));
  }
  make_out_dir(options.out);
  return plan;
}

// How much of a domain the --max-mb cap keeps: the first `files` files, of which the last
// contributes at most `last_file_docs` documents.
struct Cutoff {
  std::size_t files = 0;
  std::uint64_t last_file_docs = std::numeric_limits<std::uint64_t>::max();
};

Cutoff find_cutoff(const DomainPlan& domain, const fs::path& dir, double max_mb,
                   const ReaderOptions& reader, bool need_utf8) {
  Cutoff cut;
  cut.files = domain.files.size();
  if (max_mb <= 0) return cut;
  const double cap = max_mb * kMB;
  double total = 0;
  for (std::size_t i = 0; i < domain.files.size(); ++i) {
    const input::InputFile& f = domain.files[i];
    std::uint64_t docs = 0;
    if (f.kind == FileKind::Text && !reader.splits_text()) {
      // One document per file: its size is enough, no need to read it here.
      if (f.size > 0) total += static_cast<double>(f.size), docs = 1;
    } else {
      read_documents(dir / f.relative, f.kind, need_utf8, std::numeric_limits<std::uint64_t>::max(),
                     reader, [&](std::string_view text) {
                       if (total >= cap) return;
                       total += static_cast<double>(text.size());
                       ++docs;
                     });
    }
    if (total >= cap) {
      cut.files = i + 1;
      cut.last_file_docs = docs;
      return cut;
    }
  }
  return cut;
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// One document as gathered on rank 0.
struct Document {
  std::uint32_t file, index;  // position in the domain's order
  std::uint64_t bytes;
  std::uint32_t cluster;  // its nearest centre (prepare --clusters), else 0
  std::vector<std::uint16_t> tokens;
};

// One domain's documents split and ready to write.
struct SplitDomain {
  CorpusInfo info;
  std::vector<std::uint16_t> splits[3];
  std::int64_t files = 0;
};

// Splits the documents `docs` (in order) of domain `name` into train, valid and test, by a
// seeded permutation; InputError (`too_few` says what to do) when the train split would be empty.
SplitDomain split_domain(const PrepareOptions& options, const std::string& name,
                         const std::vector<const Document*>& docs, const Tokenizer& tokenizer,
                         const std::string& where, const std::string& too_few) {
  const std::size_t n = docs.size();
  const auto share = [n](double fraction) -> std::size_t {
    return fraction > 0
               ? std::max<std::size_t>(
                     1, static_cast<std::size_t>(std::llround(fraction * static_cast<double>(n))))
               : 0;
  };
  const std::size_t n_valid = share(options.valid_fraction), n_test = share(options.test_fraction);
  if (n_valid + n_test >= n)
    throw InputError(where + ": domain '" + name + "' has only " + std::to_string(n) + " document" +
                     (n == 1 ? "" : "s") + ", too few for a train split beside " +
                     std::to_string(n_valid) + " valid and " + std::to_string(n_test) +
                     " test documents: " + too_few);
  // A seeded permutation picks the valid and test documents; each split keeps the order.
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(mix64(options.seed ^ input::fnv1a(name)));
  for (std::size_t i = n - 1; i > 0; --i)
    std::swap(order[i], order[static_cast<std::size_t>(rng.next_u64() % (i + 1))]);
  std::vector<std::uint8_t> split_of(n, static_cast<std::uint8_t>(Split::Train));
  for (std::size_t k = 0; k < n_valid + n_test; ++k)
    split_of[order[k]] = static_cast<std::uint8_t>(k < n_valid ? Split::Valid : Split::Test);

  SplitDomain out;
  out.info.domain = name;
  out.info.tokenizer = tokenizer.name();
  out.info.vocab_size = tokenizer.vocab_size();
  out.info.vocab_hash = tokenizer.vocab_hash();
  out.info.eot_token = tokenizer.eot_token();
  out.info.text_key = options.reader.text_key;
  out.info.txt_documents = options.reader.txt_documents();
  for (std::size_t i = 0; i < n; ++i) {
    const int s = split_of[i];
    out.splits[s].insert(out.splits[s].end(), docs[i]->tokens.begin(), docs[i]->tokens.end());
    ++out.info.docs[s];
    out.info.bytes[s] += static_cast<std::int64_t>(docs[i]->bytes);
    if (i == 0 || docs[i]->file != docs[i - 1]->file) ++out.files;
  }
  return out;
}

// The first folder of a file's path inside the input (its label in a labelled tree), or "".
std::string top_folder(const std::string& relative) {
  const std::size_t slash = relative.find('/');
  return slash == std::string::npos ? std::string() : relative.substr(0, slash);
}

void broadcast_summary(PreparedDomain& r, MpiComm& comm) {
  comm.broadcast_string(r.domain, 0);
  std::string file = r.file.string();
  comm.broadcast_string(file, 0);
  r.file = file;
  comm.broadcast(&r.files, sizeof(r.files), 0);
  comm.broadcast(r.docs, sizeof(r.docs), 0);
  comm.broadcast(r.bytes, sizeof(r.bytes), 0);
  comm.broadcast(r.tokens, sizeof(r.tokens), 0);
}

// A domain of the plan; with `clusters`, the unlabelled corpus, whose documents go to the
// domains of their nearest centres (cluster_00 ...).
std::vector<PreparedDomain> prepare_domain(const PrepareOptions& options, const DomainPlan& domain,
                                           const Tokenizer& tokenizer, const ClusterModel* clusters,
                                           MpiComm& comm, std::ostream* log) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const bool root = comm.rank() == 0;
  const fs::path dir = clusters ? options.input : options.input / domain.name;
  const bool need_utf8 = tokenizer.name() == "gpt2";
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };

  // 1. The cap (rank 0 reads ahead as far as it needs), then who reads which file.
  Cutoff cut;
  input::agreed_on_root(
      comm, [&] { cut = find_cutoff(domain, dir, options.max_mb, options.reader, need_utf8); });
  comm.broadcast(&cut, sizeof(cut), 0);
  const std::vector<int> owner = input::assign_files(domain.files, cut.files, comm.size());
  if (root && log) {
    std::uint64_t disk = 0;
    for (std::size_t i = 0; i < cut.files; ++i) disk += domain.files[i].size;
    *log << "prepare: " << domain.name << ": " << cut.files << " of "
         << counted(static_cast<std::int64_t>(domain.files.size()), "file") << " ("
         << fixed(static_cast<double>(disk) / kMB, 1) << " MB on disk)"
         << (options.max_mb > 0 ? " under the " + fixed(options.max_mb, 1) + " MB cap" : "") << ", "
         << comm.size() << " rank" << (comm.size() > 1 ? "s" : "") << "\n"
         << std::flush;
  }

  // 2. Each rank tokenizes its files (and assigns each document its cluster).
  ByteWriter mine;
  std::uint64_t my_bytes = 0, my_share = 0;
  for (std::size_t i = 0; i < cut.files; ++i)
    if (owner[i] == comm.rank()) my_share += domain.files[i].size;
  const auto work_start = Clock::now();
  auto last_report = work_start;
  const auto report = [&] {
    last_report = Clock::now();
    const double t = seconds_since(work_start);
    *log << "prepare: " << domain.name << ": rank 0 has tokenized "
         << fixed(static_cast<double>(my_bytes) / kMB, 1) << " MB (~"
         << fixed(100.0 * static_cast<double>(my_bytes) /
                      static_cast<double>(std::max<std::uint64_t>(my_share, 1)),
                  0)
         << "% of its share) at " << fixed(static_cast<double>(my_bytes) / kMB / t, 2) << " MB/s\n"
         << std::flush;
  };
  double my_seconds = 0, my_assign_seconds = 0;
  collective_check(comm, [&] {
    std::vector<std::uint16_t> tokens;
    for (std::size_t i = 0; i < cut.files; ++i) {
      if (owner[i] != comm.rank()) continue;
      const std::uint64_t limit =
          i + 1 == cut.files ? cut.last_file_docs : std::numeric_limits<std::uint64_t>::max();
      std::uint32_t index = 0;
      read_documents(dir / domain.files[i].relative, domain.files[i].kind, need_utf8, limit,
                     options.reader, [&](std::string_view text) {
                       tokens.clear();
                       tokenizer.encode(text, tokens);
                       tokens.push_back(static_cast<std::uint16_t>(tokenizer.eot_token()));
                       std::uint64_t cluster = 0;
                       if (clusters) {
                         const auto assign_start = Clock::now();
                         cluster = clusters->nearest(clusters->embed(tokens));
                         my_assign_seconds += seconds_since(assign_start);
                       }
                       mine.u64(i);
                       mine.u64(index++);
                       mine.u64(text.size());
                       mine.u64(cluster);
                       mine.u64(tokens.size());
                       mine.raw(tokens.data(), tokens.size() * sizeof(std::uint16_t));
                       my_bytes += text.size();
                       if (root && log && seconds_since(last_report) > 10) report();
                     });
    }
    my_seconds = seconds_since(work_start);
  });

  // Throughput of every rank that had work.
  const double my_stats[3] = {static_cast<double>(my_bytes), my_seconds - my_assign_seconds,
                              my_assign_seconds};
  std::vector<double> stats(3 * static_cast<std::size_t>(comm.size()));
  comm.allgather(my_stats, stats.data(), sizeof(my_stats));

  // 3. Rank 0 puts the documents in order, splits them and writes the domain (or one domain per
  //    cluster, once every cluster has been split without error).
  const auto gathered = comm.gather_to_root(mine.data);
  mine.data = {};
  std::vector<PreparedDomain> results;
  input::agreed_on_root(comm, [&] {
    std::vector<Document> docs;
    for (const auto& buffer : gathered) {
      ByteReader r(buffer);
      while (!r.done()) {
        Document d;
        d.file = static_cast<std::uint32_t>(r.u64());
        d.index = static_cast<std::uint32_t>(r.u64());
        d.bytes = r.u64();
        d.cluster = static_cast<std::uint32_t>(r.u64());
        d.tokens.resize(r.u64());
        r.raw(d.tokens.data(), d.tokens.size() * sizeof(std::uint16_t));
        docs.push_back(std::move(d));
      }
    }
    std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) {
      return a.file != b.file ? a.file < b.file : a.index < b.index;
    });
    if (docs.empty())
      throw InputError(
          dir.string() + ": " + (clusters ? "the corpus" : "domain '" + domain.name + "'") +
          " has no documents (its " + std::to_string(cut.files) + " files are empty): add text" +
          (clusters ? std::string() : " or leave it out of --domains"));
    const std::size_t groups = clusters ? clusters->K : 1;
    std::vector<std::vector<const Document*>> members(groups);
    for (const Document& d : docs) members[d.cluster].push_back(&d);
    // A domain of whole .txt files: say how to cut them, should they be too few documents.
    const bool txt =
        !options.reader.splits_text() &&
        std::any_of(domain.files.begin(), domain.files.begin() + static_cast<long>(cut.files),
                    [](const input::InputFile& f) { return f.kind == FileKind::Text; });
    const std::string whole_txt =
        txt ? " (a .txt file is one document: cut large ones into documents with "
              "--split-lines N or --split-blank-lines)"
            : "";
    std::vector<SplitDomain> split;
    for (std::size_t c = 0; c < groups; ++c) {
      const std::string name = clusters ? cluster_name(c, groups) : domain.name;
      split.push_back(split_domain(
          options, name, members[c], tokenizer, dir.string(),
          clusters ? "fit fewer clusters (btm cluster --clusters) or give the corpus more text"
                   : "add documents or lower --valid-fraction / --test-fraction" + whole_txt));
      std::ostringstream source;
      if (!domain.source.empty()) source << domain.source << "\n";
      source << "btm prepare: " << dir.string() << ", " << split.back().files << " files, "
             << members[c].size() << " documents";
      if (clusters) {
        // The documents' first folders, when the input has any (the labels of a labelled
        // tree read as unlabelled): tools/cluster_agreement.py reads them.
        std::map<std::string, std::int64_t> folders;
        for (const Document* d : members[c]) ++folders[top_folder(domain.files[d->file].relative)];
        source << " of " << docs.size() << " nearest to centre " << c << " of "
               << options.clusters.string() << "; folders:";
        for (const auto& [folder, count] : folders)
          source << " " << (folder.empty() ? "." : folder) << "=" << count;
        source << ";";
      }
      if (options.max_mb > 0) source << " (capped at " << fixed(options.max_mb, 1) << " MB)";
      source << ", seed " << options.seed;
      split.back().info.source = source.str();
    }
    for (SplitDomain& s : split) {
      PreparedDomain result;
      result.domain = s.info.domain;
      result.file = corpus_path(options.out, s.info.domain);
      write_corpus(result.file, s.info, s.splits);
      result.files = s.files;
      for (int k = 0; k < 3; ++k) {
        result.docs[k] = s.info.docs[k];
        result.bytes[k] = s.info.bytes[k];
        result.tokens[k] = static_cast<std::int64_t>(s.splits[k].size());
      }
      results.push_back(std::move(result));
    }
  });
  // Every rank returns the same summary.
  std::uint64_t count = results.size();
  comm.broadcast(&count, sizeof(count), 0);
  results.resize(count);
  for (PreparedDomain& r : results) broadcast_summary(r, comm);
  double seconds = seconds_since(start);
  comm.broadcast(&seconds, sizeof(seconds), 0);
  double min_rate = std::numeric_limits<double>::max(), sum_rate = 0, sum_assign = 0;
  int working = 0;
  for (int r = 0; r < comm.size(); ++r) {
    const double bytes = stats[3 * static_cast<std::size_t>(r)];
    const double secs = stats[3 * static_cast<std::size_t>(r) + 1];
    const double assign = stats[3 * static_cast<std::size_t>(r) + 2];
    if (bytes <= 0 || secs <= 0) continue;
    const double rate = bytes / kMB / secs;
    min_rate = std::min(min_rate, rate);
    sum_rate += rate;
    sum_assign += assign > 0 ? bytes / kMB / assign : 0;
    ++working;
  }
  for (PreparedDomain& r : results) {
    r.seconds = seconds;
    r.rank_mb_per_s_min = working ? min_rate : 0;
    r.rank_mb_per_s_mean = working ? sum_rate / working : 0;
    r.assign_mb_per_s_mean = working && clusters ? sum_assign / working : 0;
  }

  if (root && log) {
    for (const PreparedDomain& r : results) {
      const std::int64_t bytes = r.bytes[0] + r.bytes[1] + r.bytes[2];
      const std::int64_t tokens = r.tokens[0] + r.tokens[1] + r.tokens[2];
      *log << "prepare: " << r.domain << ": " << r.docs[0] << "/" << r.docs[1] << "/" << r.docs[2]
           << " documents (train/valid/test), " << fixed(static_cast<double>(bytes) / kMB, 2)
           << " MB, " << tokens << " tokens (" << r.tokens[0] << "/" << r.tokens[1] << "/"
           << r.tokens[2] << "), "
           << fixed(static_cast<double>(bytes) /
                        static_cast<double>(std::max<std::int64_t>(tokens, 1)),
                    2)
           << " bytes/token -> " << r.file.string() << "\n";
    }
    const PreparedDomain& r = results.front();
    *log << "prepare: " << domain.name << ": " << fixed(seconds, 1) << " s, tokenizing at "
         << fixed(r.rank_mb_per_s_mean, 2) << " MB/s per rank (slowest "
         << fixed(r.rank_mb_per_s_min, 2) << ")";
    if (clusters)
      *log << ", assigning to the nearest of " << clusters->K << " centres at "
           << fixed(r.assign_mb_per_s_mean, 2) << " MB/s per rank";
    *log << "\n" << std::flush;
  }
  return results;
}

void check_options(const PrepareOptions& o) {
  check_reader_options(o.reader);
  const auto fraction_ok = [](double f) { return f >= 0 && f < 1 && std::isfinite(f); };
  if (!fraction_ok(o.valid_fraction) || !fraction_ok(o.test_fraction) ||
      o.valid_fraction + o.test_fraction >= 1)
    throw InputError(
        "--valid-fraction and --test-fraction must be in [0, 1) and sum to less than 1");
  if (!(o.max_mb >= 0) || !std::isfinite(o.max_mb))
    throw InputError("--max-mb must be >= 0 (0: no cap)");
  if (o.out.empty()) throw InputError("--out: name the corpus directory to write");
}

}  // namespace

std::vector<PreparedDomain> prepare_corpus(const PrepareOptions& options, MpiComm& comm,
                                           std::ostream* log) {
  check_options(options);
  std::unique_ptr<Tokenizer> tokenizer;
  // Every rank loads the tokenizer; a missing file is reported once, the same everywhere.
  collective_check(comm, [&] { tokenizer = make_tokenizer(options.tokenizer, options.bpe_dir); });

  // Rank 0 lists the domains and files (so every rank works from one listing); mistakes in
  // the input tree are caught here, before anything is tokenized or written.
  std::vector<char> plan_bytes;
  input::agreed_on_root(comm, [&] { plan_bytes = input::serialize(make_plan(options)); });
  comm.broadcast_vector(plan_bytes, 0);
  const std::vector<DomainPlan> plan = input::deserialize(plan_bytes);
  // prepare --clusters: the fitted clustering, of this tokenizer's ids.
  std::optional<ClusterModel> clusters;
  if (!options.clusters.empty())
    collective_check(comm, [&] {
      clusters = read_clusters(options.clusters);
      check_cluster_tokenizer(*clusters, options.clusters, tokenizer->name(),
                              tokenizer->vocab_size(), vocabulary_hash(*tokenizer));
    });
  if (comm.rank() == 0 && log)
    *log << "prepare: " << plan.size() << " domain" << (plan.size() == 1 ? "" : "s") << " from "
         << options.input.string() << " -> " << options.out.string() << ", tokenizer "
         << tokenizer->name() << " (" << tokenizer->vocab_size() << " ids), " << comm.size()
         << " rank" << (comm.size() == 1 ? "" : "s") << "; a .txt file is "
         << (options.reader.split_lines > 0
                 ? "a document every " + counted(options.reader.split_lines, "line")
             : options.reader.split_blank_lines ? "a document per paragraph (at blank lines)"
                                                : "one document")
         << ", JSON lines give their \"" << options.reader.text_key << "\"\n"
         << std::flush;

  std::vector<PreparedDomain> results;
  for (const DomainPlan& domain : plan)
    for (PreparedDomain& r :
         prepare_domain(options, domain, *tokenizer, clusters ? &*clusters : nullptr, comm, log))
      results.push_back(std::move(r));
  return results;
}

}  // namespace btm
