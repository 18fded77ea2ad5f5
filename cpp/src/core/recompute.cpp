#include "core/recompute.hpp"

#include <functional>
#include <set>
#include <unordered_map>

#include "core/op.hpp"

namespace cnn {
namespace {

// The ops declare it (OpSchema::recompute): cheap reruns are a pass over memory (elementwise, normalization,
// views); costly ones do arithmetic (convolutions, pooling). Random ops (dropout), losses and anything that did
// not declare itself keep their outputs.
bool is_cheap(const std::string& op) { return get_op(op).recompute == RecomputeClass::cheap; }
bool is_recomputable(const std::string& op) { return get_op(op).recompute != RecomputeClass::never; }

size_t bytes_of(const Value& v) { return size_t(numel(v.desc.shape)) * dtype_size(v.desc.dtype); }

}  // namespace

Recompute parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::none;
  if (s == "cheap") return Recompute::cheap;
  if (s == "segments") return Recompute::segments;
  throw Error("compile: recompute must be 'none', 'cheap' or 'segments', got '" + s + "'");
}

RecomputeResult recompute_pass(Graph& g, int nf, Recompute mode, const std::vector<int>& keep) {
  RecomputeResult res;
  if (mode == Recompute::none || nf >= int(g.nodes.size())) return res;
  const size_t nv = g.values.size();
  auto is_fwd_value = [&](int v) { return g.values[v].producer >= 0 && g.values[v].producer < nf; };

  std::vector<int> fwd_readers(nv, 0), last_fwd(nv, -1);
  std::vector<bool> bwd_read(nv, false), kept(nv, false);
  for (int s = 0; s < int(g.nodes.size()); ++s)
    for (int v : g.nodes[s].inputs) {
      if (s < nf) {
        fwd_readers[v]++;
        last_fwd[v] = s;
      } else {
        bwd_read[v] = true;
      }
    }
  std::vector<bool> at_end(nv, false);  // needed after the forward pass: fetched outputs, the loss
  for (int v : keep) at_end[v] = true;
  for (int v : g.outputs) at_end[v] = true;
  kept = at_end;
  for (int s = 0; s < nf; ++s) {
    const Node& n = g.nodes[s];
    const bool recomputable = is_recomputable(n.op);
    for (size_t k = 0; k < n.outputs.size(); ++k)
      if (!recomputable || (n.op == "batch_norm" && k > 0)) kept[n.outputs[k]] = true;
  }

  // Segments: a cut after node s when exactly one forward activation is live across the boundary. Cuts
  // linked only by cheap ops form a run; when an expensive op follows a run (and the stretch since the last
  // checkpoint holds one), one cut of the run becomes a checkpoint: the first the backward pass reads anyway
  // (a conv output feeding batch_norm), else the last (a ReLU output after a bias-only conv).
  std::vector<int> seg(nf, 0);
  std::vector<bool> checkpoint(nv, false);
  if (mode == Recompute::segments) {
    std::set<int> live;
    std::vector<int> run;  // cuts since the last expensive op
    bool expensive = false;
    auto commit = [&]() {
      if (run.empty() || !expensive) return;
      int c = run.back();
      for (int v : run)
        if (bwd_read[v]) {
          c = v;
          break;
        }
      if (!kept[c]) res.num_checkpoints++;
      kept[c] = checkpoint[c] = true;
      expensive = false;
    };
    for (int s = 0; s < nf; ++s) {
      const Node& n = g.nodes[s];
      if (!is_cheap(n.op)) {
        commit();
        run.clear();
        expensive = true;
      }
      for (int v : n.inputs)
        if (is_fwd_value(v) && last_fwd[v] == s && !at_end[v]) live.erase(v);
      for (int v : n.outputs)
        if (last_fwd[v] > s || at_end[v]) live.insert(v);
      if (live.size() == 1) run.push_back(*live.begin());
    }
    // Stretches between checkpoints; one that holds more than a quarter of the saved bytes (few cuts, as
    // with U-Net's skip connections) uses the cheap rule inside it.
    int cur = 0;
    for (int s = 0; s < nf; ++s) {
      seg[s] = cur;
      for (int v : g.nodes[s].outputs)
        if (checkpoint[v]) ++cur;
    }
    std::vector<size_t> seg_bytes(cur + 1, 0);
    size_t total = 0;
    for (size_t v = 0; v < nv; ++v)
      if (is_fwd_value(int(v)) && bwd_read[v] && !kept[v]) {
        seg_bytes[seg[g.values[v].producer]] += bytes_of(g.values[v]);
        total += bytes_of(g.values[v]);
      }
    for (int s = 0; s < nf; ++s)
      if (seg_bytes[seg[s]] * 4 > total) seg[s] = -1;
  }

  // Recompute set. A cheap value is recomputed only when its inputs are at hand in the backward pass anyway
  // (read by it, kept, fed, or recomputed themselves): recomputing ReLU(conv) would keep the conv output
  // alive instead of the ReLU output, gaining nothing.
  std::vector<bool> R(nv, false);
  auto at_hand = [&](int u) { return !is_fwd_value(u) || kept[u] || bwd_read[u] || R[u]; };
  for (int s = 0; s < nf; ++s) {
    const Node& n = g.nodes[s];
    bool inputs_ok = true;
    for (int u : n.inputs) inputs_ok = inputs_ok && at_hand(u);
    const bool in_segment = mode == Recompute::segments && seg[s] >= 0;
    for (int v : n.outputs) {
      if (kept[v] || !inputs_ok) continue;
      R[v] = in_segment || (is_cheap(n.op) && fwd_readers[v] <= 1);
    }
  }

  // Replay the backward schedule, inserting each recomputed node before its first backward reader.
  std::vector<Node> bwd(g.nodes.begin() + nf, g.nodes.end());
  g.nodes.resize(nf);
  std::unordered_map<int, int> copy_of;
  std::function<int(int)> get = [&](int v) -> int {
    if (v >= int(nv) || !R[v]) return v;
    auto it = copy_of.find(v);
    if (it != copy_of.end()) return it->second;
    const Node p = g.nodes[g.values[v].producer];  // a forward node: index < nf, untouched
    std::vector<int> ins;
    Attrs attrs = p.attrs;
    if (p.op == "batch_norm" && p.attrs.i("training", 0)) {
      attrs.ints["training"] = {0};
      ins = {get(p.inputs[0]), p.inputs[1], p.inputs[2], p.outputs[1], p.outputs[2]};
    } else {
      for (int u : p.inputs) ins.push_back(get(u));
    }
    std::vector<int> outs = g.add_node(p.op, ins, attrs, p.name + "/recompute");
    res.num_cloned_nodes++;
    for (size_t k = 0; k < outs.size() && k < p.outputs.size(); ++k) copy_of.emplace(p.outputs[k], outs[k]);
    return copy_of.at(v);
  };
  for (Node& b : bwd) {
    for (int& v : b.inputs) v = get(v);
    const int idx = int(g.nodes.size());
    for (int o : b.outputs) g.values[o].producer = idx;
    g.nodes.push_back(std::move(b));
  }
  return res;
}

}  // namespace cnn
