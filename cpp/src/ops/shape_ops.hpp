// Index geometry of the shape op family (ops/shape_ops.cpp), shared by the reference kernels, the cpu kernels
// (cpu/shape_ops.cpp) and the cuda kernels (cuda/shape_ops.cu), so that every backend walks tensors alike and
// sums gradients in one order. Header-only, no engine includes: nvcc compiles it for the device too.
//   Strided: y[i] = x[base + sum_d idx_d(i) * stride_d] over y's shape (transpose: permuted strides; slice:
//     strides times steps, base at the starts; slice_grad scatters the other way).
//   PadGeom: pad_nd's per-axis source index of an output index (constant: none, reflect, replicate) and its
//     inverse as at most three ranges of output indices per axis; pad_nd_grad sums dy over their product in
//     ascending order.
//   MatmulGeom: matmul's batch broadcasting (strides 0 along broadcast dims) and the optional target shape
//     that sums over some batch dims and repeats along others (a broadcast operand's gradient).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define CNN_HD __host__ __device__
#else
#define CNN_HD
#endif

namespace cnn {
namespace shape_ops {

constexpr int kMaxRank = 6;

struct Strided {
  int rank = 0;
  int64_t dims[kMaxRank] = {};    // y's shape
  int64_t stride[kMaxRank] = {};  // x's element step per unit of y's index along each dim
  int64_t base = 0;
  // x offset of y's element i (row-major in dims)
  CNN_HD int64_t offset(int64_t i) const {
    int64_t off = base;
    for (int d = rank - 1; d >= 0; --d) {
      off += (i % dims[d]) * stride[d];
      i /= dims[d];
    }
    return off;
  }
};

enum PadMode : int { kConstant = 0, kReflect = 1, kReplicate = 2 };

struct PadGeom {
  int rank = 0;
  int mode = kConstant;
  int64_t in[kMaxRank] = {}, out[kMaxRank] = {}, before[kMaxRank] = {};
};

// Source index along one axis of output index o (-1: the constant), for an axis of n with `before` padding.
CNN_HD inline int64_t pad_src(int64_t o, int64_t n, int64_t before, int mode) {
  const int64_t i = o - before;
  if (i >= 0 && i < n) return i;
  if (mode == kConstant) return -1;
  if (mode == kReplicate) return i < 0 ? 0 : n - 1;
  return i < 0 ? -i : 2 * (n - 1) - i;  // reflect (pads < n)
}

// x offset of output element o, or -1 for a constant element.
CNN_HD inline int64_t pad_src_offset(const PadGeom& g, int64_t o) {
  int64_t off = 0, mul = 1;
  for (int d = g.rank - 1; d >= 0; --d) {
    const int64_t s = pad_src(o % g.out[d], g.in[d], g.before[d], g.mode);
    if (s < 0) return -1;
    off += s * mul;
    mul *= g.in[d];
    o /= g.out[d];
  }
  return off;
}

// The output indices along one axis that read input index j: up to 3 ranges [lo, hi], ascending.
CNN_HD inline int pad_dst_ranges(int64_t j, int64_t n, int64_t before, int64_t after, int mode, int64_t* lo,
                                 int64_t* hi) {
  if (mode == kReplicate) {
    lo[0] = j == 0 ? 0 : j + before;
    hi[0] = j == n - 1 ? before + n - 1 + after : j + before;
    return 1;
  }
  int k = 0;
  if (mode == kReflect && j >= 1 && j <= before) lo[k] = hi[k] = before - j, ++k;
  lo[k] = hi[k] = j + before, ++k;
  const int64_t m = 2 * (n - 1) - j;  // the mirrored unpadded index right of the axis
  if (mode == kReflect && m >= n && m <= n - 1 + after) lo[k] = hi[k] = before + m, ++k;
  return k;
}

// dx[xi] = sum of dy over every output element that reads x's element xi, in ascending output order.
template <class T>
CNN_HD T pad_grad_at(const PadGeom& g, int64_t xi, const T* dy) {
  int64_t lo[kMaxRank][3], hi[kMaxRank][3], pos[kMaxRank];
  int cnt[kMaxRank], item[kMaxRank];
  for (int d = g.rank - 1; d >= 0; --d) {
    const int64_t j = xi % g.in[d];
    xi /= g.in[d];
    cnt[d] = pad_dst_ranges(j, g.in[d], g.before[d], g.out[d] - g.in[d] - g.before[d], g.mode, lo[d], hi[d]);
    item[d] = 0;
    pos[d] = lo[d][0];
  }
  T s = T(0);
  for (;;) {
    int64_t off = 0;
    for (int d = 0; d < g.rank; ++d) off = off * g.out[d] + pos[d];
    s += dy[off];
    int d = g.rank - 1;
    for (; d >= 0; --d) {
      if (pos[d] < hi[d][item[d]]) {
        ++pos[d];
        break;
      }
      if (item[d] + 1 < cnt[d]) {
        ++item[d];
        pos[d] = lo[d][item[d]];
        break;
      }
      item[d] = 0;
      pos[d] = lo[d][0];
    }
    if (d < 0) break;
  }
  return s;
}

struct MatmulGeom {
  int brank = 0;                   // batch rank of the full product (operands left-padded with 1s)
  int64_t batch[kMaxRank] = {};    // the full product's batch dims
  int64_t a_bs[kMaxRank] = {};     // a's element stride per batch dim (0: broadcast)
  int64_t b_bs[kMaxRank] = {};     // b's
  int64_t t_bs[kMaxRank] = {};     // the target's (0: summed over)
  int64_t nbatch = 1, tbatch = 1;  // batch entries of the full product / of the target
  int64_t M = 1, N = 1, K = 1;
  int64_t a_m = 0, a_k = 0;      // a's strides of op(A)[m, k] inside one matrix
  int64_t b_k = 0, b_n = 0;      // b's strides of op(B)[k, n]
  int64_t a_mat = 0, b_mat = 0;  // elements of one matrix of a / b
  bool reduces = false;          // the target sums over some batch dims
  CNN_HD void offsets(int64_t bi, int64_t& ao, int64_t& bo, int64_t& to) const {
    ao = bo = to = 0;
    for (int d = brank - 1; d >= 0; --d) {
      const int64_t i = bi % batch[d];
      bi /= batch[d];
      ao += i * a_bs[d], bo += i * b_bs[d], to += i * t_bs[d];
    }
  }
  // The full batch index of the j-th (ascending) batch entry summed into target batch entry t (j < nbatch/tbatch).
  CNN_HD int64_t full_index(int64_t t, int64_t j) const {
    int64_t bi = 0, mul = 1;
    for (int d = brank - 1; d >= 0; --d) {
      int64_t i;
      if (t_bs[d] == 0 && batch[d] != 1) {
        i = j % batch[d], j /= batch[d];
      } else {
        i = t % batch[d], t /= batch[d];
      }
      bi += i * mul;
      mul *= batch[d];
    }
    return bi;
  }
};

}  // namespace shape_ops
}  // namespace cnn
