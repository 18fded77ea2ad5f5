// Activations: relu, sigmoid, tanh, leaky_relu (attr negative_slope) and their *_grad ops.
// Forward: same shape out; may run in place. Backward of relu/sigmoid/tanh reads the output,
// leaky_relu's reads the input (a negative slope makes the output ambiguous).
#include <cmath>

#include "core/op.hpp"

namespace cnn {
namespace {

std::vector<TensorDesc> same_as_input(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input, got " + std::to_string(in.size()));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
  return {in[0]};
}
std::vector<TensorDesc> grad_shape(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape != in[1].shape)
    op_error(n, "expects (dy, saved) of one shape, got " + descs_str(in));
  return {in[0]};
}

template <class T>
T act(int kind, T x, double slope) {
  switch (kind) {
    case 0: return x > 0 ? x : T(0);
    case 1: return T(1) / (T(1) + std::exp(-x));
    case 2: return std::tanh(x);
    default: return x > 0 ? x : T(slope) * x;
  }
}
// derivative from the saved tensor s (output for kinds 0-2, input for leaky_relu)
template <class T>
T dact(int kind, T s, double slope) {
  switch (kind) {
    case 0: return s > 0 ? T(1) : T(0);
    case 1: return s * (T(1) - s);
    case 2: return T(1) - s * s;
    default: return s > 0 ? T(1) : T(slope);
  }
}

template <int Kind>
struct Fwd {
  template <class T>
  struct K {
    static void run(const RefArgs<T>& a) {
      const T* x = a.in(0);
      T* y = a.out(0);
      double slope = a.attrs().f("negative_slope", 0.01);
      for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i) y[i] = act<T>(Kind, x[i], slope);
    }
  };
};
template <int Kind>
struct Bwd {
  template <class T>
  struct K {
    static void run(const RefArgs<T>& a) {
      const T* dy = a.in(0);
      const T* s = a.in(1);
      T* dx = a.out(0);
      double slope = a.attrs().f("negative_slope", 0.01);
      for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i) dx[i] = dy[i] * dact<T>(Kind, s[i], slope);
    }
  };
};

template <int Kind>
void reg(const char* name, bool from_output) {
  std::string fwd = name, bwd = std::string(name) + "_grad";
  OpSchema f;
  f.name = fwd;
  f.infer = same_as_input;
  f.inplace = true;
  f.recompute = RecomputeClass::cheap;
  f.grad = [bwd, from_output](GradCtx& c) {
    Attrs a = c.node().attrs;
    int saved = from_output ? c.output(0) : c.input(0);
    c.set_dx(0, c.emit(bwd, {c.dy(0), saved}, a)[0]);
  };
  f.ref = ref_kernel<Fwd<Kind>::template K>();
  register_op(f);
  OpSchema b;
  b.name = bwd;
  b.infer = grad_shape;
  b.inplace = true;
  b.ref = ref_kernel<Bwd<Kind>::template K>();
  register_op(b);
}

struct Registrar {
  Registrar() {
    reg<0>("relu", true);
    reg<1>("sigmoid", true);
    reg<2>("tanh", true);
    reg<3>("leaky_relu", false);
  }
} registrar;

}  // namespace
}  // namespace cnn
