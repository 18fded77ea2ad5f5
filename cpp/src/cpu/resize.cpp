// CPU kernels for resize2d and resize2d_grad (ops/resize.cpp), plain NCHW, native loops. oneDNN's resampling is
// not used: it derives its half-pixel scale from the shapes (in / out), whereas PyTorch with a scale factor steps
// by 1 / scale_factor, and it has no align_corners, asymmetric or rounding modes. The per-axis source indices and
// weights (ops/resize.hpp, the reference's arithmetic, so results match it bit for bit) are tabulated at
// construction; run() allocates nothing.
// Forward: output rows (plane, oh) split over threads. Backward: planes split over threads, each plane zeroed and
// then scattered into in the reference's order (output row by row), so dx does not depend on the thread count and
// needs no atomics.
#include <algorithm>
#include <vector>

#include "core/backend.hpp"
#include "core/op.hpp"
#include "ops/resize.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallel = 1 << 14;  // below this many output elements, one thread

template <class T>
struct Table {  // one axis: for each output index, two source indices and weights (nearest: i1 = i0, l1 = 0)
  std::vector<int64_t> i0, i1;
  std::vector<T> l0, l1;
  Table(const resize::Axis<T>& a, int mode, int rounding) {
    for (int64_t o = 0; o < a.m; ++o) {
      if (mode == resize::kNearest) {
        const int64_t i = resize::nearest_index(a, rounding, o);
        i0.push_back(i), i1.push_back(i), l0.push_back(T(1)), l1.push_back(T(0));
      } else {
        const resize::Tap<T> t = resize::linear_tap(a, o);
        i0.push_back(t.i0), i1.push_back(t.i1), l0.push_back(t.l0), l1.push_back(t.l1);
      }
    }
  }
};

template <class T>
struct Geometry {
  int mode;
  int64_t NC, H, W, OH, OW;
  Table<T> th, tw;
  Geometry(const KernelCtx& c, const Shape& x)
      : mode(int(c.node.attrs.i("mode", resize::kLinear))),
        NC(x[0] * x[1]),
        H(x[2]),
        W(x[3]),
        OH(c.node.attrs.is("size", {1, 1})[0]),
        OW(c.node.attrs.is("size", {1, 1})[1]),
        th(resize::Params::as<T>(resize::read_params(c.node.attrs, x).h), mode, int(c.node.attrs.i("nearest", 0))),
        tw(resize::Params::as<T>(resize::read_params(c.node.attrs, x).w), mode, int(c.node.attrs.i("nearest", 0))) {
    if (c.layout_in(0) != Layout::plain || c.layout_out(0) != Layout::plain)
      op_error(c.node, "internal: the cpu resize kernels take the plain layout only");
  }
};

template <class T>
struct ResizeFwd : Kernel {  // x -> y
  Geometry<T> g;
  explicit ResizeFwd(const KernelCtx& c) : g(c, c.in[0].shape) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    const Geometry<T>& g = this->g;
    const bool par = g.NC * g.OH > 1 && g.NC * g.OH * g.OW >= kParallel;
#pragma omp parallel for collapse(2) schedule(static) if (par)
    for (int64_t q = 0; q < g.NC; ++q)
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        T* row = y + (q * g.OH + oh) * g.OW;
        const T* r0 = x + (q * g.H + g.th.i0[size_t(oh)]) * g.W;
        if (g.mode == resize::kNearest) {
          for (int64_t ow = 0; ow < g.OW; ++ow) row[ow] = r0[g.tw.i0[size_t(ow)]];
          continue;
        }
        const T* r1 = x + (q * g.H + g.th.i1[size_t(oh)]) * g.W;
        const T h0 = g.th.l0[size_t(oh)], h1 = g.th.l1[size_t(oh)];
        const int64_t* w0 = g.tw.i0.data();
        const int64_t* w1 = g.tw.i1.data();
        const T* a0 = g.tw.l0.data();
        const T* a1 = g.tw.l1.data();
        for (int64_t ow = 0; ow < g.OW; ++ow)
          row[ow] = h0 * (a0[ow] * r0[w0[ow]] + a1[ow] * r0[w1[ow]]) + h1 * (a0[ow] * r1[w0[ow]] + a1[ow] * r1[w1[ow]]);
      }
  }
};

template <class T>
struct ResizeBwd : Kernel {  // dy -> dx
  Geometry<T> g;
  explicit ResizeBwd(const KernelCtx& c) : g(c, c.out[0].shape) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* dy = static_cast<const T*>(r.in[0]);
    T* dx = static_cast<T*>(r.out[0]);
    const Geometry<T>& g = this->g;
    const bool par = g.NC > 1 && g.NC * g.OH * g.OW >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t q = 0; q < g.NC; ++q) {
      T* d = dx + q * g.H * g.W;
      std::fill(d, d + g.H * g.W, T(0));
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const T* grow = dy + (q * g.OH + oh) * g.OW;
        T* d0 = d + g.th.i0[size_t(oh)] * g.W;
        if (g.mode == resize::kNearest) {
          for (int64_t ow = 0; ow < g.OW; ++ow) d0[g.tw.i0[size_t(ow)]] += grow[ow];
          continue;
        }
        T* d1 = d + g.th.i1[size_t(oh)] * g.W;
        const T h0 = g.th.l0[size_t(oh)], h1 = g.th.l1[size_t(oh)];
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const size_t k = size_t(ow);
          const T gv = grow[ow];
          const int64_t w0 = g.tw.i0[k], w1 = g.tw.i1[k];
          const T a0 = g.tw.l0[k], a1 = g.tw.l1[k];
          d0[w0] += h0 * a0 * gv;
          d0[w1] += h0 * a1 * gv;
          d1[w0] += h1 * a0 * gv;
          d1[w1] += h1 * a1 * gv;
        }
      }
    }
  }
};

template <template <class> class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    if (c.in[0].dtype == DType::f64) return std::make_unique<K<double>>(c);
    return std::make_unique<K<float>>(c);
  };
}

KernelRegistrar r1("cpu", "resize2d", factory<ResizeFwd>());
KernelRegistrar r2("cpu", "resize2d_grad", factory<ResizeBwd>());

}  // namespace
}  // namespace cpu
}  // namespace cnn
