// The first NaN/inf of a host array, shared by the session's input check and the host backends' guard.
#pragma once
#include <cmath>
#include <cstdint>

namespace cnn {

// Index of the first NaN/inf in x, or -1. One vectorized pass (x * 0 is 0 for finite x, NaN otherwise), then a
// scan only when something is not finite.
template <class T>
int64_t first_non_finite(const T* x, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i] * T(0);
  if (acc == T(0)) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

}  // namespace cnn
