// bias.cpp: the kernel cases of bias_backward (kernels/bias.cu), the column sums of dout added to
// dbias, against the CPU's matmul backward with one input channel (double column sums); dout
// may start `offset` bf16 into its array (off the 16-byte alignment).
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/matmul.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class BiasBackward final : public Run {
 public:
  BiasBackward(int N, int OC, int offset) : N_(N), OC_(OC), offset_(offset) {
    padded_ = random_bf16_values(static_cast<std::size_t>(N) * OC + offset, 1.0f, 52);
    old_db_ = random_floats(OC, -1, 1, 53);
    d_dout_ = to_device_bf16(padded_);
    d_db_ = to_device(old_db_);  // += semantics
    d_scratch_ = poisoned<float>(bias_backward_scratch_floats(OC));
    restored("dbias", d_db_, old_db_);
    output("scratch", d_scratch_, bias_backward_scratch_floats(OC));
  }
  void run(cudaStream_t stream) override {
    bias_backward(d_db_.get(), d_scratch_.get(), d_dout_.get() + offset_, N_, OC_, stream);
  }
  void check(CaseJudge& judge) override {
    const std::vector<float> dout(padded_.begin() + offset_, padded_.end());
    auto want = old_db_;
    std::vector<float> inp(N_, 1.0f), w(OC_, 0.0f), dinp(N_), dw(OC_, 0.0f);
    cpu::matmul_backward(dinp.data(), dw.data(), want.data(), dout.data(), inp.data(), w.data(), N_,
                         1, OC_);
    judge.compare("dbias", from_device(d_db_, OC_), want);
  }

 private:
  int N_, OC_, offset_;
  std::vector<float> padded_, old_db_;
  DeviceArray<bf16> d_dout_;
  DeviceArray<float> d_db_, d_scratch_;
};

}  // namespace

// Bytes: dout read, dbias read and written.
KernelCase bias_backward_case(int N, int OC, int offset) {
  const double n = static_cast<double>(N) * OC;
  return make_case("bias_backward", {{"N", N}, {"OC", OC}},
                   offset ? "offset" + std::to_string(offset) : "", n, n * kBf16 + 2.0 * OC * kF32,
                   [=] { return std::make_unique<BiasBackward>(N, OC, offset); });
}

}  // namespace btm::cuda::cases
