// The compile pipeline (see compile.hpp): the pass list, the verifier and the dump.
#include "core/compile.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "core/fold_pad.hpp"
#include "core/fuse.hpp"
#include "core/layout.hpp"
#include "core/op.hpp"
#include "core/quantize.hpp"
#include "core/recompute.hpp"

namespace cnn {

size_t Plan::value_bytes(int v) const {
  TensorDesc t = graph.values[v].desc;
  t.dtype = stored_dtype[v];
  return layout_bytes(t, layout[v]);
}

namespace {

// Values that must survive the graph rewrites as they are: outputs, the loss, gradient seeds and targets.
std::vector<int> kept_values(const CompileState& st) {
  const Plan& p = st.plan;
  std::vector<int> keep = p.graph.outputs;
  if (p.opt.loss >= 0) keep.push_back(p.opt.loss);
  for (int v : p.opt.grad_of) keep.push_back(v);
  for (int v : p.opt.wrt) keep.push_back(v);
  return keep;
}

// ---- check: options against the backend, parameters against the store ----
bool pass_check(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const CompileOptions& opt = p.opt;
  const Graph& g = p.graph;
  p.backend = get_backend(opt.backend);
  const Backend& be = *p.backend;
  if (opt.compute != DType::f32 && opt.compute != DType::f64)
    throw Error("compile: compute dtype must be float32 or float64");
  if (!be.supports_compute(opt.compute))
    throw Error(std::string("compile: the ") + be.name() + " backend does not run " + dtype_name(opt.compute) +
                (opt.compute == DType::f64 ? " (float64 runs on the reference backend)" : ""));
  if (opt.mode == Mode::Train && !be.supports_training_in(opt.compute))
    throw Error(std::string("compile: training runs in float32, not ") + dtype_name(opt.compute));
  if (opt.mode != Mode::Infer && !be.can_train())
    throw Error("compile: the " + be.name() + " backend runs inference sessions only");
  if (opt.compute == DType::f64 && !be.host_accessible())  // the float64 mirrors are converted on the host
    throw Error("compile: float64 sessions need a backend with host-accessible memory");
  if (opt.mode == Mode::Train) {
    const OptimConfig& oc = opt.optim;
    if (oc.kind != "sgd" && oc.kind != "adam" && oc.kind != "adamw")
      throw Error("unknown optimizer '" + oc.kind + "' (sgd, adam, adamw)");
    if (oc.kind == "sgd" && oc.nesterov && (oc.momentum <= 0 || oc.dampening != 0))
      throw Error("SGD: nesterov momentum requires momentum > 0 and dampening = 0");
  }
  if (g.outputs.empty() && opt.mode != Mode::Train) throw Error("compile: the graph has no outputs");
  for (int v : g.params) {
    const auto& e = st.store.find(g.values[v].name);
    if (e.shape != g.values[v].desc.shape)
      throw Error("parameter '" + e.name + "': graph expects " + shape_str(g.values[v].desc.shape) + ", store holds " +
                  shape_str(e.shape));
    if (e.trainable != (g.values[v].kind == ValueKind::Param))
      throw Error("parameter '" + e.name + "': trainable flag differs between graph and store");
  }
  // Activation layouts: "auto" leaves grad-mode sessions (gradient checks) plain, an explicit choice applies.
  LayoutPolicy policy = LayoutPolicy::parse(opt.layout);
  if (!be.has_layouts() || (opt.mode == Mode::Grad && opt.layout == "auto")) policy.kind = LayoutPolicy::plain;
  if (opt.activations == DType::bf16) {
    if (opt.mode == Mode::Grad) throw Error("compile: bfloat16 activations are for inference and training sessions");
    if (!be.has_layouts() || opt.compute != DType::f32)
      throw Error(
          "compile: bfloat16 activations need float32 compute on a backend with activation layouts (the cpu "
          "backend); this session has " +
          std::string(dtype_name(opt.compute)) + " on the " + be.name() + " backend");
    if (policy.kind != LayoutPolicy::blocked || policy.block != 16)
      throw Error("compile: bfloat16 activations live in the nChw16c layout; layout '" + opt.layout +
                  "' has none (use 'auto')");
    const std::string why = be.bf16_unavailable();
    if (!why.empty()) throw Error("compile: " + why);
    policy.bf16 = true;
  } else if (opt.activations != DType::f32) {
    throw Error(std::string("compile: activations must be float32 or bfloat16, got ") + dtype_name(opt.activations));
  }
  p.policy = policy;
  for (int v : g.inputs) {
    p.feeds.push_back({g.values[v].name, g.values[v].desc});
    p.feed_values.push_back(v);
  }
  summary = "backend " + be.name() + ", " + dtype_name(opt.compute) + ", layout policy " +
            (policy.kind == LayoutPolicy::plain  ? "plain"
             : policy.kind == LayoutPolicy::nhwc ? "nhwc"
                                                 : layout_name(policy.blocked_layout())) +
            (policy.bf16 ? " (bf16)" : "");
  return true;
}

// ---- fold_pad: a zero pad read only by a conv2d / avg_pool2d becomes its padding (core/fold_pad.hpp) ----
bool pass_fold_pad(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  if (!p.opt.optimize) return false;
  const FoldPadReport r = fold_pad(p.graph, kept_values(st));
  int left = 0;
  for (const Node& n : p.graph.nodes) left += n.op == "pad";
  summary = std::to_string(r.folded) + " pads folded into convolution or pooling padding, " + std::to_string(r.merged) +
            " merged into a following pad, " + std::to_string(left) + " pads left";
  return true;
}

// ---- inference fusion: conv [-> bn] [-> add] [-> relu], linear [-> bn] [-> relu] as one kernel (core/fuse.hpp) ----
bool pass_fuse(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  if (p.opt.mode != Mode::Infer || !p.opt.optimize) return false;
  // The fused ops exist where the backend implements them; elsewhere the graph runs as built.
  const bool conv = p.backend->kernel("fused_conv2d") != nullptr, linear = p.backend->kernel("fused_linear") != nullptr;
  if (!conv && !linear) return false;
  FusionReport r = fuse_for_inference(p.graph, p.graph.outputs, conv, linear);
  int conv_bn = 0, sum = 0, linear_bn = 0;
  for (const Node& n : p.graph.nodes) {
    if (n.op == "fused_conv2d") conv_bn += int(n.attrs.i("bn", 0)), sum += int(n.attrs.i("sum", 0));
    if (n.op == "fused_linear") linear_bn += int(n.attrs.i("bn", 0));
  }
  summary = std::to_string(r.fused_conv) + " fused convolutions (" + std::to_string(conv_bn) +
            " with batch norm folded, " + std::to_string(sum) + " with the residual add), " +
            std::to_string(r.fused_linear) + " fused linear (" + std::to_string(linear_bn) +
            " with batch norm folded), " + std::to_string(r.removed_nodes) + " nodes removed";
  return true;
}

// ---- int8: dequantize -> conv / linear / pool [-> quantize] chains run as int8 kernels (core/quantize.hpp) ----
bool pass_int8(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  if (p.opt.mode != Mode::Infer || !p.opt.optimize) return false;
  bool qdq = false;
  for (const Node& n : p.graph.nodes) qdq = qdq || n.op == "dequantize";
  // the int8 ops exist where the backend implements them, or where every node runs its reference kernel anyway
  if (!qdq || (p.backend->kernel("qconv2d") == nullptr && p.backend->has_fast_kernels())) return false;
  const Int8Report r = quantize_for_inference(p.graph, kept_values(st));
  summary = std::to_string(r.qconv) + " int8 convolutions, " + std::to_string(r.qlinear) + " int8 linear, " +
            std::to_string(r.qpool) + " int8 pools, " + std::to_string(r.qview) + " int8 views, " +
            std::to_string(r.removed_nodes) + " nodes removed";
  return true;
}

// ---- training and gradient sessions: relu -> max_pool2d runs as max_pool2d -> relu (same values, less work) ----
bool pass_swap_relu_pool(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  if (p.opt.mode == Mode::Infer || !p.opt.optimize) return false;
  p.report.num_relu_pool_swapped = size_t(swap_relu_maxpool(p.graph, kept_values(st)));
  summary = std::to_string(p.report.num_relu_pool_swapped) + " pairs swapped";
  return true;
}

// ---- autodiff: the backward pass appended after the forward nodes ----
bool pass_autodiff(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  Graph& g = p.graph;
  const CompileOptions& opt = p.opt;
  p.num_forward_nodes = int(g.nodes.size());
  if (opt.mode == Mode::Infer) return false;
  AutodiffResult& ad = st.autodiff;
  if (opt.mode == Mode::Train) {
    if (opt.loss < 0 || opt.loss >= int(g.values.size())) throw Error("compile(train): no loss value given");
    if (numel(g.values[opt.loss].desc.shape) != 1 || !is_float(g.values[opt.loss].desc.dtype))
      throw Error("compile(train): the loss must be a float scalar, got " + shape_str(g.values[opt.loss].desc.shape));
    p.loss_value = opt.loss;
    const int nfw = int(g.nodes.size());
    Attrs a;
    a.ints["shape"] = g.values[opt.loss].desc.shape;
    a.floats["value"] = 1.0;
    int seed = g.add_node("fill", {}, a, "loss/seed")[0];
    ad = autodiff(g, {{opt.loss, seed}}, {});
    ad.num_forward_nodes = nfw;
  } else {
    std::vector<std::pair<int, int>> seeds;
    for (int v : opt.grad_of) {
      if (v < 0 || v >= int(g.values.size())) throw Error("compile(grad): bad value id in grad_of");
      int s = g.add_input(g.values[v].name + ".grad", g.values[v].desc.shape, g.values[v].desc.dtype);
      p.feeds.push_back({g.values[s].name, g.values[s].desc});
      p.feed_values.push_back(s);
      seeds.push_back({v, s});
    }
    ad = autodiff(g, seeds, opt.wrt);
  }
  p.num_forward_nodes = ad.num_forward_nodes;
  summary = std::to_string(int(g.nodes.size()) - ad.num_forward_nodes) + " backward nodes after " +
            std::to_string(ad.num_forward_nodes) + " forward nodes";
  return true;
}

// ---- recompute: forward values the backward pass recomputes instead of keeping (core/recompute.hpp) ----
bool pass_recompute(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const RecomputePolicy policy = parse_recompute(p.opt.recompute, p.opt.mode == Mode::Train);
  if (p.opt.mode == Mode::Infer) return false;
  p.report.recompute = recompute_name(policy);
  if (policy.mode == Recompute::none) return false;
  std::vector<int> keep = p.graph.outputs;
  if (p.loss_value >= 0) keep.push_back(p.loss_value);
  p.report.num_recomputed = size_t(recompute_pass(p.graph, p.num_forward_nodes, policy, keep).num_cloned_nodes);
  summary =
      p.report.recompute + ": " + std::to_string(p.report.num_recomputed) + " nodes recomputed in the backward pass";
  return true;
}

// ---- layouts: reorders only where a layout-capable kernel meets one that is not (core/layout.hpp) ----
bool pass_layouts(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  Graph& g = p.graph;
  st.outputs_as_built = g.outputs;
  // A graph built with explicit reorder nodes goes through the pass whatever the policy: it gives their outputs
  // the layout they write and reorders back for every consumer that wants another.
  const bool built_reorders =
      std::any_of(g.nodes.begin(), g.nodes.end(), [](const Node& n) { return n.op == "reorder"; });
  bool ran = false;
  if (p.policy.kind != LayoutPolicy::plain || built_reorders) {
    std::vector<int*> plain_vals;
    for (int& v : g.outputs) plain_vals.push_back(&v);
    for (int& v : st.autodiff.wrt_grads) plain_vals.push_back(&v);
    for (int& v : st.autodiff.param_grads) plain_vals.push_back(&v);
    LayoutResult res =
        assign_layouts(g, *p.backend, p.policy, p.opt.mode != Mode::Infer, p.num_forward_nodes, plain_vals);
    p.num_forward_nodes = res.num_forward_nodes;
    p.layout = std::move(res.layout);
    p.in_view = std::move(res.in_view);
    summary = std::to_string(res.num_reorders) + " reorders inserted";
    ran = true;
  } else {
    p.layout.assign(g.values.size(), Layout::plain);
    for (const Node& n : g.nodes) p.in_view.emplace_back(n.inputs.size(), Layout::plain);
  }
  for (size_t s = 0; s < g.nodes.size(); ++s) {
    const Node& n = g.nodes[s];
    if (n.op == "reorder" &&
        !layouts_alias(p.in_view[s][0], Layout(n.attrs.i("from", 0)), g.values[n.inputs[0]].desc.shape))
      op_error(n, std::string("input is ") + layout_name(p.in_view[s][0]) + ", attribute 'from' says " +
                      layout_name(Layout(n.attrs.i("from", 0))));
  }
  p.stored_dtype.resize(g.values.size());
  for (size_t v = 0; v < g.values.size(); ++v) {
    const TensorDesc& d = g.values[v].desc;
    p.stored_dtype[v] = is_float(d.dtype) ? p.policy.dtype_in(p.layout[v], p.opt.compute) : d.dtype;
  }
  return ran;
}

// ---- interface: what the caller feeds and fetches ----
bool pass_interface(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const Graph& g = p.graph;
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    p.fetches.push_back({g.values[st.outputs_as_built[i]].name, g.values[g.outputs[i]].desc});
    p.fetch_values.push_back(g.outputs[i]);
  }
  p.wrt_grads = st.autodiff.wrt_grads;
  p.param_grads = st.autodiff.param_grads;
  p.param_grads.resize(g.params.size(), -1);
  if (p.opt.mode == Mode::Grad) {
    for (size_t i = 0; i < p.opt.wrt.size(); ++i) {
      int gv = p.wrt_grads[i];
      if (gv < 0)
        throw Error("compile(grad): '" + g.values[p.opt.wrt[i]].name + "' gets no gradient from the seeded outputs");
      p.fetches.push_back({g.values[p.opt.wrt[i]].name + ".grad", g.values[gv].desc});
      p.fetch_values.push_back(gv);
    }
    for (size_t i = 0; i < g.params.size(); ++i) {
      int gv = p.param_grads[i];
      if (gv < 0) continue;
      p.fetches.push_back({g.values[g.params[i]].name + ".grad", g.values[gv].desc});
      p.fetch_values.push_back(gv);
    }
  }
  if (p.opt.mode == Mode::Train) {
    p.fetches.push_back({"loss", g.values[p.loss_value].desc});
    p.fetch_values.push_back(p.loss_value);
  }
  summary = std::to_string(p.feeds.size()) + " feeds, " + std::to_string(p.fetches.size()) + " fetches";
  return true;
}

// ---- storage classes: feeds, the store's blocks, the gradient block, the arena ----
bool pass_storage(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const Graph& g = p.graph;
  p.storage.assign(g.values.size(), Storage::Planned);
  for (int v : p.feed_values) p.storage[v] = Storage::Feed;
  for (int v : g.params) p.storage[v] = g.values[v].kind == ValueKind::Param ? Storage::Param : Storage::Buffer;
  size_t grads = 0;
  if (p.opt.mode != Mode::Infer) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      int gv = p.param_grads[i];
      if (gv < 0) continue;
      if (p.storage[gv] != Storage::Planned)  // the gradient is itself a feed/param (identity paths)
        throw Error("compile: gradient of parameter '" + g.values[g.params[i]].name + "' is not produced by a node");
      p.storage[gv] = Storage::Grad;
      ++grads;
    }
  }
  summary = std::to_string(grads) + " gradients in the gradient block";
  return true;
}

// ---- lifetimes: first and last schedule step of every value ----
bool pass_lifetimes(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const Graph& g = p.graph;
  const int n_steps = int(g.nodes.size());
  p.first_use.assign(g.values.size(), -1);
  p.last_use.assign(g.values.size(), -1);
  for (int s = 0; s < n_steps; ++s) {
    for (int v : g.nodes[s].outputs) p.first_use[v] = p.last_use[v] = s;
    for (int v : g.nodes[s].inputs) p.last_use[v] = std::max(p.last_use[v], s);
  }
  for (int v : p.fetch_values) p.last_use[v] = n_steps;
  summary = std::to_string(n_steps) + " steps";
  return true;
}

// ---- in place: an output shares its input's buffer when the op allows it and nothing reads the input later ----
bool pass_inplace(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const Graph& g = p.graph;
  const size_t nv = g.values.size();
  std::vector<bool> fetched(nv, false);
  for (int v : p.fetch_values) fetched[v] = true;
  p.alias_of.resize(nv);
  std::iota(p.alias_of.begin(), p.alias_of.end(), 0);
  for (int s = 0; s < int(g.nodes.size()); ++s) {
    const Node& n = g.nodes[s];
    const OpSchema& op = get_op(n.op);
    const int k = op.inplace_input ? op.inplace_input(n) : op.inplace ? 0 : -1;
    if (k < 0 || k >= int(n.inputs.size()) || n.outputs.empty()) continue;
    const KernelEntry* entry = p.backend->kernel(n.op);
    if (entry && !entry->inplace) continue;  // this backend's kernel cannot write over its input
    int a = p.alias_of[n.inputs[k]], b = n.outputs[0];
    if (p.storage[a] != Storage::Planned || p.storage[b] != Storage::Planned) continue;
    if (p.last_use[a] != s || fetched[a]) continue;
    // same bytes in the same places: the node reads input k in a layout that its output is stored in
    if (!layouts_alias(p.in_view[s][k], p.layout[b], g.values[b].desc.shape)) continue;
    if (!layouts_alias(p.layout[n.inputs[k]], p.in_view[s][k], g.values[n.inputs[k]].desc.shape)) continue;
    if (p.stored_dtype[a] != p.stored_dtype[b]) continue;
    if (p.value_bytes(a) != p.value_bytes(b)) continue;
    if (std::count(n.inputs.begin(), n.inputs.end(), n.inputs[k]) > 1) continue;
    p.alias_of[b] = a;
    p.last_use[a] = std::max(p.last_use[a], p.last_use[b]);
    p.report.num_inplace++;
  }
  summary = std::to_string(p.report.num_inplace) + " outputs written in place";
  return true;
}

// ---- memory plan: one arena, offsets by lifetime (core/planner.hpp) ----
bool pass_memory_plan(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const size_t nv = p.graph.values.size();
  for (size_t v = 0; v < nv; ++v) {
    if (p.storage[v] != Storage::Planned || p.alias_of[v] != int(v)) continue;
    if (p.first_use[v] < 0) continue;  // never produced (unused)
    p.planned.push_back(int(v));
    p.requests.push_back(BufferReq{p.value_bytes(int(v)), p.first_use[v], p.last_use[v]});
  }
  p.memory = plan_memory(p.requests, 64, p.opt.plan_memory);
  std::string bad = validate_plan(p.requests, p.memory, 64);
  if (!bad.empty()) throw Error("internal: memory plan failed validation: " + bad);
  p.report.arena_bytes = p.memory.arena_bytes;
  p.report.lower_bound_bytes = p.memory.lower_bound;
  p.report.naive_bytes = p.memory.naive_sum;
  p.report.num_planned = p.planned.size();
  const size_t fsz = dtype_size(p.opt.compute);
  p.report.param_bytes = st.store.num_params() * fsz;
  p.report.buffer_bytes = st.store.num_buffers() * fsz;
  if (p.opt.mode != Mode::Infer) p.report.grad_bytes = st.store.num_params() * fsz;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%zu values in %.2f MiB (lower bound %.2f MiB)", p.planned.size(),
                double(p.memory.arena_bytes) / 1048576.0, double(p.memory.lower_bound) / 1048576.0);
  summary = buf;
  return true;
}

// ---- kernel choice: the backend's kernel, else the op's reference kernel (reported on a fast backend) ----
bool pass_kernels(CompileState& st, std::string& summary) {
  Plan& p = st.plan;
  const Backend& be = *p.backend;
  for (const Node& n : p.graph.nodes) {
    const KernelEntry* entry = be.kernel(n.op);
    KernelChoice c;
    if (entry) {
      c.factory = &entry->make;
    } else {
      c.factory = &get_op(n.op).ref;
      c.reference = true;
      if (!*c.factory) op_error(n, "has no kernel on the " + be.name() + " backend and no reference kernel");
      if (!be.host_accessible())  // the reference kernel's loops run on the host
        op_error(n, "has no kernel on the " + be.name() +
                        " backend, whose memory the host cannot address, so the op's "
                        "reference kernel cannot stand in for one");
      if (be.has_fast_kernels()) p.reference_fallbacks.push_back(n.op + " " + n.name);
    }
    p.kernels.push_back(c);
  }
  if (!p.reference_fallbacks.empty() && p.opt.strict) {
    std::string list;
    for (const auto& s : p.reference_fallbacks) list += (list.empty() ? "" : ", ") + s;
    throw Error("compile(strict): the " + be.name() + " backend has no kernel for " + list +
                " (these would run the naive reference kernel)");
  }
  summary = std::to_string(p.kernels.size()) + " kernels, " + std::to_string(p.reference_fallbacks.size()) +
            " on reference kernels";
  return true;
}

bool verify_enabled() {
  const char* e = std::getenv("CNNNATIVE_VERIFY_PASSES");
  return e && std::string(e) == "1";
}

}  // namespace

const std::vector<Pass>& compile_pipeline() {
  static const std::vector<Pass> passes{
      {"check", pass_check},
      {"fold_pad", pass_fold_pad},
      {"fuse", pass_fuse},
      {"int8", pass_int8},
      {"swap_relu_pool", pass_swap_relu_pool},
      {"autodiff", pass_autodiff},
      {"recompute", pass_recompute},
      {"layouts", pass_layouts},
      {"interface", pass_interface},
      {"storage", pass_storage},
      {"lifetimes", pass_lifetimes},
      {"inplace", pass_inplace},
      {"memory_plan", pass_memory_plan},
      {"kernels", pass_kernels},
  };
  return passes;
}

namespace {

// What a training plan holds besides its arena: parameters, buffers, gradients and the optimizer's state blocks
// (as the session allocates them).
size_t persistent_bytes(const Plan& p) {
  const MemoryReport& r = p.report;
  const OptimConfig& oc = p.opt.optim;
  const size_t blocks = oc.kind == "sgd" ? (oc.momentum != 0 ? 1 : 0) : oc.amsgrad ? 3 : 2;
  return r.param_bytes + r.buffer_bytes + r.grad_bytes + blocks * r.grad_bytes;
}

std::string mib_text(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / 1048576.0);
  return buf;
}

// A plan tried among others: the chosen one is planned again when pass dumps were asked for, so they show it.
Plan chosen_plan(Plan p, const Graph& graph, const ParamStore& store, const CompileOptions& opt,
                 const std::string& recompute) {
  if (opt.dump_passes.empty() && !std::getenv("CNNNATIVE_DUMP_PASSES")) return p;
  CompileOptions o = opt;
  o.memory_budget = 0;
  o.recompute = recompute;
  return compile_plan(graph, store, o);
}

// recompute="auto" in training: the plan of "none", "cheap" and "lean" with the smallest arena, where a plan that
// recomputes more is taken only when its arena is at least 1/16 smaller than the one recomputing less: recomputing
// costs time (LeNet-5: "lean" plans the same 7.7 MiB as "none" and was 16 % slower per step), so a saving must pay
// for it. lean's choices are made value by value; where recomputed copies outlive what they replace (MobileNetV2's
// narrow blocks) cheap wins.
Plan compile_auto(const Graph& graph, const ParamStore& store, const CompileOptions& opt) {
  CompileOptions o = opt;
  o.dump_passes.clear();
  std::string name = "none";
  o.recompute = name;
  Plan best = compile_plan(graph, store, o);
  for (const char* next : {"cheap", "lean"}) {
    o.recompute = next;
    Plan p = compile_plan(graph, store, o);
    if (p.report.arena_bytes + best.report.arena_bytes / 16 <= best.report.arena_bytes) {
      best = std::move(p);
      name = next;
    }
  }
  return chosen_plan(std::move(best), graph, store, opt, name);
}

// compile(memory_budget=...): the first choice of recompute_ladder() whose plan fits.
Plan compile_within_budget(const Graph& graph, const ParamStore& store, const CompileOptions& opt) {
  if (opt.mode != Mode::Train) throw Error("compile: memory_budget applies to training sessions");
  CompileOptions o = opt;
  o.memory_budget = 0;
  o.dump_passes.clear();
  size_t best = SIZE_MAX;
  std::string best_name, best_parts;
  for (const RecomputePolicy& pol : recompute_ladder()) {
    o.recompute = recompute_name(pol);
    Plan p = compile_plan(graph, store, o);
    const size_t need = p.report.arena_bytes + persistent_bytes(p);
    if (need <= opt.memory_budget) return chosen_plan(std::move(p), graph, store, opt, o.recompute);
    if (need < best) {
      best = need;
      best_name = o.recompute;
      best_parts = "arena " + mib_text(p.report.arena_bytes) + " + persistent " + mib_text(persistent_bytes(p));
    }
  }
  throw Error(
      "compile: memory_budget of " + mib_text(opt.memory_budget) + " cannot be met: the smallest plan, recompute='" +
      best_name + "', needs " + mib_text(best) + " (" + best_parts +
      ", parameters, buffers, gradients and optimizer state); its arena + persistent bytes: " + std::to_string(best));
}

}  // namespace

Plan compile_plan(const Graph& graph, const ParamStore& store, const CompileOptions& opt) {
  if (opt.memory_budget > 0) return compile_within_budget(graph, store, opt);
  if (opt.mode == Mode::Train && opt.recompute == "auto") return compile_auto(graph, store, opt);
  CompileState st{Plan{}, store, {}, {}};
  st.plan.graph = graph;
  st.plan.opt = opt;
  std::string dump_dir = opt.dump_passes;
  if (dump_dir.empty())
    if (const char* e = std::getenv("CNNNATIVE_DUMP_PASSES")) dump_dir = e;
  const bool verify = verify_enabled();
  if (!dump_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dump_dir, ec);
    if (ec) throw Error("compile: cannot create the pass dump folder '" + dump_dir + "': " + ec.message());
  }
  int index = 0;
  auto dump = [&](const std::string& name) {
    if (dump_dir.empty()) return;
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%02d-", index);
    const std::string path = dump_dir + "/" + prefix + name + ".txt";
    std::ofstream f(path);
    if (!f) throw Error("compile: cannot write the pass dump '" + path + "' (CNNNATIVE_DUMP_PASSES)");
    f << "# after pass '" << name << "'\n" << graph_text(st.plan.graph, nullptr);
  };
  dump("input");
  for (const Pass& pass : compile_pipeline()) {
    ++index;
    Plan::PassRecord rec;
    rec.name = pass.name;
    auto t0 = std::chrono::steady_clock::now();
    rec.ran = pass.run(st, rec.summary);
    rec.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    rec.nodes = int(st.plan.graph.nodes.size());
    if (rec.ran && verify) {
      std::string bad = verify_graph(st.plan.graph);
      if (bad.empty()) bad = verify_plan(st.plan);
      if (!bad.empty()) throw Error("internal: the plan is malformed after compile pass '" + rec.name + "': " + bad);
    }
    if (rec.ran) dump(pass.name);
    st.plan.passes.push_back(std::move(rec));
  }
  if (!dump_dir.empty()) {
    std::ofstream f(dump_dir + "/plan.txt");
    if (f) f << graph_text(st.plan.graph, &st.plan);
  }
  return std::move(st.plan);
}

std::string verify_graph(const Graph& g) {
  const int nv = int(g.values.size());
  std::vector<bool> defined(nv, false);
  for (int v : g.inputs) {
    if (v < 0 || v >= nv) return "input id " + std::to_string(v) + " out of range";
    defined[v] = true;
  }
  for (int v : g.params) {
    if (v < 0 || v >= nv) return "parameter id " + std::to_string(v) + " out of range";
    defined[v] = true;
  }
  for (int s = 0; s < int(g.nodes.size()); ++s) {
    const Node& n = g.nodes[s];
    const std::string where = "node " + std::to_string(s) + " '" + n.name + "' (" + n.op + ")";
    if (!has_op(n.op)) return where + ": unknown op";
    std::vector<TensorDesc> in;
    for (int v : n.inputs) {
      if (v < 0 || v >= nv) return where + ": input id " + std::to_string(v) + " out of range";
      if (!defined[v]) return where + ": reads '" + g.values[v].name + "' before it is produced";
      in.push_back(g.values[v].desc);
    }
    for (int v : n.outputs) {
      if (v < 0 || v >= nv) return where + ": output id " + std::to_string(v) + " out of range";
      if (defined[v]) return where + ": writes '" + g.values[v].name + "', which is already defined";
      if (g.values[v].producer != s)
        return where + ": output '" + g.values[v].name + "' names producer " + std::to_string(g.values[v].producer);
      defined[v] = true;
    }
    std::vector<TensorDesc> out;
    try {
      out = get_op(n.op).infer(n, in);
    } catch (const std::exception& e) {
      return where + ": shape inference fails: " + e.what();
    }
    if (out.size() != n.outputs.size())
      return where + ": infers " + std::to_string(out.size()) + " outputs, has " + std::to_string(n.outputs.size());
    for (size_t i = 0; i < out.size(); ++i) {
      const TensorDesc& have = g.values[n.outputs[i]].desc;
      if (have.shape != out[i].shape || have.dtype != out[i].dtype)
        return where + ": output '" + g.values[n.outputs[i]].name + "' is " + descs_str({have}) + ", the op infers " +
               descs_str({out[i]});
    }
  }
  for (int v : g.outputs) {
    if (v < 0 || v >= nv) return "output id " + std::to_string(v) + " out of range";
    if (!defined[v]) return "output '" + g.values[v].name + "' is never produced";
  }
  return "";
}

std::string verify_plan(const Plan& p) {
  const Graph& g = p.graph;
  const size_t nv = g.values.size(), nn = g.nodes.size();
  auto name = [&](int v) { return "'" + g.values[v].name + "'"; };
  if (!p.layout.empty()) {
    if (p.layout.size() != nv || p.stored_dtype.size() != nv)
      return "per-value layout/dtype tables do not match the graph";
    if (p.in_view.size() != nn) return "per-node input views do not match the graph";
    for (size_t s = 0; s < nn; ++s) {
      const Node& n = g.nodes[s];
      if (p.in_view[s].size() != n.inputs.size()) return "node '" + n.name + "': one input view per input expected";
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const int v = n.inputs[i];
        if (!p.policy.aliases(p.layout[v], p.in_view[s][i], g.values[v].desc.shape))
          return "node '" + n.name + "' reads " + name(v) + " as " + layout_name(p.in_view[s][i]) + ", stored " +
                 layout_name(p.layout[v]);
      }
    }
    for (int v : g.inputs)
      if (p.layout[v] != Layout::plain) return "graph input " + name(v) + " is not plain";
    for (int v : g.params)
      if (p.layout[v] != Layout::plain) return "parameter " + name(v) + " is not plain";
  }
  if (!p.storage.empty()) {
    if (p.storage.size() != nv) return "the storage table does not match the graph";
    for (int v : p.feed_values)
      if (p.storage[v] != Storage::Feed) return "feed " + name(v) + " is not stored as a feed";
    for (int v : g.params)
      if (p.storage[v] != Storage::Param && p.storage[v] != Storage::Buffer)
        return "parameter " + name(v) + " is not in the store's blocks";
    for (int v : p.param_grads)
      if (v >= 0 && p.storage[v] != Storage::Grad) return "gradient " + name(v) + " is not in the gradient block";
  }
  if (!p.alias_of.empty()) {
    if (p.alias_of.size() != nv) return "the alias table does not match the graph";
    for (size_t v = 0; v < nv; ++v) {
      const int r = p.alias_of[v];
      if (r == int(v)) continue;
      if (p.alias_of[r] != r) return name(int(v)) + " aliases " + name(r) + ", which is not a root";
      if (p.storage[r] != Storage::Planned || p.storage[v] != Storage::Planned)
        return name(int(v)) + " shares " + name(r) + "'s buffer outside the arena";
      if (p.value_bytes(int(v)) != p.value_bytes(r)) return name(int(v)) + " and " + name(r) + " differ in size";
    }
  }
  if (!p.memory.offsets.empty() || !p.planned.empty()) {
    if (p.memory.offsets.size() != p.planned.size() || p.requests.size() != p.planned.size())
      return "the arena's offsets do not match its planned values";
    std::vector<bool> planned(nv, false);
    for (int v : p.planned) planned[v] = true;
    for (size_t v = 0; v < nv; ++v)
      if (p.storage[v] == Storage::Planned && p.alias_of[v] == int(v) && p.first_use[v] >= 0 && !planned[v])
        return "value " + name(int(v)) + " is produced but has no place in the arena";
  }
  if (!p.kernels.empty() && p.kernels.size() != nn) return "one kernel choice per node expected";
  return "";
}

std::string graph_text(const Graph& g, const Plan* plan) {
  std::ostringstream o;
  auto val = [&](int v) {
    std::string s = "%" + std::to_string(v) + " " + g.values[v].name + " " + shape_str(g.values[v].desc.shape);
    if (g.values[v].desc.dtype != DType::f32) s += std::string(" ") + dtype_name(g.values[v].desc.dtype);
    if (plan && size_t(v) < plan->layout.size()) {
      if (plan->layout[v] != Layout::plain) s += std::string(" ") + layout_name(plan->layout[v]);
      if (plan->stored_dtype[v] != g.values[v].desc.dtype && is_float(g.values[v].desc.dtype))
        s += std::string(" as ") + dtype_name(plan->stored_dtype[v]);
      if (size_t(v) < plan->alias_of.size() && plan->alias_of[v] != v)
        s += " (in place of %" + std::to_string(plan->alias_of[v]) + ")";
    }
    return s;
  };
  for (int v : g.inputs) o << "input " << val(v) << "\n";
  for (int v : g.params) o << (g.values[v].kind == ValueKind::Param ? "param " : "buffer ") << val(v) << "\n";
  for (size_t s = 0; s < g.nodes.size(); ++s) {
    const Node& n = g.nodes[s];
    if (plan && int(s) == plan->num_forward_nodes && plan->num_forward_nodes < int(g.nodes.size())) o << "# backward\n";
    o << s << ": " << n.op << " '" << n.name << "'";
    for (auto& kv : n.attrs.ints) {
      o << " " << kv.first << "=";
      for (size_t i = 0; i < kv.second.size(); ++i) o << (i ? "," : "") << kv.second[i];
    }
    for (auto& kv : n.attrs.floats) o << " " << kv.first << "=" << kv.second;
    if (plan && s < plan->kernels.size() && plan->kernels[s].reference) o << " [reference kernel]";
    o << "\n";
    for (int v : n.inputs) o << "    in  " << val(v) << "\n";
    for (int v : n.outputs) o << "    out " << val(v) << "\n";
  }
  for (int v : g.outputs) o << "output " << val(v) << "\n";
  return o.str();
}

}  // namespace cnn
