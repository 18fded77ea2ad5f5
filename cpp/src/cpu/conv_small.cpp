// Native AVX-512 kernels for convolutions with few channels on one side (LeNet's 1 -> 6 and 6 -> 16 layers, a
// grayscale or RGB first layer, a few-channel output layer), float32, plain NCHW, stride 1, dilation 1, one group,
// filters up to 7x7. oneDNN vectorizes convolutions over channel blocks of 16: with 1 or 6 channels most of each
// vector is padding (LeNet-5 b64 training on the 2-core Xeon: conv1 forward at 24 % of the FMA peak, conv1's weight
// gradient at 21 %, conv2's data gradient at 25 %), and the 6-channel activations in nChw16c carry 10 padding
// channels through every pooling, ReLU and reorder. These kernels vectorize over the output width instead (16
// columns per vector) and keep the activations in plain layout:
//   SmallFwd   conv2d (and fused_conv2d without a residual: folded BN, relu / leaky_relu) with at most 8 output
//   channels: y[n,k,oh,:] = b[k] + sum_c,i,j w[k,c,i,j] x[n,c,oh+i-ph,:+j-pw],
//              accumulators for 2 output rows x (up to 8) channels x (up to 2) vectors in registers, the filter
//              packed per run as [C][KH][KW][channel block] and its taps broadcast; and conv2d_grad_data with at
//              most 8 input channels below 16 images: the same loop on dy with the filter transposed and rotated
//              180 degrees (dx = conv(dy, w^T rotated), padding k-1-p; rows in the padding are skipped);
//   SmallBwdDataLanes  conv2d_grad_data with at most 8 input channels from 16 images: the batch in the lanes, dy
//              read in any layout (a blocked pooling gradient as it is);
//   SmallBwdW  conv2d_grad_weights with at most 4 input and 16 output channels: per filter row, accumulators for
//              (up to 8) output channels x the filter's columns, each a vector of 16 partial sums over output
//              columns, reduced once at the end; the bias gradient in the same pass.
// Every kernel pads its input into a per-thread buffer (no bounds checks in the inner loops; masked stores at the
// right edge). Reduction orders are fixed: the forward and data-gradient outputs are each summed by one thread in
// (c, i, j) order; the weight gradient sums over fixed chunks of the batch, then the chunks in order, so results do
// not depend on the thread count or scheduling (deterministic mode takes them too).
// CNNNATIVE_SMALL_CONV=0 turns them off (the layout rules then pick oneDNN's kernels): tests compare both.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "cpu/conv_common.hpp"

namespace cnn {
namespace cpu {
namespace conv {

namespace {

#define SMALL_AVX512 __attribute__((target("avx512f")))

constexpr int64_t kMaxSmallOut = 8;    // SmallFwd, SmallBwdDataLanes: output channels of the computed convolution
constexpr int64_t kMaxSmallInW = 4;    // SmallBwdW: input channels
constexpr int64_t kMaxSmallWOut = 16;  // and output channels
constexpr int64_t kMaxTap = 7;         // filter height and width
constexpr int kAccRegs = 24;           // accumulators kept in the 32 zmm registers

bool lanes_enabled() {  // CNNNATIVE_SMALL_CONV=rows: the row kernels only (tests compare the two)
  const char* e = std::getenv("CNNNATIVE_SMALL_CONV");
  return !(e && std::string(e) == "rows");
}
bool enabled() {  // read at every layout choice, so a test can compare both paths in one process
  const char* e = std::getenv("CNNNATIVE_SMALL_CONV");
  return __builtin_cpu_supports("avx512f") && !(e && std::string(e) == "0");
}

// The geometry of a stride-1 convolution in[N, CI, H, W] -> out[N, CO, OH, OW] with filter [CO, CI, KH, KW] and
// padding ph, pw on both sides (for the data gradient: the equivalent forward convolution of dy).
struct Geom {
  int64_t N, CI, CO, H, W, OH, OW, KH, KW, ph, pw;
  int act = 0;  // the forward's activation on store (fused_conv2d): 0 none, 1 relu, 2 leaky_relu (slope alpha)
  float alpha = 0.f;
  int64_t nv() const { return OW > 16 ? 2 : 1; }  // vectors per output-row chunk
  int64_t chunk() const { return nv() * 16; }     // output columns per chunk
  int64_t chunks() const { return (OW + chunk() - 1) / chunk(); }
  int64_t HP() const { return OH + KH - 1; }                                   // rows of a padded input plane
  int64_t WP() const { return (chunks() * chunk() + KW - 1 + 15) / 16 * 16; }  // columns (16-aligned rows)
};

// The shared conditions: float32, 4-D, stride 1, dilation 1, one group, a filter of at most kMaxTap taps a side,
// padding below the filter size.
bool plain_stride1(const Attrs& a, const Shape& x, const Shape& w, const Shape& y) {
  if (!enabled() || x.size() != 4 || w.size() != 4 || y.size() != 4 || a.i("groups", 1) != 1) return false;
  if (pair_attr(a, "stride", 1) != dims{1, 1} || pair_attr(a, "dilation", 1) != dims{1, 1}) return false;
  const dims p = pair_attr(a, "padding", 0);
  if (w[2] > kMaxTap || w[3] > kMaxTap || p[0] < 0 || p[1] < 0 || p[0] >= w[2] || p[1] >= w[3]) return false;
  return x[1] == w[1] && y[1] == w[0];
}

Geom fwd_geom(const Attrs& a, const Shape& x, const Shape& w, const Shape& y) {
  const dims p = pair_attr(a, "padding", 0);
  return {x[0], x[1], y[1], x[2], x[3], y[2], y[3], w[2], w[3], p[0], p[1]};
}
// dx = conv(dy, w^T flipped) with padding k-1-p: dy [N, K, OH, OW] is the input, dx [N, C, H, W] the output
Geom bwd_data_geom(const Attrs& a, const Shape& x, const Shape& w, const Shape& y) {
  const dims p = pair_attr(a, "padding", 0);
  return {x[0], y[1], x[1], y[2], y[3], x[2], x[3], w[2], w[3], w[2] - 1 - p[0], w[3] - 1 - p[1]};
}

// Keeps a loaded vector in a register: GCC otherwise folds the load into each FMA that uses it, so a vector
// feeding 3 FMAs is loaded 3 times (mostly unaligned loads split over two cache lines; the weight gradient ran at
// 1.9 FMAs per ns that way).
#define in_register(v) asm("" : "+v"(v))

__mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << std::max<int64_t>(n, 0)) - 1); }

// make(std::integral_constant<int, v>) for a run-time v in 1 .. N (a null function pointer otherwise): the kernels'
// channel-block sizes and filter widths are template parameters, chosen per run from these tables.
template <class Make, int... I>
auto pick_impl(int v, Make make, std::integer_sequence<int, I...>) {
  decltype(make(std::integral_constant<int, 1>{})) f = nullptr;
  ((v == I + 1 ? (f = make(std::integral_constant<int, I + 1>{}), 0) : 0), ...);
  return f;
}
template <int N, class Make>
auto pick(int v, Make make) {
  return pick_impl(v, make, std::make_integer_sequence<int, N>{});
}

// Rows [r0, r0 + rows) of the padded planes of image n, all input channels, into buf (g.CI x rows x g.WP):
// buffer row r, column c hold in[n, ci, r0 + r - ph, c - pw], zero outside the input. One masked load and store
// per 16 columns (masked-off lanes are not read, so the loads may start before or end after an input row): a
// memset/memcpy/memset per row cost as much as LeNet's convolutions themselves.
SMALL_AVX512 void pad_rows(const Geom& g, const float* in, int64_t n, int64_t r0, int64_t rows, float* buf) {
  const int64_t WP = g.WP(), nb = WP / 16;
  auto mask = [&](int64_t b) {  // the lanes of 16-column block b inside the input row
    const int64_t lo = std::clamp<int64_t>(g.pw - 16 * b, 0, 16), hi = std::clamp<int64_t>(g.pw + g.W - 16 * b, 0, 16);
    return __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
  };
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t ci = 0; ci < g.CI; ++ci) {
    const float* plane = in + (n * g.CI + ci) * g.H * g.W;
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = buf + (ci * rows + r) * WP;
      const int64_t ih = r0 + r - g.ph;
      if (ih < 0 || ih >= g.H) {
        for (int64_t b = 0; b < nb; ++b) _mm512_storeu_ps(dst + 16 * b, zero);
        continue;
      }
      const float* src = plane + ih * g.W - g.pw;  // column c of the padded row is src[c]
      for (int64_t b = 0; b < nb; ++b) _mm512_storeu_ps(dst + 16 * b, _mm512_maskz_loadu_ps(mask(b), src + 16 * b));
    }
  }
}

// One input row's taps into one output row's accumulators a: fwd_block's first and last rows, which feed only one
// of its two output rows. Always inlined, so that the accumulators stay in registers.
template <int CB, int NV, int KW>
SMALL_AVX512 __attribute__((always_inline)) inline void row_taps(const float* row, const float* wr,
                                                                 __m512 (&a)[CB][NV]) {
#pragma GCC unroll 7
  for (int j = 0; j < KW; ++j) {
    __m512 xv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_ps(row + j + 16 * v);
#pragma GCC unroll 8
    for (int k = 0; k < CB; ++k) {
      __m512 t = _mm512_set1_ps(wr[j * CB + k]);
      if (NV > 1) in_register(t);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) a[k][v] = _mm512_fmadd_ps(t, xv[v], a[k][v]);
    }
  }
}

// Output rows oh0, oh0 + 1 (the second only if < OH), channels k0 .. k0 + CB - 1, columns ow0 .. ow0 + 16 NV - 1
// of image n. buf holds padded rows r0 .. r0 + rows - 1 of each input channel (pad_rows), among them oh0 .. oh0 +
// KH; wp is this channel block's packed filter, [CI][KH][KW][CB] (pack_fwd); bias per output channel or nullptr.
// The filter width is a template parameter and the taps of one filter row are unrolled, each input vector
// feeding both output rows: with a runtime width and the row choice inside the tap loop the same work ran 3.3x
// slower (1.4 against 4.7 FMAs per ns in a standalone test of LeNet's 16 -> 6 data gradient).
template <int CB, int NV, int KW>
SMALL_AVX512 void fwd_block(const Geom& g, const float* buf, int64_t rows, int64_t r0, const float* wp,
                            const float* bias, int64_t k0, int64_t oh0, int64_t ow0, float* out, int64_t n) {
  const bool second = oh0 + 1 < g.OH;
  __m512 a0[CB][NV], a1[CB][NV];
#pragma GCC unroll 8
  for (int k = 0; k < CB; ++k) {
    const __m512 b = _mm512_set1_ps(bias ? bias[k0 + k] : 0.f);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) a0[k][v] = a1[k][v] = b;
  }
  const int64_t WP = g.WP(), KH = g.KH;
  // input row oh0 + rr feeds output row oh0 through filter row rr and output row oh0 + 1 through rr - 1; rows
  // in the padding contribute nothing (the data gradient has many)
  const int64_t rr_lo = std::max<int64_t>(0, g.ph - oh0), rr_hi = std::min<int64_t>(KH + 1, g.H + g.ph - oh0);
  for (int64_t ci = 0; ci < g.CI; ++ci) {
    const float* wc = wp + ci * KH * KW * CB;
    const float* base = buf + (ci * rows + oh0 - r0) * WP + ow0;
    for (int64_t rr = rr_lo; rr < rr_hi; ++rr) {
      const float* row = base + rr * WP;
      const float* w0 = wc + rr * KW * CB;        // filter row rr (output row oh0)
      const float* w1 = wc + (rr - 1) * KW * CB;  // filter row rr - 1 (output row oh0 + 1)
      const bool use0 = rr < KH, use1 = second && rr >= 1;
      if (use0 && use1) {
#pragma GCC unroll 7
        for (int j = 0; j < KW; ++j) {
          __m512 xv[NV];
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_ps(row + j + 16 * v);
#pragma GCC unroll 8
          for (int k = 0; k < CB; ++k) {
            __m512 t0 = _mm512_set1_ps(w0[j * CB + k]), t1 = _mm512_set1_ps(w1[j * CB + k]);
            if (NV > 1) {
              in_register(t0);
              in_register(t1);
            }
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) {
              a0[k][v] = _mm512_fmadd_ps(t0, xv[v], a0[k][v]);
              a1[k][v] = _mm512_fmadd_ps(t1, xv[v], a1[k][v]);
            }
          }
        }
      } else if (use0) {
        row_taps<CB, NV, KW>(row, w0, a0);
      } else if (use1) {
        row_taps<CB, NV, KW>(row, w1, a1);
      }
    }
  }
  if (g.act) {  // relu: max(0, v) keeps a NaN (maxps returns its second operand then); leaky: v < 0 is false for NaN
    // (by value: taking the accumulators' addresses kept them in memory through the whole loop above)
    const __m512 zero = _mm512_setzero_ps(), slope = _mm512_set1_ps(g.alpha);
    const bool relu = g.act == 1;
#pragma GCC unroll 8
    for (int k = 0; k < CB; ++k)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        const __m512 u = a0[k][v], w = a1[k][v];
        a0[k][v] =
            relu ? _mm512_max_ps(zero, u) : _mm512_mask_mul_ps(u, _mm512_cmp_ps_mask(u, zero, _CMP_LT_OQ), u, slope);
        a1[k][v] =
            relu ? _mm512_max_ps(zero, w) : _mm512_mask_mul_ps(w, _mm512_cmp_ps_mask(w, zero, _CMP_LT_OQ), w, slope);
      }
  }
#pragma GCC unroll 8
  for (int k = 0; k < CB; ++k) {
    float* dst = out + ((n * g.CO + k0 + k) * g.OH + oh0) * g.OW + ow0;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = tail_mask(g.OW - ow0 - 16 * v);
      _mm512_mask_storeu_ps(dst + 16 * v, m, a0[k][v]);
      if (second) _mm512_mask_storeu_ps(dst + g.OW + 16 * v, m, a1[k][v]);
    }
  }
}

// The size of the fewest equal blocks of at most `most` channels that cover n (6 = 3 + 3, not 4 + 2)
int64_t equal_blocks(int64_t n, int64_t most) {
  const int64_t nb = (n + most - 1) / most;
  return (n + nb - 1) / nb;
}
// The channel blocks of a forward-style run: 2 rows x CB x NV accumulators <= kAccRegs
int64_t block_cb(const Geom& g) { return equal_blocks(g.CO, std::min<int64_t>(kAccRegs / (2 * g.nv()), kMaxSmallOut)); }
// w [CO, CI, KH, KW] (flip: w [CI', CO', KH, KW] of the forward convolution whose data gradient this is, taken
// transposed and rotated 180 degrees; scale: a folded batch norm's per-output-channel scale) -> per block of cb
// output channels [CI][KH][KW][cb]
void pack_fwd(const Geom& g, const float* w, bool flip, float* wp, const float* scale = nullptr) {
  const int64_t cb = block_cb(g), KK = g.KH * g.KW;
  for (int64_t k0 = 0; k0 < g.CO; k0 += cb) {
    const int64_t nb = std::min(cb, g.CO - k0);
    float* blk = wp + k0 * g.CI * KK;
    for (int64_t ci = 0; ci < g.CI; ++ci)
      for (int64_t t = 0; t < KK; ++t)
        for (int64_t k = 0; k < nb; ++k)
          blk[(ci * KK + t) * nb + k] = flip    ? w[((ci * g.CO) + k0 + k) * KK + KK - 1 - t]
                                        : scale ? w[((k0 + k) * g.CI + ci) * KK + t] * scale[k0 + k]
                                                : w[((k0 + k) * g.CI + ci) * KK + t];
  }
}

// out = conv(in, w) (+ bias), g as above, wp the packed filter (pack_fwd). A work item is a band of output rows of one
// image (the whole image while its padded input rows stay under kBandBytes), padded once into the thread's buffer:
// items of a few thousand FMAs each would spend more on scheduling and padding than on the convolution.
constexpr int64_t kBandBytes = 96 * 1024;
int64_t band_rows(const Geom& g) {  // output rows per item: even, at least 2
  int64_t b = (g.OH + 1) / 2 * 2;
  while (b > 2 && g.CI * (b + g.KH - 1) * g.WP() * int64_t(sizeof(float)) > kBandBytes) b -= 2;
  return b;
}
int64_t fwd_buf_floats(const Geom& g) { return g.CI * (band_rows(g) + g.KH - 1) * g.WP(); }
SMALL_AVX512 void run_fwd(const Geom& g, const float* in, const float* wp, const float* bias, float* out, float* bufs,
                          int nthreads) {
  const int64_t B = band_rows(g), bands = (g.OH + B - 1) / B, rows = B + g.KH - 1, cbmax = block_cb(g);
  const int64_t items = g.N * bands;
  using FwdBlockFn = decltype(&fwd_block<1, 1, 1>);
  FwdBlockFn fn[kMaxSmallOut + 1];
  for (int cb = 1; cb <= kMaxSmallOut; ++cb)
    fn[cb] = pick<kMaxTap>(int(g.KW), [&](auto KW) {
      return pick<kMaxSmallOut>(cb, [&](auto CB) {
        return g.nv() == 2 ? &fwd_block<CB.value, 2, KW.value> : &fwd_block<CB.value, 1, KW.value>;
      });
    });
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t n = it / bands, r0 = (it % bands) * B;
    float* buf = bufs + omp_get_thread_num() * fwd_buf_floats(g);
    // padded rows r0 .. r0 + rows - 1; an odd OH's last band reads one row of zeros past the plane, unused
    pad_rows(g, in, n, r0, rows, buf);
    for (int64_t oh0 = r0; oh0 < std::min(r0 + B, g.OH); oh0 += 2)
      for (int64_t k0 = 0; k0 < g.CO; k0 += cbmax) {
        const int cb = int(std::min(cbmax, g.CO - k0));
        for (int64_t c = 0; c < g.chunks(); ++c)
          fn[cb](g, buf, rows, r0, wp + k0 * g.CI * g.KH * g.KW, bias, k0, oh0, c * g.chunk(), out, n);
      }
  }
}

// conv2d (x, w [, b]) -> y, fused_conv2d (inference: a folded batch norm, relu or leaky_relu; no residual sum) and
// conv2d_grad_data (dy, w) -> dx: the filter packed into the scratch on every run (parameters change between
// steps; it is CO x CI x KH x KW floats), then run_fwd.
struct SmallFwd : Kernel {
  Geom g;
  bool bias, grad_data;
  std::optional<FusedConvAttrs> fused;
  int nthreads;
  SmallFwd(const KernelCtx& c, bool grad_data_)
      : g(grad_data_ ? bwd_data_geom(c.node.attrs, c.out[0].shape, c.in[1].shape, c.in[0].shape)
                     : fwd_geom(c.node.attrs, c.in[0].shape, c.in[1].shape, c.out[0].shape)),
        bias(!grad_data_ && c.in.size() > 2),
        grad_data(grad_data_),
        nthreads(omp_get_max_threads()) {
    if (c.node.op == "fused_conv2d") {
      fused.emplace(c);
      bias = fused->bias;
      g.act = fused->act;
      g.alpha = fused->alpha;
    }
  }
  std::string impl() const override { return "native small-channel"; }
  size_t wp_floats() const { return size_t(g.CO * g.CI * g.KH * g.KW + 15) / 16 * 16; }
  size_t st_floats() const { return fused && fused->bn ? size_t(2 * g.CO + 15) / 16 * 16 : 0; }
  size_t scratch_bytes() const override {
    return (wp_floats() + st_floats() + size_t(nthreads) * fwd_buf_floats(g)) * sizeof(float);
  }
  void run(const RunCtx& r) override {
    float* wp = static_cast<float*>(r.scratch);
    const float* b = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    const float* scale = nullptr;
    if (fused && fused->bn) {  // BN(conv(x, w) + b) = conv(x, w * s) + t
      float* s = wp + wp_floats();
      fused->fold_bn(r, s, s + g.CO);
      scale = s;
      b = s + g.CO;
    }
    pack_fwd(g, static_cast<const float*>(r.in[1]), grad_data, wp, scale);
    run_fwd(g, static_cast<const float*>(r.in[0]), wp, b, static_cast<float*>(r.out[0]), wp + wp_floats() + st_floats(),
            std::min(nthreads, omp_get_max_threads()));
  }
};

// Weight gradient: per image of a work item (a chunk of the batch and one input channel), block of CB output
// channels and filter row i, vacc[i][k][j] (a vector of 16 column partial sums) += dy[n, k, oh, :] * xpad[n, c, oh + i,
// j + :]; bacc[k] += dy[n, k, oh, :] for the bias (input channel 0 only).
template <int CB, int KW, bool BIAS>
SMALL_AVX512 void bwdw_rows(const Geom& g, const float* dy, const float* xpad, int64_t n, int64_t k0, int64_t i,
                            __m512* vacc, __m512* bacc) {
  __m512 acc[CB][KW], bsum[CB];
#pragma GCC unroll 8
  for (int k = 0; k < CB; ++k) {
    if (BIAS) bsum[k] = bacc[k];
#pragma GCC unroll 7
    for (int j = 0; j < KW; ++j) acc[k][j] = vacc[k * KW + j];
  }
  const int64_t WP = g.WP(), OW = g.OW, OH = g.OH, nvec = (OW + 15) / 16, plane = OH * OW;
  const __mmask16 last = tail_mask(OW - 16 * (nvec - 1));
  const float* d0 = dy + (n * g.CO + k0) * plane;  // dy[n, k0, 0, 0]; channel k at + k * plane
  const float* xr = xpad + i * WP;
  for (int64_t oh = 0; oh < OH; ++oh, d0 += OW, xr += WP) {
    for (int64_t v = 0; v < nvec; ++v) {
      const __mmask16 m = v + 1 < nvec ? __mmask16(0xFFFF) : last;
      __m512 d[CB];
#pragma GCC unroll 8
      for (int k = 0; k < CB; ++k) d[k] = _mm512_maskz_loadu_ps(m, d0 + k * plane + 16 * v);
      if (BIAS)
#pragma GCC unroll 8
        for (int k = 0; k < CB; ++k) bsum[k] = _mm512_add_ps(bsum[k], d[k]);
#pragma GCC unroll 7
      for (int j = 0; j < KW; ++j) {
        __m512 xv = _mm512_loadu_ps(xr + 16 * v + j);
        in_register(xv);
#pragma GCC unroll 8
        for (int k = 0; k < CB; ++k) acc[k][j] = _mm512_fmadd_ps(d[k], xv, acc[k][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < CB; ++k) {
    if (BIAS) bacc[k] = bsum[k];
#pragma GCC unroll 7
    for (int j = 0; j < KW; ++j) vacc[k * KW + j] = acc[k][j];
  }
}

struct SmallBwdW : Kernel {
  Geom g;  // the forward convolution x -> y
  bool bias;
  int nthreads;
  int64_t nchunks, cb;  // batch chunks (fixed: the reduction order does not depend on the thread count), CB
  SmallBwdW(const KernelCtx& c)
      : g(fwd_geom(c.node.attrs, c.in[1].shape, c.out[0].shape, c.in[0].shape)),
        bias(c.out.size() > 1),
        nthreads(omp_get_max_threads()) {
    nchunks = std::min<int64_t>(g.N, 8);
    // registers: CB x KW accumulators, CB bias sums, CB dy vectors and one x vector
    cb = equal_blocks(g.CO, std::min<int64_t>(kMaxSmallOut, 31 / (g.KW + 2)));
  }
  std::string impl() const override { return "native small-channel"; }
  int64_t kblocks() const { return (g.CO + cb - 1) / cb; }
  size_t dw_floats() const { return size_t(g.CO) * g.CI * g.KH * g.KW; }
  // per chunk: its dw and db partial sums; per thread: one padded plane and the vector accumulators
  size_t partial_floats() const { return dw_floats() + g.CO; }
  size_t thread_floats() const { return size_t(g.HP()) * g.WP() + size_t(g.KH * g.CO * g.KW + g.CO) * 16; }
  size_t scratch_bytes() const override {
    return (nchunks * partial_floats() + 16 + size_t(nthreads) * thread_floats()) * sizeof(float) + 64;
  }
  // One chunk of the batch and one input channel, all output channels: its partial sums into the chunk's slot
  SMALL_AVX512 void item(int64_t chunk, int64_t ci, const float* dy, const float* x, float* partial,
                         float* tbase) const {
    const int64_t n0 = g.N * chunk / nchunks, n1 = g.N * (chunk + 1) / nchunks, KB = kblocks(), KK = g.KH * g.KW;
    float* tb = tbase + omp_get_thread_num() * thread_floats();
    __m512* vacc = reinterpret_cast<__m512*>(tb);  // [KH][CO][KW] then the bias sums [CO]
    __m512* bacc = vacc + g.KH * g.CO * g.KW;
    float* xpad = tb + (g.KH * g.CO * g.KW + g.CO) * 16;
    for (int64_t v = 0; v < g.KH * g.CO * g.KW + g.CO; ++v) vacc[v] = _mm512_setzero_ps();
    using BwdwFn = decltype(&bwdw_rows<1, 1, false>);
    BwdwFn f[kMaxSmallWOut], fb[kMaxSmallWOut];  // per channel block: without, with the bias sums
    for (int64_t kb = 0; kb < KB; ++kb) {
      const int ncb = int(std::min(cb, g.CO - kb * cb));
      auto rows = [&](auto BIAS) {
        return pick<kMaxTap>(int(g.KW), [&](auto KW) {
          return pick<kMaxSmallOut>(ncb, [&](auto CB) { return &bwdw_rows<CB.value, KW.value, BIAS.value>; });
        });
      };
      f[kb] = rows(std::false_type{});
      fb[kb] = rows(std::true_type{});
    }
    Geom one = g;  // xpad holds one input channel
    one.CI = 1;
    for (int64_t n = n0; n < n1; ++n) {
      pad_rows(one, x + (n * g.CI + ci) * g.H * g.W, 0, 0, g.HP(), xpad);
      for (int64_t kb = 0; kb < KB; ++kb) {
        const int64_t k0 = kb * cb;
        for (int64_t i = 0; i < g.KH; ++i)
          (bias && ci == 0 && i == 0 ? fb : f)[kb](g, dy, xpad, n, k0, i, vacc + (i * g.CO + k0) * g.KW, bacc + k0);
      }
    }
    float* p = partial + chunk * partial_floats();
    // _mm512_reduce_add_ps: a fixed tree over the lanes (a scalar loop over them is a chain of dependent adds)
    for (int64_t i = 0; i < g.KH; ++i)
      for (int64_t k = 0; k < g.CO; ++k)
        for (int64_t j = 0; j < g.KW; ++j)
          p[(k * g.CI + ci) * KK + i * g.KW + j] = _mm512_reduce_add_ps(vacc[(i * g.CO + k) * g.KW + j]);
    if (bias && ci == 0)
      for (int64_t k = 0; k < g.CO; ++k) p[dw_floats() + k] = _mm512_reduce_add_ps(bacc[k]);
  }
  SMALL_AVX512 void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* x = static_cast<const float*>(r.in[1]);
    float* dw = static_cast<float*>(r.out[0]);
    float* db = bias ? static_cast<float*>(r.out[1]) : nullptr;
    float* partial = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(r.scratch) + 63) / 64 * 64);
    float* tbase = partial + (nchunks * partial_floats() + 15) / 16 * 16;
#pragma omp parallel for schedule(dynamic) num_threads(std::min(nthreads, omp_get_max_threads()))
    for (int64_t it = 0; it < nchunks * g.CI; ++it) item(it / g.CI, it % g.CI, dy, x, partial, tbase);
    const size_t total = partial_floats() - (bias ? 0 : g.CO);
    for (size_t e = 0; e < total; ++e) {
      float s = 0.f;
      for (int64_t ch = 0; ch < nchunks; ++ch) s += partial[ch * partial_floats() + e];
      if (e < dw_floats())
        dw[e] = s;
      else
        db[e - dw_floats()] = s;
    }
  }
};

// r[i][j] -> r[j][i] for a 16x16 block of floats in 16 registers: 32-bit then 64-bit interleaves within 128-bit
// lanes, then two rounds of 128-bit lane shuffles (a 4x4 transpose of 4x4 blocks).
SMALL_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a[4 * i]), _mm512_castps_pd(a[4 * i + 2])));
    b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a[4 * i]), _mm512_castps_pd(a[4 * i + 2])));
    b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a[4 * i + 1]), _mm512_castps_pd(a[4 * i + 3])));
    b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a[4 * i + 1]), _mm512_castps_pd(a[4 * i + 3])));
  }
  // b[4i + m], 128-bit lane L: column 4L + m of rows 4i .. 4i + 3
  for (int m = 0; m < 4; ++m) {
    const __m512 c0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x44), c1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xEE);
    const __m512 c2 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x44);
    const __m512 c3 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xEE);
    r[m] = _mm512_shuffle_f32x4(c0, c2, 0x88);
    r[4 + m] = _mm512_shuffle_f32x4(c0, c2, 0xDD);
    r[8 + m] = _mm512_shuffle_f32x4(c1, c3, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(c1, c3, 0xDD);
  }
}

// Channel ch of images 16g .. 16g + 15 of src [N, CH, rows, cols] into the lanes layout: position (r, q) of the
// plane goes to dst + (r * cols + q) * CH * 16 + ch * 16 as a vector of 16 images (zeros past the batch); 16
// positions of a row at a time through a 16x16 register transpose.
SMALL_AVX512 void to_lanes(const float* src, int64_t N, int64_t CH, int64_t rows, int64_t cols, int64_t g, int64_t ch,
                           float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q0 = 0; q0 < cols; q0 += 16) {
      const __mmask16 m = tail_mask(cols - q0);
      __m512 t[16];
      for (int64_t l = 0; l < 16; ++l) {
        const int64_t n = g * 16 + l;
        t[l] = n < N ? _mm512_maskz_loadu_ps(m, src + ((n * CH + ch) * rows + r) * cols + q0) : _mm512_setzero_ps();
      }
      transpose16(t);
      float* d = dst + (r * cols + q0) * CH * 16 + ch * 16;
      for (int64_t q = 0; q < 16 && q0 + q < cols; ++q) _mm512_storeu_ps(d + q * CH * 16, t[q]);
    }
}

// The same from src stored with each pixel's channels in runs (nhwc: one run of CH; nChw16c / nChw8c: runs of 16 / 8
// in channel blocks), pixels [p0, p1) of the rows * cols: each run of 16 images through one transpose, no zeros
// stored for a blocked layout's padding channels. An activation gradient coming from a blocked node (LeNet-5's
// pooling after conv2) is read in place, not reordered to plain first.
SMALL_AVX512 void to_lanes_runs(const float* src, Layout L, int64_t N, int64_t CH, int64_t P, int64_t g, int64_t p0,
                                int64_t p1, float* dst) {
  const int64_t B = L == Layout::nChw8c ? 8 : 16, CB = (CH + B - 1) / B;
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t k0 = 0; k0 < CH; k0 += B) {
      const int64_t len = std::min(B, CH - k0);
      const __mmask16 m = tail_mask(len);
      __m512 t[16];
      for (int64_t l = 0; l < 16; ++l) {
        const int64_t n = g * 16 + l;
        const int64_t at = L == Layout::nhwc ? (n * P + p) * CH + k0 : ((n * CB + k0 / B) * P + p) * B;
        t[l] = n < N ? _mm512_maskz_loadu_ps(m, src + at) : _mm512_setzero_ps();
      }
      transpose16(t);
      float* d = dst + (p * CH + k0) * 16;
      for (int64_t q = 0; q < len; ++q) _mm512_storeu_ps(d + q * 16, t[q]);
    }
}

// conv2d_grad_data (dy, w) -> dx with the batch in the vector lanes: 16 images per vector, every tap clipped to
// the part of dy it reaches, so no FMA multiplies padding. The row kernel (SmallFwd on dy) vectorizes over dx's
// columns, where a tap past dy's edge still costs its lanes: LeNet-5's 10x10 -> 14x14 data gradient spent 40 % of
// its FMAs on padding that way. Three passes: dy into D [group][oh][ow][k][16 images] (zeros past the batch), one
// dx point (all its channels, two accumulators each, for even and odd k) per call into O [group][h][w][c][16],
// then O back into dx. Used from 16 images up; each dx value is summed by one thread in (i, j, k) order.
// NG groups of 16 images at once (1 or 2: the second group's D and O at + dg and + og floats): with two, each
// broadcast weight feeds both groups' FMAs (one group loads a weight per FMA, 7 loads per 6 FMAs; LeNet-5's conv2
// data gradient for a b32 piece on one thread went 0.136 -> 0.123 ms). Even and odd k sum into separate
// accumulators (two chains per channel), added at the end: the same sums in the same order for either NG.
template <int C, int NG>
SMALL_AVX512 void lanes_point(const float* D, int64_t dg, const float* wp, int64_t K, int64_t OW, int64_t KW,
                              int64_t i_lo, int64_t i_hi, int64_t j_lo, int64_t j_hi, int64_t oh0, int64_t ow0,
                              float* o, int64_t og) {
  __m512 a0[NG][C], a1[NG][C];
#pragma GCC unroll 2
  for (int q = 0; q < NG; ++q)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) a0[q][c] = a1[q][c] = _mm512_setzero_ps();
  for (int64_t i = i_lo; i <= i_hi; ++i)
    for (int64_t j = j_lo; j <= j_hi; ++j) {
      const float* d = D + ((oh0 - i) * OW + ow0 - j) * K * 16;  // dy[.., k, oh0 - i, ow0 - j] at + k * 16
      const float* wk = wp + (i * KW + j) * K * C;               // w[k, c, i, j] at + k * C + c
      int64_t k = 0;
      for (; k + 1 < K; k += 2) {
        __m512 d0[NG], d1[NG];
#pragma GCC unroll 2
        for (int q = 0; q < NG; ++q) {
          d0[q] = _mm512_loadu_ps(d + q * dg + k * 16);
          d1[q] = _mm512_loadu_ps(d + q * dg + k * 16 + 16);
          in_register(d0[q]);
          in_register(d1[q]);
        }
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          __m512 t0 = _mm512_set1_ps(wk[k * C + c]), t1 = _mm512_set1_ps(wk[k * C + C + c]);
          if (NG > 1) {  // one broadcast for both groups (with one, it folds into the FMA)
            in_register(t0);
            in_register(t1);
          }
#pragma GCC unroll 2
          for (int q = 0; q < NG; ++q) {
            a0[q][c] = _mm512_fmadd_ps(t0, d0[q], a0[q][c]);
            a1[q][c] = _mm512_fmadd_ps(t1, d1[q], a1[q][c]);
          }
        }
      }
      if (k < K) {
        __m512 d0[NG];
#pragma GCC unroll 2
        for (int q = 0; q < NG; ++q) {
          d0[q] = _mm512_loadu_ps(d + q * dg + k * 16);
          in_register(d0[q]);
        }
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          __m512 t0 = _mm512_set1_ps(wk[k * C + c]);
          if (NG > 1) in_register(t0);
#pragma GCC unroll 2
          for (int q = 0; q < NG; ++q) a0[q][c] = _mm512_fmadd_ps(t0, d0[q], a0[q][c]);
        }
      }
    }
#pragma GCC unroll 2
  for (int q = 0; q < NG; ++q)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + q * og + c * 16, _mm512_add_ps(a0[q][c], a1[q][c]));
}
struct SmallBwdDataLanes : Kernel {
  int64_t N, C, K, H, W, OH, OW, KH, KW, ph, pw;  // the forward convolution x [N,C,H,W] -> y [N,K,OH,OW]
  int nthreads;
  Layout ly;  // dy's layout: plain, or any that small_bwd_data_any_dy allows
  SmallBwdDataLanes(const KernelCtx& c) : nthreads(omp_get_max_threads()), ly(c.layout_in(0)) {
    const Shape &x = c.out[0].shape, &w = c.in[1].shape, &y = c.in[0].shape;
    const dims p = pair_attr(c.node.attrs, "padding", 0);
    N = x[0], C = x[1], H = x[2], W = x[3], K = y[1], OH = y[2], OW = y[3], KH = w[2], KW = w[3], ph = p[0], pw = p[1];
  }
  std::string impl() const override { return "native small-channel batch-lanes"; }
  int64_t groups() const { return (N + 15) / 16; }
  size_t d_floats() const { return size_t(groups()) * OH * OW * K * 16; }
  size_t o_floats() const { return size_t(groups()) * H * W * C * 16; }
  size_t w_floats() const { return size_t(KH * KW * K * C + 15) / 16 * 16; }
  size_t scratch_bytes() const override { return (d_floats() + o_floats() + w_floats()) * sizeof(float) + 64; }
  SMALL_AVX512 void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* w = static_cast<const float*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    float* D = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(r.scratch) + 63) / 64 * 64);
    float* O = D + d_floats();
    float* wp = O + o_floats();
    for (int64_t k = 0; k < K; ++k)  // [i][j][k][c]
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < KH * KW; ++t) wp[(t * K + k) * C + c] = w[(k * C + c) * KH * KW + t];
    const int64_t G = groups(), P = OH * OW, Q = H * W;
    const int nt = std::min(nthreads, omp_get_max_threads());
    auto fn = pick<kMaxSmallOut>(int(C), [](auto CC) { return &lanes_point<CC.value, 1>; });
    auto fn2 = pick<kMaxSmallOut>(int(C), [](auto CC) { return &lanes_point<CC.value, 2>; });
    const int64_t GP = (G + 1) / 2;  // pairs of groups (the last one alone when G is odd)
#pragma omp parallel num_threads(nt)
    {
      if (ly == Layout::plain) {
#pragma omp for schedule(static)
        for (int64_t gk = 0; gk < G * K; ++gk)  // dy -> D
          to_lanes(dy, N, K, OH, OW, gk / K, gk % K, D + gk / K * P * K * 16);
      } else {
#pragma omp for schedule(static)
        for (int64_t gr = 0; gr < G * OH; ++gr)  // dy -> D, a row of pixels at a time
          to_lanes_runs(dy, ly, N, K, P, gr / OH, gr % OH * OW, (gr % OH + 1) * OW, D + gr / OH * P * K * 16);
      }
#pragma omp for schedule(dynamic)
      for (int64_t gh = 0; gh < GP * H; ++gh) {  // D -> O, one row of dx points of a pair of groups
        const int64_t g = 2 * (gh / H), ih = gh % H;
        const int64_t i_lo = std::max<int64_t>(0, ih + ph - OH + 1), i_hi = std::min<int64_t>(KH - 1, ih + ph);
        for (int64_t iw = 0; iw < W; ++iw) {
          const int64_t j_lo = std::max<int64_t>(0, iw + pw - OW + 1), j_hi = std::min<int64_t>(KW - 1, iw + pw);
          float* o = O + ((g * Q + ih * W + iw) * C) * 16;
          (g + 1 < G ? fn2 : fn)(D + g * P * K * 16, P * K * 16, wp, K, OW, KW, i_lo, i_hi, j_lo, j_hi, ih + ph,
                                 iw + pw, o, Q * C * 16);
        }
      }
#pragma omp for schedule(static)
      for (int64_t gc = 0; gc < G * C; ++gc) {  // O -> dx, 16 positions x 16 images at a time
        const int64_t g = gc / C, c = gc % C;
        const float* src = O + (g * Q * C + c) * 16;
        for (int64_t q0 = 0; q0 < Q; q0 += 16) {
          const __mmask16 m = tail_mask(Q - q0);
          __m512 t[16];
          for (int64_t q = 0; q < 16; ++q)
            t[q] = q0 + q < Q ? _mm512_loadu_ps(src + (q0 + q) * C * 16) : _mm512_setzero_ps();
          transpose16(t);
          for (int64_t l = 0; l < 16 && g * 16 + l < N; ++l)
            _mm512_mask_storeu_ps(dx + ((g * 16 + l) * C + c) * Q + q0, m, t[l]);
        }
      }
    }
  }
};

}  // namespace

// Rows narrower than 8 columns (the computed output's: y for the forward and weight gradient, dx for the data
// gradient) would waste most of each vector.
bool small_fwd_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y) {
  return t == DType::f32 && plain_stride1(a, x, w, y) && w[0] <= kMaxSmallOut && y[3] >= 8;
}
bool small_fused_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y) {
  return a.i("sum", 0) == 0 && a.i("act", 0) <= 2 && small_fwd_ok(a, t, x, w, y);
}
bool small_bwd_data_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y) {
  return t == DType::f32 && plain_stride1(a, x, w, y) && w[1] <= kMaxSmallOut && x[3] >= 8;
}
bool small_bwd_weights_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y) {
  return t == DType::f32 && plain_stride1(a, x, w, y) && w[1] <= kMaxSmallInW && w[0] <= kMaxSmallWOut && y[3] >= 8;
}

std::unique_ptr<Kernel> make_small_fwd(const KernelCtx& c) { return std::make_unique<SmallFwd>(c, false); }
// From 16 images the batch-lanes kernel (no FMA on padding), below it the row kernel; CNNNATIVE_SMALL_CONV=rows
// keeps the row kernel (tests compare the two).
bool small_bwd_data_any_dy(const Shape& x) { return x.size() == 4 && x[0] >= 16 && lanes_enabled(); }
std::unique_ptr<Kernel> make_small_bwd_data(const KernelCtx& c) {
  if (small_bwd_data_any_dy(c.out[0].shape)) return std::make_unique<SmallBwdDataLanes>(c);
  return std::make_unique<SmallFwd>(c, true);
}
std::unique_ptr<Kernel> make_small_bwd_weights(const KernelCtx& c) { return std::make_unique<SmallBwdW>(c); }

}  // namespace conv
}  // namespace cpu
}  // namespace cnn
