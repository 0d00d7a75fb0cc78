// atomic_dir.hpp: a directory written as a whole (btm export's model directory), the directory
// form of h5::AtomicFile: its files are built in DIR.tmp.<pid> beside it, fsync-ed, and the
// directory is renamed to DIR at commit(). If anything throws before commit(), the temporary
// directory is removed and DIR is untouched. An existing DIR is refused, or with `replace`
// swapped out only once the new one is complete.
#pragma once

#include <filesystem>

namespace btm {

class AtomicDir {
 public:
  // InputError if `path` exists (and is not an empty directory) without `replace`.
  AtomicDir(std::filesystem::path path, bool replace);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  const std::filesystem::path& tmp() const { return tmp_; }  // write the files here
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  bool replace_ = false, committed_ = false;
};

}  // namespace btm
