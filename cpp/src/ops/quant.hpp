// Int8 helpers shared by the quantized ops' reference kernels (ops/quant.cpp) and the cpu kernels (cpu/quant.cpp),
// so both quantize weights bit-identically.
#pragma once
#include <cstdint>

#include "core/op.hpp"

namespace cnn {

bool is_int8(DType t);  // uint8 or int8
// round half to even, then saturate to t's range (uint8 [0, 255], int8 [-128, 127]); NaN gives the low end
float quantize_value(double v, DType t);
// Per-output-channel symmetric int8 weights: for each of K rows of per_k floats w[k] * s[k] (s may be null: 1),
// ws[k] = max|w[k] * s[k]| / 127 (1 for an all-zero row), wq = round(w[k] * s[k] / ws[k]).
void quantize_weights(const float* w, const float* s, int64_t K, int64_t per_k, int8_t* wq, float* ws);

}  // namespace cnn
