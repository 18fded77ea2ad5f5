// More activations (issue 13): clip (min, max: hardtanh, relu6, clamp), hardsigmoid (alpha, beta), hardswish,
// silu, gelu (approximate: 0 = erf, 1 = tanh), mish, elu (alpha), softplus (beta, threshold), erf, each with a
// *_grad op taking (dy, x); and prelu (x, weight [C] or [1]) with prelu_grad (dy, x, weight) -> (dx, dweight).
// The formulas are ops/activations_math.hpp's, shared with the cpu native loops and the cuda kernels.
// Forward ops are elementwise (in place allowed, cheap to recompute); the backward ops read the input x, so a
// forward that ran in place is still correct (liveness keeps x alive when backward reads it).
#include <cmath>

#include "core/op.hpp"
#include "ops/activations_math.hpp"

namespace cnn {
namespace {

void check_finite(const Node& n, const char* attr, double v) {
  if (!std::isfinite(v)) op_error(n, std::string(attr) + "=" + std::to_string(v) + " must be finite");
}

// Attribute checks shared by the forward and backward ops.
void check_attrs(const Node& n) {
  act::Params p = act::params_of(n.op, n.attrs);
  switch (p.kind) {
    case act::kClip:
      if (std::isnan(p.a) || std::isnan(p.b)) op_error(n, "min and max must not be NaN");
      break;
    case act::kHardsigmoid:
      check_finite(n, "alpha", p.a);
      check_finite(n, "beta", p.b);
      break;
    case act::kElu: check_finite(n, "alpha", p.a); break;
    case act::kSoftplus:
      check_finite(n, "beta", p.a);
      if (p.a == 0) op_error(n, "beta must not be 0");
      if (std::isnan(p.b)) op_error(n, "threshold must not be NaN");
      break;
    default: break;
  }
  if (n.attrs.has("approximate")) {
    int64_t ap = n.attrs.i("approximate", 0);
    if (ap != 0 && ap != 1) op_error(n, "approximate=" + std::to_string(ap) + " must be 0 (erf) or 1 (tanh)");
  }
}

std::vector<TensorDesc> same_as_input(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input, got " + std::to_string(in.size()));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
  check_attrs(n);
  return {in[0]};
}
std::vector<TensorDesc> grad_shape(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape != in[1].shape || !is_float(in[0].dtype))
    op_error(n, "expects (dy, x) float tensors of one shape, got " + descs_str(in));
  check_attrs(n);
  return {in[0]};
}

template <class T>
struct Fwd {
  static void run(const RefArgs<T>& a) {
    act::Params p = act::params_of(a.k.node.op, a.attrs());
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i) y[i] = act::fwd<T>(p.kind, x[i], T(p.a), T(p.b));
  }
};
template <class T>
struct Bwd {
  static void run(const RefArgs<T>& a) {
    act::Params p = act::params_of(a.k.node.op, a.attrs());
    const T* dy = a.in(0);
    const T* x = a.in(1);
    T* dx = a.out(0);
    for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i)
      dx[i] = dy[i] * act::deriv<T>(p.kind, x[i], T(p.a), T(p.b));
  }
};

void reg(const char* name) {
  std::string fwd = name, bwd = std::string(name) + "_grad";
  OpSchema f;
  f.name = fwd;
  f.infer = same_as_input;
  f.inplace = true;
  f.recompute = RecomputeClass::cheap;
  f.grad = [bwd](GradCtx& c) { c.set_dx(0, c.emit(bwd, {c.dy(0), c.input(0)}, c.node().attrs)[0]); };
  f.ref = ref_kernel<Fwd>();
  register_op(f);
  OpSchema b;
  b.name = bwd;
  b.infer = grad_shape;
  b.inplace = true;
  b.recompute = RecomputeClass::cheap;
  b.ref = ref_kernel<Bwd>();
  register_op(b);
}

// ---- prelu: y = x > 0 ? x : w[c] * x, c the channel (axis 1) of x, or w[0] for a weight of one value ----

// Channels and the elements per channel block (axis 1 of x; x of rank < 2 has one channel).
void prelu_dims(const Shape& x, int64_t* outer, int64_t* c, int64_t* inner) {
  *outer = x.empty() ? 1 : x[0];
  *c = x.size() >= 2 ? x[1] : 1;
  *inner = 1;
  for (size_t i = 2; i < x.size(); ++i) *inner *= x[i];
  if (x.size() < 2) *outer = numel(x);
}

void check_prelu_weight(const Node& n, const TensorDesc& x, const TensorDesc& w) {
  if (!is_float(x.dtype) || !is_float(w.dtype)) op_error(n, "expects float tensors, got " + descs_str({x, w}));
  if (x.shape.empty()) op_error(n, "x must have at least one dimension");
  int64_t c = x.shape.size() >= 2 ? x.shape[1] : 1;
  if (w.shape.size() != 1 || (w.shape[0] != 1 && w.shape[0] != c))
    op_error(n, "weight " + shape_str(w.shape) + " must be [1] or [" + std::to_string(c) +
                    "] (one value per channel, axis 1) for x " + shape_str(x.shape));
}

std::vector<TensorDesc> prelu_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2) op_error(n, "expects (x, weight), got " + std::to_string(in.size()) + " inputs");
  check_prelu_weight(n, in[0], in[1]);
  return {in[0]};
}
std::vector<TensorDesc> prelu_grad_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 3 || in[0].shape != in[1].shape)
    op_error(n, "expects (dy, x, weight) with dy shaped as x, got " + descs_str(in));
  check_prelu_weight(n, in[1], in[2]);
  return {in[1], in[2]};
}

template <class T>
struct PreluFwd {
  static void run(const RefArgs<T>& a) {
    const T* x = a.in(0);
    const T* w = a.in(1);
    T* y = a.out(0);
    int64_t outer, c, inner;
    prelu_dims(a.in_shape(0), &outer, &c, &inner);
    bool shared = numel(a.in_shape(1)) == 1;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < c; ++k) {
        T wk = w[shared ? 0 : k];
        for (int64_t i = 0; i < inner; ++i) {
          int64_t j = (o * c + k) * inner + i;
          y[j] = x[j] > T(0) ? x[j] : wk * x[j];
        }
      }
  }
};
// dx = dy * (x > 0 ? 1 : w), dw[k] = sum of dy * x over the elements of channel k with x <= 0 (PyTorch's rule),
// summed in double.
template <class T>
struct PreluBwd {
  static void run(const RefArgs<T>& a) {
    const T* dy = a.in(0);
    const T* x = a.in(1);
    const T* w = a.in(2);
    T* dx = a.out(0);
    T* dw = a.out(1);
    int64_t outer, c, inner;
    prelu_dims(a.in_shape(1), &outer, &c, &inner);
    bool shared = numel(a.in_shape(2)) == 1;
    double total = 0;
    for (int64_t k = 0; k < c; ++k) {
      T wk = w[shared ? 0 : k];
      double s = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          int64_t j = (o * c + k) * inner + i;
          if (x[j] > T(0)) {
            dx[j] = dy[j];
          } else {
            dx[j] = dy[j] * wk;
            s += double(dy[j]) * double(x[j]);
          }
        }
      if (shared)
        total += s;
      else
        dw[k] = T(s);
    }
    if (shared) dw[0] = T(total);
  }
};

void reg_prelu() {
  OpSchema f;
  f.name = "prelu";
  f.infer = prelu_infer;
  f.inplace = true;
  f.recompute = RecomputeClass::cheap;
  f.grad = [](GradCtx& c) {
    auto outs = c.emit("prelu_grad", {c.dy(0), c.input(0), c.input(1)}, c.node().attrs);
    if (c.need_dx(0)) c.set_dx(0, outs[0]);
    if (c.need_dx(1)) c.set_dx(1, outs[1]);
  };
  f.ref = ref_kernel<PreluFwd>();
  register_op(f);
  OpSchema b;
  b.name = "prelu_grad";
  b.infer = prelu_grad_infer;
  b.ref = ref_kernel<PreluBwd>();
  register_op(b);
}

struct Registrar {
  Registrar() {
    for (const char* n : {"clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu", "softplus", "erf"}) reg(n);
    reg_prelu();
  }
} registrar;

}  // namespace
}  // namespace cnn
