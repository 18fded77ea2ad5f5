// CPU kernels for lrn and lrn_grad (f32) in any session layout: forward keeps x's layout, backward takes x's (dy is
// reordered to it) — except where oneDNN has only a reference implementation for the layout (then plain, see
// lrn_layout). Odd sizes run oneDNN lrn_across_channels, whose window
// [c - (size-1)/2, c + (size-1)/2] and alpha/size scaling equal PyTorch's there. Even sizes run LrnNative: oneDNN's
// window is then symmetric with size-1 channels while PyTorch's is [c - size/2, c + (size-1)/2]. oneDNN's backward may
// need the workspace of a forward_training pass; the lrn_grad kernel then re-runs that forward on x into its own
// scratch (dst and workspace), so the forward op keeps a single output. run() allocates nothing.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include "core/backend.hpp"
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

dnnl::lrn_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const dnnl::memory::desc& x, const LrnParams& p) {
  return dnnl::lrn_forward::primitive_desc(engine(), prop, alg::lrn_across_channels, x, x, p.size, p.alpha, p.beta, p.k,
                                           user_scratchpad_attr());
}

struct LrnFwd : Kernel {  // x -> y
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  LrnFwd(const KernelCtx& c, const LrnParams& p) {
    auto x = md_of(c.in[0], c.layout_in(0));
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, x, p);
    ex = DnnlExec(dnnl::lrn_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_DST, x, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// (dy, x) -> dx. Scratch: oneDNN scratchpad (shared by the two primitives, which run in turn), then, when the
// backward wants a workspace, the recomputed forward output and the workspace.
struct LrnBwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec fwd, bwd;
  size_t scratch = 0;
  LrnBwd(const KernelCtx& c, const LrnParams& p) {
    auto x = md_of(c.in[1], c.layout_in(1));  // dy and dx share x's layout
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, x, p);
    dnnl::lrn_backward::primitive_desc pd(engine(), alg::lrn_across_channels, x, x, x, p.size, p.alpha, p.beta, p.k,
                                          hint, user_scratchpad_attr());
    ScratchLayout L;
    L.add(std::max(pd.scratchpad_desc().get_size(), hint.scratchpad_desc().get_size()));
    bwd = DnnlExec(dnnl::lrn_backward(pd));
    impl_name = onednn_impl(pd);  // (with the forward recomputed first when it needs a workspace)
    bwd.bind(DNNL_ARG_SRC, x, Src::in(1));
    bwd.bind(DNNL_ARG_DIFF_DST, x, Src::in(0));
    bwd.bind(DNNL_ARG_DIFF_SRC, x, Src::out(0));
    bind_scratchpad(bwd, pd.scratchpad_desc());
    if (pd.workspace_desc().get_size()) {
      size_t y_off = L.add(x.get_size()), ws_off = L.add(hint.workspace_desc().get_size());
      fwd = DnnlExec(dnnl::lrn_forward(hint));
      fwd.bind(DNNL_ARG_SRC, x, Src::in(1));
      fwd.bind(DNNL_ARG_DST, x, Src::scratch(y_off));
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

// PyTorch's window for even sizes, as OpenMP loops over (n, chunk of pixels) items in any layout: element (n, c, p)
// (p = h*W + w) lies at n*nstr + p*pstr + coff[c], and within an item the loops run channel by channel over the
// chunk's pixels (contiguous in plain). Forward: y first accumulates the window's sum of squares, then becomes
// x * D^-beta. Backward (scratch: one tensor T = dy x D^(-beta-1) in x's layout):
// dx_j = dy_j D_j^-beta - 2 beta alpha/size x_j sum_{c in [j - hi, j + lo]} T_c. Blocked padding lanes of y / dx
// are written 0. Sums run in the same order in every layout, so every layout gives identical results.
struct LrnNative : Kernel {
  std::string impl() const override { return "native"; }
  static constexpr int64_t kChunk = 256;
  LrnParams p;
  int64_t N, C, Cp, HW, nstr, pstr;
  std::vector<int64_t> coff;  // per stored channel (padding included)
  size_t bytes;
  bool backward;
  LrnNative(const KernelCtx& c, const LrnParams& prm, bool bwd) : p(prm), backward(bwd) {
    const Shape& x = c.in[bwd ? 1 : 0].shape;
    const Layout l = c.layout_in(bwd ? 1 : 0);
    N = x[0];
    C = x[1];
    HW = x[2] * x[3];
    const int64_t b = l == Layout::nChw16c ? 16 : l == Layout::nChw8c ? 8 : 1;
    Cp = (C + b - 1) / b * b;
    bytes = layout_bytes(c.in[bwd ? 1 : 0], l);
    for (int64_t ch = 0; ch < Cp; ++ch)
      coff.push_back(l == Layout::plain ? ch * HW : l == Layout::nhwc ? ch : (ch / b) * HW * b + ch % b);
    nstr = Cp * HW;
    pstr = l == Layout::plain ? 1 : l == Layout::nhwc ? C : b;
  }
  size_t scratch_bytes() const override { return backward ? bytes : 0; }

  // dst(c, i) = sum of x^2 over the window of channel c, for the chunk's pixels i in [0, np) from base.
  void window_sum(float* dst, const float* x, int64_t base, int64_t c, int64_t np) const {
    float* d = dst + base + coff[c];
    for (int64_t i = 0; i < np; ++i) d[i * pstr] = 0.f;
    for (int64_t cc = std::max<int64_t>(c - p.lo, 0); cc <= std::min(c + p.hi, C - 1); ++cc) {
      const float* xp = x + base + coff[cc];
      for (int64_t i = 0; i < np; ++i) d[i * pstr] += xp[i * pstr] * xp[i * pstr];
    }
  }
  void zero_padding(float* dst, int64_t base, int64_t np) const {
    for (int64_t c = C; c < Cp; ++c)
      for (int64_t i = 0; i < np; ++i) dst[base + coff[c] + i * pstr] = 0.f;
  }

  void run(const RunCtx& r) override {
    const float a = p.alpha / float(p.size);
    const int64_t chunks = (HW + kChunk - 1) / kChunk, items = N * chunks;
    if (!backward) {
      const float* x = static_cast<const float*>(r.in[0]);
      float* y = static_cast<float*>(r.out[0]);
#pragma omp parallel for schedule(static)
      for (int64_t it = 0; it < items; ++it) {
        const int64_t p0 = (it % chunks) * kChunk, np = std::min(kChunk, HW - p0),
                      base = (it / chunks) * nstr + p0 * pstr;
        for (int64_t c = 0; c < C; ++c) {
          window_sum(y, x, base, c, np);
          float* yp = y + base + coff[c];
          const float* xp = x + base + coff[c];
          for (int64_t i = 0; i < np; ++i) yp[i * pstr] = xp[i * pstr] * std::pow(p.k + a * yp[i * pstr], -p.beta);
        }
        zero_padding(y, base, np);
      }
      return;
    }
    const float *dy = static_cast<const float*>(r.in[0]), *x = static_cast<const float*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    float* t = static_cast<float*>(r.scratch);
    const float coef = 2.f * p.beta * a;
#pragma omp parallel for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t p0 = (it % chunks) * kChunk, np = std::min(kChunk, HW - p0),
                    base = (it / chunks) * nstr + p0 * pstr;
      for (int64_t c = 0; c < C; ++c) {
        window_sum(t, x, base, c, np);
        float* tp = t + base + coff[c];
        const float *xp = x + base + coff[c], *dyp = dy + base + coff[c];
        for (int64_t i = 0; i < np; ++i)
          tp[i * pstr] = dyp[i * pstr] * xp[i * pstr] * std::pow(p.k + a * tp[i * pstr], -p.beta - 1.f);
      }
      for (int64_t j = 0; j < C; ++j) {  // reads T only at this item's pixels, all written above
        float* dxp = dx + base + coff[j];
        const float *xp = x + base + coff[j], *dyp = dy + base + coff[j];
        window_sum(dx, x, base, j, np);
        for (int64_t i = 0; i < np; ++i) dxp[i * pstr] = dyp[i * pstr] * std::pow(p.k + a * dxp[i * pstr], -p.beta);
        for (int64_t c = std::max<int64_t>(j - p.hi, 0); c <= std::min(j + p.lo, C - 1); ++c) {
          const float* tp = t + base + coff[c];
          for (int64_t i = 0; i < np; ++i) dxp[i * pstr] -= coef * xp[i * pstr] * tp[i * pstr];
        }
      }
      zero_padding(dx, base, np);
    }
  }
};

// The layout an lrn / lrn_grad node runs in given x's current layout: x's, unless odd-size oneDNN has only a
// reference implementation for it in that direction where it has a better one for plain (memoized).
int lrn_rank(const Shape& x, Layout l, const LrnParams& p, bool bwd) {
  try {
    auto md = md_of(x, DType::f32, l);
    auto f = fwd_pd(bwd ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, md, p);
    std::string impl = f.impl_info_str();
    if (bwd)
      impl = dnnl::lrn_backward::primitive_desc(engine(), alg::lrn_across_channels, md, md, md, p.size, p.alpha, p.beta,
                                                p.k, f)
                 .impl_info_str();
    return impl.rfind("ref", 0) == 0 ? 0 : 1;
  } catch (const dnnl::error&) {
    return -1;
  }
}

Layout lrn_layout(const LayoutQuery& q, int xi, bool bwd) {
  const Shape& x = q.in[xi].shape;
  const Layout l = q.in_layout[xi];
  const LrnParams p = params(q.node.attrs);
  if (l == Layout::plain || p.size % 2 == 0 || q.in[xi].dtype != DType::f32) return l;
  static std::mutex mu;
  static std::map<std::string, Layout> memo;
  const std::string key =
      shape_str(x) + "/" + std::to_string(int(l)) + "/" + std::to_string(p.size) + "/" + std::to_string(bwd);
  std::lock_guard<std::mutex> lock(mu);
  auto it = memo.find(key);
  if (it != memo.end()) return it->second;
  return memo[key] = lrn_rank(x, l, p, bwd) >= lrn_rank(x, Layout::plain, p, bwd) ? l : Layout::plain;
}

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
LayoutRuleRegistrar l1("cpu", "lrn", [](const LayoutQuery& q) {  // x -> y
  Layout l = lrn_layout(q, 0, false);
  return LayoutChoice{{l}, {l}};
});
LayoutRuleRegistrar l2("cpu", "lrn_grad", [](const LayoutQuery& q) {  // (dy, x) -> dx
  Layout l = lrn_layout(q, 1, true);
  return LayoutChoice{{l, l}, {l}};
});

}  // namespace
}  // namespace cpu
}  // namespace cnn
