// Layout pass: decides the memory layout (core/op.hpp's Layout) of every value of a compiled graph and
// inserts explicit `reorder` nodes where a value's layout differs from what its consumer takes.
//
// Owns: the layout-rule registry (per backend and op), the activation policy, the `reorder` op (shape: the
// identity; reference kernel: plain loops over every layout) and the pass itself.
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

#include "core/op.hpp"

namespace cnn {

// The session's choice of activation layout (CompileOptions::layout). `block` is 16 (AVX-512) or 8.
struct LayoutPolicy {
  enum Kind { plain, nhwc, blocked } kind = plain;
  int block = 16;
  // bfloat16 activations (inference, CompileOptions::activations): every float value stored in a blocked
  // layout is bf16, every other value (plain graph inputs/outputs, parameters, non-4-D tensors) float32, so a
  // reorder into or out of a blocked layout also converts. Ops keep blocked layouts only if they are registered
  // bf16-capable (register_bf16_op); the others are plain-only in such a session.
  bool bf16 = false;
  // The dtype a float value has when stored in layout l (`compute` for non-bf16 sessions).
  DType dtype_in(Layout l, DType compute) const { return bf16 && is_blocked(l) ? DType::bf16 : compute; }
  static bool is_blocked(Layout l) { return l == Layout::nChw16c || l == Layout::nChw8c; }
  // layouts_alias, and in a bf16 session never between a blocked (bf16) and another (f32) layout.
  bool aliases(Layout a, Layout b, const Shape& s) const;
  // "auto" and "blocked" (nChw16c with AVX-512, nChw8c otherwise) | "nChw16c" | "nChw8c" | "nhwc" | "plain";
  // throws Error on anything else.
  static LayoutPolicy parse(const std::string& s);
  // The layout the policy gives an activation: plain unless 4-D.
  Layout act(const TensorDesc& d) const;
  Layout blocked_layout() const { return block == 8 ? Layout::nChw8c : Layout::nChw16c; }
};

// What a layout rule is asked for one node.
struct LayoutQuery {
  const Node& node;
  const std::vector<TensorDesc>& in;
  const std::vector<TensorDesc>& out;
  const std::vector<Layout>& in_layout;  // the layouts the inputs have now
  const LayoutPolicy& policy;
  bool training;                         // the graph has backward nodes (rules may check both directions)
};

// The rule's answer: the layout wanted for each input (a reorder is inserted where it differs from the
// current one) and the layout of each output. Outputs that are not 4-D must be plain.
struct LayoutChoice {
  std::vector<Layout> in, out;
};
using LayoutRule = std::function<LayoutChoice(const LayoutQuery&)>;

void register_layout_rule(const std::string& backend, const std::string& op, LayoutRule r);
const LayoutRule* find_layout_rule(const std::string& backend, const std::string& op);
struct LayoutRuleRegistrar {
  LayoutRuleRegistrar(const char* backend, const char* op, LayoutRule r) { register_layout_rule(backend, op, std::move(r)); }
};

// Ops whose backend kernel takes bfloat16 activations (in a blocked layout), optionally only for some nodes.
using Bf16Pred = std::function<bool(const Node&, const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out)>;
void register_bf16_op(const std::string& backend, const std::string& op, Bf16Pred pred = nullptr);
bool bf16_capable(const std::string& backend, const Node& n, const std::vector<TensorDesc>& in,
                  const std::vector<TensorDesc>& out);
struct Bf16Registrar {
  Bf16Registrar(const char* backend, const char* op, Bf16Pred pred = nullptr) { register_bf16_op(backend, op, std::move(pred)); }
};

// Common rules.
// Every 4-D input and output takes the current layout of input k (plain when input k is not 4-D); other
// tensors (per-channel parameters, statistics) stay plain. Elementwise ops, batch norm, pooling forward.
LayoutRule rule_follow_input(int k);
// Every 4-D input and output takes the policy's layout for it (pooling backward without a workspace).
LayoutRule rule_policy();

struct LayoutResult {
  std::vector<Layout> layout;                // per value: the layout it is stored in
  std::vector<std::vector<Layout>> in_view;  // per node and input: the layout the node reads it in
  int num_forward_nodes = 0;                 // the forward/backward split after reorders were inserted
  int num_reorders = 0;
};

// Two layouts that put every element of a tensor of shape s at the same offset (and so need no reorder):
// equal ones, nhwc and plain when C == 1 or H*W == 1, a blocked one and plain when H*W == 1 and the block
// divides C. A consumer may read a value in any layout that aliases the one it is stored in.
bool layouts_alias(Layout a, Layout b, const Shape& s);

// Runs the pass over g (nodes in schedule order; the first num_forward_nodes are the forward pass). Each
// non-negative id in must_be_plain is replaced by a plain copy when its value is a float tensor whose layout
// does not alias plain.
LayoutResult assign_layouts(Graph& g, const std::string& backend, const LayoutPolicy& policy, bool training,
                            int num_forward_nodes, const std::vector<int*>& must_be_plain);

// Element offset of logical index (n, c, h, w) of a 4-D tensor of shape s in layout l (reference kernels).
int64_t layout_offset(Layout l, const Shape& s, int64_t n, int64_t c, int64_t h, int64_t w);

}  // namespace cnn
