// safetensors.hpp: the safetensors file format (Hugging Face's weights-only tensor file):
//   8 bytes   N, the header length, little-endian uint64
//   N bytes   JSON: {NAME: {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]},
//                    ..., "__metadata__": {KEY: "string value", ...}}
//   the data  each tensor's bytes, row-major, little-endian, at [begin, end) from the data start
// The reader checks the whole header against the file before any tensor is read (every entry's
// dtype, shape, and offsets inside the data, without overlaps), so a truncated or damaged file
// is refused naming the tensor; it converts F32, F16 and BF16 tensors to fp32. The writer
// stores fp32 values as F32 or BF16 (round to nearest even), written atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace btm::safetensors {

// The dtypes btm converts (any other dtype of the format is read in the header and refused
// only when its tensor is read as fp32).
enum class Dtype { f32, f16, bf16 };
const char* dtype_name(Dtype dtype);  // "F32", "F16", "BF16"

struct TensorInfo {
  std::string name;
  std::string dtype;  // as in the header: "F32", "BF16", "I64", ...
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0;  // byte offsets from the start of the data
  std::size_t elements() const;
};

class Reader {
 public:
  // Opens `file` and checks its header; InputError naming the file (and the tensor) otherwise.
  explicit Reader(std::filesystem::path file);
  const std::filesystem::path& file() const { return file_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in offset order
  const TensorInfo* find(const std::string& name) const;               // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::uint64_t data_start() const { return 8 + header_bytes_; }
  // The tensor's values as fp32 (F32, F16 and BF16; InputError naming it for another dtype).
  std::vector<float> read_f32(const TensorInfo& tensor) const;
  // The tensor's bytes as stored.
  std::vector<unsigned char> read_bytes(const TensorInfo& tensor) const;

 private:
  std::filesystem::path file_;
  std::uint64_t header_bytes_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: fp32 values of `shape`, stored in the file's dtype.
struct TensorData {
  std::string name;
  std::vector<std::size_t> shape;
  std::span<const float> values;
};

// Writes `tensors` in the given order as `dtype` (F32 or BF16; F16 is refused) with `metadata`,
// atomically: FILE.tmp.PID, fsync, rename. SystemError on an I/O failure; std::invalid_argument
// if a tensor's values do not match its shape or names repeat (a bug of the caller).
void write_file(const std::filesystem::path& file, const std::vector<TensorData>& tensors,
                Dtype dtype, const std::map<std::string, std::string>& metadata);

// fp32 <-> the 16-bit formats (bf16: round to nearest even, NaN kept a NaN).
std::uint16_t bf16_from_float(float value);
float float_from_bf16(std::uint16_t bits);
float float_from_f16(std::uint16_t bits);

}  // namespace btm::safetensors
