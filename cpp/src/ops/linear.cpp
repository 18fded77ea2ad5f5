// Fully connected layer, PyTorch layout: linear (x [N, IN], w [OUT, IN], optional b [OUT]) -> y [N, OUT],
// y = x w^T + b. Backward: linear_grad_data (dy, w) -> dx [N, IN]; linear_grad_weights (dy, x; attr
// has_bias) -> dw [OUT, IN] (+ db [OUT] when has_bias). Backward reads the inputs x and w, never y.
// Reference kernels accumulate in T (float or double) with plain row-major loops.
#include "core/op.hpp"

namespace cnn {
namespace {

void expect_float(const Node& n, const TensorDesc& d, const char* what) {
  if (!is_float(d.dtype))
    op_error(n, std::string(what) + " must be a float tensor, got " + shape_str(d.shape) + " " + dtype_name(d.dtype));
}

std::vector<TensorDesc> infer_linear(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 && in.size() != 3)
    op_error(n, "expects (x [N, IN], w [OUT, IN]) or (x, w, b [OUT]), got " + std::to_string(in.size()) +
                    " inputs: " + descs_str(in));
  const char* names[] = {"x", "w", "b"};
  for (size_t i = 0; i < in.size(); ++i) expect_float(n, in[i], names[i]);
  const Shape &x = in[0].shape, &w = in[1].shape;
  if (x.size() != 2) op_error(n, "x must be 2-D [N, IN], got " + shape_str(x) + " (flatten first)");
  if (w.size() != 2) op_error(n, "w must be 2-D [OUT, IN], got " + shape_str(w));
  if (w[1] != x[1])
    op_error(n, "x " + shape_str(x) + " has IN = " + std::to_string(x[1]) + " but w " + shape_str(w) +
                    " expects IN = " + std::to_string(w[1]));
  if (in.size() == 3 && in[2].shape != Shape{w[0]})
    op_error(n, "b must be " + shape_str({w[0]}) + " to match w " + shape_str(w) + ", got " + shape_str(in[2].shape));
  return {TensorDesc{{x[0], w[0]}, in[0].dtype}};
}

std::vector<TensorDesc> infer_grad_data(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape.size() != 2 || in[1].shape.size() != 2 || in[0].shape[1] != in[1].shape[0])
    op_error(n, "expects (dy [N, OUT], w [OUT, IN]), got " + descs_str(in));
  return {TensorDesc{{in[0].shape[0], in[1].shape[1]}, in[0].dtype}};
}

std::vector<TensorDesc> infer_grad_weights(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape.size() != 2 || in[1].shape.size() != 2 || in[0].shape[0] != in[1].shape[0])
    op_error(n, "expects (dy [N, OUT], x [N, IN]), got " + descs_str(in));
  int64_t out = in[0].shape[1], inf = in[1].shape[1];
  std::vector<TensorDesc> r{TensorDesc{{out, inf}, in[0].dtype}};
  if (n.attrs.i("has_bias", 0)) r.push_back(TensorDesc{{out}, in[0].dtype});
  return r;
}

template <class T>
struct LinearRef {
  static void run(const RefArgs<T>& a) {
    const T *x = a.in(0), *w = a.in(1);
    const T* b = a.k.in.size() == 3 ? a.in(2) : nullptr;
    T* y = a.out(0);
    const int64_t N = dim(a.in_shape(0), 0), IN = dim(a.in_shape(0), 1), OUT = dim(a.in_shape(1), 0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < OUT; ++o) {
        T s = b ? b[o] : T(0);
        for (int64_t i = 0; i < IN; ++i) s += x[n * IN + i] * w[o * IN + i];
        y[n * OUT + o] = s;
      }
  }
};

template <class T>
struct GradDataRef {  // dx[n, i] = sum_o dy[n, o] w[o, i]
  static void run(const RefArgs<T>& a) {
    const T *dy = a.in(0), *w = a.in(1);
    T* dx = a.out(0);
    const int64_t N = dim(a.in_shape(0), 0), OUT = dim(a.in_shape(0), 1), IN = dim(a.in_shape(1), 1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < IN; ++i) {
        T s = 0;
        for (int64_t o = 0; o < OUT; ++o) s += dy[n * OUT + o] * w[o * IN + i];
        dx[n * IN + i] = s;
      }
  }
};

template <class T>
struct GradWeightsRef {  // dw[o, i] = sum_n dy[n, o] x[n, i]; db[o] = sum_n dy[n, o]
  static void run(const RefArgs<T>& a) {
    const T *dy = a.in(0), *x = a.in(1);
    T* dw = a.out(0);
    T* db = a.k.out.size() == 2 ? a.out(1) : nullptr;
    const int64_t N = dim(a.in_shape(0), 0), OUT = dim(a.in_shape(0), 1), IN = dim(a.in_shape(1), 1);
    for (int64_t o = 0; o < OUT; ++o) {
      for (int64_t i = 0; i < IN; ++i) {
        T s = 0;
        for (int64_t n = 0; n < N; ++n) s += dy[n * OUT + o] * x[n * IN + i];
        dw[o * IN + i] = s;
      }
      if (db) {
        T s = 0;
        for (int64_t n = 0; n < N; ++n) s += dy[n * OUT + o];
        db[o] = s;
      }
    }
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "linear";
    f.infer = infer_linear;
    f.recompute = RecomputeClass::costly;
    f.grad = [](GradCtx& c) {
      const bool has_bias = c.node().inputs.size() == 3;
      if (c.need_dx(0)) c.set_dx(0, c.emit("linear_grad_data", {c.dy(0), c.input(1)}, Attrs{}, "grad_data")[0]);
      if (c.need_dx(1) || (has_bias && c.need_dx(2))) {
        Attrs a;
        a.ints["has_bias"] = {has_bias ? 1 : 0};
        std::vector<int> g = c.emit("linear_grad_weights", {c.dy(0), c.input(0)}, a, "grad_weights");
        c.set_dx(1, g[0]);
        if (has_bias) c.set_dx(2, g[1]);
      }
    };
    f.ref = ref_kernel<LinearRef>();
    f.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(out[0], in[1]);
    };
    register_op(f);

    OpSchema gd;
    gd.name = "linear_grad_data";
    gd.infer = infer_grad_data;
    gd.ref = ref_kernel<GradDataRef>();
    gd.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(in[0], in[1]);
    };
    register_op(gd);

    OpSchema gw;
    gw.name = "linear_grad_weights";
    gw.infer = infer_grad_weights;
    gw.ref = ref_kernel<GradWeightsRef>();
    gw.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(in[0], out[0]);
    };
    register_op(gw);
  }
} registrar;

}  // namespace
}  // namespace cnn
