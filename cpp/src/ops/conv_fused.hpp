// The input positions of fused_conv2d / fused_linear (ops/conv_fused.cpp) and of the int8 ops made from them
// (qconv2d / qlinear, ops/quant.cpp): x, w, [b], [gamma, beta, running_mean, running_var], [residual], each
// present per the attributes has_bias, bn and sum (conv only). One parser, so both ops read their inputs alike.
#pragma once
#include <cstddef>

#include "core/op.hpp"

namespace cnn {

struct FusedParts {
  bool bias, bn, sum;
  int act;
  int bn0;  // index of gamma
  int res;  // index of the residual
  size_t count;
};

// Parses and checks the attributes (a 'sum' on a linear op, an unknown 'act': op_error naming the node).
FusedParts fused_parts(const Node& n, bool conv);

}  // namespace cnn
