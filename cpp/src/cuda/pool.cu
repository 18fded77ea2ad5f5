// cuda kernels for max_pool2d, max_pool2d_grad, avg_pool2d and avg_pool2d_grad (float32, plain NCHW), all our own
// (no cuDNN pooling): they reproduce ops/pool.cpp exactly, including what cuDNN cannot express (ceil_mode's extra
// right padding, count_include_pad divisors clipped at the padded edge as PyTorch does, dilation) and NaN
// propagation, and every backward is a deterministic gather (no atomics), summing in the reference's order.
//
//  - max_pool2d: one thread per output; window argmax in scan order (a NaN wins; the last NaN of a window is the
//    one kept, as in the reference's `v > best || isnan(v)`); training=1 writes the flat index h*W+w of the argmax
//    (-1 for a window holding no input element, whose output is -inf) to the int32 workspace, the same format the
//    reference writes.
//  - max_pool2d_grad (dy, x, workspace): one thread per input element (h, w); it visits the outputs whose window
//    can contain it, in (oh, ow) order, and adds dy where the workspace names (h, w). x is not read: the
//    workspace is always written by this backend's forward (or the reference's, same format).
//  - avg_pool2d: one thread per output, the window summed in float64 (like the reference) and divided once.
//  - avg_pool2d_grad (dy; input_shape): one thread per input element, float accumulation of dy / divisor over the
//    windows containing it in (oh, ow) order (the reference's order and rounding).
#include <algorithm>
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

struct Geom {
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int H, W, OH, OW;
  int64_t NC;
};

void pair_attr(const Attrs& a, const char* key, int64_t dh, int64_t dw, int& h, int& w) {
  std::vector<int64_t> v = a.is(key, {});
  h = int(v.empty() ? dh : v[0]);
  w = int(v.empty() ? dw : v.size() > 1 ? v[1] : v[0]);
}

// Shapes were validated by the op's shape inference; x [N,C,H,W], y [N,C,OH,OW].
Geom geometry(const Attrs& a, const Shape& x, const Shape& y) {
  Geom g;
  pair_attr(a, "kernel", 0, 0, g.kh, g.kw);
  pair_attr(a, "stride", g.kh, g.kw, g.sh, g.sw);
  pair_attr(a, "padding", 0, 0, g.ph, g.pw);
  pair_attr(a, "dilation", 1, 1, g.dh, g.dw);
  g.NC = x[0] * x[1];
  g.H = int(x[2]);
  g.W = int(x[3]);
  g.OH = int(y[2]);
  g.OW = int(y[3]);
  return g;
}

// floor(a / b) for b > 0
__device__ __forceinline__ int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// ---- max pooling ----

__global__ void max_fwd_kernel(const float* __restrict__ x, float* __restrict__ y, int* __restrict__ ws, Geom g) {
  const int64_t total = g.NC * g.OH * g.OW;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int ow = int(o % g.OW);
    const int oh = int((o / g.OW) % g.OH);
    const int64_t nc = o / (int64_t(g.OW) * g.OH);
    const float* xp = x + nc * g.H * g.W;
    int best = -1;
    float bv = 0.f;
    for (int i = 0; i < g.kh; ++i) {
      const int h = oh * g.sh - g.ph + i * g.dh;
      if (h < 0 || h >= g.H) continue;
      for (int j = 0; j < g.kw; ++j) {
        const int w = ow * g.sw - g.pw + j * g.dw;
        if (w < 0 || w >= g.W) continue;
        const float v = xp[h * g.W + w];
        if (best < 0 || v > bv || isnan(v)) {
          best = h * g.W + w;
          bv = v;
        }
      }
    }
    y[o] = best >= 0 ? bv : -INFINITY;
    if (ws) ws[o] = best;
  }
}

__global__ void max_bwd_kernel(const float* __restrict__ dy, const int* __restrict__ ws, float* __restrict__ dx,
                               Geom g) {
  const int64_t total = g.NC * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int w = int(i % g.W);
    const int h = int((i / g.W) % g.H);
    const int64_t nc = i / (int64_t(g.W) * g.H);
    // outputs whose window may contain h: oh*sh - ph <= h <= oh*sh - ph + (kh-1)*dh
    const int oh0 = max(0, floordiv(h + g.ph - (g.kh - 1) * g.dh + g.sh - 1, g.sh));
    const int oh1 = min(g.OH - 1, floordiv(h + g.ph, g.sh));
    const int ow0 = max(0, floordiv(w + g.pw - (g.kw - 1) * g.dw + g.sw - 1, g.sw));
    const int ow1 = min(g.OW - 1, floordiv(w + g.pw, g.sw));
    const int me = h * g.W + w;
    const int64_t base = nc * g.OH * g.OW;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = base + int64_t(oh) * g.OW + ow;
        if (ws[o] == me) acc += dy[o];
      }
    dx[i] = acc;
  }
}

struct MaxFwd : Kernel {
  Geom g;
  bool has_ws;
  explicit MaxFwd(const KernelCtx& c)
      : g(geometry(c.node.attrs, c.in[0].shape, c.out[0].shape)), has_ws(c.out.size() > 1) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    const int64_t total = g.NC * g.OH * g.OW;
    max_fwd_kernel<<<blocks_for(total), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]),
        has_ws ? static_cast<int*>(r.out[1]) : nullptr, g);
    check_launch("max_pool2d");
  }
};

// in: dy, x, workspace; out: dx
struct MaxBwd : Kernel {
  Geom g;
  explicit MaxBwd(const KernelCtx& c) : g(geometry(c.node.attrs, c.in[1].shape, c.in[0].shape)) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    const int64_t total = g.NC * g.H * g.W;
    max_bwd_kernel<<<blocks_for(total), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const int*>(r.in[2]), static_cast<float*>(r.out[0]), g);
    check_launch("max_pool2d_grad");
  }
};

// ---- average pooling ----

struct Window {
  int h0, h1, w0, w1, div;
};

// Window (oh, ow) clipped to the image, and PyTorch's divisor for it (ops/pool.cpp's avg_window).
__device__ __forceinline__ Window avg_window(const Geom& g, bool include_pad, int oh, int ow) {
  int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int h1 = min(h0 + g.kh, g.H + g.ph), w1 = min(w0 + g.kw, g.W + g.pw);
  const int padded = (h1 - h0) * (w1 - w0);
  h0 = max(h0, 0);
  w0 = max(w0, 0);
  h1 = min(h1, g.H);
  w1 = min(w1, g.W);
  return {h0, h1, w0, w1, include_pad ? padded : (h1 - h0) * (w1 - w0)};
}

__global__ void avg_fwd_kernel(const float* __restrict__ x, float* __restrict__ y, Geom g, bool include_pad) {
  const int64_t total = g.NC * g.OH * g.OW;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int ow = int(o % g.OW);
    const int oh = int((o / g.OW) % g.OH);
    const int64_t nc = o / (int64_t(g.OW) * g.OH);
    const float* xp = x + nc * g.H * g.W;
    const Window win = avg_window(g, include_pad, oh, ow);
    double sum = 0;
    for (int h = win.h0; h < win.h1; ++h)
      for (int w = win.w0; w < win.w1; ++w) sum += xp[h * g.W + w];
    y[o] = win.div > 0 ? float(sum / double(win.div)) : 0.f;
  }
}

__global__ void avg_bwd_kernel(const float* __restrict__ dy, float* __restrict__ dx, Geom g, bool include_pad) {
  const int64_t total = g.NC * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int w = int(i % g.W);
    const int h = int((i / g.W) % g.H);
    const int64_t nc = i / (int64_t(g.W) * g.H);
    // windows [oh*sh - ph, oh*sh - ph + kh) containing h
    const int oh0 = max(0, floordiv(h + g.ph - g.kh + g.sh, g.sh));
    const int oh1 = min(g.OH - 1, floordiv(h + g.ph, g.sh));
    const int ow0 = max(0, floordiv(w + g.pw - g.kw + g.sw, g.sw));
    const int ow1 = min(g.OW - 1, floordiv(w + g.pw, g.sw));
    const int64_t base = nc * g.OH * g.OW;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) {
        const Window win = avg_window(g, include_pad, oh, ow);
        if (win.div <= 0 || h < win.h0 || h >= win.h1 || w < win.w0 || w >= win.w1) continue;
        acc += dy[base + int64_t(oh) * g.OW + ow] / float(win.div);
      }
    dx[i] = acc;
  }
}

struct AvgFwd : Kernel {
  Geom g;
  bool include_pad;
  explicit AvgFwd(const KernelCtx& c)
      : g(geometry(c.node.attrs, c.in[0].shape, c.out[0].shape)),
        include_pad(c.node.attrs.i("count_include_pad", 1) != 0) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    const int64_t total = g.NC * g.OH * g.OW;
    avg_fwd_kernel<<<blocks_for(total), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), g, include_pad);
    check_launch("avg_pool2d");
  }
};

// in: dy; out: dx of the attribute input_shape
struct AvgBwd : Kernel {
  Geom g;
  bool include_pad;
  explicit AvgBwd(const KernelCtx& c)
      : g(geometry(c.node.attrs, c.out[0].shape, c.in[0].shape)),
        include_pad(c.node.attrs.i("count_include_pad", 1) != 0) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    const int64_t total = g.NC * g.H * g.W;
    avg_bwd_kernel<<<blocks_for(total), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), g, include_pad);
    check_launch("avg_pool2d_grad");
  }
};

template <class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<K>(c); };
}

KernelRegistrar reg_max("cuda", "max_pool2d", factory<MaxFwd>());
KernelRegistrar reg_max_grad("cuda", "max_pool2d_grad", factory<MaxBwd>());
KernelRegistrar reg_avg("cuda", "avg_pool2d", factory<AvgFwd>());
KernelRegistrar reg_avg_grad("cuda", "avg_pool2d_grad", factory<AvgBwd>());

}  // namespace
}  // namespace cnn::cuda
