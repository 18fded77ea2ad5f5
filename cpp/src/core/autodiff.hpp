// Reverse-mode autodiff over a Graph. Owns: requires-grad propagation, calling each op's grad rule in
// reverse order, and summing gradients of values used more than once (explicit add nodes).
// Promises: appends nodes only; forward nodes and values keep their indices.
#pragma once
#include <utility>
#include <vector>

#include <cnnnative/cnnnative.hpp>

namespace cnn {
struct AutodiffResult {
  std::vector<int> param_grads;  // per Graph::params entry: gradient value, -1 when none (buffers, unused)
  std::vector<int> wrt_grads;    // per requested input
  int num_forward_nodes = 0;
};
// seeds: (value, gradient value) pairs; the gradient values must already exist in g.
AutodiffResult autodiff(Graph& g, const std::vector<std::pair<int, int>>& seeds, const std::vector<int>& wrt);
}  // namespace cnn
