// cuda kernels for resize2d and resize2d_grad (ops/resize.cpp): own kernels, float32 NCHW, grid-stride loops with
// one thread per output element. The coordinate arithmetic is the reference's (ops/resize.hpp, float), so the
// forward picks the same pixels and weights. The backward is a gather: each input pixel finds the run of output
// rows and columns that read it (binary searches over the monotone source index) and sums their weighted
// gradients, so no atomics and a deterministic result (summation order: rows, then columns).
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/common.hpp"
#include "ops/resize.hpp"

namespace cnn::cuda {
namespace {

using resize::Axis;

__global__ void resize_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t NC, Axis<float> ah,
                              Axis<float> aw, int mode, int rounding) {
  const int64_t H = ah.n, W = aw.n, OH = ah.m, OW = aw.m, n = NC * OH * OW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % OW, t = i / OW, oh = t % OH, q = t / OH;
    const float* xp = x + q * H * W;
    if (mode == resize::kNearest) {
      y[i] = xp[resize::nearest_index(ah, rounding, oh) * W + resize::nearest_index(aw, rounding, ow)];
    } else {
      const resize::Tap<float> th = resize::linear_tap(ah, oh), tw = resize::linear_tap(aw, ow);
      const float* r0 = xp + th.i0 * W;
      const float* r1 = xp + th.i1 * W;
      y[i] = th.l0 * (tw.l0 * r0[tw.i0] + tw.l1 * r0[tw.i1]) + th.l1 * (tw.l0 * r1[tw.i0] + tw.l1 * r1[tw.i1]);
    }
  }
}

__global__ void resize_grad_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t NC, Axis<float> ah,
                                   Axis<float> aw, int mode, int rounding) {
  const int64_t H = ah.n, W = aw.n, OH = ah.m, OW = aw.m, n = NC * H * W;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = k % W, t = k / W, h = t % H, q = t / H;
    int64_t h_lo, h_hi, w_lo, w_hi;
    resize::readers(ah, mode, rounding, h, &h_lo, &h_hi);
    resize::readers(aw, mode, rounding, w, &w_lo, &w_hi);
    const float* g = dy + q * OH * OW;
    float acc = 0.f;
    for (int64_t oh = h_lo; oh < h_hi; ++oh) {
      const float wh = resize::weight(ah, mode, rounding, oh, h);
      if (wh == 0.f) continue;
      float row = 0.f;
      for (int64_t ow = w_lo; ow < w_hi; ++ow) row += resize::weight(aw, mode, rounding, ow, w) * g[oh * OW + ow];
      acc += wh * row;
    }
    dx[k] = acc;
  }
}

struct Resize : Kernel {
  bool grad;
  int64_t NC;
  int mode, rounding;
  Axis<float> ah, aw;
  Resize(const KernelCtx& c, bool is_grad) : grad(is_grad) {
    for (const auto* v : {&c.in, &c.out})
      for (const cnn::TensorDesc& d : *v)
        if (d.dtype != DType::f32)
          fail("op '" + c.node.op + "' (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(*v));
    const Shape& x = grad ? c.out[0].shape : c.in[0].shape;
    const resize::Params p = resize::read_params(c.node.attrs, x);
    NC = x[0] * x[1], mode = p.mode, rounding = p.rounding;
    ah = resize::Params::as<float>(p.h), aw = resize::Params::as<float>(p.w);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t s = stream_of(r).stream;
    float* out = static_cast<float*>(r.out[0]);
    const float* in = static_cast<const float*>(r.in[0]);
    const int64_t n = grad ? NC * ah.n * aw.n : NC * ah.m * aw.m;
    if (n == 0) return;
    if (grad) {
      resize_grad_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, ah, aw, mode, rounding);
      check_launch("resize_grad_kernel");
    } else {
      resize_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, ah, aw, mode, rounding);
      check_launch("resize_kernel");
    }
  }
};

KernelRegistrar reg_fwd("cuda", "resize2d", [](const KernelCtx& c) { return std::make_unique<Resize>(c, false); });
KernelRegistrar reg_bwd("cuda", "resize2d_grad", [](const KernelCtx& c) { return std::make_unique<Resize>(c, true); });

}  // namespace
}  // namespace cnn::cuda
