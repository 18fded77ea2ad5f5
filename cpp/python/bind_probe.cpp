// Binds the FMA peak probe (cpu/probe.cpp) as cnnnative._core.fma_peak_gflops(iters).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <utility>

namespace cnn {
std::pair<double, int> fma_peak_gflops(long iters);
bool cpu_has_avx512_bf16();
double bf16_peak_gflops(long iters);
}  // namespace cnn

void bind_probe(pybind11::module_& m) {
  m.def("fma_peak_gflops", &cnn::fma_peak_gflops, pybind11::arg("iters") = 20000000L,
        "Measured fp32 FMA throughput of all OpenMP threads: (GFLOP/s, SIMD lanes)");
  m.def("bf16_peak_gflops", &cnn::bf16_peak_gflops, pybind11::arg("iters") = 20000000L,
        "Measured AVX512-BF16 dot-product throughput of all OpenMP threads in GFLOP/s (0 without it)");
  m.def(
      "cpu_has_avx512", [] { return bool(__builtin_cpu_supports("avx512f")); },
      "Whether this CPU has AVX-512F (the Winograd convolutions need it)");
  m.def("cpu_has_avx512_bf16", &cnn::cpu_has_avx512_bf16,
        "Whether this CPU has AVX512-BF16 (compile(dtype='bfloat16') needs it)");
}
