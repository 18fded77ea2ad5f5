// The int8 pass and the calibration helpers (see quantize.hpp).
#include "core/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "core/fuse.hpp"

namespace cnn {

namespace {

bool int8_dtype(DType t) { return t == DType::u8 || t == DType::s8; }

// Residual input index of a fused_conv2d with a sum, else -1.
int residual_index(const Node& n) {
  if (n.op != "fused_conv2d" || n.attrs.i("sum", 0) == 0) return -1;
  return 2 + (n.attrs.i("has_bias", 0) ? 1 : 0) + (n.attrs.i("bn", 0) ? 4 : 0);
}

bool is_conv(const Node& n) { return n.op == "conv2d" || n.op == "fused_conv2d"; }
bool is_linear(const Node& n) { return n.op == "linear" || n.op == "fused_linear"; }
bool is_pool(const Node& n) {
  return (n.op == "max_pool2d" && n.attrs.i("training", 0) == 0 && n.outputs.size() == 1) || n.op == "global_avg_pool";
}
bool is_view(const Node& n) { return n.op == "reshape" || n.op == "flatten"; }

// Convolutions with fewer output channels and pools over fewer channels stay float32 when calibrating: oneDNN's
// int8 kernels vectorize over the channels of nhwc activations, and below 16 they ran slower than the float32
// kernels in nChw16c (LeNet-5's 6-channel conv1 and pool1: 4.4 / 2.7 ms int8 against 2.9 / 1.5 ms float32).
constexpr int64_t kMinInt8Channels = 16;

// Whether an int8 kernel reads input i of node n as quantized data (in a model worth quantizing there).
bool int8_reader(const Graph& g, const Node& n, size_t i) {
  if (is_conv(n))
    return (i == 0 || int(i) == residual_index(n)) && g.values[n.inputs[1]].desc.shape[0] >= kMinInt8Channels;
  if (is_linear(n)) return i == 0;
  return is_pool(n) && i == 0 && g.values[n.inputs[0]].desc.shape[1] >= kMinInt8Channels;
}

bool same_scale(double a, double b) { return std::fabs(a - b) <= 1e-6 * std::max(std::fabs(a), std::fabs(b)); }

// The int8 grid of a quantize / dequantize node (q's dtype: the quantize's attribute or the dequantize's input).
struct Grid {
  double scale;
  int64_t zp;
  DType dtype;
};
Grid grid_of(const Graph& g, const Node& n) {
  return {n.attrs.f("scale", 1.0), n.attrs.i("zero_point", 0),
          n.op == "quantize" ? DType(n.attrs.i("dtype", -1)) : g.values[n.inputs[0]].desc.dtype};
}
bool same_grid(const Grid& a, const Grid& b) {
  return same_scale(a.scale, b.scale) && a.zp == b.zp && a.dtype == b.dtype;
}

}  // namespace

Int8Report quantize_for_inference(Graph& g, const std::vector<int>& keep) {
  Int8Report rep;
  const int n = int(g.nodes.size());
  std::vector<std::vector<int>> readers(g.values.size());
  for (int s = 0; s < n; ++s)
    for (int v : g.nodes[s].inputs) readers[v].push_back(s);
  std::set<int> kept(keep.begin(), keep.end());
  std::vector<bool> removed(n, false);
  auto dq_of = [&](int v) {
    int p = g.values[v].producer;
    return p >= 0 && g.nodes[p].op == "dequantize" ? p : -1;
  };
  auto q_after = [&](int v) {
    if (kept.count(v) || readers[v].size() != 1) return -1;
    int r = readers[v][0];
    return g.nodes[r].op == "quantize" && !removed[r] ? r : -1;
  };
  for (int s = 0; s < n; ++s) {
    Node& nd = g.nodes[s];
    if (removed[s] || nd.outputs.size() != 1 || nd.inputs.empty()) continue;
    const bool conv = is_conv(nd), lin = is_linear(nd), pool = is_pool(nd), view = is_view(nd);
    if (!conv && !lin && !pool && !view) continue;
    const int d = dq_of(nd.inputs[0]);
    if (d < 0) continue;
    const int q = q_after(nd.outputs[0]);
    const Grid in = grid_of(g, g.nodes[d]);
    const int xq = g.nodes[d].inputs[0];
    Node out;
    out.name = nd.name;
    out.attrs = nd.attrs;
    out.inputs = nd.inputs;
    out.inputs[0] = xq;
    if (pool || view) {
      // max and the rounded mean commute with the integer shift by the zero point: exact on the same grid
      if (q < 0 || !same_grid(grid_of(g, g.nodes[q]), in)) continue;
      if (pool) {
        out.op = nd.op == "max_pool2d" ? "qmax_pool2d" : "qglobal_avg_pool";
        out.attrs.ints.erase("training");
        rep.qpool++;
      } else {  // the same bytes under a new shape: the view runs on the int8 value itself
        out.op = nd.op;
        rep.qview++;
      }
    } else {
      const int res = residual_index(nd);
      if (res >= 0) {
        const int dr = dq_of(nd.inputs[res]);
        if (dr < 0 || q < 0) continue;  // the sum post-op reads an int8 residual into an int8 output
        out.inputs[res] = g.nodes[dr].inputs[0];
        out.attrs.floats["res_scale"] = g.nodes[dr].attrs.f("scale", 1.0);
        out.attrs.ints["res_zp"] = {g.nodes[dr].attrs.i("zero_point", 0)};
      }
      out.op = conv ? "qconv2d" : "qlinear";
      if (nd.op == "conv2d" || nd.op == "linear") out.attrs.ints["has_bias"] = {nd.inputs.size() > 2 ? 1 : 0};
      out.attrs.floats["in_scale"] = in.scale;
      out.attrs.ints["in_zp"] = {in.zp};
      out.attrs.ints["out_dtype"] = {q >= 0 ? g.nodes[q].attrs.i("dtype", 3) : int64_t(DType::f32)};
      if (q >= 0) {
        out.attrs.floats["out_scale"] = g.nodes[q].attrs.f("scale", 1.0);
        out.attrs.ints["out_zp"] = {g.nodes[q].attrs.i("zero_point", 0)};
      }
      (conv ? rep.qconv : rep.qlinear)++;
    }
    out.outputs = q >= 0 ? g.nodes[q].outputs : nd.outputs;
    if (q >= 0) {
      removed[q] = true;
      rep.removed_nodes++;
    }
    nd = std::move(out);
  }
  if (rep.qconv + rep.qlinear + rep.qpool + rep.qview == 0) return rep;
  // A QDQ model quantized elsewhere (onnxruntime's quantize_static) puts a quantize between a convolution and its
  // ReLU or residual add: qconv2d -> dequantize -> [add(., dequantize(r))] -> [relu] -> quantize. The add and the
  // ReLU join the qconv2d as its sum and eltwise post-ops, and the model's rounding between them stays: the
  // qconv2d's grid becomes its mid rounding (mid_scale / mid_zp / mid_dtype) before the residual and the ReLU.
  // A ReLU alone on the same grid needs none (round and max(., zp) commute), nor does a ReLU after an add whose
  // output grid is the ReLU's; a second intermediate grid (a ReLU on another grid after a fused add) is not fused.
  // The dequantize must be on the qconv2d's output grid, so that the chain's value is the rounded one.
  // The rewritten node moves to the quantize's position (the residual may be computed after the convolution), and
  // the search repeats: a qconv2d that took an add may take a following ReLU next.
  auto only_reader = [&](int v) { return kept.count(v) || readers[v].size() != 1 ? -1 : readers[v][0]; };
  for (bool changed = true; changed;) {
    changed = false;
    for (auto& r : readers) r.clear();
    for (int s = 0; s < n; ++s)
      if (!removed[s])
        for (int v : g.nodes[s].inputs) readers[v].push_back(s);
    for (int s = 0; s < n; ++s) {
      Node a = g.nodes[s];
      if (removed[s] || a.op != "qconv2d" || a.attrs.i("out_dtype", 0) == int64_t(DType::f32) ||
          a.attrs.i("act", 0) != 0)
        continue;
      const int d = only_reader(a.outputs[0]);
      if (d < 0 || g.nodes[d].op != "dequantize") continue;
      const Grid out{a.attrs.f("out_scale", 1.0), a.attrs.i("out_zp", 0), DType(a.attrs.i("out_dtype", 0))};
      if (!same_grid(grid_of(g, g.nodes[d]), out)) continue;
      std::vector<int> chain{d};
      int y = g.nodes[d].outputs[0], t = only_reader(y), res = -1;
      double res_scale = 0;
      int64_t res_zp = 0;
      if (t >= 0 && g.nodes[t].op == "add" && a.attrs.i("sum", 0) == 0) {
        const Node& ad = g.nodes[t];
        const int other = ad.inputs[0] == y ? ad.inputs[1] : ad.inputs[0];
        const int dr = (ad.inputs[0] == y) != (ad.inputs[1] == y) ? dq_of(other) : -1;
        if (dr >= 0 && g.values[g.nodes[dr].inputs[0]].desc.shape == g.values[a.outputs[0]].desc.shape) {
          res = g.nodes[dr].inputs[0];
          res_scale = g.nodes[dr].attrs.f("scale", 1.0);
          res_zp = g.nodes[dr].attrs.i("zero_point", 0);
          chain.push_back(t);
          y = ad.outputs[0];
          t = only_reader(y);
        }
      }
      const bool relu = t >= 0 && g.nodes[t].op == "relu";
      if (relu) {
        chain.push_back(t);
        y = g.nodes[t].outputs[0];
        t = only_reader(y);
      }
      if (chain.size() == 1 || t < 0 || g.nodes[t].op != "quantize") continue;
      const bool has_mid = a.attrs.has("mid_dtype");
      const bool need_mid = res >= 0 || !same_grid(grid_of(g, g.nodes[t]), out);
      if (need_mid && has_mid) continue;  // one intermediate rounding per node
      chain.push_back(t);
      if (need_mid) {
        a.attrs.ints["mid_dtype"] = {int64_t(out.dtype)};
        a.attrs.floats["mid_scale"] = out.scale;
        a.attrs.ints["mid_zp"] = {out.zp};
      }
      if (res >= 0) {
        a.inputs.push_back(res);
        a.attrs.ints["sum"] = {1};
        a.attrs.floats["res_scale"] = res_scale;
        a.attrs.ints["res_zp"] = {res_zp};
      }
      if (relu) a.attrs.ints["act"] = {1};
      a.attrs.ints["out_dtype"] = {g.nodes[t].attrs.i("dtype", 3)};
      a.attrs.floats["out_scale"] = g.nodes[t].attrs.f("scale", 1.0);
      a.attrs.ints["out_zp"] = {g.nodes[t].attrs.i("zero_point", 0)};
      a.outputs = g.nodes[t].outputs;
      for (int k : chain) removed[k] = true;
      removed[s] = true;
      removed[t] = false;
      g.nodes[t] = std::move(a);
      rep.removed_nodes += int(chain.size());
      changed = true;
    }
  }
  // dequantize nodes nobody reads any more
  std::vector<int> uses(g.values.size(), 0);
  for (int s = 0; s < n; ++s)
    if (!removed[s])
      for (int v : g.nodes[s].inputs) uses[v]++;
  for (int s = 0; s < n; ++s)
    if (!removed[s] && g.nodes[s].op == "dequantize" && uses[g.nodes[s].outputs[0]] == 0 &&
        !kept.count(g.nodes[s].outputs[0])) {
      removed[s] = true;
      rep.removed_nodes++;
    }
  std::vector<Node> nodes;
  for (int s = 0; s < n; ++s)
    if (!removed[s]) nodes.push_back(std::move(g.nodes[s]));
  g.nodes = std::move(nodes);
  for (auto& v : g.values)
    if (v.kind == ValueKind::Intermediate) v.producer = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& nd = g.nodes[i];
    if (nd.op[0] == 'q' && nd.op != "quantize") {  // the rewritten nodes, checked as add_node would
      std::vector<TensorDesc> in;
      for (int v : nd.inputs) in.push_back(g.values[v].desc);
      std::vector<TensorDesc> out = get_op(nd.op).infer(nd, in);
      const TensorDesc& want = g.values[nd.outputs[0]].desc;
      if (out.size() != 1 || out[0].shape != want.shape || out[0].dtype != want.dtype)
        op_error(nd, "internal: int8 node's output differs from the chain's " + descs_str({want}));
    }
    for (int v : nd.outputs) g.values[v].producer = int(i);
  }
  return rep;
}

std::vector<QuantPoint> quant_points(const Graph& src) {
  Graph g = src;
  fuse_for_inference(g, g.outputs, true, true);
  const std::set<int> outs(g.outputs.begin(), g.outputs.end());
  auto eligible = [&](int v) {
    const Value& x = g.values[v];
    const size_t r = x.desc.shape.size();
    return x.desc.dtype == DType::f32 && (r == 2 || r == 4) && !outs.count(v) &&
           (x.kind == ValueKind::Input || x.kind == ValueKind::Intermediate);
  };
  std::vector<int> tie(g.values.size(), -2);  // -2: not a point
  for (const Node& nd : g.nodes)
    for (size_t i = 0; i < nd.inputs.size(); ++i)
      if (int8_reader(g, nd, i) && eligible(nd.inputs[i])) tie[nd.inputs[i]] = -1;
  // backwards: a view whose output is a point makes its input one (the same numbers, the same scale); a pool
  // whose input and output are points gives its output the input's scale
  for (int s = int(g.nodes.size()) - 1; s >= 0; --s) {
    const Node& nd = g.nodes[s];
    if (nd.inputs.empty() || nd.outputs.size() != 1) continue;
    const int x = nd.inputs[0], y = nd.outputs[0];
    if (is_view(nd) && tie[y] != -2 && eligible(x)) {
      if (tie[x] == -2) tie[x] = -1;
      tie[y] = x;
    }
  }
  for (const Node& nd : g.nodes)
    if (is_pool(nd) && tie[nd.inputs[0]] != -2 && tie[nd.outputs[0]] != -2) tie[nd.outputs[0]] = nd.inputs[0];
  std::vector<QuantPoint> pts;
  for (int v = 0; v < int(g.values.size()); ++v)
    if (tie[v] != -2) pts.push_back({v, tie[v]});
  return pts;
}

Graph insert_qdq(const Graph& g, const std::vector<QdqSpec>& specs) {
  std::vector<const QdqSpec*> spec(g.values.size(), nullptr);
  for (const QdqSpec& s : specs) {
    if (s.value < 0 || s.value >= int(g.values.size())) throw Error("quantize: no value " + std::to_string(s.value));
    const Value& v = g.values[s.value];
    if (!int8_dtype(s.dtype)) throw Error("quantize: value '" + v.name + "': the dtype must be uint8 or int8");
    if (v.desc.dtype != DType::f32 || v.kind == ValueKind::Param || v.kind == ValueKind::Buffer)
      throw Error("quantize: value '" + v.name + "' is not a float activation");
    spec[s.value] = &s;
  }
  // Rebuilt through add_node, so value ids follow the node order as in a graph built by hand (rebatch and the
  // model file need that) and every node is checked again.
  Graph out;
  std::vector<int> remap(g.values.size(), -1);
  for (int v = 0; v < int(g.values.size()); ++v) {
    const Value& x = g.values[v];
    if (x.kind == ValueKind::Input) remap[v] = out.add_input(x.name, x.desc.shape, x.desc.dtype);
    if (x.kind == ValueKind::Param || x.kind == ValueKind::Buffer)
      remap[v] = out.add_param(x.name, x.desc.shape, x.kind == ValueKind::Param);
  }
  auto add_qdq = [&](int v) {
    if (!spec[v]) return;
    Attrs qa;
    qa.floats["scale"] = spec[v]->scale;
    qa.ints["dtype"] = {int64_t(spec[v]->dtype)};
    const std::string& name = g.values[v].name;
    int q = out.add_node("quantize", {remap[v]}, qa, name + "/quantize")[0];
    Attrs da;
    da.floats["scale"] = spec[v]->scale;
    remap[v] = out.add_node("dequantize", {q}, da, name + "/dequantize")[0];
  };
  std::vector<int> plain_out(g.values.size(), -1);  // a value's own id in `out` (graph outputs read it, not the QDQ)
  for (int v : g.inputs) {
    plain_out[v] = remap[v];
    add_qdq(v);
  }
  for (const Node& nd : g.nodes) {
    std::vector<int> ins;
    for (int v : nd.inputs) ins.push_back(remap[v]);
    std::vector<int> ys = out.add_node(nd.op, ins, nd.attrs, nd.name);
    for (size_t k = 0; k < ys.size(); ++k) {
      remap[nd.outputs[k]] = plain_out[nd.outputs[k]] = ys[k];
      add_qdq(nd.outputs[k]);
    }
  }
  std::vector<int> o;
  for (int v : g.outputs) {
    if (plain_out[v] < 0) throw Error("quantize: graph output '" + g.values[v].name + "' is not a node output");
    o.push_back(plain_out[v]);
  }
  out.set_outputs(o);
  return out;
}

}  // namespace cnn
