#include "btm/io/safetensors.hpp"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm::safetensors {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; btm reads it in place");

namespace {

// The header's size limit of the reference implementation (100 MB): a larger length is damage.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

// Bytes per element of every dtype of the format (0: not a safetensors dtype).
std::size_t element_bytes(const std::string& dtype) {
  static const std::map<std::string, std::size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

TensorInfo parse_entry(const std::string& name, const json& entry, std::uint64_t data_bytes) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object()) throw InputError(where + ": its header entry is not a JSON object");
  TensorInfo t;
  t.name = name;
  if (!entry.contains("dtype") || !entry["dtype"].is_string())
    throw InputError(where + ": no \"dtype\" string in its header entry");
  t.dtype = entry["dtype"].get<std::string>();
  const std::size_t bytes = element_bytes(t.dtype);
  if (bytes == 0)
    throw InputError(where + ": unknown dtype '" + t.dtype +
                     "' (safetensors dtypes: F32, F16, BF16, F64, F8_E4M3, F8_E5M2, I8-I64, "
                     "U8-U64, BOOL)");
  if (!entry.contains("shape") || !entry["shape"].is_array())
    throw InputError(where + ": no \"shape\" array in its header entry");
  std::size_t elements = 1;
  for (const json& d : entry["shape"]) {
    if (!d.is_number_unsigned())
      throw InputError(where + ": its shape holds '" + d.dump() + "', not a size");
    t.shape.push_back(d.get<std::size_t>());
    elements *= t.shape.back();
  }
  const json& offsets = entry.value("data_offsets", json());
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    throw InputError(where + ": no \"data_offsets\" [begin, end] in its header entry");
  t.begin = offsets[0].get<std::size_t>();
  t.end = offsets[1].get<std::size_t>();
  if (t.end < t.begin)
    throw InputError(where + ": data_offsets [" + std::to_string(t.begin) + ", " +
                     std::to_string(t.end) + "] end before they begin");
  if (t.end - t.begin != elements * bytes)
    throw InputError(where + ": data_offsets hold " + std::to_string(t.end - t.begin) +
                     " bytes, its shape " + shape_text(t.shape) + " of " + t.dtype + " needs " +
                     std::to_string(elements * bytes));
  if (t.end > data_bytes)
    throw InputError(where + ": its data [" + std::to_string(t.begin) + ", " +
                     std::to_string(t.end) + ") runs past the end of the file (" +
                     std::to_string(data_bytes) +
                     " data bytes): the file is truncated; copy or download it again");
  return t;
}

}  // namespace

const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::f32:
      return "F32";
    case Dtype::f16:
      return "F16";
    case Dtype::bf16:
      return "BF16";
  }
  return "?";
}

std::size_t TensorInfo::elements() const {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

Reader::Reader(fs::path file) : file_(std::move(file)) {
  const std::string where = file_.string();
  std::ifstream in(file_, std::ios::binary);
  if (!fs::is_regular_file(file_) || !in) throw InputError(where + ": not found or unreadable");
  const std::uint64_t size = fs::file_size(file_);
  unsigned char length[8];
  if (size < 8 || !in.read(reinterpret_cast<char*>(length), 8))
    throw InputError(where + ": shorter than the 8-byte header length: not a safetensors file");
  std::memcpy(&header_bytes_, length, 8);
  if (header_bytes_ > kMaxHeaderBytes || header_bytes_ > size - 8)
    throw InputError(where + ": header length " + std::to_string(header_bytes_) +
                     " does not fit in the file of " + std::to_string(size) +
                     " bytes: truncated, or not a safetensors file");
  std::string text(header_bytes_, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(header_bytes_)))
    throw InputError(where + ": cannot read its header");
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(where + ": its header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw InputError(where + ": its header is not a JSON object");
  const std::uint64_t data_bytes = size - 8 - header_bytes_;
  try {
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) throw InputError("__metadata__ is not a JSON object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string())
            throw InputError("__metadata__ value of '" + key + "' is not a string");
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_entry(name, entry, data_bytes));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (std::size_t i = 1; i < tensors_.size(); ++i)
      if (tensors_[i].begin < tensors_[i - 1].end)
        throw InputError("tensor '" + tensors_[i].name + "': its data overlaps that of '" +
                         tensors_[i - 1].name + "'");
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
}

const TensorInfo* Reader::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<unsigned char> Reader::read_bytes(const TensorInfo& t) const {
  std::vector<unsigned char> bytes(t.end - t.begin);
  std::ifstream in(file_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(data_start() + t.begin));
  if (!in ||
      !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size())))
    throw InputError(file_.string() + ": tensor '" + t.name +
                     "': cannot read its data (the file changed or is truncated)");
  return bytes;
}

std::vector<float> Reader::read_f32(const TensorInfo& t) const {
  if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16")
    throw InputError(file_.string() + ": tensor '" + t.name + "' has dtype " + t.dtype +
                     ", btm reads F32, F16 or BF16 weights: save the model in one of them "
                     "(model.to(torch.float32).save_pretrained(DIR))");
  const std::vector<unsigned char> bytes = read_bytes(t);
  std::vector<float> out(t.elements());
  if (t.dtype == "F32") {
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, bytes.data() + 2 * i, 2);
    out[i] = t.dtype == "BF16" ? float_from_bf16(bits) : float_from_f16(bits);
  }
  return out;
}

void write_file(const fs::path& file, const std::vector<TensorData>& tensors, Dtype dtype,
                const std::map<std::string, std::string>& metadata) {
  if (dtype == Dtype::f16) throw std::invalid_argument("safetensors::write_file: F16 not written");
  const std::size_t bytes = dtype == Dtype::f32 ? 4 : 2;
  json header = json::object();
  std::set<std::string> names;
  std::size_t offset = 0;
  for (const TensorData& t : tensors) {
    std::size_t n = 1;
    for (std::size_t d : t.shape) n *= d;
    if (n != t.values.size() || !names.insert(t.name).second || t.name == "__metadata__")
      throw std::invalid_argument("safetensors::write_file: tensor '" + t.name +
                                  "' repeats or does not match its shape");
    header[t.name] = {{"dtype", dtype_name(dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + n * bytes}}};
    offset += n * bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the data starts 8-byte aligned
  const std::uint64_t length = text.size();

  const fs::path tmp = file.string() + ".tmp." + std::to_string(::getpid());
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw SystemError("cannot create " + tmp.string());
      out.write(reinterpret_cast<const char*>(&length), 8);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
      std::vector<std::uint16_t> half;
      for (const TensorData& t : tensors) {
        if (dtype == Dtype::f32) {
          out.write(reinterpret_cast<const char*>(t.values.data()),
                    static_cast<std::streamsize>(t.values.size() * 4));
        } else {
          half.resize(t.values.size());
          for (std::size_t i = 0; i < half.size(); ++i) half[i] = bf16_from_float(t.values[i]);
          out.write(reinterpret_cast<const char*>(half.data()),
                    static_cast<std::streamsize>(half.size() * 2));
        }
      }
      out.flush();
      if (!out) throw SystemError("cannot write " + tmp.string() + " (disk full?)");
    }
    h5::fsync_path(tmp);
    fs::rename(tmp, file);
    h5::fsync_path(file.parent_path().empty() ? fs::path(".") : file.parent_path());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

std::uint16_t bf16_from_float(float value) {
  std::uint32_t u;
  std::memcpy(&u, &value, 4);
  if (std::isnan(value)) return static_cast<std::uint16_t>((u >> 16) | 0x0040);  // stays NaN
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<std::uint16_t>(u >> 16);
}

float float_from_bf16(std::uint16_t bits) {
  const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float float_from_f16(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000) << 16;
  const int exponent = (bits >> 10) & 0x1F;
  const std::uint32_t mantissa = bits & 0x3FF;
  float magnitude;
  if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero and subnormals
  else if (exponent == 31)
    magnitude =
        mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  std::uint32_t u;
  std::memcpy(&u, &magnitude, 4);
  u |= sign;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace btm::safetensors
