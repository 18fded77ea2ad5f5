// Broadcasting arithmetic shared by the binary op family (ops/binary.cpp, cpu/binary.cpp, cuda/binary.cu):
// NumPy's broadcast of two shapes, and the collapse of an output shape plus per-operand strides into the fewest
// dimensions that iterate the same elements (so a [N, C, H, W] * [N, C, 1, 1] product runs as [N*C, H*W] with the
// second operand's inner stride 0). Header only, no dependency beyond Shape.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <cnnnative/cnnnative.hpp>

namespace cnn {
namespace bcast {

// NumPy broadcast of a and b (trailing dimensions aligned, a 1 stretches); false when they do not broadcast.
inline bool broadcast_shape(const Shape& a, const Shape& b, Shape* out) {
  const size_t r = std::max(a.size(), b.size());
  Shape o(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i + a.size() >= r ? a[i + a.size() - r] : 1;
    int64_t db = i + b.size() >= r ? b[i + b.size() - r] : 1;
    if (da != db && da != 1 && db != 1) return false;
    o[i] = da == 1 ? db : da;
  }
  *out = o;
  return true;
}

// Whether `small` broadcasts to exactly `big` (rank <= big's, each dimension 1 or equal).
inline bool broadcasts_to(const Shape& small, const Shape& big) {
  if (small.size() > big.size()) return false;
  const size_t off = big.size() - small.size();
  for (size_t i = 0; i < small.size(); ++i)
    if (small[i] != 1 && small[i] != big[i + off]) return false;
  return true;
}

// Element strides of operand `s` (row-major, contiguous) read as a tensor of shape `out` it broadcasts to:
// 0 along the dimensions it stretches.
inline std::vector<int64_t> strides_in(const Shape& s, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  const size_t off = out.size() - s.size();
  int64_t m = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i + off] = s[i] == 1 ? 0 : m;
    m *= s[i];
  }
  return st;
}

// An iteration space: dims (outermost first) and, per operand, the element stride along each.
struct Space {
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> strides;  // [operand][dim]
};

// Drops size-1 dimensions and merges neighbours that every operand walks contiguously (stride[i] ==
// stride[i+1] * dims[i+1], broadcast ones included: 0 == 0 * d). Always at least one dimension.
inline Space collapse(const Shape& out, const std::vector<std::vector<int64_t>>& strides) {
  Space s;
  s.strides.resize(strides.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 1) continue;
    bool merge = !s.dims.empty();
    for (size_t k = 0; merge && k < strides.size(); ++k) merge = s.strides[k].back() == strides[k][i] * out[i];
    if (merge) {
      s.dims.back() *= out[i];
      for (size_t k = 0; k < strides.size(); ++k) s.strides[k].back() = strides[k][i];
    } else {
      s.dims.push_back(out[i]);
      for (size_t k = 0; k < strides.size(); ++k) s.strides[k].push_back(strides[k][i]);
    }
  }
  if (s.dims.empty()) {
    s.dims.push_back(1);
    for (auto& st : s.strides) st.push_back(0);
  }
  return s;
}

// The ops' kinds (attribute "kind" of binary_scalar; the binary_* ops fix theirs by name).
enum Kind : int { kAdd = 0, kSub = 1, kRsub = 2, kMul = 3, kDiv = 4, kRdiv = 5 };

template <class T>
inline T apply(int kind, T a, T b) {
  switch (kind) {
    case kAdd: return a + b;
    case kSub: return a - b;
    case kRsub: return b - a;
    case kMul: return a * b;
    case kDiv: return a / b;
    default: return b / a;
  }
}

}  // namespace bcast
}  // namespace cnn
