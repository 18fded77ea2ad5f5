// Elementwise losses with mean reduction (PyTorch semantics) -> loss [1]. mse_loss (pred, target):
// mean((pred - target)^2). bce_with_logits (logits, target): mean(max(x,0) - x*t + log1p(exp(-|x|))), stable
// for any x. Both inputs are float tensors of one shape and both are differentiable: the grad ops
// mse_loss_grad / bce_with_logits_grad take (dloss [1], a, b) and attr wrt (0: d/d a, 1: d/d b), one node per
// input that needs a gradient: mse 2(p-t)g/n and -2(p-t)g/n; bce (sigmoid(x)-t)g/n and -x g/n.
// Reference kernels are plain sequential loops in T, summing the terms in float64 (exact to float rounding at
// any size; a float sum of 2^26 terms was off by 20 %).
#include <algorithm>
#include <cmath>

#include "core/op.hpp"

namespace cnn {
namespace {

struct LossNames {
  const char *a, *b;
};
const LossNames kMse{"pred", "target"}, kBce{"logits", "target"};

void check_pair(const Node& n, const TensorDesc& a, const TensorDesc& b, const LossNames& names) {
  if (!is_float(a.dtype) || a.dtype != b.dtype)
    op_error(n, std::string(names.a) + " and " + names.b + " must be float tensors of one dtype, got " +
                    dtype_name(a.dtype) + " and " + dtype_name(b.dtype));
  if (a.shape != b.shape)
    op_error(n, std::string(names.b) + " must have " + names.a + "'s shape " + shape_str(a.shape) + ", got " +
                    shape_str(b.shape));
}

std::vector<TensorDesc> loss_infer(const Node& n, const std::vector<TensorDesc>& in, const LossNames& names) {
  if (in.size() != 2)
    op_error(n, std::string("expects (") + names.a + ", " + names.b + "), got " + std::to_string(in.size()) +
                    " inputs: " + descs_str(in));
  check_pair(n, in[0], in[1], names);
  return {TensorDesc{{1}, in[0].dtype}};
}

std::vector<TensorDesc> loss_grad_infer(const Node& n, const std::vector<TensorDesc>& in, const LossNames& names) {
  if (in.size() != 3 || in[0].shape != Shape{1} || !is_float(in[0].dtype))
    op_error(n, std::string("expects (dloss [1], ") + names.a + ", " + names.b + "), got " + descs_str(in));
  check_pair(n, in[1], in[2], names);
  int64_t wrt = n.attrs.i("wrt", 0);
  if (wrt != 0 && wrt != 1)
    op_error(n, "attribute 'wrt' must be 0 (" + std::string(names.a) + ") or 1 (" + names.b + "), got " +
                    std::to_string(wrt));
  return {in[1]};
}

template <class T>
T bce_term(T x, T t) {
  return std::max(x, T(0)) - x * t + std::log1p(std::exp(-std::abs(x)));
}

template <class T>
T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T>
struct MseRef {
  static void run(const RefArgs<T>& a) {
    const T *p = a.in(0), *t = a.in(1);
    const int64_t n = numel(a.in_shape(0));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double((p[i] - t[i]) * (p[i] - t[i]));
    a.out(0)[0] = T(s / double(n));
  }
};

template <class T>
struct MseGradRef {
  static void run(const RefArgs<T>& a) {
    const T *p = a.in(1), *t = a.in(2);
    const int64_t n = numel(a.in_shape(1));
    const T scale = (a.attrs().i("wrt", 0) ? T(-2) : T(2)) * a.in(0)[0] / T(n);
    T* d = a.out(0);
    for (int64_t i = 0; i < n; ++i) d[i] = scale * (p[i] - t[i]);
  }
};

template <class T>
struct BceRef {
  static void run(const RefArgs<T>& a) {
    const T *x = a.in(0), *t = a.in(1);
    const int64_t n = numel(a.in_shape(0));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(bce_term(x[i], t[i]));
    a.out(0)[0] = T(s / double(n));
  }
};

template <class T>
struct BceGradRef {
  static void run(const RefArgs<T>& a) {
    const T *x = a.in(1), *t = a.in(2);
    const int64_t n = numel(a.in_shape(1));
    const T scale = a.in(0)[0] / T(n);
    const bool wrt_target = a.attrs().i("wrt", 0) != 0;
    T* d = a.out(0);
    for (int64_t i = 0; i < n; ++i) d[i] = wrt_target ? -x[i] * scale : (sigmoid(x[i]) - t[i]) * scale;
  }
};

// One grad node per input that needs a gradient; they share dloss and both inputs.
void loss_grad(GradCtx& c, const char* grad_op) {
  for (int i = 0; i < 2; ++i) {
    if (!c.need_dx(i)) continue;
    Attrs a;
    a.ints["wrt"] = {i};
    c.set_dx(i, c.emit(grad_op, {c.dy(0), c.input(0), c.input(1)}, a, i ? "grad_target" : "grad")[0]);
  }
}

OpSchema schema(const char* name, const LossNames& names, bool grad_op, KernelFactory ref) {
  OpSchema s;
  s.name = name;
  if (grad_op)
    s.infer = [names](const Node& n, const std::vector<TensorDesc>& in) { return loss_grad_infer(n, in, names); };
  else
    s.infer = [names](const Node& n, const std::vector<TensorDesc>& in) { return loss_infer(n, in, names); };
  s.ref = std::move(ref);
  return s;
}

struct Registrar {
  Registrar() {
    OpSchema mse = schema("mse_loss", kMse, false, ref_kernel<MseRef>());
    mse.grad = [](GradCtx& c) { loss_grad(c, "mse_loss_grad"); };
    register_op(mse);
    register_op(schema("mse_loss_grad", kMse, true, ref_kernel<MseGradRef>()));

    OpSchema bce = schema("bce_with_logits", kBce, false, ref_kernel<BceRef>());
    bce.grad = [](GradCtx& c) { loss_grad(c, "bce_with_logits_grad"); };
    register_op(bce);
    register_op(schema("bce_with_logits_grad", kBce, true, ref_kernel<BceGradRef>()));
  }
} registrar;

}  // namespace
}  // namespace cnn
