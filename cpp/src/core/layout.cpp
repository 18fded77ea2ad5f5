// Layout pass, layout-rule registry and the `reorder` op (see layout.hpp for the contract).
//
// The pass walks the schedule once. For each node it asks the node's layout rule on the session's backend
// (none: plain in, plain out) which layouts it wants for its inputs and which it produces; an input whose
// current layout differs is replaced by a reorder of it, emitted right before the node and shared by every
// later consumer that wants the same layout (the planner extends its lifetime as needed).
#include "core/layout.hpp"

#include <cstring>
#include <map>

namespace cnn {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::plain: return "plain";
    case Layout::nhwc: return "nhwc";
    case Layout::nChw16c: return "nChw16c";
    case Layout::nChw8c: return "nChw8c";
  }
  return "?";
}

static int64_t block_of(Layout l) { return l == Layout::nChw16c ? 16 : l == Layout::nChw8c ? 8 : 1; }

size_t layout_bytes(const TensorDesc& d, Layout l) {
  int64_t b = block_of(l);
  if (b == 1 || d.shape.size() != 4) return d.bytes();
  const Shape& s = d.shape;
  int64_t cp = (s[1] + b - 1) / b * b;
  return size_t(s[0] * cp * s[2] * s[3]) * dtype_size(d.dtype);
}

int64_t layout_offset(Layout l, const Shape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  const int64_t C = s[1], H = s[2], W = s[3];
  switch (l) {
    case Layout::plain: return ((n * C + c) * H + h) * W + w;
    case Layout::nhwc: return ((n * H + h) * W + w) * C + c;
    default: {
      int64_t b = block_of(l), cb = (C + b - 1) / b;
      return (((n * cb + c / b) * H + h) * W + w) * b + c % b;
    }
  }
}

LayoutPolicy LayoutPolicy::parse(const std::string& s) {
  LayoutPolicy p;
  p.block = __builtin_cpu_supports("avx512f") ? 16 : 8;
  if (s == "auto" || s == "blocked")
    p.kind = blocked, p.automatic = s == "auto";
  else if (s == "nChw16c" || s == "nChw8c")
    p.kind = blocked, p.block = s == "nChw16c" ? 16 : 8;
  else if (s == "nhwc")
    p.kind = nhwc;
  else if (s == "plain")
    p.kind = plain;
  else
    throw Error("compile: unknown layout '" + s + "' (auto, blocked, nChw16c, nChw8c, nhwc, plain)");
  return p;
}

Layout LayoutPolicy::act(const TensorDesc& d) const {
  if (d.shape.size() != 4 || kind == plain) return Layout::plain;
  return kind == nhwc ? Layout::nhwc : blocked_layout();
}

bool LayoutPolicy::aliases(Layout a, Layout b, const Shape& s) const {
  if (bf16 && is_blocked(a) != is_blocked(b)) return false;
  return layouts_alias(a, b, s);
}

LayoutRule rule_follow_input(int k) {
  return [k](const LayoutQuery& q) {
    Layout L = q.in[k].shape.size() == 4 ? q.in_layout[k] : Layout::plain;
    LayoutChoice c;
    for (auto& d : q.in) c.in.push_back(d.shape.size() == 4 ? L : Layout::plain);
    for (auto& d : q.out) c.out.push_back(d.shape.size() == 4 ? L : Layout::plain);
    return c;
  };
}

LayoutRule rule_policy() {
  return [](const LayoutQuery& q) {
    LayoutChoice c;
    for (auto& d : q.in) c.in.push_back(q.policy.act(d));
    for (auto& d : q.out) c.out.push_back(q.policy.act(d));
    return c;
  };
}

bool layouts_alias(Layout a, Layout b, const Shape& s) {
  if (a == b) return true;
  if (s.size() != 4) return false;
  // nhwc and the blocked layout whose block is C: every pixel's C channels in one run, pixels in (n, h, w) order
  // (LeNet-5's 16-channel conv2: its gradient in nChw16c feeds oneDNN's weight gradient, which asks for nhwc)
  auto one_block = [&](Layout l) { return l == Layout::nhwc || (block_of(l) > 1 && block_of(l) == s[1]); };
  if (one_block(a) && one_block(b)) return true;
  // both must alias plain (no two distinct non-plain layouts alias each other otherwise)
  auto plainish = [&](Layout l) {
    if (l == Layout::plain) return true;
    if (l == Layout::nhwc) return s[1] == 1 || s[2] * s[3] == 1;
    return s[2] * s[3] == 1 && s[1] % block_of(l) == 0;
  };
  return plainish(a) && plainish(b);
}

// ---- the pass ----
// Values a reorder node may convert: float activations and quantized (uint8 / int8) ones.
static bool reorderable(DType t) { return is_float(t) || t == DType::u8 || t == DType::s8; }

LayoutResult assign_layouts(Graph& g, const Backend& backend, const LayoutPolicy& policy, bool training,
                            int num_forward_nodes, const std::vector<int*>& must_be_plain) {
  LayoutResult res;
  std::vector<Layout>& lay = res.layout;
  lay.assign(g.values.size(), Layout::plain);
  std::map<std::pair<int, Layout>, int> copies;  // (value, layout) -> reordered value
  std::vector<Node> nodes;
  nodes.reserve(g.nodes.size() + 16);

  // A value readable in layout `to`, emitting a reorder node into `nodes` when needed.
  auto in_layout = [&](int v, Layout to) -> int {
    if (policy.aliases(lay[v], to, g.values[v].desc.shape)) return v;
    auto it = copies.find({v, to});
    if (it != copies.end()) return it->second;
    if (!reorderable(g.values[v].desc.dtype))
      throw Error("internal: layout pass: non-float value '" + g.values[v].name + "' is " + layout_name(lay[v]) +
                  " but a consumer wants " + layout_name(to));
    Attrs a;
    a.ints["from"] = {int64_t(lay[v])};
    a.ints["to"] = {int64_t(to)};
    std::string name = g.values[v].name + "@" + layout_name(to);
    int r = g.add_node("reorder", {v}, a, name)[0];  // appended; moved into `nodes` below
    nodes.push_back(std::move(g.nodes.back()));
    g.nodes.pop_back();
    res.in_view.push_back({lay[v]});
    lay.resize(g.values.size(), Layout::plain);
    lay[r] = to;
    copies[{v, to}] = r;
    res.num_reorders++;
    return r;
  };

  const int n_old = int(g.nodes.size());
  std::vector<Node> old = std::move(g.nodes);
  g.nodes.clear();
  res.num_forward_nodes = -1;
  for (int s = 0; s < n_old; ++s) {
    if (s == num_forward_nodes) res.num_forward_nodes = int(nodes.size());
    Node n = std::move(old[s]);
    std::vector<TensorDesc> in, out;
    std::vector<Layout> cur;
    for (int v : n.inputs) {
      in.push_back(g.values[v].desc);
      cur.push_back(lay[v]);
    }
    for (int v : n.outputs) out.push_back(g.values[v].desc);
    LayoutChoice c;
    const KernelEntry* entry = backend.kernel(n.op);
    const LayoutRule* rule = entry && entry->layout ? &entry->layout : nullptr;
    if (rule && policy.bf16 && !backend.bf16_capable(n, in, out)) rule = nullptr;
    if (n.op == "reorder") {  // a reorder in the graph as built: its attributes say both layouts
      c.in = {Layout(n.attrs.i("from", 0))};
      c.out = {Layout(n.attrs.i("to", 0))};
    } else if (rule) {
      c = (*rule)(LayoutQuery{n, in, out, cur, policy, training});
      if (c.in.size() != in.size() || c.out.size() != out.size())
        op_error(n, "internal: layout rule answered for " + std::to_string(c.in.size()) + " inputs / " +
                        std::to_string(c.out.size()) + " outputs");
      for (size_t i = 0; i < out.size(); ++i)
        if (c.out[i] != Layout::plain && out[i].shape.size() != 4)
          op_error(n,
                   "internal: layout rule gave a non-4-D output a " + std::string(layout_name(c.out[i])) + " layout");
    } else {
      c.in.assign(in.size(), Layout::plain);
      c.out.assign(out.size(), Layout::plain);
    }
    for (size_t i = 0; i < n.inputs.size(); ++i) n.inputs[i] = in_layout(n.inputs[i], c.in[i]);
    for (size_t k = 0; k < n.outputs.size(); ++k) lay[n.outputs[k]] = c.out[k];
    nodes.push_back(std::move(n));
    res.in_view.push_back(c.in);
  }
  if (res.num_forward_nodes < 0) res.num_forward_nodes = int(nodes.size());
  for (int* v : must_be_plain)
    if (*v >= 0 && lay[*v] != Layout::plain && reorderable(g.values[*v].desc.dtype)) *v = in_layout(*v, Layout::plain);
  g.nodes = std::move(nodes);
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int v : g.nodes[i].outputs) g.values[v].producer = int(i);
  return res;
}

// ---- the reorder op ----
namespace {

template <class T>
struct ReorderRef {
  static void run(const RefArgs<T>& a) {
    const Shape& s = a.in_shape(0);
    Layout from = Layout(a.attrs().i("from", 0)), to = Layout(a.attrs().i("to", 0));
    const T* x = a.in(0);
    T* y = a.out(0);
    if (s.size() != 4 || from == to) {
      std::memcpy(y, x, layout_bytes(a.k.in[0], from));
      return;
    }
    std::memset(y, 0, layout_bytes(a.k.out[0], to));  // channel padding holds zeros
    for (int64_t n = 0; n < s[0]; ++n)
      for (int64_t c = 0; c < s[1]; ++c)
        for (int64_t h = 0; h < s[2]; ++h)
          for (int64_t w = 0; w < s[3]; ++w)
            y[layout_offset(to, s, n, c, h, w)] = x[layout_offset(from, s, n, c, h, w)];
  }
};

void check_layout_attr(const Node& n, const char* k) {
  int64_t v = n.attrs.i(k, 0);
  if (v < 0 || v > int64_t(Layout::nChw8c))
    op_error(n, std::string("attribute '") + k + "' is not a layout: " + std::to_string(v));
}

OpRegistrar reorder_op{[] {
  OpSchema s;
  s.name = "reorder";  // x in layout `from` -> the same tensor in layout `to` (attrs: Layout values)
  s.infer = [](const Node& n, const std::vector<TensorDesc>& in) -> std::vector<TensorDesc> {
    if (in.size() != 1) op_error(n, "expects 1 input, got " + descs_str(in));
    check_layout_attr(n, "from");
    check_layout_attr(n, "to");
    if (in[0].shape.size() != 4 && (n.attrs.i("from", 0) != 0 || n.attrs.i("to", 0) != 0))
      op_error(n, "only 4-D tensors have non-plain layouts, got " + descs_str(in));
    return {in[0]};
  };
  s.grad = [](GradCtx& c) {  // the gradient goes back the other way
    Attrs a;
    a.ints["from"] = {c.node().attrs.i("to", 0)};
    a.ints["to"] = {c.node().attrs.i("from", 0)};
    c.set_dx(0, c.emit("reorder", {c.dy(0)}, a)[0]);
  };
  s.ref = ref_kernel<ReorderRef>();
  return s;
}()};

}  // namespace
}  // namespace cnn
