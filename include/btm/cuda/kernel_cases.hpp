// kernel_cases.hpp: the kernel cases, one table (src/cuda/kernel_cases.cpp) of the CUDA kernels
// of cuda/kernels.hpp at given shapes, as ggml's test-backend-ops and the nccl-tests driver
// keep theirs: each case has a name, its shape, the GPU run, the fp32 CPU reference
// (cpu/kernels.hpp), the tolerance of every output it compares (normalised errors, an absolute
// error or exact bits) and the FLOPs and bytes of one run. The table drives the GPU tests
// (tests/gpu/test_kernels.cpp: one parameterised test over it) and `btm bench --cases kernels`
// (every case timed, one JSON line each): a new case is one entry of the table.
// Every case also checks that two runs from the same state give the same bits (every kernel
// is deterministic). Only in builds with BTM_HAVE_CUDA; needs a GPU to run (not to list).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// How an output is judged against its reference.
struct Tolerance {
  enum class Kind { close, absolute, bits };
  Kind kind = Kind::bits;
  double max_norm = 0;  // close: bound of max|got - want| / max|want|; absolute: of max|got - want|
  double rel_l2 = 0;    // close: bound of ||got - want|| / ||want||

  // Both normalised errors at most these (gpu_test_util's BTM_EXPECT_CLOSE).
  static constexpr Tolerance close(double max_norm, double rel_l2) {
    return {Kind::close, max_norm, rel_l2};
  }
  static constexpr Tolerance absolute(double max_abs) { return {Kind::absolute, max_abs, 0}; }
  // Bitwise equal (NaN equal to the same NaN, 0 different from -0).
  static constexpr Tolerance bits() { return {Kind::bits, 0, 0}; }
};
std::string to_string(const Tolerance& t);  // "max-norm <= 0.01, rel L2 <= 0.005", "bits"

// One judgement of a case: an output against its reference, or a property.
struct CaseCheck {
  std::string what;  // "dinp", "dlogits (= out of place)", "run twice: dw"
  bool passed = false;
  std::string detail;  // the measured errors or the first differing element, and the bound
};

// Compares a case's outputs under the tolerances its table entry gives them, by output name.
// A comparison of an output the entry has no tolerance for fails, and so does (at finish) a
// tolerance no comparison used: the table says exactly what a case compares.
class CaseJudge {
 public:
  explicit CaseJudge(const std::vector<std::pair<std::string, Tolerance>>& tolerances);

  void compare(const std::string& output, std::span<const float> got, std::span<const float> want);
  void compare(const std::string& output, std::span<const double> got,
               std::span<const double> want);
  void compare(const std::string& output, double got, double want);
  // Integers: bits only.
  void compare(const std::string& output, std::span<const std::int64_t> got,
               std::span<const std::int64_t> want);
  // A property that needs no tolerance (the reference's own count, "all NaN", ...).
  void expect(const std::string& what, bool ok, const std::string& detail = {});

  std::vector<CaseCheck> finish();

 private:
  const Tolerance* find(const std::string& output);
  std::vector<std::pair<std::string, Tolerance>> tolerances_;
  std::vector<bool> used_;
  std::vector<CaseCheck> checks_;
};

// A case made ready on the device by KernelCase::setup: inputs drawn (seeded) and uploaded,
// outputs and scratch allocated, everything the reference needs kept on the host.
class CaseRun {
 public:
  virtual ~CaseRun() = default;
  // Puts every buffer that run() writes back as before the first run: outputs poisoned (NaN),
  // accumulated gradients at their starting values, in-place inputs at the inputs. Synchronous.
  virtual void reset() = 0;
  // The kernels under test enqueued on `stream`, and nothing else (no host work, no
  // synchronisation): what the benchmark times.
  virtual void run(cudaStream_t stream) = 0;
  // The bytes of every buffer run() writes, by name (synchronises the device).
  virtual std::vector<std::pair<std::string, std::vector<std::byte>>> written() const = 0;
  // After run() from reset(): the CPU reference and every comparison of the outputs through
  // `judge` (it may launch more, e.g. variants that must give the same bits).
  virtual void check(CaseJudge& judge) = 0;
};

struct KernelCase {
  std::string name;                                           // unique, [A-Za-z0-9_]
  std::string op;                                             // what runs: "layernorm_backward"
  std::vector<std::pair<std::string, long long>> shape;       // {"N", 9000}, {"C", 768}
  std::string variant;                                        // "accumulate", "wgmma", or ""
  std::vector<std::pair<std::string, Tolerance>> tolerances;  // per output compared
  double flops = 0;  // floating-point operations of one run
  double bytes = 0;  // bytes one run reads and writes, each input and output once
  // Why the case cannot run on this build and GPU ("" where it can); null: it always can.
  std::function<std::string()> unavailable;
  std::function<std::unique_ptr<CaseRun>()> setup;

  std::string shape_text() const;  // "N=9000 C=768"
};

// The table, built once (no device work: listing it needs no GPU).
const std::vector<KernelCase>& kernel_cases();

// Every judgement of one case: reset() and run() twice, the written buffers bitwise equal
// ("run twice: NAME"), then check() on the outputs of the second run.
std::vector<CaseCheck> check_case(const KernelCase& c);

// Mean milliseconds of one run() after `warmup` untimed runs, over `iterations` runs timed by
// CUDA events on one stream, from one reset().
double time_case_ms(const KernelCase& c, int warmup, int iterations);

// The benchmark's JSON line of a timed case: name, op, shape, ms, GB/s and TFLOP/s.
std::string case_json(const KernelCase& c, double ms, int iterations, const std::string& device);
// The line of a case that cannot run here, with the reason.
std::string case_skipped_json(const KernelCase& c, const std::string& why);

// `btm bench --cases kernels` on this GPU (device 0): a comment line, then one line per case whose
// name holds `filter`; InputError when none does.
void bench_kernel_cases(const std::string& filter, int warmup, int iterations, std::ostream& out);

}  // namespace btm::cuda
