// Inference fusion pass (see fuse.hpp). Attributes of the fused nodes (ops/conv_fused.cpp):
//   fused_conv2d: the conv2d attrs, plus has_bias, bn (0/1, with bn_eps), sum (0/1), act (0 none, 1 relu,
//                 2 leaky_relu with negative_slope, 3 another activation of ops/activations_math.hpp: act_kind
//                 = its act::Kind, act_a and act_b = its two parameters, as act::params_of gives them);
//                 inputs x, w, [b], [gamma, beta, mean, var], [residual]
//   fused_linear: has_bias, bn (0/1, with bn_eps), act (with negative_slope or act_kind, act_a, act_b);
//                 inputs x, w, [b], [gamma, beta, mean, var]
// act 3 takes the activations act::fusable accepts: clip with min <= max (ReLU6, hardtanh), hardsigmoid,
// hardswish, silu, gelu (erf and tanh), mish, elu: those whose oneDNN eltwise post-op computes the reference's
// formula (the cpu kernels), and which the cuda epilogues compute with act::fwd. softplus and erf stay separate.
#include "core/fuse.hpp"

#include <algorithm>
#include <set>
#include <string>

#include "ops/activations_math.hpp"

namespace cnn {

namespace {
// The activation ops of ops/activations.cpp act::fusable may accept (params_of maps any other name to erf).
const std::set<std::string> kFusedActs{"clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu"};

// Per value: how many node inputs read it (a kept value counts 2 more, so it is never an internal link of a
// chain) and the last node reading it (the only one when the count is 1).
void count_readers(const Graph& g, const std::vector<int>& keep, std::vector<int>& uses, std::vector<int>& consumer) {
  uses.assign(g.values.size(), 0);
  consumer.assign(g.values.size(), -1);
  for (int s = 0; s < int(g.nodes.size()); ++s)
    for (int v : g.nodes[s].inputs) {
      uses[v]++;
      consumer[v] = s;
    }
  for (int v : keep) uses[v] += 2;
}
}  // namespace

FusionReport fuse_for_inference(Graph& g, const std::vector<int>& keep, bool fuse_conv, bool fuse_linear) {
  FusionReport rep;
  const int n = int(g.nodes.size());
  std::vector<int> uses, consumer;
  count_readers(g, keep, uses, consumer);
  // The single consumer of value v, or -1.
  std::vector<bool> removed(n, false);  // absorbed into a chain already
  auto next_of = [&](int v) { return uses[v] == 1 && !removed[consumer[v]] ? consumer[v] : -1; };
  auto is_act = [&](int s) {
    if (s < 0 || g.nodes[s].inputs.size() != 1 || g.nodes[s].outputs.size() != 1) return false;
    const Node& a = g.nodes[s];
    if (a.op == "relu" || a.op == "leaky_relu") return true;
    return kFusedActs.count(a.op) && act::fusable(act::params_of(a.op, a.attrs));
  };

  std::vector<int> replace_at(n, -1);  // node index -> index into fused
  std::vector<Node> fused;

  for (int s = 0; s < n; ++s) {
    const Node& c = g.nodes[s];
    const bool conv = c.op == "conv2d" && fuse_conv, lin = c.op == "linear" && fuse_linear;
    if ((!conv && !lin) || removed[s] || c.outputs.size() != 1) continue;
    Node f;
    f.op = conv ? "fused_conv2d" : "fused_linear";
    f.name = c.name;
    f.attrs = c.attrs;
    f.inputs = c.inputs;
    f.attrs.ints["has_bias"] = {c.inputs.size() > 2 ? 1 : 0};
    std::vector<int> chain{s};
    int y = c.outputs[0];
    int t = next_of(y);
    // an eval-mode batch norm over the output channels: conv2d's [N, K, H, W], linear's [N, OUT] (2-D, its
    // channel axis 1 is the out features)
    if (t >= 0 && g.nodes[t].op == "batch_norm" && g.nodes[t].attrs.i("training", 0) == 0 &&
        g.nodes[t].inputs[0] == y && g.nodes[t].outputs.size() == 1 && g.nodes[t].inputs.size() == 5 &&
        (conv || g.values[y].desc.shape.size() == 2)) {
      const Node& bn = g.nodes[t];
      f.inputs.insert(f.inputs.end(), bn.inputs.begin() + 1, bn.inputs.end());
      f.attrs.ints["bn"] = {1};
      f.attrs.floats["bn_eps"] = bn.attrs.f("eps", 1e-5);
      chain.push_back(t);
      y = bn.outputs[0];
      t = next_of(y);
    }
    if (conv && t >= 0 && g.nodes[t].op == "add") {
      const Node& a = g.nodes[t];
      int other = a.inputs[0] == y ? a.inputs[1] : a.inputs[0];
      if ((a.inputs[0] == y) != (a.inputs[1] == y)) {  // y is exactly one of the two
        f.inputs.push_back(other);
        f.attrs.ints["sum"] = {1};
        chain.push_back(t);
        y = a.outputs[0];
        t = next_of(y);
      }
    }
    if (is_act(t)) {
      const Node& r = g.nodes[t];
      if (r.op == "relu" || r.op == "leaky_relu") {
        bool leaky = r.op == "leaky_relu";
        f.attrs.ints["act"] = {leaky ? 2 : 1};
        if (leaky) f.attrs.floats["negative_slope"] = r.attrs.f("negative_slope", 0.01);
      } else {
        act::Params p = act::params_of(r.op, r.attrs);
        f.attrs.ints["act"] = {act::kFusedOther};
        f.attrs.ints["act_kind"] = {p.kind};
        f.attrs.floats["act_a"] = p.a;
        f.attrs.floats["act_b"] = p.b;
      }
      chain.push_back(t);
      y = r.outputs[0];
    }
    if (chain.size() == 1) continue;
    f.outputs = {y};
    for (int k : chain) removed[k] = true;
    replace_at[chain.back()] = int(fused.size());
    fused.push_back(std::move(f));
    (conv ? rep.fused_conv : rep.fused_linear)++;
    rep.removed_nodes += int(chain.size()) - 1;
  }
  if (fused.empty()) return rep;

  std::vector<Node> nodes;
  for (int s = 0; s < n; ++s) {
    if (replace_at[s] >= 0)
      nodes.push_back(std::move(fused[replace_at[s]]));
    else if (!removed[s])
      nodes.push_back(std::move(g.nodes[s]));
  }
  g.nodes = std::move(nodes);
  for (auto& v : g.values)
    if (v.kind == ValueKind::Intermediate) v.producer = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& nd = g.nodes[i];
    if (nd.op == "fused_conv2d" || nd.op == "fused_linear") {  // checks the fused node like add_node would
      std::vector<TensorDesc> in;
      for (int v : nd.inputs) in.push_back(g.values[v].desc);
      std::vector<TensorDesc> out = get_op(nd.op).infer(nd, in);
      if (out.size() != 1 || out[0].shape != g.values[nd.outputs[0]].desc.shape)
        op_error(nd, "internal: fused node's shape differs from the chain's " +
                         shape_str(g.values[nd.outputs[0]].desc.shape));
    }
    for (int v : nd.outputs) g.values[v].producer = int(i);
  }
  return rep;
}

int swap_relu_maxpool(Graph& g, const std::vector<int>& keep) {
  const int n = int(g.nodes.size());
  std::vector<int> uses, consumer;
  count_readers(g, keep, uses, consumer);
  int swapped = 0;
  for (int r = 0; r < n; ++r) {
    Node& rl = g.nodes[r];
    if (rl.op != "relu" || rl.inputs.size() != 1 || rl.outputs.size() != 1) continue;
    const int y = rl.outputs[0];
    if (uses[y] != 1) continue;
    const int p = consumer[y];
    Node& pl = g.nodes[p];
    if (pl.op != "max_pool2d" || pl.inputs.size() != 1 || pl.inputs[0] != y) continue;
    const int x = rl.inputs[0], z = pl.outputs[0];
    // y becomes the pooled pre-activation; z keeps its id, so its consumers need no change.
    g.values[y].desc = g.values[z].desc;
    std::swap(g.nodes[r], g.nodes[p]);  // the pool now sits at r, the relu at p
    g.nodes[r].inputs = {x};
    g.nodes[r].outputs[0] = y;
    g.nodes[p].inputs = {y};
    g.nodes[p].outputs = {z};
    for (int v : g.nodes[r].outputs) g.values[v].producer = r;
    g.values[z].producer = p;
    ++swapped;
  }
  return swapped;
}

}  // namespace cnn
