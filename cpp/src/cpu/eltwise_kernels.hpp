// oneDNN eltwise kernels (forward y = f(x); backward dx from dy and the saved src or dst), shared by the classic
// activations (eltwise.cpp) and the activation family (activations_ext.cpp). The tensor keeps its layout.
#pragma once
#include <string>

#include "core/op.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {

struct EltwiseFwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  EltwiseFwd(const KernelCtx& c, dnnl::algorithm a, float alpha, float beta = 0.f) {
    auto md = md_of(c.in[0], c.layout_in(0));
    auto attr = user_scratchpad_attr();
    auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    dnnl::eltwise_forward::primitive_desc pd(engine(), pk, a, md, md, alpha, beta, attr);
    ex = DnnlExec(dnnl::eltwise_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, md, Src::in(0));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// dy = in 0, saved = in 1 (dst for *_use_dst_for_bwd algorithms, src otherwise)
struct EltwiseBwd : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  EltwiseBwd(const KernelCtx& c, dnnl::algorithm fwd_alg, dnnl::algorithm bwd_alg, float alpha, bool use_dst,
             float beta = 0.f) {
    auto md = md_of(c.in[0], c.layout_in(0));
    dnnl::eltwise_forward::primitive_desc hint(engine(), dnnl::prop_kind::forward_training, fwd_alg, md, md, alpha,
                                               beta);
    auto attr = user_scratchpad_attr();
    dnnl::eltwise_backward::primitive_desc pd(engine(), bwd_alg, md, md, md, alpha, beta, hint, attr);
    ex = DnnlExec(dnnl::eltwise_backward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_DIFF_DST, md, Src::in(0));
    ex.bind(use_dst ? DNNL_ARG_DST : DNNL_ARG_SRC, md, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_SRC, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

}  // namespace cpu
}  // namespace cnn
