#include "core/backend.hpp"
#include "core/finite.hpp"

#include <cmath>

#include "host/optim.hpp"

namespace cnn {

float HostBackend::absmax(const float* x, size_t n, bool* finite, Stream*) const { return cnn::absmax(x, n, finite); }

int64_t HostBackend::first_non_finite(const float* x, size_t n, Stream*) const {
  return cnn::first_non_finite(x, int64_t(n));
}

void HostBackend::sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step,
                             OptimMaxima* maxima, Stream*) const {
  cnn::sgd_update(p, g, momentum, n, c, step, maxima);
}
void HostBackend::adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c,
                              long step, OptimMaxima* maxima, Stream*) const {
  cnn::adam_update(p, g, m, v, vmax, n, c, step, maxima);
}
long HostBackend::sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n,
                                       const SGDConfig& c, long step, Stream*) const {
  return cnn::sgd_first_non_finite(p, g, momentum, n, c, step);
}
long HostBackend::adam_first_non_finite(const float* p, const float* g, const float* m, const float* v,
                                        const float* vmax, size_t n, const AdamConfig& c, long step, Stream*) const {
  return cnn::adam_first_non_finite(p, g, m, v, vmax, n, c, step);
}

}  // namespace cnn
