// oneDNN kernels for batch_norm and batch_norm_grad. x is viewed as [N, C, H, W] in its layout ([N, C] as
// plain [N, C, 1, 1]); y, dy and dx share x's layout (layout rule); gamma and beta go in as separate
// scale/shift memories. Training runs forward_training
// (mean, biased variance out), then a native loop over C updates running_mean/running_var (inputs 3, 4)
// in place when track_running_stats=1. Eval runs with use_global_stats. Primitives are created once.
#include "core/layout.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using flags = dnnl::normalization_flags;

Shape as_nchw(const Shape& x) { return x.size() == 4 ? x : Shape{x[0], x[1], 1, 1}; }

flags bn_flags(bool training) {
  flags f = flags::use_scale | flags::use_shift;
  return training ? f : f | flags::use_global_stats;
}

struct BatchNormFwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  bool update = false;
  int64_t C = 0, m = 0;
  double momentum = 0;

  explicit BatchNormFwd(const KernelCtx& c) {
    const Attrs& at = c.node.attrs;
    const bool training = at.i("training", 0);
    update = training && at.i("track_running_stats", 1);
    momentum = at.f("momentum", 0.1);
    Shape s = as_nchw(c.in[0].shape);
    C = s[1];
    m = s[0] * s[2] * s[3];
    auto md = md_of(s, c.in[0].dtype, c.layout_in(0));
    auto cmd = plain_desc(Shape{C}, DType::f32);
    dnnl::batch_normalization_forward::primitive_desc pd(
        engine(), training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, md, md,
        float(at.f("eps", 1e-5)), bn_flags(training), user_scratchpad_attr());
    ex = DnnlExec(dnnl::batch_normalization_forward(pd));
    ex.bind(DNNL_ARG_SRC, md, Src::in(0));
    ex.bind(DNNL_ARG_SCALE, cmd, Src::in(1));
    ex.bind(DNNL_ARG_SHIFT, cmd, Src::in(2));
    ex.bind(DNNL_ARG_MEAN, cmd, training ? Src::out(1) : Src::in(3));
    ex.bind(DNNL_ARG_VARIANCE, cmd, training ? Src::out(2) : Src::in(4));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    ex.run(r);
    if (!update) return;
    const float* mean = static_cast<const float*>(r.out[1]);
    const float* var = static_cast<const float*>(r.out[2]);
    float* rm = static_cast<float*>(r.in[3]);
    float* rv = static_cast<float*>(r.in[4]);
    const double unbias = double(m) / double(m - 1);
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = float((1 - momentum) * rm[c] + momentum * mean[c]);
      rv[c] = float((1 - momentum) * rv[c] + momentum * var[c] * unbias);
    }
  }
};

// in: dy, x, gamma, mean, var (batch stats when training, running stats otherwise); out: dx, dgamma, dbeta
struct BatchNormBwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;

  explicit BatchNormBwd(const KernelCtx& c) {
    const bool training = c.node.attrs.i("training", 0);
    const float eps = float(c.node.attrs.f("eps", 1e-5));
    Shape s = as_nchw(c.in[1].shape);
    auto md = md_of(s, c.in[1].dtype, c.layout_in(1));
    auto cmd = plain_desc(Shape{s[1]}, DType::f32);
    dnnl::batch_normalization_forward::primitive_desc hint(engine(), dnnl::prop_kind::forward_training, md, md, eps,
                                                           bn_flags(training));
    dnnl::batch_normalization_backward::primitive_desc pd(engine(), dnnl::prop_kind::backward, md, md, md, eps,
                                                          bn_flags(training), hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::batch_normalization_backward(pd));
    ex.bind(DNNL_ARG_DIFF_DST, md, Src::in(0));
    ex.bind(DNNL_ARG_SRC, md, Src::in(1));
    ex.bind(DNNL_ARG_SCALE, cmd, Src::in(2));
    ex.bind(DNNL_ARG_MEAN, cmd, Src::in(3));
    ex.bind(DNNL_ARG_VARIANCE, cmd, Src::in(4));
    ex.bind(DNNL_ARG_DIFF_SRC, md, Src::out(0));
    ex.bind(DNNL_ARG_DIFF_SCALE, cmd, Src::out(1));
    ex.bind(DNNL_ARG_DIFF_SHIFT, cmd, Src::out(2));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

KernelRegistrar r1("cpu", "batch_norm", [](const KernelCtx& c) { return std::make_unique<BatchNormFwd>(c); });
KernelRegistrar r2("cpu", "batch_norm_grad", [](const KernelCtx& c) { return std::make_unique<BatchNormBwd>(c); });
LayoutRuleRegistrar l1("cpu", "batch_norm", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "batch_norm_grad", rule_follow_input(1));
Bf16Registrar b1("cpu", "batch_norm");  // x, y in bf16; scale, shift and statistics stay float32
Bf16Registrar b2("cpu", "batch_norm_grad");

}  // namespace
}  // namespace cpu
}  // namespace cnn
