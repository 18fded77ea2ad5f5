// oneDNN kernels for max_pool2d, avg_pool2d, global_avg_pool and their *_grad ops (f32), and their layout
// rules: forward pooling keeps its input's layout; the max-pool workspace is written in y's layout and its
// backward consumes dy and produces dx in that same layout; the other backward ops use the policy's layout.
// Output sizes come from ops/pool.cpp's shape inference; padding_r is chosen so oneDNN's floor rule
// reproduces them (ceil_mode becomes extra right padding). The max-pool workspace is oneDNN's own, stored in
// the int32 [N,C,OH,OW] workspace value (sized for y's layout), except where max pooling runs natively (float32
// in plain NCHW, see max_native and MaxNative: flat argmax indices instead). Average pooling with large windows
// and one configuration oneDNN gets wrong run natively (any layout): see AvgNative. global_avg_pool's forward is
// native (GlobalAvgFwd: float64 sums, float32 or bf16), its backward (a broadcast) oneDNN's.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/max_pool.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
using alg = dnnl::algorithm;

void pair_attr(const Attrs& a, const char* key, int64_t dh, int64_t dw, int64_t& h, int64_t& w) {
  std::vector<int64_t> v = a.is(key, {});
  h = v.empty() ? dh : v[0];
  w = v.empty() ? dw : v.size() > 1 ? v[1] : v[0];
}

// oneDNN geometry for input x [N,C,H,W] pooled to y [N,C,OH,OW] (shapes already validated).
struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh = 1, dw = 1, prh, prw;
  dims kernel() const { return {kh, kw}; }
  dims strides() const { return {sh, sw}; }
  dims dilation() const { return {dh - 1, dw - 1}; }  // oneDNN counts dilation from 0
  dims pad_l() const { return {ph, pw}; }
  dims pad_r() const { return {prh, prw}; }
  bool extra_right_pad() const { return prh > ph || prw > pw; }
};

Geometry geometry(const Attrs& a, const Shape& x, const Shape& y) {
  Geometry g;
  pair_attr(a, "kernel", 0, 0, g.kh, g.kw);
  pair_attr(a, "stride", g.kh, g.kw, g.sh, g.sw);
  pair_attr(a, "padding", 0, 0, g.ph, g.pw);
  pair_attr(a, "dilation", 1, 1, g.dh, g.dw);
  g.prh = std::max(g.ph, (y[2] - 1) * g.sh + g.dh * (g.kh - 1) + 1 - x[2] - g.ph);
  g.prw = std::max(g.pw, (y[3] - 1) * g.sw + g.dw * (g.kw - 1) + 1 - x[3] - g.pw);
  return g;
}

dnnl::pooling_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, alg a, const dnnl::memory::desc& x,
                                             const dnnl::memory::desc& y, const Geometry& g) {
  return dnnl::pooling_forward::primitive_desc(engine(), prop, a, x, y, g.strides(), g.kernel(), g.dilation(),
                                               g.pad_l(), g.pad_r(), user_scratchpad_attr());
}

// in: x; out: y [, workspace]
struct PoolFwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  PoolFwd(const KernelCtx& c, alg a, const Geometry& g) {
    bool train = c.out.size() > 1;
    auto x = md_of(c.in[0], c.layout_in(0)), y = md_of(c.out[0], c.layout_out(0));
    auto pd = fwd_pd(train ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, a, x, y, g);
    ex = DnnlExec(dnnl::pooling_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_DST, y, Src::out(0));
    if (train) {
      if (pd.workspace_desc().get_size() > layout_bytes(c.out[1], c.layout_out(1)))
        op_error(c.node, "oneDNN's max-pool workspace (" + std::to_string(pd.workspace_desc().get_size()) +
                             " bytes) exceeds the declared int32 workspace " + shape_str(c.out[1].shape));
      ex.bind(DNNL_ARG_WORKSPACE, pd.workspace_desc(), Src::out(1));
    }
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// in: dy (max: dy, x, workspace; x is not read); out: dx
struct PoolBwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  PoolBwd(const KernelCtx& c, alg a, const Geometry& g) {
    auto dy = md_of(c.in[0], c.layout_in(0)), dx = md_of(c.out[0], c.layout_out(0));
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, a, dx, dy, g);
    dnnl::pooling_backward::primitive_desc pd(engine(), a, dx, dy, g.strides(), g.kernel(), g.dilation(), g.pad_l(),
                                              g.pad_r(), hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_backward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_DIFF_SRC, dx, Src::out(0));
    if (a == alg::pooling_max) {
      if (pd.workspace_desc().get_size() > layout_bytes(c.in[2], c.layout_in(2)))
        op_error(c.node, "oneDNN's max-pool workspace (" + std::to_string(pd.workspace_desc().get_size()) +
                             " bytes) exceeds the declared int32 workspace " + shape_str(c.in[2].shape));
      ex.bind(DNNL_ARG_WORKSPACE, pd.workspace_desc(), Src::in(2));
    }
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// Native average pooling, in any layout, over "groups" of V-lane pixels in parallel: (n, c) planes of 1-lane
// pixels in plain, one [H, W, C] image per n in nhwc, one [H, W, b] block per (n, C/b) in nChw{b}c. Every lane is
// averaged alike, so blocked padding lanes (zero in x / dy) stay zero. Two configurations run here:
//  - count_include_pad=1 with a ceil_mode window running past H+padding: PyTorch divides by the window clipped to
//    the padded border, oneDNN's pooling_avg_include_padding by the full kernel (forward and backward);
//  - forward windows of kNativeWindow+ elements: oneDNN sums a window in float, whose error grows with its size
//    (a float sum of 8192^2 ones is 2^24); here each window is summed in float64 (red::avg_pool_image), so the
//    mean is the float nearest the exact one at any size. Below that oneDNN's error stays under ~256 ulps worst
//    case (a few in practice) and its kernels are faster on small windows (8x8 plain: 0.57 vs 1.05 ms).
//    Windows are summed one by one, so no thread-count dependence.
constexpr int64_t kNativeWindow = 256;

struct AvgNative : Kernel {
  std::string impl() const override { return "native"; }
  Geometry g;
  int64_t G, V, H, W, OH, OW;
  bool backward, include_pad;
  AvgNative(const KernelCtx& c, const Geometry& geo, bool bwd) : g(geo), backward(bwd) {
    const Shape &x = bwd ? c.out[0].shape : c.in[0].shape, &y = bwd ? c.in[0].shape : c.out[0].shape;
    red::LaneView lv(x, bwd ? c.layout_out(0) : c.layout_in(0));
    G = lv.G;
    V = lv.V;
    H = x[2];
    W = x[3];
    OH = y[2];
    OW = y[3];
    include_pad = c.node.attrs.i("count_include_pad", 1) != 0;
    if (bwd) return;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = oh * g.sh - g.ph, h1 = std::min(h0 + g.kh, H + g.ph);
      win.h0.push_back(std::max<int64_t>(h0, 0));
      win.h1.push_back(std::min(h1, H));
    }
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t w0 = ow * g.sw - g.pw, w1 = std::min(w0 + g.kw, W + g.pw);
      win.w0.push_back(std::max<int64_t>(w0, 0));
      win.w1.push_back(std::min(w1, W));
    }
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
        const int64_t padded = (std::min(h0 + g.kh, H + g.ph) - h0) * (std::min(w0 + g.kw, W + g.pw) - w0);
        const int64_t div = include_pad ? padded : (win.h1[oh] - win.h0[oh]) * (win.w1[ow] - win.w0[ow]);
        win.inv.push_back(div > 0 ? 1.0 / double(div) : 0.0);
      }
  }
  red::PoolWindows win;  // forward windows
  // float64 accumulators of the forward pass: one output row's OW pixels of V lanes per group
  size_t scratch_bytes() const override { return backward ? 0 : size_t(G * OW * V) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* src = static_cast<const float*>(r.in[0]);
    float* dst = static_cast<float*>(r.out[0]);
    double* accs = static_cast<double*>(r.scratch);
    const int64_t V_ = V;
    if (!backward) {
#pragma omp parallel for schedule(static)
      for (int64_t gi = 0; gi < G; ++gi)
        red::avg_pool_image(src + gi * H * W * V_, dst + gi * OH * OW * V_, W, V_, win, accs + gi * OW * V_);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* dyp = src + gi * OH * OW * V_;
      float* dxp = dst + gi * H * W * V_;
      std::fill(dxp, dxp + H * W * V_, 0.f);
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t h0 = oh * g.sh - g.ph, h1 = std::min(h0 + g.kh, H + g.ph);
        const int64_t dh = h1 - h0;
        h0 = std::max<int64_t>(h0, 0);
        h1 = std::min(h1, H);
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t w0 = ow * g.sw - g.pw, w1 = std::min(w0 + g.kw, W + g.pw);
          const int64_t dw = w1 - w0;
          w0 = std::max<int64_t>(w0, 0);
          w1 = std::min(w1, W);
          const int64_t div = include_pad ? dh * dw : (h1 - h0) * (w1 - w0);
          const float inv = 1.f / float(div);
          const float* d = dyp + (oh * OW + ow) * V_;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              float* o = dxp + (h * W + w) * V_;
#pragma omp simd
              for (int64_t v = 0; v < V_; ++v) o[v] += d[v] * inv;
            }
        }
      }
    }
  }
};

// oneDNN's average pooling cannot run this configuration at all (divisor mismatch; both directions).
bool avg_native(const Attrs& a, const Shape& x, const Shape& y) {
  return a.i("count_include_pad", 1) != 0 && geometry(a, x, y).extra_right_pad();
}
// The forward runs natively: the above, or windows too large for a float sum.
bool avg_native_fwd(const Attrs& a, const Shape& x, const Shape& y) {
  const Geometry g = geometry(a, x, y);
  return avg_native(a, x, y) || g.kh * g.kw >= kNativeWindow;
}

std::unique_ptr<Kernel> avg_kernel(const KernelCtx& c, bool bwd) {
  const Shape &x = bwd ? c.out[0].shape : c.in[0].shape, &y = bwd ? c.in[0].shape : c.out[0].shape;
  Geometry g = geometry(c.node.attrs, x, y);
  bool cip = c.node.attrs.i("count_include_pad", 1) != 0;
  if (bwd ? avg_native(c.node.attrs, x, y) : avg_native_fwd(c.node.attrs, x, y))
    return std::make_unique<AvgNative>(c, g, bwd);
  alg a = cip ? alg::pooling_avg_include_padding : alg::pooling_avg_exclude_padding;
  if (bwd) return std::make_unique<PoolBwd>(c, a, g);
  return std::make_unique<PoolFwd>(c, a, g);
}

// ---- native max pooling (float32, plain NCHW) ----
// oneDNN's pooling is slow in plain NCHW (LeNet-5 b64 training, pool1 [64, 6, 28, 28] 2x2/2: 0.161 ms forward /
// 0.184 ms backward in plain, against 0.070 / 0.099 in nChw16c), and plain is the layout small-channel activations
// want (nChw16c pads 6 channels to 16). So in plain layout max pooling runs natively (cpu/max_pool.hpp: PyTorch's
// values, the workspace holds flat argmax indices h * W + w per (n, c) plane), a contiguous share of the planes
// per thread in one call: race-free and independent of the thread count. Kernel::impl() is "native 2x2" where the
// AVX-512 2x2 stride-2 loops run, "native" otherwise (the generic loops: AVX-512 or portable).

// The single decision for a max_pool2d node and its max_pool2d_grad, so that the workspace one writes is the one
// the other reads: float32, plain activations and workspace, no dilation, indices that fit int32. The forward
// asks with (x, y [, workspace]), the backward with (dy, workspace, dx); the workspace's layout is the forward's
// (the backward's layout rule reads it as stored) and dy, dx follow it, so both get the same answer.
bool max_native(const KernelCtx& c, bool bwd) {
  const TensorDesc& x = bwd ? c.out[0] : c.in[0];
  const Geometry g = geometry(c.node.attrs, x.shape, bwd ? c.in[0].shape : c.out[0].shape);
  std::vector<Layout> used = {c.layout_in(0), c.layout_out(0)};
  if (bwd) used.push_back(c.layout_in(2));
  if (!bwd && c.out.size() > 1) used.push_back(c.layout_out(1));
  for (Layout l : used)
    if (l != Layout::plain) return false;
  // inference (no workspace): only the 2x2 stride-2 fast path; oneDNN's inference kernel is as fast or faster for
  // other windows (3x3 stride 1 on 32x32: 0.25 ms against 0.41, 3x3 stride 2 on 112x112: 2.70 against 2.89)
  if (!bwd && c.out.size() == 1 && !maxpool::is_2x2({g.kh, g.kw, g.sh, g.sw, g.ph, g.pw})) return false;
  return x.dtype == DType::f32 && (bwd ? c.in[0].dtype : c.out[0].dtype) == DType::f32 && g.dh == 1 && g.dw == 1 &&
         x.shape[2] * x.shape[3] <= int64_t(INT32_MAX);
}

// in: x; out: y [, workspace] (training). Backward, in: dy, x (not read), workspace; out: dx.
struct MaxNative : Kernel {
  maxpool::Window win;
  bool backward, with_ws, avx512;
  int64_t NC, H, W, OH, OW;
  std::string impl() const override { return avx512 && maxpool::is_2x2(win) ? "native 2x2" : "native"; }
  MaxNative(const KernelCtx& c, const Geometry& g, bool bwd) : backward(bwd) {
    const Shape &x = bwd ? c.out[0].shape : c.in[0].shape, &y = bwd ? c.in[0].shape : c.out[0].shape;
    win = {g.kh, g.kw, g.sh, g.sw, g.ph, g.pw};  // ceil_mode's extra right padding: windows clipped at H, W
    NC = x[0] * x[1];
    H = x[2];
    W = x[3];
    OH = y[2];
    OW = y[3];
    with_ws = !bwd && c.out.size() > 1;
    avx512 = maxpool::avx512();
  }
  void run(const RunCtx& r) override {
    const int64_t HW = H * W, OHW = OH * OW;
    if (!backward) {
      const float* x = static_cast<const float*>(r.in[0]);
      float* y = static_cast<float*>(r.out[0]);
      int32_t* ws = with_ws ? static_cast<int32_t*>(r.out[1]) : nullptr;
#pragma omp parallel
      {
        const auto [p0, p1] = my_planes();
        maxpool::forward(x + p0 * HW, y + p0 * OHW, ws ? ws + p0 * OHW : nullptr, p1 - p0, H, W, OH, OW, win, avx512);
      }
      return;
    }
    const float* dy = static_cast<const float*>(r.in[0]);
    const int32_t* ws = static_cast<const int32_t*>(r.in[2]);
    float* dx = static_cast<float*>(r.out[0]);
#pragma omp parallel
    {
      const auto [p0, p1] = my_planes();
      maxpool::backward(dy + p0 * OHW, ws + p0 * OHW, dx + p0 * HW, p1 - p0, H, W, OH, OW, win, avx512);
    }
  }
  // This thread's planes of the NC: a contiguous share (as schedule(static) gives), passed in one call.
  std::pair<int64_t, int64_t> my_planes() const {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads(), q = NC / n, rem = NC % n;
    const int64_t p0 = t * q + std::min(t, rem);
    return {p0, p0 + q + (t < rem ? 1 : 0)};
  }
};

Geometry global_geometry(const Shape& x) {
  Geometry g;
  g.kh = x[2];
  g.kw = x[3];
  g.sh = g.sw = 1;
  g.ph = g.pw = g.prh = g.prw = 0;
  return g;
}

// global_avg_pool forward, float32 or bf16, any layout: y[g, v] = mean over the S = H*W pixels of group g (see
// red::LaneView; the output [N, C, 1, 1] has the same groups with one pixel). Each group's pixels are cut into
// chunks of about kChunkElems floats (fixed by the shape) summed in float64 by red::lane_sum, in parallel over
// (group, chunk); the chunk sums are then added in chunk order. Exact to float rounding at any H*W, and independent
// of the thread count. Speed (bench/reductions.py, 2 threads): ResNet-50's [16, 2048, 7, 7] nChw16c as oneDNN's
// (0.117 ms), plain 0.42 -> 0.27 ms; small in-cache maps pay the float64 conversions (+3-6 us at [16, 512, 7, 7]).
template <class T>
struct GlobalAvgFwd : Kernel {
  std::string impl() const override { return "native"; }
  static constexpr int64_t kChunkElems = 1 << 18;
  int64_t G, S, V, P, K;  // K chunks of P pixels per group
  GlobalAvgFwd(const KernelCtx& c) {
    red::LaneView lv(c.in[0].shape, c.layout_in(0));
    G = lv.G;
    S = lv.S;
    V = lv.V;
    P = std::max<int64_t>(1, kChunkElems / V);
    K = (S + P - 1) / P;
  }
  size_t scratch_bytes() const override { return size_t(G * K * V) * sizeof(double); }
  static void put(float* y, double v) { *y = float(v); }
  static void put(red::bf16* y, double v) { *y = red::to_bf16(float(v)); }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    double* acc = static_cast<double*>(r.scratch);
    const int64_t G_ = G, S_ = S, V_ = V, P_ = P, K_ = K;
    const double inv_n = 1.0 / double(S);
    const bool par = G * S * V >= (1 << 14);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < G_ * K_; ++u) {
      const int64_t g = u / K_, p0 = u % K_ * P_;
      double* a = acc + u * V_;
      for (int64_t v = 0; v < V_; ++v) a[v] = 0;
      red::lane_sum(x + (g * S_ + p0) * V_, std::min(P_, S_ - p0), V_, V_, a);
      if (K_ == 1)
        for (int64_t v = 0; v < V_; ++v) put(y + g * V_ + v, a[v] * inv_n);
    }
    if (K_ == 1) return;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t g = 0; g < G_; ++g)
      for (int64_t v = 0; v < V_; ++v) {
        double s = 0;
        for (int64_t k = 0; k < K_; ++k) s += acc[(g * K_ + k) * V_ + v];
        put(y + g * V_ + v, s * inv_n);
      }
  }
};

KernelRegistrar r1("cpu", "max_pool2d", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  const Geometry g = geometry(c.node.attrs, c.in[0].shape, c.out[0].shape);
  if (max_native(c, false)) return std::make_unique<MaxNative>(c, g, false);
  return std::make_unique<PoolFwd>(c, alg::pooling_max, g);
});
KernelRegistrar r2("cpu", "max_pool2d_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  const Geometry g = geometry(c.node.attrs, c.out[0].shape, c.in[0].shape);
  if (max_native(c, true)) return std::make_unique<MaxNative>(c, g, true);
  return std::make_unique<PoolBwd>(c, alg::pooling_max, g);
});
KernelRegistrar r3("cpu", "avg_pool2d", [](const KernelCtx& c) { return avg_kernel(c, false); });
KernelRegistrar r4("cpu", "avg_pool2d_grad", [](const KernelCtx& c) { return avg_kernel(c, true); });
KernelRegistrar r5("cpu", "global_avg_pool", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  if (c.in[0].dtype == DType::bf16) return std::make_unique<GlobalAvgFwd<red::bf16>>(c);
  return std::make_unique<GlobalAvgFwd<float>>(c);
});
KernelRegistrar r6("cpu", "global_avg_pool_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<PoolBwd>(c, alg::pooling_avg_exclude_padding, global_geometry(c.out[0].shape));
});

// ---- layout rules ----
LayoutRuleRegistrar l1("cpu", "max_pool2d", rule_follow_input(0));
// bf16 sessions: oneDNN's pooling (the workspace stays int32), not the native average-pooling loops
using TDs = std::vector<TensorDesc>;
Bf16Registrar b1("cpu", "max_pool2d");
Bf16Registrar b2("cpu", "max_pool2d_grad");
Bf16Registrar b3("cpu", "global_avg_pool");
Bf16Registrar b4("cpu", "global_avg_pool_grad");
Bf16Registrar b5("cpu", "avg_pool2d", [](const Node& n, const TDs& in, const TDs& out) {
  return !avg_native_fwd(n.attrs, in[0].shape, out[0].shape);
});
Bf16Registrar b6("cpu", "avg_pool2d_grad", [](const Node& n, const TDs& in, const TDs& out) {
  return !avg_native(n.attrs, out[0].shape, in[0].shape);
});
LayoutRuleRegistrar l2("cpu", "global_avg_pool", rule_follow_input(0));
LayoutRuleRegistrar l3("cpu", "global_avg_pool_grad", rule_policy());
LayoutRuleRegistrar l4("cpu", "avg_pool2d", rule_follow_input(0));
LayoutRuleRegistrar l5("cpu", "avg_pool2d_grad", rule_policy());
LayoutRuleRegistrar l6("cpu", "max_pool2d_grad", [](const LayoutQuery& q) {  // (dy, x (not read), workspace) -> dx
  Layout L = q.in_layout[2];
  return LayoutChoice{{L, q.in_layout[1], L}, {L}};
});

}  // namespace
}  // namespace cpu
}  // namespace cnn
