// CPU kernels for pad and pad_grad (ops/pad.cpp) in every activation layout: both follow their input's layout
// (plain, nhwc, nChw16c, nChw8c; layout rules below), so a pad between two blocked convolutions needs no reorder.
// A 4-D tensor in any of these layouts is [outer, H, W, inner]: plain [N*C, H, W, 1], nhwc [N, H, W, C], nChwBc
// [N*ceil(C/B), H, W, B]. pad writes each output row (outer, oh) as a run of `value` pixels, a memcpy of the input
// row, a run of `value` pixels (rows above and below the input are all value). A pixel of value is `inner`
// elements: value in the lanes of real channels, 0 in a blocked layout's padding lanes (channels C..B*ceil(C/B)-1
// of the last block), so the zero-padding invariant of blocked layouts holds for any value; the copied input rows
// bring their own zero lanes. pad_grad copies the interior of each dy row (padding lanes included, zero in dy).
// Rows are split over threads; run() allocates nothing (the value pixels are built at construction).
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/backend.hpp"
#include "core/op.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallel = 1 << 15;  // below this many output elements, one thread

struct Geometry {
  int64_t outer, inner, H, W, OH, OW, top, left;
  int64_t blocks = 1;  // blocked layouts: channel blocks per image (outer index q has block q % blocks)
  int64_t tail = 0;    // blocked layouts: real channels in the last block when C is not a multiple of the block
  // x's [N, C, H, W] and the padded [N, C, OH, OW] (as the op's shape inference validated them), both in layout l.
  Geometry(const Shape& x, const Shape& y, const Node& n, Layout l) {
    const std::vector<int64_t> p = n.attrs.is("pads", {});
    const int64_t N = x[0], C = x[1];
    H = x[2], W = x[3], OH = y[2], OW = y[3], top = p[0], left = p[1];
    switch (l) {
      case Layout::plain: outer = N * C, inner = 1; break;
      case Layout::nhwc: outer = N, inner = C; break;
      case Layout::nChw16c:
      case Layout::nChw8c: {
        inner = l == Layout::nChw16c ? 16 : 8;
        blocks = (C + inner - 1) / inner;
        outer = N * blocks;
        tail = C % inner;
        break;
      }
      default: op_error(n, "internal: cpu pad kernel got an unknown layout " + std::to_string(int(l)));
    }
  }
};

// The layouts of a node's input and output, which the layout rule makes equal.
Layout node_layout(const KernelCtx& c) {
  if (c.layout_in(0) != c.layout_out(0))
    op_error(c.node, std::string("internal: cpu kernel reads ") + layout_name(c.layout_in(0)) + " and writes " +
                         layout_name(c.layout_out(0)) + "; it keeps its input's layout");
  return c.layout_in(0);
}

template <class T>
void fill_pixels(T* d, int64_t n, const T* px, int64_t inner) {
  if (inner == 1) {
    std::fill(d, d + n, px[0]);
    return;
  }
  for (int64_t i = 0; i < n; ++i, d += inner) std::memcpy(d, px, size_t(inner) * sizeof(T));
}

template <class T>
struct PadFwd : Kernel {  // x -> y
  Geometry g;
  std::vector<T> full, last;  // one pixel of value: every lane, and the last channel block's (zero padding lanes)
  explicit PadFwd(const KernelCtx& c) : g(c.in[0].shape, c.out[0].shape, c.node, node_layout(c)) {
    const T v = T(c.node.attrs.f("value", 0.0));
    full.assign(size_t(g.inner), v);
    last = full;
    if (g.tail) std::fill(last.begin() + g.tail, last.end(), T(0));
  }
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    const Geometry& g = this->g;
    const int64_t in_ = g.inner, right = g.OW - g.left - g.W;
    const bool par = g.outer * g.OH > 1 && g.outer * g.OH * g.OW * in_ >= kParallel;
#pragma omp parallel for collapse(2) schedule(static) if (par)
    for (int64_t q = 0; q < g.outer; ++q)
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const T* px = q % g.blocks == g.blocks - 1 ? last.data() : full.data();
        T* row = y + (q * g.OH + oh) * g.OW * in_;
        const int64_t h = oh - g.top;
        if (h < 0 || h >= g.H) {
          fill_pixels(row, g.OW, px, in_);
          continue;
        }
        fill_pixels(row, g.left, px, in_);
        std::memcpy(row + g.left * in_, x + (q * g.H + h) * g.W * in_, size_t(g.W * in_) * sizeof(T));
        fill_pixels(row + (g.left + g.W) * in_, right, px, in_);
      }
  }
};

template <class T>
struct PadBwd : Kernel {  // dy -> dx
  Geometry g;
  explicit PadBwd(const KernelCtx& c) : g(c.out[0].shape, c.in[0].shape, c.node, node_layout(c)) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* dy = static_cast<const T*>(r.in[0]);
    T* dx = static_cast<T*>(r.out[0]);
    const Geometry& g = this->g;
    const int64_t in_ = g.inner;
    const bool par = g.outer * g.H > 1 && g.outer * g.H * g.W * in_ >= kParallel;
#pragma omp parallel for collapse(2) schedule(static) if (par)
    for (int64_t q = 0; q < g.outer; ++q)
      for (int64_t h = 0; h < g.H; ++h)
        std::memcpy(dx + (q * g.H + h) * g.W * in_, dy + ((q * g.OH + g.top + h) * g.OW + g.left) * in_,
                    size_t(g.W * in_) * sizeof(T));
  }
};

template <template <class> class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    if (c.in[0].dtype == DType::f64) return std::make_unique<K<double>>(c);
    return std::make_unique<K<float>>(c);
  };
}

KernelRegistrar r1("cpu", "pad", factory<PadFwd>());
KernelRegistrar r2("cpu", "pad_grad", factory<PadBwd>());
LayoutRuleRegistrar l1("cpu", "pad", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "pad_grad", rule_follow_input(0));

}  // namespace
}  // namespace cpu
}  // namespace cnn
