// cpu kernels of the int8 ops (ops/quant.cpp): oneDNN int8 primitives (VNNI where the CPU has it) with runtime
// scales and zero points. Quantized activations live in nhwc (oneDNN's int8 layout); quantize / dequantize are
// reorders with a scale and a zero point and convert layouts on the way. qconv2d / qlinear quantize their weights
// (BN folded) per output channel exactly as the reference (quantize_weights), once per parameter version, into the
// persistent region, then reorder them into the primitive's layout. oneDNN computes
// dst = post_ops(src_scale * wei_scale[k] * sum((src - src_zp) * wei) + bias) / dst_scale + dst_zp, the sum
// post-op adding sum_scale * (the int8 value already in dst - sum_zp).
// Zero points: qconv2d uses oneDNN's src and dst zero points (runtime, one value) and the sum post-op's zero point;
// oneDNN treats a padded tap of a src with a zero point as real 0 (q = src_zp), as ONNX does. qlinear (oneDNN 3.2's
// int8 inner products have no src zero points, and no padding to care about) folds the src zero point into the
// bias exactly: sum((x - zp) * wq[k]) = sum(x * wq[k]) - zp * sum(wq[k]), so bias'[k] = bias[k] - in_scale * ws[k]
// * zp * sum_i wq[k, i]; its dst zero point is oneDNN's where the primitive takes it, else an eltwise linear
// post-op adding out_zp * out_scale last (oneDNN divides by the dst scale after the post-ops). The intermediate
// rounding (mid_*) is four eltwise post-ops before the sum: linear (1 / mid_scale), round (half to even), clip to
// the grid's range minus mid_zp, linear (mid_scale).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/eltwise_alg.hpp"
#include "ops/conv_fused.hpp"
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

// ---- quantize / dequantize: a reorder with a common scale and zero point ----
struct QReorder : Kernel {
  DnnlExec ex;
  std::string impl_name;
  size_t scratch = 0;
  float scale;
  int32_t zp;
  std::string impl() const override { return impl_name; }
  explicit QReorder(const KernelCtx& c)
      : scale(float(c.node.attrs.f("scale", 1.0))), zp(int32_t(c.node.attrs.i("zero_point", 0))) {
    const bool q = c.node.op == "quantize";
    const int arg = q ? DNNL_ARG_DST : DNNL_ARG_SRC;
    auto attr = user_scratchpad_attr();
    attr.set_scales_mask(arg, 0);  // dst = (src - src_zp) * src_scale / dst_scale + dst_zp
    if (zp != 0) attr.set_zero_points_mask(arg, 0);
    mdesc from = md_of(c.in[0], c.layout_in(0)), to = md_of(c.out[0], c.layout_out(0));
    dnnl::reorder::primitive_desc pd(engine(), from, engine(), to, attr);
    ex = DnnlExec(dnnl::reorder(pd));
    ex.bind(DNNL_ARG_FROM, from, Src::in(0));
    ex.bind(DNNL_ARG_TO, to, Src::out(0));
    ex.bind(DNNL_ARG_ATTR_SCALES | arg, plain_desc(Shape{1}, DType::f32), Src::persist(0));
    if (zp != 0) ex.bind(DNNL_ARG_ATTR_ZERO_POINTS | arg, plain_desc(Shape{1}, DType::i32), Src::persist(8));
    scratch = pd.scratchpad_desc().get_size();
    bind_scratchpad(ex, pd.scratchpad_desc());
    impl_name = onednn_impl(pd);
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return 64; }
  void run(const RunCtx& r) override {
    *static_cast<float*>(r.persist) = scale;
    *reinterpret_cast<int32_t*>(static_cast<char*>(r.persist) + 8) = zp;
    ex.run(r);
  }
};

// ---- qconv2d / qlinear ----
struct QMatmulLike : Kernel {
  bool conv;
  FusedParts parts;
  QParams qp;
  int64_t K, per_k;
  float eps;
  bool src_zp_native = false, dst_zp_native = false, src_zp_bias = false;
  DType out_dtype;
  DnnlExec prim, reorder_w;
  std::string impl_name;
  size_t scratch = 0, persist = 0, wq_off = 0, wblk_off = 0, bias_off = 0, ws_off = 0, s_off = 0, src_s_off = 0,
         dst_s_off = 0, src_zp_off = 0, dst_zp_off = 0, res_bytes = 0;
  PreparedVersion prepared;
  std::string impl() const override { return impl_name; }

  explicit QMatmulLike(const KernelCtx& c)
      : conv(c.node.op == "qconv2d"), parts(fused_parts(c.node, conv)), qp(qparams(c.node.attrs)) {
    const Attrs& a = c.node.attrs;
    prepared.cached = c.cache_weights;
    eps = float(a.f("bn_eps", 1e-5));
    out_dtype = c.out[0].dtype;
    const bool q_out = out_dtype != DType::f32;
    const Shape& w = c.in[1].shape;
    K = w[0];
    per_k = numel(w) / K;
    const int64_t G = conv ? a.i("groups", 1) : 1;
    Shape wshape = G > 1 ? Shape{G, w[0] / G, w[1], w[2], w[3]} : w;
    mdesc w_plain = plain_desc(wshape, DType::s8);
    mdesc w_any(dims_of(wshape), dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    mdesc b_md = plain_desc(Shape{K}, DType::f32);
    mdesc src = md_of(c.in[0], c.layout_in(0)), dst = md_of(c.out[0], c.layout_out(0));

    // attr: scales, zero points (native or not), post-ops [mid rounding] [sum] [act] [dst zero point]
    auto make_attr = [&](bool src_zp, bool dst_zp) {
      auto attr = user_scratchpad_attr();
      attr.set_scales_mask(DNNL_ARG_SRC, 0);
      attr.set_scales_mask(DNNL_ARG_WEIGHTS, G > 1 ? 3 : 1);  // per output channel
      if (q_out) attr.set_scales_mask(DNNL_ARG_DST, 0);
      if (src_zp) attr.set_zero_points_mask(DNNL_ARG_SRC, 0);
      if (dst_zp) attr.set_zero_points_mask(DNNL_ARG_DST, 0);
      dnnl::post_ops po;
      if (qp.mid) {
        const float lo = qp.mid_dtype == DType::u8 ? 0.f : -128.f, hi = qp.mid_dtype == DType::u8 ? 255.f : 127.f;
        po.append_eltwise(dnnl::algorithm::eltwise_linear, float(1.0 / qp.mid_scale), 0.f);
        po.append_eltwise(dnnl::algorithm::eltwise_round, 0.f, 0.f);
        po.append_eltwise(dnnl::algorithm::eltwise_clip, lo - float(qp.mid_zp), hi - float(qp.mid_zp));
        po.append_eltwise(dnnl::algorithm::eltwise_linear, float(qp.mid_scale), 0.f);
      }
      if (parts.sum) po.append_sum(float(qp.res_scale), qp.res_zp, dt_of(c.in[parts.res].dtype));
      OneDnnAlg elt;
      if (fused_eltwise(c.node, &elt)) po.append_eltwise(elt.a, elt.alpha, elt.beta);
      if (q_out && qp.out_zp != 0 && !dst_zp)
        po.append_eltwise(dnnl::algorithm::eltwise_linear, 1.f, float(double(qp.out_zp) * qp.out_scale));
      attr.set_post_ops(po);
      return attr;
    };

    mdesc w_chosen, pad_md;
    size_t pad = 0;
    dnnl::primitive p;
    std::string impl_str;
    if (conv) {
      src_zp_native = qp.in_zp != 0;
      dst_zp_native = q_out && qp.out_zp != 0;
      std::vector<int64_t> d = pair_dims(a, "dilation", 1, 1);
      dnnl::convolution_forward::primitive_desc pd(
          engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, w_any, b_md, dst,
          pair_dims(a, "stride", 1, 1), dims{d[0] - 1, d[1] - 1}, pair_dims(a, "padding", 0, 0),
          pair_dims(a, "padding", 0, 0), make_attr(src_zp_native, dst_zp_native));
      w_chosen = pd.weights_desc();
      pad = pd.scratchpad_desc().get_size();
      pad_md = pd.scratchpad_desc();
      p = dnnl::convolution_forward(pd);
      impl_str = onednn_impl(pd);
    } else {
      src_zp_bias = qp.in_zp != 0;
      auto make_pd = [&](bool dst_zp) {
        return dnnl::inner_product_forward::primitive_desc(engine(), dnnl::prop_kind::forward_inference, src, w_any,
                                                           b_md, dst, make_attr(false, dst_zp));
      };
      dnnl::inner_product_forward::primitive_desc pd;
      if (q_out && qp.out_zp != 0) {  // oneDNN's dst zero point where a non-reference kernel takes it
        try {
          pd = make_pd(true);
          dst_zp_native = onednn_impl(pd).find("ref") == std::string::npos;
        } catch (const dnnl::error&) {
          dst_zp_native = false;
        }
      }
      if (!dst_zp_native) pd = make_pd(false);
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
    src_zp_off = P.add(4);
    dst_zp_off = P.add(4);
    persist = P.total;
    scratch = std::max(pad, rpd.scratchpad_desc().get_size());

    reorder_w = DnnlExec(dnnl::reorder(rpd));
    reorder_w.bind(DNNL_ARG_FROM, w_plain, Src::persist(wq_off));
    reorder_w.bind(DNNL_ARG_TO, w_chosen, Src::persist(wblk_off));
    bind_scratchpad(reorder_w, rpd.scratchpad_desc());

    const mdesc one_f32 = plain_desc(Shape{1}, DType::f32), one_s32 = plain_desc(Shape{1}, DType::i32);
    prim = DnnlExec(p);
    prim.bind(DNNL_ARG_SRC, src, Src::in(0));
    prim.bind(DNNL_ARG_WEIGHTS, w_chosen, Src::persist(wblk_off));
    prim.bind(DNNL_ARG_BIAS, b_md, Src::persist(bias_off));
    prim.bind(DNNL_ARG_DST, dst, Src::out(0));
    prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, one_f32, Src::persist(src_s_off));
    prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, plain_desc(Shape{K}, DType::f32), Src::persist(ws_off));
    if (q_out) prim.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, one_f32, Src::persist(dst_s_off));
    if (src_zp_native) prim.bind(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, one_s32, Src::persist(src_zp_off));
    if (dst_zp_native) prim.bind(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, one_s32, Src::persist(dst_zp_off));
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
    float* ws = reinterpret_cast<float*>(base + ws_off);
    int8_t* wq = reinterpret_cast<int8_t*>(base + wq_off);
    const float* b_in = parts.bias ? static_cast<const float*>(r.in[2]) : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      s[k] = 1.f;
      b[k] = b_in ? b_in[k] : 0.f;
    }
    if (parts.bn) {
      auto in = [&](int j) { return static_cast<const float*>(r.in[parts.bn0 + j]); };
      for (int64_t k = 0; k < K; ++k) {
        s[k] = in(0)[k] / std::sqrt(in(3)[k] + eps);
        b[k] = in(1)[k] + (b[k] - in(2)[k]) * s[k];
      }
    }
    quantize_weights(static_cast<const float*>(r.in[1]), parts.bn ? s : nullptr, K, per_k, wq, ws, qp.weight_scale);
    if (src_zp_bias)
      for (int64_t k = 0; k < K; ++k) {
        int64_t row = 0;
        for (int64_t i = 0; i < per_k; ++i) row += wq[k * per_k + i];
        b[k] = float(double(b[k]) - qp.in_scale * double(ws[k]) * double(qp.in_zp) * double(row));
      }
    *reinterpret_cast<float*>(base + src_s_off) = float(qp.in_scale);
    *reinterpret_cast<float*>(base + dst_s_off) = float(qp.out_scale);
    *reinterpret_cast<int32_t*>(base + src_zp_off) = qp.in_zp;
    *reinterpret_cast<int32_t*>(base + dst_zp_off) = qp.out_zp;
    reorder_w.run(r);
  }

  void run(const RunCtx& r) override {
    if (prepared.stale(r)) {
      prepare(r);
      prepared.mark(r);
    }
    if (parts.sum && r.out[0] != r.in[parts.res]) std::memcpy(r.out[0], r.in[parts.res], res_bytes);
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
