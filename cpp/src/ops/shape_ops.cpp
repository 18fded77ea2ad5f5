// The shape op family: data movement of activations of any rank <= 6, and the batched matrix product.
//   transpose (x; perm) -> y, y.shape[i] = x.shape[perm[i]]; backward: transpose by the inverse permutation.
//   slice (x; starts, steps, sizes: one per axis) -> y [sizes], y[i] = x[starts + i * steps] (steps != 0;
//     negative steps walk backwards; every index must fall inside x). Backward: slice_grad (dy; starts, steps,
//     sizes = dy's shape, shape = x's shape) -> dx, dy scattered back, zero elsewhere.
//   pad_nd (x; pads = [before_0.., after_0..] >= 0, mode 0 constant / 1 reflect / 2 replicate, value) -> y,
//     PyTorch's F.pad / ONNX Pad of any axes. Reflect needs each pad < the axis' extent. Backward: pad_nd_grad
//     (dy; pads, mode) -> dx, the sum of dy over the elements that read each x element (shape_ops.hpp).
//   matmul (a, b; trans_a, trans_b, sum_to) -> y = op(a) @ op(b) over broadcast batch dims, numpy's matmul of
//     operands of rank >= 2 (1-D operands are reshaped by the front ends). With sum_to (the output's shape: along
//     each batch dim the product's, 1 = summed over, or any size where the product's is 1 = repeated), the
//     gradient of a broadcast operand in one op. Backward: two more matmuls, sum_to the operands' shapes.
// Reference kernels are plain loops over the shared geometry of shape_ops.hpp (float and double).
#include "ops/shape_ops.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/op.hpp"
#include "ops/shape_ops_geom.hpp"

namespace cnn {
namespace {

using namespace shape_ops;

void check_float(const Node& n, const std::vector<TensorDesc>& in, size_t count, const char* what) {
  if (in.size() != count)
    op_error(n, "expects " + std::to_string(count) + " input(s) (" + what + "), got " + std::to_string(in.size()) +
                    ": " + descs_str(in));
  for (const TensorDesc& d : in) {
    if (!is_float(d.dtype)) op_error(n, std::string("expects float tensors, got ") + descs_str(in));
    if (d.shape.empty() || int(d.shape.size()) > kMaxRank)
      op_error(n, "tensors of rank 1 to " + std::to_string(kMaxRank) + " are supported, got " + descs_str(in));
  }
}

// ---- reference kernels ----

template <class T>
struct TransposeRef {
  static void run(const RefArgs<T>& a) {
    const Strided s = transpose_geom(a.k.node, a.in_shape(0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) y[i] = x[s.offset(i)];
  }
};

template <class T>
struct SliceRef {
  static void run(const RefArgs<T>& a) {
    const Strided s = slice_geom(a.k.node, a.in_shape(0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) y[i] = x[s.offset(i)];
  }
};

template <class T>
struct SliceGradRef {
  static void run(const RefArgs<T>& a) {
    const Strided s = slice_geom(a.k.node, a.out_shape(0));
    const T* dy = a.in(0);
    T* dx = a.out(0);
    std::fill(dx, dx + numel(a.out_shape(0)), T(0));
    for (int64_t i = 0, n = numel(a.in_shape(0)); i < n; ++i) dx[s.offset(i)] = dy[i];
  }
};

template <class T>
struct PadRef {
  static void run(const RefArgs<T>& a) {
    const PadGeom g = pad_geom(a.k.node, a.in_shape(0));
    const T v = T(a.attrs().f("value", 0.0));
    const T* x = a.in(0);
    T* y = a.out(0);
    for (int64_t o = 0, n = numel(a.out_shape(0)); o < n; ++o) {
      const int64_t s = pad_src_offset(g, o);
      y[o] = s < 0 ? v : x[s];
    }
  }
};

template <class T>
struct PadGradRef {
  static void run(const RefArgs<T>& a) {
    const PadGeom g = pad_geom(a.k.node, a.out_shape(0));
    const T* dy = a.in(0);
    T* dx = a.out(0);
    for (int64_t i = 0, n = numel(a.out_shape(0)); i < n; ++i) dx[i] = pad_grad_at(g, i, dy);
  }
};

template <class T>
struct MatmulRef {
  static void run(const RefArgs<T>& a) {
    Shape ys;
    const MatmulGeom g = matmul_geom(a.k.node, a.in_shape(0), a.in_shape(1), &ys);
    const T *A = a.in(0), *B = a.in(1);
    T* Y = a.out(0);
    std::fill(Y, Y + numel(ys), T(0));
    for (int64_t bi = 0; bi < g.nbatch; ++bi) {
      int64_t ao, bo, to;
      g.offsets(bi, ao, bo, to);
      for (int64_t m = 0; m < g.M; ++m)
        for (int64_t n = 0; n < g.N; ++n) {
          T s = 0;
          for (int64_t k = 0; k < g.K; ++k) s += A[ao + m * g.a_m + k * g.a_k] * B[bo + k * g.b_k + n * g.b_n];
          Y[to + m * g.N + n] += s;
        }
    }
  }
};

Attrs matmul_attrs(int64_t ta, int64_t tb, const Shape& sum_to) {
  Attrs a;
  a.ints["trans_a"] = {ta};
  a.ints["trans_b"] = {tb};
  a.ints["sum_to"] = sum_to;
  return a;
}

struct Registrar {
  Registrar() {
    OpSchema t;
    t.name = "transpose";
    t.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 1, "x");
      const std::vector<int64_t> p = perm_attr(n, in[0].shape.size());
      Shape y;
      for (int64_t d : p) y.push_back(in[0].shape[d]);
      return {TensorDesc{y, in[0].dtype}};
    };
    t.grad = [](GradCtx& c) {
      if (!c.need_dx(0)) return;
      const std::vector<int64_t> p = c.node().attrs.is("perm", {});
      std::vector<int64_t> inv(p.size());
      for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = int64_t(i);
      Attrs a;
      a.ints["perm"] = inv;
      c.set_dx(0, c.emit("transpose", {c.dy(0)}, a)[0]);
    };
    t.recompute = RecomputeClass::cheap;
    t.ref = ref_kernel<TransposeRef>();
    register_op(t);

    OpSchema s;
    s.name = "slice";
    s.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 1, "x");
      slice_geom(n, in[0].shape);
      return {TensorDesc{n.attrs.is("sizes", {}), in[0].dtype}};
    };
    s.grad = [](GradCtx& c) {
      if (!c.need_dx(0)) return;
      Attrs a;
      a.ints["starts"] = c.node().attrs.is("starts", {});
      a.ints["steps"] = c.node().attrs.is("steps", {});
      a.ints["sizes"] = c.node().attrs.is("sizes", {});
      a.ints["shape"] = c.desc(c.input(0)).shape;
      c.set_dx(0, c.emit("slice_grad", {c.dy(0)}, a)[0]);
    };
    s.recompute = RecomputeClass::cheap;
    s.ref = ref_kernel<SliceRef>();
    register_op(s);

    OpSchema sg;
    sg.name = "slice_grad";
    sg.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 1, "dy");
      const Shape x = n.attrs.is("shape", {});
      if (x.size() != in[0].shape.size() || std::any_of(x.begin(), x.end(), [](int64_t v) { return v < 1; }))
        op_error(n, "attribute 'shape' " + shape_str(x) + " must be the sliced input's shape, of dy's rank " +
                        std::to_string(in[0].shape.size()));
      if (n.attrs.is("sizes", {}) != in[0].shape)
        op_error(n, "attribute 'sizes' " + shape_str(n.attrs.is("sizes", {})) + " must be dy's shape " +
                        shape_str(in[0].shape));
      slice_geom(n, x);
      return {TensorDesc{x, in[0].dtype}};
    };
    sg.ref = ref_kernel<SliceGradRef>();
    register_op(sg);

    OpSchema p;
    p.name = "pad_nd";
    p.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 1, "x");
      const PadGeom g = pad_geom(n, in[0].shape);
      return {TensorDesc{Shape(g.out, g.out + g.rank), in[0].dtype}};
    };
    p.grad = [](GradCtx& c) {
      if (!c.need_dx(0)) return;
      Attrs a;
      a.ints["pads"] = c.node().attrs.is("pads", {});
      a.ints["mode"] = {c.node().attrs.i("mode", 0)};
      c.set_dx(0, c.emit("pad_nd_grad", {c.dy(0)}, a)[0]);
    };
    p.recompute = RecomputeClass::cheap;
    p.ref = ref_kernel<PadRef>();
    register_op(p);

    OpSchema pg;
    pg.name = "pad_nd_grad";
    pg.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 1, "dy");
      const std::vector<int64_t> pads = n.attrs.is("pads", {});
      const Shape& y = in[0].shape;
      const size_t r = y.size();
      if (pads.size() != 2 * r)
        op_error(n, "attribute 'pads' " + shape_str(pads) + " must hold " + std::to_string(2 * r) + " values for dy " +
                        shape_str(y));
      Shape x(r);
      for (size_t d = 0; d < r; ++d) {
        x[d] = y[d] - pads[d] - pads[r + d];
        if (pads[d] < 0 || pads[r + d] < 0 || x[d] < 1)
          op_error(n, "dy " + shape_str(y) + " is too small for pads " + shape_str(pads));
      }
      pad_geom(n, x);  // the forward's checks (reflect pads < extent)
      return {TensorDesc{x, in[0].dtype}};
    };
    pg.ref = ref_kernel<PadGradRef>();
    register_op(pg);

    OpSchema m;
    m.name = "matmul";
    m.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
      check_float(n, in, 2, "a, b");
      if (in[0].dtype != in[1].dtype) op_error(n, "a and b must have one dtype, got " + descs_str(in));
      Shape y;
      matmul_geom(n, in[0].shape, in[1].shape, &y);
      return {TensorDesc{y, in[0].dtype}};
    };
    m.grad = [](GradCtx& c) {
      const Node& n = c.node();
      const int64_t ta = n.attrs.i("trans_a", 0), tb = n.attrs.i("trans_b", 0);
      const Shape &as = c.desc(c.input(0)).shape, &bs = c.desc(c.input(1)).shape;
      const int dy = c.dy(0), A = c.input(0), B = c.input(1);
      // y = op(A) op(B): d op(A) = dy op(B)^T, d op(B) = op(A)^T dy
      if (c.need_dx(0)) {
        const std::vector<int> da = ta ? c.emit("matmul", {B, dy}, matmul_attrs(tb, 1, as), "grad_a")
                                       : c.emit("matmul", {dy, B}, matmul_attrs(0, 1 - tb, as), "grad_a");
        c.set_dx(0, da[0]);
      }
      if (c.need_dx(1)) {
        const std::vector<int> db = tb ? c.emit("matmul", {dy, A}, matmul_attrs(1, ta, bs), "grad_b")
                                       : c.emit("matmul", {A, dy}, matmul_attrs(1 - ta, 0, bs), "grad_b");
        c.set_dx(1, db[0]);
      }
    };
    m.recompute = RecomputeClass::costly;
    m.ref = ref_kernel<MatmulRef>();
    m.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      // 2 M N K per batch entry of the full product (sum_to may make the output smaller); K is a's dim that is
      // not M (either when both equal M)
      const Shape &a = in[0].shape, &b = in[1].shape, &y = out[0].shape;
      const size_t ra = a.size(), rb = b.size(), r = std::max(ra, rb);
      double nb = 1;
      for (size_t d = 2; d < r; ++d) {
        const int64_t da = d < ra ? a[ra - 1 - d] : 1, db = d < rb ? b[rb - 1 - d] : 1;
        nb *= double(std::max(da, db));
      }
      const int64_t M = y[y.size() - 2], K = a[ra - 2] == M ? a[ra - 1] : a[ra - 2];
      return 2.0 * nb * double(M) * double(y.back()) * double(K);
    };
    register_op(m);
  }
} registrar;

}  // namespace
}  // namespace cnn
