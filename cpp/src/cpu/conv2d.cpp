// oneDNN kernels for conv2d, conv2d_grad_data, conv2d_grad_weights and fused_conv2d (convolution_direct),
// and their layout rules. Activations come in the layouts the session's layout pass gave them (KernelCtx);
// the rules (conv_layouts) pick, per node and direction, the (x, y) layout pair whose oneDNN implementation
// ranks best, starting from the policy's layout for y and oneDNN's own pick for x. Weights are created with
// format_tag::any and, when oneDNN picks a blocked layout, reordered from the plain [K, C/groups, R, S]
// parameter (goihw when groups > 1, same bytes). Inference kernels keep the reordered weights in their
// persistent region and reorder again only when the parameter store's version moved (RunCtx::params_version);
// training kernels reorder into scratch on every run. fused_conv2d folds BN(eval) into that weight reorder
// (per-channel scale) and the bias (K floats), both prepared with the weights, and runs the residual as a sum
// post-op and relu / leaky_relu as an eltwise post-op. Scratch: the oneDNN scratchpad (shared by the kernel's
// primitives, which run one after another), then (training, or cache_weights off) the blocked weights.
// Primitives are built once; run() only binds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <omp.h>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/winograd.hpp"

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

// Descriptors and geometry shared by the kernels; x, w, y are the forward shapes, lx, ly the layouts of x
// and y (src md = format_tag::any when lx is not given, for the layout rules' query).
struct ConvDescs {
  mdesc src, dst, w_user, w_any, bias;
  dims strides, dilates, pad;
  DType compute = DType::f32;  // src/weights dtype: bf16 when either activation is bf16 (bf16 sessions)
  ConvDescs(const Attrs& a, DType ts, DType td, const Shape& x, const Shape& w, const Shape& y, std::optional<Layout> lx,
            Layout ly) {
    int64_t G = a.i("groups", 1);
    Shape ws = G > 1 ? Shape{G, w[0] / G, w[1], w[2], w[3]} : w;
    compute = ts == DType::bf16 || td == DType::bf16 ? DType::bf16 : ts;
    const DType tp = compute == DType::bf16 ? DType::f32 : compute;  // parameters (and the bias) stay float32
    src = lx ? md_of(x, compute, *lx) : mdesc(dims_of(x), dt_of(compute), dnnl::memory::format_tag::any);
    dst = md_of(y, td, ly);
    w_user = plain_desc(ws, tp);
    w_any = mdesc(dims_of(ws), dt_of(compute), dnnl::memory::format_tag::any);
    bias = plain_desc(Shape{w[0]}, tp);
    strides = pair_attr(a, "stride", 1);
    pad = pair_attr(a, "padding", 0);
    dims d = pair_attr(a, "dilation", 1);
    dilates = {d[0] - 1, d[1] - 1};
  }
  ConvDescs(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, std::optional<Layout> lx, Layout ly)
      : ConvDescs(a, t, t, x, w, y, lx, ly) {}
  // tx, ty: the dtypes the session stores x (or dx) and y (or dy) in
  ConvDescs(const KernelCtx& c, DType tx, DType ty, const Shape& x, const Shape& w, const Shape& y, Layout lx, Layout ly)
      : ConvDescs(c.node.attrs, tx, ty, x, w, y, lx, ly) {}
  dnnl::convolution_forward::primitive_desc fwd(bool with_bias, const dnnl::primitive_attr& attr = {},
                                                dnnl::prop_kind pk = dnnl::prop_kind::forward_training) const {
    using fpd = dnnl::convolution_forward::primitive_desc;
    auto alg = dnnl::algorithm::convolution_direct;
    return with_bias ? fpd(engine(), pk, alg, src, w_any, bias, dst, strides, dilates, pad, pad, attr)
                     : fpd(engine(), pk, alg, src, w_any, dst, strides, dilates, pad, pad, attr);
  }
};

// ---- layout rules ----
// The layouts (x, y) one convolution node runs in: the candidate whose oneDNN implementation of that node's
// direction ranks best (AVX-512 jit/brgemm > other jit > gemm > ref:any), the earliest on ties. Candidates, in
// order: the source layout oneDNN picks given the policy's destination layout; the policy's layouts for both;
// nhwc for both; the blocked layout for both; plain source; plain for both. Mixed pairs (e.g. nchw -> nChw16c)
// have real kernels for some directions only, so the backward nodes of a convolution may land on another
// candidate than its forward; the layout pass then reorders between them (cheap next to a ref:any or gemm
// convolution). Memoized: pd creation is not free and training graphs ask three times per convolution.
struct ConvLayouts {
  Layout x, y;
};
enum class Dir { fwd_infer, fwd_train, bwd_data, bwd_weights };

int impl_rank(const std::string& impl) {
  if (impl.rfind("ref", 0) == 0) return 0;
  if (impl.find("gemm") != std::string::npos) return 1;
  return impl.find("avx512") != std::string::npos ? 3 : 2;
}

// tx, ty: the dtypes x and y would be stored in for that layout pair (bf16 sessions: bf16 when blocked)
int rank_of(const Attrs& a, DType tx, DType ty, const Shape& x, const Shape& w, const Shape& y, ConvLayouts l, Dir dir) {
  try {
    ConvDescs d(a, tx, ty, x, w, y, l.x, l.y);
    auto f = d.fwd(false, {}, dir == Dir::fwd_infer ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training);
    auto alg = dnnl::algorithm::convolution_direct;
    if (dir == Dir::bwd_data)
      return impl_rank(dnnl::convolution_backward_data::primitive_desc(engine(), alg, d.src, d.w_any, d.dst, d.strides,
                                                                       d.dilates, d.pad, d.pad, f)
                           .impl_info_str());
    if (dir == Dir::bwd_weights)
      return impl_rank(dnnl::convolution_backward_weights::primitive_desc(engine(), alg, d.src, d.w_any, d.dst, d.strides,
                                                                          d.dilates, d.pad, d.pad, f)
                           .impl_info_str());
    return impl_rank(f.impl_info_str());
  } catch (const dnnl::error&) {
    return -1;
  }
}

ConvLayouts conv_layouts(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, const LayoutPolicy& p,
                         Dir dir) {
  static std::mutex mu;
  static std::map<std::string, ConvLayouts> memo;
  std::string key = shape_str(x) + shape_str(w) + shape_str(y) + shape_str(a.is("stride", {})) + shape_str(a.is("padding", {})) +
                    shape_str(a.is("dilation", {})) + std::to_string(a.i("groups", 1)) + "/" + std::to_string(int(p.kind)) +
                    "/" + std::to_string(p.block) + "/" + std::to_string(int(dir)) + dtype_name(t) + (p.bf16 ? "/bf16" : "");
  std::lock_guard<std::mutex> lock(mu);
  auto it = memo.find(key);
  if (it != memo.end()) return it->second;
  const Layout ax = p.act(TensorDesc{x, t}), ay = p.act(TensorDesc{y, t}), b = p.blocked_layout();
  std::vector<ConvLayouts> cands;
  Layout chosen;
  try {
    const DType ty = p.dtype_in(ay, t);
    ConvDescs q(a, ty, ty, x, w, y, std::nullopt, ay);
    if (layout_of(q.fwd(false).src_desc(), x, q.compute, &chosen)) cands.push_back({chosen, ay});
  } catch (const dnnl::error&) {
  }
  cands.insert(cands.end(), {{ax, ay}, {Layout::nhwc, Layout::nhwc}, {b, b}, {Layout::plain, ay}, {Layout::plain, Layout::plain}});
  ConvLayouts pick = cands.back();
  int best = -2;
  for (auto c : cands) {
    int r = rank_of(a, p.dtype_in(c.x, t), p.dtype_in(c.y, t), x, w, y, c, dir);
    if (r > best) best = r, pick = c;
    if (r == 3) break;
  }
  memo[key] = pick;
  return pick;
}

LayoutChoice conv_fwd_rule(const LayoutQuery& q) {  // conv2d and fused_conv2d: (x, w, [b], [bn x4], [residual]) -> y
  ConvLayouts l = conv_layouts(q.node.attrs, q.in[0].dtype, q.in[0].shape, q.in[1].shape, q.out[0].shape, q.policy,
                               q.training ? Dir::fwd_train : Dir::fwd_infer);
  LayoutChoice c;
  c.in.assign(q.in.size(), Layout::plain);
  c.in[0] = l.x;
  if (q.node.op == "fused_conv2d" && q.node.attrs.i("sum", 0)) c.in.back() = l.y;
  c.out = {l.y};
  return c;
}
LayoutChoice conv_grad_data_rule(const LayoutQuery& q) {  // (dy, w) -> dx
  ConvLayouts l = conv_layouts(q.node.attrs, q.in[0].dtype, q.out[0].shape, q.in[1].shape, q.in[0].shape, q.policy,
                               Dir::bwd_data);
  return {{l.y, Layout::plain}, {l.x}};
}
LayoutChoice conv_grad_weights_rule(const LayoutQuery& q) {  // (dy, x) -> dw [, db]
  ConvLayouts l = conv_layouts(q.node.attrs, q.in[0].dtype, q.in[1].shape, q.out[0].shape, q.in[0].shape, q.policy,
                               Dir::bwd_weights);
  return {{l.y, l.x}, std::vector<Layout>(q.out.size(), Layout::plain)};
}

// A bf16 convolution whose input arrives as float32 (a plain graph input in a bf16 session: the stem, where
// oneDNN's bf16 kernel wants plain bf16): the kernel converts it into its scratch first.
// Mixed-precision training likewise converts a float32 x for the weight gradient (input `i`), and a float32 dx
// (output mode) is written in bf16 to scratch and converted after.
struct SrcConvert {
  std::optional<reorder_pd> pd;
  DnnlExec ex;
  size_t off = 0;
  int i = 0;
  bool output = false;
  SrcConvert(const KernelCtx& c, const ConvDescs& d, int input = 0, bool out = false) : i(input), output(out) {
    const TensorDesc& t = out ? c.out[0] : c.in[i];
    const Layout l = out ? c.layout_out(0) : c.layout_in(i);
    if (t.dtype == d.compute) return;
    pd = out ? reorder_pd(engine(), d.src, engine(), md_of(t, l), user_scratchpad_attr())
             : reorder_pd(engine(), md_of(t, l), engine(), d.src, user_scratchpad_attr());
  }
  size_t pad() const { return pd ? pd->scratchpad_desc().get_size() : 0; }
  // Takes its region after the `total` bytes of scratch already laid out; returns the new total.
  size_t place(size_t total) {
    if (!pd) return total;
    ScratchLayout L;
    L.total = total;
    off = L.add(output ? pd->src_desc().get_size() : pd->dst_desc().get_size());
    ex = output ? bind_reorder(*pd, Src::scratch(off), Src::out(0)) : bind_reorder(*pd, Src::in(i), Src::scratch(off));
    return L.total;
  }

  Src src() const { return pd ? Src::scratch(off) : output ? Src::out(0) : Src::in(i); }
  void run(const RunCtx& r) {
    if (!ex.empty()) ex.run(r);
  }
};

struct ConvFwd : Kernel {  // (x, w [, b]) -> y
  DnnlExec reorder_w, conv;
  std::optional<SrcConvert> cvt;
  size_t scratch = 0, persist = 0;
  PreparedVersion prepared;
  explicit ConvFwd(const KernelCtx& c) {
    bool with_bias = c.in.size() > 2;
    ConvDescs d(c, c.in[0].dtype, c.out[0].dtype, c.in[0].shape, c.in[1].shape, c.out[0].shape, c.layout_in(0), c.layout_out(0));
    auto pd = d.fwd(with_bias, user_scratchpad_attr(),
                    c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    cvt.emplace(c, d);
    prepared.cached = c.cache_weights;
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), cvt->pad()), r, pd.weights_desc().get_size(), prepared.cached);
    scratch = cvt->place(sc.total);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    conv = DnnlExec(dnnl::convolution_forward(pd));
    conv.bind(DNNL_ARG_SRC, d.src, cvt->src());
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    if (with_bias) conv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
    conv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    cvt->run(r);
    conv.run(r);
  }
};

struct ConvBwdData : Kernel {  // (dy, w) -> dx
  DnnlExec reorder_w, conv;
  std::optional<SrcConvert> cvt;
  size_t scratch = 0;
  explicit ConvBwdData(const KernelCtx& c) {
    ConvDescs d(c, c.out[0].dtype, c.in[0].dtype, c.out[0].shape, c.in[1].shape, c.in[0].shape, c.layout_out(0), c.layout_in(0));
    auto hint = d.fwd(false);
    dnnl::convolution_backward_data::primitive_desc pd(engine(), dnnl::algorithm::convolution_direct, d.src, d.w_any, d.dst,
                                                       d.strides, d.dilates, d.pad, d.pad, hint, user_scratchpad_attr());
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    cvt.emplace(c, d, 0, true);
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), cvt->pad()), r, pd.weights_desc().get_size());
    scratch = cvt->place(sc.total);
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    conv = DnnlExec(dnnl::convolution_backward_data(pd));
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    conv.bind(DNNL_ARG_DIFF_SRC, d.src, cvt->src());
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    conv.run(r);
    cvt->run(r);
  }
};

struct ConvBwdWeights : Kernel {  // (dy, x) -> dw [, db]
  DnnlExec conv, reorder_dw;
  std::optional<SrcConvert> cvt;
  size_t scratch = 0;
  explicit ConvBwdWeights(const KernelCtx& c) {
    bool with_bias = c.out.size() > 1;
    ConvDescs d(c, c.in[1].dtype, c.in[0].dtype, c.in[1].shape, c.out[0].shape, c.in[0].shape, c.layout_in(1), c.layout_in(0));
    auto hint = d.fwd(with_bias);
    if (d.compute == DType::bf16)  // mixed precision: weight gradients accumulate and leave in float32
      d.w_any = mdesc(d.w_any.get_dims(), dnnl::memory::data_type::f32, dnnl::memory::format_tag::any);
    using bpd = dnnl::convolution_backward_weights::primitive_desc;
    auto alg = dnnl::algorithm::convolution_direct;
    auto attr = user_scratchpad_attr();
    bpd pd = with_bias ? bpd(engine(), alg, d.src, d.w_any, d.bias, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr)
                       : bpd(engine(), alg, d.src, d.w_any, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr);
    auto r = weight_reorder(pd.diff_weights_desc(), d.w_user);
    cvt.emplace(c, d, 1);
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), cvt->pad()), r, pd.diff_weights_desc().get_size());
    scratch = cvt->place(sc.total);
    conv = DnnlExec(dnnl::convolution_backward_weights(pd));
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_SRC, d.src, cvt->src());
    conv.bind(DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), r ? sc.weights : Src::out(0));
    if (with_bias) conv.bind(DNNL_ARG_DIFF_BIAS, d.bias, Src::out(1));
    bind_scratchpad(conv, pd.scratchpad_desc());
    if (r) reorder_dw = bind_reorder(*r, sc.weights, Src::out(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    cvt->run(r);
    conv.run(r);
    if (!reorder_dw.empty()) reorder_dw.run(r);
  }
};

// ---- deterministic mode (KernelCtx::deterministic; dnnl_common.hpp): the minibatch is cut into parts decided by
// the problem alone (part_images: ~4 MFLOP per part at least), each run by a primitive built for one thread, so an
// output element is always computed by the same one-thread kernel whatever the thread count. Forward and
// backward-data parts write disjoint images; weight-gradient parts write their own partial dw (and db), summed in
// part order (sum_parts) and then reordered to the plain parameter layout. Partial gradients cost parts x dw bytes
// of scratch (partial_parts: at most 32 MiB).

Shape with_batch(Shape s, int64_t n) {
  s[0] = n;
  return s;
}
// 2 * MACs of one image (forward, backward-data and weight gradient alike): every output element of y costs
// numel(w) / K multiply-adds.
double conv_image_flops(const Shape& w, const Shape& y) { return 2.0 * double(numel(w)) * double(y[2] * y[3]); }

// The weights layout the full part's primitive picks (format any), imposed on the shorter last part's.
struct PartWeights {
  std::optional<mdesc> md;
  mdesc use(const mdesc& any) const { return md ? *md : any; }
};

struct ConvFwdDet : Kernel {  // conv2d (x, w [, b]) -> y
  DnnlExec reorder_w;
  std::optional<SrcConvert> cvt;
  MinibatchParts parts;
  size_t scratch = 0, persist = 0, pad_off = 0;
  PreparedVersion prepared;
  explicit ConvFwdDet(const KernelCtx& c) {
    const bool with_bias = c.in.size() > 2;
    const Shape &xs = c.in[0].shape, &ws = c.in[1].shape, &ys = c.out[0].shape;
    const int64_t N = xs[0];
    const auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    ConvDescs d(c, c.in[0].dtype, c.out[0].dtype, xs, ws, ys, c.layout_in(0), c.layout_out(0));
    PartWeights pw;
    auto make = [&](int64_t mb) {
      ConvDescs p(c, c.in[0].dtype, c.out[0].dtype, with_batch(xs, mb), ws, with_batch(ys, mb), c.layout_in(0),
                  c.layout_out(0));
      p.w_any = pw.use(p.w_any);
      auto pd = p.fwd(with_bias, user_scratchpad_attr(), pk);
      pw.md = pd.weights_desc();
      return dnnl::primitive_desc(pd);
    };
    const int64_t part = part_images(N, conv_image_flops(ws, ys));
    {
      OneThread one;
      make(part);  // the weights layout
    }
    const mdesc wmd = *pw.md;
    auto r = weight_reorder(d.w_user, wmd);
    cvt.emplace(c, d);
    prepared.cached = c.cache_weights;
    WeightScratch sc(cvt->pad(), r, wmd.get_size(), prepared.cached);
    ScratchLayout L;
    L.total = cvt->place(sc.total);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, cvt->src(), d.src.get_size() / size_t(N)},
                              {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                              {PartArg::Batched, DNNL_ARG_DST, Src::out(0), d.dst.get_size() / size_t(N)}};
    if (with_bias) args.push_back({PartArg::Shared, DNNL_ARG_BIAS, Src::in(2)});
    parts = MinibatchParts(N, part, make, args);
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    cvt->run(r);
    parts.run(r, pad_off);
  }
};

struct ConvBwdDataDet : Kernel {  // conv2d_grad_data (dy, w) -> dx
  DnnlExec reorder_w;
  std::optional<SrcConvert> cvt;
  MinibatchParts parts;
  size_t scratch = 0, pad_off = 0;
  explicit ConvBwdDataDet(const KernelCtx& c) {
    const Shape &xs = c.out[0].shape, &ws = c.in[1].shape, &ys = c.in[0].shape;
    const int64_t N = xs[0];
    ConvDescs d(c, c.out[0].dtype, c.in[0].dtype, xs, ws, ys, c.layout_out(0), c.layout_in(0));
    PartWeights pw;
    auto make = [&](int64_t mb) {
      ConvDescs p(c, c.out[0].dtype, c.in[0].dtype, with_batch(xs, mb), ws, with_batch(ys, mb), c.layout_out(0),
                  c.layout_in(0));
      p.w_any = pw.use(p.w_any);
      auto hint = p.fwd(false);
      dnnl::convolution_backward_data::primitive_desc pd(engine(), dnnl::algorithm::convolution_direct, p.src, p.w_any,
                                                         p.dst, p.strides, p.dilates, p.pad, p.pad, hint,
                                                         user_scratchpad_attr());
      pw.md = pd.weights_desc();
      return dnnl::primitive_desc(pd);
    };
    const int64_t part = part_images(N, conv_image_flops(ws, ys));
    {
      OneThread one;
      make(part);
    }
    const mdesc wmd = *pw.md;
    auto r = weight_reorder(d.w_user, wmd);
    cvt.emplace(c, d, 0, true);
    WeightScratch sc(cvt->pad(), r, wmd.get_size());
    ScratchLayout L;
    L.total = cvt->place(sc.total);
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    parts = MinibatchParts(N, part, make,
                           {{PartArg::Batched, DNNL_ARG_DIFF_DST, Src::in(0), d.dst.get_size() / size_t(N)},
                            {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                            {PartArg::Batched, DNNL_ARG_DIFF_SRC, cvt->src(), d.src.get_size() / size_t(N)}});
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    parts.run(r, pad_off);
    cvt->run(r);
  }
};

struct ConvBwdWeightsDet : Kernel {  // conv2d_grad_weights (dy, x) -> dw [, db]
  std::optional<SrcConvert> cvt;
  PartialWeightGrads pwg;
  size_t scratch = 0;
  bool with_bias;
  explicit ConvBwdWeightsDet(const KernelCtx& c) : with_bias(c.out.size() > 1) {
    const Shape &xs = c.in[1].shape, &ws = c.out[0].shape, &ys = c.in[0].shape;
    const int64_t N = xs[0];
    ConvDescs d(c, c.in[1].dtype, c.in[0].dtype, xs, ws, ys, c.layout_in(1), c.layout_in(0));
    PartWeights pw;
    auto make = [&](int64_t mb) {
      ConvDescs p(c, c.in[1].dtype, c.in[0].dtype, with_batch(xs, mb), ws, with_batch(ys, mb), c.layout_in(1),
                  c.layout_in(0));
      auto hint = p.fwd(with_bias);
      mdesc wany = p.compute == DType::bf16  // mixed precision: weight gradients accumulate and leave in float32
                       ? mdesc(p.w_any.get_dims(), dnnl::memory::data_type::f32, dnnl::memory::format_tag::any)
                       : p.w_any;
      wany = pw.use(wany);
      using bpd = dnnl::convolution_backward_weights::primitive_desc;
      auto alg = dnnl::algorithm::convolution_direct;
      auto attr = user_scratchpad_attr();
      bpd pd = with_bias ? bpd(engine(), alg, p.src, wany, p.bias, p.dst, p.strides, p.dilates, p.pad, p.pad, hint, attr)
                         : bpd(engine(), alg, p.src, wany, p.dst, p.strides, p.dilates, p.pad, p.pad, hint, attr);
      pw.md = pd.diff_weights_desc();
      return dnnl::primitive_desc(pd);
    };
    const size_t dw_bytes = size_t(numel(ws)) * 4;
    const int64_t part = part_images(N, conv_image_flops(ws, ys), partial_parts(dw_bytes));
    {
      OneThread one;
      make(part);
    }
    const mdesc wmd = *pw.md;
    cvt.emplace(c, d, 1);
    ScratchLayout L;
    L.add(std::max(cvt->pad(), PartialWeightGrads::reorder_pad(wmd, d.w_user)));
    L.total = cvt->place(L.total);
    pwg.plan(L, N, part, ws[0], with_bias, wmd, d.w_user, make, cvt->src(), d.src.get_size() / size_t(N), Src::in(0),
             d.dst.get_size() / size_t(N));
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    cvt->run(r);
    pwg.run(r);
  }
};

// fused_conv2d (x, w, [b], [gamma, beta, mean, var], [residual]) -> y, inference only (see ops/conv_fused.cpp).
// BN folds into the convolution: s = gamma / sqrt(var + eps) scales the weights per output channel inside the
// weight reorder (a runtime-scales reorder), t = beta + (b - mean) * s is the bias. Weights, s and t are
// prepared into the kernel's persistent region and rebuilt when the parameter store's version moved.
// The residual is a sum post-op, the activation an eltwise post-op: post-ops every oneDNN convolution
// implementation takes (binary per-channel post-ops combined with sum push some, e.g. jit_1x1, to ref:any).
// The one exception: gemm (plain nchw) convolutions apply an eltwise post-op in a slow separate pass, so there
// the activation runs as its own in-place eltwise primitive after the convolution.
//
// fused_conv2d's attributes and input positions (ops/conv_fused.cpp), shared by ConvFused and WinoFused.
struct FusedConvAttrs {
  bool bias, bn, sum;
  int bn0, res, act;
  float eps, alpha;
  int64_t K;
  explicit FusedConvAttrs(const KernelCtx& c) {
    const Attrs& a = c.node.attrs;
    bias = a.i("has_bias", 0);
    bn = a.i("bn", 0);
    sum = a.i("sum", 0);
    bn0 = 2 + (bias ? 1 : 0);
    res = bn0 + (bn ? 4 : 0);
    act = int(a.i("act", 0));
    alpha = act == 2 ? float(a.f("negative_slope", 0.01)) : 0.f;
    eps = float(a.f("bn_eps", 1e-5));
    K = c.in[1].shape[0];
  }
  // BN(conv(x, w) + b) = conv(x, w * s) + t: s = gamma / sqrt(var + eps), t = beta + (b - mean) * s
  void fold_bn(const RunCtx& r, float* s, float* t) const {
    const float *gamma = static_cast<const float*>(r.in[bn0]), *beta = static_cast<const float*>(r.in[bn0 + 1]);
    const float *mean = static_cast<const float*>(r.in[bn0 + 2]), *var = static_cast<const float*>(r.in[bn0 + 3]);
    const float* b = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      s[k] = gamma[k] / std::sqrt(var[k] + eps);
      t[k] = beta[k] + ((b ? b[k] : 0.f) - mean[k]) * s[k];
    }
  }
};

struct ConvFused : Kernel, FusedConvAttrs {
  DnnlExec reorder_w, conv, act_ex;
  MinibatchParts parts;  // deterministic mode: the convolution over minibatch parts (see ConvFwdDet), not `conv`
  std::optional<SrcConvert> cvt;
  size_t scratch = 0, persist = 0, scale_off = 0, shift_off = 0, res_bytes = 0, pad_off = 0;
  PreparedVersion prepared;
  explicit ConvFused(const KernelCtx& c) : FusedConvAttrs(c) {
    const Attrs& a = c.node.attrs;
    prepared.cached = c.cache_weights;
    const int64_t G = a.i("groups", 1);
    ConvDescs d(c, c.in[0].dtype, c.out[0].dtype, c.in[0].shape, c.in[1].shape, c.out[0].shape, c.layout_in(0), c.layout_out(0));
    const Shape &xs = c.in[0].shape, &ys = c.out[0].shape;
    const int64_t N = xs[0];
    const int64_t part = c.deterministic ? part_images(N, conv_image_flops(c.in[1].shape, ys)) : N;
    std::optional<mdesc> wmd;  // deterministic: the full part's weights layout, imposed on a shorter last part
    auto make_pd = [&](bool with_act, int64_t mb) {
      ConvDescs p = d;
      if (mb != N)
        p = ConvDescs(c, c.in[0].dtype, c.out[0].dtype, with_batch(xs, mb), c.in[1].shape, with_batch(ys, mb),
                      c.layout_in(0), c.layout_out(0));
      if (wmd) p.w_any = *wmd;
      dnnl::post_ops po;
      if (sum) po.append_sum(1.f);
      if (with_act) po.append_eltwise(dnnl::algorithm::eltwise_relu, alpha, 0.f);
      auto attr = user_scratchpad_attr();
      attr.set_post_ops(po);
      return p.fwd(bias || bn, attr, dnnl::prop_kind::forward_inference);
    };
    std::optional<OneThread> one;
    if (c.deterministic) one.emplace();
    auto pd = make_pd(act != 0, part);
    const bool sep_act = act && std::string(pd.impl_info_str()).find("gemm") != std::string::npos;
    if (sep_act) pd = make_pd(false, part);
    one.reset();
    if (c.deterministic) wmd = pd.weights_desc();
    size_t act_pad = 0;
    if (sep_act) {
      dnnl::eltwise_forward::primitive_desc epd(engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::eltwise_relu,
                                                d.dst, d.dst, alpha, 0.f, user_scratchpad_attr());
      act_ex = DnnlExec(dnnl::eltwise_forward(epd));
      act_ex.bind(DNNL_ARG_SRC, d.dst, Src::out(0));
      act_ex.bind(DNNL_ARG_DST, d.dst, Src::out(0));
      act_pad = epd.scratchpad_desc().get_size();
      bind_scratchpad(act_ex, epd.scratchpad_desc());
    }
    std::optional<reorder_pd> r;
    if (bn) {  // always a reorder: it applies the per-output-channel scale
      auto rattr = user_scratchpad_attr();
      rattr.set_scales_mask(DNNL_ARG_SRC, G > 1 ? 3 : 1);
      r = reorder_pd(engine(), d.w_user, engine(), pd.weights_desc(), rattr);
    } else {
      r = weight_reorder(d.w_user, pd.weights_desc());
    }
    // scratch: the scratchpads; prepared weights, BN scale and shift in the persistent region (cached) or, with
    // cache_weights off, in scratch after the scratchpads (rebuilt every run, as before prepared weights); then
    // the source conversion buffer (bf16 activations)
    cvt.emplace(c, d);
    ScratchLayout L, P;
    L.add(std::max({pd.scratchpad_desc().get_size(), r ? r->scratchpad_desc().get_size() : size_t(0), act_pad, cvt->pad()}));
    ScratchLayout& W = prepared.cached ? P : L;
    auto at = [&](size_t off) { return prepared.cached ? Src::persist(off) : Src::scratch(off); };
    Src w_at = at(r ? W.add(pd.weights_desc().get_size()) : 0);
    if (bn) {
      scale_off = W.add(size_t(K) * 4);
      shift_off = W.add(size_t(K) * 4);
    }
    scratch = cvt->place(L.total);
    persist = P.total;
    if (r) {
      reorder_w = bind_reorder(*r, Src::in(1), w_at);
      if (bn) reorder_w.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, plain_desc(Shape{K}, DType::f32), at(scale_off));
    }
    if (c.deterministic) {
      std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, cvt->src(), d.src.get_size() / size_t(N)},
                                {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? w_at : Src::in(1)},
                                {PartArg::Batched, DNNL_ARG_DST, Src::out(0), d.dst.get_size() / size_t(N)}};
      if (bn) args.push_back({PartArg::Shared, DNNL_ARG_BIAS, at(shift_off)});
      else if (bias) args.push_back({PartArg::Shared, DNNL_ARG_BIAS, Src::in(2)});
      parts = MinibatchParts(
          N, part, [&](int64_t mb) { return dnnl::primitive_desc(make_pd(act && !sep_act, mb)); }, args);
      ScratchLayout S;
      S.total = scratch;
      pad_off = S.add(parts.scratch_bytes());
      scratch = S.total;
    } else {
      conv = DnnlExec(dnnl::convolution_forward(pd));
      conv.bind(DNNL_ARG_SRC, d.src, cvt->src());
      conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? w_at : Src::in(1));
      if (bn) conv.bind(DNNL_ARG_BIAS, d.bias, at(shift_off));
      else if (bias) conv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
      conv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
      bind_scratchpad(conv, pd.scratchpad_desc());
    }
    res_bytes = layout_bytes(c.out[0], c.layout_out(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    if ((bn || !reorder_w.empty()) && prepared.stale(r)) {
      if (bn) {
        char* base = static_cast<char*>(prepared.cached ? r.persist : r.scratch);
        fold_bn(r, reinterpret_cast<float*>(base + scale_off), reinterpret_cast<float*>(base + shift_off));
      }
      if (!reorder_w.empty()) reorder_w.run(r);
      prepared.mark(r);
    }
    if (sum && r.out[0] != r.in[res]) std::memcpy(r.out[0], r.in[res], res_bytes);  // the residual is still live
    cvt->run(r);
    if (parts.empty()) conv.run(r);
    else parts.run(r, pad_off);
    if (!act_ex.empty()) act_ex.run(r);
  }
};

// ---- Winograd F(4x4, 3x3) (cpu/winograd.hpp) for conv2d, conv2d_grad_data and conv2d_grad_weights ----
// The convolution x [N, C, H, W] -> y [N, K, OH, OW] qualifies when CompileOptions::winograd is on, the CPU has
// AVX-512, both activations are float32 nChw16c, the filter is 3x3 with stride 1, dilation 1, one group and
// padding <= 2 on each side, and both channel counts are multiples of 16 and at least 64 (below that the 36
// GEMMs per tile chunk are too thin to beat the direct kernel).
std::optional<wino::Geom> winograd_geom(const KernelCtx& c, const TensorDesc& x, const Shape& w, const TensorDesc& y,
                                        Layout lx, Layout ly) {
  const Attrs& a = c.node.attrs;
  if (!c.winograd || !wino::available() || x.dtype != DType::f32 || y.dtype != DType::f32) return std::nullopt;
  if (lx != Layout::nChw16c || ly != Layout::nChw16c || a.i("groups", 1) != 1) return std::nullopt;
  if (w.size() != 4 || w[2] != 3 || w[3] != 3) return std::nullopt;
  if (pair_attr(a, "stride", 1) != dims{1, 1} || pair_attr(a, "dilation", 1) != dims{1, 1}) return std::nullopt;
  const dims p = pair_attr(a, "padding", 0);
  if (p[0] < 0 || p[0] > 2 || p[1] < 0 || p[1] > 2) return std::nullopt;
  const int64_t C = w[1], K = w[0];
  if (C % 16 || K % 16 || C < 64 || K < 64) return std::nullopt;
  wino::Geom g;
  g.N = x.shape[0];
  g.IC = C;
  g.OC = K;
  g.H = x.shape[2];
  g.W = x.shape[3];
  g.pad_h = p[0];
  g.pad_w = p[1];
  if (g.OH() != y.shape[2] || g.OW() != y.shape[3]) return std::nullopt;
  return g;
}

// conv2d (x, w [, b]) -> y, and conv2d_grad_data (dy, w) -> dx: dx is dy convolved with the flipped, transposed
// filter and padding 2 - pad, i.e. a Winograd convolution from K to C channels over the OH x OW gradient
// (flip). The transformed weights are rebuilt every run.
struct WinoConv : Kernel {
  wino::Conv conv;
  bool flip, bias;
  WinoConv(const KernelCtx& c, const wino::Geom& g, bool flip_transpose, bool with_bias)
      : conv(g, omp_get_max_threads(), c.deterministic), flip(flip_transpose), bias(with_bias) {}
  size_t scratch_bytes() const override { return conv.scratch_bytes(); }
  void run(const RunCtx& r) override {
    wino::Epilogue ep;
    ep.bias = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    conv.run(static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[1]), flip,
             nullptr, ep, static_cast<char*>(r.scratch));
  }
};

// conv2d_grad_weights (dy, x) -> dw [, db]
struct WinoBwdWeights : Kernel {
  wino::BwdWeights bw;
  bool bias;
  WinoBwdWeights(const KernelCtx& c, const wino::Geom& g)
      : bw(g, omp_get_max_threads(), c.deterministic), bias(c.out.size() > 1) {}
  size_t scratch_bytes() const override { return bw.scratch_bytes(); }
  void run(const RunCtx& r) override {
    bw.run(static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]),
           bias ? static_cast<float*>(r.out[1]) : nullptr, static_cast<char*>(r.scratch));
  }
};

// fused_conv2d (inference) as Winograd: BN folds into the filter transform (per-output-channel scale) and the
// bias; the residual sum and the activation run in the output transform. The transformed filter (4x the
// filter's bytes) is rebuilt into scratch on every run rather than kept: for the batches this path takes (at
// least kWinoInferTiles tiles) that costs about 2 % of the convolution and keeps inference memory flat.
constexpr int64_t kWinoInferTiles = 64;
struct WinoFused : Kernel, FusedConvAttrs {
  wino::Conv conv;
  size_t st_off, res_bytes;
  WinoFused(const KernelCtx& c, const wino::Geom& g)
      : FusedConvAttrs(c), conv(g, omp_get_max_threads(), c.deterministic) {
    st_off = (conv.scratch_bytes() + 63) / 64 * 64;
    res_bytes = layout_bytes(c.out[0], c.layout_out(0));
  }
  size_t scratch_bytes() const override { return st_off + size_t(K) * 8; }
  void run(const RunCtx& r) override {
    char* scratch = static_cast<char*>(r.scratch);
    float* s = reinterpret_cast<float*>(scratch + st_off);
    float* t = s + K;
    wino::Epilogue ep;
    if (bn) {
      fold_bn(r, s, t);
      ep.bias = t;
    } else if (bias) {
      ep.bias = static_cast<const float*>(r.in[2]);
    }
    if (sum && r.out[0] != r.in[res]) std::memcpy(r.out[0], r.in[res], res_bytes);  // the residual is still live
    ep.sum = sum;
    ep.act = act;
    ep.alpha = alpha;
    conv.run(static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[1]), false,
             bn ? s : nullptr, ep, scratch);
  }
};

int64_t tiles(const wino::Geom& g) { return g.N * ((g.OH() + 3) / 4) * ((g.OW() + 3) / 4); }

std::unique_ptr<Kernel> make_conv_fused(const KernelCtx& c) {
  if (auto g = winograd_geom(c, c.in[0], c.in[1].shape, c.out[0], c.layout_in(0), c.layout_out(0)))
    if (tiles(*g) >= kWinoInferTiles && wino::Conv::worthwhile(*g, omp_get_max_threads(), c.deterministic))
      return std::make_unique<WinoFused>(c, *g);
  return std::make_unique<ConvFused>(c);
}

std::unique_ptr<Kernel> make_conv_fwd(const KernelCtx& c) {  // inference sessions: the same tile threshold
  if (auto g = winograd_geom(c, c.in[0], c.in[1].shape, c.out[0], c.layout_in(0), c.layout_out(0)))
    if ((c.training || tiles(*g) >= kWinoInferTiles) && wino::Conv::worthwhile(*g, omp_get_max_threads(), c.deterministic))
      return std::make_unique<WinoConv>(c, *g, false, c.in.size() > 2);
  if (c.deterministic) return std::make_unique<ConvFwdDet>(c);
  return std::make_unique<ConvFwd>(c);
}
std::unique_ptr<Kernel> make_conv_bwd_data(const KernelCtx& c) {
  // the forward convolution: x = dx (out 0), y = dy (in 0)
  if (auto f = winograd_geom(c, c.out[0], c.in[1].shape, c.in[0], c.layout_out(0), c.layout_in(0))) {
    wino::Geom g;
    g.N = f->N;
    g.IC = f->OC;
    g.OC = f->IC;
    g.H = c.in[0].shape[2];
    g.W = c.in[0].shape[3];
    g.pad_h = 2 - f->pad_h;
    g.pad_w = 2 - f->pad_w;
    if (wino::Conv::worthwhile(g, omp_get_max_threads(), c.deterministic))
      return std::make_unique<WinoConv>(c, g, true, false);
  }
  if (c.deterministic) return std::make_unique<ConvBwdDataDet>(c);
  return std::make_unique<ConvBwdData>(c);
}

std::unique_ptr<Kernel> make_conv_bwd_weights(const KernelCtx& c) {
  // the forward convolution: x = in 1, w = dw (out 0), y = dy (in 0); dw leaves plain [K, C, 3, 3]
  if (c.layout_out(0) == Layout::plain)
    if (auto g = winograd_geom(c, c.in[1], c.out[0].shape, c.in[0], c.layout_in(1), c.layout_in(0)))
      return std::make_unique<WinoBwdWeights>(c, *g);
  if (c.deterministic) return std::make_unique<ConvBwdWeightsDet>(c);
  return std::make_unique<ConvBwdWeights>(c);
}

KernelRegistrar r1("cpu", "conv2d", make_conv_fwd);
KernelRegistrar r2("cpu", "conv2d_grad_data", make_conv_bwd_data);
KernelRegistrar r3("cpu", "conv2d_grad_weights", make_conv_bwd_weights);
KernelRegistrar r4("cpu", "fused_conv2d", make_conv_fused);
LayoutRuleRegistrar l1("cpu", "conv2d", conv_fwd_rule);
LayoutRuleRegistrar l2("cpu", "fused_conv2d", conv_fwd_rule);
LayoutRuleRegistrar l3("cpu", "conv2d_grad_data", conv_grad_data_rule);
LayoutRuleRegistrar l4("cpu", "conv2d_grad_weights", conv_grad_weights_rule);
Bf16Registrar b1("cpu", "conv2d");
Bf16Registrar b2("cpu", "fused_conv2d");
Bf16Registrar b3("cpu", "conv2d_grad_data");
Bf16Registrar b4("cpu", "conv2d_grad_weights");

}  // namespace
}  // namespace cpu
}  // namespace cnn
