// CPU kernels for dropout and dropout_grad: native elementwise loops, OpenMP-parallel when large, in any session
// layout: forward keeps x's layout (the uint8 mask is written in it too, padding lanes 0), backward takes the
// mask's (dy is reordered to it; masks never are). The mask comes from the same counter-based function as the
// reference kernel (core/dropout_mask.hpp), drawn for each element's *logical* (plain) index whatever the layout, so
// both backends, every layout and any thread count give bit-identical masks and outputs. May run in place;
// run() allocates nothing.
#include <cstring>

#include "core/backend.hpp"
#include "core/dropout_mask.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallelElems = 1 << 15;

struct DropoutFwd : Kernel {
  std::string impl() const override { return training ? "native" : "native copy"; }
  std::string name;
  int64_t n;  // stored elements (padding included)
  Layout layout;
  int64_t N = 1, C = 1, HW = 1, B = 1;  // 4-D geometry for non-plain layouts (B: block)
  bool training;
  uint64_t threshold = 0;
  float scale = 1.f;
  explicit DropoutFwd(const KernelCtx& c)
      : name(c.node.name),
        n(int64_t(layout_bytes(c.in[0], c.layout_in(0)) / sizeof(float))),
        layout(c.layout_in(0)),
        training(c.out.size() == 2) {
    const double p = dropout::read_p(c.node);
    threshold = dropout::drop_threshold(p);
    scale = float(1.0 / (1.0 - p));
    if (layout != Layout::plain) {
      const Shape& s = c.in[0].shape;
      N = s[0], C = s[1], HW = s[2] * s[3];
      B = layout == Layout::nChw16c ? 16 : layout == Layout::nChw8c ? 8 : 1;
    }
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
    if (layout == Layout::plain) {
#pragma omp parallel for simd schedule(static) if (n_ >= kParallelElems)
      for (int64_t i = 0; i < n_; ++i) {
        const uint8_t m = dropout::keep(key, i, thr);
        mask[i] = m;
        y[i] = x[i] * (float(m) * s);
      }
      return;
    }
    const int64_t C_ = C, HW_ = HW;
    if (layout == Layout::nhwc) {  // stored (n, p, c) <- logical (n, c, p)
#pragma omp parallel for schedule(static) if (n_ >= kParallelElems)
      for (int64_t np = 0; np < N * HW_; ++np) {
        const int64_t nn = np / HW_, p = np % HW_;
        for (int64_t c = 0; c < C_; ++c) {
          const int64_t o = np * C_ + c;
          const uint8_t m = dropout::keep(key, (nn * C_ + c) * HW_ + p, thr);
          mask[o] = m;
          y[o] = x[o] * (float(m) * s);
        }
      }
      return;
    }
    const int64_t B_ = B, CB = (C + B - 1) / B;  // stored (n, cb, p, lane) <- logical (n, cb*B + lane, p)
#pragma omp parallel for schedule(static) if (n_ >= kParallelElems)
    for (int64_t nb = 0; nb < N * CB; ++nb) {
      const int64_t nn = nb / CB, c0 = (nb % CB) * B_;
      for (int64_t p = 0; p < HW_; ++p)
        for (int64_t l = 0; l < B_; ++l) {
          const int64_t o = (nb * HW_ + p) * B_ + l, c = c0 + l;
          const uint8_t m = c < C_ ? dropout::keep(key, (nn * C_ + c) * HW_ + p, thr) : 0;
          mask[o] = m;
          y[o] = x[o] * (float(m) * s);
        }
    }
  }
};

// dy = in 0, mask = in 1 -> dx = out 0, elementwise over the stored elements (one layout; padding lanes: 0 * 0)
struct DropoutBwd : Kernel {
  std::string impl() const override { return "native"; }
  int64_t n;
  float scale;
  explicit DropoutBwd(const KernelCtx& c)
      : n(int64_t(layout_bytes(c.in[0], c.layout_in(0)) / sizeof(float))),
        scale(float(1.0 / (1.0 - dropout::read_p(c.node)))) {}
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
LayoutRuleRegistrar l1("cpu", "dropout", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "dropout_grad", rule_follow_input(1));

}  // namespace
}  // namespace cpu
}  // namespace cnn
