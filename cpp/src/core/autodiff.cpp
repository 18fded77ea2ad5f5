#include "core/autodiff.hpp"

#include <algorithm>

#include "core/op.hpp"

namespace cnn {

AutodiffResult autodiff(Graph& g, const std::vector<std::pair<int, int>>& seeds, const std::vector<int>& wrt) {
  AutodiffResult res;
  const int nf = int(g.nodes.size());
  res.num_forward_nodes = nf;
  std::vector<bool> rg(g.values.size(), false);
  for (int p : g.params) rg[p] = g.values[p].kind == ValueKind::Param;
  for (int v : wrt) {
    if (!is_float(g.values[v].desc.dtype))
      throw Error("cannot differentiate with respect to non-float value '" + g.values[v].name + "'");
    rg[v] = true;
  }
  for (int s = 0; s < nf; ++s) {
    const Node& n = g.nodes[s];
    const OpSchema& op = get_op(n.op);
    bool any = false;
    for (int v : n.inputs) any = any || (rg[v] && is_float(g.values[v].desc.dtype));
    if (any && op.grad)
      for (int o : n.outputs) rg[o] = is_float(g.values[o].desc.dtype);
  }

  std::vector<int> grad(g.values.size(), -1);
  auto accumulate = [&](int v, int dv, const std::string& where) {
    if (grad[v] < 0) {
      grad[v] = dv;
    } else {
      grad[v] = g.add_node("add", {grad[v], dv}, Attrs{}, where + "/grad_sum")[0];
    }
    grad.resize(g.values.size(), -1);
  };
  for (auto& sd : seeds) {
    if (g.values[sd.first].desc.shape != g.values[sd.second].desc.shape)
      throw Error("gradient seed for '" + g.values[sd.first].name + "' has shape " +
                  shape_str(g.values[sd.second].desc.shape) + ", expected " + shape_str(g.values[sd.first].desc.shape));
    accumulate(sd.first, sd.second, g.values[sd.first].name);
  }

  for (int s = nf - 1; s >= 0; --s) {
    const Node n = g.nodes[s];  // copy: emitting nodes may reallocate g.nodes
    std::vector<int> dys;
    bool any = false;
    for (int o : n.outputs) {
      int d = rg[o] ? grad[o] : -1;
      dys.push_back(d);
      any = any || d >= 0;
    }
    if (!any) continue;
    std::vector<bool> need;
    bool need_any = false;
    for (int v : n.inputs) {
      need.push_back(rg[v] && is_float(g.values[v].desc.dtype));
      need_any = need_any || need.back();
    }
    if (!need_any) continue;
    const OpSchema& op = get_op(n.op);
    if (!op.grad) op_error(n, "has no gradient; it cannot be part of a trained path");
    GradCtx ctx(g, s, dys, need);
    op.grad(ctx);
    grad.resize(g.values.size(), -1);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      int dx = ctx.dxs()[i];
      if (dx >= 0 && need[i]) accumulate(n.inputs[i], dx, n.name);
    }
  }
  for (int p : g.params) res.param_grads.push_back(g.values[p].kind == ValueKind::Param ? grad[p] : -1);
  for (int v : wrt) res.wrt_grads.push_back(grad[v]);
  return res;
}

}  // namespace cnn
