// Inference fusion pass. Rewrites, in an inference graph,
//   conv2d -> [batch_norm(training=0)] -> [add(residual)] -> [relu | leaky_relu]   into one fused_conv2d node,
//   linear -> [batch_norm(training=0), 2-D] -> [relu | leaky_relu]                   into one fused_linear node
// (ops/conv_fused.cpp), when each intermediate value has exactly one consumer and is not kept (a graph
// output). The fused node takes the chain's last output value and the position of the chain's last node, so
// every consumer and the topological order stay valid. Parameters are not folded: the fused kernel reads
// gamma, beta and the running statistics on every run, so later parameter updates are seen.
// Promises: pure graph rewrite (no kernels, no memory); the fused op computes exactly the composition.
#pragma once
#include <vector>

#include "core/op.hpp"

namespace cnn {

struct FusionReport {
  int fused_conv = 0, fused_linear = 0, removed_nodes = 0;
};

// conv / linear: whether fused_conv2d / fused_linear may be formed (the backend has a kernel for it).
FusionReport fuse_for_inference(Graph& g, const std::vector<int>& keep, bool conv = true, bool linear = true);

// Training/grad rewrite of a forward graph: relu -> max_pool2d becomes max_pool2d -> relu when relu's output
// has the pool as its only consumer and is not kept. The two orders compute the same values and the same
// gradients: relu is monotone, so max(relu(x)) = relu(max(x)); where a window's maximum is positive both
// orders send dy to the same argmax (the same first-maximum tie rule), and where it is <= 0 both send zero.
// ReLU (forward and backward) then runs on the pooled tensor, a quarter of the elements for a 2x2 pool.
// The pool node moves to the relu's position and reads the relu's input; the relu node moves to the pool's
// position and writes the pool's old output value, so every consumer and the topological order stay valid.
// Returns the number of pairs swapped.
int swap_relu_maxpool(Graph& g, const std::vector<int>& keep);

}  // namespace cnn
