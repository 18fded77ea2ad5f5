// softmax: x [N, K] -> y [N, K] over axis 1 (the only axis accepted); may run in place; backward
// softmax_grad (dy, y) -> dx reads the output. softmax_cross_entropy: (logits [N, K] float, labels [N]
// int32) -> loss [1] = mean_n -log softmax(logits)[n, label_n], via log-sum-exp; a label outside [0, K)
// throws at run time. softmax_cross_entropy_grad (dloss [1], logits, labels) -> dlogits =
// (softmax - onehot) * dloss / N; labels get no gradient. Reference kernels sum rows (exp sums, dot products,
// the loss over the batch) in float64 for float and double alike.
#include <cmath>
#include <cstdint>

#include "core/op.hpp"

namespace cnn {
namespace {

void check_2d_float(const Node& n, const TensorDesc& d, const char* what) {
  if (!is_float(d.dtype) || d.shape.size() != 2)
    op_error(n, std::string(what) + " must be a 2-D float tensor [N, K], got " + shape_str(d.shape) + " " +
                    dtype_name(d.dtype));
}

std::vector<TensorDesc> infer_softmax(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input x [N, K], got " + std::to_string(in.size()) + ": " + descs_str(in));
  check_2d_float(n, in[0], "x");
  int64_t axis = n.attrs.i("axis", 1);
  if (axis != 1 && axis != -1)
    op_error(n, "axis must be 1 for x " + shape_str(in[0].shape) + ", got " + std::to_string(axis));
  return {in[0]};
}

std::vector<TensorDesc> infer_softmax_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape != in[1].shape || in[0].shape.size() != 2)
    op_error(n, "expects (dy, y) of one 2-D shape, got " + descs_str(in));
  return {in[0]};
}

void check_logits_labels(const Node& n, const TensorDesc& logits, const TensorDesc& labels) {
  check_2d_float(n, logits, "logits");
  if (labels.dtype != DType::i32 || labels.shape != Shape{logits.shape[0]})
    op_error(n, "labels must be int32 " + shape_str({logits.shape[0]}) + " to match logits " + shape_str(logits.shape) +
                    ", got " + shape_str(labels.shape) + " " + dtype_name(labels.dtype));
}

std::vector<TensorDesc> infer_sce(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2)
    op_error(
        n, "expects (logits [N, K], labels [N] int32), got " + std::to_string(in.size()) + " inputs: " + descs_str(in));
  check_logits_labels(n, in[0], in[1]);
  return {TensorDesc{{1}, in[0].dtype}};
}

std::vector<TensorDesc> infer_sce_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 3 || in[0].shape != Shape{1} || !is_float(in[0].dtype))
    op_error(n, "expects (dloss [1], logits [N, K], labels [N] int32), got " + descs_str(in));
  check_logits_labels(n, in[1], in[2]);
  return {in[1]};
}

void check_labels(const Node& n, const int32_t* labels, int64_t N, int64_t K) {
  for (int64_t i = 0; i < N; ++i)
    if (labels[i] < 0 || labels[i] >= K)
      op_error(n, "label " + std::to_string(labels[i]) + " at batch index " + std::to_string(i) +
                      " is out of range [0, " + std::to_string(K) + ")");
}

template <class T>
struct SoftmaxRef {
  static void run(const RefArgs<T>& a) {
    const T* x = a.in(0);
    T* y = a.out(0);
    const int64_t N = dim(a.in_shape(0), 0), K = dim(a.in_shape(0), 1);
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * K;
      T* yr = y + n * K;
      T m = xr[0];
      for (int64_t k = 1; k < K; ++k) m = xr[k] > m ? xr[k] : m;
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += (yr[k] = std::exp(xr[k] - m));
      for (int64_t k = 0; k < K; ++k) yr[k] = T(yr[k] / s);
    }
  }
};

template <class T>
struct SoftmaxGradRef {  // dx = y * (dy - sum_k dy_k y_k), per row
  static void run(const RefArgs<T>& a) {
    const T *dy = a.in(0), *y = a.in(1);
    T* dx = a.out(0);
    const int64_t N = dim(a.in_shape(0), 0), K = dim(a.in_shape(0), 1);
    for (int64_t n = 0; n < N; ++n) {
      double dot = 0;
      for (int64_t k = 0; k < K; ++k) dot += double(dy[n * K + k]) * double(y[n * K + k]);
      for (int64_t k = 0; k < K; ++k) dx[n * K + k] = y[n * K + k] * (dy[n * K + k] - T(dot));
    }
  }
};

template <class T>
struct SceRef {
  static void run(const RefArgs<T>& a) {
    const T* x = a.in(0);
    const int32_t* lab = a.template in<int32_t>(1);
    const int64_t N = dim(a.in_shape(0), 0), K = dim(a.in_shape(0), 1);
    check_labels(a.k.node, lab, N, K);
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * K;
      T m = xr[0];
      for (int64_t k = 1; k < K; ++k) m = xr[k] > m ? xr[k] : m;
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += std::exp(xr[k] - m);
      total += double(m) + std::log(s) - double(xr[lab[n]]);
    }
    a.out(0)[0] = T(total / double(N));
  }
};

template <class T>
struct SceGradRef {
  static void run(const RefArgs<T>& a) {
    const T g = a.in(0)[0];
    const T* x = a.in(1);
    const int32_t* lab = a.template in<int32_t>(2);
    T* dx = a.out(0);
    const int64_t N = dim(a.in_shape(1), 0), K = dim(a.in_shape(1), 1);
    check_labels(a.k.node, lab, N, K);
    const T scale = g / T(N);
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * K;
      T* dr = dx + n * K;
      T m = xr[0];
      for (int64_t k = 1; k < K; ++k) m = xr[k] > m ? xr[k] : m;
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += (dr[k] = std::exp(xr[k] - m));
      for (int64_t k = 0; k < K; ++k) dr[k] = T(dr[k] / s) * scale;
      dr[lab[n]] -= scale;
    }
  }
};

struct Registrar {
  Registrar() {
    OpSchema sm;
    sm.name = "softmax";
    sm.infer = infer_softmax;
    sm.inplace = true;
    sm.recompute = RecomputeClass::costly;
    sm.grad = [](GradCtx& c) { c.set_dx(0, c.emit("softmax_grad", {c.dy(0), c.output(0)}, Attrs{})[0]); };
    sm.ref = ref_kernel<SoftmaxRef>();
    register_op(sm);

    OpSchema smg;
    smg.name = "softmax_grad";
    smg.infer = infer_softmax_grad;
    smg.inplace = true;
    smg.ref = ref_kernel<SoftmaxGradRef>();
    register_op(smg);

    OpSchema ce;
    ce.name = "softmax_cross_entropy";
    ce.infer = infer_sce;
    ce.grad = [](GradCtx& c) {
      if (c.need_dx(0))
        c.set_dx(0, c.emit("softmax_cross_entropy_grad", {c.dy(0), c.input(0), c.input(1)}, Attrs{})[0]);
    };
    ce.ref = ref_kernel<SceRef>();
    register_op(ce);

    OpSchema ceg;
    ceg.name = "softmax_cross_entropy_grad";
    ceg.infer = infer_sce_grad;
    ceg.ref = ref_kernel<SceGradRef>();
    register_op(ceg);
  }
} registrar;

}  // namespace
}  // namespace cnn
