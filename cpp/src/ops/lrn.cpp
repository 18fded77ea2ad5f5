// Local response normalization across channels, PyTorch's LocalResponseNorm(size, alpha, beta, k): x [N, C, H, W] ->
// y = x * D^-beta, D_c = k + alpha/size * sum of x_c'^2 over c' in [c - size/2, c + (size-1)/2] (zeros past the
// edges; alpha is divided by size even where the window is clipped). Attrs: size (int >= 1), alpha (1e-4), beta
// (0.75), k (1.0) as floats. Backward op: lrn_grad (dy, x) -> dx with the same attrs; it recomputes D from x, so the
// forward stays single-output. Reference kernels are plain loops (float, double) and allocate nothing.
#include <algorithm>
#include <cmath>

#include "core/op.hpp"

namespace cnn {
namespace {

struct Lrn {
  int64_t size, lo, hi;  // window [c - lo, c + hi]
  double alpha, beta, k;
};

Lrn lrn_attrs(const Node& n) {
  for (const char* f : {"alpha", "beta", "k"})
    if (n.attrs.ints.count(f))
      op_error(n, std::string("attribute '") + f + "' must be a float, got the integer list " +
                      shape_str(n.attrs.ints.at(f)));
  if (!n.attrs.ints.count("size")) op_error(n, "missing attribute 'size' (the number of neighbouring channels)");
  std::vector<int64_t> sz = n.attrs.ints.at("size");
  if (sz.size() != 1 || sz[0] < 1) op_error(n, "attribute 'size' must be one integer >= 1, got " + shape_str(sz));
  return {sz[0], sz[0] / 2, (sz[0] - 1) / 2, n.attrs.f("alpha", 1e-4), n.attrs.f("beta", 0.75), n.attrs.f("k", 1.0)};
}

void check_x(const Node& n, const TensorDesc& x) {
  if (!is_float(x.dtype)) op_error(n, std::string("expects a float x, got ") + dtype_name(x.dtype));
  if (x.shape.size() != 4) op_error(n, "x must be 4-D [N, C, H, W], got " + shape_str(x.shape));
}

// ---- naive kernels ----

// D at (n, c, i) of a plane-major tensor with C channels of HW elements each.
template <class T>
T lrn_denominator(const T* x, const Lrn& p, int64_t C, int64_t HW, int64_t n, int64_t c, int64_t i) {
  T sum = 0;
  for (int64_t cc = std::max<int64_t>(c - p.lo, 0); cc <= std::min(c + p.hi, C - 1); ++cc) {
    T v = x[(n * C + cc) * HW + i];
    sum += v * v;
  }
  return T(p.k) + T(p.alpha) / T(p.size) * sum;
}

template <class T>
void lrn_forward(T* out, const T* inp, const Lrn& p, int64_t N, int64_t C, int64_t HW) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t o = (n * C + c) * HW + i;
        out[o] = inp[o] * std::pow(lrn_denominator(inp, p, C, HW, n, c, i), T(-p.beta));
      }
}

// dx_j = dy_j D_j^-beta - 2 beta alpha/size x_j sum_{c : j in window(c)} dy_c x_c D_c^(-beta-1);
// j lies in window(c) exactly when c is in [j - hi, j + lo].
template <class T>
void lrn_backward(T* dinp, const T* dout, const T* inp, const Lrn& p, int64_t N, int64_t C, int64_t HW) {
  const T coef = T(2 * p.beta * p.alpha / double(p.size));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < C; ++j)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t o = (n * C + j) * HW + i;
        T acc = 0;
        for (int64_t c = std::max<int64_t>(j - p.hi, 0); c <= std::min(j + p.lo, C - 1); ++c) {
          int64_t oc = (n * C + c) * HW + i;
          acc += dout[oc] * inp[oc] * std::pow(lrn_denominator(inp, p, C, HW, n, c, i), T(-p.beta - 1));
        }
        dinp[o] = dout[o] * std::pow(lrn_denominator(inp, p, C, HW, n, j, i), T(-p.beta)) - coef * inp[o] * acc;
      }
}

template <class T>
struct FwdRef {  // x -> y
  static void run(const RefArgs<T>& a) {
    const Shape& s = a.in_shape(0);
    lrn_forward<T>(a.out(0), a.in(0), lrn_attrs(a.k.node), s[0], s[1], s[2] * s[3]);
  }
};
template <class T>
struct GradRef {  // (dy, x) -> dx
  static void run(const RefArgs<T>& a) {
    const Shape& s = a.in_shape(1);
    lrn_backward<T>(a.out(0), a.in(0), a.in(1), lrn_attrs(a.k.node), s[0], s[1], s[2] * s[3]);
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "lrn";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects one input x, got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_x(n, in[0]);
      lrn_attrs(n);
      return {in[0]};
    };
    f.recompute = RecomputeClass::costly;
    f.grad = [](GradCtx& c) { c.set_dx(0, c.emit("lrn_grad", {c.dy(0), c.input(0)}, c.node().attrs)[0]); };
    f.ref = ref_kernel<FwdRef>();
    register_op(f);

    OpSchema b;
    b.name = "lrn_grad";
    b.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2)
        op_error(n, "expects inputs (dy, x), got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_x(n, in[1]);
      lrn_attrs(n);
      if (in[0].shape != in[1].shape || in[0].dtype != in[1].dtype)
        op_error(n, "dy expects x's shape " + shape_str(in[1].shape) + " " + dtype_name(in[1].dtype) + ", got " +
                        shape_str(in[0].shape) + " " + dtype_name(in[0].dtype));
      return {in[1]};
    };
    b.ref = ref_kernel<GradRef>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
