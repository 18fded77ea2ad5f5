// Normalization over parts of a sample: layer norm and group norm (instance norm is group norm with one channel
// per group). Both normalize "rows" of a tensor with their own biased statistics and apply an optional
// per-element affine, so they share the geometry below and the reference kernels.
//
// layer_norm (x[, weight[, bias]]; axis, num_axes, eps) -> y, mean, rstd. x is seen as [outer, L, inner] with
// L = prod(x.shape[axis : axis + num_axes]) (num_axes defaults to rank - axis): every (o, i) is one row of L values
// normalized together. inner = 1 is torch's LayerNorm over the last num_axes dims (ONNX LayerNormalization);
// axis = 1, num_axes = 1 of an NCHW tensor normalizes over channels per pixel (ConvNeXt's LayerNorm2d) with no
// transposes. weight and bias have shape x.shape[axis : axis + num_axes]. mean and rstd = 1 / sqrt(var + eps) (var
// biased; ONNX's Mean and InvStdDev) have x's shape with the normalized dims set to 1. y = (x - mean) * rstd *
// weight + bias.
// layer_norm_grad (dy, x, mean, rstd[, weight]; axis, num_axes, eps) -> dx[, dweight, dbias].
//
// group_norm (x [N, C, *][, weight [C][, bias [C]]]; groups, eps) -> y, mean [N, G], rstd [N, G]: each sample's C/G
// consecutive channels (all their pixels) form one row; weight and bias are per channel. groups = C is
// InstanceNorm. group_norm_grad (dy, x, mean, rstd[, weight]; groups, eps) -> dx[, dweight, dbias].
//
// Backward, per row with xhat = (x - mean) * rstd, g = dy * weight (weight = 1 when absent):
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight = sum over rows of dy * xhat, dbias = sum of dy
// (per parameter element). The reference kernels accumulate in float64 (two passes for the statistics).
#include <cmath>

#include "core/op.hpp"

namespace cnn {
namespace {

// Rows of a normalization: row r, element j (0 <= j < M) is at offset(r, j) and uses parameter param(r, j).
struct Geo {
  bool group = false;
  int64_t outer = 1, L = 1, inner = 1;         // layer norm
  int64_t N = 1, C = 1, G = 1, Cg = 1, S = 1;  // group norm
  int64_t rows() const { return group ? N * G : outer * inner; }
  int64_t M() const { return group ? Cg * S : L; }
  int64_t params() const { return group ? C : L; }
  int64_t offset(int64_t r, int64_t j) const {
    return group ? r * Cg * S + j : ((r / inner) * L + j) * inner + r % inner;
  }
  int64_t param(int64_t r, int64_t j) const { return group ? (r % G) * Cg + j / S : j; }
};

void check_eps(const Node& n) {
  if (n.attrs.ints.count("eps")) op_error(n, "attribute 'eps' must be a float");
  const double eps = n.attrs.f("eps", 1e-5);
  if (!(eps >= 0) || !std::isfinite(eps)) op_error(n, "eps must be a finite float >= 0, got " + std::to_string(eps));
}

// layer norm: axis and num_axes normalized against x's rank (errors name the node).
Geo ln_geo(const Node& n, const Shape& x) {
  const int64_t r = int64_t(x.size());
  if (r < 1) op_error(n, "x must have at least one dimension, got " + shape_str(x));
  const int64_t axis = n.attrs.i("axis", r - 1);
  if (axis < 0 || axis >= r)
    op_error(n, "attribute 'axis' must be in [0, " + std::to_string(r - 1) + "] for x " + shape_str(x) + ", got " +
                    std::to_string(axis));
  const int64_t k = n.attrs.i("num_axes", r - axis);
  if (k < 1 || axis + k > r)
    op_error(n, "attribute 'num_axes' must be in [1, " + std::to_string(r - axis) + "] for axis " +
                    std::to_string(axis) + " of x " + shape_str(x) + ", got " + std::to_string(k));
  Geo g;
  for (int64_t d = 0; d < r; ++d) (d < axis ? g.outer : d < axis + k ? g.L : g.inner) *= x[d];
  return g;
}

Shape ln_param_shape(const Node& n, const Shape& x) {
  const int64_t r = int64_t(x.size()), axis = n.attrs.i("axis", r - 1), k = n.attrs.i("num_axes", r - axis);
  return Shape(x.begin() + axis, x.begin() + axis + k);
}

Shape ln_stat_shape(const Node& n, const Shape& x) {
  const int64_t r = int64_t(x.size()), axis = n.attrs.i("axis", r - 1), k = n.attrs.i("num_axes", r - axis);
  Shape s = x;
  for (int64_t d = axis; d < axis + k; ++d) s[d] = 1;
  return s;
}

Geo gn_geo(const Node& n, const Shape& x) {
  if (x.size() < 2) op_error(n, "x must be [N, C, ...] (at least 2-D), got " + shape_str(x));
  Geo g;
  g.group = true;
  g.N = x[0];
  g.C = x[1];
  auto it = n.attrs.ints.find("groups");
  if (it == n.attrs.ints.end() || it->second.size() != 1) op_error(n, "missing integer attribute 'groups'");
  g.G = it->second[0];
  if (g.G < 1 || g.C % g.G != 0)
    op_error(n, "groups must be >= 1 and divide the " + std::to_string(g.C) + " channels of x " + shape_str(x) +
                    ", got " + std::to_string(g.G));
  g.Cg = g.C / g.G;
  for (size_t d = 2; d < x.size(); ++d) g.S *= x[d];
  return g;
}

bool is_group(const Node& n) { return n.op == "group_norm" || n.op == "group_norm_grad"; }

Geo geo_of(const Node& n, const Shape& x) { return is_group(n) ? gn_geo(n, x) : ln_geo(n, x); }

Shape param_shape(const Node& n, const Shape& x) { return is_group(n) ? Shape{x[1]} : ln_param_shape(n, x); }

Shape stat_shape(const Node& n, const Shape& x) {
  if (is_group(n)) return Shape{x[0], gn_geo(n, x).G};
  return ln_stat_shape(n, x);
}

void check_float(const Node& n, const TensorDesc& d, const std::string& what) {
  if (!is_float(d.dtype)) op_error(n, what + " must be a float tensor, got " + dtype_name(d.dtype));
}

std::vector<TensorDesc> infer_fwd(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.empty() || in.size() > 3)
    op_error(n, "expects 1 to 3 inputs (x[, weight[, bias]]), got " + std::to_string(in.size()) + ": " + descs_str(in));
  check_eps(n);
  const Shape& x = in[0].shape;
  geo_of(n, x);
  const Shape ps = param_shape(n, x);
  static const char* const names[] = {"x", "weight", "bias"};
  for (size_t i = 0; i < in.size(); ++i) {
    check_float(n, in[i], names[i]);
    if (i > 0 && in[i].shape != ps)
      op_error(n, std::string(names[i]) + " must be " + shape_str(ps) + " for x " + shape_str(x) + ", got " +
                      shape_str(in[i].shape));
  }
  TensorDesc stat{stat_shape(n, x), in[0].dtype};
  return {in[0], stat, stat};
}

std::vector<TensorDesc> infer_bwd(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 4 && in.size() != 5)
    op_error(n, "expects 4 or 5 inputs (dy, x, mean, rstd[, weight]), got " + std::to_string(in.size()) + ": " +
                    descs_str(in));
  check_eps(n);
  static const char* const names[] = {"dy", "x", "mean", "rstd", "weight"};
  for (size_t i = 0; i < in.size(); ++i) check_float(n, in[i], names[i]);
  const Shape& x = in[1].shape;
  if (in[0].shape != x) op_error(n, "dy must have x's shape " + shape_str(x) + ", got " + shape_str(in[0].shape));
  geo_of(n, x);
  const Shape ss = stat_shape(n, x), ps = param_shape(n, x);
  for (int i : {2, 3})
    if (in[i].shape != ss)
      op_error(n, std::string(names[i]) + " must be " + shape_str(ss) + ", got " + shape_str(in[i].shape));
  if (in.size() == 5 && in[4].shape != ps)
    op_error(n, "weight must be " + shape_str(ps) + ", got " + shape_str(in[4].shape));
  if (in.size() == 4) return {in[1]};
  TensorDesc p{ps, in[1].dtype};
  return {in[1], p, p};
}

// ---- reference kernels ----

template <class T>
struct FwdRef {
  static void run(const RefArgs<T>& a) {
    const Geo g = geo_of(a.k.node, a.in_shape(0));
    const double eps = a.attrs().f("eps", 1e-5);
    const size_t nin = a.k.in.size();
    const T* x = a.in(0);
    const T* w = nin > 1 ? a.in(1) : nullptr;
    const T* b = nin > 2 ? a.in(2) : nullptr;
    T *y = a.out(0), *mean = a.out(1), *rstd_out = a.out(2);
    const int64_t M = g.M();
    for (int64_t r = 0; r < g.rows(); ++r) {
      double s = 0;
      for (int64_t j = 0; j < M; ++j) s += x[g.offset(r, j)];
      const double mu = s / double(M);
      double q = 0;
      for (int64_t j = 0; j < M; ++j) {
        const double d = x[g.offset(r, j)] - mu;
        q += d * d;
      }
      const double v = q / double(M), rstd = 1 / std::sqrt(v + eps);
      mean[r] = T(mu);
      rstd_out[r] = T(rstd);
      for (int64_t j = 0; j < M; ++j) {
        const int64_t o = g.offset(r, j), p = g.param(r, j);
        double t = (x[o] - mu) * rstd;
        if (w) t *= double(w[p]);
        if (b) t += double(b[p]);
        y[o] = T(t);
      }
    }
  }
};

template <class T>
struct BwdRef {
  static void run(const RefArgs<T>& a) {
    const Geo g = geo_of(a.k.node, a.in_shape(1));
    const bool affine = a.k.in.size() == 5;
    const T *dy = a.in(0), *x = a.in(1), *mean = a.in(2), *rs = a.in(3);
    const T* w = affine ? a.in(4) : nullptr;
    T* dx = a.out(0);
    const int64_t M = g.M(), P = g.params();
    std::vector<double> dw(affine ? P : 0), db(affine ? P : 0);
    for (int64_t r = 0; r < g.rows(); ++r) {
      const double mu = mean[r], rstd = rs[r];
      double sg = 0, sgx = 0;
      for (int64_t j = 0; j < M; ++j) {
        const int64_t o = g.offset(r, j), p = g.param(r, j);
        const double xh = (x[o] - mu) * rstd, gj = double(dy[o]) * (w ? double(w[p]) : 1.0);
        sg += gj;
        sgx += gj * xh;
        if (affine) {
          dw[p] += double(dy[o]) * xh;
          db[p] += dy[o];
        }
      }
      sg /= double(M);
      sgx /= double(M);
      for (int64_t j = 0; j < M; ++j) {
        const int64_t o = g.offset(r, j), p = g.param(r, j);
        const double xh = (x[o] - mu) * rstd, gj = double(dy[o]) * (w ? double(w[p]) : 1.0);
        dx[o] = T(rstd * (gj - sg - xh * sgx));
      }
    }
    if (affine)
      for (int64_t p = 0; p < P; ++p) {
        a.out(1)[p] = T(dw[p]);
        a.out(2)[p] = T(db[p]);
      }
  }
};

void grad_rule(GradCtx& c, const char* grad_op) {
  const Node& n = c.node();
  if (c.dy(0) < 0 || c.dy(1) >= 0 || c.dy(2) >= 0) op_error(n, "gradients flow only through y, not through mean/rstd");
  const bool affine = n.inputs.size() >= 2;
  bool any = c.need_dx(0);
  for (size_t i = 1; i < n.inputs.size(); ++i) any = any || c.need_dx(int(i));
  if (!any) return;
  std::vector<int> ins{c.dy(0), c.input(0), c.output(1), c.output(2)};
  if (affine) ins.push_back(c.input(1));
  Attrs a = n.attrs;
  std::vector<int> g = c.emit(grad_op, ins, a);
  for (size_t i = 0; i < n.inputs.size(); ++i)
    if (c.need_dx(int(i))) c.set_dx(int(i), g[i]);
}

double fwd_flops(const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
  return 8.0 * double(numel(in[0].shape));
}
double bwd_flops(const std::vector<TensorDesc>& in, const std::vector<TensorDesc>&) {
  return 14.0 * double(numel(in[1].shape));
}

struct Registrar {
  Registrar() {
    for (const char* base : {"layer_norm", "group_norm"}) {
      const std::string grad_op = std::string(base) + "_grad";
      OpSchema f;
      f.name = base;
      f.infer = infer_fwd;
      f.inplace = true;
      f.recompute = RecomputeClass::cheap;
      f.grad = [grad_op](GradCtx& c) { grad_rule(c, grad_op.c_str()); };
      f.ref = ref_kernel<FwdRef>();
      f.flops = fwd_flops;
      register_op(f);

      OpSchema b;
      b.name = grad_op;
      b.infer = infer_bwd;
      b.ref = ref_kernel<BwdRef>();
      b.flops = bwd_flops;
      register_op(b);
    }
  }
} registrar;

}  // namespace
}  // namespace cnn
