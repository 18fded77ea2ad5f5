// cpu kernels of the shape ops and the constant fill: reshape / flatten (the same bytes under a new shape: nothing
// to do when the planner put the output over the input, one parallel copy otherwise) and fill (the loss seed).
// Plain layout only (no layout rule: the layout pass hands them plain tensors).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/backend.hpp"
#include "core/op.hpp"

namespace cnn {
namespace {

struct ViewCopy : Kernel {
  size_t bytes;
  explicit ViewCopy(const KernelCtx& c) : bytes(c.in[0].bytes()) {}
  std::string impl() const override { return "native copy"; }  // as the reorder and dropout kernels that only copy
  void run(const RunCtx& r) override {
    if (r.out[0] == r.in[0]) return;  // in place: the view is free
    const char* x = static_cast<const char*>(r.in[0]);
    char* y = static_cast<char*>(r.out[0]);
    const size_t chunk = size_t(1) << 20;
    const int64_t parts = int64_t((bytes + chunk - 1) / chunk);
#pragma omp parallel for if (parts > 1)
    for (int64_t p = 0; p < parts; ++p) {
      const size_t b = size_t(p) * chunk;
      std::memcpy(y + b, x + b, std::min(chunk, bytes - b));
    }
  }
};

struct Fill : Kernel {
  int64_t n;
  double value;
  DType dtype;
  explicit Fill(const KernelCtx& c)
      : n(numel(c.out[0].shape)), value(c.node.attrs.f("value", 0.0)), dtype(c.out[0].dtype) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    if (dtype == DType::f64) {
      std::fill_n(static_cast<double*>(r.out[0]), n, value);
    } else {
      std::fill_n(static_cast<float*>(r.out[0]), n, float(value));
    }
  }
};

KernelRegistrar reshape_reg("cpu", "reshape", [](const KernelCtx& c) { return std::make_unique<ViewCopy>(c); });
KernelRegistrar flatten_reg("cpu", "flatten", [](const KernelCtx& c) { return std::make_unique<ViewCopy>(c); });
KernelRegistrar fill_reg("cpu", "fill", [](const KernelCtx& c) { return std::make_unique<Fill>(c); });

}  // namespace
}  // namespace cnn
