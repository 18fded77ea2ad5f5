// adaptive_avg_pool2d: x [N,C,H,W], attr output [OH, OW] (an int means square) -> y [N,C,OH,OW], with
// PyTorch's AdaptiveAvgPool2d windows: rows [floor(i*H/OH), ceil((i+1)*H/OH)), columns alike; windows may
// overlap (H % OH != 0) or repeat rows (OH > H). Backward adaptive_avg_pool2d_grad (dy; attrs output,
// input_shape) -> dx spreads each dy over its window divided by the window's size; it reads nothing else.
// cpu/adaptive_pool.cpp restates adaptive_window()'s two lines; tests hold both to torch.
#include "core/op.hpp"

namespace cnn {
namespace {

// [OH, OW] from attr 'output'.
Shape output_attr(const Node& n) {
  std::vector<int64_t> v = n.attrs.is("output", {});
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2) op_error(n, "attribute 'output' must be an int or [oh, ow], got " + shape_str(v));
  if (v[0] <= 0 || v[1] <= 0) op_error(n, "output size must be positive, got " + shape_str(v));
  return v;
}

// Window [begin, end) of output index i when `in` positions pool to `out`.
inline void adaptive_window(int64_t i, int64_t in, int64_t out, int64_t& begin, int64_t& end) {
  begin = (i * in) / out;
  end = ((i + 1) * in + out - 1) / out;
}

template <class T>
struct Fwd {
  static void run(const RefArgs<T>& a) {
    const Shape &xs = a.in_shape(0), &ys = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t h0, h1, w0, w1;
          adaptive_window(oh, H, OH, h0, h1);
          adaptive_window(ow, W, OW, w0, w1);
          double sum = 0;  // float64 at any T: a float sum stops growing at 2^24
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) sum += x[(nc * H + h) * W + w];
          y[(nc * OH + oh) * OW + ow] = T(sum / double((h1 - h0) * (w1 - w0)));
        }
  }
};

template <class T>
struct Bwd {
  static void run(const RefArgs<T>& a) {
    const Shape &ys = a.in_shape(0), &xs = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t i = 0; i < NC * H * W; ++i) dx[i] = 0;
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t h0, h1, w0, w1;
          adaptive_window(oh, H, OH, h0, h1);
          adaptive_window(ow, W, OW, w0, w1);
          const T d = dy[(nc * OH + oh) * OW + ow] / T((h1 - h0) * (w1 - w0));
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) dx[(nc * H + h) * W + w] += d;
        }
  }
};

std::vector<TensorDesc> fwd_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1)
    op_error(n, "expects 1 input x [N, C, H, W], got " + std::to_string(in.size()) + ": " + descs_str(in));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
  const Shape& x = in[0].shape;
  if (x.size() != 4) op_error(n, "expects x [N, C, H, W], got " + shape_str(x));
  Shape o = output_attr(n);
  return {TensorDesc{{x[0], x[1], o[0], o[1]}, in[0].dtype}};
}

std::vector<TensorDesc> bwd_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1 || !is_float(in[0].dtype)) op_error(n, "expects 1 float input dy, got " + descs_str(in));
  Shape xs = n.attrs.is("input_shape", {});
  if (xs.size() != 4) op_error(n, "attribute 'input_shape' must be [N, C, H, W], got " + shape_str(xs));
  Shape o = output_attr(n);
  Shape y{xs[0], xs[1], o[0], o[1]};
  if (in[0].shape != y)
    op_error(n, "dy must be " + shape_str(y) + " for input_shape " + shape_str(xs) + ", got " + shape_str(in[0].shape));
  return {TensorDesc{xs, in[0].dtype}};
}

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "adaptive_avg_pool2d";
    f.infer = fwd_infer;
    f.recompute = RecomputeClass::costly;
    f.grad = [](GradCtx& c) {
      Attrs a;
      a.ints["output"] = output_attr(c.node());
      a.ints["input_shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("adaptive_avg_pool2d_grad", {c.dy(0)}, a)[0]);
    };
    f.ref = ref_kernel<Fwd>();
    register_op(f);

    OpSchema b;
    b.name = "adaptive_avg_pool2d_grad";
    b.infer = bwd_infer;
    b.ref = ref_kernel<Bwd>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
