#include "core/backend.hpp"

#include <cmath>

#include "host/optim.hpp"

namespace cnn {

float HostBackend::absmax(const float* x, size_t n, bool* finite) const { return cnn::absmax(x, n, finite); }

int64_t HostBackend::first_non_finite(const float* x, size_t n) const {
  float acc = 0;  // x * 0 is 0 for finite x, NaN otherwise: one vectorized pass, then a scan only on failure
#pragma omp simd reduction(+ : acc)
  for (size_t i = 0; i < n; ++i) acc += x[i] * 0.f;
  if (acc == 0.f) return -1;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return int64_t(i);
  return -1;
}

void HostBackend::sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step,
                             OptimMaxima* maxima) const {
  cnn::sgd_update(p, g, momentum, n, c, step, maxima);
}
void HostBackend::adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c,
                              long step, OptimMaxima* maxima) const {
  cnn::adam_update(p, g, m, v, vmax, n, c, step, maxima);
}
long HostBackend::sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n,
                                       const SGDConfig& c, long step) const {
  return cnn::sgd_first_non_finite(p, g, momentum, n, c, step);
}
long HostBackend::adam_first_non_finite(const float* p, const float* g, const float* m, const float* v,
                                        const float* vmax, size_t n, const AdamConfig& c, long step) const {
  return cnn::adam_first_non_finite(p, g, m, v, vmax, n, c, step);
}

}  // namespace cnn
