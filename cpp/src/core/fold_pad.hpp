// Compile pass fold_pad: a constant zero `pad` (ops/pad.cpp) read only by a convolution or an average pooling
// becomes that node's padding, so the padded tensor is never written. Any graph gets it (cnnnative.nn's
// ZeroPad2d, F.pad, the ONNX importer's Pad); it runs in every session mode before fusion and autodiff.
// A pad folds when
//   - its value is 0, its output is not kept (a graph output, the loss, a gradient seed or target) and exactly
//     one node input reads it: input x of a conv2d or of an avg_pool2d;
//   - the consumer may take it: an avg_pool2d must count the padding in its divisor (count_include_pad = 1,
//     the explicit zeros were counted) and use ceil_mode = 0 (with ceil_mode the last window's clipping depends
//     on where the padding sits);
//   - the result is representable: conv2d and avg_pool2d take one symmetric padding per spatial dim, so the
//     consumer's padding grows by the pad's top (rows) and left (columns) on both sides, and the fold happens
//     only when the consumer's output shape stays the same (and an avg_pool2d's padding stays within half its
//     kernel). Then every window starts where it started on the padded tensor: a symmetric pad always folds;
//     a pad whose bottom or right exceeds its top or left folds when the extra rows or columns were read by no
//     window (e.g. ONNX exports of TensorFlow's "same" padding), as the ONNX importer's conv mapper does.
// The consumer then reads the pad's input; it computes exactly the values it computed on the padded tensor
// (the same zeros enter the same windows, with ceil_mode = 0 no window is clipped), and in training the
// convolution's and pooling's backward ops give the input gradient that pad_grad's crop gave. The pad node is
// removed (its output value stays in the value list, produced by no node); chains of pads fold one after the
// other.
// Before that, a pad read only by another pad with the same value merges into it (the amounts add up per side),
// so a tensor padded along H and then W (the ONNX importer emits one pad per axis) is written once.
// Returns how many pads were merged and how many folded.
#pragma once
#include <vector>

#include "core/op.hpp"

namespace cnn {

struct FoldPadReport {
  int merged = 0, folded = 0;
};
FoldPadReport fold_pad(Graph& g, const std::vector<int>& keep);

}  // namespace cnn
