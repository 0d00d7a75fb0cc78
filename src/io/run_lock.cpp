#include "btm/io/run_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <regex>

#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "?";
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof(text), "%F %T", std::localtime(&t));
  return text;
}

// NAME.h5.tmp.PID files of h5::AtomicFile in the run's folders.
std::vector<fs::path> stale_temporaries(const fs::path& run_dir) {
  static const std::regex temporary(R"(.*\.h5\.tmp\.[0-9]+)");
  std::vector<fs::path> found;
  for (const fs::path& dir : {run_dir, run_dir / "elms", run_dir / "metrics", run_dir / "corpus"}) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && std::regex_match(e.path().filename().string(), temporary))
        found.push_back(e.path());
  }
  return found;
}

}  // namespace

RunLock::RunLock(const fs::path& run_dir, const std::string& command) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  const fs::path file = run_dir / ".lock";
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw InputError("cannot write in " + run_dir.string() + " (" + std::strerror(errno) +
                     "): choose another run.dir, or fix its permissions");
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd_, F_SETLK, &lock) != 0) {
    const int error = errno;
    char holder[512] = {};
    const ssize_t n = ::pread(fd_, holder, sizeof(holder) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string who = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : "";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    if (error != EACCES && error != EAGAIN)
      throw InputError("cannot lock " + file.string() + " (" + std::strerror(error) +
                       "): the filesystem may not support locks; use a run.dir on one that does");
    throw InputError(run_dir.string() + " is in use by another btm" +
                     (who.empty() ? std::string() : " (" + who + ")") +
                     ": wait for it to finish or stop it, or use another run.dir; one writer at "
                     "a time keeps the forest consistent");
  }
  const std::string me = "host " + host_name() + ", pid " + std::to_string(::getpid()) + ", btm " +
                         command + ", since " + now_text() + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0)
    throw InputError("cannot write " + file.string() + " (" + std::strerror(errno) +
                     "): choose another run.dir, or fix its permissions or free space");
  for (const fs::path& p : stale_temporaries(run_dir))
    if (fs::remove(p, ec)) removed_.push_back(p);
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace btm
