// Pooling: max_pool2d, avg_pool2d, global_avg_pool and their *_grad ops, on x [N,C,H,W], with exactly
// PyTorch's semantics (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1)): output sizes, ceil_mode dropping a last
// window that would start in the right padding, count_include_pad divisors. Attrs: kernel, stride (= kernel),
// padding (0), dilation (1, max only), ceil_mode, count_include_pad (1), training (max: 1 adds an int32
// [N,C,OH,OW] workspace output whose bytes belong to the backend that wrote it; the reference writes argmax
// indices but its backward recomputes the argmax from x). Reference kernels here never call oneDNN; average
// pooling sums in float64 for float and double alike (sequential, exact to float rounding at any size).
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/op.hpp"

namespace cnn {
namespace {

struct Pool2d {
  int64_t kh, kw, sh, sw, ph, pw, dh = 1, dw = 1;
  bool ceil = false;
};

// An int or [h, w] attribute; an int (or one-element list) means a square value.
void pair_attr(const Node& n, const char* key, int64_t dflt_h, int64_t dflt_w, int64_t& h, int64_t& w) {
  std::vector<int64_t> v = n.attrs.is(key, {});
  if (v.empty()) {
    h = dflt_h;
    w = dflt_w;
  } else if (v.size() == 1) {
    h = w = v[0];
  } else if (v.size() == 2) {
    h = v[0];
    w = v[1];
  } else {
    op_error(n, std::string("attribute '") + key + "' must be an int or [h, w], got " + shape_str(v));
  }
}

void flag_attr(const Node& n, const char* key, int64_t dflt) {
  int64_t v = n.attrs.i(key, dflt);
  if (v != 0 && v != 1) op_error(n, std::string("attribute '") + key + "' must be 0 or 1, got " + std::to_string(v));
}

Pool2d pool_attrs(const Node& n, bool dilated) {
  Pool2d g;
  if (!n.attrs.has("kernel")) op_error(n, "missing attribute 'kernel' ([kh, kw])");
  pair_attr(n, "kernel", 0, 0, g.kh, g.kw);
  pair_attr(n, "stride", g.kh, g.kw, g.sh, g.sw);
  pair_attr(n, "padding", 0, 0, g.ph, g.pw);
  if (dilated)
    pair_attr(n, "dilation", 1, 1, g.dh, g.dw);
  else if (n.attrs.has("dilation"))
    op_error(n, "takes no 'dilation' attribute");
  flag_attr(n, "ceil_mode", 0);
  g.ceil = n.attrs.i("ceil_mode", 0) != 0;
  if (g.kh <= 0 || g.kw <= 0) op_error(n, "kernel must be positive, got " + shape_str({g.kh, g.kw}));
  if (g.sh <= 0 || g.sw <= 0) op_error(n, "stride must be positive, got " + shape_str({g.sh, g.sw}));
  if (g.dh <= 0 || g.dw <= 0) op_error(n, "dilation must be positive, got " + shape_str({g.dh, g.dw}));
  if (g.ph < 0 || g.pw < 0) op_error(n, "padding must be non-negative, got " + shape_str({g.ph, g.pw}));
  if (g.ph > g.kh / 2 || g.pw > g.kw / 2)
    op_error(n, "padding " + shape_str({g.ph, g.pw}) + " must be at most half the kernel " + shape_str({g.kh, g.kw}));
  return g;
}

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// PyTorch's pooling_output_shape.
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  int64_t o = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0), s) + 1;
  if (ceil && (o - 1) * s >= in + p) --o;
  return o;
}

Shape pool_out_shape(const Node& n, const Pool2d& g, const Shape& x) {
  if (x.size() != 4) op_error(n, "expects x [N, C, H, W], got " + shape_str(x));
  int64_t oh = out_size(x[2], g.kh, g.sh, g.ph, g.dh, g.ceil), ow = out_size(x[3], g.kw, g.sw, g.pw, g.dw, g.ceil);
  if (oh < 1 || ow < 1)
    op_error(n, "kernel " + shape_str({g.kh, g.kw}) + " with dilation " + shape_str({g.dh, g.dw}) +
                    " does not fit input " + shape_str(x) + " padded by " + shape_str({g.ph, g.pw}) +
                    " (output would be " + shape_str({oh, ow}) + ")");
  return {x[0], x[1], oh, ow};
}

void expect_float_x(const Node& n, const std::vector<TensorDesc>& in, size_t count) {
  if (in.size() != count) op_error(n, "expects " + std::to_string(count) + " inputs, got " + descs_str(in));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
}

Shape input_shape_attr(const Node& n) {
  Shape s = n.attrs.is("input_shape", {});
  if (s.size() != 4) op_error(n, "attribute 'input_shape' must be [N, C, H, W], got " + shape_str(s));
  return s;
}

// ---- max pooling ----

// Flat index h*W+w of the first maximum of window (oh, ow) in scan order (NaN wins, like PyTorch); -1 if the
// window holds no input element.
template <class T>
int64_t window_argmax(const T* xp, int64_t H, int64_t W, const Pool2d& g, int64_t oh, int64_t ow) {
  int64_t best = -1;
  T bv = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    int64_t h = oh * g.sh - g.ph + i * g.dh;
    if (h < 0 || h >= H) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t w = ow * g.sw - g.pw + j * g.dw;
      if (w < 0 || w >= W) continue;
      T v = xp[h * W + w];
      if (best < 0 || v > bv || std::isnan(v)) {
        best = h * W + w;
        bv = v;
      }
    }
  }
  return best;
}

template <class T>
struct MaxFwd {
  static void run(const RefArgs<T>& a) {
    Pool2d g = pool_attrs(a.k.node, true);
    const Shape &xs = a.in_shape(0), &ys = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* x = a.in(0);
    T* y = a.out(0);
    int32_t* ws = a.k.out.size() > 1 ? a.template out<int32_t>(1) : nullptr;
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const T* xp = x + nc * H * W;
          int64_t idx = window_argmax(xp, H, W, g, oh, ow);
          int64_t o = (nc * OH + oh) * OW + ow;
          y[o] = idx >= 0 ? xp[idx] : -std::numeric_limits<T>::infinity();
          if (ws) ws[o] = int32_t(idx);
        }
  }
};

// in: dy, x, workspace (unused here); out: dx
template <class T>
struct MaxBwd {
  static void run(const RefArgs<T>& a) {
    Pool2d g = pool_attrs(a.k.node, true);
    const Shape &ys = a.in_shape(0), &xs = a.in_shape(1);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T *dy = a.in(0), *x = a.in(1);
    T* dx = a.out(0);
    for (int64_t i = 0; i < NC * H * W; ++i) dx[i] = 0;
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t idx = window_argmax(x + nc * H * W, H, W, g, oh, ow);
          if (idx >= 0) dx[nc * H * W + idx] += dy[(nc * OH + oh) * OW + ow];
        }
  }
};

// ---- average pooling ----

// Window (oh, ow) clipped to the image, and PyTorch's divisor for it.
struct AvgWindow {
  int64_t h0, h1, w0, w1, div;
};
AvgWindow avg_window(const Pool2d& g, bool include_pad, int64_t H, int64_t W, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int64_t h1 = std::min(h0 + g.kh, H + g.ph), w1 = std::min(w0 + g.kw, W + g.pw);
  int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, H);
  w1 = std::min(w1, W);
  return {h0, h1, w0, w1, include_pad ? padded : (h1 - h0) * (w1 - w0)};
}

template <class T>
struct AvgFwd {
  static void run(const RefArgs<T>& a) {
    Pool2d g = pool_attrs(a.k.node, false);
    bool cip = a.attrs().i("count_include_pad", 1) != 0;
    const Shape &xs = a.in_shape(0), &ys = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          AvgWindow win = avg_window(g, cip, H, W, oh, ow);
          double sum = 0;  // float64 at any T: a float sum stops growing at 2^24
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) sum += x[(nc * H + h) * W + w];
          y[(nc * OH + oh) * OW + ow] = win.div > 0 ? T(sum / double(win.div)) : T(0);
        }
  }
};

template <class T>
struct AvgBwd {
  static void run(const RefArgs<T>& a) {
    Pool2d g = pool_attrs(a.k.node, false);
    bool cip = a.attrs().i("count_include_pad", 1) != 0;
    const Shape &ys = a.in_shape(0), &xs = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], H = xs[2], W = xs[3], OH = ys[2], OW = ys[3];
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t i = 0; i < NC * H * W; ++i) dx[i] = 0;
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          AvgWindow win = avg_window(g, cip, H, W, oh, ow);
          if (win.div <= 0) continue;
          T d = dy[(nc * OH + oh) * OW + ow] / T(win.div);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) dx[(nc * H + h) * W + w] += d;
        }
  }
};

// ---- global average pooling ----

template <class T>
struct GlobalFwd {
  static void run(const RefArgs<T>& a) {
    const Shape& xs = a.in_shape(0);
    const int64_t NC = xs[0] * xs[1], HW = xs[2] * xs[3];
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t nc = 0; nc < NC; ++nc) {
      double sum = 0;
      for (int64_t i = 0; i < HW; ++i) sum += x[nc * HW + i];
      y[nc] = T(sum / double(HW));
    }
  }
};

template <class T>
struct GlobalBwd {
  static void run(const RefArgs<T>& a) {
    const Shape& xs = a.out_shape(0);
    const int64_t NC = xs[0] * xs[1], HW = xs[2] * xs[3];
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t nc = 0; nc < NC; ++nc)
      for (int64_t i = 0; i < HW; ++i) dx[nc * HW + i] = dy[nc] / T(HW);
  }
};

// ---- shape inference ----

std::vector<TensorDesc> max_infer(const Node& n, const std::vector<TensorDesc>& in) {
  expect_float_x(n, in, 1);
  flag_attr(n, "training", 0);
  Shape y = pool_out_shape(n, pool_attrs(n, true), in[0].shape);
  if (n.attrs.i("training", 0)) return {TensorDesc{y, in[0].dtype}, TensorDesc{y, DType::i32}};
  return {TensorDesc{y, in[0].dtype}};
}

std::vector<TensorDesc> max_grad_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 3) op_error(n, "expects (dy, x, workspace), got " + descs_str(in));
  Shape y = pool_out_shape(n, pool_attrs(n, true), in[1].shape);
  if (in[0].shape != y || in[0].dtype != in[1].dtype)
    op_error(n, "dy must be " + shape_str(y) + " " + dtype_name(in[1].dtype) + ", got " + descs_str(in));
  if (in[2].shape != y || in[2].dtype != DType::i32)
    op_error(n, "workspace must be int32 " + shape_str(y) + ", got " + descs_str(in));
  return {in[1]};
}

std::vector<TensorDesc> avg_infer(const Node& n, const std::vector<TensorDesc>& in) {
  expect_float_x(n, in, 1);
  flag_attr(n, "count_include_pad", 1);
  return {TensorDesc{pool_out_shape(n, pool_attrs(n, false), in[0].shape), in[0].dtype}};
}

std::vector<TensorDesc> avg_grad_infer(const Node& n, const std::vector<TensorDesc>& in) {
  expect_float_x(n, in, 1);
  flag_attr(n, "count_include_pad", 1);
  Shape xs = input_shape_attr(n);
  Shape y = pool_out_shape(n, pool_attrs(n, false), xs);
  if (in[0].shape != y)
    op_error(n, "dy must be " + shape_str(y) + " for input_shape " + shape_str(xs) + ", got " + descs_str(in));
  return {TensorDesc{xs, in[0].dtype}};
}

std::vector<TensorDesc> global_infer(const Node& n, const std::vector<TensorDesc>& in) {
  expect_float_x(n, in, 1);
  const Shape& x = in[0].shape;
  if (x.size() != 4) op_error(n, "expects x [N, C, H, W], got " + shape_str(x));
  return {TensorDesc{{x[0], x[1], 1, 1}, in[0].dtype}};
}

std::vector<TensorDesc> global_grad_infer(const Node& n, const std::vector<TensorDesc>& in) {
  expect_float_x(n, in, 1);
  Shape xs = input_shape_attr(n);
  Shape y{xs[0], xs[1], 1, 1};
  if (in[0].shape != y)
    op_error(n, "dy must be " + shape_str(y) + " for input_shape " + shape_str(xs) + ", got " + descs_str(in));
  return {TensorDesc{xs, in[0].dtype}};
}

OpSchema schema(const char* name, decltype(OpSchema::infer) infer, KernelFactory ref,
                RecomputeClass recompute = RecomputeClass::never) {
  OpSchema s;
  s.name = name;
  s.infer = std::move(infer);
  s.ref = std::move(ref);
  s.recompute = recompute;
  return s;
}

struct Registrar {
  Registrar() {
    OpSchema mp = schema("max_pool2d", max_infer, ref_kernel<MaxFwd>(), RecomputeClass::costly);
    mp.grad = [](GradCtx& c) {
      if (c.node().outputs.size() < 2)
        op_error(c.node(), "training=0 keeps no workspace; set training=1 to differentiate");
      c.set_dx(0, c.emit("max_pool2d_grad", {c.dy(0), c.input(0), c.output(1)}, c.node().attrs)[0]);
    };
    register_op(mp);
    register_op(schema("max_pool2d_grad", max_grad_infer, ref_kernel<MaxBwd>()));

    OpSchema ap = schema("avg_pool2d", avg_infer, ref_kernel<AvgFwd>(), RecomputeClass::costly);
    ap.grad = [](GradCtx& c) {
      Attrs a = c.node().attrs;
      a.ints["input_shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("avg_pool2d_grad", {c.dy(0)}, a)[0]);
    };
    register_op(ap);
    register_op(schema("avg_pool2d_grad", avg_grad_infer, ref_kernel<AvgBwd>()));

    OpSchema gp = schema("global_avg_pool", global_infer, ref_kernel<GlobalFwd>(), RecomputeClass::costly);
    gp.grad = [](GradCtx& c) {
      Attrs a;
      a.ints["input_shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("global_avg_pool_grad", {c.dy(0)}, a)[0]);
    };
    register_op(gp);
    register_op(schema("global_avg_pool_grad", global_grad_infer, ref_kernel<GlobalBwd>()));
  }
} registrar;

}  // namespace
}  // namespace cnn
