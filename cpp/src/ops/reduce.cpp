// Reductions over given axes and softmax on any axis.
//
// reduce_mean / reduce_sum / reduce_max: x (float, any rank) -> y; attrs axes (a non-empty list of distinct axes,
// negative ones count from the end) and keepdim (0/1: reduced axes stay as size 1, or are dropped; dropping
// every axis gives y [1], as the losses do — the engine has no 0-d tensors). Sums accumulate in float64.
// Backward: reduce_sum_grad (dy; attrs axes, keepdim, input_shape, scale) -> dx = dy broadcast over the reduced
// axes times scale (1 for sum, 1/count for mean); reduce_max_grad (dy, x, y; attrs axes, keepdim) -> dx: each
// output's gradient split evenly between the elements equal to its maximum (PyTorch's amax gradient).
//
// softmax_axis / log_softmax: x (any rank) -> y over attr axis (default -1), in place allowed. Backward
// softmax_axis_grad (dy, y) -> dx = y * (dy - sum(dy * y)); log_softmax_grad (dy, y) -> dx = dy - exp(y) *
// sum(dy), both over the axis, reading the forward's output only. (The older `softmax` op takes 2-D [N, K]
// over axis 1 only; the functional API uses it there.)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/op.hpp"

namespace cnn {
namespace {

// Sorted, normalized, distinct axes of attr 'axes' for rank r.
std::vector<int64_t> norm_axes(const Node& n, int64_t r) {
  if (!n.attrs.has("axes")) op_error(n, "missing attribute 'axes'");
  std::vector<int64_t> a = n.attrs.is("axes", {});
  if (a.empty()) op_error(n, "attribute 'axes' must name at least one axis");
  std::vector<bool> seen(r, false);
  for (int64_t& v : a) {
    if (v < -r || v >= r)
      op_error(n, "axis " + std::to_string(v) + " is out of range for a rank-" + std::to_string(r) + " tensor [" +
                      std::to_string(-r) + ", " + std::to_string(r - 1) + "]");
    if (v < 0) v += r;
    if (seen[v])
      op_error(n, "attribute 'axes' " + shape_str(n.attrs.is("axes", {})) + " repeats axis " + std::to_string(v));
    seen[v] = true;
  }
  std::sort(a.begin(), a.end());
  return a;
}

bool keepdim_attr(const Node& n) {
  int64_t k = n.attrs.i("keepdim", 0);
  if (k != 0 && k != 1) op_error(n, "attribute 'keepdim' must be 0 or 1, got " + std::to_string(k));
  return k != 0;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& axes, bool keep) {
  Shape o;
  size_t j = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool red = j < axes.size() && axes[j] == int64_t(i);
    if (red) ++j;
    if (!red)
      o.push_back(s[i]);
    else if (keep)
      o.push_back(1);
  }
  if (o.empty()) o.push_back(1);
  return o;
}

void check_float(const Node& n, const TensorDesc& d, const char* what) {
  if (!is_float(d.dtype) || d.shape.empty())
    op_error(n, std::string(what) + " must be a float tensor of rank >= 1, got " + shape_str(d.shape) + " " +
                    dtype_name(d.dtype));
}

std::vector<TensorDesc> infer_reduce(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input x, got " + std::to_string(in.size()) + ": " + descs_str(in));
  check_float(n, in[0], "x");
  auto axes = norm_axes(n, int64_t(in[0].shape.size()));
  return {TensorDesc{reduced_shape(in[0].shape, axes, keepdim_attr(n)), in[0].dtype}};
}

Shape input_shape_attr(const Node& n) {
  Shape xs = n.attrs.is("input_shape", {});
  if (xs.empty()) op_error(n, "missing attribute 'input_shape'");
  for (int64_t d : xs)
    if (d <= 0) op_error(n, "attribute 'input_shape' " + shape_str(xs) + " must be positive");
  return xs;
}

std::vector<TensorDesc> infer_reduce_sum_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input dy, got " + descs_str(in));
  check_float(n, in[0], "dy");
  Shape xs = input_shape_attr(n);
  Shape ys = reduced_shape(xs, norm_axes(n, int64_t(xs.size())), keepdim_attr(n));
  if (in[0].shape != ys)
    op_error(n, "dy must be " + shape_str(ys) + " for input_shape " + shape_str(xs) + ", got " + descs_str(in));
  return {TensorDesc{xs, in[0].dtype}};
}

std::vector<TensorDesc> infer_reduce_max_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 3) op_error(n, "expects (dy, x, y), got " + descs_str(in));
  check_float(n, in[1], "x");
  Shape ys = reduced_shape(in[1].shape, norm_axes(n, int64_t(in[1].shape.size())), keepdim_attr(n));
  if (in[0].shape != ys || in[2].shape != ys || in[0].dtype != in[1].dtype || in[2].dtype != in[1].dtype)
    op_error(n, "dy and y must be " + shape_str(ys) + " for x " + shape_str(in[1].shape) + ", got " + descs_str(in));
  return {in[1]};
}

// Input offsets of the reduction: output o reads x[base(o) + roff(r)], r < nred (plain row-major x).
struct Geom {
  std::vector<int64_t> ksz, kst, rsz, rst;
  int64_t nout = 1, nred = 1;
  Geom(const Shape& s, const std::vector<int64_t>& axes) {
    int64_t stride = 1;
    std::vector<int64_t> st(s.size());
    for (size_t i = s.size(); i-- > 0;) st[i] = stride, stride *= s[i];
    size_t j = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (j < axes.size() && axes[j] == int64_t(i))
        rsz.push_back(s[i]), rst.push_back(st[i]), nred *= s[i], ++j;
      else
        ksz.push_back(s[i]), kst.push_back(st[i]), nout *= s[i];
    }
  }
  static int64_t off(int64_t i, const std::vector<int64_t>& sz, const std::vector<int64_t>& st) {
    int64_t o = 0;
    for (size_t d = sz.size(); d-- > 0;) o += (i % sz[d]) * st[d], i /= sz[d];
    return o;
  }
  int64_t base(int64_t o) const { return off(o, ksz, kst); }
  int64_t roff(int64_t r) const { return off(r, rsz, rst); }
};

Geom geom_of(const Node& n, const Shape& xs) { return Geom(xs, norm_axes(n, int64_t(xs.size()))); }

template <class T>
struct SumRef {  // reduce_sum and reduce_mean (attr "mean" set by the registrar's wrapper below)
  static void run(const RefArgs<T>& a, bool mean) {
    const Geom g = geom_of(a.k.node, a.in_shape(0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t o = 0; o < g.nout; ++o) {
      const int64_t b = g.base(o);
      double s = 0;
      for (int64_t r = 0; r < g.nred; ++r) s += double(x[b + g.roff(r)]);
      y[o] = T(mean ? s / double(g.nred) : s);
    }
  }
};
template <class T>
struct MeanFwd {
  static void run(const RefArgs<T>& a) { SumRef<T>::run(a, true); }
};
template <class T>
struct SumFwd {
  static void run(const RefArgs<T>& a) { SumRef<T>::run(a, false); }
};

template <class T>
struct MaxFwd {  // NaN propagates, as in torch.amax
  static void run(const RefArgs<T>& a) {
    const Geom g = geom_of(a.k.node, a.in_shape(0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t o = 0; o < g.nout; ++o) {
      const int64_t b = g.base(o);
      T m = x[b];
      for (int64_t r = 1; r < g.nred; ++r) {
        const T v = x[b + g.roff(r)];
        m = (v > m || std::isnan(v)) && !std::isnan(m) ? v : m;
      }
      y[o] = m;
    }
  }
};

template <class T>
struct SumGradRef {
  static void run(const RefArgs<T>& a) {
    const Geom g = geom_of(a.k.node, a.out_shape(0));
    const T scale = T(a.attrs().f("scale", 1.0));
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t o = 0; o < g.nout; ++o) {
      const int64_t b = g.base(o);
      for (int64_t r = 0; r < g.nred; ++r) dx[b + g.roff(r)] = dy[o] * scale;
    }
  }
};

template <class T>
struct MaxGradRef {
  static void run(const RefArgs<T>& a) {
    const Geom g = geom_of(a.k.node, a.in_shape(1));
    const T *dy = a.in(0), *x = a.in(1), *y = a.in(2);
    T* dx = a.out(0);
    for (int64_t o = 0; o < g.nout; ++o) {
      const int64_t b = g.base(o);
      int64_t cnt = 0;
      for (int64_t r = 0; r < g.nred; ++r) cnt += x[b + g.roff(r)] == y[o];
      const T d = cnt ? dy[o] / T(cnt) : T(0);
      for (int64_t r = 0; r < g.nred; ++r) {
        const int64_t i = b + g.roff(r);
        dx[i] = x[i] == y[o] ? d : T(0);
      }
    }
  }
};

// ---- softmax on any axis: x viewed as [outer, K, inner] ----

int64_t axis_attr(const Node& n, int64_t r) {
  int64_t a = n.attrs.i("axis", -1);
  if (a < -r || a >= r)
    op_error(n, "axis " + std::to_string(a) + " is out of range for a rank-" + std::to_string(r) + " tensor [" +
                    std::to_string(-r) + ", " + std::to_string(r - 1) + "]");
  return a < 0 ? a + r : a;
}

void split_axis(const Node& n, const Shape& s, int64_t& outer, int64_t& K, int64_t& inner) {
  const int64_t ax = axis_attr(n, int64_t(s.size()));
  outer = inner = 1;
  for (int64_t i = 0; i < ax; ++i) outer *= s[i];
  K = s[ax];
  for (size_t i = ax + 1; i < s.size(); ++i) inner *= s[i];
}

std::vector<TensorDesc> infer_softmax_axis(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input x, got " + std::to_string(in.size()) + ": " + descs_str(in));
  check_float(n, in[0], "x");
  axis_attr(n, int64_t(in[0].shape.size()));
  return {in[0]};
}

std::vector<TensorDesc> infer_softmax_axis_grad(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 2 || in[0].shape != in[1].shape || in[0].dtype != in[1].dtype)
    op_error(n, "expects (dy, y) of one shape, got " + descs_str(in));
  check_float(n, in[0], "dy");
  axis_attr(n, int64_t(in[0].shape.size()));
  return {in[0]};
}

template <class T, bool Log>
struct SoftmaxAxisRef {
  static void run(const RefArgs<T>& a) {
    int64_t outer, K, inner;
    split_axis(a.k.node, a.in_shape(0), outer, K, inner);
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const T* xr = x + o * K * inner + i;
        T* yr = y + o * K * inner + i;
        T m = xr[0];
        for (int64_t k = 1; k < K; ++k) m = xr[k * inner] > m ? xr[k * inner] : m;
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += std::exp(double(xr[k * inner] - m));
        if (Log) {
          const double ls = std::log(s);
          for (int64_t k = 0; k < K; ++k) yr[k * inner] = T(double(xr[k * inner] - m) - ls);
        } else {
          for (int64_t k = 0; k < K; ++k) yr[k * inner] = T(std::exp(double(xr[k * inner] - m)) / s);
        }
      }
  }
};
template <class T>
struct SoftmaxAxisFwd {
  static void run(const RefArgs<T>& a) { SoftmaxAxisRef<T, false>::run(a); }
};
template <class T>
struct LogSoftmaxFwd {
  static void run(const RefArgs<T>& a) { SoftmaxAxisRef<T, true>::run(a); }
};

template <class T, bool Log>
struct SoftmaxAxisGradRef {
  static void run(const RefArgs<T>& a) {
    int64_t outer, K, inner;
    split_axis(a.k.node, a.in_shape(0), outer, K, inner);
    const T *dy = a.in(0), *y = a.in(1);
    T* dx = a.out(0);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t b = o * K * inner + i;
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += Log ? double(dy[b + k * inner]) : double(dy[b + k * inner]) * double(y[b + k * inner]);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = b + k * inner;
          dx[j] = Log ? T(double(dy[j]) - std::exp(double(y[j])) * s) : T(double(y[j]) * (double(dy[j]) - s));
        }
      }
  }
};
template <class T>
struct SoftmaxAxisBwd {
  static void run(const RefArgs<T>& a) { SoftmaxAxisGradRef<T, false>::run(a); }
};
template <class T>
struct LogSoftmaxBwd {
  static void run(const RefArgs<T>& a) { SoftmaxAxisGradRef<T, true>::run(a); }
};

Attrs reduce_attrs(const Node& n, const Shape& xs) {
  Attrs a;
  a.ints["axes"] = norm_axes(n, int64_t(xs.size()));
  a.ints["keepdim"] = {keepdim_attr(n) ? 1 : 0};
  return a;
}

double reduce_flops(const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
  return double(numel(in[0].shape));
}

struct Registrar {
  Registrar() {
    for (const char* name : {"reduce_mean", "reduce_sum"}) {
      const bool mean = std::string(name) == "reduce_mean";
      OpSchema s;
      s.name = name;
      s.infer = infer_reduce;
      s.recompute = RecomputeClass::cheap;
      s.grad = [mean](GradCtx& c) {
        const Shape& xs = c.desc(c.input(0)).shape;
        Attrs a = reduce_attrs(c.node(), xs);
        a.ints["input_shape"] = xs;
        a.floats["scale"] = mean ? double(numel(c.desc(c.output(0)).shape)) / double(numel(xs)) : 1.0;
        c.set_dx(0, c.emit("reduce_sum_grad", {c.dy(0)}, a)[0]);
      };
      s.ref = mean ? ref_kernel<MeanFwd>() : ref_kernel<SumFwd>();
      s.flops = reduce_flops;
      register_op(s);
    }

    OpSchema mx;
    mx.name = "reduce_max";
    mx.infer = infer_reduce;
    mx.recompute = RecomputeClass::cheap;
    mx.grad = [](GradCtx& c) {
      Attrs a = reduce_attrs(c.node(), c.desc(c.input(0)).shape);
      c.set_dx(0, c.emit("reduce_max_grad", {c.dy(0), c.input(0), c.output(0)}, a)[0]);
    };
    mx.ref = ref_kernel<MaxFwd>();
    mx.flops = reduce_flops;
    register_op(mx);

    OpSchema sg;
    sg.name = "reduce_sum_grad";
    sg.infer = infer_reduce_sum_grad;
    sg.ref = ref_kernel<SumGradRef>();
    register_op(sg);

    OpSchema mg;
    mg.name = "reduce_max_grad";
    mg.infer = infer_reduce_max_grad;
    mg.ref = ref_kernel<MaxGradRef>();
    register_op(mg);

    for (int log = 0; log < 2; ++log) {
      const std::string fwd = log ? "log_softmax" : "softmax_axis", bwd = fwd + "_grad";
      OpSchema f;
      f.name = fwd;
      f.infer = infer_softmax_axis;
      f.inplace = true;
      f.recompute = RecomputeClass::costly;
      f.grad = [bwd](GradCtx& c) {
        Attrs a;
        a.ints["axis"] = {axis_attr(c.node(), int64_t(c.desc(c.input(0)).shape.size()))};
        c.set_dx(0, c.emit(bwd, {c.dy(0), c.output(0)}, a)[0]);
      };
      f.ref = log ? ref_kernel<LogSoftmaxFwd>() : ref_kernel<SoftmaxAxisFwd>();
      f.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
        return 4.0 * double(numel(in[0].shape));
      };
      register_op(f);

      OpSchema b;
      b.name = bwd;
      b.infer = infer_softmax_axis_grad;
      b.inplace = true;
      b.ref = log ? ref_kernel<LogSoftmaxBwd>() : ref_kernel<SoftmaxAxisBwd>();
      register_op(b);
    }
  }
} registrar;

}  // namespace
}  // namespace cnn
