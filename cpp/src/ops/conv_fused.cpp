// Fused inference ops made by core/fuse.cpp (not built by users; no gradient):
//   fused_conv2d (x, w, [b], [gamma, beta, running_mean, running_var], [residual]) -> y
//       y = act( BN_eval( conv2d(x, w, b) ) + residual ), each part present per attrs has_bias, bn (bn_eps),
//       sum, act (0 none, 1 relu, 2 leaky_relu with negative_slope, 3 the activation act_kind of
//       ops/activations_math.hpp with parameters act_a, act_b; see core/fuse.cpp); plus the conv2d attrs.
//   fused_linear (x, w, [b], [gamma, beta, running_mean, running_var]) -> y = act( BN_eval( linear(x, w, b) ) );
//       attrs has_bias, bn (bn_eps), act, negative_slope: fused_conv2d's, without sum (the BN is over the out
//       features, axis 1 of y [N, OUT]).
// y may share the residual's buffer (inplace_input). Shape inference and the reference kernel are the
// composition of the parts' own: the reference runs conv2d's, batch_norm's, add's and the activation's (relu,
// leaky_relu, or act 3's op from act::op_of) reference kernels
// one after another (through a scratch copy when y aliases the residual), so it is exact by construction.
#include "ops/conv_fused.hpp"

#include <algorithm>
#include <deque>

#include "core/op.hpp"
#include "ops/activations_math.hpp"

namespace cnn {

FusedParts fused_parts(const Node& n, bool conv) {
  FusedParts p;
  p.bias = n.attrs.i("has_bias", 0) != 0;
  p.bn = n.attrs.i("bn", 0) != 0;
  p.sum = conv && n.attrs.i("sum", 0) != 0;
  if (!conv && n.attrs.i("sum", 0) != 0)
    op_error(n, "has no residual input (attribute 'sum' is " +
                    std::string(n.op == "qlinear" ? "qconv2d" : "fused_conv2d") + "'s)");
  p.act = int(n.attrs.i("act", 0));
  if (p.act < 0 || p.act > act::kFusedOther)
    op_error(
        n, "attribute 'act' must be 0 (none), 1 (relu), 2 (leaky_relu) or 3 (act_kind), got " + std::to_string(p.act));
  if (p.act == act::kFusedOther && !act::fusable(act::fused_act(n.attrs).p))
    op_error(n, "attribute 'act_kind' " + std::to_string(n.attrs.i("act_kind", -1)) +
                    " (with act_a, act_b) is not an activation the fused ops apply");
  p.bn0 = 2 + (p.bias ? 1 : 0);
  p.res = p.bn0 + (p.bn ? 4 : 0);
  p.count = size_t(p.res + (p.sum ? 1 : 0));
  return p;
}

namespace {

Node sub_node(const Node& f, const std::string& op, const std::string& part) {
  Node n;
  n.op = op;
  n.name = f.name + "/" + part;
  n.attrs = f.attrs;
  if (op == "batch_norm") {
    n.attrs = Attrs{};
    n.attrs.floats["eps"] = f.attrs.f("bn_eps", 1e-5);
    n.attrs.ints["training"] = {0};
  }
  return n;
}

std::vector<TensorDesc> infer_fused(const Node& n, const std::vector<TensorDesc>& in, bool conv) {
  FusedParts p = fused_parts(n, conv);
  if (in.size() != p.count)
    op_error(n, "expects " + std::to_string(p.count) + " inputs for its attributes, got " + std::to_string(in.size()) +
                    ": " + descs_str(in));
  std::vector<TensorDesc> base(in.begin(), in.begin() + p.bn0);
  std::vector<TensorDesc> y =
      get_op(conv ? "conv2d" : "linear").infer(sub_node(n, conv ? "conv2d" : "linear", "base"), base);
  if (p.bn) {
    Shape k{y[0].shape[1]};
    for (int i = 0; i < 4; ++i)
      if (in[p.bn0 + i].shape != k || !is_float(in[p.bn0 + i].dtype))
        op_error(n, "batch-norm parameter " + std::to_string(i) + " must be float " + shape_str(k) + ", got " +
                        descs_str({in[p.bn0 + i]}));
  }
  if (p.sum && (in[p.res].shape != y[0].shape || in[p.res].dtype != y[0].dtype))
    op_error(n, "residual must be " + descs_str(y) + ", got " + descs_str({in[p.res]}));
  return y;
}

// The reference: the parts' reference kernels in sequence. Slot codes: >= 0 an input of the fused node,
// kTmp the scratch copy, kOut the output.
constexpr int kTmp = -1, kOut = -2;

struct FusedRef : Kernel {
  std::deque<Node> nodes;  // stable: each part's kernel keeps a reference to its node
  std::vector<std::unique_ptr<Kernel>> ks;
  std::vector<std::vector<int>> in_codes, out_codes;
  std::vector<std::vector<void*>> in_ptrs, out_ptrs;
  size_t sub_scratch = 0, tmp_bytes = 0;

  std::string impl() const override { return "reference"; }
  FusedRef(const KernelCtx& c, bool conv) {
    const Node& f = c.node;
    FusedParts p = fused_parts(f, conv);
    const int y = p.sum ? kTmp : kOut;
    std::vector<int> base_in{0, 1};
    if (p.bias) base_in.push_back(2);
    add(c, sub_node(f, conv ? "conv2d" : "linear", "base"), base_in, y);
    if (p.bn) add(c, sub_node(f, "batch_norm", "bn"), {y, p.bn0, p.bn0 + 1, p.bn0 + 2, p.bn0 + 3}, y);
    if (p.sum) add(c, sub_node(f, "add", "sum"), {kTmp, p.res}, kOut);
    if (p.act == act::kFusedOther) {
      Node a;
      a.name = f.name + "/act";
      a.op = act::op_of(act::fused_act(f.attrs).p, &a.attrs);
      add(c, std::move(a), {kOut}, kOut);
    } else if (p.act) {
      add(c, sub_node(f, p.act == 1 ? "relu" : "leaky_relu", "act"), {kOut}, kOut);
    }
    for (auto& k : ks) sub_scratch = std::max(sub_scratch, k->scratch_bytes());
    sub_scratch = (sub_scratch + 63) / 64 * 64;
    if (p.sum) tmp_bytes = c.out[0].bytes();
  }

  void add(const KernelCtx& c, Node n, std::vector<int> ins, int out) {
    nodes.push_back(std::move(n));
    KernelCtx k{nodes.back(), {}, {}, c.compute};
    for (int code : ins) k.in.push_back(code >= 0 ? c.in[code] : c.out[0]);
    k.out.push_back(c.out[0]);
    ks.push_back(get_op(nodes.back().op).ref(k));
    in_codes.push_back(std::move(ins));
    out_codes.push_back({out});
    in_ptrs.emplace_back(in_codes.back().size());
    out_ptrs.emplace_back(1);
  }

  size_t scratch_bytes() const override { return sub_scratch + tmp_bytes; }

  void run(const RunCtx& r) override {
    void* tmp = static_cast<char*>(r.scratch) + sub_scratch;
    auto ptr = [&](int code) { return code >= 0 ? r.in[code] : code == kTmp ? tmp : r.out[0]; };
    for (size_t i = 0; i < ks.size(); ++i) {
      for (size_t j = 0; j < in_codes[i].size(); ++j) in_ptrs[i][j] = ptr(in_codes[i][j]);
      out_ptrs[i][0] = ptr(out_codes[i][0]);
      RunCtx sub = r;
      sub.in = in_ptrs[i].data();
      sub.out = out_ptrs[i].data();
      ks[i]->run(sub);
    }
  }
};

struct Registrar {
  Registrar() {
    OpSchema c;
    c.name = "fused_conv2d";
    c.infer = [](const Node& n, const std::vector<TensorDesc>& in) { return infer_fused(n, in, true); };
    c.inplace_input = [](const Node& n) {
      FusedParts p = fused_parts(n, true);
      return p.sum ? p.res : -1;
    };
    c.ref = [](const KernelCtx& k) -> std::unique_ptr<Kernel> { return std::make_unique<FusedRef>(k, true); };
    c.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(out[0], in[1]);
    };
    register_op(c);

    OpSchema l;
    l.name = "fused_linear";
    l.infer = [](const Node& n, const std::vector<TensorDesc>& in) { return infer_fused(n, in, false); };
    l.ref = [](const KernelCtx& k) -> std::unique_ptr<Kernel> { return std::make_unique<FusedRef>(k, false); };
    l.flops = [](const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) {
      return mac_flops(out[0], in[1]);
    };
    register_op(l);
  }
} registrar;

}  // namespace
}  // namespace cnn
