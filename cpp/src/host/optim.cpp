// cnnnative — optimizer update kernels (cpp/src/host/optim.cpp)
//
// Owns: the float SGD / Adam / AdamW update kernels over flat parameter,
// gradient and state arrays, their double-precision references, argument
// validation, OpenMP chunking and the run-time SIMD dispatch.
//
// Promises (see optim.hpp for the math):
//  * Follows torch.optim's single-tensor float path operation by operation:
//    scalar coefficients in double rounded once to float; element math in
//    float; Adam's m update as PyTorch's lerp (m + w*(d-m) for |w| < 0.5,
//    d - (d-m)*(1-w) otherwise), v = b2*v + ((1-b2)*d)*d, and
//    p += (-step_size*m) / (sqrt(v)/sqrt(bc2) + eps). PyTorch's CPU kernels
//    may fuse some of these into FMAs, so results agree to a few ulp, not
//    bitwise.
//  * Vectorization: hand-written AVX-512F and AVX2 kernels compiled with
//    function-level target attributes (the translation unit itself needs no
//    -m flags and runs on any x86-64), chosen once via __builtin_cpu_supports;
//    scalar fallback everywhere else (and on non-x86 builds). Vector kernels
//    use masked loads/stores for the tail (no scalar remainder loop) and
//    separate, contraction-proof mul and add (no FMA), so the scalar, AVX2 and
//    AVX-512 paths give bit-identical results (barring -ffast-math).
//  * Parallelism: OpenMP static schedule over 16Ki-float chunks when
//    n > 1<<15 and not already inside a parallel region; elements are
//    independent, so results do not depend on the thread count.
//  * No heap allocation on the update path (only the error message of a
//    rejected call allocates); validation throws std::invalid_argument before
//    any buffer is written.
#include "host/optim.hpp"

#include "core/optim_coeffs.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CNN_OPTIM_X86 1
#include <immintrin.h>
#else
#define CNN_OPTIM_X86 0
#endif

namespace cnn {
namespace {

constexpr std::size_t kChunk = std::size_t(1) << 14;        // floats per task
constexpr std::size_t kParallelMin = std::size_t(1) << 15;  // serial at or below

// ---------------------------------------------------------------- validation

using namespace optim_detail;  // argument checks and coefficients: core/optim_coeffs.hpp

// ------------------------------------------------------------ scalar kernels

// Products that feed an add/sub go through mulf / mul8 / mul16: an empty asm
// makes the product opaque so the compiler cannot contract it into an FMA
// (GCC contracts by default in C++, also inside intrinsics). Every path then
// rounds each product and sum separately, in the same order, which keeps the
// scalar, AVX2 and AVX-512 results bit-identical. FMA would buy nothing here:
// these loops are bound by memory bandwidth.
#if CNN_OPTIM_X86 && defined(__FMA__)
inline float mulf(float a, float b) {
  float r = a * b;
  __asm__("" : "+x"(r));
  return r;
}
#else
inline float mulf(float a, float b) { return a * b; }  // no FMA to contract to
#endif

inline void sgd_elem(float* p, const float* g, float* buf, const SgdK& k, OptimMaxima* mx = nullptr) {
  const float pv = *p;
  float d = *g;
  if (k.has_wd) d = d + mulf(k.wd, pv);
  if (k.mom != 0) {
    const float b = (k.mom == 1) ? d : mulf(k.mu, *buf) + mulf(k.omd, d);
    *buf = b;
    if (mx) mx->m = std::max(mx->m, std::fabs(b));
    d = k.nesterov ? d + mulf(k.mu, b) : b;
  }
  *p = pv - mulf(k.lr, d);
  if (mx) mx->p = std::max(mx->p, std::fabs(*p));
}

inline void adam_elem(float* p, const float* g, float* m, float* v, float* vmax, const AdamK& k,
                      OptimMaxima* mx = nullptr) {
  float pv = *p;
  if (k.has_decay) pv = pv * k.decay;
  float d = *g;
  if (k.has_wd) d = d + mulf(k.wd, pv);
  const float mo = *m;
  const float mn = k.lerp_lo ? mo + mulf(k.w1, d - mo) : d - mulf(d - mo, k.omw1);
  const float vn = mulf(k.b2, *v) + mulf(k.omb2 * d, d);
  *m = mn;
  *v = vn;
  float s = vn;
  if (k.ams) {
    const float x = *vmax;
    s = (x > vn) ? x : vn;  // same NaN behaviour as (v)maxps(vmax, v)
    *vmax = s;
  }
  const float den = std::sqrt(s) / k.bc2s + k.eps;
  *p = pv - (k.step_size * mn) / den;
  if (mx) {
    mx->p = std::max(mx->p, std::fabs(*p));
    mx->m = std::max(mx->m, std::fabs(mn));
    mx->v = std::max(mx->v, s);  // v, or vmax >= v with amsgrad
  }
}

void sgd_scalar(float* p, const float* g, float* buf, std::size_t n, const SgdK& k, OptimMaxima* mx) {
  for (std::size_t i = 0; i < n; ++i) sgd_elem(p + i, g + i, k.mom ? buf + i : nullptr, k, mx);
}

void adam_scalar(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n, const AdamK& k,
                 OptimMaxima* mx) {
  for (std::size_t i = 0; i < n; ++i) adam_elem(p + i, g + i, m + i, v + i, k.ams ? vmax + i : nullptr, k, mx);
}

#if CNN_OPTIM_X86
// --------------------------------------------------------------- AVX2 kernels

#define CNN_AVX2 __attribute__((target("avx2"), always_inline)) inline

CNN_AVX2 __m256i avx2_tail_mask(std::size_t r) {  // first r (< 8) lanes on
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)), idx);
}

CNN_AVX2 __m256 mul8(__m256 a, __m256 b) {  // unfusable product, see mulf
  __m256 r = _mm256_mul_ps(a, b);
  __asm__("" : "+x"(r));
  return r;
}

template <bool Full>
CNN_AVX2 __m256 ld8(const float* a, __m256i mk) {
  if (Full) return _mm256_loadu_ps(a);
  return _mm256_maskload_ps(a, mk);
}

template <bool Full>
CNN_AVX2 void st8(float* a, __m256i mk, __m256 x) {
  if (Full)
    _mm256_storeu_ps(a, x);
  else
    _mm256_maskstore_ps(a, mk, x);
}

struct Max8 {
  __m256 p, m, v;
};
CNN_AVX2 __m256 abs8(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), x); }
// Masked-off lanes of a partial vector load as zero, so they never raise a maximum.
CNN_AVX2 __m256 zero_off8(__m256 x, __m256i mk) { return _mm256_and_ps(x, _mm256_castsi256_ps(mk)); }

template <bool Full>
CNN_AVX2 void sgd8(float* p, const float* g, float* buf, __m256i mk, const SgdK& k, Max8* mx) {
  const __m256 pv = ld8<Full>(p, mk);
  __m256 d = ld8<Full>(g, mk);
  if (k.has_wd) d = _mm256_add_ps(d, mul8(_mm256_set1_ps(k.wd), pv));
  if (k.mom != 0) {
    const __m256 mu = _mm256_set1_ps(k.mu);
    __m256 b = d;
    if (k.mom == 2) b = _mm256_add_ps(mul8(mu, ld8<Full>(buf, mk)), mul8(_mm256_set1_ps(k.omd), d));
    st8<Full>(buf, mk, b);
    if (mx) mx->m = _mm256_max_ps(mx->m, zero_off8(abs8(b), mk));
    d = k.nesterov ? _mm256_add_ps(d, mul8(mu, b)) : b;
  }
  const __m256 pn = _mm256_sub_ps(pv, mul8(_mm256_set1_ps(k.lr), d));
  st8<Full>(p, mk, pn);
  if (mx) mx->p = _mm256_max_ps(mx->p, zero_off8(abs8(pn), mk));
}

template <bool Full>
CNN_AVX2 void adam8(float* p, const float* g, float* m, float* v, float* vmax, __m256i mk, const AdamK& k, Max8* mx) {
  __m256 pv = ld8<Full>(p, mk);
  if (k.has_decay) pv = mul8(pv, _mm256_set1_ps(k.decay));
  __m256 d = ld8<Full>(g, mk);
  if (k.has_wd) d = _mm256_add_ps(d, mul8(_mm256_set1_ps(k.wd), pv));
  const __m256 mo = ld8<Full>(m, mk);
  const __m256 dm = _mm256_sub_ps(d, mo);
  const __m256 mn = k.lerp_lo ? _mm256_add_ps(mo, mul8(_mm256_set1_ps(k.w1), dm))
                              : _mm256_sub_ps(d, mul8(dm, _mm256_set1_ps(k.omw1)));
  const __m256 vn =
      _mm256_add_ps(mul8(_mm256_set1_ps(k.b2), ld8<Full>(v, mk)), mul8(mul8(_mm256_set1_ps(k.omb2), d), d));
  st8<Full>(m, mk, mn);
  st8<Full>(v, mk, vn);
  __m256 s = vn;
  if (k.ams) {
    s = _mm256_max_ps(ld8<Full>(vmax, mk), vn);
    st8<Full>(vmax, mk, s);
  }
  const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(s), _mm256_set1_ps(k.bc2s)), _mm256_set1_ps(k.eps));
  const __m256 upd = _mm256_div_ps(mul8(_mm256_set1_ps(k.step_size), mn), den);
  const __m256 pn = _mm256_sub_ps(pv, upd);
  st8<Full>(p, mk, pn);
  if (mx) {
    mx->p = _mm256_max_ps(mx->p, zero_off8(abs8(pn), mk));
    mx->m = _mm256_max_ps(mx->m, zero_off8(abs8(mn), mk));
    mx->v = _mm256_max_ps(mx->v, zero_off8(s, mk));
  }
}

CNN_AVX2 float hmax8(__m256 x) {
  __m128 a = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  a = _mm_max_ps(a, _mm_movehl_ps(a, a));
  a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
  return _mm_cvtss_f32(a);
}
CNN_AVX2 void fold8(const Max8& v, OptimMaxima* mx) {
  mx->p = std::max(mx->p, hmax8(v.p));
  mx->m = std::max(mx->m, hmax8(v.m));
  mx->v = std::max(mx->v, hmax8(v.v));
}

// The loops with the maxima (MX) or without: see sgd_loop16 below for why each is its own instantiation.
template <bool MX>
__attribute__((target("avx2"))) void sgd_loop8(float* p, const float* g, float* buf, std::size_t n, const SgdK k,
                                               OptimMaxima* mx) {
  const __m256i all = _mm256_set1_epi32(-1);
  Max8 acc{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  Max8* a = MX ? &acc : nullptr;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) sgd8<true>(p + i, g + i, k.mom ? buf + i : nullptr, all, k, a);
  if (i < n) sgd8<false>(p + i, g + i, k.mom ? buf + i : nullptr, avx2_tail_mask(n - i), k, a);
  if (MX) fold8(acc, mx);
}

template <bool MX>
__attribute__((target("avx2"))) void adam_loop8(float* p, const float* g, float* m, float* v, float* vmax,
                                                std::size_t n, const AdamK k, OptimMaxima* mx) {
  const __m256i all = _mm256_set1_epi32(-1);
  Max8 acc{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  Max8* a = MX ? &acc : nullptr;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) adam8<true>(p + i, g + i, m + i, v + i, k.ams ? vmax + i : nullptr, all, k, a);
  if (i < n) adam8<false>(p + i, g + i, m + i, v + i, k.ams ? vmax + i : nullptr, avx2_tail_mask(n - i), k, a);
  if (MX) fold8(acc, mx);
}

__attribute__((target("avx2"))) void sgd_avx2(float* p, const float* g, float* buf, std::size_t n, const SgdK& kref,
                                              OptimMaxima* mx) {
  if (mx)  // the loops take the config by value: stores through p cannot alias it
    sgd_loop8<true>(p, g, buf, n, kref, mx);
  else
    sgd_loop8<false>(p, g, buf, n, kref, nullptr);
}

__attribute__((target("avx2"))) void adam_avx2(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n,
                                               const AdamK& kref, OptimMaxima* mx) {
  if (mx)  // the loops take the config by value: stores through p cannot alias it
    adam_loop8<true>(p, g, m, v, vmax, n, kref, mx);
  else
    adam_loop8<false>(p, g, m, v, vmax, n, kref, nullptr);
}

#undef CNN_AVX2

// ------------------------------------------------------------ AVX-512 kernels

#define CNN_AVX512 __attribute__((target("avx512f"), always_inline)) inline

CNN_AVX512 __m512 mul16(__m512 a, __m512 b) {  // unfusable product, see mulf
  __m512 r = _mm512_mul_ps(a, b);
  __asm__("" : "+v"(r));
  return r;
}

CNN_AVX512 __m512 ld16(const float* a, __mmask16 mk) { return _mm512_maskz_loadu_ps(mk, a); }
CNN_AVX512 void st16(float* a, __mmask16 mk, __m512 x) { _mm512_mask_storeu_ps(a, mk, x); }

struct Max16 {
  __m512 p, m, v;
};
CNN_AVX512 __m512 abs16(__m512 x) { return _mm512_abs_ps(x); }

CNN_AVX512 void sgd16(float* p, const float* g, float* buf, __mmask16 mk, const SgdK& k, Max16* mx) {
  const __m512 pv = ld16(p, mk);
  __m512 d = ld16(g, mk);
  if (k.has_wd) d = _mm512_add_ps(d, mul16(_mm512_set1_ps(k.wd), pv));
  if (k.mom != 0) {
    const __m512 mu = _mm512_set1_ps(k.mu);
    __m512 b = d;
    if (k.mom == 2) b = _mm512_add_ps(mul16(mu, ld16(buf, mk)), mul16(_mm512_set1_ps(k.omd), d));
    st16(buf, mk, b);
    if (mx) mx->m = _mm512_mask_max_ps(mx->m, mk, mx->m, abs16(b));
    d = k.nesterov ? _mm512_add_ps(d, mul16(mu, b)) : b;
  }
  const __m512 pn = _mm512_sub_ps(pv, mul16(_mm512_set1_ps(k.lr), d));
  st16(p, mk, pn);
  if (mx) mx->p = _mm512_mask_max_ps(mx->p, mk, mx->p, abs16(pn));
}

CNN_AVX512 void adam16(float* p, const float* g, float* m, float* v, float* vmax, __mmask16 mk, const AdamK& k,
                       Max16* mx) {
  __m512 pv = ld16(p, mk);
  if (k.has_decay) pv = mul16(pv, _mm512_set1_ps(k.decay));
  __m512 d = ld16(g, mk);
  if (k.has_wd) d = _mm512_add_ps(d, mul16(_mm512_set1_ps(k.wd), pv));
  const __m512 mo = ld16(m, mk);
  const __m512 dm = _mm512_sub_ps(d, mo);
  const __m512 mn = k.lerp_lo ? _mm512_add_ps(mo, mul16(_mm512_set1_ps(k.w1), dm))
                              : _mm512_sub_ps(d, mul16(dm, _mm512_set1_ps(k.omw1)));
  const __m512 vn = _mm512_add_ps(mul16(_mm512_set1_ps(k.b2), ld16(v, mk)), mul16(mul16(_mm512_set1_ps(k.omb2), d), d));
  st16(m, mk, mn);
  st16(v, mk, vn);
  __m512 s = vn;
  if (k.ams) {
    s = _mm512_maskz_max_ps(mk, ld16(vmax, mk), vn);
    st16(vmax, mk, s);
  }
  const __m512 root = _mm512_maskz_sqrt_ps(mk, s);
  const __m512 den = _mm512_add_ps(_mm512_div_ps(root, _mm512_set1_ps(k.bc2s)), _mm512_set1_ps(k.eps));
  const __m512 upd = _mm512_div_ps(mul16(_mm512_set1_ps(k.step_size), mn), den);
  const __m512 pn = _mm512_sub_ps(pv, upd);
  st16(p, mk, pn);
  if (mx) {
    mx->p = _mm512_mask_max_ps(mx->p, mk, mx->p, abs16(pn));
    mx->m = _mm512_mask_max_ps(mx->m, mk, mx->m, abs16(mn));
    mx->v = _mm512_mask_max_ps(mx->v, mk, mx->v, s);
  }
}

CNN_AVX512 void fold16(const Max16& v, OptimMaxima* mx) {
  mx->p = std::max(mx->p, _mm512_reduce_max_ps(v.p));
  mx->m = std::max(mx->m, _mm512_reduce_max_ps(v.m));
  mx->v = std::max(mx->v, _mm512_reduce_max_ps(v.v));
}

// The loops over [0, n) with the maxima (MX) or without. One instantiation each (also sgd_loop8, adam_loop8), so that
// the maxima's pointer is &acc or null at compile time: through a pointer chosen at run time (mx ? &acc : nullptr) the
// accumulators stayed in memory, a store-to-load chain of two maxima per 16 floats (LeNet-5's SGD update with momentum,
// 61,706 parameters on one thread: 28 -> 25.5 us, and the loop became a candidate for unswitching on the config).
template <bool MX>
__attribute__((target("avx512f"))) void sgd_loop16(float* p, const float* g, float* buf, std::size_t n, const SgdK k,
                                                   OptimMaxima* mx) {
  Max16 acc{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  Max16* a = MX ? &acc : nullptr;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) sgd16(p + i, g + i, k.mom ? buf + i : nullptr, __mmask16(0xFFFF), k, a);
  if (i < n) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (n - i)) - 1u);
    sgd16(p + i, g + i, k.mom ? buf + i : nullptr, mk, k, a);
  }
  if (MX) fold16(acc, mx);
}

template <bool MX>
__attribute__((target("avx512f"))) void adam_loop16(float* p, const float* g, float* m, float* v, float* vmax,
                                                    std::size_t n, const AdamK k, OptimMaxima* mx) {
  Max16 acc{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  Max16* a = MX ? &acc : nullptr;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) adam16(p + i, g + i, m + i, v + i, k.ams ? vmax + i : nullptr, __mmask16(0xFFFF), k, a);
  if (i < n) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (n - i)) - 1u);
    adam16(p + i, g + i, m + i, v + i, k.ams ? vmax + i : nullptr, mk, k, a);
  }
  if (MX) fold16(acc, mx);
}

__attribute__((target("avx512f"))) void sgd_avx512(float* p, const float* g, float* buf, std::size_t n,
                                                   const SgdK& kref, OptimMaxima* mx) {
  if (mx)  // the loops take the config by value: stores through p cannot alias it
    sgd_loop16<true>(p, g, buf, n, kref, mx);
  else
    sgd_loop16<false>(p, g, buf, n, kref, nullptr);
}

__attribute__((target("avx512f"))) void adam_avx512(float* p, const float* g, float* m, float* v, float* vmax,
                                                    std::size_t n, const AdamK& kref, OptimMaxima* mx) {
  if (mx)  // the loops take the config by value: stores through p cannot alias it
    adam_loop16<true>(p, g, m, v, vmax, n, kref, mx);
  else
    adam_loop16<false>(p, g, m, v, vmax, n, kref, nullptr);
}

// max |x| over x[0, n) and whether every element is finite (a NaN/inf makes the x*0 sum NaN).
__attribute__((target("avx512f"))) void absmax_avx512(const float* x, std::size_t n, float* mx, bool* finite) {
  __m512 acc = _mm512_setzero_ps(), z = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    acc = _mm512_max_ps(acc, _mm512_abs_ps(v));
    z = _mm512_add_ps(z, _mm512_mul_ps(v, _mm512_setzero_ps()));
  }
  if (i < n) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(mk, x + i);
    acc = _mm512_max_ps(acc, _mm512_abs_ps(v));
    z = _mm512_add_ps(z, _mm512_mul_ps(v, _mm512_setzero_ps()));
  }
  *mx = std::max(*mx, _mm512_reduce_max_ps(acc));
  *finite = *finite && _mm512_reduce_add_ps(z) == 0.f;
}

#undef CNN_AVX512
#endif  // CNN_OPTIM_X86

// ---------------------------------------------------------------- dispatch

using SgdFn = void (*)(float*, const float*, float*, std::size_t, const SgdK&, OptimMaxima*);
using AdamFn = void (*)(float*, const float*, float*, float*, float*, std::size_t, const AdamK&, OptimMaxima*);

int detect_best() {
#if CNN_OPTIM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 2;
  if (__builtin_cpu_supports("avx2")) return 1;
#endif
  return 0;
}

int best_level() {
  static const int best = detect_best();
  return best;
}

std::atomic<int> g_level{-1};  // -1: not chosen yet (use best)

int active_level() {
  const int l = g_level.load(std::memory_order_relaxed);
  return l < 0 ? best_level() : l;
}

SgdFn sgd_kernel() {
#if CNN_OPTIM_X86
  switch (active_level()) {
    case 2: return sgd_avx512;
    case 1: return sgd_avx2;
    default: break;
  }
#endif
  return sgd_scalar;
}

AdamFn adam_kernel() {
#if CNN_OPTIM_X86
  switch (active_level()) {
    case 2: return adam_avx512;
    case 1: return adam_avx2;
    default: break;
  }
#endif
  return adam_scalar;
}

// Calls f(begin, count) over [0, n): one call when small, otherwise OpenMP
// static schedule over kChunk-sized pieces.
// f(begin, count, OptimMaxima* or nullptr); with `mx`, the per-thread maxima are combined into it (max is
// order-independent, so the result does not depend on the thread count).
template <class F>
void for_chunks(std::size_t n, const F& f, OptimMaxima* mx = nullptr) {
  if (n <= kParallelMin) {
    f(std::size_t(0), n, mx);
    return;
  }
  const long nchunks = static_cast<long>((n + kChunk - 1) / kChunk);
  float mp = 0, mm = 0, mv = 0;
#ifdef _OPENMP
#pragma omp parallel if (!omp_in_parallel()) reduction(max : mp, mm, mv)
#endif
  {
    OptimMaxima local;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (long c = 0; c < nchunks; ++c) {
      const std::size_t b = static_cast<std::size_t>(c) * kChunk;
      f(b, std::min(kChunk, n - b), mx ? &local : nullptr);
    }
    mp = std::max(mp, local.p);
    mm = std::max(mm, local.m);
    mv = std::max(mv, local.v);
  }
  if (mx) {
    mx->p = std::max(mx->p, mp);
    mx->m = std::max(mx->m, mm);
    mx->v = std::max(mx->v, mv);
  }
}

}  // namespace

// ------------------------------------------------------------------ public

void sgd_update(float* p, const float* g, float* momentum_buf, std::size_t n, const SGDConfig& c, long step,
                OptimMaxima* maxima) {
  check_sgd(p, g, momentum_buf, n, c, step);
  if (maxima) *maxima = OptimMaxima{};
  if (n == 0) return;
  const SgdK k = make_sgd(c, step);
  const SgdFn fn = sgd_kernel();
  for_chunks(
      n,
      [&](std::size_t b, std::size_t cnt, OptimMaxima* mx) {
        fn(p + b, g + b, k.mom ? momentum_buf + b : nullptr, cnt, k, mx);
      },
      maxima);
}

void adam_update(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n, const AdamConfig& c,
                 long step, OptimMaxima* maxima) {
  check_adam(p, g, m, v, vmax, n, c, step);
  if (maxima) *maxima = OptimMaxima{};
  if (n == 0) return;
  const AdamK k = make_adam(c, step);
  const AdamFn fn = adam_kernel();
  for_chunks(
      n,
      [&](std::size_t b, std::size_t cnt, OptimMaxima* mx) {
        fn(p + b, g + b, m + b, v + b, k.ams ? vmax + b : nullptr, cnt, k, mx);
      },
      maxima);
}

float absmax(const float* x, std::size_t n, bool* finite) {
  // The maxima plumbing of for_chunks carries max |x| in .p and a non-finite flag (1) in .m.
  OptimMaxima r;
  for_chunks(
      n,
      [&](std::size_t b, std::size_t cnt, OptimMaxima* local) {
        float m = 0;
        bool f = true;
#if CNN_OPTIM_X86
        if (active_level() == 2) {
          absmax_avx512(x + b, cnt, &m, &f);
        } else
#endif
        {
          for (std::size_t i = 0; i < cnt; ++i) {
            m = std::max(m, std::fabs(x[b + i]));
            f = f && std::isfinite(x[b + i]);
          }
        }
        local->p = std::max(local->p, m);
        if (!f) local->m = 1.f;
      },
      &r);
  if (finite) *finite = r.m == 0.f;
  return r.p;
}

long sgd_first_non_finite(const float* p, const float* g, const float* buf, std::size_t n, const SGDConfig& c,
                          long step) {
  check_sgd(p, g, buf, n, c, step);
  const SgdK k = make_sgd(c, step);
  for (std::size_t i = 0; i < n; ++i) {
    float pv = p[i], bv = k.mom ? buf[i] : 0.f;
    sgd_elem(&pv, g + i, &bv, k);
    if (!std::isfinite(pv) || !std::isfinite(bv)) return long(i);
  }
  return -1;
}

long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                           std::size_t n, const AdamConfig& c, long step) {
  check_adam(p, g, m, v, vmax, n, c, step);
  const AdamK k = make_adam(c, step);
  for (std::size_t i = 0; i < n; ++i) {
    float pv = p[i], mv = m[i], vv = v[i], xv = k.ams ? vmax[i] : 0.f;
    adam_elem(&pv, g + i, &mv, &vv, &xv, k);
    if (!std::isfinite(pv) || !std::isfinite(mv) || !std::isfinite(vv) || !std::isfinite(xv)) return long(i);
  }
  return -1;
}

void sgd_update_ref(double* p, const double* g, double* buf, std::size_t n, const SGDConfig& c, long step) {
  check_sgd(p, g, buf, n, c, step);
  const double lr = c.lr, wd = c.weight_decay, mu = c.momentum, damp = c.dampening;
  for (std::size_t i = 0; i < n; ++i) {
    double d = g[i] + wd * p[i];
    if (mu != 0.0) {
      buf[i] = (step == 1) ? d : mu * buf[i] + (1.0 - damp) * d;
      d = c.nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

void adam_update_ref(double* p, const double* g, double* m, double* v, double* vmax, std::size_t n, const AdamConfig& c,
                     long step) {
  check_adam(p, g, m, v, vmax, n, c, step);
  const double lr = c.lr, wd = c.weight_decay, b1 = c.beta1, b2 = c.beta2, eps = c.eps;
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(b1, t);
  const double bc2 = 1.0 - std::pow(b2, t);
  for (std::size_t i = 0; i < n; ++i) {
    double pv = p[i];
    double d = g[i];
    if (c.decoupled)
      pv *= 1.0 - lr * wd;
    else
      d += wd * pv;
    m[i] = b1 * m[i] + (1.0 - b1) * d;
    v[i] = b2 * v[i] + (1.0 - b2) * d * d;
    double s = v[i];
    if (c.amsgrad) {
      vmax[i] = std::max(vmax[i], v[i]);
      s = vmax[i];
    }
    const double denom = std::sqrt(s) / std::sqrt(bc2) + eps;
    p[i] = pv - (lr / bc1) * m[i] / denom;
  }
}

// -------------------------------------------------------- SIMD level control

OptimSimd optim_simd_level() { return static_cast<OptimSimd>(active_level()); }

OptimSimd optim_best_simd_level() { return static_cast<OptimSimd>(best_level()); }

OptimSimd optim_set_simd_level(OptimSimd level) {
  int l = static_cast<int>(level);
  l = std::max(0, std::min(l, best_level()));
  g_level.store(l, std::memory_order_relaxed);
  return static_cast<OptimSimd>(l);
}

const char* optim_simd_name(OptimSimd level) {
  switch (level) {
    case OptimSimd::AVX512: return "avx512f";
    case OptimSimd::AVX2: return "avx2";
    case OptimSimd::Scalar: return "scalar";
  }
  return "unknown";
}

}  // namespace cnn
