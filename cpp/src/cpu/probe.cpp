// FMA peak probe: every OpenMP thread runs independent chains of fused multiply-adds on registers
// (AVX-512, else AVX2+FMA, else scalar) for a fixed count; returns the measured GFLOP/s of all threads
// together. Benchmarks report their GFLOP/s as a share of this number. The read-bandwidth probe is the memory side
// of the same roofline (bench/roofline.py).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace cnn {
namespace {

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float chains_avx512(long iters) {
  __m512 a[12];
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int k = 0; k < 12; ++k) a[k] = _mm512_set1_ps(float(k));
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) a[k] = _mm512_fmadd_ps(a[k], m, c);
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) float chains_avx2(long iters) {
  __m256 a[12];
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(float(k));
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], m, c);
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
// bf16 dot products (vdpbf16ps): each instruction does 32 bf16 multiplies and adds into 16 float lanes.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) float chains_bf16(long iters) {
  __m512 a[12];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);  // 1.0, ~6e-8
  for (int k = 0; k < 12; ++k) a[k] = _mm512_set1_ps(float(k));
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) a[k] = _mm512_dpbf16_ps(a[k], x, y);
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  return _mm512_reduce_add_ps(s);
}

// The sum of n floats (n a multiple of 64) with four independent accumulators: loads, not adds, bound it.
__attribute__((target("avx512f"))) float read_avx512(const float* p, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
#endif

// Without AVX-512: eight independent sums the compiler vectorizes (SSE loads still stream memory at its rate).
float read_scalar(const float* p, size_t n) {
  float s[8] = {};
  for (size_t i = 0; i < n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += p[i + k];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

float chains_scalar(long iters) {
  float a[12];
  for (int k = 0; k < 12; ++k) a[k] = float(k);
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) a[k] = a[k] * 0.999999f + 1e-7f;
  float s = 0;
  for (int k = 0; k < 12; ++k) s += a[k];
  return s;
}

// Runs chain() on every OpenMP thread at once; returns the wall seconds and the thread count.
template <class F>
std::pair<double, int> run_on_all_threads(F chain) {
  volatile float sink = 0;
  int threads = 1;
  auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    sink += chain();
  }
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), threads};
}

}  // namespace

// AVX512-BF16 (vdpbf16ps): CPUID leaf 7 subleaf 1, EAX bit 5, and AVX-512F with OS support (leaf 7/0 EBX
// bit 16; oneDNN dispatches its bf16 kernels on the same bits).
bool cpu_has_avx512_bf16() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a >> 5) & 1u;
#else
  return false;
#endif
}

// Measured bf16 dot-product throughput of all threads (GFLOP/s, 2 per multiply-add); 0 without AVX512-BF16.
double bf16_peak_gflops(long iters) {
#if defined(__x86_64__)
  if (!cpu_has_avx512_bf16()) return 0;
  auto [s, threads] = run_on_all_threads([&] { return chains_bf16(iters); });
  return double(iters) * 12 * 32 * 2 * threads / s * 1e-9;
#else
  return 0;
#endif
}

// Returns {gflops, lanes}: lanes is 16 (AVX-512), 8 (AVX2) or 1.
std::pair<double, int> fma_peak_gflops(long iters) {
  int lanes = 1;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    lanes = 16;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    lanes = 8;
#endif
  auto [s, threads] = run_on_all_threads([&] {
#if defined(__x86_64__)
    return lanes == 16 ? chains_avx512(iters) : lanes == 8 ? chains_avx2(iters) : chains_scalar(iters);
#else
    return chains_scalar(iters);
#endif
  });
  double flops = double(iters) * 12 * lanes * 2 * threads;
  return {flops / s * 1e-9, lanes};
}

// Streaming-read bandwidth of all OpenMP threads (GB/s): each thread sums its contiguous share of a buffer of
// `bytes` (rounded up to whole 256-byte lines, at least 1 MiB), `reps` passes after one untimed pass that touches
// the pages; returns the fastest pass. A buffer larger than the caches measures memory; one the size of a model's
// weights measures what streaming those weights once per run can get.
double read_bandwidth_gbs(size_t bytes, int reps) {
  if (reps < 1) throw std::invalid_argument("read_bandwidth_gbs: reps must be >= 1");
  const size_t n = (std::max<size_t>(bytes, size_t(1) << 20) + 255) / 256 * 64;  // floats, a multiple of 64
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::aligned_alloc(64, n * sizeof(float))),
                                                   &std::free);
  if (!buf) throw std::bad_alloc();
  float* p = buf.get();
  bool avx512 = false;
#if defined(__x86_64__)
  __builtin_cpu_init();
  avx512 = __builtin_cpu_supports("avx512f");
#endif
  double best = 0;
  for (int rep = 0; rep <= reps; ++rep) {
    volatile float sink = 0;
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
    {
      const size_t t = size_t(omp_get_thread_num()), nt = size_t(omp_get_num_threads());
      const size_t lo = n / 64 * t / nt * 64, hi = n / 64 * (t + 1) / nt * 64;
      if (rep == 0)  // first touch: each thread's pages where it reads them
        std::memset(static_cast<void*>(p + lo), 0, (hi - lo) * sizeof(float));
#if defined(__x86_64__)
      sink += avx512 ? read_avx512(p + lo, hi - lo) : read_scalar(p + lo, hi - lo);
#else
      (void)avx512;
      sink += read_scalar(p + lo, hi - lo);
#endif
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::max(best, double(n) * sizeof(float) / s * 1e-9);
  }
  return best;
}

}  // namespace cnn
