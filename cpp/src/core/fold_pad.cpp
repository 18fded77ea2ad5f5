// Compile pass fold_pad (see fold_pad.hpp).
#include "core/fold_pad.hpp"

#include <array>

namespace cnn {

namespace {

// An int or [h, w] attribute (conv2d and avg_pool2d store padding so; validated by their shape inference).
std::array<int64_t, 2> pair_of(const Node& n, const char* key, int64_t dflt) {
  const std::vector<int64_t> v = n.attrs.is(key, {});
  if (v.empty()) return {dflt, dflt};
  return {v[0], v.back()};
}

// Consumer c of the pad with its padding grown by the pad's [top, left], or false when that is not the same
// computation (fold_pad.hpp): the wrong op or flags, or an output shape that differs from c's.
bool folded_consumer(const Graph& g, const Node& c, int x, const std::vector<int64_t>& pads, Node& folded) {
  if (pads.size() != 4) return false;
  if (c.op == "avg_pool2d") {
    if (c.attrs.i("count_include_pad", 1) != 1 || c.attrs.i("ceil_mode", 0) != 0) return false;
  } else if (c.op != "conv2d") {
    return false;
  }
  const std::array<int64_t, 2> cur = pair_of(c, "padding", 0);
  folded = c;
  folded.attrs.ints["padding"] = {cur[0] + pads[0], cur[1] + pads[1]};
  folded.inputs[0] = x;
  std::vector<TensorDesc> in;
  for (int v : folded.inputs) in.push_back(g.values[v].desc);
  std::vector<TensorDesc> out;
  try {
    out = get_op(folded.op).infer(folded, in);
  } catch (const Error&) {
    return false;  // e.g. an average pooling's padding beyond half its kernel
  }
  return out.size() == 1 && out[0].shape == g.values[c.outputs[0]].desc.shape &&
         out[0].dtype == g.values[c.outputs[0]].desc.dtype;
}

}  // namespace

FoldPadReport fold_pad(Graph& g, const std::vector<int>& keep) {
  const int n = int(g.nodes.size());
  // Per value: how many node inputs read it (a kept value counts 2 more) and the last node reading it.
  std::vector<int> uses(g.values.size(), 0), consumer(g.values.size(), -1);
  for (int s = 0; s < n; ++s)
    for (int v : g.nodes[s].inputs) {
      uses[v]++;
      consumer[v] = s;
    }
  for (int v : keep) uses[v] += 2;

  std::vector<bool> removed(n, false);
  FoldPadReport rep;
  // First to last: pad -> pad with the same value merge, so a chain collapses into its last pad.
  for (int s = 0; s < n; ++s) {
    const Node& p = g.nodes[s];
    if (p.op != "pad" || p.inputs.size() != 1 || p.outputs.size() != 1) continue;
    const int x = p.inputs[0], y = p.outputs[0];
    if (uses[y] != 1) continue;
    const int ci = consumer[y];
    Node& c = g.nodes[ci];
    if (c.op != "pad" || c.inputs.size() != 1 || c.inputs[0] != y || c.attrs.f("value", 0.0) != p.attrs.f("value", 0.0))
      continue;
    const std::vector<int64_t> a = p.attrs.is("pads", {}), b = c.attrs.is("pads", {});
    if (a.size() != 4 || b.size() != 4) continue;
    c.attrs.ints["pads"] = {a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]};
    c.inputs[0] = x;
    removed[s] = true;
    if (uses[x] == 1) consumer[x] = ci;
    ++rep.merged;
  }
  // Last to first: in a chain pad -> pad -> conv the second pad folds first, then the first one reads into
  // the conv too.
  for (int s = n - 1; s >= 0; --s) {
    const Node& p = g.nodes[s];
    if (removed[s] || p.op != "pad" || p.inputs.size() != 1 || p.outputs.size() != 1) continue;
    if (p.attrs.f("value", 0.0) != 0.0) continue;
    const int x = p.inputs[0], y = p.outputs[0];
    if (uses[y] != 1) continue;
    const int ci = consumer[y];
    Node& c = g.nodes[ci];
    if (c.inputs.empty() || c.inputs[0] != y || c.outputs.size() != 1) continue;
    Node folded;
    if (!folded_consumer(g, c, x, p.attrs.is("pads", {}), folded)) continue;
    c = std::move(folded);
    removed[s] = true;
    if (uses[x] == 1) consumer[x] = ci;  // the pad's only read of x is now the consumer's
    ++rep.folded;
  }
  const int count = rep.merged + rep.folded;
  if (!count) return rep;

  std::vector<Node> nodes;
  nodes.reserve(size_t(n - count));
  for (int s = 0; s < n; ++s)
    if (!removed[s]) nodes.push_back(std::move(g.nodes[s]));
  g.nodes = std::move(nodes);
  for (auto& v : g.values)
    if (v.kind == ValueKind::Intermediate) v.producer = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int v : g.nodes[i].outputs) g.values[v].producer = int(i);
  return rep;
}

}  // namespace cnn
