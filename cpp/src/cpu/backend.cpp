// The `cpu` backend: oneDNN primitives and native AVX-512/AVX2 kernels (the other files of this folder register
// them under "cpu"), blocked / channels-last activation layouts, bfloat16 activations on AVX512-BF16 CPUs.
#include "core/backend.hpp"

namespace cnn {
namespace {

class CpuBackend : public HostBackend {
 public:
  CpuBackend() : HostBackend("cpu") {}
  bool has_layouts() const override { return true; }
  bool has_fast_kernels() const override { return true; }
  std::string bf16_unavailable() const override {
    return cpu_has_avx512_bf16() ? ""
                                 : "bfloat16 activations need a CPU with AVX512-BF16 instructions; this one has none";
  }
};

BackendRegistrar reg{std::make_shared<CpuBackend>()};

}  // namespace
}  // namespace cnn
