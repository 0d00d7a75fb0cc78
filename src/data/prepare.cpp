// prepare.cpp: `btm prepare` over the ranks of a communicator: rank 0 lists the input (the
// plan), every rank tokenizes its share of the files (documents come from readers.hpp), rank 0
// gathers the documents in order, splits them and writes each domain (corpus.hpp). Errors are
// agreed between the ranks with collective_check, so every rank throws the same one.
#include "btm/data/prepare.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>

#include "btm/data/corpus.hpp"
#include "btm/data/readers.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"
#include "btm/util/rng.hpp"
#include "byte_buffer.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

constexpr double kMB = 1e6;

// `fn` on rank 0 only, its error (if any) thrown on every rank.
void agreed_on_root(MpiComm& comm, const std::function<void()>& fn) {
  collective_check(comm, [&] {
    if (comm.rank() == 0) fn();
  });
}

// ---------------------------------------------------------------------------------------------
// The plan: domains and their files (made by rank 0, broadcast)
// ---------------------------------------------------------------------------------------------

struct InputFile {
  std::string relative;  // path inside the domain directory (sorting key)
  std::uint64_t size = 0;
  FileKind kind = FileKind::Text;
};

struct DomainPlan {
  std::string name;
  std::string source;  // contents of DOMAIN/SOURCE, if present
  std::vector<InputFile> files;
};

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

DomainPlan list_domain(const fs::path& dir, const std::string& name) {
  DomainPlan plan;
  plan.name = name;
  std::int64_t ignored = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    const std::string rel = fs::relative(it->path(), dir).generic_string();
    const std::optional<FileKind> kind = document_file_kind(rel);
    if (!kind) {
      if (rel != "SOURCE") ++ignored;
      continue;
    }
    plan.files.push_back({rel, static_cast<std::uint64_t>(it->file_size()), *kind});
  }
  if (ec) throw InputError(dir.string() + ": cannot list the directory (" + ec.message() + ")");
  std::sort(plan.files.begin(), plan.files.end(),
            [](const InputFile& a, const InputFile& b) { return a.relative < b.relative; });
  if (plan.files.empty())
    throw InputError(
        dir.string() + ": domain '" + name + "' has no usable files (" + std::to_string(ignored) +
        " other files): put .txt files (one document each) or .jsonl / .jsonl.gz "
        "files (one {\"text\": ...} object per line) in it, or leave it out of --domains");
  if (fs::is_regular_file(dir / "SOURCE")) {
    plan.source = read_whole_file(dir / "SOURCE");
    while (!plan.source.empty() && std::isspace(static_cast<unsigned char>(plan.source.back())))
      plan.source.pop_back();
  }
  return plan;
}

std::vector<DomainPlan> make_plan(const PrepareOptions& options) {
  if (!fs::is_directory(options.input))
    throw InputError("input directory '" + options.input.string() +
                     "' does not exist: pass --input DIR with one subdirectory of text files per "
                     "domain (tools/build_corpus.py makes one)");
  std::vector<std::string> available;
  for (const auto& entry : fs::directory_iterator(options.input))
    if (entry.is_directory() && !hidden(entry.path()))
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
    plan.push_back(list_domain(options.input / name, name));
  }
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec || !fs::is_directory(options.out))
    throw InputError("cannot create the output directory '" + options.out.string() + "' (" +
                     (ec ? ec.message() : std::string("a file is in the way")) +
                     "): pass --out a writable directory");
  return plan;
}

std::vector<char> serialize(const std::vector<DomainPlan>& plan) {
  ByteWriter w;
  w.u64(plan.size());
  for (const auto& d : plan) {
    w.str(d.name);
    w.str(d.source);
    w.u64(d.files.size());
    for (const auto& f : d.files) {
      w.str(f.relative);
      w.u64(f.size);
      w.u64(static_cast<std::uint64_t>(f.kind));
    }
  }
  return w.data;
}

std::vector<DomainPlan> deserialize(const std::vector<char>& data) {
  ByteReader r(data);
  std::vector<DomainPlan> plan(r.u64());
  for (auto& d : plan) {
    d.name = r.str();
    d.source = r.str();
    d.files.resize(r.u64());
    for (auto& f : d.files) {
      f.relative = r.str();
      f.size = r.u64();
      f.kind = static_cast<FileKind>(r.u64());
    }
  }
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
    const InputFile& f = domain.files[i];
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

// Deterministic assignment of files to ranks: largest first onto the least-loaded rank.
std::vector<int> assign_files(const std::vector<InputFile>& files, std::size_t count, int ranks) {
  std::vector<std::size_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return files[a].size > files[b].size; });
  std::vector<std::uint64_t> load(static_cast<std::size_t>(ranks), 0);
  std::vector<int> owner(count, 0);
  for (std::size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    owner[i] = static_cast<int>(least);
    load[static_cast<std::size_t>(least)] += std::max<std::uint64_t>(files[i].size, 1);
  }
  return owner;
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
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
  std::vector<std::uint16_t> tokens;
};

PreparedDomain prepare_domain(const PrepareOptions& options, const DomainPlan& domain,
                              const Tokenizer& tokenizer, MpiComm& comm, std::ostream* log) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const bool root = comm.rank() == 0;
  const fs::path dir = options.input / domain.name;
  const bool need_utf8 = tokenizer.name() == "gpt2";
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };

  // 1. The cap (rank 0 reads ahead as far as it needs), then who reads which file.
  Cutoff cut;
  agreed_on_root(
      comm, [&] { cut = find_cutoff(domain, dir, options.max_mb, options.reader, need_utf8); });
  comm.broadcast(&cut, sizeof(cut), 0);
  const std::vector<int> owner = assign_files(domain.files, cut.files, comm.size());
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

  // 2. Each rank tokenizes its files.
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
  double my_seconds = 0;
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
                       mine.u64(i);
                       mine.u64(index++);
                       mine.u64(text.size());
                       mine.u64(tokens.size());
                       mine.raw(tokens.data(), tokens.size() * sizeof(std::uint16_t));
                       my_bytes += text.size();
                       if (root && log && seconds_since(last_report) > 10) report();
                     });
    }
    my_seconds = seconds_since(work_start);
  });

  // Throughput of every rank that had work.
  const double my_stats[2] = {static_cast<double>(my_bytes), my_seconds};
  std::vector<double> stats(2 * static_cast<std::size_t>(comm.size()));
  comm.allgather(my_stats, stats.data(), sizeof(my_stats));

  // 3. Rank 0 puts the documents in order, splits them and writes the domain.
  const auto gathered = comm.gather_to_root(mine.data);
  mine.data = {};
  PreparedDomain result;
  result.domain = domain.name;
  result.file = corpus_path(options.out, domain.name);
  agreed_on_root(comm, [&] {
    std::vector<Document> docs;
    for (const auto& buffer : gathered) {
      ByteReader r(buffer);
      while (!r.done()) {
        Document d;
        d.file = static_cast<std::uint32_t>(r.u64());
        d.index = static_cast<std::uint32_t>(r.u64());
        d.bytes = r.u64();
        d.tokens.resize(r.u64());
        r.raw(d.tokens.data(), d.tokens.size() * sizeof(std::uint16_t));
        docs.push_back(std::move(d));
      }
    }
    std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) {
      return a.file != b.file ? a.file < b.file : a.index < b.index;
    });
    const std::size_t n = docs.size();
    if (n == 0)
      throw InputError(dir.string() + ": domain '" + domain.name + "' has no documents (its " +
                       std::to_string(cut.files) +
                       " files are empty): add text or leave it out of --domains");
    const auto share = [n](double fraction) -> std::size_t {
      return fraction > 0
                 ? std::max<std::size_t>(
                       1, static_cast<std::size_t>(std::llround(fraction * static_cast<double>(n))))
                 : 0;
    };
    const std::size_t n_valid = share(options.valid_fraction),
                      n_test = share(options.test_fraction);
    if (n_valid + n_test >= n) {
      const bool whole_txt =
          !options.reader.splits_text() &&
          std::any_of(domain.files.begin(), domain.files.begin() + static_cast<long>(cut.files),
                      [](const InputFile& f) { return f.kind == FileKind::Text; });
      throw InputError(
          dir.string() + ": domain '" + domain.name + "' has only " + std::to_string(n) +
          " document" + (n == 1 ? "" : "s") + ", too few for a train split beside " +
          std::to_string(n_valid) + " valid and " + std::to_string(n_test) +
          " test documents: add documents or lower --valid-fraction / --test-fraction" +
          (whole_txt ? " (a .txt file is one document: cut large ones into documents with "
                       "--split-lines N or --split-blank-lines)"
                     : ""));
    }
    // A seeded permutation picks the valid and test documents; each split keeps the order.
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    Rng rng(mix64(options.seed ^ fnv1a(domain.name)));
    for (std::size_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[static_cast<std::size_t>(rng.next_u64() % (i + 1))]);
    std::vector<std::uint8_t> split_of(n, static_cast<std::uint8_t>(Split::Train));
    for (std::size_t k = 0; k < n_valid + n_test; ++k)
      split_of[order[k]] = static_cast<std::uint8_t>(k < n_valid ? Split::Valid : Split::Test);

    std::vector<std::uint16_t> splits[3];
    CorpusInfo info;
    info.domain = domain.name;
    info.tokenizer = tokenizer.name();
    info.vocab_size = tokenizer.vocab_size();
    info.eot_token = tokenizer.eot_token();
    info.text_key = options.reader.text_key;
    info.txt_documents = options.reader.txt_documents();
    std::int64_t files_used = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const int s = split_of[i];
      splits[s].insert(splits[s].end(), docs[i].tokens.begin(), docs[i].tokens.end());
      ++info.docs[s];
      info.bytes[s] += static_cast<std::int64_t>(docs[i].bytes);
      if (i == 0 || docs[i].file != docs[i - 1].file) ++files_used;
    }
    std::ostringstream source;
    if (!domain.source.empty()) source << domain.source << "\n";
    source << "btm prepare: " << dir.string() << ", " << files_used << " files, " << n
           << " documents";
    if (options.max_mb > 0) source << " (capped at " << fixed(options.max_mb, 1) << " MB)";
    source << ", seed " << options.seed;
    info.source = source.str();
    write_corpus(result.file, info, splits);
    result.files = files_used;
    for (int s = 0; s < 3; ++s) {
      result.docs[s] = info.docs[s];
      result.bytes[s] = info.bytes[s];
      result.tokens[s] = static_cast<std::int64_t>(splits[s].size());
    }
  });
  // Every rank returns the same summary.
  comm.broadcast(&result.files, sizeof(result.files), 0);
  comm.broadcast(result.docs, sizeof(result.docs), 0);
  comm.broadcast(result.bytes, sizeof(result.bytes), 0);
  comm.broadcast(result.tokens, sizeof(result.tokens), 0);
  result.seconds = seconds_since(start);
  comm.broadcast(&result.seconds, sizeof(result.seconds), 0);
  double min_rate = std::numeric_limits<double>::max(), sum_rate = 0;
  int working = 0;
  for (int r = 0; r < comm.size(); ++r) {
    const double bytes = stats[2 * static_cast<std::size_t>(r)];
    const double secs = stats[2 * static_cast<std::size_t>(r) + 1];
    if (bytes <= 0 || secs <= 0) continue;
    const double rate = bytes / kMB / secs;
    min_rate = std::min(min_rate, rate);
    sum_rate += rate;
    ++working;
  }
  result.rank_mb_per_s_min = working ? min_rate : 0;
  result.rank_mb_per_s_mean = working ? sum_rate / working : 0;

  if (root && log) {
    const std::int64_t bytes = result.bytes[0] + result.bytes[1] + result.bytes[2];
    const std::int64_t tokens = result.tokens[0] + result.tokens[1] + result.tokens[2];
    *log << "prepare: " << domain.name << ": " << result.docs[0] << "/" << result.docs[1] << "/"
         << result.docs[2] << " documents (train/valid/test), "
         << fixed(static_cast<double>(bytes) / kMB, 2) << " MB, " << tokens << " tokens ("
         << result.tokens[0] << "/" << result.tokens[1] << "/" << result.tokens[2] << "), "
         << fixed(
                static_cast<double>(bytes) / static_cast<double>(std::max<std::int64_t>(tokens, 1)),
                2)
         << " bytes/token; " << fixed(result.seconds, 1) << " s, tokenizing at "
         << fixed(result.rank_mb_per_s_mean, 2) << " MB/s per rank (slowest "
         << fixed(result.rank_mb_per_s_min, 2) << "), "
         << fixed(static_cast<double>(bytes) / kMB / std::max(result.seconds, 1e-9), 2)
         << " MB/s in all -> " << result.file.string() << "\n"
         << std::flush;
  }
  return result;
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
  agreed_on_root(comm, [&] { plan_bytes = serialize(make_plan(options)); });
  comm.broadcast_vector(plan_bytes, 0);
  const std::vector<DomainPlan> plan = deserialize(plan_bytes);
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
    results.push_back(prepare_domain(options, domain, *tokenizer, comm, log));
  return results;
}

}  // namespace btm
