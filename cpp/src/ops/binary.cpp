// Broadcasting arithmetic (NumPy rules, ops/binary.hpp):
//   binary_add / binary_sub / binary_mul / binary_div (a, b): out = a op b, of the broadcast shape of a and b;
//   binary_scalar (x; attrs kind, value): out = x op value, kind 0 add (x + v), 1 sub (x - v), 2 rsub (v - x),
//     3 mul (x * v), 4 div (x / v), 5 rdiv (v / x);
//   sum_to (x; attrs shape, scale = 1): x summed over the dimensions along which `shape` broadcasts to x's shape,
//     times scale: the gradient of a broadcast operand, usable by any grad rule.
// The engine's `add` (ops/basic.cpp, one shape, what the fuse pass matches) is a different op.
// Gradients: a broadcast operand's gradient is the output gradient (times the other operand for mul, ...)
// reduced with sum_to; sum_to's own gradient broadcasts dy back (fill(scale) * dy). Forward ops are elementwise
// in output 0 and input 0 when they have one shape, so they may run in place (the planner checks the sizes).
// Reference kernels walk every output element through its multi-index; sum_to accumulates in double.
#include "ops/binary.hpp"

#include "core/op.hpp"

namespace cnn {
namespace {

std::vector<TensorDesc> infer_binary(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2) op_error(n, "expects 2 inputs (a, b), got " + std::to_string(in.size()));
  if (!is_float(in[0].dtype) || in[0].dtype != in[1].dtype)
    op_error(n, "expects two float tensors of one dtype, got " + descs_str(in));
  Shape out;
  if (!bcast::broadcast_shape(in[0].shape, in[1].shape, &out))
    op_error(n, "shapes " + shape_str(in[0].shape) + " and " + shape_str(in[1].shape) +
                    " do not broadcast together (NumPy rules: trailing dimensions equal or 1)");
  return {TensorDesc{out, in[0].dtype}};
}

// Offset of output element i in an operand with strides st (over out's dims).
inline int64_t offset_of(int64_t i, const Shape& out, const std::vector<int64_t>& st) {
  int64_t off = 0;
  for (size_t d = out.size(); d-- > 0;) {
    off += (i % out[d]) * st[d];
    i /= out[d];
  }
  return off;
}

template <int K>
struct BinaryRef {
  template <class T>
  struct Fn {
    static void run(const RefArgs<T>& a) {
      const Shape& out = a.out_shape(0);
      auto sa = bcast::strides_in(a.in_shape(0), out), sb = bcast::strides_in(a.in_shape(1), out);
      const T *x = a.in(0), *y = a.in(1);
      T* z = a.out(0);
      for (int64_t i = 0, n = numel(out); i < n; ++i)
        z[i] = bcast::apply<T>(K, x[offset_of(i, out, sa)], y[offset_of(i, out, sb)]);
    }
  };
};

template <class T>
struct ScalarRef {
  static void run(const RefArgs<T>& a) {
    const int kind = int(a.attrs().i("kind", 0));
    const T v = T(a.attrs().f("value", 0.0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) y[i] = bcast::apply<T>(kind, x[i], v);
  }
};

template <class T>
struct SumToRef {
  static void run(const RefArgs<T>& a) {
    const Shape& in = a.in_shape(0);
    const Shape& out = a.out_shape(0);
    auto st = bcast::strides_in(out, in);
    const double scale = a.attrs().f("scale", 1.0);
    std::vector<double> acc(size_t(numel(out)), 0.0);
    const T* x = a.in(0);
    for (int64_t i = 0, n = numel(in); i < n; ++i) acc[size_t(offset_of(i, in, st))] += double(x[i]);
    T* y = a.out(0);
    for (size_t j = 0; j < acc.size(); ++j) y[j] = T(acc[j] * scale);
  }
};

// The gradient g (of the output's shape) as the gradient of an operand of shape s: summed over the dimensions s
// broadcast along, times scale.
int reduce_to(GradCtx& c, int g, const Shape& s, double scale, const std::string& suffix) {
  if (c.desc(g).shape == s && scale == 1.0) return g;
  Attrs a;
  a.ints["shape"] = s;
  a.floats["scale"] = scale;
  return c.emit("sum_to", {g}, a, suffix)[0];
}

int emit_binary(GradCtx& c, const char* op, int x, int y, const std::string& suffix) {
  return c.emit(op, {x, y}, Attrs{}, suffix)[0];
}

int emit_scalar(GradCtx& c, int kind, double v, int x, const std::string& suffix) {
  Attrs a;
  a.ints["kind"] = {kind};
  a.floats["value"] = v;
  return c.emit("binary_scalar", {x}, a, suffix)[0];
}

void grad_binary(GradCtx& c, int kind) {
  const int dy = c.dy(0);
  if (dy < 0) return;
  const Shape sa = c.desc(c.input(0)).shape, sb = c.desc(c.input(1)).shape;
  if (c.need_dx(0)) {
    int g = dy;
    if (kind == bcast::kMul) g = emit_binary(c, "binary_mul", dy, c.input(1), "grad_a");
    if (kind == bcast::kDiv) g = emit_binary(c, "binary_div", dy, c.input(1), "grad_a");
    c.set_dx(0, reduce_to(c, g, sa, 1.0, "grad_a_sum"));
  }
  if (c.need_dx(1)) {
    int g = dy;
    double scale = kind == bcast::kSub || kind == bcast::kDiv ? -1.0 : 1.0;
    if (kind == bcast::kMul) g = emit_binary(c, "binary_mul", dy, c.input(0), "grad_b");
    if (kind == bcast::kDiv)  // d(a/b)/db = -(a/b)/b: -(dy * out) / b
      g = emit_binary(c, "binary_div", emit_binary(c, "binary_mul", dy, c.output(0), "grad_b_mul"), c.input(1),
                      "grad_b");
    c.set_dx(1, reduce_to(c, g, sb, scale, "grad_b_sum"));
  }
}

void grad_scalar(GradCtx& c) {
  const int dy = c.dy(0);
  if (dy < 0 || !c.need_dx(0)) return;
  const int kind = int(c.node().attrs.i("kind", 0));
  const double v = c.node().attrs.f("value", 0.0);
  switch (kind) {
    case bcast::kAdd:
    case bcast::kSub: c.set_dx(0, dy); break;
    case bcast::kRsub: c.set_dx(0, emit_scalar(c, bcast::kMul, -1.0, dy, "grad")); break;
    case bcast::kMul: c.set_dx(0, emit_scalar(c, bcast::kMul, v, dy, "grad")); break;
    case bcast::kDiv: c.set_dx(0, emit_scalar(c, bcast::kDiv, v, dy, "grad")); break;
    default: {  // d(v/x)/dx = -(v/x)/x: -(dy * out / x)
      int q = emit_binary(c, "binary_div", c.output(0), c.input(0), "grad_q");
      int g = emit_binary(c, "binary_mul", dy, q, "grad_mul");
      c.set_dx(0, emit_scalar(c, bcast::kMul, -1.0, g, "grad"));
    }
  }
}

template <int K>
void reg_binary(const char* name) {
  OpSchema s;
  s.name = name;
  s.infer = infer_binary;
  s.inplace = true;
  s.recompute = RecomputeClass::cheap;
  s.grad = [](GradCtx& c) { grad_binary(c, K); };
  s.ref = ref_kernel<BinaryRef<K>::template Fn>();
  s.flops = [](const std::vector<TensorDesc>&, const std::vector<TensorDesc>& out) {
    return double(numel(out[0].shape));
  };
  register_op(s);
}

struct Registrar {
  Registrar() {
    reg_binary<bcast::kAdd>("binary_add");
    reg_binary<bcast::kSub>("binary_sub");
    reg_binary<bcast::kMul>("binary_mul");
    reg_binary<bcast::kDiv>("binary_div");

    OpSchema sc;
    sc.name = "binary_scalar";
    sc.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects 1 input, got " + std::to_string(in.size()));
      if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
      const int64_t k = n.attrs.i("kind", -1);
      if (k < 0 || k > 5)
        op_error(n, "attribute 'kind' must be 0 add, 1 sub, 2 rsub, 3 mul, 4 div or 5 rdiv, got " +
                        (n.attrs.has("kind") ? std::to_string(k) : std::string("none")));
      return {in[0]};
    };
    sc.inplace = true;
    sc.recompute = RecomputeClass::cheap;
    sc.grad = grad_scalar;
    sc.ref = ref_kernel<ScalarRef>();
    sc.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
      return double(numel(in[0].shape));
    };
    register_op(sc);

    OpSchema st;
    st.name = "sum_to";
    st.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects 1 input, got " + std::to_string(in.size()));
      if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
      if (!n.attrs.ints.count("shape")) op_error(n, "missing attribute 'shape' (the shape to sum to)");
      const Shape s = n.attrs.is("shape", {});
      for (int64_t d : s)
        if (d < 1) op_error(n, "attribute 'shape' " + shape_str(s) + " must hold dimensions >= 1");
      if (!bcast::broadcasts_to(s, in[0].shape))
        op_error(n, "cannot sum " + shape_str(in[0].shape) + " to " + shape_str(s) +
                        " (the target must broadcast to the input: same rank or lower, each dimension 1 or equal)");
      return {TensorDesc{s, in[0].dtype}};
    };
    st.recompute = RecomputeClass::cheap;
    st.grad = [](GradCtx& c) {
      if (c.dy(0) < 0 || !c.need_dx(0)) return;
      Attrs f;
      f.ints["shape"] = c.desc(c.input(0)).shape;
      f.floats["value"] = c.node().attrs.f("scale", 1.0);
      int full = c.emit("fill", {}, f, "grad_fill")[0];
      c.set_dx(0, emit_binary(c, "binary_mul", full, c.dy(0), "grad"));
    };
    st.ref = ref_kernel<SumToRef>();
    st.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
      return double(numel(in[0].shape));
    };
    register_op(st);
  }
} registrar;

}  // namespace
}  // namespace cnn
