// Exact-enough reductions for the CPU kernels (pooling, batch norm, softmax): vectorized building blocks that
// accumulate in float64, so a sum of 2^28 floats is as good as its float64 rounding (a float accumulator stops
// growing at 2^24: a float sum of 8192^2 ones is 2^24 = a quarter of the truth).
//
// Owns: the run-time ISA dispatch (AVX-512F, else AVX2+FMA, else scalar; chosen once, as host/optim.cpp does,
// with function-level target regions so the translation unit runs on any x86-64), bfloat16 <-> float
// conversion (round to nearest even), and these single-threaded kernels.
//
// Data views. "Lanes": P pixels of V lanes, lane v of pixel p at x[p*ld + v] (a blocked nChw16c/nChw8c group:
// V = ld = 16/8; an nhwc image or a plain [N, C] matrix: V = ld = C). V = ld = 1 is a contiguous run, vectorized
// along p. Each function's summation order is fixed by its arguments alone (never by threads or timing), so
// callers that cut a problem into pieces by its size and combine the pieces in a fixed order get results
// independent of the thread count. Nothing here allocates.
#pragma once
#include <cstdint>
#include <vector>

#include "core/op.hpp"

namespace cnn {
namespace cpu {
namespace red {

// bfloat16 storage (the upper half of a float32).
struct bf16 {
  uint16_t bits;
};
float to_f32(bf16 v);
bf16 to_bf16(float f);  // round to nearest even; NaN stays a (quiet) NaN

// 2 = AVX-512F, 1 = AVX2 + FMA, 0 = scalar. CNNNATIVE_REDUCE_ISA=0/1/2 caps it (tests of the fallbacks).
int isa_level();

// acc[v] += sum_p x[p*ld + v] (float64).
template <class T>
void lane_sum(const T* x, int64_t P, int64_t V, int64_t ld, double* acc);

// Two-pass statistics of one chunk, per lane (overwrites): sum[v] = sum_p x, m2[v] = sum_p (x - mean_v)^2 with
// mean_v = sum[v] / P. The deviations are taken from the float nearest the chunk mean and corrected exactly
// for that shift (sum (x-a)^2 = M2 + P (mean-a)^2), squares accumulated in float64: no cancellation whatever
// the mean. Callers combine chunks as M2 = sum_k M2_k + cnt_k (mean_k - mean)^2 (cpu/batch_norm.cpp).
template <class T>
void lane_stats(const T* x, int64_t P, int64_t V, int64_t ld, double* sum, double* m2);

// Batch-norm backward sums (overwrites): sdy[v] = sum_p dy, sdyx[v] = sum_p dy * (x - mean[v]); mean has V
// entries (one for V = 1). Products of two floats are exact in float64.
template <class T>
void lane_dot(const T* dy, const T* x, int64_t P, int64_t V, int64_t ld, const float* mean, double* sdy, double* sdyx);

// y = (x - m[v]) * s[v] + t[v] (float, one fused multiply-add); y may be x. stream: full aligned vectors are
// written with non-temporal stores (for outputs far larger than the caches: no read for ownership); a kernel that
// streamed calls stream_fence() before its results are read by another thread.
template <class T>
void lane_affine(const T* x, T* y, int64_t P, int64_t V, int64_t ld, const float* m, const float* s, const float* t,
                 bool stream = false);
// dx = dy * a[v] + ((x - m[v]) * b[v] + c[v]); dx may be dy. stream as above.
template <class T>
void lane_affine_bwd(const T* dy, const T* x, T* dx, int64_t P, int64_t V, int64_t ld, const float* m, const float* a,
                     const float* b, const float* c, bool stream = false);
void stream_fence();

// Softmax rows (float, contiguous). A row is cut into chunks of kSoftmaxChunk elements; each chunk gives its max
// m and s = sum exp(x - m) (float64), combined in chunk order by softmax_combine. With e non-null, the chunk's
// exp(x - m) is written there.
constexpr int64_t kSoftmaxChunk = 4096;
void softmax_chunk(const float* x, int64_t n, float* m, double* s, float* e);
// Combines chunk stats (m[k], s[k]), k < K: M = max m, S = sum_k s[k] * exp(m[k] - M), in k order.
void softmax_combine(const float* m, const double* s, int64_t K, float* M, double* S);
void scale(float* y, int64_t n, float f);                                          // y *= f
void exp_scale(const float* x, float* y, int64_t n, float m, float f);             // y = exp(x - m) * f
double dot(const float* a, const float* b, int64_t n);                             // sum a*b in float64
void softmax_bwd(const float* dy, const float* y, float* dx, int64_t n, float d);  // dx = y * (dy - d)

// acc[0..V) = the float64 sum of the window [h0, h1) x [w0, w1) of an image of W-pixel rows of V lanes (pixel
// stride V; V = 1: rows are runs of floats).
void window_sum(const float* x, int64_t W, int64_t V, int64_t h0, int64_t h1, int64_t w0, int64_t w1, double* acc);

// Average-pooling windows of one image: output (oh, ow) averages rows [h0[oh], h1[oh]) x columns [w0[ow], w1[ow])
// times inv[oh * OW + ow] (1 / its divisor; 0 for an empty window).
struct PoolWindows {
  std::vector<int64_t> h0, h1, w0, w1;
  std::vector<double> inv;
};
// One image of W-pixel rows of V lanes (pixel stride V) -> y [OH, OW, V], float64 window sums. Up to 64 lanes:
// window by window (red::window_sum, accumulators in registers); wider pixels (nhwc): output row by output row,
// each input row's window segments added in turn into acc (OW * V doubles), reading the image row-contiguously.
void avg_pool_image(const float* x, float* y, int64_t W, int64_t V, const PoolWindows& w, double* acc);

// A tensor [N, C, H, W] (or [N, C] as [N, C, 1, 1]) stored in a session layout, seen as G groups of S pixels of V
// lanes, group g at g*S*V, pixel stride V: plain: G = N*C, S = H*W, V = 1; nhwc: G = N, V = C; nChw{b}c:
// G = N*ceil(C/b), V = b (Cp = padded C). fold_n (reductions over N and the pixels, batch norm): plain with
// H*W = 1, e.g. [N, C], becomes G = 1 group of S = N pixels of V = C lanes, like nhwc.
// Channel c lies in groups group(n, c), n < per_c, at lane lane(c); lane v of group g is channel chan0(g) + v.
struct LaneView {
  enum Kind { Plain, Rows, Blocked } kind;  // Rows: nhwc and the plain [N, C] view
  int64_t N, C, Cp, S, G, V, per_c;
  LaneView(const Shape& x, Layout l, bool fold_n = false) {
    N = x[0];
    C = x[1];
    const int64_t hw = x.size() == 4 ? x[2] * x[3] : 1;
    const int64_t b = l == Layout::nChw16c ? 16 : l == Layout::nChw8c ? 8 : 1;
    Cp = (C + b - 1) / b * b;
    if (b > 1)
      kind = Blocked, G = N * (Cp / b), S = hw, V = b, per_c = N;
    else if (l == Layout::nhwc)
      kind = Rows, G = N, S = hw, V = C, per_c = N;
    else if (hw == 1 && fold_n)
      kind = Rows, G = 1, S = N, V = C, per_c = 1;
    else
      kind = Plain, G = N * C, S = hw, V = 1, per_c = N;
  }
  int64_t group(int64_t n, int64_t c) const {
    return kind == Plain ? n * C + c : kind == Blocked ? n * (Cp / V) + c / V : n;
  }
  int64_t lane(int64_t c) const { return kind == Plain ? 0 : kind == Blocked ? c % V : c; }
  int64_t chan0(int64_t g) const { return kind == Plain ? g % C : kind == Blocked ? g % (Cp / V) * V : 0; }
};

}  // namespace red
}  // namespace cpu
}  // namespace cnn
