// input_plan.cpp: the listing of prepare's and cluster's input files (input_plan.hpp).
#include "input_plan.hpp"

#include <algorithm>
#include <cctype>
#include <numeric>

#include "btm/util/error.hpp"
#include "byte_buffer.hpp"

namespace btm::input {

namespace fs = std::filesystem;

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

DomainPlan list_domain(const fs::path& dir, const std::string& name, bool labelled) {
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
  const std::string kinds =
      " other files): put .txt files (one document each) or .jsonl / .jsonl.gz "
      "files (one {\"text\": ...} object per line) in it";
  if (plan.files.empty() && labelled)
    throw InputError(dir.string() + ": domain '" + name + "' has no usable files (" +
                     std::to_string(ignored) + kinds + ", or leave it out of --domains");
  if (plan.files.empty())
    throw InputError(dir.string() + ": the corpus is empty, no usable files in it or below it (" +
                     std::to_string(ignored) + kinds);
  if (fs::is_regular_file(dir / "SOURCE")) {
    plan.source = read_whole_file(dir / "SOURCE");
    while (!plan.source.empty() && std::isspace(static_cast<unsigned char>(plan.source.back())))
      plan.source.pop_back();
  }
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

void agreed_on_root(MpiComm& comm, const std::function<void()>& fn) {
  collective_check(comm, [&] {
    if (comm.rank() == 0) fn();
  });
}

}  // namespace btm::input
