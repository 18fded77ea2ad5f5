// The coordinate arithmetic of resize2d / resize2d_grad (ops/resize.cpp), shared by the reference kernels, the cpu
// kernels (cpu/resize.cpp) and the cuda kernels (cuda/resize.cu) so that all of them pick the same source pixels
// and weights. Header-only, host and device (nvcc).
//
// One output axis of length m reads an input axis of length n. Output index o maps to a source coordinate, in T
// (float for float32 tensors, as PyTorch computes it; double for float64), by the attribute `coord`:
//   0 asymmetric            src = r * o                       (PyTorch 'nearest'; ONNX asymmetric)
//   1 half_pixel            src = r * (o + 0.5) - 0.5         (PyTorch align_corners=False; ONNX half_pixel)
//   2 align_corners         src = o * (n - 1) / (m - 1), 0 when m == 1 (r is not used)
//   3 pytorch_half_pixel    as half_pixel, but src = 0 when m == 1 (ONNX pytorch_half_pixel)
//   4 tf_half_pixel_for_nn  src = r * (o + 0.5)
// plus `offset` (ONNX half_pixel_symmetric's shift, else 0). r is the input step per output step: 1 / scale_factor
// when PyTorch is given a scale factor (recompute_scale_factor not True), n / m otherwise.
// mode 0 (nearest) rounds src by `nearest`: 0 floor, 1 round_prefer_floor, 2 round_prefer_ceil, 3 ceil, then clamps
// to [0, n - 1]. mode 1 (linear) clamps src below at 0, takes i0 = min(floor(src), n - 1), i1 = min(i0 + 1, n - 1),
// weights l0 = 1 - (src - i0) and l1 = src - i0 (PyTorch's arithmetic; at the last pixel both weights land on it).
#pragma once
#include <cmath>
#include <cstdint>

#include <cnnnative/cnnnative.hpp>

#ifdef __CUDACC__
#define CNN_RZ_HD __host__ __device__
#else
#define CNN_RZ_HD
#endif

namespace cnn {
namespace resize {

enum Mode : int { kNearest = 0, kLinear = 1 };
enum Coord : int { kAsymmetric = 0, kHalfPixel = 1, kAlignCorners = 2, kPytorchHalfPixel = 3, kTfHalfPixelForNN = 4 };
enum Rounding : int { kFloor = 0, kRoundPreferFloor = 1, kRoundPreferCeil = 2, kCeil = 3 };

// One axis, its parameters in T.
template <class T>
struct Axis {
  int64_t n = 1, m = 1;  // input and output length
  int coord = kHalfPixel;
  T r = 1, offset = 0;
};

CNN_RZ_HD inline float rz_floor(float v) { return floorf(v); }
CNN_RZ_HD inline double rz_floor(double v) { return floor(v); }

template <class T>
CNN_RZ_HD inline T source(const Axis<T>& a, int64_t o) {
  T s;
  switch (a.coord) {
    case kAsymmetric: s = a.r * T(o); break;
    case kAlignCorners: s = a.m > 1 ? T(a.n - 1) / T(a.m - 1) * T(o) : T(0); break;
    case kPytorchHalfPixel: s = a.m > 1 ? a.r * (T(o) + T(0.5)) - T(0.5) : T(0); break;
    case kTfHalfPixelForNN: s = a.r * (T(o) + T(0.5)); break;
    default:  // kHalfPixel
      s = a.r * (T(o) + T(0.5)) - T(0.5);
  }
  return a.offset != T(0) ? s + a.offset : s;
}

// Nearest: the source index of output index o.
template <class T>
CNN_RZ_HD inline int64_t nearest_index(const Axis<T>& a, int rounding, int64_t o) {
  const T s = source(a, o);
  const T f = rz_floor(s);
  const T d = s - f;
  int64_t i = int64_t(f);
  if ((rounding == kRoundPreferFloor && d > T(0.5)) || (rounding == kRoundPreferCeil && d >= T(0.5)) ||
      (rounding == kCeil && d > T(0)))
    ++i;
  return i < 0 ? 0 : (i > a.n - 1 ? a.n - 1 : i);
}

// Linear: the two source indices and their weights of output index o.
template <class T>
struct Tap {
  int64_t i0, i1;
  T l0, l1;
};

template <class T>
CNN_RZ_HD inline Tap<T> linear_tap(const Axis<T>& a, int64_t o) {
  T s = source(a, o);
  if (s < T(0)) s = T(0);
  int64_t i0 = int64_t(s);
  if (i0 > a.n - 1) i0 = a.n - 1;
  const int64_t i1 = i0 < a.n - 1 ? i0 + 1 : i0;
  const T l1 = s - T(i0);
  return {i0, i1, T(1) - l1, l1};
}

// The lowest index of the first source index (nearest: the index; linear: i0) of output o; non-decreasing in o.
template <class T>
CNN_RZ_HD inline int64_t first_index(const Axis<T>& a, int mode, int rounding, int64_t o) {
  return mode == kNearest ? nearest_index(a, rounding, o) : linear_tap(a, o).i0;
}

// The first output index o in [0, m) with first_index(o) >= v (m if none): a binary search, first_index being
// monotone in o (every step of source() and of the rounding is monotone).
template <class T>
CNN_RZ_HD inline int64_t lower_bound(const Axis<T>& a, int mode, int rounding, int64_t v) {
  int64_t lo = 0, hi = a.m;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (first_index(a, mode, rounding, mid) < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// The weight output index o gives input index i along this axis (0 if it does not read it).
template <class T>
CNN_RZ_HD inline T weight(const Axis<T>& a, int mode, int rounding, int64_t o, int64_t i) {
  if (mode == kNearest) return nearest_index(a, rounding, o) == i ? T(1) : T(0);
  const Tap<T> t = linear_tap(a, o);
  return (t.i0 == i ? t.l0 : T(0)) + (t.i1 == i ? t.l1 : T(0));
}

// The outputs [lo, hi) that read input index i: the first index of every output that reads i is i (nearest) or
// i - 1 or i (linear), so they form one run.
template <class T>
CNN_RZ_HD inline void readers(const Axis<T>& a, int mode, int rounding, int64_t i, int64_t* lo, int64_t* hi) {
  *lo = lower_bound(a, mode, rounding, mode == kNearest ? i : i - 1);
  *hi = lower_bound(a, mode, rounding, i + 1);
}

// The node's attributes for input shape x [N, C, H, W] (host; ops/resize.cpp validates them at shape inference).
struct Params {
  int mode = kLinear, rounding = kFloor;
  Axis<double> h, w;
  template <class T>
  static Axis<T> as(const Axis<double>& a) {
    Axis<T> b;
    b.n = a.n, b.m = a.m, b.coord = a.coord, b.r = T(a.r), b.offset = T(a.offset);
    return b;
  }
};

inline Params read_params(const Attrs& at, const Shape& x) {
  Params p;
  p.mode = int(at.i("mode", kLinear));
  p.rounding = int(at.i("nearest", kFloor));
  const std::vector<int64_t> sz = at.is("size", {1, 1});
  const int coord = int(at.i("coord", kHalfPixel));
  Axis<double>* ax[2] = {&p.h, &p.w};
  for (int k = 0; k < 2; ++k) {
    Axis<double>& a = *ax[k];
    a.n = x[2 + k], a.m = sz[k], a.coord = coord;
    a.r = at.f(k ? "rw" : "rh", double(a.n) / double(a.m));
    a.offset = at.f(k ? "offset_w" : "offset_h", 0.0);
  }
  return p;
}

}  // namespace resize
}  // namespace cnn
