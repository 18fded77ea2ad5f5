// int8 inference (docs/ARCHITECTURE.md, "int8"). A quantized model is a float graph with quantize -> dequantize
// pairs (QDQ, as ONNX writes them) on the activations it quantizes (ops/quant.cpp); every backend can run it as
// is (float ops between simulated quantization steps). The int8 pass rewrites, in an inference graph after fusion,
//   dequantize -> conv2d | fused_conv2d [residual from a dequantize] [-> quantize]   into qconv2d,
//   dequantize -> linear | fused_linear [-> quantize]                                into qlinear,
//   dequantize -> max_pool2d | global_avg_pool -> quantize (same dtype and scale)    into qmax_pool2d /
//   qglobal_avg_pool,
//   dequantize -> flatten | reshape -> quantize (same dtype and scale) into the view of the int8 value,
// then absorbs qconv2d -> dequantize -> [add(., dequantize(r))] -> [relu] -> quantize (QDQ models quantized
// elsewhere) into the qconv2d's sum / ReLU post-ops,
// so the activations between those ops stay uint8/int8; a dequantize left without readers disappears. Any other op
// keeps its float kernel between a dequantize and a quantize (the fallback). A conv with a residual needs an int8
// output (oneDNN's sum post-op reads the residual in the output's buffer).
// quant_points and insert_qdq serve calibration (cnnnative.quantize): which values a quantized model quantizes,
// and the QDQ graph for chosen scales.
// Promises: pure graph rewrites (no kernels, no memory).
#pragma once
#include <vector>

#include "core/op.hpp"

namespace cnn {

struct Int8Report {
  int qconv = 0, qlinear = 0, qpool = 0, qview = 0, removed_nodes = 0;
};
Int8Report quantize_for_inference(Graph& g, const std::vector<int>& keep);

// The values of graph g worth quantizing: float activations (graph inputs or node outputs, 2-D or 4-D, not graph
// outputs) that, once g is fused for inference, an int8-capable op reads as its data (or residual): convolutions with
// 16+ output channels, linear layers, pools over 16+ channels (narrower ones ran faster in float32), plus the inputs
// of views and pools whose output is such a value. tie >= 0: the value must share that value's scale and dtype
// (a pool's or view's output, its input's); -1: calibrate it.
struct QuantPoint {
  int value, tie;
};
std::vector<QuantPoint> quant_points(const Graph& g);

// g with value v replaced, for every reader, by dequantize(quantize(v, scale, dtype), scale).
struct QdqSpec {
  int value;
  double scale;
  DType dtype;  // u8 or s8
};
Graph insert_qdq(const Graph& g, const std::vector<QdqSpec>& specs);

}  // namespace cnn
