// The cuda backend's optimizer updates and the session guard's reductions, over flat device blocks of n floats
// (cuda/optim.cu). Same contract as host/optim.hpp: torch.optim.SGD / Adam / AdamW element-wise, scalar
// coefficients computed in double on the host and rounded to float once; one fused kernel per update that also
// reduces the maxima (OptimMaxima) when asked. Everything is queued on s.stream; functions that return a value
// (or fill maxima) wait for it (the result is copied back through s.small_dev / s.small_host).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/optim_config.hpp"
#include "cuda/common.hpp"

namespace cnn::cuda {

float absmax(const float* x, size_t n, bool* finite, CudaStream& s);  // finite may be nullptr
int64_t first_non_finite(const float* x, size_t n, CudaStream& s);    // -1: all finite
void sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step, OptimMaxima* maxima,
                CudaStream& s);
void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c, long step,
                 OptimMaxima* maxima, CudaStream& s);
long sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n, const SGDConfig& c,
                          long step, CudaStream& s);
long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax, size_t n,
                           const AdamConfig& c, long step, CudaStream& s);

}  // namespace cnn::cuda
