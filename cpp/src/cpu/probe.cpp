// FMA peak probe: every OpenMP thread runs independent chains of fused multiply-adds on registers
// (AVX-512, else AVX2+FMA, else scalar) for a fixed count; returns the measured GFLOP/s of all threads
// together. Benchmarks report their GFLOP/s as a share of this number.
#include <immintrin.h>
#include <omp.h>

#include <chrono>
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
#endif

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

}  // namespace cnn
