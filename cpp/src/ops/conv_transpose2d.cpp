// Transposed 2-D convolution, PyTorch's ConvTranspose2d: x [N, C, H, W], w [C, K/groups, R, S] (in-channels first),
// optional b [K] -> y [N, K, OH, OW], OH = (H-1)*sh - 2*ph + dh*(R-1) + oph + 1; attrs stride, padding,
// output_padding, dilation (1 or 2 ints each) and groups; output_padding must be below stride or dilation (PyTorch's
// rule). Backward ops: conv_transpose2d_grad_data (dy, w) -> dx and conv_transpose2d_grad_weights (dy, x) -> dw [, db],
// carrying the forward attrs plus input_shape / weight_shape, has_bias. Shape errors name the node and expected vs
// given shapes. Reference kernels are plain loops (float, double) that write every output element.
#include <array>
#include <cstring>

#include "core/op.hpp"

namespace cnn {
namespace {

// y[n, g*Kg + kk, h*sh - ph + r*dh, w*sw - pw + s*dw] += x[n, c, h, w] * w[c, kk, r, s] for c in group g.
struct Geom {
  int64_t N, C, H, W, K, R, S, OH, OW, G, sh, sw, ph, pw, oph, opw, dh, dw;
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  Shape out() const { return {N, K, OH, OW}; }
  size_t widx(int64_t c, int64_t kk, int64_t r, int64_t s) const { return size_t(((c * Kg() + kk) * R + r) * S + s); }
  size_t xidx(int64_t n, int64_t c, int64_t h, int64_t w) const { return size_t(((n * C + c) * H + h) * W + w); }
  size_t yidx(int64_t n, int64_t k, int64_t oh, int64_t ow) const { return size_t(((n * K + k) * OH + oh) * OW + ow); }
};

std::array<int64_t, 2> pair_attr(const Node& n, const char* name, int64_t dflt, int64_t min) {
  auto it = n.attrs.ints.find(name);
  if (it == n.attrs.ints.end()) return {dflt, dflt};
  const std::vector<int64_t>& v = it->second;
  if (v.empty() || v.size() > 2 || v[0] < min || v.back() < min)
    op_error(n, std::string("attribute '") + name + "' must be 1 or 2 integers >= " + std::to_string(min) + ", got " +
                    shape_str(v));
  return {v[0], v.back()};
}

// Validates x and w against the attrs and computes the output size.
Geom geom(const Node& n, const Shape& x, const Shape& w) {
  if (x.size() != 4) op_error(n, "x must be 4-D [N, C, H, W], got " + shape_str(x));
  if (w.size() != 4) op_error(n, "w must be 4-D [C, K/groups, R, S], got " + shape_str(w));
  auto st = pair_attr(n, "stride", 1, 1), pd = pair_attr(n, "padding", 0, 0), op = pair_attr(n, "output_padding", 0, 0),
       dl = pair_attr(n, "dilation", 1, 1);
  int64_t G = n.attrs.i("groups", 1);
  if (G < 1) op_error(n, "groups must be >= 1, got " + std::to_string(G));
  Geom g{x[0], x[1], x[2], x[3], w[1] * G, w[2], w[3], 0, 0, G, st[0], st[1], pd[0], pd[1], op[0], op[1], dl[0], dl[1]};
  if (g.C % G)
    op_error(
        n, "x " + shape_str(x) + ": C = " + std::to_string(g.C) + " is not divisible by groups = " + std::to_string(G));
  if (w[0] != g.C)
    op_error(n, "w expects [C, K/groups, R, S] with C = " + std::to_string(g.C) + " (x " + shape_str(x) + "), got " +
                    shape_str(w));
  for (int i = 0; i < 2; ++i)
    if (op[i] >= st[i] && op[i] >= dl[i])
      op_error(n, "output_padding " + shape_str({op[0], op[1]}) + " must be smaller than either stride " +
                      shape_str({st[0], st[1]}) + " or dilation " + shape_str({dl[0], dl[1]}) + " in each dimension");
  g.OH = (g.H - 1) * g.sh - 2 * g.ph + g.dh * (g.R - 1) + g.oph + 1;
  g.OW = (g.W - 1) * g.sw - 2 * g.pw + g.dw * (g.S - 1) + g.opw + 1;
  if (g.OH <= 0 || g.OW <= 0)
    op_error(n, "output [N, K, OH, OW] = " + shape_str(g.out()) + " is empty: x " + shape_str(x) + ", w " +
                    shape_str(w) + ", stride " + shape_str({g.sh, g.sw}) + ", padding " + shape_str({g.ph, g.pw}) +
                    ", output_padding " + shape_str({g.oph, g.opw}) + ", dilation " + shape_str({g.dh, g.dw}));
  return g;
}

void check_floats(const Node& n, const std::vector<TensorDesc>& in) {
  for (auto& d : in)
    if (!is_float(d.dtype) || d.dtype != in[0].dtype)
      op_error(n, "expects float tensors of one dtype, got " + descs_str(in));
}

void check_dy(const Node& n, const Geom& g, const TensorDesc& dy) {
  if (dy.shape != g.out())
    op_error(n, "dy expects the forward output shape " + shape_str(g.out()) + ", got " + shape_str(dy.shape));
}

Shape shape_attr(const Node& n, const char* name) {
  Shape s = n.attrs.is(name, {});
  if (s.size() != 4) op_error(n, std::string("attribute '") + name + "' must hold 4 dimensions, got " + shape_str(s));
  return s;
}

// ---- naive kernels ----

template <class T>
void conv_transpose2d_forward(T* out, const T* inp, const T* weight, const T* bias, const Geom& g) {
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t i = 0; i < g.OH * g.OW; ++i) out[g.yidx(n, k, 0, 0) + size_t(i)] = bias ? bias[k] : T(0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t k0 = c / g.Cg() * g.Kg();
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          T xv = inp[g.xidx(n, c, h, w)];
          for (int64_t kk = 0; kk < g.Kg(); ++kk)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t oh = h * g.sh - g.ph + r * g.dh;
              if (oh < 0 || oh >= g.OH) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ow = w * g.sw - g.pw + s * g.dw;
                if (ow < 0 || ow >= g.OW) continue;
                out[g.yidx(n, k0 + kk, oh, ow)] += xv * weight[g.widx(c, kk, r, s)];
              }
            }
        }
    }
}

template <class T>
void conv_transpose2d_backward_data(T* dinp, const T* dout, const T* weight, const Geom& g) {
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t k0 = c / g.Cg() * g.Kg();
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          T acc = 0;
          for (int64_t kk = 0; kk < g.Kg(); ++kk)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t oh = h * g.sh - g.ph + r * g.dh;
              if (oh < 0 || oh >= g.OH) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ow = w * g.sw - g.pw + s * g.dw;
                if (ow < 0 || ow >= g.OW) continue;
                acc += dout[g.yidx(n, k0 + kk, oh, ow)] * weight[g.widx(c, kk, r, s)];
              }
            }
          dinp[g.xidx(n, c, h, w)] = acc;
        }
    }
}

template <class T>
void conv_transpose2d_backward_weights(T* dweight, T* dbias, const T* dout, const T* inp, const Geom& g) {
  std::memset(dweight, 0, sizeof(T) * size_t(g.C * g.Kg() * g.R * g.S));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t k0 = c / g.Cg() * g.Kg();
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          T xv = inp[g.xidx(n, c, h, w)];
          for (int64_t kk = 0; kk < g.Kg(); ++kk)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t oh = h * g.sh - g.ph + r * g.dh;
              if (oh < 0 || oh >= g.OH) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ow = w * g.sw - g.pw + s * g.dw;
                if (ow < 0 || ow >= g.OW) continue;
                dweight[g.widx(c, kk, r, s)] += xv * dout[g.yidx(n, k0 + kk, oh, ow)];
              }
            }
        }
    }
  if (!dbias) return;
  for (int64_t k = 0; k < g.K; ++k) {
    T acc = 0;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.OH * g.OW; ++i) acc += dout[g.yidx(n, k, 0, 0) + size_t(i)];
    dbias[k] = acc;
  }
}

template <class T>
struct FwdRef {  // (x, w [, b]) -> y
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.in_shape(0), a.in_shape(1));
    conv_transpose2d_forward<T>(a.out(0), a.in(0), a.in(1), a.k.in.size() > 2 ? a.in(2) : nullptr, g);
  }
};
template <class T>
struct GradDataRef {  // (dy, w) -> dx
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.out_shape(0), a.in_shape(1));
    conv_transpose2d_backward_data<T>(a.out(0), a.in(0), a.in(1), g);
  }
};
template <class T>
struct GradWeightsRef {  // (dy, x) -> dw [, db]
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.in_shape(1), a.out_shape(0));
    conv_transpose2d_backward_weights<T>(a.out(0), a.k.out.size() > 1 ? a.out(1) : nullptr, a.in(0), a.in(1), g);
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "conv_transpose2d";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2 && in.size() != 3)
        op_error(n, "expects inputs (x, w) or (x, w, b), got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_floats(n, in);
      Geom g = geom(n, in[0].shape, in[1].shape);
      if (in.size() == 3 && in[2].shape != Shape{g.K})
        op_error(n, "b expects [K] = " + shape_str({g.K}) + " for w " + shape_str(in[1].shape) +
                        " and groups = " + std::to_string(g.G) + ", got " + shape_str(in[2].shape));
      return {TensorDesc{g.out(), in[0].dtype}};
    };
    f.recompute = RecomputeClass::costly;
    f.grad = [](GradCtx& c) {
      const Attrs fa = c.node().attrs;
      bool bias = c.node().inputs.size() > 2;
      if (c.need_dx(0)) {
        Attrs a = fa;
        a.ints["input_shape"] = c.desc(c.input(0)).shape;
        c.set_dx(0, c.emit("conv_transpose2d_grad_data", {c.dy(0), c.input(1)}, a, "grad_data")[0]);
      }
      bool db = bias && c.need_dx(2);
      if (c.need_dx(1) || db) {
        Attrs a = fa;
        a.ints["weight_shape"] = c.desc(c.input(1)).shape;
        a.ints["has_bias"] = {db ? 1 : 0};
        std::vector<int> o = c.emit("conv_transpose2d_grad_weights", {c.dy(0), c.input(0)}, a, "grad_weights");
        if (c.need_dx(1)) c.set_dx(1, o[0]);
        if (db) c.set_dx(2, o[1]);
      }
    };
    f.ref = ref_kernel<FwdRef>();
    register_op(f);

    OpSchema bd;
    bd.name = "conv_transpose2d_grad_data";
    bd.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2)
        op_error(n, "expects inputs (dy, w), got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_floats(n, in);
      Shape xs = shape_attr(n, "input_shape");
      Geom g = geom(n, xs, in[1].shape);
      check_dy(n, g, in[0]);
      return {TensorDesc{xs, in[0].dtype}};
    };
    bd.ref = ref_kernel<GradDataRef>();
    register_op(bd);

    OpSchema bw;
    bw.name = "conv_transpose2d_grad_weights";
    bw.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2)
        op_error(n, "expects inputs (dy, x), got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_floats(n, in);
      Shape ws = shape_attr(n, "weight_shape");
      Geom g = geom(n, in[1].shape, ws);
      check_dy(n, g, in[0]);
      std::vector<TensorDesc> out{TensorDesc{ws, in[0].dtype}};
      if (n.attrs.i("has_bias", 0)) out.push_back(TensorDesc{{g.K}, in[0].dtype});
      return out;
    };
    bw.ref = ref_kernel<GradWeightsRef>();
    register_op(bw);
  }
} registrar;

}  // namespace
}  // namespace cnn
