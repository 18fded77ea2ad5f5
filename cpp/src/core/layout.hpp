// Layout pass: decides the memory layout (core/op.hpp's Layout) of every value of a compiled graph and
// inserts explicit `reorder` nodes where a value's layout differs from what its consumer takes.
//
// Owns: the `reorder` op (shape: the identity; reference kernel: plain loops over every layout) and the pass
// itself. The policy, the rule types and the rule registry are part of the backend interface (core/backend.hpp).
// Kernels declare, the pass decides: a backend kernel that can take non-plain activations registers a
// LayoutRule next to its factory. An op without a rule on the session's backend is plain-only: every input
// is reordered to plain and every output is plain, so ops added without knowing about layouts stay correct.
// Promises: graph inputs, parameters and the values listed as `must_be_plain` (fetches, parameter gradients)
// are plain; non-float values are never reordered (workspaces are consumed in the layout they were written
// in); the pass never changes what a graph computes, only where reorders run.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/backend.hpp"

namespace cnn {

struct LayoutResult {
  std::vector<Layout> layout;                // per value: the layout it is stored in
  std::vector<std::vector<Layout>> in_view;  // per node and input: the layout the node reads it in
  int num_forward_nodes = 0;                 // the forward/backward split after reorders were inserted
  int num_reorders = 0;
};

// Runs the pass over g (nodes in schedule order; the first num_forward_nodes are the forward pass). Each
// non-negative id in must_be_plain is replaced by a plain copy when its value is a float tensor whose layout
// does not alias plain.
LayoutResult assign_layouts(Graph& g, const Backend& backend, const LayoutPolicy& policy, bool training,
                            int num_forward_nodes, const std::vector<int*>& must_be_plain);

}  // namespace cnn
