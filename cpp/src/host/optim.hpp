// cnnnative — optimizer update kernels (cpp/src/host/optim.hpp)
//
// Owns: the in-place parameter update rules that run over the engine's flat
// parameter / gradient blocks (all parameters of a model are one contiguous
// float array, all gradients another of the same length, and each optimizer
// state buffer — momentum, Adam's m / v / vmax — is one more array of that
// length).
//
// Promises:
//  * sgd_update / adam_update implement the documented algorithms of
//    torch.optim.SGD, torch.optim.Adam and torch.optim.AdamW (maximize=False,
//    foreach/fused irrelevant), element-wise, in float, with the scalar
//    coefficients (bias corrections, step size, 1 - lr*wd) computed in double
//    and rounded to float once, as PyTorch does for float tensors.
//  * Elements are independent, so results do not depend on the thread count;
//    the SIMD path (AVX-512F / AVX2 / scalar, picked once at run time) does
//    not change them either: every path rounds the same operations in the same
//    order (no FMA contraction), so results are bit-identical across paths and
//    x86 machines unless the engine is built with -ffast-math.
//  * No heap allocation; OpenMP threads are used only when n > 1<<15 and the
//    call is not already inside a parallel region.
//  * Invalid hyper-parameters or missing buffers throw std::invalid_argument
//    before any memory is touched.
//  * Buffers must not overlap each other (p, g, state arrays are distinct).
//  * The *_ref functions are plain double-precision loops with the same math,
//    used by tests as the reference.
#pragma once

#include <cstddef>

#include "core/optim_config.hpp"  // SGDConfig, AdamConfig, OptimMaxima

namespace cnn {

// step = 1-based count of updates done including this one. For SGD it selects
// the momentum initialisation (step == 1: buf = d); for Adam it drives the bias
// corrections. m, v (and vmax) must start zeroed before step 1, like PyTorch's
// state; momentum_buf's content is ignored on step 1.
//
// SGD:  d = g + wd*p; if momentum != 0: buf = (step == 1 ? d : momentum*buf +
//       (1-dampening)*d); d = nesterov ? d + momentum*buf : buf; p -= lr*d.
//       momentum_buf: n floats, or nullptr when momentum == 0.
void sgd_update(float* p, const float* g, float* momentum_buf, std::size_t n, const SGDConfig& c, long step,
                OptimMaxima* maxima = nullptr);

// Adam (decoupled == false): d = g + wd*p; AdamW: p *= 1 - lr*wd, d = g.
// m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d*d; (amsgrad: vmax = max(vmax, v))
// p -= (lr / (1-b1^step)) * m / (sqrt(v or vmax) / sqrt(1-b2^step) + eps).
// vmax: n floats when amsgrad, otherwise ignored (may be nullptr).
void adam_update(float* p, const float* g, float* m, float* v, float* vmax, std::size_t n, const AdamConfig& c,
                 long step, OptimMaxima* maxima = nullptr);

// max |x| over n floats; *finite (when given) says whether every element is finite. One vectorized pass.
float absmax(const float* x, std::size_t n, bool* finite);

// Dry runs (nothing is written): the index of the first element whose updated parameter or state would not be
// finite, or -1. Scalar loops with the exact arithmetic of the update (every SIMD path gives the same bits).
long sgd_first_non_finite(const float* p, const float* g, const float* buf, std::size_t n, const SGDConfig& c,
                          long step);
long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                           std::size_t n, const AdamConfig& c, long step);

// Double-precision scalar references (plain loops, same math, same checks).
void sgd_update_ref(double* p, const double* g, double* buf, std::size_t n, const SGDConfig& c, long step);
void adam_update_ref(double* p, const double* g, double* m, double* v, double* vmax, std::size_t n, const AdamConfig& c,
                     long step);

// SIMD path selection (for tests and benchmarks). The active path defaults to
// the best one the CPU supports. optim_set_simd_level clamps the request to
// what is supported and returns the level now in use. Not thread-safe with
// respect to concurrent updates: call it between training steps.
enum class OptimSimd : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };
OptimSimd optim_simd_level();
OptimSimd optim_best_simd_level();
OptimSimd optim_set_simd_level(OptimSimd level);
const char* optim_simd_name(OptimSimd level);

}  // namespace cnn
