// concat: >= 1 float inputs of one rank and dtype, equal in every dimension but `axis` (default 1,
// negative counts from the end) -> y, the inputs laid side by side along axis (DenseNet, Inception,
// U-Net skips). split: x, attrs axis and sizes [s0, s1, ...] (positive, summing to x's extent along axis)
// -> one output per size; it is concat's backward, so concat's grad rule is a single split of dy whose
// outputs become each input's gradient (autodiff sums them when one value is concatenated twice).
// split has no grad rule. Reference kernels copy contiguous row blocks; they never call oneDNN.
#include <cstring>

#include "core/op.hpp"

namespace cnn {
namespace {

// Validated axis in [0, rank).
int64_t concat_axis(const Node& n, const Shape& like) {
  const int64_t r = int64_t(like.size()), a = n.attrs.i("axis", 1);
  if (a < -r || a >= r)
    op_error(n, "axis " + std::to_string(a) + " is out of range for rank-" + std::to_string(r) + " input " +
                    shape_str(like) + " (expected " + std::to_string(-r) + " .. " + std::to_string(r - 1) + ")");
  return a < 0 ? a + r : a;
}

// Shape with '*' at the free axis: what every input must look like.
std::string pattern_str(const Shape& s, int64_t axis) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i)
    o += (i ? ", " : "") + (int64_t(i) == axis ? std::string("*") : std::to_string(s[i]));
  return o + "]";
}

std::vector<TensorDesc> concat_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.empty()) op_error(n, "expects at least 1 input, got none");
  const Shape& s0 = in[0].shape;
  if (s0.empty()) op_error(n, "inputs must have rank >= 1, input 0 is a scalar");
  for (size_t i = 0; i < in.size(); ++i)
    if (!is_float(in[i].dtype) || in[i].dtype != in[0].dtype)
      op_error(n, "expects float inputs of one dtype, input " + std::to_string(i) + " is " + dtype_name(in[i].dtype) +
                      " (inputs: " + descs_str(in) + ")");
  const int64_t axis = concat_axis(n, s0);
  std::string bad;
  Shape y = s0;
  y[axis] = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const Shape& s = in[i].shape;
    bool ok = s.size() == s0.size();
    for (size_t d = 0; ok && d < s.size(); ++d) ok = int64_t(d) == axis || s[d] == s0[d];
    if (!ok)
      bad += (bad.empty() ? "" : ", ") + std::string("input ") + std::to_string(i) + " " + shape_str(s);
    else
      y[axis] += s[axis];
  }
  if (!bad.empty())
    op_error(n, "every input must match input 0 " + shape_str(s0) + " except along axis " + std::to_string(axis) +
                    ", i.e. be " + pattern_str(s0, axis) + "; mismatching: " + bad);
  return {TensorDesc{y, in[0].dtype}};
}

std::vector<TensorDesc> split_infer(const Node& n, const std::vector<TensorDesc>& in) {
  if (in.size() != 1) op_error(n, "expects 1 input, got " + std::to_string(in.size()) + ": " + descs_str(in));
  if (!is_float(in[0].dtype)) op_error(n, std::string("expects a float tensor, got ") + dtype_name(in[0].dtype));
  const Shape& x = in[0].shape;
  if (x.empty()) op_error(n, "input must have rank >= 1, got a scalar");
  const int64_t axis = concat_axis(n, x);
  const std::vector<int64_t> sizes = n.attrs.is("sizes", {});
  if (sizes.empty())
    op_error(n, "missing attribute 'sizes' (extent of each output along axis " + std::to_string(axis) + ")");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s <= 0) op_error(n, "sizes must be positive, got " + shape_str(sizes));
    total += s;
  }
  if (total != x[axis])
    op_error(n, "sizes " + shape_str(sizes) + " sum to " + std::to_string(total) + " but input " + shape_str(x) +
                    " has " + std::to_string(x[axis]) + " along axis " + std::to_string(axis));
  std::vector<TensorDesc> out;
  for (int64_t s : sizes) {
    Shape o = x;
    o[axis] = s;
    out.push_back(TensorDesc{o, in[0].dtype});
  }
  return out;
}

// outer = product of dims before axis, inner = product after; the big tensor's row (one outer index) is the
// pieces' rows side by side, piece k's row holding extent_k * inner contiguous elements.
void outer_inner(const Shape& s, int64_t axis, int64_t& outer, int64_t& inner) {
  outer = inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
}

template <class T>
struct ConcatRef {
  static void run(const RefArgs<T>& a) {
    const Shape& ys = a.out_shape(0);
    const int64_t axis = concat_axis(a.k.node, ys);
    int64_t outer, inner;
    outer_inner(ys, axis, outer, inner);
    const int64_t row = ys[axis] * inner;
    T* y = a.out(0);
    for (int64_t o = 0; o < outer; ++o) {
      int64_t off = 0;
      for (size_t k = 0; k < a.k.in.size(); ++k) {
        const int64_t len = a.in_shape(int(k))[axis] * inner;
        std::memcpy(y + o * row + off, a.in(int(k)) + o * len, size_t(len) * sizeof(T));
        off += len;
      }
    }
  }
};

template <class T>
struct SplitRef {
  static void run(const RefArgs<T>& a) {
    const Shape& xs = a.in_shape(0);
    const int64_t axis = concat_axis(a.k.node, xs);
    int64_t outer, inner;
    outer_inner(xs, axis, outer, inner);
    const int64_t row = xs[axis] * inner;
    const T* x = a.in(0);
    for (int64_t o = 0; o < outer; ++o) {
      int64_t off = 0;
      for (size_t k = 0; k < a.k.out.size(); ++k) {
        const int64_t len = a.out_shape(int(k))[axis] * inner;
        std::memcpy(a.out(int(k)) + o * len, x + o * row + off, size_t(len) * sizeof(T));
        off += len;
      }
    }
  }
};

struct Registrar {
  Registrar() {
    OpSchema c;
    c.name = "concat";
    c.infer = concat_infer;
    c.recompute = RecomputeClass::cheap;
    c.grad = [](GradCtx& g) {
      const Node& n = g.node();
      const int64_t axis = concat_axis(n, g.desc(g.output(0)).shape);
      Attrs a;
      a.ints["axis"] = {axis};
      std::vector<int64_t> sizes;
      for (size_t i = 0; i < n.inputs.size(); ++i) sizes.push_back(g.desc(g.input(int(i))).shape[axis]);
      a.ints["sizes"] = sizes;
      std::vector<int> parts = g.emit("split", {g.dy(0)}, a);
      for (size_t i = 0; i < n.inputs.size(); ++i)
        if (g.need_dx(int(i))) g.set_dx(int(i), parts[i]);
    };
    c.ref = ref_kernel<ConcatRef>();
    register_op(c);

    OpSchema s;
    s.name = "split";
    s.infer = split_infer;
    s.recompute = RecomputeClass::costly;
    s.ref = ref_kernel<SplitRef>();
    register_op(s);
  }
} registrar;

}  // namespace
}  // namespace cnn
