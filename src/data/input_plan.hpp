// input_plan.hpp (private to src/data): the input files of `btm prepare` and `btm cluster`, as
// listed by rank 0 and broadcast (every rank works from one listing), the ranks' shares of them,
// and the agreement helper both commands run their rank-0 steps through.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "btm/data/readers.hpp"
#include "btm/dist/comm.hpp"

namespace btm::input {

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

// Files and folders whose name starts with a dot are not input.
bool hidden(const std::filesystem::path& p);

// Every document file under `dir` (recursively), sorted by path. InputError naming the
// directory when it has none: `labelled` says what to do for a domain folder of prepare,
// otherwise for the unlabelled corpus of btm cluster / prepare --clusters.
DomainPlan list_domain(const std::filesystem::path& dir, const std::string& name, bool labelled);

std::vector<char> serialize(const std::vector<DomainPlan>& plan);
std::vector<DomainPlan> deserialize(const std::vector<char>& data);

// Deterministic assignment of the first `count` files to ranks: largest first onto the
// least-loaded rank.
std::vector<int> assign_files(const std::vector<InputFile>& files, std::size_t count, int ranks);

std::uint64_t fnv1a(std::string_view s);

// `fn` on rank 0 only, its error (if any) thrown on every rank.
void agreed_on_root(MpiComm& comm, const std::function<void()>& fn);

}  // namespace btm::input
