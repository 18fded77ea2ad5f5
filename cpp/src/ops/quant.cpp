// Int8 inference ops (docs/ARCHITECTURE.md, "int8"). A quantized value holds q with real = scale * (q - zp), zp
// the zero point (0: symmetric): uint8 or int8.
//   quantize (x float) -> q: attrs scale > 0, dtype (3 uint8 | 5 int8), zero_point (default 0, in the dtype's
//       range); q = saturate(round_half_even(x / scale) + zero_point)
//   dequantize (q uint8/int8) -> x float32 = scale * (q - zero_point); attrs scale > 0, zero_point (q's range)
// The ops below are made by the int8 pass (core/quantize.cpp) from dequantize -> op [-> quantize] chains:
//   qconv2d (xq, w, [b], [gamma, beta, mean, var], [residual q]) -> y: fused_conv2d's inputs and attributes
//       (ops/conv_fused.cpp) plus in_scale / in_zp (x's), res_scale / res_zp (the residual's), out_dtype
//       (0 float32, 3, 5) with out_scale / out_zp (an int8 output's), and optionally mid_dtype (3, 5) with
//       mid_scale / mid_zp (all zero points default 0). The weights, BN folded (w' = w * s,
//       b' = beta + (b - mean) * s), are quantized per output channel, symmetric: ws[k] = max|w'[k]| / 127,
//       wq = round(w' / ws[k]); without BN a row on the grid of the optional attribute weight_scale keeps it
//       (quantize_weights). With acc = sum((xq - in_zp) * wq) over the taps inside x (a padded tap is real 0):
//       v = in_scale * ws[k] * acc + b'[k]; with mid: v = mid_scale * (saturate(round(v / mid_scale) + mid_zp)
//       - mid_zp) (the model's rounding between the convolution and its residual add / activation, kept
//       exact); y = act(v + res_scale * (residual - res_zp)), then saturate(round(y / out_scale) + out_zp)
//       unless out_dtype is float32.
//   qlinear (xq, w, [b], [gamma, beta, mean, var]) -> y: the same over fused_linear (no residual).
//   qmax_pool2d (xq) -> yq: max_pool2d's attributes (inference), the same dtype, scale and zero point in and out.
//   qglobal_avg_pool (xq) -> yq [N, C, 1, 1]: the mean rounded half to even, the same dtype, scale and zero
//       point (the max and the rounded mean commute with the integer shift by the zero point, so neither op
//       needs it).
// Reference kernels are plain loops with exact integer sums (the yardstick of the cpu kernels, cpu/quant.cpp).
#include "ops/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/op.hpp"
#include "ops/activations_math.hpp"
#include "ops/conv_fused.hpp"

namespace cnn {

bool is_int8(DType t) { return t == DType::u8 || t == DType::s8; }

float quantize_value(double v, DType t, int32_t zero_point) {
  double r = std::nearbyint(v) + double(zero_point);
  double lo = t == DType::u8 ? 0.0 : -128.0, hi = t == DType::u8 ? 255.0 : 127.0;
  if (!(r >= lo)) r = lo;  // NaN saturates to the low end
  if (r > hi) r = hi;
  return float(r);
}

void quantize_weights(const float* w, const float* s, int64_t K, int64_t per_k, int8_t* wq, float* ws, double grid) {
  for (int64_t k = 0; k < K; ++k) {
    const float* row = w + k * per_k;
    bool on_grid = grid > 0.0 && !s;
    for (int64_t i = 0; i < per_k && on_grid; ++i) {
      const double q = double(row[i]) / grid, r = std::nearbyint(q);
      on_grid = std::fabs(q - r) <= 1e-3 && r >= -128.0 && r <= 127.0;
    }
    if (on_grid) {
      ws[k] = float(grid);
      for (int64_t i = 0; i < per_k; ++i) wq[k * per_k + i] = int8_t(std::nearbyint(double(row[i]) / grid));
      continue;
    }
    const float sk = s ? s[k] : 1.f;
    float m = 0.f;
    for (int64_t i = 0; i < per_k; ++i) m = std::max(m, std::fabs(row[i] * sk));
    ws[k] = m > 0.f ? m / 127.f : 1.f;
    for (int64_t i = 0; i < per_k; ++i)
      wq[k * per_k + i] = int8_t(quantize_value(double(row[i] * sk) / double(ws[k]), DType::s8));
  }
}

QParams qparams(const Attrs& a) {
  QParams p;
  p.in_scale = a.f("in_scale", 1.0);
  p.out_scale = a.f("out_scale", 1.0);
  p.res_scale = a.f("res_scale", 1.0);
  p.mid_scale = a.f("mid_scale", 1.0);
  p.weight_scale = a.f("weight_scale", 0.0);
  p.in_zp = int32_t(a.i("in_zp", 0));
  p.out_zp = int32_t(a.i("out_zp", 0));
  p.res_zp = int32_t(a.i("res_zp", 0));
  p.mid_zp = int32_t(a.i("mid_zp", 0));
  p.mid_dtype = DType(a.i("mid_dtype", 0));
  p.mid = is_int8(p.mid_dtype);
  return p;
}

namespace {

DType dtype_attr(const Node& n, const char* key, bool allow_float) {
  int64_t v = n.attrs.i(key, -1);
  if (v == int64_t(DType::u8) || v == int64_t(DType::s8) || (allow_float && v == int64_t(DType::f32))) return DType(v);
  op_error(n, std::string("attribute '") + key + "' must be " + (allow_float ? "0 (float32), " : "") +
                  "3 (uint8) or 5 (int8), got " + std::to_string(v));
}

double scale_attr(const Node& n, const char* key) {
  double s = n.attrs.f(key, 0.0);
  if (!(s > 0.0) || !std::isfinite(s) || s > 1e30)
    op_error(n, std::string("attribute '") + key + "' must be a finite scale > 0, got " + std::to_string(s));
  return s;
}

// An integer zero point in t's range (0 when absent).
int32_t zero_point_attr(const Node& n, const char* key, DType t) {
  if (n.attrs.floats.count(key))
    op_error(n, std::string("attribute '") + key + "' must be an integer, got the float " +
                    std::to_string(n.attrs.floats.at(key)));
  std::vector<int64_t> v = n.attrs.is(key, {0});
  const int64_t lo = t == DType::u8 ? 0 : -128, hi = t == DType::u8 ? 255 : 127;
  if (v.size() != 1 || v[0] < lo || v[0] > hi)
    op_error(n, std::string("attribute '") + key + "' must be one integer in " + dtype_name(t) + "'s range [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                    (v.size() == 1 ? std::to_string(v[0]) : std::to_string(v.size()) + " values"));
  return int32_t(v[0]);
}

void expect_int8(const Node& n, const TensorDesc& d, const char* what) {
  if (!is_int8(d.dtype)) op_error(n, std::string(what) + " must be uint8 or int8 (quantized), got " + descs_str({d}));
}

// ---- quantize / dequantize ----
template <class T>
struct QuantizeRef {
  static void run(const RefArgs<T>& a) {
    const double s = a.attrs().f("scale", 1.0);
    const DType t = DType(a.attrs().i("dtype", 3));
    const int32_t zp = int32_t(a.attrs().i("zero_point", 0));
    const T* x = a.in(0);
    const int64_t n = numel(a.in_shape(0));
    if (t == DType::u8) {
      uint8_t* y = a.template out<uint8_t>(0);
      for (int64_t i = 0; i < n; ++i) y[i] = uint8_t(quantize_value(double(x[i]) / s, t, zp));
    } else {
      int8_t* y = a.template out<int8_t>(0);
      for (int64_t i = 0; i < n; ++i) y[i] = int8_t(quantize_value(double(x[i]) / s, t, zp));
    }
  }
};

template <class T>
struct DequantizeRef {
  static void run(const RefArgs<T>& a) {
    const double s = a.attrs().f("scale", 1.0);
    const int32_t zp = int32_t(a.attrs().i("zero_point", 0));
    T* y = a.out(0);
    const int64_t n = numel(a.in_shape(0));
    if (a.k.in[0].dtype == DType::u8) {
      const uint8_t* x = a.template in<uint8_t>(0);
      for (int64_t i = 0; i < n; ++i) y[i] = T(double(int32_t(x[i]) - zp) * s);
    } else {
      const int8_t* x = a.template in<int8_t>(0);
      for (int64_t i = 0; i < n; ++i) y[i] = T(double(int32_t(x[i]) - zp) * s);
    }
  }
};

// An int8 element as a number.
inline int32_t q_at(const void* p, DType t, int64_t i) {
  return t == DType::u8 ? int32_t(static_cast<const uint8_t*>(p)[i]) : int32_t(static_cast<const int8_t*>(p)[i]);
}
inline void q_store(void* p, DType t, int64_t i, double v, int32_t zp = 0) {
  if (t == DType::u8)
    static_cast<uint8_t*>(p)[i] = uint8_t(quantize_value(v, t, zp));
  else
    static_cast<int8_t*>(p)[i] = int8_t(quantize_value(v, t, zp));
}

// ---- qconv2d / qlinear ----
std::vector<TensorDesc> infer_q(const Node& n, const std::vector<TensorDesc>& in, bool conv) {
  if (in.empty()) op_error(n, "expects inputs (xq, w, ...), got none");
  const FusedParts p = fused_parts(n, conv);
  if (in.size() != p.count)
    op_error(n, "expects " + std::to_string(p.count) + " inputs for its attributes, got " + descs_str(in));
  expect_int8(n, in[0], "x");
  scale_attr(n, "in_scale");
  zero_point_attr(n, "in_zp", in[0].dtype);
  const DType od = dtype_attr(n, "out_dtype", true);
  if (od != DType::f32) {
    scale_attr(n, "out_scale");
    zero_point_attr(n, "out_zp", od);
  } else if (n.attrs.has("out_zp")) {
    op_error(n, "attribute 'out_zp' needs a quantized output (out_dtype 3 or 5), got out_dtype 0 (float32)");
  }
  if (n.attrs.has("mid_dtype")) {
    const DType md = dtype_attr(n, "mid_dtype", false);
    scale_attr(n, "mid_scale");
    zero_point_attr(n, "mid_zp", md);
  }
  if (n.attrs.has("weight_scale")) scale_attr(n, "weight_scale");
  std::vector<TensorDesc> f = in;
  f[0].dtype = DType::f32;
  if (p.sum) {
    expect_int8(n, in[p.res], "residual");
    scale_attr(n, "res_scale");
    zero_point_attr(n, "res_zp", in[p.res].dtype);
    if (od == DType::f32) op_error(n, "a residual needs a quantized (uint8/int8) output");
    f[p.res].dtype = DType::f32;
  }
  Node fn = n;
  fn.op = conv ? "fused_conv2d" : "fused_linear";
  std::vector<TensorDesc> y = get_op(fn.op).infer(fn, f);
  y[0].dtype = od;
  return y;
}

// Folded (BN) float weights and bias, then per-channel quantization: what the cpu kernels compute too.
struct Prepared {
  std::vector<int8_t> wq;
  std::vector<float> ws, bias;
};
Prepared prepare(const KernelCtx& k, const RunCtx& r, const FusedParts& p) {
  const Shape& w = k.in[1].shape;
  const int64_t K = w[0], per_k = numel(w) / K;
  Prepared o;
  std::vector<float> s(size_t(K), 1.f);
  o.bias.assign(size_t(K), 0.f);
  const float* b = p.bias ? static_cast<const float*>(r.in[2]) : nullptr;
  for (int64_t i = 0; i < K; ++i) o.bias[i] = b ? b[i] : 0.f;
  if (p.bn) {
    const float eps = float(k.node.attrs.f("bn_eps", 1e-5));
    auto in = [&](int j) { return static_cast<const float*>(r.in[p.bn0 + j]); };
    for (int64_t i = 0; i < K; ++i) {
      s[i] = in(0)[i] / std::sqrt(in(3)[i] + eps);
      o.bias[i] = in(1)[i] + (o.bias[i] - in(2)[i]) * s[i];
    }
  }
  o.wq.resize(size_t(numel(w)));
  o.ws.resize(size_t(K));
  quantize_weights(static_cast<const float*>(r.in[1]), p.bn ? s.data() : nullptr, K, per_k, o.wq.data(), o.ws.data(),
                   k.node.attrs.f("weight_scale", 0.0));
  return o;
}

double apply_act(const act::FusedAct& f, double v) {
  if (f.act == 1) return v > 0 ? v : 0.0;
  if (f.act == 2) return v > 0 ? v : v * double(f.slope);
  if (f.act == act::kFusedOther) return act::fwd<double>(f.p.kind, v, f.p.a, f.p.b);
  return v;
}

struct QRef : Kernel {
  KernelCtx c;
  bool conv;
  QRef(const KernelCtx& k, bool cv) : c(k), conv(cv) {}
  std::string impl() const override { return "reference"; }
  void run(const RunCtx& r) override {
    const FusedParts p = fused_parts(c.node, conv);
    const Prepared w = prepare(c, r, p);
    const Attrs& a = c.node.attrs;
    const QParams qp = qparams(a);
    const DType xt = c.in[0].dtype, ot = c.out[0].dtype, rt = p.sum ? c.in[p.res].dtype : DType::u8;
    const act::FusedAct f = act::fused_act(a);
    const Shape &xs = c.in[0].shape, &wsh = c.in[1].shape, &ys = c.out[0].shape;
    const int64_t N = xs[0], K = wsh[0];
    auto emit = [&](int64_t i, int64_t k, int64_t acc) {
      double v = qp.in_scale * double(w.ws[k]) * double(acc) + double(w.bias[k]);
      if (qp.mid) v = qp.mid_scale * (double(quantize_value(v / qp.mid_scale, qp.mid_dtype, qp.mid_zp)) - qp.mid_zp);
      if (p.sum) v += qp.res_scale * double(q_at(r.in[p.res], rt, i) - qp.res_zp);
      v = apply_act(f, v);
      if (ot == DType::f32)
        static_cast<float*>(r.out[0])[i] = float(v);
      else
        q_store(r.out[0], ot, i, v / qp.out_scale, qp.out_zp);
    };
    if (!conv) {
      const int64_t IN = xs[1];
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          int64_t acc = 0;
          for (int64_t i = 0; i < IN; ++i) acc += int64_t(q_at(r.in[0], xt, n * IN + i) - qp.in_zp) * w.wq[k * IN + i];
          emit(n * K + k, k, acc);
        }
      return;
    }
    const int64_t C = xs[1], H = xs[2], W = xs[3], R = wsh[2], S = wsh[3], OH = ys[2], OW = ys[3];
    const int64_t G = a.i("groups", 1), Cg = C / G, Kg = K / G;
    auto pr = [&](const char* key, int64_t d) {
      std::vector<int64_t> v = a.is(key, {d, d});
      return std::pair<int64_t, int64_t>{v[0], v.back()};
    };
    auto [sh, sw] = pr("stride", 1);
    auto [ph, pw] = pr("padding", 0);
    auto [dh, dw] = pr("dilation", 1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c0 = k / Kg * Cg;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            int64_t acc = 0;
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t rr = 0; rr < R; ++rr) {
                int64_t ih = oh * sh - ph + rr * dh;
                if (ih < 0 || ih >= H) continue;
                for (int64_t s = 0; s < S; ++s) {
                  int64_t iw = ow * sw - pw + s * dw;
                  if (iw < 0 || iw >= W) continue;
                  acc += int64_t(q_at(r.in[0], xt, ((n * C + c0 + c) * H + ih) * W + iw) - qp.in_zp) *
                         w.wq[((k * Cg + c) * R + rr) * S + s];
                }
              }
            emit(((n * K + k) * OH + oh) * OW + ow, k, acc);
          }
      }
  }
};

// ---- pooling ----
std::vector<TensorDesc> infer_qpool(const Node& n, const std::vector<TensorDesc>& in, const char* base) {
  if (in.size() != 1) op_error(n, "expects 1 input (xq), got " + descs_str(in));
  expect_int8(n, in[0], "x");
  if (n.attrs.i("training", 0) != 0) op_error(n, "is an inference op (attribute 'training' must be 0)");
  Node fn = n;
  fn.op = base;
  TensorDesc f = in[0];
  f.dtype = DType::f32;
  std::vector<TensorDesc> y = get_op(base).infer(fn, {f});
  y.resize(1);
  y[0].dtype = in[0].dtype;
  return y;
}

struct QMaxPoolRef : Kernel {
  KernelCtx c;
  explicit QMaxPoolRef(const KernelCtx& k) : c(k) {}
  std::string impl() const override { return "reference"; }
  void run(const RunCtx& r) override {
    const Attrs& a = c.node.attrs;
    auto pr = [&](const char* key, int64_t d0, int64_t d1) {
      std::vector<int64_t> v = a.is(key, {});
      if (v.empty()) return std::pair<int64_t, int64_t>{d0, d1};
      return std::pair<int64_t, int64_t>{v[0], v.back()};
    };
    auto [kh, kw] = pr("kernel", 1, 1);
    auto [sh, sw] = pr("stride", kh, kw);
    auto [ph, pw] = pr("padding", 0, 0);
    auto [dh, dw] = pr("dilation", 1, 1);
    const Shape &xs = c.in[0].shape, &ys = c.out[0].shape;
    const DType t = c.in[0].dtype;
    const int64_t H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    for (int64_t nc = 0; nc < xs[0] * xs[1]; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int32_t m = t == DType::u8 ? 0 : -128;
          for (int64_t i = 0; i < kh; ++i) {
            int64_t h = oh * sh - ph + i * dh;
            if (h < 0 || h >= H) continue;
            for (int64_t j = 0; j < kw; ++j) {
              int64_t w = ow * sw - pw + j * dw;
              if (w >= 0 && w < W) m = std::max(m, q_at(r.in[0], t, (nc * H + h) * W + w));
            }
          }
          q_store(r.out[0], t, (nc * OH + oh) * OW + ow, m);
        }
  }
};

struct QGlobalAvgRef : Kernel {
  KernelCtx c;
  explicit QGlobalAvgRef(const KernelCtx& k) : c(k) {}
  std::string impl() const override { return "reference"; }
  void run(const RunCtx& r) override {
    const Shape& xs = c.in[0].shape;
    const DType t = c.in[0].dtype;
    const int64_t hw = xs[2] * xs[3];
    for (int64_t nc = 0; nc < xs[0] * xs[1]; ++nc) {
      int64_t s = 0;
      for (int64_t i = 0; i < hw; ++i) s += q_at(r.in[0], t, nc * hw + i);
      q_store(r.out[0], t, nc, double(s) / double(hw));
    }
  }
};

OpSchema schema(const std::string& name, decltype(OpSchema::infer) infer, KernelFactory ref, const char* base) {
  OpSchema s;
  s.name = name;
  s.infer = std::move(infer);
  s.ref = std::move(ref);
  if (base)
    s.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(out[0], in[1]);
    };
  return s;
}

OpRegistrar quantize_op{[] {
  OpSchema s = schema(
      "quantize",
      [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
        if (in.size() != 1 || !is_float(in[0].dtype)) op_error(n, "expects 1 float input, got " + descs_str(in));
        scale_attr(n, "scale");
        const DType t = dtype_attr(n, "dtype", false);
        zero_point_attr(n, "zero_point", t);
        return {TensorDesc{in[0].shape, t}};
      },
      ref_kernel<QuantizeRef>(), nullptr);
  s.recompute = RecomputeClass::cheap;
  return s;
}()};

OpRegistrar dequantize_op{[] {
  OpSchema s = schema(
      "dequantize",
      [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
        if (in.size() != 1) op_error(n, "expects 1 input, got " + descs_str(in));
        expect_int8(n, in[0], "x");
        scale_attr(n, "scale");
        zero_point_attr(n, "zero_point", in[0].dtype);
        return {TensorDesc{in[0].shape, DType::f32}};
      },
      ref_kernel<DequantizeRef>(), nullptr);
  s.recompute = RecomputeClass::cheap;
  return s;
}()};

OpRegistrar qconv_op{[] {
  OpSchema s = schema(
      "qconv2d", [](const Node& n, const std::vector<TensorDesc>& in) { return infer_q(n, in, true); },
      [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<QRef>(c, true); }, "conv");
  s.inplace_input = [](const Node& n) {
    const FusedParts p = fused_parts(n, true);
    return p.sum ? p.res : -1;
  };
  return s;
}()};

OpRegistrar qlinear_op{schema(
    "qlinear", [](const Node& n, const std::vector<TensorDesc>& in) { return infer_q(n, in, false); },
    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<QRef>(c, false); }, "linear")};

OpRegistrar qmax_pool_op{schema(
    "qmax_pool2d", [](const Node& n, const std::vector<TensorDesc>& in) { return infer_qpool(n, in, "max_pool2d"); },
    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<QMaxPoolRef>(c); }, nullptr)};

OpRegistrar qglobal_avg_op{schema(
    "qglobal_avg_pool",
    [](const Node& n, const std::vector<TensorDesc>& in) { return infer_qpool(n, in, "global_avg_pool"); },
    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<QGlobalAvgRef>(c); }, nullptr)};

}  // namespace
}  // namespace cnn
