// Constant padding of the two spatial dims, PyTorch's F.pad(x, (left, right, top, bottom), value=v) on a 4-D
// tensor: x [N, C, H, W] -> y [N, C, top + H + bottom, left + W + right], y[n, c, top + h, left + w] = x[n, c, h, w]
// and every other element v. Attrs: pads = [top, left, bottom, right] (integers >= 0, required), value (float, 0).
// Backward op: pad_grad (dy; attr pads) -> dx, the crop of dy that pad wrote x into. The compile pass fold_pad
// (core/fold_pad.hpp) folds a zero pad into the convolution or average pooling that reads it. Shape errors name
// the node and expected vs given shapes. Reference kernels are plain loops (float, double) that write every
// output element.
#include "core/op.hpp"

namespace cnn {
namespace {

struct Pads {
  int64_t top, left, bottom, right;
};

Pads pads_attr(const Node& n) {
  auto it = n.attrs.ints.find("pads");
  if (it == n.attrs.ints.end()) op_error(n, "missing attribute 'pads' ([top, left, bottom, right], integers >= 0)");
  const std::vector<int64_t>& v = it->second;
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  if (v.size() != 4 || v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0 || v[0] > kMax || v[1] > kMax || v[2] > kMax ||
      v[3] > kMax)
    op_error(n, "attribute 'pads' must be 4 integers [top, left, bottom, right] in [0, 2^31-1], got " + shape_str(v));
  return {v[0], v[1], v[2], v[3]};
}

void check_one_float(const Node& n, const std::vector<TensorDesc>& in, const char* what) {
  if (in.size() != 1)
    op_error(n, std::string("expects one input ") + what + ", got " + std::to_string(in.size()) + ": " + descs_str(in));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float ") + what + ", got " + dtype_name(in[0].dtype));
  if (in[0].shape.size() != 4)
    op_error(n, std::string(what) + " must be 4-D [N, C, H, W], got " + shape_str(in[0].shape));
}

// ---- naive kernels ----

template <class T>
struct FwdRef {  // x -> y
  static void run(const RefArgs<T>& a) {
    const Pads p = pads_attr(a.k.node);
    const T v = T(a.attrs().f("value", 0.0));
    const Shape &xs = a.in_shape(0), &ys = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t q = 0; q < NC; ++q)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t h = oh - p.top, w = ow - p.left;
          y[(q * OH + oh) * OW + ow] = h >= 0 && h < H && w >= 0 && w < W ? x[(q * H + h) * W + w] : v;
        }
  }
};

template <class T>
struct GradRef {  // dy -> dx
  static void run(const RefArgs<T>& a) {
    const Pads p = pads_attr(a.k.node);
    const Shape &ys = a.in_shape(0), &xs = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t q = 0; q < NC; ++q)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) dx[(q * H + h) * W + w] = dy[(q * OH + h + p.top) * OW + w + p.left];
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "pad";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_one_float(n, in, "x");
      const Pads p = pads_attr(n);
      const Shape& x = in[0].shape;
      return {TensorDesc{{x[0], x[1], x[2] + p.top + p.bottom, x[3] + p.left + p.right}, in[0].dtype}};
    };
    f.grad = [](GradCtx& c) {
      if (!c.need_dx(0)) return;
      Attrs a;
      a.ints["pads"] = c.node().attrs.ints.at("pads");
      c.set_dx(0, c.emit("pad_grad", {c.dy(0)}, a)[0]);
    };
    f.recompute = RecomputeClass::cheap;
    f.ref = ref_kernel<FwdRef>();
    register_op(f);

    OpSchema b;
    b.name = "pad_grad";
    b.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_one_float(n, in, "dy");
      const Pads p = pads_attr(n);
      const Shape& y = in[0].shape;
      const int64_t H = y[2] - p.top - p.bottom, W = y[3] - p.left - p.right;
      if (H < 1 || W < 1)
        op_error(n, "dy " + shape_str(y) + " is too small for pads " + shape_str({p.top, p.left, p.bottom, p.right}) +
                        " (the cropped dx would be " + shape_str({y[0], y[1], H, W}) + ")");
      return {TensorDesc{{y[0], y[1], H, W}, in[0].dtype}};
    };
    b.ref = ref_kernel<GradRef>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
