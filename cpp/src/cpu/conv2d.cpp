// oneDNN kernels for conv2d, conv2d_grad_data and conv2d_grad_weights (convolution_direct).
// Activations stay plain nchw; weights are created with format_tag::any and, when oneDNN picks a blocked
// layout, reordered between the plain [K, C/groups, R, S] parameter (goihw when groups > 1, same bytes)
// and the kernel's scratch region. Scratch: the oneDNN scratchpad (shared by the kernel's primitives, which
// run one after another) first, then the blocked weights. Primitives are built once; run() only binds.
#include <algorithm>
#include <optional>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
using mdesc = dnnl::memory::desc;
using reorder_pd = dnnl::reorder::primitive_desc;

dims pair_attr(const Attrs& a, const char* name, int64_t dflt) {
  std::vector<int64_t> v = a.is(name, {dflt, dflt});
  return {v[0], v.back()};
}

// Descriptors and geometry shared by the three kernels; x, w, y are the forward shapes.
struct ConvDescs {
  mdesc src, dst, w_user, w_any, bias;
  dims strides, dilates, pad;
  ConvDescs(const KernelCtx& c, const Shape& x, const Shape& w, const Shape& y) {
    DType t = c.in[0].dtype;
    int64_t G = c.node.attrs.i("groups", 1);
    Shape ws = G > 1 ? Shape{G, w[0] / G, w[1], w[2], w[3]} : w;
    src = plain_desc(x, t);
    dst = plain_desc(y, t);
    w_user = plain_desc(ws, t);
    w_any = mdesc(dims_of(ws), dt_of(t), dnnl::memory::format_tag::any);
    bias = plain_desc(Shape{w[0]}, t);
    strides = pair_attr(c.node.attrs, "stride", 1);
    pad = pair_attr(c.node.attrs, "padding", 0);
    dims d = pair_attr(c.node.attrs, "dilation", 1);
    dilates = {d[0] - 1, d[1] - 1};
  }
  dnnl::convolution_forward::primitive_desc fwd(bool with_bias, const dnnl::primitive_attr& attr = {}) const {
    using fpd = dnnl::convolution_forward::primitive_desc;
    auto pk = dnnl::prop_kind::forward_training;
    auto alg = dnnl::algorithm::convolution_direct;
    return with_bias ? fpd(engine(), pk, alg, src, w_any, bias, dst, strides, dilates, pad, pad, attr)
                     : fpd(engine(), pk, alg, src, w_any, dst, strides, dilates, pad, pad, attr);
  }
};

// The weight reorder between the plain parameter layout and the one a primitive chose; none when equal.
std::optional<reorder_pd> weight_reorder(const mdesc& from, const mdesc& to) {
  if (from == to) return std::nullopt;
  return reorder_pd(engine(), from, engine(), to, user_scratchpad_attr());
}

// Scratch layout: oneDNN scratchpad of the largest user first, blocked weights after it.
struct Scratch {
  size_t weights = 0, total = 0;
  Scratch(size_t pad, const std::optional<reorder_pd>& r, size_t weight_bytes) {
    ScratchLayout L;
    L.add(std::max(pad, r ? r->scratchpad_desc().get_size() : size_t(0)));
    if (r) weights = L.add(weight_bytes);
    total = L.total;
  }
};

void bind_scratchpad(DnnlExec& ex, const mdesc& md) {
  if (md.get_size()) ex.bind(DNNL_ARG_SCRATCHPAD, md, Src::scratch(0));
}

DnnlExec bind_reorder(const reorder_pd& pd, Src from, Src to) {
  DnnlExec ex{dnnl::reorder(pd)};
  ex.bind(DNNL_ARG_FROM, pd.src_desc(), from);
  ex.bind(DNNL_ARG_TO, pd.dst_desc(), to);
  bind_scratchpad(ex, pd.scratchpad_desc());
  return ex;
}

struct ConvFwd : Kernel {  // (x, w [, b]) -> y
  DnnlExec reorder_w, conv;
  size_t scratch = 0;
  explicit ConvFwd(const KernelCtx& c) {
    bool with_bias = c.in.size() > 2;
    ConvDescs d(c, c.in[0].shape, c.in[1].shape, c.out[0].shape);
    auto pd = d.fwd(with_bias, user_scratchpad_attr());
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    Scratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size());
    scratch = sc.total;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), Src::scratch(sc.weights));
    conv = DnnlExec(dnnl::convolution_forward(pd));
    conv.bind(DNNL_ARG_SRC, d.src, Src::in(0));
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? Src::scratch(sc.weights) : Src::in(1));
    if (with_bias) conv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
    conv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    conv.run(r);
  }
};

struct ConvBwdData : Kernel {  // (dy, w) -> dx
  DnnlExec reorder_w, conv;
  size_t scratch = 0;
  explicit ConvBwdData(const KernelCtx& c) {
    ConvDescs d(c, c.out[0].shape, c.in[1].shape, c.in[0].shape);
    auto hint = d.fwd(false);
    dnnl::convolution_backward_data::primitive_desc pd(engine(), dnnl::algorithm::convolution_direct, d.src, d.w_any, d.dst,
                                                       d.strides, d.dilates, d.pad, d.pad, hint, user_scratchpad_attr());
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    Scratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size());
    scratch = sc.total;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), Src::scratch(sc.weights));
    conv = DnnlExec(dnnl::convolution_backward_data(pd));
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? Src::scratch(sc.weights) : Src::in(1));
    conv.bind(DNNL_ARG_DIFF_SRC, d.src, Src::out(0));
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    conv.run(r);
  }
};

struct ConvBwdWeights : Kernel {  // (dy, x) -> dw [, db]
  DnnlExec conv, reorder_dw;
  size_t scratch = 0;
  explicit ConvBwdWeights(const KernelCtx& c) {
    bool with_bias = c.out.size() > 1;
    ConvDescs d(c, c.in[1].shape, c.out[0].shape, c.in[0].shape);
    auto hint = d.fwd(with_bias);
    using bpd = dnnl::convolution_backward_weights::primitive_desc;
    auto alg = dnnl::algorithm::convolution_direct;
    auto attr = user_scratchpad_attr();
    bpd pd = with_bias ? bpd(engine(), alg, d.src, d.w_any, d.bias, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr)
                       : bpd(engine(), alg, d.src, d.w_any, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr);
    auto r = weight_reorder(pd.diff_weights_desc(), d.w_user);
    Scratch sc(pd.scratchpad_desc().get_size(), r, pd.diff_weights_desc().get_size());
    scratch = sc.total;
    conv = DnnlExec(dnnl::convolution_backward_weights(pd));
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_SRC, d.src, Src::in(1));
    conv.bind(DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), r ? Src::scratch(sc.weights) : Src::out(0));
    if (with_bias) conv.bind(DNNL_ARG_DIFF_BIAS, d.bias, Src::out(1));
    bind_scratchpad(conv, pd.scratchpad_desc());
    if (r) reorder_dw = bind_reorder(*r, Src::scratch(sc.weights), Src::out(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    conv.run(r);
    if (!reorder_dw.empty()) reorder_dw.run(r);
  }
};

KernelRegistrar r1("cpu", "conv2d", [](const KernelCtx& c) { return std::make_unique<ConvFwd>(c); });
KernelRegistrar r2("cpu", "conv2d_grad_data", [](const KernelCtx& c) { return std::make_unique<ConvBwdData>(c); });
KernelRegistrar r3("cpu", "conv2d_grad_weights", [](const KernelCtx& c) { return std::make_unique<ConvBwdWeights>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
