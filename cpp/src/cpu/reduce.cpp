// cpu/reduce.hpp: three ISA traits (AVX-512F+BW+VL, AVX2+FMA, scalar), each in its own target region with the
// kernels of reduce_kernels.inc compiled against it, and the run-time dispatch. The translation unit itself needs
// no -m flags. exp() for softmax: Cody-Waite reduction x = n ln2 + r (|r| <= ln2/2), the degree-7 Taylor
// polynomial of e^r (truncation < 0.1 ulp), times 2^n (AVX-512: scalef, which also gives subnormals; AVX2: two
// exponent-field factors); scalar: std::exp.
#include "cpu/reduce.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CNN_REDUCE_X86 1
#include <immintrin.h>
#else
#define CNN_REDUCE_X86 0
#endif

namespace cnn {
namespace cpu {
namespace red {

float to_f32(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fff + ((u >> 16) & 1);
  return bf16{uint16_t(u >> 16)};
}

namespace {
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpLo = -104.f, kExpHi = 88.8f;  // e^-104 is below the smallest subnormal; e^88.8 overflows
constexpr float kC2 = 1.f / 2, kC3 = 1.f / 6, kC4 = 1.f / 24, kC5 = 1.f / 120, kC6 = 1.f / 720, kC7 = 1.f / 5040;
}  // namespace

// ------------------------------------------------------------------ scalar
namespace k1 {
struct Isa {
  static constexpr int W = 1;
  using F = float;
  using D = double;
  static F load(const float* p) { return *p; }
  static F load(const float* p, int64_t) { return *p; }
  static F load(const bf16* p) { return to_f32(*p); }
  static F load(const bf16* p, int64_t) { return to_f32(*p); }
  static void store(float* p, F v) { *p = v; }
  static void store(float* p, F v, int64_t) { *p = v; }
  static void store(bf16* p, F v) { *p = to_bf16(v); }
  static void store(bf16* p, F v, int64_t) { *p = to_bf16(v); }
  template <class T>
  static void stream(T* p, F v) {
    store(p, v);
  }
  static F set1(float a) { return a; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F fma(F a, F b, F c) { return a * b + c; }
  static F max(F a, F b) { return b > a ? b : a; }
  static float hmax(F a) { return a; }
  static F keep(F a, int64_t) { return a; }
  static F exp(F x) { return std::exp(x); }
  static D dzero() { return 0.0; }
  static D dadd(D a, F x) { return a + double(x); }
  static D dadd_at(D a, const float* p) { return a + double(*p); }
  static D dfma(D a, F x, F y) { return a + double(x) * double(y); }
  static D dplus(D a, D b) { return a + b; }
  static D dset1(double v) { return v; }
  static D dmul(D a, D b) { return a * b; }
  static D dsub(D a, D b) { return a - b; }
  static F dtof(D a) { return float(a); }
  static D ftod(F a) { return double(a); }
  static double hsum(D a) { return a; }
  static D dload(const double* p, int64_t) { return *p; }
  static void dstore(double* p, D a, int64_t) { *p = a; }
};
#include "cpu/reduce_kernels.inc"
}  // namespace k1

#if CNN_REDUCE_X86
// ------------------------------------------------------------------ AVX2 + FMA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace k256 {
struct Isa {
  static constexpr int W = 8;
  using F = __m256;
  struct D {
    __m256d lo, hi;
  };
  static __m256i mk(int64_t r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(r)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static __m256i mk64(int64_t r) { return _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), _mm256_setr_epi64x(0, 1, 2, 3)); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load(const float* p, int64_t r) { return _mm256_maskload_ps(p, mk(r)); }
  static F load(const bf16* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static F load(const bf16* p, int64_t r) {
    alignas(16) bf16 t[8] = {};
    for (int64_t i = 0; i < r; ++i) t[i] = p[i];
    return load(t);
  }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, F v, int64_t r) { _mm256_maskstore_ps(p, mk(r), v); }
  static void store(bf16* p, F v, int64_t r) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int64_t i = 0; i < r; ++i) p[i] = to_bf16(t[i]);
  }
  static void store(bf16* p, F v) { store(p, v, 8); }
  static void stream(float* p, F v) { _mm256_stream_ps(p, v); }  // 32-byte aligned
  static void stream(bf16* p, F v) { store(p, v); }
  static F set1(float a) { return _mm256_set1_ps(a); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static float hmax(F a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static F keep(F a, int64_t r) { return r >= W ? a : _mm256_and_ps(a, _mm256_castsi256_ps(mk(r))); }
  static F exp(F x) {
    x = _mm256_min_ps(_mm256_set1_ps(kExpHi), _mm256_max_ps(_mm256_set1_ps(kExpLo), x));  // NaN stays NaN
    F n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    F p = _mm256_fmadd_ps(_mm256_set1_ps(kC7), r, _mm256_set1_ps(kC6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    // 2^n as two normal factors (n in [-150, 129]: each half in [-75, 65])
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    F s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    F s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }
  static __m256d lo(F x) { return _mm256_cvtps_pd(_mm256_castps256_ps128(x)); }
  static __m256d hi(F x) { return _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)); }
  static D dzero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
  static D dadd(D a, F x) { return {_mm256_add_pd(a.lo, lo(x)), _mm256_add_pd(a.hi, hi(x))}; }
  static D dadd_at(D a, const float* p) {  // converts straight from memory: no lane extraction
    return {_mm256_add_pd(a.lo, _mm256_cvtps_pd(_mm_loadu_ps(p))),
            _mm256_add_pd(a.hi, _mm256_cvtps_pd(_mm_loadu_ps(p + 4)))};
  }
  static D dfma(D a, F x, F y) { return {_mm256_fmadd_pd(lo(x), lo(y), a.lo), _mm256_fmadd_pd(hi(x), hi(y), a.hi)}; }
  static D dplus(D a, D b) { return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
  static D dset1(double v) { return {_mm256_set1_pd(v), _mm256_set1_pd(v)}; }
  static D dmul(D a, D b) { return {_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; }
  static D dsub(D a, D b) { return {_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)}; }
  static F dtof(D a) { return _mm256_set_m128(_mm256_cvtpd_ps(a.hi), _mm256_cvtpd_ps(a.lo)); }
  static D ftod(F x) { return {lo(x), hi(x)}; }
  static double hsum(D a) {
    __m256d s = _mm256_add_pd(a.lo, a.hi);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
  static D dload(const double* p, int64_t r) {
    if (r >= 8) return {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)};
    return {_mm256_maskload_pd(p, mk64(r)), _mm256_maskload_pd(p + 4, mk64(r - 4))};
  }
  static void dstore(double* p, D a, int64_t r) {
    if (r >= 8) {
      _mm256_storeu_pd(p, a.lo);
      _mm256_storeu_pd(p + 4, a.hi);
    } else {
      _mm256_maskstore_pd(p, mk64(r), a.lo);
      _mm256_maskstore_pd(p + 4, mk64(r - 4), a.hi);
    }
  }
};
#include "cpu/reduce_kernels.inc"
}  // namespace k256
#pragma GCC pop_options

// ------------------------------------------------------------------ AVX-512F (+BW, VL for 16-bit masks)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
namespace k512 {
struct Isa {
  static constexpr int W = 16;
  using F = __m512;
  struct D {
    __m512d lo, hi;
  };
  static __mmask16 mk(int64_t r) { return r >= 16 ? __mmask16(0xffff) : __mmask16((1u << r) - 1); }
  static __mmask8 mk8(int64_t r) { return r >= 8 ? __mmask8(0xff) : r <= 0 ? __mmask8(0) : __mmask8((1u << r) - 1); }
  static F widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m256i narrow(F v) {  // round to nearest even; NaN -> quiet NaN
    __m512i i = _mm512_castps_si512(v), top = _mm512_srli_epi32(i, 16);
    __m512i r =
        _mm512_add_epi32(i, _mm512_add_epi32(_mm512_and_si512(top, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_or_si512(top, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
  }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const float* p, int64_t r) { return _mm512_maskz_loadu_ps(mk(r), p); }
  static F load(const bf16* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load(const bf16* p, int64_t r) { return widen(_mm256_maskz_loadu_epi16(mk(r), p)); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, F v, int64_t r) { _mm512_mask_storeu_ps(p, mk(r), v); }
  static void store(bf16* p, F v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(v)); }
  static void store(bf16* p, F v, int64_t r) { _mm256_mask_storeu_epi16(p, mk(r), narrow(v)); }
  static void stream(float* p, F v) { _mm512_stream_ps(p, v); }  // 64-byte aligned
  static void stream(bf16* p, F v) { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), narrow(v)); }  // 32-byte
  static F set1(float a) { return _mm512_set1_ps(a); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static float hmax(F a) { return _mm512_reduce_max_ps(a); }
  static F keep(F a, int64_t r) { return r >= W ? a : _mm512_maskz_mov_ps(mk(r), a); }
  static F exp(F x) {
    x = _mm512_min_ps(_mm512_set1_ps(kExpHi), _mm512_max_ps(_mm512_set1_ps(kExpLo), x));  // NaN stays NaN
    F n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    F r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
    F p = _mm512_fmadd_ps(_mm512_set1_ps(kC7), r, _mm512_set1_ps(kC6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
  }
  static __m512d lo(F x) { return _mm512_cvtps_pd(_mm512_castps512_ps256(x)); }
  static __m512d hi(F x) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))); }
  static D dzero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
  static D dadd(D a, F x) { return {_mm512_add_pd(a.lo, lo(x)), _mm512_add_pd(a.hi, hi(x))}; }
  static D dadd_at(D a, const float* p) {  // converts straight from memory: no lane extraction
    return {_mm512_add_pd(a.lo, _mm512_cvtps_pd(_mm256_loadu_ps(p))),
            _mm512_add_pd(a.hi, _mm512_cvtps_pd(_mm256_loadu_ps(p + 8)))};
  }
  static D dfma(D a, F x, F y) { return {_mm512_fmadd_pd(lo(x), lo(y), a.lo), _mm512_fmadd_pd(hi(x), hi(y), a.hi)}; }
  static D dplus(D a, D b) { return {_mm512_add_pd(a.lo, b.lo), _mm512_add_pd(a.hi, b.hi)}; }
  static D dset1(double v) { return {_mm512_set1_pd(v), _mm512_set1_pd(v)}; }
  static D dmul(D a, D b) { return {_mm512_mul_pd(a.lo, b.lo), _mm512_mul_pd(a.hi, b.hi)}; }
  static D dsub(D a, D b) { return {_mm512_sub_pd(a.lo, b.lo), _mm512_sub_pd(a.hi, b.hi)}; }
  static F dtof(D a) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(a.lo))),
                                               _mm256_castps_pd(_mm512_cvtpd_ps(a.hi)), 1));
  }
  static D ftod(F x) { return {lo(x), hi(x)}; }
  static double hsum(D a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }
  static D dload(const double* p, int64_t r) {
    if (r >= 16) return {_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)};
    return {_mm512_maskz_loadu_pd(mk8(r), p), _mm512_maskz_loadu_pd(mk8(r - 8), p + 8)};
  }
  static void dstore(double* p, D a, int64_t r) {
    if (r >= 16) {
      _mm512_storeu_pd(p, a.lo);
      _mm512_storeu_pd(p + 8, a.hi);
    } else {
      _mm512_mask_storeu_pd(p, mk8(r), a.lo);
      _mm512_mask_storeu_pd(p + 8, mk8(r - 8), a.hi);
    }
  }
};
#include "cpu/reduce_kernels.inc"
}  // namespace k512
#pragma GCC pop_options
#endif

namespace {
int detect() {
  int level = 0;
#if CNN_REDUCE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    level = 2;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    level = 1;
#endif
  if (const char* cap = std::getenv("CNNNATIVE_REDUCE_ISA")) {
    int c = std::atoi(cap);
    if (c >= 0 && c < level) level = c;
  }
  return level;
}
}  // namespace

int isa_level() {
  static const int level = detect();
  return level;
}

#if CNN_REDUCE_X86
#define CNN_DISPATCH(call)     \
  switch (isa_level()) {       \
    case 2: return k512::call; \
    case 1: return k256::call; \
    default: return k1::call;  \
  }
#else
#define CNN_DISPATCH(call) return k1::call;
#endif

template <class T>
void lane_sum(const T* x, int64_t P, int64_t V, int64_t ld, double* acc) {
  CNN_DISPATCH(lane_sum(x, P, V, ld, acc))
}
template <class T>
void lane_stats(const T* x, int64_t P, int64_t V, int64_t ld, double* sum, double* m2) {
  CNN_DISPATCH(lane_stats(x, P, V, ld, sum, m2))
}
template <class T>
void lane_dot(const T* dy, const T* x, int64_t P, int64_t V, int64_t ld, const float* mean, double* sdy, double* sdyx) {
  CNN_DISPATCH(lane_dot(dy, x, P, V, ld, mean, sdy, sdyx))
}
template <class T>
void lane_affine(const T* x, T* y, int64_t P, int64_t V, int64_t ld, const float* m, const float* s, const float* t,
                 bool stream) {
  CNN_DISPATCH(lane_affine(x, y, P, V, ld, m, s, t, stream))
}
template <class T>
void lane_affine_bwd(const T* dy, const T* x, T* dx, int64_t P, int64_t V, int64_t ld, const float* m, const float* a,
                     const float* b, const float* c, bool stream) {
  CNN_DISPATCH(lane_affine_bwd(dy, x, dx, P, V, ld, m, a, b, c, stream))
}
void stream_fence() {
#if CNN_REDUCE_X86
  _mm_sfence();
#endif
}
void window_sum(const float* x, int64_t W, int64_t V, int64_t h0, int64_t h1, int64_t w0, int64_t w1, double* acc) {
  CNN_DISPATCH(window_sum(x, W, V, h0, h1, w0, w1, acc))
}
void softmax_chunk(const float* x, int64_t n, float* m, double* s, float* e) {
  CNN_DISPATCH(softmax_chunk(x, n, m, s, e))
}
void scale(float* y, int64_t n, float f) { CNN_DISPATCH(scale(y, n, f)) }
void exp_scale(const float* x, float* y, int64_t n, float m, float f) { CNN_DISPATCH(exp_scale(x, y, n, m, f)) }
double dot(const float* a, const float* b, int64_t n) { CNN_DISPATCH(dot(a, b, n)) }
void softmax_bwd(const float* dy, const float* y, float* dx, int64_t n, float d) {
  CNN_DISPATCH(softmax_bwd(dy, y, dx, n, d))
}

void softmax_combine(const float* m, const double* s, int64_t K, float* M, double* S) {
  float mx = m[0];
  for (int64_t k = 1; k < K; ++k) mx = m[k] > mx ? m[k] : mx;
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += m[k] == mx ? s[k] : s[k] * std::exp(double(m[k]) - double(mx));
  *M = mx;
  *S = sum;
}

void avg_pool_image(const float* x, float* y, int64_t W, int64_t V, const PoolWindows& w, double* acc) {
  constexpr int64_t kWindowLanes = 64;  // window_sum keeps up to 4 vectors of 16 lanes in registers
  const int64_t OH = int64_t(w.h0.size()), OW = int64_t(w.w0.size());
  for (int64_t oh = 0; oh < OH; ++oh) {
    if (V <= kWindowLanes) {  // window by window, accumulators in registers
      for (int64_t ow = 0; ow < OW; ++ow) {
        window_sum(x, W, V, w.h0[oh], w.h1[oh], w.w0[ow], w.w1[ow], acc);
        const double inv = w.inv[oh * OW + ow];
        float* o = y + (oh * OW + ow) * V;
        for (int64_t v = 0; v < V; ++v) o[v] = float(acc[v] * inv);
      }
      continue;
    }
    std::fill(acc, acc + OW * V, 0.0);
    for (int64_t h = w.h0[oh]; h < w.h1[oh]; ++h)
      for (int64_t ow = 0; ow < OW; ++ow) lane_sum(x + (h * W + w.w0[ow]) * V, w.w1[ow] - w.w0[ow], V, V, acc + ow * V);
    for (int64_t ow = 0; ow < OW; ++ow) {
      const double inv = w.inv[oh * OW + ow];
      const double* a = acc + ow * V;
      float* o = y + (oh * OW + ow) * V;
      for (int64_t v = 0; v < V; ++v) o[v] = float(a[v] * inv);
    }
  }
}

template void lane_sum(const float*, int64_t, int64_t, int64_t, double*);
template void lane_sum(const bf16*, int64_t, int64_t, int64_t, double*);
template void lane_stats(const float*, int64_t, int64_t, int64_t, double*, double*);
template void lane_stats(const bf16*, int64_t, int64_t, int64_t, double*, double*);
template void lane_dot(const float*, const float*, int64_t, int64_t, int64_t, const float*, double*, double*);
template void lane_dot(const bf16*, const bf16*, int64_t, int64_t, int64_t, const float*, double*, double*);
template void lane_affine(const float*, float*, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                          bool);
template void lane_affine(const bf16*, bf16*, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                          bool);
template void lane_affine_bwd(const float*, const float*, float*, int64_t, int64_t, int64_t, const float*, const float*,
                              const float*, const float*, bool);
template void lane_affine_bwd(const bf16*, const bf16*, bf16*, int64_t, int64_t, int64_t, const float*, const float*,
                              const float*, const float*, bool);

}  // namespace red
}  // namespace cpu
}  // namespace cnn
