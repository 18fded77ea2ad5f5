// oneDNN kernels for linear, linear_grad_data and linear_grad_weights (inner_product forward /
// backward_data / backward_weights). Activations are plain (x, dx, y, dy are nc). Training: w and dw are oi
// ([OUT, IN] row-major, PyTorch's layout), which oneDNN's gemm-based inner product takes directly, so no
// reorder runs. Inference: the weights are format_tag::any, so oneDNN picks its blocked brgemm layout (the
// plain-weights gemm path is ~5x slower for ResNet-50's fc at batch 16), and the kernel keeps them reordered
// in its persistent region, redone when the parameter store's version moved (like the convolutions, see
// dnnl_common.hpp; with cache_weights off, into scratch on every run). fused_linear (inference) adds relu / leaky_relu as an eltwise post-op. Primitives are
// created once; run() only swaps handles.
#include <algorithm>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using dnnl::memory;

dnnl::inner_product_forward::primitive_desc fwd_pd(const memory::desc& x, const memory::desc& w, const memory::desc* b,
                                                   const memory::desc& y,
                                                   dnnl::prop_kind pk = dnnl::prop_kind::forward_training,
                                                   dnnl::primitive_attr attr = user_scratchpad_attr()) {
  using pd_t = dnnl::inner_product_forward::primitive_desc;
  return b ? pd_t(engine(), pk, x, w, *b, y, attr) : pd_t(engine(), pk, x, w, y, attr);
}

struct LinearKernel : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
  void bind_scratchpad(const memory::desc& pad) {
    scratch = std::max(scratch, pad.get_size());
    if (pad.get_size()) ex.bind(DNNL_ARG_SCRATCHPAD, pad, Src::scratch(0));
  }
};

// x = in 0 [N, IN], w = in 1 [OUT, IN], b = in 2 [OUT] -> y = out 0 [N, OUT]; fused_linear: act (1 relu,
// 2 leaky_relu with negative_slope) as a post-op.
struct LinearFwd : LinearKernel {
  DnnlExec reorder_w;
  size_t persist = 0;
  PreparedVersion prepared;
  explicit LinearFwd(const KernelCtx& c) {
    const bool has_bias = c.in.size() == 3;
    auto x = plain_desc(c.in[0]), w = plain_desc(c.in[1]), y = plain_desc(c.out[0]);
    memory::desc b = has_bias ? plain_desc(c.in[2]) : memory::desc();
    auto attr = user_scratchpad_attr();
    int act = c.node.op == "fused_linear" ? int(c.node.attrs.i("act", 0)) : 0;
    if (act) {
      dnnl::post_ops po;
      po.append_eltwise(dnnl::algorithm::eltwise_relu, act == 2 ? float(c.node.attrs.f("negative_slope", 0.01)) : 0.f, 0.f);
      attr.set_post_ops(po);
    }
    auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    prepared.cached = c.cache_weights;
    memory::desc w_any = c.training ? w : memory::desc(w.get_dims(), w.get_data_type(), memory::format_tag::any);
    auto pd = fwd_pd(x, w_any, has_bias ? &b : nullptr, y, pk, attr);
    auto r = weight_reorder(w, pd.weights_desc());
    WeightScratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size(), prepared.cached);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    ex = DnnlExec(dnnl::inner_product_forward(pd));
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    if (has_bias) ex.bind(DNNL_ARG_BIAS, b, Src::in(2));
    ex.bind(DNNL_ARG_DST, y, Src::out(0));
    bind_scratchpad(pd.scratchpad_desc());
    scratch = sc.total;
  }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty() && prepared.stale(r)) {
      reorder_w.run(r);
      prepared.mark(r);
    }
    ex.run(r);
  }
};

// dy = in 0 [N, OUT], w = in 1 [OUT, IN] -> dx = out 0 [N, IN]
struct LinearGradData : LinearKernel {
  explicit LinearGradData(const KernelCtx& c) {
    auto dy = plain_desc(c.in[0]), w = plain_desc(c.in[1]), dx = plain_desc(c.out[0]);
    auto hint = fwd_pd(dx, w, nullptr, dy);
    dnnl::inner_product_backward_data::primitive_desc pd(engine(), dx, w, dy, hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::inner_product_backward_data(pd));
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_WEIGHTS, w, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_SRC, dx, Src::out(0));
    bind_scratchpad(pd.scratchpad_desc());
  }
};

// dy = in 0 [N, OUT], x = in 1 [N, IN] -> dw = out 0 [OUT, IN] (+ db = out 1 [OUT])
struct LinearGradWeights : LinearKernel {
  explicit LinearGradWeights(const KernelCtx& c) {
    const bool has_bias = c.out.size() == 2;
    auto dy = plain_desc(c.in[0]), x = plain_desc(c.in[1]), dw = plain_desc(c.out[0]);
    memory::desc db = has_bias ? plain_desc(c.out[1]) : memory::desc();
    using pd_t = dnnl::inner_product_backward_weights::primitive_desc;
    auto hint = fwd_pd(x, dw, has_bias ? &db : nullptr, dy);
    auto attr = user_scratchpad_attr();
    pd_t pd = has_bias ? pd_t(engine(), x, dw, db, dy, hint, attr) : pd_t(engine(), x, dw, dy, hint, attr);
    ex = DnnlExec(dnnl::inner_product_backward_weights(pd));
    ex.bind(DNNL_ARG_SRC, x, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_DIFF_WEIGHTS, dw, Src::out(0));
    if (has_bias) ex.bind(DNNL_ARG_DIFF_BIAS, db, Src::out(1));
    bind_scratchpad(pd.scratchpad_desc());
  }
};

KernelRegistrar r1("cpu", "linear", [](const KernelCtx& c) { return std::make_unique<LinearFwd>(c); });
KernelRegistrar r4("cpu", "fused_linear", [](const KernelCtx& c) { return std::make_unique<LinearFwd>(c); });
KernelRegistrar r2("cpu", "linear_grad_data", [](const KernelCtx& c) { return std::make_unique<LinearGradData>(c); });
KernelRegistrar r3("cpu", "linear_grad_weights", [](const KernelCtx& c) { return std::make_unique<LinearGradWeights>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
