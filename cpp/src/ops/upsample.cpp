// Nearest-neighbour upsampling by integer factors, PyTorch's Upsample(scale_factor=s, mode='nearest'):
// x [N, C, H, W] -> y [N, C, H*sh, W*sw] with y[n, c, oh, ow] = x[n, c, oh / sh, ow / sw]. Attr scale: [sh, sw] (or
// one int for both), integers >= 1, required. Backward op: upsample_nearest2d_grad (dy; attrs scale, input_shape) ->
// dx, each element the sum of its sh x sw block of dy. Shape errors name the node and expected vs given shapes.
// Reference kernels are plain loops (float, double) that write every output element.
#include <array>

#include "core/op.hpp"

namespace cnn {
namespace {

std::array<int64_t, 2> scale_attr(const Node& n) {
  auto it = n.attrs.ints.find("scale");
  if (it == n.attrs.ints.end()) op_error(n, "missing attribute 'scale' ([sh, sw], integers >= 1)");
  const std::vector<int64_t>& v = it->second;
  if (v.empty() || v.size() > 2 || v[0] < 1 || v.back() < 1)
    op_error(n, "attribute 'scale' must be 1 or 2 integers >= 1, got " + shape_str(v));
  return {v[0], v.back()};
}

Shape out_shape(const Node& n, const Shape& x) {
  if (x.size() != 4) op_error(n, "x must be 4-D [N, C, H, W], got " + shape_str(x));
  auto s = scale_attr(n);
  return {x[0], x[1], x[2] * s[0], x[3] * s[1]};
}

void check_float(const Node& n, const TensorDesc& d, const char* what) {
  if (!is_float(d.dtype)) op_error(n, std::string("expects a float ") + what + ", got " + dtype_name(d.dtype));
}

// ---- naive kernels ----

template <class T>
void upsample_forward(T* out, const T* inp, int64_t NC, int64_t H, int64_t W, int64_t sh, int64_t sw) {
  const int64_t OH = H * sh, OW = W * sw;
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) out[(p * OH + oh) * OW + ow] = inp[(p * H + oh / sh) * W + ow / sw];
}

template <class T>
void upsample_backward(T* dinp, const T* dout, int64_t NC, int64_t H, int64_t W, int64_t sh, int64_t sw) {
  const int64_t OH = H * sh, OW = W * sw;
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        T acc = 0;
        for (int64_t i = 0; i < sh; ++i)
          for (int64_t j = 0; j < sw; ++j) acc += dout[(p * OH + h * sh + i) * OW + w * sw + j];
        dinp[(p * H + h) * W + w] = acc;
      }
}

template <class T>
struct FwdRef {  // x -> y
  static void run(const RefArgs<T>& a) {
    auto s = scale_attr(a.k.node);
    const Shape& x = a.in_shape(0);
    upsample_forward<T>(a.out(0), a.in(0), x[0] * x[1], x[2], x[3], s[0], s[1]);
  }
};
template <class T>
struct GradRef {  // dy -> dx
  static void run(const RefArgs<T>& a) {
    auto s = scale_attr(a.k.node);
    const Shape& x = a.out_shape(0);
    upsample_backward<T>(a.out(0), a.in(0), x[0] * x[1], x[2], x[3], s[0], s[1]);
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "upsample_nearest2d";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects one input x, got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_float(n, in[0], "x");
      return {TensorDesc{out_shape(n, in[0].shape), in[0].dtype}};
    };
    f.grad = [](GradCtx& c) {
      Attrs a;
      a.ints["scale"] = c.node().attrs.ints.at("scale");
      a.ints["input_shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("upsample_nearest2d_grad", {c.dy(0)}, a)[0]);
    };
    f.recompute = RecomputeClass::cheap;
    f.ref = ref_kernel<FwdRef>();
    register_op(f);

    OpSchema b;
    b.name = "upsample_nearest2d_grad";
    b.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      if (in.size() != 1) op_error(n, "expects one input dy, got " + std::to_string(in.size()) + ": " + descs_str(in));
      check_float(n, in[0], "dy");
      Shape xs = n.attrs.is("input_shape", {});
      if (xs.size() != 4) op_error(n, "attribute 'input_shape' must be [N, C, H, W], got " + shape_str(xs));
      Shape y = out_shape(n, xs);
      if (in[0].shape != y)
        op_error(
            n, "dy expects " + shape_str(y) + " for input_shape " + shape_str(xs) + ", got " + shape_str(in[0].shape));
      return {TensorDesc{xs, in[0].dtype}};
    };
    b.ref = ref_kernel<GradRef>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
