// A backend whose buffers are host memory: counted allocations, memcpy copies, and the optimizer update and
// guard reductions of host/optim.hpp (AVX-512 / AVX2 / scalar, bit-identical across paths). The `cpu` and
// `reference` backends derive from it.
#pragma once
#include "core/backend.hpp"

namespace cnn {

class HostBackend : public Backend {
 public:
  using Backend::Backend;
  float absmax(const float* x, size_t n, bool* finite) const override;
  int64_t first_non_finite(const float* x, size_t n) const override;
  void sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step,
                  OptimMaxima* maxima) const override;
  void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c, long step,
                   OptimMaxima* maxima) const override;
  long sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n, const SGDConfig& c,
                            long step) const override;
  long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax, size_t n,
                             const AdamConfig& c, long step) const override;
};

}  // namespace cnn
