// CPU kernels for the structural ops of ops/basic.cpp that compute nothing: reshape and flatten (the same bytes
// under a new shape: nothing to do when the planner let the output share the input's buffer, else one copy) and
// fill (the autodiff seed: every element set to attr `value`). Plain layout only (no layout rule: the layout pass
// reorders a blocked input to plain first, as for the reference kernels these replace). run() allocates nothing.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/backend.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr size_t kParallelBytes = size_t(1) << 20;  // copies below this run on one thread

// reshape / flatten: x -> y, same bytes
struct SameBytes : Kernel {
  size_t bytes;
  explicit SameBytes(const KernelCtx& c) : bytes(c.in[0].bytes()) {}
  std::string impl() const override { return "native copy"; }
  void run(const RunCtx& r) override {
    if (r.out[0] == r.in[0]) return;
    const char* x = static_cast<const char*>(r.in[0]);
    char* y = static_cast<char*>(r.out[0]);
    const int64_t chunk = int64_t(kParallelBytes), n = int64_t(bytes), pieces = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (pieces > 1)
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t b = p * chunk;
      std::memcpy(y + b, x + b, size_t(std::min(chunk, n - b)));
    }
  }
};

// fill: () -> y (float32: the cpu backend computes in float32 only)
struct Fill : Kernel {
  int64_t n;
  float value;
  explicit Fill(const KernelCtx& c) : n(numel(c.out[0].shape)), value(float(c.node.attrs.f("value", 0.0))) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override { std::fill_n(static_cast<float*>(r.out[0]), n, value); }
};

std::unique_ptr<Kernel> make_same_bytes(const KernelCtx& c) { return std::make_unique<SameBytes>(c); }

KernelRegistrar r1("cpu", "reshape", make_same_bytes);
KernelRegistrar r2("cpu", "flatten", make_same_bytes);
KernelRegistrar r3("cpu", "fill", [](const KernelCtx& c) { return std::make_unique<Fill>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
