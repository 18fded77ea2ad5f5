// oneDNN kernels for activations (eltwise forward/backward) and add (binary add), and their layout rules:
// elementwise, so any layout works as long as every operand shares it. Forward keeps the input's layout,
// backward takes the saved tensor's (dy is reordered to it if it differs), add the first non-plain operand's.
#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/eltwise_kernels.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;

struct Add : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  explicit Add(const KernelCtx& c) {
    auto md = md_of(c.in[0], c.layout_in(0));
    dnnl::binary::primitive_desc pd(engine(), alg::binary_add, md, md, md);
    ex = DnnlExec(dnnl::binary(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC_0, md, Src::in(0));
    ex.bind(DNNL_ARG_SRC_1, md, Src::in(1));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
  }
  void run(const RunCtx& r) override { ex.run(r); }
};

float slope(const KernelCtx& c) { return float(c.node.attrs.f("negative_slope", 0.01)); }

KernelRegistrar r1("cpu", "relu",
                   [](const KernelCtx& c) { return std::make_unique<EltwiseFwd>(c, alg::eltwise_relu, 0.f); });
KernelRegistrar r2("cpu", "sigmoid",
                   [](const KernelCtx& c) { return std::make_unique<EltwiseFwd>(c, alg::eltwise_logistic, 0.f); });
KernelRegistrar r3("cpu", "tanh",
                   [](const KernelCtx& c) { return std::make_unique<EltwiseFwd>(c, alg::eltwise_tanh, 0.f); });
KernelRegistrar r4("cpu", "leaky_relu",
                   [](const KernelCtx& c) { return std::make_unique<EltwiseFwd>(c, alg::eltwise_relu, slope(c)); });
KernelRegistrar r5("cpu", "relu_grad", [](const KernelCtx& c) {
  return std::make_unique<EltwiseBwd>(c, alg::eltwise_relu_use_dst_for_bwd, alg::eltwise_relu_use_dst_for_bwd, 0.f,
                                      true);
});
KernelRegistrar r6("cpu", "sigmoid_grad", [](const KernelCtx& c) {
  return std::make_unique<EltwiseBwd>(c, alg::eltwise_logistic_use_dst_for_bwd, alg::eltwise_logistic_use_dst_for_bwd,
                                      0.f, true);
});
KernelRegistrar r7("cpu", "tanh_grad", [](const KernelCtx& c) {
  return std::make_unique<EltwiseBwd>(c, alg::eltwise_tanh_use_dst_for_bwd, alg::eltwise_tanh_use_dst_for_bwd, 0.f,
                                      true);
});
KernelRegistrar r8("cpu", "leaky_relu_grad", [](const KernelCtx& c) {
  return std::make_unique<EltwiseBwd>(c, alg::eltwise_relu, alg::eltwise_relu, slope(c), false);
});
KernelRegistrar r9("cpu", "add", [](const KernelCtx& c) { return std::make_unique<Add>(c); });

struct Rules {
  Rules() {
    for (const char* op : {"relu", "sigmoid", "tanh", "leaky_relu"}) {
      register_layout_rule("cpu", op, rule_follow_input(0));
      register_layout_rule("cpu", std::string(op) + "_grad", rule_follow_input(1));
    }
    register_layout_rule("cpu", "add", [](const LayoutQuery& q) {
      return rule_follow_input(q.in_layout[0] == Layout::plain ? 1 : 0)(q);
    });
    for (const char* op :
         {"relu", "sigmoid", "tanh", "leaky_relu", "add", "relu_grad", "sigmoid_grad", "tanh_grad", "leaky_relu_grad"})
      register_bf16_op("cpu", op);
  }
} rules;

}  // namespace
}  // namespace cpu
}  // namespace cnn
