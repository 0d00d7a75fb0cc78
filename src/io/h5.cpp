#include "btm/io/h5.hpp"

#include <hdf5_hl.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>

#include "btm/util/error.hpp"

namespace btm::h5 {

namespace fs = std::filesystem;

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    other.id_ = -1;
  }
  return *this;
}

void Handle::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE:
      H5Fclose(id_);
      break;
    case H5I_GROUP:
      H5Gclose(id_);
      break;
    case H5I_DATASET:
      H5Dclose(id_);
      break;
    case H5I_ATTR:
      H5Aclose(id_);
      break;
    case H5I_DATASPACE:
      H5Sclose(id_);
      break;
    case H5I_DATATYPE:
      H5Tclose(id_);
      break;
    case H5I_GENPROP_LST:
      H5Pclose(id_);
      break;
    default:
      break;
  }
  id_ = -1;
}

void quiet_errors() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

namespace {
thread_local bool yielding = false;  // yield_to_other_threads: a setting of the thread, as HDF5's
                                     // error settings are
}  // namespace

void yield_to_other_threads(bool on) {
  yielding = on;
}

namespace {

// Why a write to `file` failed: errno's text and the free space of its filesystem.
std::string write_failure(const fs::path& file) {
  const int error = errno;
  char free_text[64];
  std::snprintf(free_text, sizeof(free_text), "%.2f GB free there",
                static_cast<double>(
                    free_bytes(file.parent_path().empty() ? fs::path(".") : file.parent_path())) /
                    1e9);
  return std::string(error ? std::strerror(error) : "unknown cause") + "; " + free_text +
         (error == ENOSPC ? ": free space, or use a run.dir on a filesystem with room"
          : error == EACCES || error == EROFS ? ": fix the permissions, or use another run.dir"
                                              : "");
}

std::string file_of(hid_t obj) {
  const ssize_t n = H5Fget_name(obj, nullptr, 0);
  if (n <= 0) return "?";
  std::string name(static_cast<std::size_t>(n), '\0');
  H5Fget_name(obj, name.data(), name.size() + 1);
  return name;
}

}  // namespace

std::uint64_t free_bytes(const fs::path& dir) {
  struct statvfs s {};
  if (::statvfs(dir.c_str(), &s) != 0) return 0;
  return static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
}

Handle create_file(const fs::path& path) {
  errno = 0;
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0)
    throw SystemError("cannot create " + path.string() + " (" + write_failure(path) + ")");
  return Handle(id);
}

Handle open_file(const fs::path& path, bool write) {
  if (!fs::exists(path)) throw InputError(path.string() + ": file not found");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw InputError(path.string() + ": not an HDF5 file (truncated or of another format)");
  hid_t id = H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw InputError(path.string() + ": cannot open HDF5 file (corrupt or locked)");
  return Handle(id);
}

Handle create_group(hid_t parent, const std::string& name) {
  return Handle(BTM_H5(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
}

Handle open_group(hid_t parent, const std::string& name) {
  return Handle(BTM_H5(H5Gopen2(parent, name.c_str(), H5P_DEFAULT)));
}

bool exists(hid_t parent, const std::string& name) {
  return H5Lexists(parent, name.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> children(hid_t group) {
  std::vector<std::string> names;
  H5G_info_t info;
  BTM_H5(H5Gget_info(group, &info));
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = BTM_H5(
        H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
    std::string name(static_cast<std::size_t>(n), '\0');
    BTM_H5(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                              static_cast<std::size_t>(n) + 1, H5P_DEFAULT));
    names.push_back(name);
  }
  return names;
}

namespace {

template <typename T>
hid_t native_type() {
  if constexpr (std::is_same_v<T, float>)
    return H5T_NATIVE_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return H5T_NATIVE_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return H5T_NATIVE_INT64;
  else if constexpr (std::is_same_v<T, std::uint64_t>)
    return H5T_NATIVE_UINT64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return H5T_NATIVE_INT32;
  else if constexpr (std::is_same_v<T, std::uint16_t>)
    return H5T_NATIVE_UINT16;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return H5T_NATIVE_UINT8;
  else
    static_assert(sizeof(T) == 0, "unsupported HDF5 element type");
}

Handle string_type() {
  Handle type(BTM_H5(H5Tcopy(H5T_C_S1)));
  BTM_H5(H5Tset_size(type, H5T_VARIABLE));
  BTM_H5(H5Tset_cset(type, H5T_CSET_UTF8));
  return type;
}

void replace_attr(hid_t obj, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) > 0) BTM_H5(H5Adelete(obj, name.c_str()));
}

template <typename T>
void set_numeric_attr(hid_t obj, const std::string& name, const T* data, hsize_t n, bool scalar) {
  replace_attr(obj, name);
  Handle space(scalar ? BTM_H5(H5Screate(H5S_SCALAR)) : BTM_H5(H5Screate_simple(1, &n, nullptr)));
  Handle attr(
      BTM_H5(H5Acreate2(obj, name.c_str(), native_type<T>(), space, H5P_DEFAULT, H5P_DEFAULT)));
  if (scalar || n > 0) BTM_H5(H5Awrite(attr, native_type<T>(), data));
}

Handle open_attr(hid_t obj, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) <= 0) throw InputError("missing attribute '" + name + "'");
  return Handle(BTM_H5(H5Aopen(obj, name.c_str(), H5P_DEFAULT)));
}

hsize_t attr_elements(hid_t attr) {
  Handle space(BTM_H5(H5Aget_space(attr)));
  return static_cast<hsize_t>(BTM_H5(H5Sget_simple_extent_npoints(space)));
}

}  // namespace

void set_attr(hid_t obj, const std::string& name, std::int64_t value) {
  set_numeric_attr(obj, name, &value, 1, true);
}
void set_attr(hid_t obj, const std::string& name, double value) {
  set_numeric_attr(obj, name, &value, 1, true);
}
void set_attr(hid_t obj, const std::string& name, const std::vector<double>& value) {
  set_numeric_attr(obj, name, value.data(), value.size(), false);
}

void set_attr(hid_t obj, const std::string& name, const std::string& value) {
  replace_attr(obj, name);
  Handle type = string_type();
  Handle space(BTM_H5(H5Screate(H5S_SCALAR)));
  Handle attr(BTM_H5(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
  const char* p = value.c_str();
  BTM_H5(H5Awrite(attr, type, &p));
}

void set_attr(hid_t obj, const std::string& name, const std::vector<std::string>& value) {
  replace_attr(obj, name);
  Handle type = string_type();
  hsize_t n = value.size();
  Handle space(BTM_H5(H5Screate_simple(1, &n, nullptr)));
  Handle attr(BTM_H5(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
  std::vector<const char*> ptrs;
  for (const std::string& s : value) ptrs.push_back(s.c_str());
  if (n > 0) BTM_H5(H5Awrite(attr, type, ptrs.data()));
}

bool has_attr(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

std::int64_t get_int(hid_t obj, const std::string& name) {
  Handle attr = open_attr(obj, name);
  if (attr_elements(attr) != 1) throw InputError("attribute '" + name + "' is not a scalar");
  std::int64_t value = 0;
  BTM_H5(H5Aread(attr, H5T_NATIVE_INT64, &value));
  return value;
}

double get_double(hid_t obj, const std::string& name) {
  Handle attr = open_attr(obj, name);
  if (attr_elements(attr) != 1) throw InputError("attribute '" + name + "' is not a scalar");
  double value = 0;
  BTM_H5(H5Aread(attr, H5T_NATIVE_DOUBLE, &value));
  return value;
}

std::vector<double> get_doubles(hid_t obj, const std::string& name) {
  Handle attr = open_attr(obj, name);
  std::vector<double> values(attr_elements(attr));
  if (!values.empty()) BTM_H5(H5Aread(attr, H5T_NATIVE_DOUBLE, values.data()));
  return values;
}

std::vector<std::string> get_strings(hid_t obj, const std::string& name) {
  Handle attr = open_attr(obj, name);
  Handle stored(BTM_H5(H5Aget_type(attr)));
  if (H5Tget_class(stored) != H5T_STRING)
    throw InputError("attribute '" + name + "' is not a string");
  const hsize_t n = attr_elements(attr);
  std::vector<std::string> out;
  if (n == 0) return out;
  Handle type = string_type();
  if (H5Tis_variable_str(stored) > 0) {
    std::vector<char*> ptrs(n, nullptr);
    BTM_H5(H5Aread(attr, type, ptrs.data()));
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    Handle space(BTM_H5(H5Aget_space(attr)));
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, ptrs.data());
  } else {  // fixed-length strings (h5py writes these for numpy bytes)
    const std::size_t len = H5Tget_size(stored);
    std::vector<char> buf(len * n);
    BTM_H5(H5Aread(attr, stored, buf.data()));
    for (hsize_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      out.emplace_back(s, strnlen(s, len));
    }
  }
  return out;
}

std::string get_string(hid_t obj, const std::string& name) {
  std::vector<std::string> v = get_strings(obj, name);
  if (v.size() != 1) throw InputError("attribute '" + name + "' is not a single string");
  return v[0];
}

namespace {

// Chunks of about 1 MiB (whole rows of a matrix) with the Fletcher32 checksum, or contiguous.
Handle create_plist(int rank, const hsize_t* dims, std::size_t element_bytes, Storage storage) {
  Handle plist(BTM_H5(H5Pcreate(H5P_DATASET_CREATE)));
  const bool empty = dims[0] == 0 || (rank == 2 && dims[1] == 0);
  if (storage == Storage::contiguous || empty) return plist;
  const hsize_t target = std::max<hsize_t>(1, (hsize_t{1} << 20) / element_bytes);
  hsize_t chunk[2] = {std::min(dims[0], target), rank == 2 ? dims[1] : 1};
  if (rank == 2) chunk[0] = std::min(dims[0], std::max<hsize_t>(1, target / dims[1]));
  BTM_H5(H5Pset_chunk(plist, rank, chunk));
  BTM_H5(H5Pset_fletcher32(plist));
  return plist;
}

// H5Dread, failing with a message that says what a failure means here: a damaged chunk (its
// checksum does not match) or a truncated file.
void read_dataset(hid_t set, hid_t type, hid_t memory, hid_t file, void* out,
                  const std::string& name) {
  if (H5Dread(set, type, memory, file, H5P_DEFAULT, out) < 0)
    throw SystemError("dataset /" + name +
                      " could not be read: its checksum does not match (the file is damaged) or "
                      "the file is truncated");
}

}  // namespace

template <typename T>
void write_matrix(hid_t parent, const std::string& name, const T* data, std::size_t rows,
                  std::size_t cols, Storage storage) {
  hsize_t dims[2] = {rows, cols};
  const int rank = cols == 0 ? 1 : 2;
  Handle space(BTM_H5(H5Screate_simple(rank, dims, nullptr)));
  Handle plist = create_plist(rank, dims, sizeof(T), storage);
  Handle set(BTM_H5(
      H5Dcreate2(parent, name.c_str(), native_type<T>(), space, H5P_DEFAULT, plist, H5P_DEFAULT)));
  if (rows == 0 || (cols == 0 && rank == 2)) return;
  // In slabs: 64 MiB, or one chunk (1 MiB) with a pause after each on a thread that yields to
  // others (yield_to_other_threads): 1,500 pauses of 50 us add 0.08 s to a 124M checkpoint.
  const std::size_t row_bytes = sizeof(T) * (rank == 2 ? cols : 1);
  const hsize_t slab = std::max<hsize_t>(1, (hsize_t{yielding ? 1u : 64u} << 20) / row_bytes);
  for (hsize_t r0 = 0; r0 < rows; r0 += slab) {
    if (yielding && r0 > 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
    const hsize_t count[2] = {std::min<hsize_t>(slab, rows - r0), rank == 2 ? dims[1] : 1};
    const hsize_t start[2] = {r0, 0};
    Handle file_space(BTM_H5(H5Scopy(space)));
    BTM_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr));
    Handle memory(BTM_H5(H5Screate_simple(rank, count, nullptr)));
    errno = 0;
    if (H5Dwrite(set, native_type<T>(), memory, file_space, H5P_DEFAULT,
                 data + r0 * (rank == 2 ? cols : 1)) < 0) {
      const std::string file = file_of(parent);
      throw SystemError("cannot write dataset /" + name + " of " + file + " (" +
                        write_failure(file) + ")");
    }
  }
}

template <typename T>
void write_array(hid_t parent, const std::string& name, const T* data, std::size_t n,
                 Storage storage) {
  write_matrix(parent, name, data, n, 0, storage);
}

std::vector<std::size_t> shape(hid_t parent, const std::string& name) {
  if (!exists(parent, name)) throw InputError("missing dataset '" + name + "'");
  Handle set(BTM_H5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  Handle space(BTM_H5(H5Dget_space(set)));
  const int rank = static_cast<int>(BTM_H5(H5Sget_simple_extent_ndims(space)));
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) BTM_H5(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return {dims.begin(), dims.end()};
}

template <typename T>
std::vector<T> read_array(hid_t parent, const std::string& name) {
  std::size_t n = 1;
  for (std::size_t d : shape(parent, name)) n *= d;
  std::vector<T> out(n);
  Handle set(BTM_H5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  if (n > 0) read_dataset(set, native_type<T>(), H5S_ALL, H5S_ALL, out.data(), name);
  return out;
}

template <typename T>
void read_range(hid_t parent, const std::string& name, std::size_t start, std::size_t n, T* out) {
  Handle set(BTM_H5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  Handle file_space(BTM_H5(H5Dget_space(set)));
  hsize_t offset = start, count = n;
  BTM_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &offset, nullptr, &count, nullptr));
  Handle mem_space(BTM_H5(H5Screate_simple(1, &count, nullptr)));
  read_dataset(set, native_type<T>(), mem_space, file_space, out, name);
}

void write_strings(hid_t parent, const std::string& name, const std::vector<std::string>& values) {
  Handle type = string_type();
  const hsize_t n = values.size();
  Handle space(BTM_H5(H5Screate_simple(1, &n, nullptr)));
  Handle set(
      BTM_H5(H5Dcreate2(parent, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  std::vector<const char*> ptrs;
  for (const std::string& v : values) ptrs.push_back(v.c_str());
  if (n > 0) BTM_H5(H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()));
}

std::vector<std::string> read_strings(hid_t parent, const std::string& name) {
  const std::vector<std::size_t> dims = shape(parent, name);
  if (dims.size() != 1) throw InputError("dataset /" + name + " is not a 1-D list of strings");
  Handle set(BTM_H5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  Handle stored(BTM_H5(H5Dget_type(set)));
  if (H5Tget_class(stored) != H5T_STRING || H5Tis_variable_str(stored) <= 0)
    throw InputError("dataset /" + name + " does not hold variable-length strings");
  std::vector<char*> ptrs(dims[0], nullptr);
  Handle type = string_type();
  std::vector<std::string> out;
  if (ptrs.empty()) return out;
  read_dataset(set, type, H5S_ALL, H5S_ALL, ptrs.data(), name);
  for (char* p : ptrs) out.emplace_back(p ? p : "");
  Handle space(BTM_H5(H5Dget_space(set)));
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, ptrs.data());
  return out;
}

void make_scale(hid_t parent, const std::string& scale) {
  Handle set(BTM_H5(H5Dopen2(parent, scale.c_str(), H5P_DEFAULT)));
  BTM_H5(H5DSset_scale(set, scale.c_str()));
}

void attach_scale(hid_t parent, const std::string& dataset, unsigned dim, const std::string& scale,
                  const std::string& label) {
  Handle set(BTM_H5(H5Dopen2(parent, dataset.c_str(), H5P_DEFAULT)));
  Handle scale_set(BTM_H5(H5Dopen2(parent, scale.c_str(), H5P_DEFAULT)));
  BTM_H5(H5DSattach_scale(set, scale_set, dim));
  BTM_H5(H5DSset_label(set, dim, label.c_str()));
}

void set_units(hid_t parent, const std::string& dataset, const std::string& units) {
  Handle set(BTM_H5(H5Dopen2(parent, dataset.c_str(), H5P_DEFAULT)));
  set_attr(set, "units", units);
}

std::string units_of(hid_t parent, const std::string& dataset) {
  if (!exists(parent, dataset)) throw InputError("missing dataset '" + dataset + "'");
  Handle set(BTM_H5(H5Dopen2(parent, dataset.c_str(), H5P_DEFAULT)));
  return has_attr(set, "units") ? get_string(set, "units") : std::string();
}

#define BTM_H5_INSTANTIATE(T)                                                                  \
  template void write_array<T>(hid_t, const std::string&, const T*, std::size_t, Storage);     \
  template void write_matrix<T>(hid_t, const std::string&, const T*, std::size_t, std::size_t, \
                                Storage);                                                      \
  template std::vector<T> read_array<T>(hid_t, const std::string&);                            \
  template void read_range<T>(hid_t, const std::string&, std::size_t, std::size_t, T*);
BTM_H5_INSTANTIATE(float)
BTM_H5_INSTANTIATE(double)
BTM_H5_INSTANTIATE(std::int64_t)
BTM_H5_INSTANTIATE(std::uint64_t)
BTM_H5_INSTANTIATE(std::int32_t)
BTM_H5_INSTANTIATE(std::uint16_t)
BTM_H5_INSTANTIATE(std::uint8_t)
#undef BTM_H5_INSTANTIATE

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw SystemError("cannot open " + path.string() + " to fsync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw SystemError("fsync failed on " + path.string());
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  if (!path_.parent_path().empty()) fs::create_directories(path_.parent_path());
  tmp_ = path_;
  tmp_ += ".tmp." + std::to_string(::getpid());
  file_ = create_file(tmp_);
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  file_.reset();
  std::error_code ignored;
  fs::remove(tmp_, ignored);
}

namespace {

// Fault injection for tests/faults: BTM_FAULT_KILL_AT_COMMIT=N kills this process (SIGKILL) at
// its N-th commit, once the temporary file is complete and before it replaces the old one: the
// worst moment for an interrupted write.
void maybe_die_before_rename() {
  static int commits = 0;
  const char* at = std::getenv("BTM_FAULT_KILL_AT_COMMIT");
  if (at != nullptr && ++commits == std::atoi(at)) ::raise(SIGKILL);
}

}  // namespace

void AtomicFile::commit() {
  errno = 0;
  if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0)
    throw SystemError("cannot write " + tmp_.string() + " (" + write_failure(tmp_) + ")");
  file_.reset();
  fsync_path(tmp_);
  maybe_die_before_rename();
  fs::rename(tmp_, path_);
  fsync_path(path_.parent_path().empty() ? fs::path(".") : path_.parent_path());
  committed_ = true;
}

}  // namespace btm::h5
