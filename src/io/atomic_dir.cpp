#include "btm/io/atomic_dir.hpp"

#include <unistd.h>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

fs::path parent_of(const fs::path& path) {
  return path.parent_path().empty() ? fs::path(".") : path.parent_path();
}

bool empty_dir(const fs::path& path) {
  return fs::is_directory(path) && fs::is_empty(path);
}

}  // namespace

AtomicDir::AtomicDir(fs::path path, bool replace) : path_(std::move(path)), replace_(replace) {
  if (!path_.has_filename()) path_ = path_.parent_path();  // "out/" -> "out"
  if (fs::exists(path_) && !empty_dir(path_) && !replace_)
    throw InputError(path_.string() +
                     " exists: choose another --out, or give --force to replace it");
  if (fs::exists(path_) && !fs::is_directory(path_))
    throw InputError(path_.string() + " exists and is not a directory: choose another --out");
  std::error_code ec;
  fs::create_directories(parent_of(path_), ec);
  if (ec)
    throw InputError("cannot create " + parent_of(path_).string() + " (" + ec.message() + ")");
  tmp_ = path_.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp_, ec);
  if (!fs::create_directory(tmp_, ec) || ec)
    throw InputError("cannot create " + tmp_.string() + " (" + ec.message() +
                     "): choose another --out, or fix its permissions");
}

AtomicDir::~AtomicDir() {
  if (committed_) return;
  std::error_code ignored;
  fs::remove_all(tmp_, ignored);
}

void AtomicDir::commit() {
  for (const auto& entry : fs::directory_iterator(tmp_))
    if (entry.is_regular_file()) h5::fsync_path(entry.path());
  h5::fsync_path(tmp_);
  if (fs::exists(path_) && !empty_dir(path_)) {
    // Replace: the old directory goes aside first, so a crash leaves one complete copy.
    const fs::path old = path_.string() + ".old." + std::to_string(::getpid());
    fs::rename(path_, old);
    fs::rename(tmp_, path_);
    committed_ = true;
    fs::remove_all(old);
  } else {
    fs::rename(tmp_, path_);  // over an empty directory, or none
    committed_ = true;
  }
  h5::fsync_path(parent_of(path_));
}

}  // namespace btm
