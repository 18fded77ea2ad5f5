// cpu/max_pool.hpp: native max pooling of float32 planes. Every implementation applies the same chain to a
// window's elements in row-major order (the first in-image element taken whatever its value, then any element
// with `v > max || isnan(v)`), so they agree bit for bit: the compare is exact, and dx is 0 + dy (or 0, or a sum
// in (oh, ow) order where windows overlap, portable code only).
#include "cpu/max_pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <type_traits>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CNN_MAXPOOL_X86 1
#include <immintrin.h>
#else
#define CNN_MAXPOOL_X86 0
#endif

namespace cnn {
namespace cpu {
namespace maxpool {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ------------------------------------------------------------------ portable
// Window (oh, ow): the chosen element's flat index and value; -1 and -inf if the window holds no image element
// (impossible with PyTorch's output sizes: padding is at most half the kernel and ceil_mode drops a last window
// that would start in the right padding).
int64_t window(const float* x, int64_t H, int64_t W, const Window& g, int64_t oh, int64_t ow, float& best) {
  const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, H);
  const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w0 + g.kw, W);
  best = kNegInf;
  if (hs >= he || ws >= we) return -1;
  int64_t idx = hs * W + ws;
  best = x[idx];
  for (int64_t h = hs; h < he; ++h)
    for (int64_t w = (h == hs ? ws + 1 : ws); w < we; ++w) {
      const float v = x[h * W + w];
      if (v > best || std::isnan(v)) {
        best = v;
        idx = h * W + w;
      }
    }
  return idx;
}

// Windows [oh0, oh1) x [ow0, ow1), one by one.
void windows(const float* x, float* y, int32_t* ws, int64_t H, int64_t W, int64_t OW, const Window& g, int64_t oh0,
             int64_t oh1, int64_t ow0, int64_t ow1) {
  for (int64_t oh = oh0; oh < oh1; ++oh)
    for (int64_t ow = ow0; ow < ow1; ++ow) {
      float v;
      const int64_t idx = window(x, H, W, g, oh, ow, v);
      y[oh * OW + ow] = v;
      if (ws) ws[oh * OW + ow] = int32_t(idx);
    }
}

// Per output row, the windows inside the image horizontally, [owa, owb), are swept together one window element
// at a time (a branch-free select per output, vectorized along ow; SW: the stride if fixed at compile time, else
// 0); windows cut by the left or right border go one by one.
template <int SW, bool WS>
void forward_portable_t(const float* x, float* y, int32_t* ws, int64_t H, int64_t W, int64_t OH, int64_t OW,
                        const Window& g) {
  const int64_t sw = SW ? SW : g.sw;
  const int64_t owa = std::min(OW, (g.pw + sw - 1) / sw);  // the first ow with its window's left edge >= 0
  const int64_t owb = std::max(owa, W - g.kw + g.pw >= 0 ? std::min(OW, (W - g.kw + g.pw) / sw + 1) : owa);
  for (int64_t oh = 0; oh < OH; ++oh) {
    windows(x, y, ws, H, W, OW, g, oh, oh + 1, 0, owa);
    windows(x, y, ws, H, W, OW, g, oh, oh + 1, owb, OW);
    const int64_t h0 = oh * g.sh - g.ph, hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, H);
    if (hs >= he) {
      windows(x, y, ws, H, W, OW, g, oh, oh + 1, owa, owb);
      continue;
    }
    float* yr = y + oh * OW;
    int32_t* wr = WS ? ws + oh * OW : nullptr;
    const int64_t first = hs * W - g.pw;  // flat index of window ow's first element: first + ow * sw
#pragma omp simd
    for (int64_t ow = owa; ow < owb; ++ow) {
      yr[ow] = x[first + ow * sw];
      if (WS) wr[ow] = int32_t(first + ow * sw);
    }
    for (int64_t h = hs; h < he; ++h)
      for (int64_t j = h == hs ? 1 : 0; j < g.kw; ++j) {
        const int64_t off = h * W - g.pw + j;
#pragma omp simd
        for (int64_t ow = owa; ow < owb; ++ow) {
          const float v = x[off + ow * sw];
          const bool take = v > yr[ow] || v != v;
          yr[ow] = take ? v : yr[ow];
          if (WS) wr[ow] = take ? int32_t(off + ow * sw) : wr[ow];
        }
      }
  }
}

// The forward kernels' template parameters, chosen once per call: f(std::bool_constant<WS>) with WS whether a
// workspace is written, and f(std::integral_constant<int, SW>, std::bool_constant<WS>) with SW the column stride
// the kernel is specialized for (1, 2, or 0: any).
template <class F>
void with_ws(bool ws, F f) {
  if (ws)
    f(std::true_type{});
  else
    f(std::false_type{});
}
template <class F>
void with_sw_ws(int sw, bool ws, F f) {
  with_ws(ws, [&](auto w) {
    switch (sw) {
      case 1: return f(std::integral_constant<int, 1>{}, w);
      case 2: return f(std::integral_constant<int, 2>{}, w);
      default: return f(std::integral_constant<int, 0>{}, w);
    }
  });
}

void forward_portable(const float* x, float* y, int32_t* ws, int64_t H, int64_t W, int64_t OH, int64_t OW,
                      const Window& g) {
  with_sw_ws(g.sw, ws != nullptr, [&](auto sw, auto w) {
    forward_portable_t<decltype(sw)::value, decltype(w)::value>(x, y, ws, H, W, OH, OW, g);
  });
}

// dx = 0, then dx[ws] += dy in (oh, ow) order (an index outside the plane is skipped).
void backward_portable(const float* dy, const int32_t* ws, float* dx, int64_t H, int64_t W, int64_t OH, int64_t OW) {
  const int64_t HW = H * W;
  std::fill(dx, dx + HW, 0.f);
  for (int64_t o = 0; o < OH * OW; ++o) {
    const int64_t idx = ws[o];
    if (idx >= 0 && idx < HW) dx[idx] += dy[o];
  }
}

#if CNN_MAXPOOL_X86
// ------------------------------------------------------------------ AVX-512F
#define MAXPOOL_AVX512 __attribute__((target("avx512f")))

// Lanes [0, n), n in [0, 16].
inline __mmask16 first_lanes(int64_t n) { return __mmask16((1u << n) - 1u); }
// Bits [a, b) of 32, 0 <= a <= b <= 32.
inline uint32_t bit_range(int64_t a, int64_t b) {
  return uint32_t(((uint64_t(1) << b) - 1) & ~((uint64_t(1) << a) - 1));
}
// Rows [h0, h1) of a plane of width W on their way to L1 (past the plane's end: the next plane's rows). The loops
// below ask for the rows of the output row two ahead. Without it, on wide rows, each row's first loads wait for
// memory (ResNet's 3x3/2 on 1024 planes of 112x112, single-threaded: 10.6 -> 6.5 ms; 2x2/2: 5.5 -> 2.4 ms); rows
// narrower than kPrefetchW floats do without (LeNet's 10x10 planes: +25 % with it). A prefetch never faults, so
// the addresses need not be valid.
constexpr int64_t kPrefetchW = 64;
MAXPOOL_AVX512 inline void prefetch_rows(const float* x, int64_t W, int64_t h0, int64_t h1) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(x);
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t c = 0; c < W; c += 16)
      _mm_prefetch(reinterpret_cast<const char*>(base + uintptr_t(h * W + c) * sizeof(float)), _MM_HINT_T0);
}

// The lanes of `lanes` where v replaces the running max: v > max or v is NaN.
MAXPOOL_AVX512 inline __mmask16 takes(__mmask16 lanes, __m512 v, __m512 best) {
  return _mm512_mask_cmp_ps_mask(lanes, v, best, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(lanes, v, v, _CMP_UNORD_Q);
}

// Any window: up to 4 vectors of 16 windows of an output row at once (independent chains, so that the
// compare -> select latency of one overlaps the others). A lane whose element lies left or right of the image
// skips it; its first element in the image is taken whatever its value. Element j of 16 windows is a masked load
// (stride 1), the even lanes of two masked loads (stride 2) or a masked gather (larger strides); masked-off
// lanes read nothing.
template <int SW>
MAXPOOL_AVX512 inline __m512 load16(const float* p, __mmask16 lanes, uint32_t pos, __m512i lsw) {
  if (SW == 1) return _mm512_maskz_loadu_ps(lanes, p);
  if (SW == 2)  // pos: which of the 32 floats at p to read; lsw = 2 * lane picks the even ones
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(__mmask16(pos & 0xFFFF), p), lsw,
                                  _mm512_maskz_loadu_ps(__mmask16(pos >> 16), p + 16));
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, lsw, p, 4);
}

// The running state of 16 windows. idx holds h * W + j of each lane's chosen element (h: its row, j: its column in
// the window); vec_store adds the lane's window's left column, w0 + lane * sw, to make the flat index.
struct Vec16 {
  static constexpr int kTable = 16;  // windows up to this wide keep their border lanes per element column
  __m512 best;
  __m512i idx;
  __mmask16 have, all;  // lanes that took an element; lanes in use
  uint32_t all_pos;     // stride 2: the input positions of all lanes (2 b for b < count)
  int64_t count;        // lanes in use
  int64_t w0;           // lane 0's window's left column (may be < 0)
  bool inside;          // every window inside the image horizontally: every lane has every element
  bool table;           // border lanes of column j in lanes_j[j], pos_j[j]
  __mmask16 lanes_j[kTable];
  uint32_t pos_j[kTable];
};

// Lanes [b0, b1) of s whose element in window column j lies in the image (0 <= w0 + j + b * sw < W), as a lane
// mask and (stride 2) input positions 2 b0 .. 2 b1 - 2.
inline void border_lanes(const Vec16& s, int64_t j, int64_t sw, int64_t W, __mmask16& lanes, uint32_t& pos) {
  const int64_t c0 = s.w0 + j;
  const int64_t b0 = c0 >= 0 ? 0 : (-c0 + sw - 1) / sw;
  const int64_t b1 = c0 >= W ? 0 : std::min(s.count, (W - 1 - c0) / sw + 1);
  if (b0 >= b1) {
    lanes = 0;
    pos = 0;
    return;
  }
  lanes = __mmask16(first_lanes(b1) & ~first_lanes(b0));
  pos = bit_range(2 * b0, 2 * b1 - 1);
}

MAXPOOL_AVX512 __attribute__((always_inline)) inline void vec_init(Vec16& s, int64_t count, int64_t w0, int64_t sw,
                                                                   int64_t kw, int64_t W) {
  s.best = _mm512_set1_ps(kNegInf);
  s.idx = _mm512_set1_epi32(-1);
  s.have = 0;
  s.count = count;
  s.w0 = w0;
  s.all = first_lanes(count);
  s.all_pos = count ? bit_range(0, 2 * count - 1) : 0u;
  s.inside = count > 0 && w0 >= 0 && w0 + (count - 1) * sw + kw <= W;  // count 0: no lanes, every step skipped
  s.table = !s.inside && kw <= Vec16::kTable;
  if (s.table)
    for (int64_t j = 0; j < kw; ++j) border_lanes(s, j, sw, W, s.lanes_j[j], s.pos_j[j]);
}

// Element (h, j) of 16 windows: hW = h * W, e = the broadcast h * W + j; first: the window's first element.
template <int SW, bool WS>
MAXPOOL_AVX512 __attribute__((always_inline)) inline void vec_step(Vec16& s, const float* x, int64_t hW, int64_t j,
                                                                   __m512i e, bool first, int64_t sw, int64_t W,
                                                                   __m512i lsw) {
  const int64_t c0 = s.w0 + j;  // the column of lane 0's element
  if (s.inside) {
    const __m512 v = load16<SW>(x + hW + c0, s.all, s.all_pos, lsw);
    const __mmask16 m = first ? s.all : takes(s.all, v, s.best);
    if (first) s.have = s.all;
    s.best = _mm512_mask_mov_ps(s.best, m, v);
    if (WS) s.idx = _mm512_mask_mov_epi32(s.idx, m, e);
    return;
  }
  // a lane's first element in the image is taken whatever its value
  __mmask16 lanes;
  uint32_t pos;
  if (s.table) {
    lanes = s.lanes_j[j];
    pos = s.pos_j[j];
  } else {
    border_lanes(s, j, sw, W, lanes, pos);
  }
  if (!lanes) return;
  const __m512 v = load16<SW>(x + hW + c0, lanes, pos, lsw);
  const __mmask16 m = _mm512_kor(takes(lanes, v, s.best), _mm512_kandn(s.have, lanes));
  s.have = _mm512_kor(s.have, lanes);
  s.best = _mm512_mask_mov_ps(s.best, m, v);
  if (WS) s.idx = _mm512_mask_mov_epi32(s.idx, m, e);
}

template <bool WS>
MAXPOOL_AVX512 __attribute__((always_inline)) inline void vec_store(const Vec16& s, float* y, int32_t* ws,
                                                                    __m512i lsw) {
  if (!s.count) return;
  _mm512_mask_storeu_ps(y, s.all, s.best);
  if (!WS) return;
  // offset + window column (+ lane's) = the flat index; lanes that took nothing stay -1
  const __m512i flat = _mm512_add_epi32(s.idx, _mm512_add_epi32(_mm512_set1_epi32(int32_t(s.w0)), lsw));
  _mm512_mask_storeu_epi32(ws, s.all, _mm512_mask_mov_epi32(_mm512_set1_epi32(-1), s.have, flat));
}

template <int SW, bool WS>
MAXPOOL_AVX512 void forward_avx512_t(const float* x, float* y, int32_t* ws, int64_t H, int64_t W, int64_t OH,
                                     int64_t OW, const Window& g) {
  const int64_t sw = SW ? SW : g.sw;
  const __m512i lsw = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(int32_t(sw)));  // lane * sw
  for (int64_t oh = 0; oh < OH; ++oh) {
    const int64_t h0 = oh * g.sh - g.ph, hs = std::max<int64_t>(h0, 0), he = std::min(h0 + g.kh, H);
    float* yr = y + oh * OW;
    int32_t* wr = WS ? ws + oh * OW : nullptr;
    if (W >= kPrefetchW) prefetch_rows(x, W, std::max(he, h0 + 2 * g.sh + g.kh - g.sh), h0 + 2 * g.sh + g.kh);
    for (int64_t ow0 = 0; ow0 < OW; ow0 += 64) {
      const int64_t n = OW - ow0;
      if (n > 32) {  // 4 vectors (the last ones possibly partial or empty): independent chains
        Vec16 s0, s1, s2, s3;
        vec_init(s0, 16, ow0 * sw - g.pw, sw, g.kw, W);
        vec_init(s1, 16, (ow0 + 16) * sw - g.pw, sw, g.kw, W);
        vec_init(s2, std::min<int64_t>(16, n - 32), (ow0 + 32) * sw - g.pw, sw, g.kw, W);
        vec_init(s3, std::clamp<int64_t>(n - 48, 0, 16), (ow0 + 48) * sw - g.pw, sw, g.kw, W);
        for (int64_t h = hs; h < he; ++h)
          for (int64_t j = 0; j < g.kw; ++j) {
            const __m512i e = _mm512_set1_epi32(int32_t(h * W + j));
            const bool first = h == hs && j == 0;
            vec_step<SW, WS>(s0, x, h * W, j, e, first, sw, W, lsw);
            vec_step<SW, WS>(s1, x, h * W, j, e, first, sw, W, lsw);
            vec_step<SW, WS>(s2, x, h * W, j, e, first, sw, W, lsw);
            vec_step<SW, WS>(s3, x, h * W, j, e, first, sw, W, lsw);
          }
        vec_store<WS>(s0, yr + ow0, wr + ow0, lsw);
        vec_store<WS>(s1, yr + ow0 + 16, wr + ow0 + 16, lsw);
        vec_store<WS>(s2, yr + ow0 + 32, wr + ow0 + 32, lsw);
        vec_store<WS>(s3, yr + ow0 + 48, wr + ow0 + 48, lsw);
      } else if (n > 16) {  // 2 vectors
        Vec16 s0, s1;
        vec_init(s0, 16, ow0 * sw - g.pw, sw, g.kw, W);
        vec_init(s1, n - 16, (ow0 + 16) * sw - g.pw, sw, g.kw, W);
        for (int64_t h = hs; h < he; ++h)
          for (int64_t j = 0; j < g.kw; ++j) {
            const __m512i e = _mm512_set1_epi32(int32_t(h * W + j));
            const bool first = h == hs && j == 0;
            vec_step<SW, WS>(s0, x, h * W, j, e, first, sw, W, lsw);
            vec_step<SW, WS>(s1, x, h * W, j, e, first, sw, W, lsw);
          }
        vec_store<WS>(s0, yr + ow0, wr + ow0, lsw);
        vec_store<WS>(s1, yr + ow0 + 16, wr + ow0 + 16, lsw);
      } else {  // 1 vector
        Vec16 s0;
        vec_init(s0, n, ow0 * sw - g.pw, sw, g.kw, W);
        for (int64_t h = hs; h < he; ++h)
          for (int64_t j = 0; j < g.kw; ++j)
            vec_step<SW, WS>(s0, x, h * W, j, _mm512_set1_epi32(int32_t(h * W + j)), h == hs && j == 0, sw, W, lsw);
        vec_store<WS>(s0, yr + ow0, wr + ow0, lsw);
      }
    }
  }
}

// 2x2 stride 2, no padding: 16 windows from two rows of 32 inputs, split into even and odd columns. A ceil_mode
// window past the last column has no odd element (lanes >= FW - ow), one past the last row no second row.
// Every 16-window chunk of a row but the last is full: the last chunk's masks are computed once per call, and the
// call takes `planes` planes one after the other. LeNet-5's rows of 14 or 5 windows spent as much on per-row mask
// arithmetic and a call per plane as on the windows (one thread, training: [32, 6, 28, 28] forward 19.5 -> 16.0 us,
// [32, 16, 10, 10] backward 16.2 -> 10.9 us).
struct Masks2x2 {
  __mmask16 mo, modd, lo, hi;  // outputs, outputs with an odd column, input columns [0, 16) and [16, 32) of a chunk
};
inline Masks2x2 masks_2x2(int64_t W, int64_t OW, int64_t ow) {
  const int64_t n = std::min<int64_t>(16, OW - ow), FW = W / 2;  // FW: windows with both columns in the image
  const uint32_t pos = bit_range(0, std::min(2 * n, W - 2 * ow));
  return {first_lanes(n), first_lanes(std::clamp<int64_t>(FW - ow, 0, n)), __mmask16(pos & 0xFFFF),
          __mmask16(pos >> 16)};
}

// 16 windows of one output row (the forward's inner step): y and, with WS, the workspace's flat indices (base: each
// lane's window's first element).
template <bool WS>
MAXPOOL_AVX512 __attribute__((always_inline)) inline void fwd_chunk_2x2(const float* r0, const float* r1, bool two_rows,
                                                                        const Masks2x2& m, float* yo, int32_t* wo,
                                                                        __m512i base, int64_t W) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 a0 = _mm512_maskz_loadu_ps(m.lo, r0), a1 = _mm512_maskz_loadu_ps(m.hi, r0 + 16);
  // the window in row-major order: (0,0) (0,1) (1,0) (1,1)
  __m512 best = _mm512_permutex2var_ps(a0, even, a1);
  const __m512 v01 = _mm512_permutex2var_ps(a0, odd, a1);
  const __mmask16 m01 = takes(m.modd, v01, best);
  best = _mm512_mask_mov_ps(best, m01, v01);
  __mmask16 m10 = 0, m11 = 0;
  if (two_rows) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m.lo, r1), b1 = _mm512_maskz_loadu_ps(m.hi, r1 + 16);
    const __m512 v10 = _mm512_permutex2var_ps(b0, even, b1), v11 = _mm512_permutex2var_ps(b0, odd, b1);
    m10 = takes(m.mo, v10, best);
    best = _mm512_mask_mov_ps(best, m10, v10);
    m11 = takes(m.modd, v11, best);
    best = _mm512_mask_mov_ps(best, m11, v11);
  }
  _mm512_mask_storeu_ps(yo, m.mo, best);
  if (WS) {
    __m512i off = _mm512_maskz_mov_epi32(m01, _mm512_set1_epi32(1));
    off = _mm512_mask_mov_epi32(off, m10, _mm512_set1_epi32(int32_t(W)));
    off = _mm512_mask_mov_epi32(off, m11, _mm512_set1_epi32(int32_t(W + 1)));
    _mm512_mask_storeu_epi32(wo, m.mo, _mm512_add_epi32(base, off));
  }
}

template <bool WS>
MAXPOOL_AVX512 void forward_2x2_t(const float* x, float* y, int32_t* ws, int64_t planes, int64_t H, int64_t W,
                                  int64_t OH, int64_t OW) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  // chunks [0, full) are full ones; the last chunk always takes computed masks, even with 16 windows: with ceil_mode
  // its last window may have no odd column
  const int64_t full = std::max<int64_t>(OW - 1, 0) / 16 * 16;
  const Masks2x2 all{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, tail = masks_2x2(W, OW, full);
  for (int64_t p = 0; p < planes; ++p, x += H * W, y += OH * OW, ws += WS ? OH * OW : 0)
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float* r0 = x + 2 * oh * W;
      const float* r1 = r0 + W;
      const bool two_rows = 2 * oh + 1 < H;
      if (W >= kPrefetchW) {
        prefetch_rows(x, W, 2 * oh + 4, 2 * oh + 6);
        prefetch_rows(y, OW, oh + 4, oh + 5);
        if (WS) prefetch_rows(reinterpret_cast<const float*>(ws), OW, oh + 4, oh + 5);
      }
      // flat index of each lane's window's first element: 2 oh W + 2 ow + 2 lane
      __m512i base = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * oh * W)), even);
      float* yr = y + oh * OW;
      int32_t* wr = WS ? ws + oh * OW : nullptr;
      int64_t ow = 0;
      for (; ow < full; ow += 16, base = _mm512_add_epi32(base, _mm512_set1_epi32(32)))
        fwd_chunk_2x2<WS>(r0 + 2 * ow, r1 + 2 * ow, two_rows, all, yr + ow, wr + ow, base, W);
      if (ow < OW) fwd_chunk_2x2<WS>(r0 + 2 * ow, r1 + 2 * ow, two_rows, tail, yr + ow, wr + ow, base, W);
    }
}

// The backward's inner step: dx's 2x2 blocks of 16 windows of one output row.
MAXPOOL_AVX512 __attribute__((always_inline)) inline void bwd_chunk_2x2(const float* gyp, const int32_t* wsp, float* d0,
                                                                        float* d1, bool two_rows, const Masks2x2& m,
                                                                        __m512i base, int64_t W) {
  // interleave a, b into (a0 b0 a1 b1 ...): lanes 0..7 of each, then 8..15
  const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
  const __m512 zero = _mm512_setzero_ps();
  const __m512 gy = _mm512_maskz_loadu_ps(m.mo, gyp);
  const __m512i rel = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m.mo, wsp), base);
  const __m512 e00 = _mm512_maskz_add_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_setzero_si512()), zero, gy);
  const __m512 e01 = _mm512_maskz_add_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(1)), zero, gy);
  _mm512_mask_storeu_ps(d0, m.lo, _mm512_permutex2var_ps(e00, ilo, e01));
  _mm512_mask_storeu_ps(d0 + 16, m.hi, _mm512_permutex2var_ps(e00, ihi, e01));
  if (two_rows) {
    const __m512 e10 = _mm512_maskz_add_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(int32_t(W))), zero, gy);
    const __m512 e11 = _mm512_maskz_add_ps(_mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(int32_t(W + 1))), zero, gy);
    _mm512_mask_storeu_ps(d1, m.lo, _mm512_permutex2var_ps(e10, ilo, e11));
    _mm512_mask_storeu_ps(d1 + 16, m.hi, _mm512_permutex2var_ps(e10, ihi, e11));
  }
}

// Backward of 2x2 stride 2: each window's 2x2 block of dx written once, 0 + dy where the workspace points and 0
// elsewhere (blocks cut by ceil_mode's padding: only their image part); then the last column / row that no
// window covers (odd W / H without ceil_mode) set to 0. `planes` planes one after the other, the last chunk's
// masks computed once.
MAXPOOL_AVX512 void backward_2x2(const float* dy, const int32_t* ws, float* dx, int64_t planes, int64_t H, int64_t W,
                                 int64_t OH, int64_t OW) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int64_t full = std::max<int64_t>(OW - 1, 0) / 16 * 16;  // as in forward_2x2_t
  const Masks2x2 all{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, tail = masks_2x2(W, OW, full);
  const int64_t rows = std::min(2 * OH, H), cols = std::min(2 * OW, W);
  for (int64_t p = 0; p < planes; ++p, dy += OH * OW, ws += OH * OW, dx += H * W) {
    for (int64_t oh = 0; oh < OH; ++oh) {
      float* d0 = dx + 2 * oh * W;
      float* d1 = d0 + W;
      const bool two_rows = 2 * oh + 1 < H;
      __m512i base = _mm512_add_epi32(_mm512_set1_epi32(int32_t(2 * oh * W)), even);
      const float* gyr = dy + oh * OW;
      const int32_t* wr = ws + oh * OW;
      int64_t ow = 0;
      for (; ow < full; ow += 16, base = _mm512_add_epi32(base, _mm512_set1_epi32(32)))
        bwd_chunk_2x2(gyr + ow, wr + ow, d0 + 2 * ow, d1 + 2 * ow, two_rows, all, base, W);
      if (ow < OW) bwd_chunk_2x2(gyr + ow, wr + ow, d0 + 2 * ow, d1 + 2 * ow, two_rows, tail, base, W);
    }
    if (cols < W)
      for (int64_t h = 0; h < rows; ++h) std::fill(dx + h * W + cols, dx + (h + 1) * W, 0.f);
    std::fill(dx + rows * W, dx + H * W, 0.f);
  }
}
#endif

}  // namespace

bool avx512() {
  if (const char* cap = std::getenv("CNNNATIVE_POOL_ISA"))
    if (std::atoi(cap) == 0) return false;
#if CNN_MAXPOOL_X86
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

void forward(const float* x, float* y, int32_t* ws, int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
             const Window& g, bool avx512) {
#if CNN_MAXPOOL_X86
  if (avx512 && is_2x2(g))
    return with_ws(ws != nullptr, [&](auto w) { forward_2x2_t<decltype(w)::value>(x, y, ws, planes, H, W, OH, OW); });
#endif
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * H * W;
    float* yp = y + p * OH * OW;
    int32_t* wp = ws ? ws + p * OH * OW : nullptr;
#if CNN_MAXPOOL_X86
    if (avx512) {
      with_sw_ws(g.sw, wp != nullptr, [&](auto sw, auto w) {
        forward_avx512_t<decltype(sw)::value, decltype(w)::value>(xp, yp, wp, H, W, OH, OW, g);
      });
      continue;
    }
#endif
    forward_portable(xp, yp, wp, H, W, OH, OW, g);
  }
}

void backward(const float* dy, const int32_t* ws, float* dx, int64_t planes, int64_t H, int64_t W, int64_t OH,
              int64_t OW, const Window& g, bool avx512) {
#if CNN_MAXPOOL_X86
  if (avx512 && is_2x2(g)) return backward_2x2(dy, ws, dx, planes, H, W, OH, OW);
#endif
  for (int64_t p = 0; p < planes; ++p)
    backward_portable(dy + p * OH * OW, ws + p * OH * OW, dx + p * H * W, H, W, OH, OW);
}

}  // namespace maxpool
}  // namespace cpu
}  // namespace cnn
