// dropout: x; attrs p in [0, 1) (default 0.5), training 0/1 (default 1). training=1 -> (y = x * mask / (1 - p),
// mask uint8 of x's shape), mask drawn by dropout.hpp's counter-based RNG; training=0 -> y = x (a copy).
// May run in place. Backward: dropout_grad (dy, mask; attr p) -> dx = dy * mask / (1 - p), reading the
// mask output (the op's workspace); with training=0 the gradient passes through unchanged.
#include <cstring>

#include "core/dropout_mask.hpp"

namespace cnn {
namespace {

bool read_training(const Node& n) {
  int64_t t = n.attrs.i("training", 1);
  if (t != 0 && t != 1) op_error(n, "training must be 0 or 1, got " + std::to_string(t));
  return t == 1;
}

std::vector<TensorDesc> infer_dropout(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input x, got " + std::to_string(in.size()) + ": " + descs_str(in));
  if (!is_float(in[0].dtype))
    op_error(n, "x must be a float tensor, got " + shape_str(in[0].shape) + " " + dtype_name(in[0].dtype));
  dropout::read_p(n);
  if (!read_training(n)) return {in[0]};
  return {in[0], TensorDesc{in[0].shape, DType::u8}};
}

std::vector<TensorDesc> infer_dropout_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || !is_float(in[0].dtype) || in[1].dtype != DType::u8 || in[0].shape != in[1].shape)
    op_error(n, "expects (dy float, mask uint8) of one shape, got " + descs_str(in));
  dropout::read_p(n);
  return {in[0]};
}

template <class T>
struct DropoutRef {
  static void run(const RefArgs<T>& a) {
    const T* x = a.in(0);
    T* y = a.out(0);
    const int64_t n = numel(a.in_shape(0));
    if (a.k.out.size() == 1) {
      if (a.r.out[0] != a.r.in[0]) std::memcpy(y, x, size_t(n) * sizeof(T));
      return;
    }
    const double p = dropout::read_p(a.k.node);
    const uint64_t key = dropout::stream_key(a.r.seed, a.r.step, a.k.node.name);
    const uint64_t thr = dropout::drop_threshold(p);
    const T scale = T(1.0 / (1.0 - p));
    uint8_t* mask = a.template out<uint8_t>(1);
    for (int64_t i = 0; i < n; ++i) {
      mask[i] = dropout::keep(key, i, thr);
      y[i] = x[i] * (T(mask[i]) * scale);
    }
  }
};

template <class T>
struct DropoutGradRef {
  static void run(const RefArgs<T>& a) {
    const T* dy = a.in(0);
    const uint8_t* mask = a.template in<uint8_t>(1);
    T* dx = a.out(0);
    const T scale = T(1.0 / (1.0 - dropout::read_p(a.k.node)));
    for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i) dx[i] = dy[i] * (T(mask[i]) * scale);
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "dropout";
    f.infer = infer_dropout;
    f.inplace = true;
    f.recompute = RecomputeClass::never;  // random: a rerun would draw another mask
    f.grad = [](GradCtx& c) {
      if (c.node().outputs.size() == 1) {
        c.set_dx(0, c.dy(0));
        return;
      }
      Attrs a;
      a.floats["p"] = dropout::read_p(c.node());
      c.set_dx(0, c.emit("dropout_grad", {c.dy(0), c.output(1)}, a)[0]);
    };
    f.ref = ref_kernel<DropoutRef>();
    register_op(f);

    OpSchema b;
    b.name = "dropout_grad";
    b.infer = infer_dropout_grad;
    b.inplace = true;
    b.ref = ref_kernel<DropoutGradRef>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
