// Binds the probes of cpu/probe.cpp: the FMA and bf16 peaks, the read bandwidth, the CPU's features.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <utility>

namespace cnn {
std::pair<double, int> fma_peak_gflops(long iters);
bool cpu_has_avx512_bf16();
double bf16_peak_gflops(long iters);
double read_bandwidth_gbs(size_t bytes, int reps);
}  // namespace cnn

void bind_probe(pybind11::module_& m) {
  m.def("fma_peak_gflops", &cnn::fma_peak_gflops, pybind11::arg("iters") = 20000000L,
        "Measured fp32 FMA throughput of all OpenMP threads: (GFLOP/s, SIMD lanes)");
  m.def("bf16_peak_gflops", &cnn::bf16_peak_gflops, pybind11::arg("iters") = 20000000L,
        "Measured AVX512-BF16 dot-product throughput of all OpenMP threads in GFLOP/s (0 without it)");
  m.def("read_bandwidth_gbs", &cnn::read_bandwidth_gbs, pybind11::arg("bytes"), pybind11::arg("reps") = 10,
        "Measured streaming-read bandwidth of all OpenMP threads in GB/s, over a buffer of `bytes` (the fastest of "
        "`reps` passes after one that touches the pages)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def(
      "cpu_has_avx512", [] { return bool(__builtin_cpu_supports("avx512f")); },
      "Whether this CPU has AVX-512F (the Winograd convolutions need it)");
  m.def("cpu_has_avx512_bf16", &cnn::cpu_has_avx512_bf16,
        "Whether this CPU has AVX512-BF16 (compile(dtype='bfloat16') needs it)");
}
