// cpu kernels for the activations of ops/activations.cpp. oneDNN eltwise where its formula is the reference's:
//   clip        eltwise_clip_v2 (alpha = min, beta = max; backward passes dy strictly inside, as PyTorch)
//   hardsigmoid eltwise_hardsigmoid (alpha, beta)        hardswish eltwise_hardswish (alpha = 1/6, beta = 1/2)
//   silu        eltwise_swish (alpha = 1)                gelu      eltwise_gelu_erf / eltwise_gelu_tanh
//   mish        eltwise_mish                             elu       eltwise_elu (alpha)
// Native loops (ops/activations_math.hpp's formulas, OpenMP, plain layout): softplus (oneDNN's soft_relu computes
// log(1 + exp(x)) and loses the relative accuracy of log1p for x << 0: 1.3% at x = -10, which mish's ONNX
// expansion Softplus -> Tanh -> Mul shows; PyTorch uses log1p), erf (oneDNN has
// no erf eltwise), and prelu_grad (dw summed per channel in double in a fixed order: deterministic). prelu's
// forward is oneDNN's prelu primitive with the weight broadcast as [1, C, 1, ...] or [1, 1, ...].
// The oneDNN eltwise ops and prelu's forward take any activation layout (every operand shares it); the native
// ones are plain only.
#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/eltwise_alg.hpp"
#include "cpu/eltwise_kernels.hpp"
#include "ops/activations_math.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;
constexpr int64_t kParallelElems = 1 << 15;

// The oneDNN algorithm computing node's activation, if it computes the reference's formula (cpu/eltwise_alg.hpp).
bool onednn_alg(const Node& n, OneDnnAlg* out) { return cpu::onednn_alg(act::params_of(n.op, n.attrs), out); }

// Native elementwise loops (plain float32): forward y = f(x), backward dx = dy * f'(x).
struct NativeAct : Kernel {
  act::Params p;
  int64_t n;
  bool backward;
  NativeAct(const KernelCtx& c, bool bwd)
      : p(act::params_of(c.node.op, c.node.attrs)), n(numel(c.in[0].shape)), backward(bwd) {}
  void run(const RunCtx& r) override {
    const int kind = p.kind;
    const float a = float(p.a), b = float(p.b);
    if (!backward) {
      const float* x = static_cast<const float*>(r.in[0]);
      float* y = static_cast<float*>(r.out[0]);
#pragma omp parallel for schedule(static) if (n >= kParallelElems)
      for (int64_t i = 0; i < n; ++i) y[i] = act::fwd<float>(kind, x[i], a, b);
    } else {
      const float* dy = static_cast<const float*>(r.in[0]);
      const float* x = static_cast<const float*>(r.in[1]);
      float* dx = static_cast<float*>(r.out[0]);
#pragma omp parallel for schedule(static) if (n >= kParallelElems)
      for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * act::deriv<float>(kind, x[i], a, b);
    }
  }
};

std::unique_ptr<Kernel> make_fwd(const KernelCtx& c) {
  OneDnnAlg e;
  if (onednn_alg(c.node, &e)) return std::make_unique<EltwiseFwd>(c, e.a, e.alpha, e.beta);
  return std::make_unique<NativeAct>(c, false);
}
std::unique_ptr<Kernel> make_bwd(const KernelCtx& c) {
  OneDnnAlg e;
  if (onednn_alg(c.node, &e)) return std::make_unique<EltwiseBwd>(c, e.a, e.a, e.alpha, /*use_dst=*/false, e.beta);
  return std::make_unique<NativeAct>(c, true);
}

// Channels of x (axis 1; one for rank < 2) and the element counts around them.
void prelu_dims(const Shape& x, int64_t* outer, int64_t* c, int64_t* inner) {
  *c = x.size() >= 2 ? x[1] : 1;
  *outer = x.size() >= 2 ? x[0] : numel(x);
  *inner = 1;
  for (size_t i = 2; i < x.size(); ++i) *inner *= x[i];
}

struct PreluFwd : Kernel {
  std::string impl_name;
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  explicit PreluFwd(const KernelCtx& c) {
    const Shape& xs = c.in[0].shape;
    auto md = md_of(c.in[0], c.layout_in(0));
    Shape ws(xs.size(), 1);
    if (xs.size() >= 2) ws[1] = c.in[1].shape[0];
    auto wmd = plain_desc(ws, c.in[1].dtype);
    auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    dnnl::prelu_forward::primitive_desc pd(engine(), pk, md, wmd, md, user_scratchpad_attr());
    ex = DnnlExec(dnnl::prelu_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, md, Src::in(0));
    ex.bind(DNNL_ARG_WEIGHTS, wmd, Src::in(1));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// (dy, x, w) -> (dx, dw): channels in parallel, each summed in double in a fixed order; a shared weight sums its
// per-channel partial sums in channel order afterwards (scratch: one double per channel).
struct PreluBwd : Kernel {
  int64_t outer, c, inner;
  bool shared;
  explicit PreluBwd(const KernelCtx& k) : shared(numel(k.in[2].shape) == 1) {
    prelu_dims(k.in[1].shape, &outer, &c, &inner);
  }
  size_t scratch_bytes() const override { return size_t(c) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* x = static_cast<const float*>(r.in[1]);
    const float* w = static_cast<const float*>(r.in[2]);
    float* dx = static_cast<float*>(r.out[0]);
    float* dw = static_cast<float*>(r.out[1]);
    double* part = static_cast<double*>(r.scratch);
    const int64_t C = c, O = outer, I = inner;
    const bool sh = shared;
#pragma omp parallel for schedule(static) if (O * C * I >= kParallelElems && C > 1)
    for (int64_t k = 0; k < C; ++k) {
      const float wk = w[sh ? 0 : k];
      double s = 0;
      for (int64_t o = 0; o < O; ++o) {
        const int64_t base = (o * C + k) * I;
        for (int64_t i = 0; i < I; ++i) {
          const float xv = x[base + i], g = dy[base + i];
          if (xv > 0.f) {
            dx[base + i] = g;
          } else {
            dx[base + i] = g * wk;
            s += double(g) * double(xv);
          }
        }
      }
      part[k] = s;
    }
    if (sh) {
      double t = 0;
      for (int64_t k = 0; k < C; ++k) t += part[k];
      dw[0] = float(t);
    } else {
      for (int64_t k = 0; k < C; ++k) dw[k] = float(part[k]);
    }
  }
};

struct Regs {
  Regs() {
    for (const char* op : {"clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu", "softplus", "erf"}) {
      register_kernel("cpu", op, make_fwd);
      register_kernel("cpu", std::string(op) + "_grad", make_bwd);
    }
    // Any layout where oneDNN runs the node (the native loops would break blocked layouts' zero padding).
    for (const char* op : {"clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu", "softplus"}) {
      register_layout_rule("cpu", op, [](const LayoutQuery& q) {
        OneDnnAlg e;
        if (onednn_alg(q.node, &e)) return rule_follow_input(0)(q);
        return LayoutChoice{std::vector<Layout>(q.in.size(), Layout::plain),
                            std::vector<Layout>(q.out.size(), Layout::plain)};
      });
      register_layout_rule("cpu", std::string(op) + "_grad", [](const LayoutQuery& q) {
        OneDnnAlg e;
        if (onednn_alg(q.node, &e)) return rule_follow_input(1)(q);
        return LayoutChoice{std::vector<Layout>(q.in.size(), Layout::plain),
                            std::vector<Layout>(q.out.size(), Layout::plain)};
      });
    }
    register_layout_rule("cpu", "prelu", rule_follow_input(0));  // the weight stays plain [1, C, 1, 1]
    register_kernel("cpu", "prelu",
                    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<PreluFwd>(c); });
    register_kernel("cpu", "prelu_grad",
                    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<PreluBwd>(c); });
  }
} regs;

}  // namespace
}  // namespace cpu
}  // namespace cnn
