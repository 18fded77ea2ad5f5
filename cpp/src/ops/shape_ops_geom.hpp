// Attribute validation and geometry of the shape op family (ops/shape_ops.cpp), for the op schemas and the cpu
// and cuda kernels: every error names the node (op_error) and the shapes involved.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "core/op.hpp"
#include "ops/shape_ops.hpp"

namespace cnn {
namespace shape_ops {

inline std::vector<int64_t> perm_attr(const Node& n, size_t rank) {
  const std::vector<int64_t> p = n.attrs.is("perm", {});
  std::vector<bool> seen(rank, false);
  bool ok = p.size() == rank;
  for (size_t i = 0; ok && i < p.size(); ++i) {
    ok = p[i] >= 0 && p[i] < int64_t(rank) && !seen[p[i]];
    if (ok) seen[p[i]] = true;
  }
  if (!ok)
    op_error(n, "attribute 'perm' " + shape_str(p) + " must be a permutation of 0.." + std::to_string(rank - 1) +
                    " for an input of rank " + std::to_string(rank));
  return p;
}

inline Strided transpose_geom(const Node& n, const Shape& x) {
  const std::vector<int64_t> p = perm_attr(n, x.size());
  Strided s;
  s.rank = int(x.size());
  std::vector<int64_t> st(x.size(), 1);
  for (int d = int(x.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * x[d + 1];
  for (size_t i = 0; i < p.size(); ++i) s.dims[i] = x[p[i]], s.stride[i] = st[p[i]];
  return s;
}

// slice of x by attrs starts, steps, sizes (one per axis); validates that every index falls inside x.
inline Strided slice_geom(const Node& n, const Shape& x) {
  const std::vector<int64_t> st = n.attrs.is("starts", {}), sp = n.attrs.is("steps", {}), sz = n.attrs.is("sizes", {});
  const size_t r = x.size();
  if (st.size() != r || sp.size() != r || sz.size() != r)
    op_error(n, "attributes starts " + shape_str(st) + ", steps " + shape_str(sp) + " and sizes " + shape_str(sz) +
                    " must hold one value per axis of x " + shape_str(x));
  Strided s;
  s.rank = int(r);
  int64_t mul = 1;
  for (int d = int(r) - 1; d >= 0; --d) {
    const int64_t last = st[d] + (sz[d] - 1) * sp[d];
    if (sp[d] == 0 || sz[d] < 1 || st[d] < 0 || st[d] >= x[d] || last < 0 || last >= x[d])
      op_error(n, "axis " + std::to_string(d) + " of x " + shape_str(x) + ": start " + std::to_string(st[d]) +
                      ", step " + std::to_string(sp[d]) + ", size " + std::to_string(sz[d]) +
                      " leave the axis (steps must be non-zero, sizes >= 1, every index in 0.." +
                      std::to_string(x[d] - 1) + ")");
    s.dims[d] = sz[d];
    s.stride[d] = sp[d] * mul;
    s.base += st[d] * mul;
    mul *= x[d];
  }
  return s;
}

inline PadGeom pad_geom(const Node& n, const Shape& x) {
  const std::vector<int64_t> p = n.attrs.is("pads", {});
  const int64_t mode = n.attrs.i("mode", 0);
  const size_t r = x.size();
  if (mode < 0 || mode > 2)
    op_error(n, "attribute 'mode' must be 0 (constant), 1 (reflect) or 2 (replicate), got " + std::to_string(mode));
  if (p.size() != 2 * r)
    op_error(n, "attribute 'pads' " + shape_str(p) + " must hold " + std::to_string(2 * r) +
                    " values [before per axis..., after per axis...] for x " + shape_str(x));
  PadGeom g;
  g.rank = int(r);
  g.mode = int(mode);
  constexpr int64_t kMax = (int64_t(1) << 31) - 1;
  for (size_t d = 0; d < r; ++d) {
    if (p[d] < 0 || p[r + d] < 0 || p[d] > kMax || p[r + d] > kMax)
      op_error(n, "pads must be in [0, 2^31-1], got " + shape_str(p));
    if (mode == kReflect && (p[d] >= x[d] || p[r + d] >= x[d]))
      op_error(n, "reflect padding of axis " + std::to_string(d) + " by (" + std::to_string(p[d]) + ", " +
                      std::to_string(p[r + d]) + ") must be less than its extent " + std::to_string(x[d]) + " (x " +
                      shape_str(x) + ")");
    g.in[d] = x[d];
    g.before[d] = p[d];
    g.out[d] = x[d] + p[d] + p[r + d];
  }
  return g;
}

// matmul geometry from a's and b's shapes and the node's trans_a, trans_b, sum_to; *out: the output shape.
inline MatmulGeom matmul_geom(const Node& n, const Shape& a, const Shape& b, Shape* out) {
  const bool ta = n.attrs.i("trans_a", 0) != 0, tb = n.attrs.i("trans_b", 0) != 0;
  const size_t ra = a.size(), rb = b.size();
  if (ra < 2 || rb < 2)
    op_error(n, "a " + shape_str(a) + " and b " + shape_str(b) + " must have rank >= 2 (reshape 1-D operands)");
  MatmulGeom g;
  g.M = ta ? a[ra - 1] : a[ra - 2];
  g.K = ta ? a[ra - 2] : a[ra - 1];
  const int64_t kb = tb ? b[rb - 1] : b[rb - 2];
  g.N = tb ? b[rb - 2] : b[rb - 1];
  const std::string op_s = std::string(ta ? "a^T" : "a") + " @ " + (tb ? "b^T" : "b");
  if (kb != g.K)
    op_error(n, op_s + ": inner dimensions differ, a " + shape_str(a) + " gives K = " + std::to_string(g.K) + ", b " +
                    shape_str(b) + " gives K = " + std::to_string(kb));
  // sum_to: the output's shape instead of the product's; along each batch dim it equals the product's, or is 1
  // (summed over), or the product's is 1 (the value repeated): the gradient of a broadcast operand
  const std::vector<int64_t> to = n.attrs.is("sum_to", {});
  const size_t rt = to.size();
  if (!to.empty() && (rt < 2 || to[rt - 2] != g.M || to[rt - 1] != g.N))
    op_error(n, "attribute 'sum_to' " + shape_str(to) + " must end in the product's [M, N] = " + shape_str({g.M, g.N}));
  const size_t r = std::max(std::max(ra, rb), to.empty() ? size_t(2) : rt);
  if (r > size_t(kMaxRank))
    op_error(n, "ranks <= " + std::to_string(kMaxRank) + " are supported, got a " + shape_str(a) + ", b " +
                    shape_str(b) + (to.empty() ? "" : ", sum_to " + shape_str(to)));
  g.brank = int(r) - 2;
  g.a_mat = a[ra - 2] * a[ra - 1];
  g.b_mat = b[rb - 2] * b[rb - 1];
  g.a_m = ta ? 1 : g.K, g.a_k = ta ? g.M : 1;
  g.b_k = tb ? 1 : g.N, g.b_n = tb ? g.K : 1;
  Shape prod(r), target(r);
  int64_t sa = g.a_mat, sb = g.b_mat, st = g.M * g.N;
  bool ok = true;
  for (int d = g.brank - 1; d >= 0; --d) {  // d: index into the padded batch dims
    const int off = g.brank - 1 - d;        // distance from the last batch dim
    const int64_t da = off < int(ra) - 2 ? a[ra - 3 - off] : 1, db = off < int(rb) - 2 ? b[rb - 3 - off] : 1;
    if (da != db && da != 1 && db != 1)
      op_error(n, "batch dims of a " + shape_str(a) + " and b " + shape_str(b) + " do not broadcast");
    const int64_t p = std::max(da, db);
    const int64_t dt = to.empty() ? p : off < int(rt) - 2 ? to[rt - 3 - off] : 1;
    ok = ok && (dt == p || dt == 1 || p == 1);
    prod[d] = p, target[d] = dt;
    g.batch[d] = std::max(p, dt);
    g.a_bs[d] = da == 1 ? 0 : sa;
    g.b_bs[d] = db == 1 ? 0 : sb;
    g.t_bs[d] = dt == 1 && g.batch[d] != 1 ? 0 : st;
    if (g.t_bs[d] == 0) g.reduces = true;
    sa *= da, sb *= db, st *= dt;
    g.nbatch *= g.batch[d];
    g.tbatch *= dt;
  }
  prod[r - 2] = target[r - 2] = g.M, prod[r - 1] = target[r - 1] = g.N;
  if (!ok)
    op_error(n, "attribute 'sum_to' " + shape_str(to) + " does not fit the product's shape " +
                    shape_str(Shape(prod.end() - std::max(ra, rb), prod.end())) +
                    " (each batch dim equal, 1, or the product's 1)");
  if (to.empty()) target = Shape(prod.end() - std::max(ra, rb), prod.end());
  *out = to.empty() ? target : Shape(to.begin(), to.end());
  return g;
}

}  // namespace shape_ops
}  // namespace cnn
