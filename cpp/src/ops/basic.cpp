// Structural ops: add (same-shape elementwise sum, residuals), reshape (attr shape, one -1 allowed),
// flatten (attrs start_dim, end_dim; batch-size agnostic, so a graph can be re-shaped for another
// batch), fill (attrs shape, value; no inputs, seeds autodiff). reshape/flatten copy only when the
// planner did not alias output to input.
#include <algorithm>
#include <cstring>

#include "core/op.hpp"

namespace cnn {
namespace {

template <class T>
struct AddRef {
  static void run(const RefArgs<T>& a) {
    const T *x = a.in(0), *y = a.in(1);
    T* z = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) z[i] = x[i] + y[i];
  }
};
template <class T>
struct CopyRef {  // reshape: same bytes, new shape
  static void run(const RefArgs<T>& a) {
    if (a.r.out[0] != a.r.in[0]) std::memcpy(a.r.out[0], a.r.in[0], a.k.in[0].bytes());  // any dtype (int8 too)
  }
};
template <class T>
struct FillRef {
  static void run(const RefArgs<T>& a) {
    T v = T(a.attrs().f("value", 0.0));
    T* y = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) y[i] = v;
  }
};

Shape resolve_shape(const Node& n, const Shape& in, std::vector<int64_t> s) {
  int64_t known = 1;
  int neg = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (neg >= 0) op_error(n, "at most one -1 in shape " + shape_str(s));
      neg = int(i);
    } else if (s[i] <= 0) {
      op_error(n, "bad target shape " + shape_str(s));
    } else {
      if (known > (int64_t(1) << 62) / s[i]) op_error(n, "target shape " + shape_str(s) + " has too many elements");
      known *= s[i];
    }
  }
  int64_t total = numel(in);
  if (neg >= 0) {
    if (total % known) op_error(n, "cannot reshape " + shape_str(in) + " to " + shape_str(s));
    s[neg] = total / known;
  }
  if (numel(s) != total)
    op_error(n, "cannot reshape " + shape_str(in) + " (" + std::to_string(total) + " elements) to " + shape_str(s));
  return s;
}

struct Registrar {
  Registrar() {
    OpSchema add;
    add.name = "add";
    add.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 2) op_error(n, "expects 2 inputs");
      if (in[0].shape != in[1].shape || in[0].dtype != in[1].dtype)
        op_error(n, "inputs must have one shape and dtype, got " + descs_str(in));
      return {in[0]};
    };
    add.inplace = true;
    add.recompute = RecomputeClass::cheap;
    add.grad = [](GradCtx& c) {
      c.set_dx(0, c.dy(0));
      c.set_dx(1, c.dy(0));
    };
    add.ref = ref_kernel<AddRef>();
    register_op(add);

    OpSchema rs;
    rs.name = "reshape";
    rs.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects 1 input");
      return {TensorDesc{resolve_shape(n, in[0].shape, n.attrs.is("shape", {})), in[0].dtype}};
    };
    rs.inplace = true;
    rs.recompute = RecomputeClass::cheap;
    rs.grad = [](GradCtx& c) {
      Attrs a;
      a.ints["shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("reshape", {c.dy(0)}, a)[0]);
    };
    rs.ref = ref_kernel<CopyRef>();
    register_op(rs);

    OpSchema fl;
    fl.name = "flatten";
    fl.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects 1 input");
      const Shape& s = in[0].shape;
      int64_t r = int64_t(s.size());
      int64_t a = n.attrs.i("start_dim", 1), b = n.attrs.i("end_dim", -1);
      if (a < 0) a += r;
      if (b < 0) b += r;
      if (a < 0 || b >= r || a > b) op_error(n, "start_dim/end_dim out of range for input " + shape_str(s));
      Shape out(s.begin(), s.begin() + a);
      int64_t m = 1;
      for (int64_t i = a; i <= b; ++i) m *= s[i];
      out.push_back(m);
      out.insert(out.end(), s.begin() + b + 1, s.end());
      return {TensorDesc{out, in[0].dtype}};
    };
    fl.inplace = true;
    fl.recompute = RecomputeClass::cheap;
    fl.grad = [](GradCtx& c) {
      Attrs a;
      a.ints["shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("reshape", {c.dy(0)}, a)[0]);
    };
    fl.ref = ref_kernel<CopyRef>();
    register_op(fl);

    OpSchema fill;
    fill.name = "fill";
    fill.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (!in.empty()) op_error(n, "takes no inputs");
      return {TensorDesc{n.attrs.is("shape", {1}), DType::f32}};
    };
    fill.ref = ref_kernel<FillRef>();
    register_op(fill);
  }
} registrar;

}  // namespace
}  // namespace cnn
