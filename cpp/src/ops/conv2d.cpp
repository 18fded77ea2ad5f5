// 2-D convolution, PyTorch conventions: x [N, C, H, W], w [K, C/groups, R, S], optional b [K] -> y [N, K, OH, OW];
// attrs stride, padding (symmetric), dilation (1 = none), 1 or 2 ints each, and groups. Backward ops:
// conv2d_grad_data (dy, w) -> dx and conv2d_grad_weights (dy, x) -> dw [, db], carrying the forward attrs plus
// input_shape / weight_shape, has_bias. Shape errors name the node and expected vs given shapes. Reference
// kernels are plain loops (float, double); outputs are zeroed then accumulated with +=.
#include <array>
#include <cstring>

#include "core/op.hpp"

namespace cnn {
namespace {

struct Geom {
  int64_t N, C, H, W, K, R, S, OH, OW, G, sh, sw, ph, pw, dh, dw;
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  Shape out() const { return {N, K, OH, OW}; }
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

int64_t out_dim(int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
  int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  return span < 0 ? -((-span + stride - 1) / stride) + 1 : span / stride + 1;
}

// Validates x and w against the attrs and computes the output size.
Geom geom(const Node& n, const Shape& x, const Shape& w) {
  if (x.size() != 4) op_error(n, "x must be 4-D [N, C, H, W], got " + shape_str(x));
  if (w.size() != 4) op_error(n, "w must be 4-D [K, C/groups, R, S], got " + shape_str(w));
  auto st = pair_attr(n, "stride", 1, 1), pd = pair_attr(n, "padding", 0, 0), dl = pair_attr(n, "dilation", 1, 1);
  int64_t G = n.attrs.i("groups", 1);
  if (G < 1) op_error(n, "groups must be >= 1, got " + std::to_string(G));
  Geom g{x[0], x[1], x[2], x[3], w[0], w[2], w[3], 0, 0, G, st[0], st[1], pd[0], pd[1], dl[0], dl[1]};
  if (g.C % G)
    op_error(
        n, "x " + shape_str(x) + ": C = " + std::to_string(g.C) + " is not divisible by groups = " + std::to_string(G));
  if (g.K % G)
    op_error(
        n, "w " + shape_str(w) + ": K = " + std::to_string(g.K) + " is not divisible by groups = " + std::to_string(G));
  if (w[1] != g.Cg())
    op_error(n, "w expects [K, C/groups, R, S] = " + shape_str({g.K, g.Cg(), g.R, g.S}) + " for x " + shape_str(x) +
                    " and groups = " + std::to_string(G) + ", got " + shape_str(w));
  g.OH = out_dim(g.H, g.ph, g.dh, g.R, g.sh);
  g.OW = out_dim(g.W, g.pw, g.dw, g.S, g.sw);
  if (g.OH <= 0 || g.OW <= 0)
    op_error(n, "output [N, K, OH, OW] = " + shape_str(g.out()) + " is empty: x " + shape_str(x) + ", w " +
                    shape_str(w) + ", stride " + shape_str({g.sh, g.sw}) + ", padding " + shape_str({g.ph, g.pw}) +
                    ", dilation " + shape_str({g.dh, g.dw}));
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
void conv2d_forward(T* out, const T* inp, const T* weight, const T* bias, const Geom& g) {
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t c0 = k / g.Kg() * g.Cg();
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          T acc = bias ? bias[k] : T(0);
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t ih = oh * g.sh - g.ph + r * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t iw = ow * g.sw - g.pw + s * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                acc += inp[((n * g.C + c0 + c) * g.H + ih) * g.W + iw] * weight[((k * g.Cg() + c) * g.R + r) * g.S + s];
              }
            }
          out[((n * g.K + k) * g.OH + oh) * g.OW + ow] = acc;
        }
    }
}

template <class T>
void conv2d_backward_data(T* dinp, const T* dout, const T* weight, const Geom& g) {
  std::memset(dinp, 0, sizeof(T) * size_t(g.N * g.C * g.H * g.W));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t c0 = k / g.Kg() * g.Cg();
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          T d = dout[((n * g.K + k) * g.OH + oh) * g.OW + ow];
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t ih = oh * g.sh - g.ph + r * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t iw = ow * g.sw - g.pw + s * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                dinp[((n * g.C + c0 + c) * g.H + ih) * g.W + iw] += d * weight[((k * g.Cg() + c) * g.R + r) * g.S + s];
              }
            }
        }
    }
}

template <class T>
void conv2d_backward_weights(T* dweight, T* dbias, const T* dout, const T* inp, const Geom& g) {
  std::memset(dweight, 0, sizeof(T) * size_t(g.K * g.Cg() * g.R * g.S));
  if (dbias) std::memset(dbias, 0, sizeof(T) * size_t(g.K));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t c0 = k / g.Kg() * g.Cg();
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          T d = dout[((n * g.K + k) * g.OH + oh) * g.OW + ow];
          if (dbias) dbias[k] += d;
          for (int64_t c = 0; c < g.Cg(); ++c)
            for (int64_t r = 0; r < g.R; ++r) {
              int64_t ih = oh * g.sh - g.ph + r * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t iw = ow * g.sw - g.pw + s * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                dweight[((k * g.Cg() + c) * g.R + r) * g.S + s] += d * inp[((n * g.C + c0 + c) * g.H + ih) * g.W + iw];
              }
            }
        }
    }
}

template <class T>
struct FwdRef {
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.in_shape(0), a.in_shape(1));
    conv2d_forward<T>(a.out(0), a.in(0), a.in(1), a.k.in.size() > 2 ? a.in(2) : nullptr, g);
  }
};
template <class T>
struct GradDataRef {  // (dy, w) -> dx
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.out_shape(0), a.in_shape(1));
    conv2d_backward_data<T>(a.out(0), a.in(0), a.in(1), g);
  }
};
template <class T>
struct GradWeightsRef {  // (dy, x) -> dw [, db]
  static void run(const RefArgs<T>& a) {
    Geom g = geom(a.k.node, a.in_shape(1), a.out_shape(0));
    conv2d_backward_weights<T>(a.out(0), a.k.out.size() > 1 ? a.out(1) : nullptr, a.in(0), a.in(1), g);
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "conv2d";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2 && in.size() != 3)
        op_error(n, "expects inputs (x, w) or (x, w, b), got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_floats(n, in);
      Geom g = geom(n, in[0].shape, in[1].shape);
      if (in.size() == 3 && in[2].shape != Shape{g.K})
        op_error(n, "b expects [K] = " + shape_str({g.K}) + " for w " + shape_str(in[1].shape) + ", got " +
                        shape_str(in[2].shape));
      return {TensorDesc{g.out(), in[0].dtype}};
    };
    f.recompute = RecomputeClass::costly;
    f.grad = [](GradCtx& c) {
      const Attrs fa = c.node().attrs;  // a copy: emit() may move the graph's nodes
      bool bias = c.node().inputs.size() > 2;
      if (c.need_dx(0)) {
        Attrs a = fa;
        a.ints["input_shape"] = c.desc(c.input(0)).shape;
        c.set_dx(0, c.emit("conv2d_grad_data", {c.dy(0), c.input(1)}, a, "grad_data")[0]);
      }
      bool db = bias && c.need_dx(2);
      if (c.need_dx(1) || db) {
        Attrs a = fa;
        a.ints["weight_shape"] = c.desc(c.input(1)).shape;
        a.ints["has_bias"] = {db ? 1 : 0};
        std::vector<int> o = c.emit("conv2d_grad_weights", {c.dy(0), c.input(0)}, a, "grad_weights");
        if (c.need_dx(1)) c.set_dx(1, o[0]);
        if (db) c.set_dx(2, o[1]);
      }
    };
    f.ref = ref_kernel<FwdRef>();
    f.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(out[0], in[1]);
    };
    register_op(f);

    OpSchema bd;
    bd.name = "conv2d_grad_data";
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
    bd.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(in[0], in[1]);
    };
    register_op(bd);

    OpSchema bw;
    bw.name = "conv2d_grad_weights";
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
    bw.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(in[0], out[0]);
    };
    register_op(bw);
  }
} registrar;

}  // namespace
}  // namespace cnn
