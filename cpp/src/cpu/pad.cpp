// CPU kernels for pad and pad_grad (ops/pad.cpp), plain layout only (no layout rule: the layout pass reorders
// around them). pad writes each output plane as rows: whole rows of the value above and below, and each middle
// row as value run, a memcpy of the input row, value run. pad_grad copies the interior rows of each dy plane.
// Planes are split over threads; run() allocates nothing.
#include <algorithm>
#include <cstring>

#include "core/backend.hpp"
#include "core/op.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallel = 1 << 15;  // below this many output elements, one thread

struct Geometry {
  int64_t NC, H, W, OH, OW, top, left;
  // x's [N, C, H, W] and the padded [N, C, OH, OW], as the op's shape inference validated them.
  Geometry(const Shape& x, const Shape& y, const Node& n) {
    const std::vector<int64_t> p = n.attrs.is("pads", {});
    NC = x[0] * x[1], H = x[2], W = x[3], OH = y[2], OW = y[3], top = p[0], left = p[1];
  }
};

template <class T>
void pad_planes(const Geometry& g, const T* x, T* y, T v) {
  const int64_t right = g.OW - g.left - g.W;
#pragma omp parallel for schedule(static) if (g.NC > 1 && g.NC * g.OH * g.OW >= kParallel)
  for (int64_t q = 0; q < g.NC; ++q) {
    const T* xp = x + q * g.H * g.W;
    T* yp = y + q * g.OH * g.OW;
    std::fill(yp, yp + g.top * g.OW, v);
    for (int64_t h = 0; h < g.H; ++h) {
      T* row = yp + (g.top + h) * g.OW;
      std::fill(row, row + g.left, v);
      std::memcpy(row + g.left, xp + h * g.W, size_t(g.W) * sizeof(T));
      std::fill(row + g.left + g.W, row + g.left + g.W + right, v);
    }
    std::fill(yp + (g.top + g.H) * g.OW, yp + g.OH * g.OW, v);
  }
}

template <class T>
void crop_planes(const Geometry& g, const T* dy, T* dx) {
#pragma omp parallel for schedule(static) if (g.NC > 1 && g.NC * g.H * g.W >= kParallel)
  for (int64_t q = 0; q < g.NC; ++q) {
    const T* src = dy + (q * g.OH + g.top) * g.OW + g.left;
    T* dst = dx + q * g.H * g.W;
    for (int64_t h = 0; h < g.H; ++h) std::memcpy(dst + h * g.W, src + h * g.OW, size_t(g.W) * sizeof(T));
  }
}

struct PadFwd : Kernel {  // x -> y
  Geometry g;
  double value;
  bool f64;
  explicit PadFwd(const KernelCtx& c)
      : g(c.in[0].shape, c.out[0].shape, c.node),
        value(c.node.attrs.f("value", 0.0)),
        f64(c.in[0].dtype == DType::f64) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    if (f64)
      pad_planes(g, static_cast<const double*>(r.in[0]), static_cast<double*>(r.out[0]), value);
    else
      pad_planes(g, static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), float(value));
  }
};

struct PadBwd : Kernel {  // dy -> dx
  Geometry g;
  bool f64;
  explicit PadBwd(const KernelCtx& c) : g(c.out[0].shape, c.in[0].shape, c.node), f64(c.in[0].dtype == DType::f64) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    if (f64)
      crop_planes(g, static_cast<const double*>(r.in[0]), static_cast<double*>(r.out[0]));
    else
      crop_planes(g, static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]));
  }
};

KernelRegistrar r1("cpu", "pad", [](const KernelCtx& c) { return std::make_unique<PadFwd>(c); });
KernelRegistrar r2("cpu", "pad_grad", [](const KernelCtx& c) { return std::make_unique<PadBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
