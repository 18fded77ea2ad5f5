// General 2-D resizing of NCHW activations: PyTorch's F.interpolate(mode='nearest' | 'nearest-exact' | 'bilinear',
// align_corners=...) with sizes or (non-integer) scale factors, and ONNX Resize / Upsample (nearest and linear, every
// coordinate_transformation_mode but tf_crop_and_resize, every nearest_mode). x [N, C, H, W] -> y [N, C, OH, OW].
// Attributes (the coordinate rules are in ops/resize.hpp):
//   size [OH, OW]       integers >= 1, required;
//   mode                0 nearest, 1 linear (default 1);
//   coord               0 asymmetric, 1 half_pixel (default), 2 align_corners, 3 pytorch_half_pixel,
//                       4 tf_half_pixel_for_nn;
//   nearest             rounding of nearest: 0 floor (default), 1 round_prefer_floor, 2 round_prefer_ceil, 3 ceil;
//   rh, rw              floats > 0: input step per output step (default H / OH, W / OW; unused by align_corners);
//   offset_h, offset_w  floats added to the source coordinate (default 0).
// Backward op: resize2d_grad (dy; the same attributes and input_shape) -> dx, each input pixel the weighted sum of
// the outputs that read it. The integer-factor nearest case keeps its own op (upsample_nearest2d, oneDNN).
// Reference kernels are plain loops in float and double; the backward scatters plane by plane in a fixed order.
#include "ops/resize.hpp"

#include <cmath>

#include "core/op.hpp"

namespace cnn {
namespace {

using resize::Params;

void check_x(const Node& n, const std::vector<TensorDesc>& in, const char* what) {
  if (in.size() != 1)
    op_error(n, std::string("expects one input ") + what + ", got " + std::to_string(in.size()) + ": " + descs_str(in));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float ") + what + ", got " + dtype_name(in[0].dtype));
  if (in[0].shape.size() != 4)
    op_error(n, std::string(what) + " must be 4-D [N, C, H, W], got " + shape_str(in[0].shape));
}

std::vector<int64_t> size_attr(const Node& n) {
  auto it = n.attrs.ints.find("size");
  if (it == n.attrs.ints.end()) op_error(n, "missing attribute 'size' ([OH, OW], integers >= 1)");
  const std::vector<int64_t>& v = it->second;
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  if (v.size() != 2 || v[0] < 1 || v[1] < 1 || v[0] > kMax || v[1] > kMax)
    op_error(n, "attribute 'size' must be 2 integers [OH, OW] in [1, 2^31-1], got " + shape_str(v));
  return v;
}

int64_t choice(const Node& n, const char* name, int64_t dflt, int64_t hi, const char* meaning) {
  const int64_t v = n.attrs.i(name, dflt);
  if (v < 0 || v > hi)
    op_error(n, std::string("attribute '") + name + "' must be " + meaning + ", got " + std::to_string(v));
  return v;
}

// Validates the attributes against input shape x [N, C, H, W] and returns them.
Params params(const Node& n, const Shape& x) {
  size_attr(n);
  choice(n, "mode", 1, 1, "0 (nearest) or 1 (linear)");
  choice(n, "coord", 1, 4,
         "0 (asymmetric), 1 (half_pixel), 2 (align_corners), 3 (pytorch_half_pixel) or 4 "
         "(tf_half_pixel_for_nn)");
  choice(n, "nearest", 0, 3, "0 (floor), 1 (round_prefer_floor), 2 (round_prefer_ceil) or 3 (ceil)");
  if (x[2] < 1 || x[3] < 1) op_error(n, "x " + shape_str(x) + " has an empty spatial dimension (H and W must be >= 1)");
  Params p = resize::read_params(n.attrs, x);
  const char* rn[2] = {"rh", "rw"};
  const char* on[2] = {"offset_h", "offset_w"};
  resize::Axis<double>* ax[2] = {&p.h, &p.w};
  for (int k = 0; k < 2; ++k) {
    resize::Axis<double>& a = *ax[k];
    if (!(std::isfinite(a.r) && a.r > 0))
      op_error(n, std::string("attribute '") + rn[k] +
                      "' (input step per output step) must be a finite number > 0, got " + std::to_string(a.r));
    if (!std::isfinite(a.offset))
      op_error(n, std::string("attribute '") + on[k] + "' must be finite, got " + std::to_string(a.offset));
  }
  return p;
}

// ---- naive kernels ----

template <class T>
void resize_forward(T* y, const T* x, int64_t NC, const Params& p) {
  const resize::Axis<T> ah = Params::as<T>(p.h), aw = Params::as<T>(p.w);
  const int64_t H = ah.n, W = aw.n, OH = ah.m, OW = aw.m;
  for (int64_t q = 0; q < NC; ++q) {
    const T* xp = x + q * H * W;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        T v;
        if (p.mode == resize::kNearest) {
          v = xp[resize::nearest_index(ah, p.rounding, oh) * W + resize::nearest_index(aw, p.rounding, ow)];
        } else {
          const resize::Tap<T> th = resize::linear_tap(ah, oh), tw = resize::linear_tap(aw, ow);
          const T* r0 = xp + th.i0 * W;
          const T* r1 = xp + th.i1 * W;
          v = th.l0 * (tw.l0 * r0[tw.i0] + tw.l1 * r0[tw.i1]) + th.l1 * (tw.l0 * r1[tw.i0] + tw.l1 * r1[tw.i1]);
        }
        y[(q * OH + oh) * OW + ow] = v;
      }
  }
}

template <class T>
void resize_backward(T* dx, const T* dy, int64_t NC, const Params& p) {
  const resize::Axis<T> ah = Params::as<T>(p.h), aw = Params::as<T>(p.w);
  const int64_t H = ah.n, W = aw.n, OH = ah.m, OW = aw.m;
  for (int64_t q = 0; q < NC; ++q) {
    T* d = dx + q * H * W;
    for (int64_t i = 0; i < H * W; ++i) d[i] = T(0);
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const T g = dy[(q * OH + oh) * OW + ow];
        if (p.mode == resize::kNearest) {
          d[resize::nearest_index(ah, p.rounding, oh) * W + resize::nearest_index(aw, p.rounding, ow)] += g;
        } else {
          const resize::Tap<T> th = resize::linear_tap(ah, oh), tw = resize::linear_tap(aw, ow);
          d[th.i0 * W + tw.i0] += th.l0 * tw.l0 * g;
          d[th.i0 * W + tw.i1] += th.l0 * tw.l1 * g;
          d[th.i1 * W + tw.i0] += th.l1 * tw.l0 * g;
          d[th.i1 * W + tw.i1] += th.l1 * tw.l1 * g;
        }
      }
  }
}

template <class T>
struct FwdRef {  // x -> y
  static void run(const RefArgs<T>& a) {
    const Shape& x = a.in_shape(0);
    resize_forward<T>(a.out(0), a.in(0), x[0] * x[1], params(a.k.node, x));
  }
};
template <class T>
struct GradRef {  // dy -> dx
  static void run(const RefArgs<T>& a) {
    const Shape& x = a.out_shape(0);
    resize_backward<T>(a.out(0), a.in(0), x[0] * x[1], params(a.k.node, x));
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "resize2d";
    f.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_x(n, in, "x");
      const Shape& x = in[0].shape;
      const Params p = params(n, x);
      return {TensorDesc{{x[0], x[1], p.h.m, p.w.m}, in[0].dtype}};
    };
    f.grad = [](GradCtx& c) {
      if (!c.need_dx(0)) return;
      Attrs a = c.node().attrs;
      a.ints["input_shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("resize2d_grad", {c.dy(0)}, a)[0]);
    };
    f.recompute = RecomputeClass::cheap;
    f.ref = ref_kernel<FwdRef>();
    f.flops = [](const std::vector<TensorDesc>&, const std::vector<TensorDesc>& out) {
      return 11.0 * double(numel(out[0].shape));  // linear: 6 products, 3 sums, 2 weights
    };
    register_op(f);

    OpSchema b;
    b.name = "resize2d_grad";
    b.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_x(n, in, "dy");
      Shape xs = n.attrs.is("input_shape", {});
      if (xs.size() != 4 || xs[0] < 0 || xs[1] < 0 || xs[2] < 1 || xs[3] < 1)
        op_error(n, "attribute 'input_shape' must be [N, C, H, W] with H, W >= 1, got " + shape_str(xs));
      const Params p = params(n, xs);
      const Shape y{xs[0], xs[1], p.h.m, p.w.m};
      if (in[0].shape != y)
        op_error(
            n, "dy expects " + shape_str(y) + " for input_shape " + shape_str(xs) + ", got " + shape_str(in[0].shape));
      return {TensorDesc{xs, in[0].dtype}};
    };
    b.ref = ref_kernel<GradRef>();
    b.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
      return 12.0 * double(numel(in[0].shape));
    };
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
