// cpu kernels of the int8 ops (ops/quant.cpp): oneDNN int8 primitives (VNNI where the CPU has it) with runtime
// scales. Quantized activations live in nhwc (oneDNN's int8 layout); quantize / dequantize are reorders with a
// scale and convert layouts on the way. qconv2d / qlinear quantize their weights (BN folded) per output channel
// exactly as the reference (quantize_weights), once per parameter version, into the persistent region, then
// reorder them into the primitive's layout. oneDNN computes dst = post_ops(src_scale * wei_scale[k] * acc + bias)
// / dst_scale, the sum post-op adding sum_scale * (the int8 value already in dst).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/eltwise_alg.hpp"
#include "ops/quant.hpp"

namespace cnn {
namespace cpu {
namespace {

using dims = dnnl::memory::dims;
using mdesc = dnnl::memory::desc;

dims pair_dims(const Attrs& a, const char* key, int64_t d0, int64_t d1) {
  std::vector<int64_t> v = a.is(key, {});
  if (v.empty()) return {d0, d1};
  return {v[0], v.back()};
}

// ---- quantize / dequantize: a reorder with a common scale ----
struct QReorder : Kernel {
  DnnlExec ex;
  std::string impl_name;
  size_t scratch = 0;
  float scale;
  std::string impl() const override { return impl_name; }
  explicit QReorder(const KernelCtx& c) : scale(float(c.node.attrs.f("scale", 1.0))) {
    const bool q = c.node.op == "quantize";
    auto attr = user_scratchpad_attr();
    attr.set_scales_mask(q ? DNNL_ARG_DST : DNNL_ARG_SRC, 0);  // dst = src * src_scale / dst_scale
    mdesc from = md_of(c.in[0], c.layout_in(0)), to = md_of(c.out[0], c.layout_out(0));
    dnnl::reorder::primitive_desc pd(engine(), from, engine(), to, attr);
    ex = DnnlExec(dnnl::reorder(pd));
    ex.bind(DNNL_ARG_FROM, from, Src::in(0));
    ex.bind(DNNL_ARG_TO, to, Src::out(0));
    ex.bind(DNNL_ARG_ATTR_SCALES | (q ? DNNL_ARG_DST : DNNL_ARG_SRC), plain_desc(Shape{1}, DType::f32),
            Src::persist(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
    impl_name = onednn_impl(pd);
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return 64; }
  void run(const RunCtx& r) override {
    *static_cast<float*>(r.persist) = scale;
    ex.run(r);
  }
};

// ---- qconv2d / qlinear ----
struct QMatmulLike : Kernel {
  bool conv, bias, bn, sum;
  int bn0, res;
  int64_t K, per_k;
  float eps, in_scale, out_scale, res_scale;
  DType out_dtype;
  DnnlExec prim, reorder_w;
  std::string impl_name;
  size_t scratch = 0, persist = 0, wq_off = 0, wblk_off = 0, bias_off = 0, ws_off = 0, s_off = 0, src_s_off = 0,
         dst_s_off = 0, res_bytes = 0;
  PreparedVersion prepared;
  std::string impl() const override { return impl_name; }

  explicit QMatmulLike(const KernelCtx& c) : conv(c.node.op == "qconv2d") {
    const Attrs& a = c.node.attrs;
    prepared.cached = c.cache_weights;
    bias = a.i("has_bias", 0) != 0;
    bn = a.i("bn", 0) != 0;
    sum = conv && a.i("sum", 0) != 0;
    bn0 = 2 + (bias ? 1 : 0);
    res = bn0 + (bn ? 4 : 0);
    eps = float(a.f("bn_eps", 1e-5));
    in_scale = float(a.f("in_scale", 1.0));
    out_scale = float(a.f("out_scale", 1.0));
    res_scale = float(a.f("res_scale", 1.0));
    out_dtype = c.out[0].dtype;
    const Shape& w = c.in[1].shape;
    K = w[0];
    per_k = numel(w) / K;
    const int64_t G = conv ? a.i("groups", 1) : 1;
    Shape wshape = G > 1 ? Shape{G, w[0] / G, w[1], w[2], w[3]} : w;
    mdesc w_plain = plain_desc(wshape, DType::s8);
    mdesc w_any(dims_of(wshape), dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    mdesc b_md = plain_desc(Shape{K}, DType::f32);
    mdesc src = md_of(c.in[0], c.layout_in(0)), dst = md_of(c.out[0], c.layout_out(0));

    auto attr = user_scratchpad_attr();
    attr.set_scales_mask(DNNL_ARG_SRC, 0);
    attr.set_scales_mask(DNNL_ARG_WEIGHTS, G > 1 ? 3 : 1);  // per output channel
    if (out_dtype != DType::f32) attr.set_scales_mask(DNNL_ARG_DST, 0);
    dnnl::post_ops po;
    if (sum) po.append_sum(res_scale, 0, dt_of(c.in[res].dtype));
    OneDnnAlg elt;
    if (fused_eltwise(c.node, &elt)) po.append_eltwise(elt.a, elt.alpha, elt.beta);
    attr.set_post_ops(po);

    mdesc w_chosen, pad_md;
    size_t pad = 0;
    dnnl::primitive p;
    std::string impl_str;
    if (conv) {
      std::vector<int64_t> d = pair_dims(a, "dilation", 1, 1);
      dnnl::convolution_forward::primitive_desc pd(engine(), dnnl::prop_kind::forward_inference,
                                                   dnnl::algorithm::convolution_direct, src, w_any, b_md, dst,
                                                   pair_dims(a, "stride", 1, 1), dims{d[0] - 1, d[1] - 1},
                                                   pair_dims(a, "padding", 0, 0), pair_dims(a, "padding", 0, 0), attr);
      w_chosen = pd.weights_desc();
      pad = pd.scratchpad_desc().get_size();
      pad_md = pd.scratchpad_desc();
      p = dnnl::convolution_forward(pd);
      impl_str = onednn_impl(pd);
    } else {
      dnnl::inner_product_forward::primitive_desc pd(engine(), dnnl::prop_kind::forward_inference, src, w_any, b_md,
                                                     dst, attr);
      w_chosen = pd.weights_desc();
      pad = pd.scratchpad_desc().get_size();
      pad_md = pd.scratchpad_desc();
      p = dnnl::inner_product_forward(pd);
      impl_str = onednn_impl(pd);
    }
    dnnl::reorder::primitive_desc rpd(engine(), w_plain, engine(), w_chosen, user_scratchpad_attr());
    ScratchLayout P;
    wq_off = P.add(size_t(numel(w)));
    wblk_off = P.add(w_chosen.get_size());
    bias_off = P.add(size_t(K) * 4);
    ws_off = P.add(size_t(K) * 4);
    s_off = P.add(size_t(K) * 4);
    src_s_off = P.add(4);
    dst_s_off = P.add(4);
    persist = P.total;
    scratch = std::max(pad, rpd.scratchpad_desc().get_size());

    reorder_w = DnnlExec(dnnl::reorder(rpd));
    reorder_w.bind(DNNL_ARG_FROM, w_plain, Src::persist(wq_off));
    reorder_w.bind(DNNL_ARG_TO, w_chosen, Src::persist(wblk_off));
    bind_scratchpad(reorder_w, rpd.scratchpad_desc());

    prim = DnnlExec(p);
    prim.bind(DNNL_ARG_SRC, src, Src::in(0));
    prim.bind(DNNL_ARG_WEIGHTS, w_chosen, Src::persist(wblk_off));
    prim.bind(DNNL_ARG_BIAS, b_md, Src::persist(bias_off));
    prim.bind(DNNL_ARG_DST, dst, Src::out(0));
    prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, plain_desc(Shape{1}, DType::f32), Src::persist(src_s_off));
    prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, plain_desc(Shape{K}, DType::f32), Src::persist(ws_off));
    if (out_dtype != DType::f32)
      prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, plain_desc(Shape{1}, DType::f32), Src::persist(dst_s_off));
    bind_scratchpad(prim, pad_md);
    res_bytes = layout_bytes(c.out[0], c.layout_out(0));
    impl_name = impl_str;
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }

  void prepare(const RunCtx& r) {
    char* base = static_cast<char*>(r.persist);
    float* s = reinterpret_cast<float*>(base + s_off);
    float* b = reinterpret_cast<float*>(base + bias_off);
    const float* b_in = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      s[k] = 1.f;
      b[k] = b_in ? b_in[k] : 0.f;
    }
    if (bn) {
      auto in = [&](int j) { return static_cast<const float*>(r.in[bn0 + j]); };
      for (int64_t k = 0; k < K; ++k) {
        s[k] = in(0)[k] / std::sqrt(in(3)[k] + eps);
        b[k] = in(1)[k] + (b[k] - in(2)[k]) * s[k];
      }
    }
    quantize_weights(static_cast<const float*>(r.in[1]), s, K, per_k, reinterpret_cast<int8_t*>(base + wq_off),
                     reinterpret_cast<float*>(base + ws_off));
    *reinterpret_cast<float*>(base + src_s_off) = in_scale;
    *reinterpret_cast<float*>(base + dst_s_off) = out_scale;
    reorder_w.run(r);
  }

  void run(const RunCtx& r) override {
    if (prepared.stale(r)) {
      prepare(r);
      prepared.mark(r);
    }
    if (sum && r.out[0] != r.in[res]) std::memcpy(r.out[0], r.in[res], res_bytes);
    prim.run(r);
  }
};

// ---- int8 pooling: the same dtype and scale in and out ----
struct QPool : Kernel {
  DnnlExec ex;
  std::string impl_name;
  size_t scratch = 0;
  std::string impl() const override { return impl_name; }
  explicit QPool(const KernelCtx& c) {
    const Attrs& a = c.node.attrs;
    const Shape &x = c.in[0].shape, &y = c.out[0].shape;
    mdesc src = md_of(c.in[0], c.layout_in(0)), dst = md_of(c.out[0], c.layout_out(0));
    dims k, s, d, pl, pr;
    dnnl::algorithm alg;
    if (c.node.op == "qglobal_avg_pool") {
      alg = dnnl::algorithm::pooling_avg_exclude_padding;
      k = {x[2], x[3]};
      s = {1, 1};
      d = {0, 0};
      pl = pr = {0, 0};
    } else {
      alg = dnnl::algorithm::pooling_max;
      k = pair_dims(a, "kernel", 1, 1);
      s = pair_dims(a, "stride", k[0], k[1]);
      dims dil = pair_dims(a, "dilation", 1, 1);
      d = {dil[0] - 1, dil[1] - 1};
      pl = pair_dims(a, "padding", 0, 0);
      pr = {std::max(pl[0], (y[2] - 1) * s[0] + dil[0] * (k[0] - 1) + 1 - x[2] - pl[0]),
            std::max(pl[1], (y[3] - 1) * s[1] + dil[1] * (k[1] - 1) + 1 - x[3] - pl[1])};
    }
    dnnl::pooling_forward::primitive_desc pd(engine(), dnnl::prop_kind::forward_inference, alg, src, dst, s, k, d, pl,
                                             pr, user_scratchpad_attr());
    ex = DnnlExec(dnnl::pooling_forward(pd));
    ex.bind(DNNL_ARG_SRC, src, Src::in(0));
    ex.bind(DNNL_ARG_DST, dst, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
    impl_name = onednn_impl(pd);
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// Layouts: quantized 4-D activations are nhwc; quantize reads its input where it is, dequantize writes the
// session's float layout.
Layout nhwc_if_4d(const TensorDesc& d) { return d.shape.size() == 4 ? Layout::nhwc : Layout::plain; }

LayoutChoice rule_quantize(const LayoutQuery& q) {
  return {{q.in[0].shape.size() == 4 ? q.in_layout[0] : Layout::plain}, {nhwc_if_4d(q.out[0])}};
}
LayoutChoice rule_dequantize(const LayoutQuery& q) {
  return {{q.in[0].shape.size() == 4 ? q.in_layout[0] : Layout::plain}, {q.policy.act(q.out[0])}};
}
// Every quantized 4-D input and every 4-D output nhwc (float parameters stay plain).
LayoutChoice rule_nhwc(const LayoutQuery& q) {
  LayoutChoice c;
  for (auto& d : q.in) c.in.push_back(is_int8(d.dtype) ? nhwc_if_4d(d) : Layout::plain);
  for (auto& d : q.out) c.out.push_back(nhwc_if_4d(d));
  return c;
}

std::unique_ptr<Kernel> make_reorder(const KernelCtx& c) { return std::make_unique<QReorder>(c); }
std::unique_ptr<Kernel> make_matmul(const KernelCtx& c) { return std::make_unique<QMatmulLike>(c); }
std::unique_ptr<Kernel> make_pool(const KernelCtx& c) { return std::make_unique<QPool>(c); }

KernelRegistrar r1("cpu", "quantize", make_reorder);
KernelRegistrar r2("cpu", "dequantize", make_reorder);
KernelRegistrar r3("cpu", "qconv2d", make_matmul);
KernelRegistrar r4("cpu", "qlinear", make_matmul);
KernelRegistrar r5("cpu", "qmax_pool2d", make_pool);
KernelRegistrar r6("cpu", "qglobal_avg_pool", make_pool);
LayoutRuleRegistrar l1("cpu", "quantize", rule_quantize);
LayoutRuleRegistrar l2("cpu", "dequantize", rule_dequantize);
LayoutRuleRegistrar l3("cpu", "qconv2d", rule_nhwc);
LayoutRuleRegistrar l5("cpu", "qmax_pool2d", rule_nhwc);
LayoutRuleRegistrar l6("cpu", "qglobal_avg_pool", rule_nhwc);

}  // namespace
}  // namespace cpu
}  // namespace cnn
