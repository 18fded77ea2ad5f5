// oneDNN kernels for upsample_nearest2d and upsample_nearest2d_grad (resampling_nearest, plain nchw, f32). oneDNN
// maps output index o to round((o + 0.5) / s - 0.5); for an integer scale s that lies strictly within 0.5 - 0.5/s of
// o / s's floor, so it picks PyTorch's source o / s (tests/test_op_upsample.py checks it against torch). The backward
// sums each s_h x s_w block of dy into dx. Primitives are built once; run() only binds.
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;

dnnl::resampling_forward::primitive_desc fwd_pd(dnnl::prop_kind prop, const TensorDesc& x, const TensorDesc& y) {
  return dnnl::resampling_forward::primitive_desc(engine(), prop, alg::resampling_nearest, plain_desc(x), plain_desc(y),
                                                  user_scratchpad_attr());
}

struct UpsampleFwd : Kernel {  // x -> y
  DnnlExec ex;
  size_t scratch = 0;
  explicit UpsampleFwd(const KernelCtx& c) {
    auto pd = fwd_pd(dnnl::prop_kind::forward_inference, c.in[0], c.out[0]);
    ex = DnnlExec(dnnl::resampling_forward(pd));
    ex.bind(DNNL_ARG_SRC, plain_desc(c.in[0]), Src::in(0));
    ex.bind(DNNL_ARG_DST, plain_desc(c.out[0]), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

struct UpsampleBwd : Kernel {  // dy -> dx
  DnnlExec ex;
  size_t scratch = 0;
  explicit UpsampleBwd(const KernelCtx& c) {
    const TensorDesc &dy = c.in[0], &dx = c.out[0];
    auto hint = fwd_pd(dnnl::prop_kind::forward_training, dx, dy);
    dnnl::resampling_backward::primitive_desc pd(engine(), alg::resampling_nearest, plain_desc(dx), plain_desc(dy), hint,
                                                 user_scratchpad_attr());
    ex = DnnlExec(dnnl::resampling_backward(pd));
    ex.bind(DNNL_ARG_DIFF_DST, plain_desc(dy), Src::in(0));
    ex.bind(DNNL_ARG_DIFF_SRC, plain_desc(dx), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

KernelRegistrar r1("cpu", "upsample_nearest2d", [](const KernelCtx& c) { return std::make_unique<UpsampleFwd>(c); });
KernelRegistrar r2("cpu", "upsample_nearest2d_grad", [](const KernelCtx& c) { return std::make_unique<UpsampleBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
