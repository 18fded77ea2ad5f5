// Native CPU kernels for mse_loss, bce_with_logits and their *_grad ops (f32). Forward: the flat tensor is
// cut into fixed chunks of kChunk elements; each chunk's terms are summed in double into its scratch slot
// (in parallel), then the slots are summed in chunk order, so the loss is bit-identical for any thread
// count. Backward is elementwise and parallel over elements. Shapes were validated by ops/losses.cpp;
// run() allocates nothing (partial sums live in the session's scratch).
#include <algorithm>
#include <cmath>

#include "core/backend.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kChunk = 1 << 14;     // elements per partial sum
constexpr int64_t kParallel = 1 << 15;  // below this many elements, one thread

struct Mse {
  static float term(float p, float t) {
    const float d = p - t;
    return d * d;
  }
  // d/dp and d/dt of term, times scale
  static float grad_a(float p, float t, float scale) { return 2.f * scale * (p - t); }
  static float grad_b(float p, float t, float scale) { return -2.f * scale * (p - t); }
};

struct Bce {
  static float term(float x, float t) { return std::max(x, 0.f) - x * t + std::log1p(std::exp(-std::abs(x))); }
  static float grad_a(float x, float t, float scale) {
    const float e = std::exp(-std::abs(x));  // sigmoid without overflow: e/(1+e) for x < 0
    const float s = x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
    return (s - t) * scale;
  }
  static float grad_b(float x, float, float scale) { return -x * scale; }
};

// in: a, b (same shape); out: loss [1]
template <class L>
struct LossFwd : Kernel {
  std::string impl() const override { return "native"; }
  int64_t n, chunks;
  explicit LossFwd(const KernelCtx& c) : n(numel(c.in[0].shape)), chunks((n + kChunk - 1) / kChunk) {}
  size_t scratch_bytes() const override { return size_t(chunks) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* a = static_cast<const float*>(r.in[0]);
    const float* b = static_cast<const float*>(r.in[1]);
    double* part = static_cast<double*>(r.scratch);
    const int64_t n_ = n, chunks_ = chunks;
#pragma omp parallel for schedule(static) if (n_ >= kParallel)
    for (int64_t c = 0; c < chunks_; ++c) {
      const int64_t i1 = std::min(n_, (c + 1) * kChunk);
      double s = 0;
      for (int64_t i = c * kChunk; i < i1; ++i) s += double(L::term(a[i], b[i]));
      part[c] = s;
    }
    double total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += part[c];
    static_cast<float*>(r.out[0])[0] = float(total / double(n));
  }
};

// in: dloss [1], a, b; out: d a (wrt=0) or d b (wrt=1)
template <class L>
struct LossBwd : Kernel {
  std::string impl() const override { return "native"; }
  int64_t n;
  bool wrt_b;
  explicit LossBwd(const KernelCtx& c) : n(numel(c.in[1].shape)), wrt_b(c.node.attrs.i("wrt", 0) != 0) {}
  void run(const RunCtx& r) override {
    const float scale = static_cast<const float*>(r.in[0])[0] / float(n);
    const float* a = static_cast<const float*>(r.in[1]);
    const float* b = static_cast<const float*>(r.in[2]);
    float* d = static_cast<float*>(r.out[0]);
    const int64_t n_ = n;
    if (wrt_b) {
#pragma omp parallel for schedule(static) if (n_ >= kParallel)
      for (int64_t i = 0; i < n_; ++i) d[i] = L::grad_b(a[i], b[i], scale);
    } else {
#pragma omp parallel for schedule(static) if (n_ >= kParallel)
      for (int64_t i = 0; i < n_; ++i) d[i] = L::grad_a(a[i], b[i], scale);
    }
  }
};

KernelRegistrar r1("cpu", "mse_loss", [](const KernelCtx& c) { return std::make_unique<LossFwd<Mse>>(c); });
KernelRegistrar r2("cpu", "mse_loss_grad", [](const KernelCtx& c) { return std::make_unique<LossBwd<Mse>>(c); });
KernelRegistrar r3("cpu", "bce_with_logits", [](const KernelCtx& c) { return std::make_unique<LossFwd<Bce>>(c); });
KernelRegistrar r4("cpu", "bce_with_logits_grad", [](const KernelCtx& c) { return std::make_unique<LossBwd<Bce>>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
