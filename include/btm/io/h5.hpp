// h5.hpp: a thin RAII layer over the HDF5 C API (files, groups, datasets, attributes) and the
// atomic file writer that every output of btm goes through. Every call is checked (BTM_H5).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace btm::h5 {

// Owns one hid_t and closes it with the right H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();

 private:
  hid_t id_ = -1;
};

// Silences HDF5's own error printing; btm reports errors itself, naming the file.
void quiet_errors();
// Marks the calling thread as a background writer (io/checkpoint_writer): its dataset writes go
// in slabs of one chunk with a pause between them. HDF5's thread-safe build holds one lock for
// a whole call and hands it back unfairly: a thread that writes slab after slab keeps it, and
// the training thread's reads (a corpus, a checkpoint's attributes) wait for most of the file.
void yield_to_other_threads(bool on);

Handle create_file(const std::filesystem::path& path);            // truncates
Handle open_file(const std::filesystem::path& path, bool write);  // InputError if unreadable
Handle create_group(hid_t parent, const std::string& name);
Handle open_group(hid_t parent, const std::string& name);
bool exists(hid_t parent, const std::string& name);
std::vector<std::string> children(hid_t group);

// Attributes (scalars, strings, vectors).
void set_attr(hid_t obj, const std::string& name, std::int64_t value);
void set_attr(hid_t obj, const std::string& name, double value);
void set_attr(hid_t obj, const std::string& name, const std::string& value);
void set_attr(hid_t obj, const std::string& name, const std::vector<double>& value);
void set_attr(hid_t obj, const std::string& name, const std::vector<std::string>& value);
bool has_attr(hid_t obj, const std::string& name);
std::int64_t get_int(hid_t obj, const std::string& name);
double get_double(hid_t obj, const std::string& name);
std::string get_string(hid_t obj, const std::string& name);
std::vector<double> get_doubles(hid_t obj, const std::string& name);
std::vector<std::string> get_strings(hid_t obj, const std::string& name);

// 1-D and 2-D datasets. Checksummed ones are chunked with HDF5's Fletcher32 filter, verified
// by HDF5 on every read (a damaged chunk fails the read: read_array says so, naming the
// dataset); contiguous ones can be memory-mapped (the corpora's token arrays, which carry a
// CRC-32 attribute of their own instead).
enum class Storage { checksummed, contiguous };
template <typename T>
void write_array(hid_t parent, const std::string& name, const T* data, std::size_t n,
                 Storage storage = Storage::checksummed);
template <typename T>
void write_matrix(hid_t parent, const std::string& name, const T* data, std::size_t rows,
                  std::size_t cols, Storage storage = Storage::checksummed);
template <typename T>
std::vector<T> read_array(hid_t parent, const std::string& name);
// Shape of a dataset (empty for a scalar).
std::vector<std::size_t> shape(hid_t parent, const std::string& name);
// Reads n elements starting at `start` of a 1-D dataset into out.
template <typename T>
void read_range(hid_t parent, const std::string& name, std::size_t start, std::size_t n, T* out);

// A 1-D dataset of UTF-8 strings (h5py: f[name].asstr()[:]). Not checksummed: HDF5 applies no
// filter to variable-length data (its heap holds the strings).
void write_strings(hid_t parent, const std::string& name, const std::vector<std::string>& values);
std::vector<std::string> read_strings(hid_t parent, const std::string& name);

// Dimension scales (HDF5's H5DS API; h5py: f[name].dims[dim].label and f[name].dims[dim][0]):
// the 1-D dataset `scale` of `parent` becomes a dimension scale, attached to dimension `dim` of
// `dataset`, whose label becomes `label`. make_scale once per scale, then attach it anywhere.
void make_scale(hid_t parent, const std::string& scale);
void attach_scale(hid_t parent, const std::string& dataset, unsigned dim, const std::string& scale,
                  const std::string& label);

// The "units" attribute of dataset `dataset` of `parent` (h5py: f[name].attrs["units"]): what
// its numbers count, e.g. "tokens", "nats/token", "tokens/s", "ms"; units_of gives "" if none.
void set_units(hid_t parent, const std::string& dataset, const std::string& units);
std::string units_of(hid_t parent, const std::string& dataset);

// Writes a whole file atomically: the file is built at PATH.tmp.<pid>, flushed, fsync-ed and
// renamed over PATH (and the directory fsync-ed). If anything throws before commit(), the
// temporary file is removed and PATH is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  hid_t root() const { return file_.get(); }
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  Handle file_;
  bool committed_ = false;
};

// Bytes free for an unprivileged writer on the filesystem of `dir` (statvfs; 0 if unknown).
std::uint64_t free_bytes(const std::filesystem::path& dir);

// fsync a file or directory by path.
void fsync_path(const std::filesystem::path& path);

}  // namespace btm::h5
