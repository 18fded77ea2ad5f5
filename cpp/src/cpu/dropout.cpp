// CPU kernels for dropout and dropout_grad: native elementwise loops, OpenMP-parallel when large.
// The mask comes from the same counter-based function as the reference kernel (ops/dropout.hpp), so
// both backends, and any thread count, give bit-identical masks and outputs. May run in place;
// run() allocates nothing.
#include <cstring>

#include "cpu/dnnl_common.hpp"
#include "ops/dropout.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallelElems = 1 << 15;

struct DropoutFwd : Kernel {
  std::string name;
  int64_t n;
  bool training;
  uint64_t threshold = 0;
  float scale = 1.f;
  explicit DropoutFwd(const KernelCtx& c) : name(c.node.name), n(numel(c.in[0].shape)), training(c.out.size() == 2) {
    const double p = dropout::read_p(c.node);
    threshold = dropout::drop_threshold(p);
    scale = float(1.0 / (1.0 - p));
  }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    float* y = static_cast<float*>(r.out[0]);
    if (!training) {
      if (y != x) std::memcpy(y, x, size_t(n) * sizeof(float));
      return;
    }
    uint8_t* mask = static_cast<uint8_t*>(r.out[1]);
    const uint64_t key = dropout::stream_key(r.seed, r.step, name);
    const uint64_t thr = threshold;
    const float s = scale;
    const int64_t n_ = n;
#pragma omp parallel for simd schedule(static) if (n_ >= kParallelElems)
    for (int64_t i = 0; i < n_; ++i) {
      const uint8_t m = dropout::keep(key, i, thr);
      mask[i] = m;
      y[i] = x[i] * (float(m) * s);
    }
  }
};

// dy = in 0, mask = in 1 -> dx = out 0
struct DropoutBwd : Kernel {
  int64_t n;
  float scale;
  explicit DropoutBwd(const KernelCtx& c) : n(numel(c.in[0].shape)), scale(float(1.0 / (1.0 - dropout::read_p(c.node)))) {}
  void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    const uint8_t* mask = static_cast<const uint8_t*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    const float s = scale;
    const int64_t n_ = n;
#pragma omp parallel for simd schedule(static) if (n_ >= kParallelElems)
    for (int64_t i = 0; i < n_; ++i) dx[i] = dy[i] * (float(mask[i]) * s);
  }
};

KernelRegistrar r1("cpu", "dropout", [](const KernelCtx& c) { return std::make_unique<DropoutFwd>(c); });
KernelRegistrar r2("cpu", "dropout_grad", [](const KernelCtx& c) { return std::make_unique<DropoutBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
