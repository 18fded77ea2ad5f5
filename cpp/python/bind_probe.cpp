// Binds the FMA peak probe (cpu/probe.cpp) as cnnnative._core.fma_peak_gflops(iters).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <utility>

namespace cnn {
std::pair<double, int> fma_peak_gflops(long iters);
}

void bind_probe(pybind11::module_& m) {
  m.def("fma_peak_gflops", &cnn::fma_peak_gflops, pybind11::arg("iters") = 20000000L,
        "Measured fp32 FMA throughput of all OpenMP threads: (GFLOP/s, SIMD lanes)");
}
