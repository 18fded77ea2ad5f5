// CPU kernels for lrn and lrn_grad (plain nchw, f32). Odd sizes run oneDNN lrn_across_channels, whose window
// [c - (size-1)/2, c + (size-1)/2] and alpha/size scaling equal PyTorch's there. Even sizes run LrnNative: oneDNN's
// window is then symmetric with size-1 channels while PyTorch's is [c - size/2, c + (size-1)/2]. oneDNN's backward may
// need the workspace of a forward_training pass; the lrn_grad kernel then re-runs that forward on x into its own
// scratch (dst and workspace), so the forward op keeps a single output. run() allocates nothing.
#include <algorithm>
#include <cmath>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;

struct LrnParams {
  int64_t size, lo, hi;  // window [c - lo, c + hi]
  float alpha, beta, k;
};

LrnParams params(const Attrs& a) {
  int64_t size = a.i("size");
  return {size, size / 2, (size - 1) / 2, float(a.f("alpha", 1e-4)), float(a.f("beta", 0.75)), float(a.f("k", 1.0))};
}

dnnl::lrn_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const TensorDesc& x, const LrnParams& p) {
  return dnnl::lrn_forward::primitive_desc(engine(), prop, alg::lrn_across_channels, plain_desc(x), plain_desc(x), p.size,
                                           p.alpha, p.beta, p.k, user_scratchpad_attr());
}

struct LrnFwd : Kernel {  // x -> y
  DnnlExec ex;
  size_t scratch = 0;
  LrnFwd(const KernelCtx& c, const LrnParams& p) {
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, c.in[0], p);
    ex = DnnlExec(dnnl::lrn_forward(pd));
    ex.bind(DNNL_ARG_SRC, plain_desc(c.in[0]), Src::in(0));
    ex.bind(DNNL_ARG_DST, plain_desc(c.out[0]), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// (dy, x) -> dx. Scratch: oneDNN scratchpad (shared by the two primitives, which run in turn), then, when the
// backward wants a workspace, the recomputed forward output and the workspace.
struct LrnBwd : Kernel {
  DnnlExec fwd, bwd;
  size_t scratch = 0;
  LrnBwd(const KernelCtx& c, const LrnParams& p) {
    const TensorDesc &dy = c.in[0], &x = c.in[1];
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, x, p);
    dnnl::lrn_backward::primitive_desc pd(engine(), alg::lrn_across_channels, plain_desc(x), plain_desc(dy), plain_desc(x),
                                          p.size, p.alpha, p.beta, p.k, hint, user_scratchpad_attr());
    ScratchLayout L;
    L.add(std::max(pd.scratchpad_desc().get_size(), hint.scratchpad_desc().get_size()));
    bwd = DnnlExec(dnnl::lrn_backward(pd));
    bwd.bind(DNNL_ARG_SRC, plain_desc(x), Src::in(1));
    bwd.bind(DNNL_ARG_DIFF_DST, plain_desc(dy), Src::in(0));
    bwd.bind(DNNL_ARG_DIFF_SRC, plain_desc(c.out[0]), Src::out(0));
    bind_scratchpad(bwd, pd.scratchpad_desc());
    if (pd.workspace_desc().get_size()) {
      size_t y_off = L.add(x.bytes()), ws_off = L.add(hint.workspace_desc().get_size());
      fwd = DnnlExec(dnnl::lrn_forward(hint));
      fwd.bind(DNNL_ARG_SRC, plain_desc(x), Src::in(1));
      fwd.bind(DNNL_ARG_DST, plain_desc(x), Src::scratch(y_off));
      fwd.bind(DNNL_ARG_WORKSPACE, hint.workspace_desc(), Src::scratch(ws_off));
      bind_scratchpad(fwd, hint.scratchpad_desc());
      bwd.bind(DNNL_ARG_WORKSPACE, pd.workspace_desc(), Src::scratch(ws_off));
    }
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!fwd.empty()) fwd.run(r);
    bwd.run(r);
  }
};

// PyTorch's window for even sizes, as OpenMP loops over (n, c) planes. Forward: y's plane first accumulates the
// window's sum of squares, then becomes x * D^-beta. Backward (scratch: one tensor T = dy x D^(-beta-1)):
// dx_j = dy_j D_j^-beta - 2 beta alpha/size x_j sum_{c in [j - hi, j + lo]} T_c.
struct LrnNative : Kernel {
  LrnParams p;
  int64_t N, C, HW;
  bool backward;
  LrnNative(const KernelCtx& c, const LrnParams& prm, bool bwd) : p(prm), backward(bwd) {
    const Shape& x = c.in[bwd ? 1 : 0].shape;
    N = x[0];
    C = x[1];
    HW = x[2] * x[3];
  }
  size_t scratch_bytes() const override { return backward ? size_t(N * C * HW) * sizeof(float) : 0; }

  // dst[i] = sum of x^2 over the window of channel c, for the plane (n, c).
  void window_sum(float* dst, const float* x, int64_t n, int64_t c) const {
    std::fill(dst, dst + HW, 0.f);
    for (int64_t cc = std::max<int64_t>(c - p.lo, 0); cc <= std::min(c + p.hi, C - 1); ++cc) {
      const float* xp = x + (n * C + cc) * HW;
      for (int64_t i = 0; i < HW; ++i) dst[i] += xp[i] * xp[i];
    }
  }

  void run(const RunCtx& r) override {
    const float a = p.alpha / float(p.size);
    if (!backward) {
      const float* x = static_cast<const float*>(r.in[0]);
      float* y = static_cast<float*>(r.out[0]);
#pragma omp parallel for
      for (int64_t nc = 0; nc < N * C; ++nc) {
        float* yp = y + nc * HW;
        const float* xp = x + nc * HW;
        window_sum(yp, x, nc / C, nc % C);
        for (int64_t i = 0; i < HW; ++i) yp[i] = xp[i] * std::pow(p.k + a * yp[i], -p.beta);
      }
      return;
    }
    const float *dy = static_cast<const float*>(r.in[0]), *x = static_cast<const float*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    float* t = static_cast<float*>(r.scratch);
#pragma omp parallel for
    for (int64_t nc = 0; nc < N * C; ++nc) {
      float* tp = t + nc * HW;
      const float *xp = x + nc * HW, *dyp = dy + nc * HW;
      window_sum(tp, x, nc / C, nc % C);
      for (int64_t i = 0; i < HW; ++i) tp[i] = dyp[i] * xp[i] * std::pow(p.k + a * tp[i], -p.beta - 1.f);
    }
    const float coef = 2.f * p.beta * a;
#pragma omp parallel for
    for (int64_t nj = 0; nj < N * C; ++nj) {
      const int64_t n = nj / C, j = nj % C;
      float* dxp = dx + nj * HW;
      const float *xp = x + nj * HW, *dyp = dy + nj * HW;
      window_sum(dxp, x, n, j);
      for (int64_t i = 0; i < HW; ++i) dxp[i] = dyp[i] * std::pow(p.k + a * dxp[i], -p.beta);
      for (int64_t c = std::max<int64_t>(j - p.hi, 0); c <= std::min(j + p.lo, C - 1); ++c) {
        const float* tp = t + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dxp[i] -= coef * xp[i] * tp[i];
      }
    }
  }
};

KernelRegistrar r1("cpu", "lrn", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  LrnParams p = params(c.node.attrs);
  if (p.size % 2 == 0) return std::make_unique<LrnNative>(c, p, false);
  return std::make_unique<LrnFwd>(c, p);
});
KernelRegistrar r2("cpu", "lrn_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  LrnParams p = params(c.node.attrs);
  if (p.size % 2 == 0) return std::make_unique<LrnNative>(c, p, true);
  return std::make_unique<LrnBwd>(c, p);
});

}  // namespace
}  // namespace cpu
}  // namespace cnn
