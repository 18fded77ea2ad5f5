// oneDNN kernels for upsample_nearest2d and upsample_nearest2d_grad (resampling_nearest, f32) in any session layout:
// forward keeps x's layout, backward takes dy's (layout rules; oneDNN zeroes blocked padding). oneDNN
// maps output index o to round((o + 0.5) / s - 0.5); for an integer scale s that lies strictly within 0.5 - 0.5/s of
// o / s's floor, so it picks PyTorch's source o / s (tests/test_op_upsample.py checks it against torch). The backward
// sums each s_h x s_w block of dy into dx. Primitives are built once; run() only binds.
#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;

dnnl::resampling_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const dnnl::memory::desc& x,
                                                const dnnl::memory::desc& y) {
  return dnnl::resampling_forward::primitive_desc(engine(), prop, alg::resampling_nearest, x, y,
                                                  user_scratchpad_attr());
}

struct UpsampleFwd : Kernel {  // x -> y
  std::string impl_name;       // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  explicit UpsampleFwd(const KernelCtx& c) {
    auto x = md_of(c.in[0], c.layout_in(0)), y = md_of(c.out[0], c.layout_out(0));
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, x, y);
    ex = DnnlExec(dnnl::resampling_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_DST, y, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

struct UpsampleBwd : Kernel {  // dy -> dx
  std::string impl_name;       // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  explicit UpsampleBwd(const KernelCtx& c) {
    auto dy = md_of(c.in[0], c.layout_in(0)), dx = md_of(c.out[0], c.layout_out(0));
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, dx, dy);
    dnnl::resampling_backward::primitive_desc pd(engine(), alg::resampling_nearest, dx, dy, hint,
                                                 user_scratchpad_attr());
    ex = DnnlExec(dnnl::resampling_backward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_DIFF_SRC, dx, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

KernelRegistrar r1("cpu", "upsample_nearest2d", [](const KernelCtx& c) { return std::make_unique<UpsampleFwd>(c); });
KernelRegistrar r2("cpu", "upsample_nearest2d_grad",
                   [](const KernelCtx& c) { return std::make_unique<UpsampleBwd>(c); });
LayoutRuleRegistrar l1("cpu", "upsample_nearest2d", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "upsample_nearest2d_grad", rule_follow_input(0));
Bf16Registrar b1("cpu", "upsample_nearest2d");  // oneDNN resampling follows the KernelCtx dtypes
Bf16Registrar b2("cpu", "upsample_nearest2d_grad");

}  // namespace
}  // namespace cpu
}  // namespace cnn
