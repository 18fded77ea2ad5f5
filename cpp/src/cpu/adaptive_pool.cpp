// CPU kernels for adaptive_avg_pool2d and adaptive_avg_pool2d_grad (f32) in any session layout: forward keeps
// x's layout, backward takes dy's (layout rules). When H % OH == 0 and W % OW == 0 PyTorch's adaptive windows
// are exactly a pooling with kernel = stride = (H/OH, W/OW) and no padding, which runs as oneDNN pooling_avg
// forward/backward, unless the forward windows hold kNativeWindow+ elements (oneDNN sums a window in float, whose
// error grows with the window). Otherwise (overlapping or repeated windows; oneDNN has no adaptive pooling; large
// windows) native loops, each forward window summed in float64 (red::avg_pool_image: exact to float rounding),
// with the windows computed once at construction by ops/adaptive_pool.cpp's rule, over "groups" of V-lane
// pixels: (n, c) planes of 1-lane pixels in plain, one [H, W, C] image of C-lane pixels per n in nhwc, one
// [H, W, b] block per (n, C/b) in nChw{b}c; every lane is averaged alike, so blocked padding lanes (zero in x
// or dy) stay zero. run() allocates nothing.
#include <algorithm>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
constexpr auto kAvg = dnnl::algorithm::pooling_avg_exclude_padding;
constexpr int64_t kNativeWindow = 256;  // forward windows of this many elements or more are summed natively

// x [N,C,H,W] and y [N,C,OH,OW], whichever direction the kernel runs.
struct Planes {
  Shape x, y;
  Planes(const KernelCtx& c, bool bwd)
      : x(bwd ? c.out[0].shape : c.in[0].shape), y(bwd ? c.in[0].shape : c.out[0].shape) {}
  bool divisible() const { return x[2] % y[2] == 0 && x[3] % y[3] == 0; }
  bool large() const { return ((x[2] + y[2] - 1) / y[2]) * ((x[3] + y[3] - 1) / y[3]) >= kNativeWindow; }
  dims kernel() const { return {x[2] / y[2], x[3] / y[3]}; }
};

dnnl::pooling_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const Planes& p, const dnnl::memory::desc& x,
                                             const dnnl::memory::desc& y, const dnnl::primitive_attr& attr) {
  return dnnl::pooling_forward::primitive_desc(engine(), prop, kAvg, x, y, p.kernel(), p.kernel(), dims{0, 0},
                                               dims{0, 0}, dims{0, 0}, attr);
}

// in: x; out: y
struct PooledFwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  explicit PooledFwd(const KernelCtx& c) {
    Planes p(c, false);
    auto x = md_of(c.in[0], c.layout_in(0)), y = md_of(c.out[0], c.layout_out(0));
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, p, x, y, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_DST, y, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// in: dy; out: dx
struct PooledBwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  explicit PooledBwd(const KernelCtx& c) {
    Planes p(c, true);
    auto dy = md_of(c.in[0], c.layout_in(0)), dx = md_of(c.out[0], c.layout_out(0));
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, p, dx, dy, dnnl::primitive_attr());
    dnnl::pooling_backward::primitive_desc pd(engine(), kAvg, dx, dy, p.kernel(), p.kernel(), dims{0, 0}, dims{0, 0},
                                              dims{0, 0}, hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_backward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_DIFF_SRC, dx, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// Adaptive windows of one axis: [begin, end) = [floor(i*in/out), ceil((i+1)*in/out)).
struct Windows {
  std::vector<int64_t> begin, end;
  Windows(int64_t in, int64_t out) {
    for (int64_t i = 0; i < out; ++i) {
      begin.push_back((i * in) / out);
      end.push_back(((i + 1) * in + out - 1) / out);
    }
  }
};

// Forward (in: x, out: y) or backward (in: dy, out: dx), parallel over the groups (see the file comment): group g
// of x holds H*W pixels of V lanes from g*H*W*V on, group g of y OH*OW such pixels.
struct AdaptiveNative : Kernel {
  std::string impl() const override { return "native"; }
  int64_t G, V, H, W, OH, OW;
  Windows wh, ww;
  bool backward;
  // Members are initialised in declaration order: the window lists use H, W, OH, OW.
  AdaptiveNative(const Planes& p, Layout l, bool bwd)
      : G(0), V(1), H(p.x[2]), W(p.x[3]), OH(p.y[2]), OW(p.y[3]), wh(H, OH), ww(W, OW), backward(bwd) {
    const int64_t N = p.x[0], C = p.x[1], b = l == Layout::nChw16c ? 16 : l == Layout::nChw8c ? 8 : 1;
    if (l == Layout::nhwc)
      G = N, V = C;
    else
      G = N * ((C + b - 1) / b), V = b;
    win.h0 = wh.begin, win.h1 = wh.end, win.w0 = ww.begin, win.w1 = ww.end;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        win.inv.push_back(1.0 / double((wh.end[oh] - wh.begin[oh]) * (ww.end[ow] - ww.begin[ow])));
  }
  red::PoolWindows win;  // the same windows for the forward pass
  // float64 accumulators of the forward pass: one output row's OW pixels of V lanes per group
  size_t scratch_bytes() const override { return backward ? 0 : size_t(G * OW * V) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* src = static_cast<const float*>(r.in[0]);
    float* dst = static_cast<float*>(r.out[0]);
    const int64_t V_ = V;
    if (backward) {
#pragma omp parallel for schedule(static)
      for (int64_t g = 0; g < G; ++g) {
        const float* dyp = src + g * OH * OW * V_;
        float* dxp = dst + g * H * W * V_;
        std::fill(dxp, dxp + H * W * V_, 0.f);
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = wh.begin[oh], h1 = wh.end[oh];
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = ww.begin[ow], w1 = ww.end[ow];
            const float area = float((h1 - h0) * (w1 - w0));
            const float* d = dyp + (oh * OW + ow) * V_;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) {
                float* o = dxp + (h * W + w) * V_;
#pragma omp simd
                for (int64_t v = 0; v < V_; ++v) o[v] += d[v] / area;
              }
          }
        }
      }
    } else {
      double* accs = static_cast<double*>(r.scratch);
#pragma omp parallel for schedule(static)
      for (int64_t g = 0; g < G; ++g)
        red::avg_pool_image(src + g * H * W * V_, dst + g * OH * OW * V_, W, V_, win, accs + g * OW * V_);
    }
  }
};

std::unique_ptr<Kernel> make(const KernelCtx& c, bool bwd) {
  Planes p(c, bwd);
  if (p.divisible() && (bwd || !p.large())) {
    if (bwd) return std::make_unique<PooledBwd>(c);
    return std::make_unique<PooledFwd>(c);
  }
  return std::make_unique<AdaptiveNative>(p, bwd ? c.layout_out(0) : c.layout_in(0), bwd);
}

KernelRegistrar r1("cpu", "adaptive_avg_pool2d", [](const KernelCtx& c) { return make(c, false); });
KernelRegistrar r2("cpu", "adaptive_avg_pool2d_grad", [](const KernelCtx& c) { return make(c, true); });
LayoutRuleRegistrar l1("cpu", "adaptive_avg_pool2d", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "adaptive_avg_pool2d_grad", rule_follow_input(0));

}  // namespace
}  // namespace cpu
}  // namespace cnn
