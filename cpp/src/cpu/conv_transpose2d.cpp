// oneDNN kernels for conv_transpose2d, conv_transpose2d_grad_data and conv_transpose2d_grad_weights
// (deconvolution_direct), and their layout rules. Activations come in the layouts the layout pass gave them
// (KernelCtx); the rules (deconv_layouts) pick, per node direction, the (x, y) layout pair whose oneDNN
// implementation ranks best (AVX-512 jit > other jit > gemm > ref), among: the policy's layouts for both, the
// blocked layout for both, nhwc for both, plain x with the policy's y, the policy's x with plain y, plain for
// both (memoized, as conv2d's). The PyTorch weight [C, K/groups, R, S] is oneDNN's iohw over
// logical dims [K, C, R, S] (giohw over [G, K/G, C/G, R, S] with groups, same bytes); primitives take weights as
// format_tag::any and reorder when oneDNN picks another layout (inference: once into the kernel's persistent
// region, again when the parameter store's version moved; training: into scratch on every run). output_padding
// enters through the dst dims: padding_r = padding - output_padding. Scratch: oneDNN scratchpad first, then the
// reordered weights (training). Primitives are built once; run() only binds. See kernel_for() for the one configuration
// oneDNN refuses. Deterministic mode (KernelCtx::deterministic; dnnl_common.hpp): the three directions run over
// minibatch parts, each by a primitive built for one thread; the weight gradient sums the parts' partial dw / db in
// part order.
#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "core/backend.hpp"
#include "cpu/conv_common.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
using mdesc = dnnl::memory::desc;
using tag = dnnl::memory::format_tag;
using reorder_pd = dnnl::reorder::primitive_desc;
using conv::impl_rank;  // shared with conv2d's layout rules
using conv::pair_attr;
constexpr auto kAlg = dnnl::algorithm::deconvolution_direct;

// Descriptors and geometry shared by the three kernels; x, w, y are the forward shapes, lx and ly the layouts
// of x and y.
struct DeconvDescs {
  mdesc src, dst, w_user, w_any, bias;
  dims strides, dilates, pad_l, pad_r;
  DeconvDescs(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, Layout lx, Layout ly) {
    int64_t G = a.i("groups", 1), C = x[1], K = y[1];
    dims wd = G > 1 ? dims{G, K / G, C / G, w[2], w[3]} : dims{K, C, w[2], w[3]};
    src = md_of(x, t, lx);
    dst = md_of(y, t, ly);
    w_user = mdesc(wd, dt_of(t), G > 1 ? tag::giohw : tag::iohw);
    w_any = mdesc(wd, dt_of(t), tag::any);
    bias = plain_desc(Shape{K}, t);
    strides = pair_attr(a, "stride", 1);
    pad_l = pair_attr(a, "padding", 0);
    dims op = pair_attr(a, "output_padding", 0), d = pair_attr(a, "dilation", 1);
    pad_r = {pad_l[0] - op[0], pad_l[1] - op[1]};
    dilates = {d[0] - 1, d[1] - 1};
  }
  // oneDNN accepts padding_r > -stride only; PyTorch also allows output_padding >= stride when below dilation.
  bool supported() const { return pad_r[0] + strides[0] > 0 && pad_r[1] + strides[1] > 0; }
  dnnl::deconvolution_forward::primitive_desc fwd(bool with_bias, const dnnl::primitive_attr& attr = {},
                                                  dnnl::prop_kind pk = dnnl::prop_kind::forward_training) const {
    using fpd = dnnl::deconvolution_forward::primitive_desc;
    return with_bias ? fpd(engine(), pk, kAlg, src, w_any, bias, dst, strides, dilates, pad_l, pad_r, attr)
                     : fpd(engine(), pk, kAlg, src, w_any, dst, strides, dilates, pad_l, pad_r, attr);
  }
};

struct DeconvFwd : Kernel {  // (x, w [, b]) -> y
  std::string impl_name;     // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w, deconv;
  size_t scratch = 0, persist = 0;
  PreparedVersion prepared;  // inference: the reordered weights are kept (dnnl_common.hpp, WeightScratch)
  DeconvFwd(const KernelCtx& c, const DeconvDescs& d) {
    bool with_bias = c.in.size() > 2;
    auto pd = d.fwd(with_bias, user_scratchpad_attr(),
                    c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    prepared.cached = c.cache_weights;
    WeightScratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size(), prepared.cached);
    scratch = sc.total;
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    deconv = DnnlExec(dnnl::deconvolution_forward(pd));
    impl_name = onednn_impl(pd);
    deconv.bind(DNNL_ARG_SRC, d.src, Src::in(0));
    deconv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    if (with_bias) deconv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
    deconv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
    bind_scratchpad(deconv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    deconv.run(r);
  }
};

struct DeconvBwdData : Kernel {  // (dy, w) -> dx
  std::string impl_name;         // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w, deconv;
  size_t scratch = 0;
  explicit DeconvBwdData(const DeconvDescs& d) {
    auto hint = d.fwd(false);
    dnnl::deconvolution_backward_data::primitive_desc pd(engine(), kAlg, d.src, d.w_any, d.dst, d.strides, d.dilates,
                                                         d.pad_l, d.pad_r, hint, user_scratchpad_attr());
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    WeightScratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size());
    scratch = sc.total;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    deconv = DnnlExec(dnnl::deconvolution_backward_data(pd));
    impl_name = onednn_impl(pd);
    deconv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    deconv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    deconv.bind(DNNL_ARG_DIFF_SRC, d.src, Src::out(0));
    bind_scratchpad(deconv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    deconv.run(r);
  }
};

struct DeconvBwdWeights : Kernel {  // (dy, x) -> dw [, db]
  std::string impl_name;            // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec deconv, reorder_dw;
  size_t scratch = 0;
  DeconvBwdWeights(const KernelCtx& c, const DeconvDescs& d) {
    bool with_bias = c.out.size() > 1;
    auto hint = d.fwd(with_bias);
    using bpd = dnnl::deconvolution_backward_weights::primitive_desc;
    auto attr = user_scratchpad_attr();
    bpd pd = with_bias ? bpd(engine(), kAlg, d.src, d.w_any, d.bias, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r,
                             hint, attr)
                       : bpd(engine(), kAlg, d.src, d.w_any, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r, hint, attr);
    auto r = weight_reorder(pd.diff_weights_desc(), d.w_user);
    WeightScratch sc(pd.scratchpad_desc().get_size(), r, pd.diff_weights_desc().get_size());
    scratch = sc.total;
    deconv = DnnlExec(dnnl::deconvolution_backward_weights(pd));
    impl_name = onednn_impl(pd);
    deconv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    deconv.bind(DNNL_ARG_SRC, d.src, Src::in(1));
    deconv.bind(DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), r ? sc.weights : Src::out(0));
    if (with_bias) deconv.bind(DNNL_ARG_DIFF_BIAS, d.bias, Src::out(1));
    bind_scratchpad(deconv, pd.scratchpad_desc());
    if (r) reorder_dw = bind_reorder(*r, sc.weights, Src::out(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    deconv.run(r);
    if (!reorder_dw.empty()) reorder_dw.run(r);
  }
};

// ---- deterministic mode: as conv2d's (cpu/conv_direct.cpp), minibatch parts by primitives built for one thread ----

// 2 * MACs of one image: every element of x meets numel(w) / C weights
double deconv_image_flops(const Shape& x, const Shape& w) { return 2.0 * double(numel(w)) * double(x[2] * x[3]); }

// The descriptors of a part of mb images (x, w, y: the forward shapes), the weights layout imposed once known.
struct DetParts {
  const Attrs& attrs;
  DType dtype;
  Shape x, w, y;
  Layout lx, ly;
  std::optional<mdesc> wmd;  // the full part's weights layout, once known
  DeconvDescs at(int64_t mb) const {
    DeconvDescs d(attrs, dtype, with_batch(x, mb), w, with_batch(y, mb), lx, ly);
    if (wmd) d.w_any = *wmd;
    return d;
  }
};

struct DeconvFwdDet : Kernel {  // (x, w [, b]) -> y
  std::string impl_name;        // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w;
  MinibatchParts parts;
  size_t scratch = 0, persist = 0, pad_off = 0;
  PreparedVersion prepared;
  DeconvFwdDet(const KernelCtx& c, const DeconvDescs& d, DetParts dp) {
    const bool with_bias = c.in.size() > 2;
    const auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    const int64_t N = dp.x[0], part = part_images(N, deconv_image_flops(dp.x, dp.w));
    auto make = [&](int64_t mb) {
      auto pd = dp.at(mb).fwd(with_bias, user_scratchpad_attr(), pk);
      dp.wmd = pd.weights_desc();
      return dnnl::primitive_desc(pd);
    };
    {
      OneThread one;
      make(part);
    }
    auto r = weight_reorder(d.w_user, *dp.wmd);
    prepared.cached = c.cache_weights;
    WeightScratch sc(0, r, dp.wmd->get_size(), prepared.cached);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, Src::in(0), d.src.get_size() / size_t(N)},
                              {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                              {PartArg::Batched, DNNL_ARG_DST, Src::out(0), d.dst.get_size() / size_t(N)}};
    if (with_bias) args.push_back({PartArg::Shared, DNNL_ARG_BIAS, Src::in(2)});
    parts = MinibatchParts(N, part, make, args);
    impl_name = parts.impl();
    ScratchLayout L;
    L.total = sc.total;
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    parts.run(r, pad_off);
  }
};

struct DeconvBwdDataDet : Kernel {  // (dy, w) -> dx
  std::string impl_name;            // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w;
  MinibatchParts parts;
  size_t scratch = 0, pad_off = 0;
  DeconvBwdDataDet(const DeconvDescs& d, DetParts dp) {
    const int64_t N = dp.x[0], part = part_images(N, deconv_image_flops(dp.x, dp.w));
    auto make = [&](int64_t mb) {
      DeconvDescs p = dp.at(mb);
      dnnl::deconvolution_backward_data::primitive_desc pd(engine(), kAlg, p.src, p.w_any, p.dst, p.strides, p.dilates,
                                                           p.pad_l, p.pad_r, p.fwd(false), user_scratchpad_attr());
      dp.wmd = pd.weights_desc();
      return dnnl::primitive_desc(pd);
    };
    {
      OneThread one;
      make(part);
    }
    auto r = weight_reorder(d.w_user, *dp.wmd);
    WeightScratch sc(0, r, dp.wmd->get_size());
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    parts = MinibatchParts(N, part, make,
                           {{PartArg::Batched, DNNL_ARG_DIFF_DST, Src::in(0), d.dst.get_size() / size_t(N)},
                            {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                            {PartArg::Batched, DNNL_ARG_DIFF_SRC, Src::out(0), d.src.get_size() / size_t(N)}});
    impl_name = parts.impl();
    ScratchLayout L;
    L.total = sc.total;
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    parts.run(r, pad_off);
  }
};

struct DeconvBwdWeightsDet : Kernel {  // (dy, x) -> dw [, db]
  std::string impl_name;               // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  PartialWeightGrads partial_dw;
  size_t scratch = 0;
  bool with_bias;
  DeconvBwdWeightsDet(const KernelCtx& c, const DeconvDescs& d, DetParts dp) : with_bias(c.out.size() > 1) {
    const int64_t N = dp.x[0];
    auto make = [&](int64_t mb) {
      DeconvDescs p = dp.at(mb);
      using bpd = dnnl::deconvolution_backward_weights::primitive_desc;
      auto attr = user_scratchpad_attr();
      auto hint = p.fwd(with_bias);
      bpd pd =
          with_bias
              ? bpd(engine(), kAlg, p.src, p.w_any, p.bias, p.dst, p.strides, p.dilates, p.pad_l, p.pad_r, hint, attr)
              : bpd(engine(), kAlg, p.src, p.w_any, p.dst, p.strides, p.dilates, p.pad_l, p.pad_r, hint, attr);
      dp.wmd = pd.diff_weights_desc();
      return dnnl::primitive_desc(pd);
    };
    const size_t dw_bytes = d.w_user.get_size();
    const int64_t part = part_images(N, deconv_image_flops(dp.x, dp.w), partial_parts(dw_bytes));
    {
      OneThread one;
      make(part);
    }
    const mdesc wmd = *dp.wmd;
    ScratchLayout L;
    L.add(PartialWeightGrads::reorder_pad(wmd, d.w_user));
    partial_dw.plan(L, N, part, dp.y[1], with_bias, wmd, d.w_user, make, Src::in(1), d.src.get_size() / size_t(N),
                    Src::in(0), d.dst.get_size() / size_t(N));
    scratch = L.total;
    impl_name = partial_dw.impl();
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { partial_dw.run(r); }
};

enum class Dir { Fwd, BwdData, BwdWeights };

// ---- layout rules ----
struct DeconvLayouts {
  Layout x, y;
};

int rank_of(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, DeconvLayouts l, Dir dir) {
  try {
    DeconvDescs d(a, t, x, w, y, l.x, l.y);
    if (!d.supported()) return -1;
    auto f = d.fwd(false);
    if (dir == Dir::BwdData)
      return impl_rank(dnnl::deconvolution_backward_data::primitive_desc(engine(), kAlg, d.src, d.w_any, d.dst,
                                                                         d.strides, d.dilates, d.pad_l, d.pad_r, f)
                           .impl_info_str());
    if (dir == Dir::BwdWeights)
      return impl_rank(dnnl::deconvolution_backward_weights::primitive_desc(engine(), kAlg, d.src, d.w_any, d.dst,
                                                                            d.strides, d.dilates, d.pad_l, d.pad_r, f)
                           .impl_info_str());
    return impl_rank(f.impl_info_str());
  } catch (const dnnl::error&) {
    return -1;
  }
}

// x, w, y: the forward shapes. Plain for both when oneDNN refuses the configuration (reference kernel).
DeconvLayouts deconv_layouts(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y,
                             const LayoutPolicy& p, Dir dir) {
  static std::mutex mu;
  static std::map<std::string, DeconvLayouts> memo;
  std::string key =
      shape_str(x) + shape_str(w) + shape_str(y) + shape_str(a.is("stride", {})) + shape_str(a.is("padding", {})) +
      shape_str(a.is("output_padding", {})) + shape_str(a.is("dilation", {})) + std::to_string(a.i("groups", 1)) + "/" +
      std::to_string(int(p.kind)) + "/" + std::to_string(p.block) + "/" + std::to_string(int(dir)) + dtype_name(t);
  std::lock_guard<std::mutex> lock(mu);
  auto it = memo.find(key);
  if (it != memo.end()) return it->second;
  const Layout ax = p.act(TensorDesc{x, t}), ay = p.act(TensorDesc{y, t}), b = p.blocked_layout(), pl = Layout::plain;
  std::vector<DeconvLayouts> cands{{ax, ay}, {b, b}, {Layout::nhwc, Layout::nhwc}, {pl, ay}, {ax, pl}, {pl, pl}};
  DeconvLayouts pick = cands.back();
  int best = -2;
  for (auto c : cands) {
    int r = rank_of(a, t, x, w, y, c, dir);
    if (r > best) best = r, pick = c;
    if (r == 3) break;
  }
  if (best < 0) pick = {pl, pl};
  memo[key] = pick;
  return pick;
}

LayoutChoice fwd_rule(const LayoutQuery& q) {  // (x, w [, b]) -> y
  DeconvLayouts l =
      deconv_layouts(q.node.attrs, q.in[0].dtype, q.in[0].shape, q.in[1].shape, q.out[0].shape, q.policy, Dir::Fwd);
  LayoutChoice c;
  c.in.assign(q.in.size(), Layout::plain);
  c.in[0] = l.x;
  c.out = {l.y};
  return c;
}
LayoutChoice grad_data_rule(const LayoutQuery& q) {  // (dy, w) -> dx
  DeconvLayouts l =
      deconv_layouts(q.node.attrs, q.in[0].dtype, q.out[0].shape, q.in[1].shape, q.in[0].shape, q.policy, Dir::BwdData);
  return {{l.y, Layout::plain}, {l.x}};
}
LayoutChoice grad_weights_rule(const LayoutQuery& q) {  // (dy, x) -> dw [, db]
  DeconvLayouts l = deconv_layouts(q.node.attrs, q.in[0].dtype, q.in[1].shape, q.out[0].shape, q.in[0].shape, q.policy,
                                   Dir::BwdWeights);
  return {{l.y, l.x}, std::vector<Layout>(q.out.size(), Layout::plain)};
}

// x, w, y are the forward shapes. When output_padding >= stride (legal in PyTorch while below dilation) makes
// padding_r <= -stride, oneDNN rejects the descriptor; that rare configuration runs the op's reference kernel.
std::unique_ptr<Kernel> kernel_for(const KernelCtx& c, Dir dir) {
  const Shape& x = dir == Dir::Fwd ? c.in[0].shape : dir == Dir::BwdData ? c.out[0].shape : c.in[1].shape;
  const Shape& w = dir == Dir::BwdWeights ? c.out[0].shape : c.in[1].shape;
  const Shape& y = dir == Dir::Fwd ? c.out[0].shape : c.in[0].shape;
  Layout lx = dir == Dir::Fwd ? c.layout_in(0) : dir == Dir::BwdData ? c.layout_out(0) : c.layout_in(1);
  Layout ly = dir == Dir::Fwd ? c.layout_out(0) : c.layout_in(0);
  DeconvDescs d(c.node.attrs, c.in[0].dtype, x, w, y, lx, ly);
  if (!d.supported()) return get_op(c.node.op).ref(c);
  if (c.deterministic) {
    DetParts dp{c.node.attrs, c.in[0].dtype, x, w, y, lx, ly, std::nullopt};
    if (dir == Dir::Fwd) return std::make_unique<DeconvFwdDet>(c, d, dp);
    if (dir == Dir::BwdData) return std::make_unique<DeconvBwdDataDet>(d, dp);
    return std::make_unique<DeconvBwdWeightsDet>(c, d, dp);
  }
  if (dir == Dir::Fwd) return std::make_unique<DeconvFwd>(c, d);
  if (dir == Dir::BwdData) return std::make_unique<DeconvBwdData>(d);
  return std::make_unique<DeconvBwdWeights>(c, d);
}

KernelRegistrar r1("cpu", "conv_transpose2d", [](const KernelCtx& c) { return kernel_for(c, Dir::Fwd); });
KernelRegistrar r2("cpu", "conv_transpose2d_grad_data", [](const KernelCtx& c) { return kernel_for(c, Dir::BwdData); });
KernelRegistrar r3("cpu", "conv_transpose2d_grad_weights",
                   [](const KernelCtx& c) { return kernel_for(c, Dir::BwdWeights); });
LayoutRuleRegistrar l1("cpu", "conv_transpose2d", fwd_rule);
LayoutRuleRegistrar l2("cpu", "conv_transpose2d_grad_data", grad_data_rule);
LayoutRuleRegistrar l3("cpu", "conv_transpose2d_grad_weights", grad_weights_rule);

}  // namespace
}  // namespace cpu
}  // namespace cnn
