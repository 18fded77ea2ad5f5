// Int8 helpers shared by the quantized ops' reference kernels (ops/quant.cpp) and the cpu kernels (cpu/quant.cpp),
// so both quantize weights bit-identically and read the same attributes.
#pragma once
#include <cstdint>

#include "core/op.hpp"

namespace cnn {

bool is_int8(DType t);  // uint8 or int8
// round half to even, add the zero point, then saturate to t's range (uint8 [0, 255], int8 [-128, 127]); NaN
// gives the low end
float quantize_value(double v, DType t, int32_t zero_point = 0);
// Per-output-channel int8 weights for K rows of per_k floats w[k] * s[k] (s may be null: 1). With grid > 0 and
// s null, a row whose every value is an integer multiple of grid in [-128, 127] keeps that grid: ws[k] = grid,
// wq = w / grid exactly (weights quantized per tensor elsewhere, onnx/_ops_quant.py). Every other row is
// quantized symmetrically: ws[k] = max|w[k] * s[k]| / 127 (1 for an all-zero row), wq = round(w[k] * s[k] / ws[k]).
void quantize_weights(const float* w, const float* s, int64_t K, int64_t per_k, int8_t* wq, float* ws,
                      double grid = 0.0);

// The quantization attributes of qconv2d / qlinear (see ops/quant.cpp), checked by the op's shape inference.
// mid: the convolution's value (bias and BN applied) is first rounded onto the int8 grid mid_scale / mid_zp /
// mid_dtype (an intermediate quantize -> dequantize of the model) before the residual and the activation.
struct QParams {
  double in_scale, out_scale, res_scale, mid_scale, weight_scale;
  int32_t in_zp, out_zp, res_zp, mid_zp;
  DType mid_dtype;
  bool mid;
};
QParams qparams(const Attrs& a);

}  // namespace cnn
