// The direct oneDNN kernels (convolution_direct) for conv2d, conv2d_grad_data, conv2d_grad_weights and
// fused_conv2d; conv_winograd.cpp chooses between them and the Winograd kernels, conv_layouts.cpp gives the layouts
// they run in (see conv_common.hpp). Activations come in the layouts the session's layout pass gave them (KernelCtx).
// Weights are created with format_tag::any and, when oneDNN picks a blocked layout, reordered from the plain
// [K, C/groups, R, S] parameter (goihw when groups > 1, same bytes). Inference kernels keep the reordered weights in
// their persistent region and reorder again only when the parameter store's version moved (RunCtx::params_version);
// training kernels reorder into scratch on every run. fused_conv2d folds BN(eval) into that weight reorder
// (per-channel scale) and the bias (K floats), both prepared with the weights, and runs the residual as a sum
// post-op and its activation as an eltwise post-op (cpu/eltwise_alg.hpp). Scratch: the oneDNN scratchpad (shared
// by the kernel's primitives, which run one after another), then (training, or cache_weights off) the blocked
// weights.
// Primitives are built once; run() only binds.
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cpu/conv_common.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace conv {
namespace {

using reorder_pd = dnnl::reorder::primitive_desc;

// A bf16 convolution whose input arrives as float32 (a plain graph input in a bf16 session: the stem, where
// oneDNN's bf16 kernel wants plain bf16): the kernel converts it into its scratch first.
// Mixed-precision training likewise converts a float32 x for the weight gradient (input `input`), and a float32 dx
// (`output` mode) is written in bf16 to scratch and converted after.
struct SrcConvert {
  std::optional<reorder_pd> pd;  // none: the tensor already has the convolution's dtype
  DnnlExec ex;
  size_t buf_off = 0;  // the converted tensor's offset in the scratch
  int input = 0;       // which kernel input is converted (not in output mode)
  bool output = false;
  SrcConvert(const KernelCtx& c, const ConvDescs& d, int input_index = 0, bool out = false)
      : input(input_index), output(out) {
    const TensorDesc& t = out ? c.out[0] : c.in[input];
    const Layout l = out ? c.layout_out(0) : c.layout_in(input);
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
    buf_off = L.add(output ? pd->src_desc().get_size() : pd->dst_desc().get_size());
    ex = output ? bind_reorder(*pd, Src::scratch(buf_off), Src::out(0))
                : bind_reorder(*pd, Src::in(input), Src::scratch(buf_off));
    return L.total;
  }

  Src src() const { return pd ? Src::scratch(buf_off) : output ? Src::out(0) : Src::in(input); }
  void run(const RunCtx& r) {
    if (!ex.empty()) ex.run(r);
  }
};

struct ConvFwd : Kernel {  // (x, w [, b]) -> y
  std::string impl_name;   // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w, conv;
  std::optional<SrcConvert> convert;
  size_t scratch = 0, persist = 0;
  PreparedVersion prepared;
  explicit ConvFwd(const KernelCtx& c) {
    bool with_bias = c.in.size() > 2;
    ConvDescs d(c, c.in[0].dtype, c.out[0].dtype, c.in[0].shape, c.in[1].shape, c.out[0].shape, c.layout_in(0),
                c.layout_out(0));
    auto pd = d.fwd(with_bias, user_scratchpad_attr(),
                    c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    convert.emplace(c, d);
    prepared.cached = c.cache_weights;
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), convert->pad()), r, pd.weights_desc().get_size(),
                     prepared.cached);
    scratch = convert->place(sc.total);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    conv = DnnlExec(dnnl::convolution_forward(pd));
    conv.bind(DNNL_ARG_SRC, d.src, convert->src());
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    impl_name = onednn_impl(pd);
    if (with_bias) conv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
    conv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    convert->run(r);
    conv.run(r);
  }
};

struct ConvBwdData : Kernel {  // (dy, w) -> dx
  std::string impl_name;       // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w, conv;
  std::optional<SrcConvert> convert;
  size_t scratch = 0;
  explicit ConvBwdData(const KernelCtx& c) {
    ConvDescs d(c, c.out[0].dtype, c.in[0].dtype, c.out[0].shape, c.in[1].shape, c.in[0].shape, c.layout_out(0),
                c.layout_in(0));
    auto hint = d.fwd(false);
    dnnl::convolution_backward_data::primitive_desc pd(engine(), dnnl::algorithm::convolution_direct, d.src, d.w_any,
                                                       d.dst, d.strides, d.dilates, d.pad, d.pad, hint,
                                                       user_scratchpad_attr());
    auto r = weight_reorder(d.w_user, pd.weights_desc());
    convert.emplace(c, d, 0, true);
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), convert->pad()), r, pd.weights_desc().get_size());
    scratch = convert->place(sc.total);
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    conv = DnnlExec(dnnl::convolution_backward_data(pd));
    impl_name = onednn_impl(pd);
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    conv.bind(DNNL_ARG_DIFF_SRC, d.src, convert->src());
    bind_scratchpad(conv, pd.scratchpad_desc());
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    conv.run(r);
    convert->run(r);
  }
};

struct ConvBwdWeights : Kernel {  // (dy, x) -> dw [, db]
  std::string impl_name;          // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec conv, reorder_dw;
  std::optional<SrcConvert> convert;
  size_t scratch = 0;
  explicit ConvBwdWeights(const KernelCtx& c) {
    bool with_bias = c.out.size() > 1;
    ConvDescs d(c, c.in[1].dtype, c.in[0].dtype, c.in[1].shape, c.out[0].shape, c.in[0].shape, c.layout_in(1),
                c.layout_in(0));
    auto hint = d.fwd(with_bias);
    if (d.compute == DType::bf16)  // mixed precision: weight gradients accumulate and leave in float32
      d.w_any = mdesc(d.w_any.get_dims(), dnnl::memory::data_type::f32, dnnl::memory::format_tag::any);
    using bpd = dnnl::convolution_backward_weights::primitive_desc;
    auto alg = dnnl::algorithm::convolution_direct;
    auto attr = user_scratchpad_attr();
    bpd pd = with_bias
                 ? bpd(engine(), alg, d.src, d.w_any, d.bias, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr)
                 : bpd(engine(), alg, d.src, d.w_any, d.dst, d.strides, d.dilates, d.pad, d.pad, hint, attr);
    auto r = weight_reorder(pd.diff_weights_desc(), d.w_user);
    convert.emplace(c, d, 1);
    WeightScratch sc(std::max(pd.scratchpad_desc().get_size(), convert->pad()), r, pd.diff_weights_desc().get_size());
    scratch = convert->place(sc.total);
    conv = DnnlExec(dnnl::convolution_backward_weights(pd));
    impl_name = onednn_impl(pd);
    conv.bind(DNNL_ARG_DIFF_DST, d.dst, Src::in(0));
    conv.bind(DNNL_ARG_SRC, d.src, convert->src());
    conv.bind(DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc(), r ? sc.weights : Src::out(0));
    if (with_bias) conv.bind(DNNL_ARG_DIFF_BIAS, d.bias, Src::out(1));
    bind_scratchpad(conv, pd.scratchpad_desc());
    if (r) reorder_dw = bind_reorder(*r, sc.weights, Src::out(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    convert->run(r);
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

// 2 * MACs of one image (forward, backward-data and weight gradient alike): every output element of y costs
// numel(w) / K multiply-adds.
double conv_image_flops(const Shape& w, const Shape& y) { return 2.0 * double(numel(w)) * double(y[2] * y[3]); }

// The weights layout the full part's primitive picks (format any), imposed on the shorter last part's.
struct PartWeights {
  std::optional<mdesc> md;
  mdesc use(const mdesc& any) const { return md ? *md : any; }
};

struct ConvFwdDet : Kernel {  // conv2d (x, w [, b]) -> y
  std::string impl_name;      // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w;
  std::optional<SrcConvert> convert;
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
    convert.emplace(c, d);
    prepared.cached = c.cache_weights;
    WeightScratch sc(convert->pad(), r, wmd.get_size(), prepared.cached);
    ScratchLayout L;
    L.total = convert->place(sc.total);
    persist = sc.persist;
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, convert->src(), d.src.get_size() / size_t(N)},
                              {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                              {PartArg::Batched, DNNL_ARG_DST, Src::out(0), d.dst.get_size() / size_t(N)}};
    if (with_bias) args.push_back({PartArg::Shared, DNNL_ARG_BIAS, Src::in(2)});
    parts = MinibatchParts(N, part, make, args);
    impl_name = parts.impl();
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    prepared.refresh(r, reorder_w);
    convert->run(r);
    parts.run(r, pad_off);
  }
};

struct ConvBwdDataDet : Kernel {  // conv2d_grad_data (dy, w) -> dx
  std::string impl_name;          // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w;
  std::optional<SrcConvert> convert;
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
    convert.emplace(c, d, 0, true);
    WeightScratch sc(convert->pad(), r, wmd.get_size());
    ScratchLayout L;
    L.total = convert->place(sc.total);
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    parts = MinibatchParts(N, part, make,
                           {{PartArg::Batched, DNNL_ARG_DIFF_DST, Src::in(0), d.dst.get_size() / size_t(N)},
                            {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? sc.weights : Src::in(1)},
                            {PartArg::Batched, DNNL_ARG_DIFF_SRC, convert->src(), d.src.get_size() / size_t(N)}});
    impl_name = parts.impl();
    pad_off = L.add(parts.scratch_bytes());
    scratch = L.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!reorder_w.empty()) reorder_w.run(r);
    parts.run(r, pad_off);
    convert->run(r);
  }
};

struct ConvBwdWeightsDet : Kernel {  // conv2d_grad_weights (dy, x) -> dw [, db]
  std::string impl_name;             // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  std::optional<SrcConvert> convert;
  PartialWeightGrads partial_dw;
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
      bpd pd = with_bias
                   ? bpd(engine(), alg, p.src, wany, p.bias, p.dst, p.strides, p.dilates, p.pad, p.pad, hint, attr)
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
    convert.emplace(c, d, 1);
    ScratchLayout L;
    L.add(std::max(convert->pad(), PartialWeightGrads::reorder_pad(wmd, d.w_user)));
    L.total = convert->place(L.total);
    partial_dw.plan(L, N, part, ws[0], with_bias, wmd, d.w_user, make, convert->src(), d.src.get_size() / size_t(N),
                    Src::in(0), d.dst.get_size() / size_t(N));
    scratch = L.total;
    impl_name = partial_dw.impl();
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    convert->run(r);
    partial_dw.run(r);
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
struct ConvFused : Kernel, FusedConvAttrs {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec reorder_w, conv, act_ex;
  MinibatchParts parts;  // deterministic mode: the convolution over minibatch parts (see ConvFwdDet), not `conv`
  std::optional<SrcConvert> convert;
  size_t scratch = 0, persist = 0, scale_off = 0, shift_off = 0, residual_bytes = 0, pad_off = 0;
  PreparedVersion prepared;
  explicit ConvFused(const KernelCtx& c) : FusedConvAttrs(c) {
    const Attrs& a = c.node.attrs;
    prepared.cached = c.cache_weights;
    const int64_t G = a.i("groups", 1);
    ConvDescs d(c, c.in[0].dtype, c.out[0].dtype, c.in[0].shape, c.in[1].shape, c.out[0].shape, c.layout_in(0),
                c.layout_out(0));
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
      if (with_act) po.append_eltwise(elt.a, elt.alpha, elt.beta);
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
      dnnl::eltwise_forward::primitive_desc epd(engine(), dnnl::prop_kind::forward_inference, elt.a, d.dst, d.dst,
                                                elt.alpha, elt.beta, user_scratchpad_attr());
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
    convert.emplace(c, d);
    ScratchLayout L, P;
    L.add(std::max(
        {pd.scratchpad_desc().get_size(), r ? r->scratchpad_desc().get_size() : size_t(0), act_pad, convert->pad()}));
    ScratchLayout& W = prepared.cached ? P : L;
    auto at = [&](size_t off) { return prepared.cached ? Src::persist(off) : Src::scratch(off); };
    Src w_at = at(r ? W.add(pd.weights_desc().get_size()) : 0);
    if (bn) {
      scale_off = W.add(size_t(K) * 4);
      shift_off = W.add(size_t(K) * 4);
    }
    scratch = convert->place(L.total);
    persist = P.total;
    if (r) {
      reorder_w = bind_reorder(*r, Src::in(1), w_at);
      if (bn) reorder_w.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, plain_desc(Shape{K}, DType::f32), at(scale_off));
    }
    if (c.deterministic) {
      std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, convert->src(), d.src.get_size() / size_t(N)},
                                {PartArg::Shared, DNNL_ARG_WEIGHTS, r ? w_at : Src::in(1)},
                                {PartArg::Batched, DNNL_ARG_DST, Src::out(0), d.dst.get_size() / size_t(N)}};
      if (bn)
        args.push_back({PartArg::Shared, DNNL_ARG_BIAS, at(shift_off)});
      else if (bias)
        args.push_back({PartArg::Shared, DNNL_ARG_BIAS, Src::in(2)});
      parts =
          MinibatchParts(N, part, [&](int64_t mb) { return dnnl::primitive_desc(make_pd(act && !sep_act, mb)); }, args);
      ScratchLayout S;
      S.total = scratch;
      pad_off = S.add(parts.scratch_bytes());
      scratch = S.total;
    } else {
      conv = DnnlExec(dnnl::convolution_forward(pd));
      conv.bind(DNNL_ARG_SRC, d.src, convert->src());
      conv.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? w_at : Src::in(1));
      if (bn)
        conv.bind(DNNL_ARG_BIAS, d.bias, at(shift_off));
      else if (bias)
        conv.bind(DNNL_ARG_BIAS, d.bias, Src::in(2));
      conv.bind(DNNL_ARG_DST, d.dst, Src::out(0));
      bind_scratchpad(conv, pd.scratchpad_desc());
    }
    residual_bytes = layout_bytes(c.out[0], c.layout_out(0));
    // pd is the full part's in deterministic mode; a gemm convolution runs its activation as a second primitive
    impl_name = onednn_impl(pd) + (sep_act ? " +eltwise" : "") + (c.deterministic ? kDetPartsImpl : "");
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
    if (sum && r.out[0] != r.in[residual_in])  // the residual is still live: copy it to y, which the sum reads
      std::memcpy(r.out[0], r.in[residual_in], residual_bytes);
    convert->run(r);
    if (parts.empty())
      conv.run(r);
    else
      parts.run(r, pad_off);
    if (!act_ex.empty()) act_ex.run(r);
  }
};

}  // namespace

std::unique_ptr<Kernel> make_direct_fwd(const KernelCtx& c) {
  if (c.deterministic) return std::make_unique<ConvFwdDet>(c);
  return std::make_unique<ConvFwd>(c);
}
std::unique_ptr<Kernel> make_direct_bwd_data(const KernelCtx& c) {
  if (c.deterministic) return std::make_unique<ConvBwdDataDet>(c);
  return std::make_unique<ConvBwdData>(c);
}
std::unique_ptr<Kernel> make_direct_bwd_weights(const KernelCtx& c) {
  if (c.deterministic) return std::make_unique<ConvBwdWeightsDet>(c);
  return std::make_unique<ConvBwdWeights>(c);
}
std::unique_ptr<Kernel> make_direct_fused(const KernelCtx& c) { return std::make_unique<ConvFused>(c); }

}  // namespace conv
}  // namespace cpu
}  // namespace cnn
