// CPU kernels for adaptive_avg_pool2d and adaptive_avg_pool2d_grad (plain nchw, f32). When H % OH == 0 and
// W % OW == 0 PyTorch's adaptive windows are exactly a pooling with kernel = stride = (H/OH, W/OW) and no
// padding, which runs as oneDNN pooling_avg forward/backward. Otherwise (overlapping or repeated windows;
// oneDNN has no adaptive pooling) native loops parallel over (n, c) planes, with the windows computed once
// at construction by ops/adaptive_pool.cpp's rule. run() allocates nothing.
#include <algorithm>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
constexpr auto kAvg = dnnl::algorithm::pooling_avg_exclude_padding;

// x [N,C,H,W] and y [N,C,OH,OW], whichever direction the kernel runs.
struct Planes {
  Shape x, y;
  Planes(const KernelCtx& c, bool bwd) : x(bwd ? c.out[0].shape : c.in[0].shape), y(bwd ? c.in[0].shape : c.out[0].shape) {}
  bool divisible() const { return x[2] % y[2] == 0 && x[3] % y[3] == 0; }
  dims kernel() const { return {x[2] / y[2], x[3] / y[3]}; }
};

dnnl::pooling_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const Planes& p, const dnnl::primitive_attr& attr) {
  return dnnl::pooling_forward::primitive_desc(engine(), prop, kAvg, plain_desc(p.x, DType::f32), plain_desc(p.y, DType::f32),
                                               p.kernel(), p.kernel(), dims{0, 0}, dims{0, 0}, dims{0, 0}, attr);
}

// in: x; out: y
struct PooledFwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  explicit PooledFwd(const KernelCtx& c) {
    Planes p(c, false);
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, p, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_forward(pd));
    ex.bind(DNNL_ARG_SRC, plain_desc(c.in[0]), Src::in(0));
    ex.bind(DNNL_ARG_DST, plain_desc(c.out[0]), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// in: dy; out: dx
struct PooledBwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  explicit PooledBwd(const KernelCtx& c) {
    Planes p(c, true);
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, p, dnnl::primitive_attr());
    dnnl::pooling_backward::primitive_desc pd(engine(), kAvg, plain_desc(c.out[0]), plain_desc(c.in[0]), p.kernel(), p.kernel(),
                                              dims{0, 0}, dims{0, 0}, dims{0, 0}, hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_backward(pd));
    ex.bind(DNNL_ARG_DIFF_DST, plain_desc(c.in[0]), Src::in(0));
    ex.bind(DNNL_ARG_DIFF_SRC, plain_desc(c.out[0]), Src::out(0));
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

// Forward (in: x, out: y) or backward (in: dy, out: dx), parallel over the N*C planes.
struct AdaptiveNative : Kernel {
  int64_t NC, H, W, OH, OW;
  Windows wh, ww;
  bool backward;
  // Members are initialised in declaration order: the window lists use H, W, OH, OW.
  AdaptiveNative(const Planes& p, bool bwd)
      : NC(p.x[0] * p.x[1]), H(p.x[2]), W(p.x[3]), OH(p.y[2]), OW(p.y[3]), wh(H, OH), ww(W, OW), backward(bwd) {}
  void run(const RunCtx& r) override {
    const float* src = static_cast<const float*>(r.in[0]);
    float* dst = static_cast<float*>(r.out[0]);
    if (backward) {
#pragma omp parallel for schedule(static)
      for (int64_t nc = 0; nc < NC; ++nc) {
        const float* dyp = src + nc * OH * OW;
        float* dxp = dst + nc * H * W;
        std::fill(dxp, dxp + H * W, 0.f);
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = wh.begin[oh], h1 = wh.end[oh];
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = ww.begin[ow], w1 = ww.end[ow];
            const float d = dyp[oh * OW + ow] / float((h1 - h0) * (w1 - w0));
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) dxp[h * W + w] += d;
          }
        }
      }
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t nc = 0; nc < NC; ++nc) {
        const float* xp = src + nc * H * W;
        float* yp = dst + nc * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = wh.begin[oh], h1 = wh.end[oh];
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = ww.begin[ow], w1 = ww.end[ow];
            float sum = 0.f;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) sum += xp[h * W + w];
            yp[oh * OW + ow] = sum / float((h1 - h0) * (w1 - w0));
          }
        }
      }
    }
  }
};

std::unique_ptr<Kernel> make(const KernelCtx& c, bool bwd) {
  Planes p(c, bwd);
  if (p.divisible()) {
    if (bwd) return std::make_unique<PooledBwd>(c);
    return std::make_unique<PooledFwd>(c);
  }
  return std::make_unique<AdaptiveNative>(p, bwd);
}

KernelRegistrar r1("cpu", "adaptive_avg_pool2d", [](const KernelCtx& c) { return make(c, false); });
KernelRegistrar r2("cpu", "adaptive_avg_pool2d_grad", [](const KernelCtx& c) { return make(c, true); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
