// byte_buffer.hpp (private to src/data): records packed into a byte buffer, to pass between
// ranks (MpiComm::broadcast_vector, MpiComm::gather_to_root). Binary rather than JSON: paths and
// SOURCE texts may hold any bytes, and token arrays stay two bytes a token.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "btm/util/error.hpp"

namespace btm {

class ByteWriter {
 public:
  void u64(std::uint64_t v) { raw(&v, sizeof(v)); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) {
    const auto* c = static_cast<const char*>(p);
    data.insert(data.end(), c, c + n);
  }
  std::vector<char> data;
};

// Reads what a ByteWriter wrote; SystemError if the buffer ends early.
class ByteReader {
 public:
  ByteReader(const char* p, std::size_t n) : p_(p), end_(p + n) {}
  explicit ByteReader(const std::vector<char>& data) : ByteReader(data.data(), data.size()) {}
  std::uint64_t u64() {
    std::uint64_t v;
    raw(&v, sizeof(v));
    return v;
  }
  std::string str() {
    std::string s(u64(), '\0');
    raw(s.data(), s.size());
    return s;
  }
  void raw(void* out, std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      throw SystemError("prepare: short message between ranks");
    if (n) std::memcpy(out, p_, n);
    p_ += n;
  }
  bool done() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

}  // namespace btm
