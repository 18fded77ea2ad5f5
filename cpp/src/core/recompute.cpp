#include "core/recompute.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
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

RecomputePolicy parse_recompute(const std::string& s, bool mode_train) {
  RecomputePolicy p;
  if (s == "none") return p;
  if (s == "auto") {
    if (mode_train) p = {Recompute::lean, kLeanFlopsPerByte};
    return p;
  }
  if (s == "cheap") return {Recompute::cheap, 0};
  if (s == "segments") return {Recompute::segments, 0};
  if (s == "lean") return {Recompute::lean, kLeanFlopsPerByte};
  if (s.rfind("lean:", 0) == 0) {
    const std::string num = s.substr(5);
    char* end = nullptr;
    const double t = num.empty() ? -1 : std::strtod(num.c_str(), &end);
    if (t >= 0 && std::isfinite(t) && end && *end == 0) return {Recompute::lean, t};
  }
  throw Error(
      "compile: recompute must be 'auto', 'none', 'cheap', 'lean', 'lean:<flops per byte>' or 'segments', got '" + s +
      "'");
}

std::string recompute_name(const RecomputePolicy& p) {
  switch (p.mode) {
    case Recompute::none: return "none";
    case Recompute::cheap: return "cheap";
    case Recompute::segments: return "segments";
    case Recompute::lean: break;
  }
  if (p.max_flops_per_byte == kLeanFlopsPerByte) return "lean";
  char buf[48];
  std::snprintf(buf, sizeof buf, "lean:%g", p.max_flops_per_byte);
  return buf;
}

std::vector<RecomputePolicy> recompute_ladder() {
  std::vector<RecomputePolicy> l{{Recompute::none, 0}, {Recompute::cheap, 0}};
  for (double t : {0.0, 32.0, 64.0, kLeanFlopsPerByte, 128.0, 192.0, 256.0}) l.push_back({Recompute::lean, t});
  l.push_back({Recompute::segments, 0});
  return l;
}

RecomputeResult recompute_pass(Graph& g, int nf, const RecomputePolicy& policy, const std::vector<int>& keep) {
  RecomputeResult res;
  const Recompute mode = policy.mode;
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
  // lean: also costly nodes at most policy.max_flops_per_byte per output byte, and values with several forward
  // readers unless one of their recomputed inputs already depends on such a value (chain[]): a recomputed copy
  // lives from its first backward reader on, so a cascade (every block output of a stage rebuilt from the
  // first) would hold as much as keeping them.
  std::vector<bool> R(nv, false), chain(nv, false);
  auto at_hand = [&](int u) { return !is_fwd_value(u) || kept[u] || bwd_read[u] || R[u]; };
  auto cheap_enough = [&](const Node& n) {
    if (is_cheap(n.op)) return true;
    if (mode != Recompute::lean || get_op(n.op).recompute != RecomputeClass::costly) return false;
    const auto& flops = get_op(n.op).flops;
    if (!flops) return false;
    std::vector<TensorDesc> in, out;
    size_t out_bytes = 0;
    for (int u : n.inputs) in.push_back(g.values[u].desc);
    for (int v : n.outputs) out.push_back(g.values[v].desc), out_bytes += bytes_of(g.values[v]);
    return out_bytes > 0 && flops(in, out) <= policy.max_flops_per_byte * double(out_bytes);
  };
  for (int s = 0; s < nf; ++s) {
    const Node& n = g.nodes[s];
    bool inputs_ok = true, in_chain = false;
    for (int u : n.inputs) {
      inputs_ok = inputs_ok && at_hand(u);
      in_chain = in_chain || chain[u];
    }
    const bool in_segment = mode == Recompute::segments && seg[s] >= 0;
    const bool cheap = is_cheap(n.op), ok = cheap_enough(n);
    for (int v : n.outputs) {
      if (kept[v] || !inputs_ok) continue;
      if (mode == Recompute::lean) {
        const bool multi = fwd_readers[v] > 1;
        R[v] = ok && !(multi && in_chain);
        chain[v] = R[v] && (multi || in_chain);
      } else {
        R[v] = in_segment || (cheap && fwd_readers[v] <= 1);
      }
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
