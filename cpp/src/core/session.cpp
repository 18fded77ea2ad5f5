// Session: compile once (inference fusion, autodiff, layout pass, schedule, in-place aliasing, memory plan,
// kernels), then run many times. Owns the arena, the scratch buffer, the kernels' persistent regions (prepared
// weights), the gradient block and optimizer state; borrows parameters and buffers from the shared ParamStore.
// run() allocates nothing: every pointer table is built here. Values are sized by the layout they are stored in
// (blocked layouts pad C). Every run hands the kernels the store's version (prepared weights are rebuilt when it
// moved); a train/grad run that writes the store bumps it when it ends.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>

#include <unistd.h>

#include "core/alloc.hpp"
#include "core/autodiff.hpp"
#include "core/backend.hpp"
#include "core/fuse.hpp"
#include "core/layout.hpp"
#include "core/op.hpp"
#include "core/planner.hpp"
#include "core/recompute.hpp"
#include "core/threads.hpp"

namespace cnn {

enum class Storage { Feed, Param, Buffer, Grad, Planned };

class SessionImpl {
 public:
  SessionImpl(const Graph& graph, std::shared_ptr<ParamStore> st, const CompileOptions& o);
  void run(const std::vector<const void*>& feeds);
  void update();
  std::string locate(bool trainable, size_t flat) const;
  [[noreturn]] void diverged(const std::string& what) const;

  mutable std::recursive_mutex mu;  // serializes run() and the setters across threads
  Graph g;
  std::shared_ptr<ParamStore> store;
  CompileOptions opt;
  std::shared_ptr<const Backend> backend;
  int nf = 0;
  int loss_value = -1;
  std::vector<FeedInfo> feeds, fetches;
  std::vector<int> feed_values, fetch_values;

  std::vector<Storage> storage;
  std::vector<Layout> layout;  // per value: its stored layout (all plain unless the layout pass ran)
  std::vector<std::vector<Layout>> in_view;  // per node and input: the layout the kernel reads it in
  std::vector<void*> ptr;  // per value
  std::vector<std::unique_ptr<Kernel>> kernels;
  std::vector<std::vector<void*>> node_in, node_out;
  struct Patch { int node, slot, feed; };
  std::vector<Patch> patches;
  std::vector<int> feed_fetch;  // fetch index -> feed index when a fetched value is a feed, else -1

  Buffer buffers_backup;  // Train: the store's buffers before the running step
  Buffer arena, scratch, grad_block, state_m, state_v, state_vmax, private_params, private_buffers, prepared;
  std::vector<void*> persist_ptr;  // per step: the kernel's persistent region (nullptr when it keeps none)
  uint64_t private_version = 0;   // f64: the store version the private copies were taken at
  bool writes_store = false;      // train/grad in float32: BN running statistics, optimizer update
  // CNNNATIVE_CHECK_PREPARED=1 (the test suite sets it): every inference run checksums the store and raises when
  // it changed while its version did not, i.e. a writer forgot ParamStore::touch() and prepared weights would be
  // stale.
  bool check_prepared = false;
  uint64_t checked_version = 0, checked_sum = 0;
  void refresh_private();
  void check_store_unchanged();
  void check_budget(size_t need, size_t budget, const std::vector<int>& planned, const std::vector<BufferReq>& reqs) const;
  size_t n_grad = 0;
  MemoryReport report;
  double lr = 0;
  int64_t steps = 0;
  int threads_used = 0;  // OpenMP threads of the last run
  double last_loss = NAN;
  // Largest magnitudes of the parameters and optimizer state, as the last update left them (cpu/optim.hpp), and
  // the store version after that update: while nobody else wrote the store, they bound what the next update can
  // produce, so a step is checked for overflow with one pass over the gradients (update()).
  OptimMaxima maxima;
  uint64_t maxima_version = 0;  // 0: unknown (recomputed from the blocks)
  std::vector<std::string> uses_reference;
  std::vector<double> prof_ns;  // per step, plus one for the optimizer update
  std::vector<int64_t> prof_calls;
  std::vector<double> node_flops;
};

namespace {
size_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : SIZE_MAX;
}
std::string mib(size_t b) {
  if (b < (size_t(1) << 20)) return std::to_string(b) + " bytes";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / 1048576.0);
  return buf;
}
// Bytes of a value as stored: compute dtype for floats, padding of blocked layouts included.
size_t value_bytes(const TensorDesc& d, DType compute, Layout l) {
  TensorDesc t = d;
  if (is_float(d.dtype)) t.dtype = compute;
  return layout_bytes(t, l);
}
}  // namespace

SessionImpl::SessionImpl(const Graph& graph, std::shared_ptr<ParamStore> st, const CompileOptions& o)
    : g(graph), store(std::move(st)), opt(o), lr(o.optim.lr) {
  apply_num_threads();  // oneDNN sizes its primitives for the thread count at creation
  if (!store) throw Error("compile: no parameter store");
  backend = get_backend(opt.backend);
  if (opt.compute != DType::f32 && opt.compute != DType::f64) throw Error("compile: compute dtype must be float32 or float64");
  if (!backend->supports_compute(opt.compute))
    throw Error(std::string("compile: the ") + opt.backend + " backend does not run " + dtype_name(opt.compute) +
                (opt.compute == DType::f64 ? " (float64 runs on the reference backend)" : ""));
  if (opt.compute == DType::f64 && opt.mode == Mode::Train) throw Error("compile: training runs in float32");
  if (g.outputs.empty() && opt.mode != Mode::Train) throw Error("compile: the graph has no outputs");
  for (int p : g.params) {
    const auto& e = store->find(g.values[p].name);
    if (e.shape != g.values[p].desc.shape)
      throw Error("parameter '" + e.name + "': graph expects " + shape_str(g.values[p].desc.shape) + ", store holds " + shape_str(e.shape));
    if (e.trainable != (g.values[p].kind == ValueKind::Param))
      throw Error("parameter '" + e.name + "': trainable flag differs between graph and store");
  }

  // Layouts: cpu backend only; "auto" leaves grad-mode sessions (gradient checks) plain, an explicit choice
  // applies to them too.
  LayoutPolicy policy = LayoutPolicy::parse(opt.layout);
  if (!backend->has_layouts() || (opt.mode == Mode::Grad && opt.layout == "auto")) policy.kind = LayoutPolicy::plain;
  if (opt.activations == DType::bf16) {
    if (opt.mode == Mode::Grad) throw Error("compile: bfloat16 activations are for inference and training sessions");
    if (!backend->has_layouts() || opt.compute != DType::f32) throw Error("compile: bfloat16 activations need the cpu backend");
    if (policy.kind != LayoutPolicy::blocked || policy.block != 16)
      throw Error("compile: bfloat16 activations live in the nChw16c layout; layout '" + opt.layout +
                  "' has none (use 'auto')");
    const std::string why = backend->bf16_unavailable();
    if (!why.empty()) throw Error("compile: " + why);
    policy.bf16 = true;
  } else if (opt.activations != DType::f32) {
    throw Error(std::string("compile: activations must be float32 or bfloat16, got ") + dtype_name(opt.activations));
  }

  // ---- feeds ----
  for (int v : g.inputs) {
    feeds.push_back({g.values[v].name, g.values[v].desc});
    feed_values.push_back(v);
  }

  // ---- inference fusion (cpu backend) ----
  if (opt.mode == Mode::Infer && backend->has_fast_kernels() && opt.optimize) fuse_for_inference(g, g.outputs);

  // ---- relu/max-pool order (training and grad sessions; inference fuses the relu into the conv instead) ----
  if (opt.mode != Mode::Infer && opt.optimize) {
    std::vector<int> keep = g.outputs;
    if (opt.loss >= 0) keep.push_back(opt.loss);
    for (int v : opt.grad_of) keep.push_back(v);
    for (int v : opt.wrt) keep.push_back(v);
    report.num_relu_pool_swapped = size_t(swap_relu_maxpool(g, keep));
  }

  // ---- autodiff ----
  AutodiffResult ad;
  ad.num_forward_nodes = int(g.nodes.size());
  if (opt.mode == Mode::Train) {
    if (opt.loss < 0 || opt.loss >= int(g.values.size())) throw Error("compile(train): no loss value given");
    if (numel(g.values[opt.loss].desc.shape) != 1 || !is_float(g.values[opt.loss].desc.dtype))
      throw Error("compile(train): the loss must be a float scalar, got " + shape_str(g.values[opt.loss].desc.shape));
    loss_value = opt.loss;
    int nfw = int(g.nodes.size());
    Attrs a;
    a.ints["shape"] = g.values[opt.loss].desc.shape;
    a.floats["value"] = 1.0;
    int seed = g.add_node("fill", {}, a, "loss/seed")[0];
    ad = autodiff(g, {{opt.loss, seed}}, {});
    ad.num_forward_nodes = nfw;
  } else if (opt.mode == Mode::Grad) {
    std::vector<std::pair<int, int>> seeds;
    for (int v : opt.grad_of) {
      if (v < 0 || v >= int(g.values.size())) throw Error("compile(grad): bad value id in grad_of");
      int s = g.add_input(g.values[v].name + ".grad", g.values[v].desc.shape, g.values[v].desc.dtype);
      feeds.push_back({g.values[s].name, g.values[s].desc});
      feed_values.push_back(s);
      seeds.push_back({v, s});
    }
    ad = autodiff(g, seeds, opt.wrt);
  }
  nf = ad.num_forward_nodes;
  const Recompute rmode = parse_recompute(opt.recompute);
  if (opt.mode != Mode::Infer && rmode != Recompute::none) {
    std::vector<int> keep = g.outputs;
    if (loss_value >= 0) keep.push_back(loss_value);
    report.num_recomputed = size_t(recompute_pass(g, nf, rmode, keep).num_cloned_nodes);
  }

  const std::vector<int> outputs_as_built = g.outputs;  // fetch names: before plain copies are swapped in
  // ---- layouts (cpu backend): reorders only where a layout-capable kernel meets one that is not ----
  // A graph built with explicit reorder nodes goes through the pass whatever the policy: it gives their outputs
  // the layout they write and reorders back for every consumer that wants another.
  const bool built_reorders = std::any_of(g.nodes.begin(), g.nodes.end(), [](const Node& n) { return n.op == "reorder"; });
  if (policy.kind != LayoutPolicy::plain || built_reorders) {
    std::vector<int*> plain_vals;
    for (int& v : g.outputs) plain_vals.push_back(&v);
    for (int& v : ad.wrt_grads) plain_vals.push_back(&v);
    for (int& v : ad.param_grads) plain_vals.push_back(&v);
    LayoutResult lr = assign_layouts(g, *backend, policy, opt.mode != Mode::Infer, nf, plain_vals);
    nf = lr.num_forward_nodes;
    layout = std::move(lr.layout);
    in_view = std::move(lr.in_view);
  } else {
    layout.assign(g.values.size(), Layout::plain);
    for (const Node& n : g.nodes) in_view.emplace_back(n.inputs.size(), Layout::plain);
  }
  for (size_t s = 0; s < g.nodes.size(); ++s) {
    const Node& n = g.nodes[s];
    if (n.op == "reorder" && !layouts_alias(in_view[s][0], Layout(n.attrs.i("from", 0)), g.values[n.inputs[0]].desc.shape))
      op_error(n, std::string("input is ") + layout_name(in_view[s][0]) + ", attribute 'from' says " +
                      layout_name(Layout(n.attrs.i("from", 0))));
  }
  const int n_steps = int(g.nodes.size());
  // the dtype a value is stored in: the compute dtype, or bf16 for blocked activations in a bf16 session
  auto vtype = [&](int v) {
    const TensorDesc& d = g.values[v].desc;
    return is_float(d.dtype) ? policy.dtype_in(layout[v], opt.compute) : d.dtype;
  };

  // ---- fetches ----
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    int v = g.outputs[i];
    fetches.push_back({g.values[outputs_as_built[i]].name, g.values[v].desc});
    fetch_values.push_back(v);
  }
  if (opt.mode == Mode::Grad) {
    for (size_t i = 0; i < opt.wrt.size(); ++i) {
      int gv = ad.wrt_grads[i];
      if (gv < 0) throw Error("compile(grad): '" + g.values[opt.wrt[i]].name + "' gets no gradient from the seeded outputs");
      fetches.push_back({g.values[opt.wrt[i]].name + ".grad", g.values[gv].desc});
      fetch_values.push_back(gv);
    }
  }

  // ---- storage ----
  const size_t nv = g.values.size();
  storage.assign(nv, Storage::Planned);
  ptr.assign(nv, nullptr);
  for (int v : feed_values) storage[v] = Storage::Feed;
  for (int p : g.params) storage[p] = g.values[p].kind == ValueKind::Param ? Storage::Param : Storage::Buffer;

  const size_t fsz = dtype_size(opt.compute);
  float* pblock = store->params();
  float* bblock = store->buffers();
  if (opt.compute == DType::f64) {  // private float64 copies for the reference backend, refreshed per version
    private_params = make_buffer(std::max<size_t>(store->num_params(), 1) * 8);
    private_buffers = make_buffer(std::max<size_t>(store->num_buffers(), 1) * 8);
    refresh_private();
  }
  writes_store = opt.mode != Mode::Infer && opt.compute == DType::f32;
  if (const char* e = std::getenv("CNNNATIVE_CHECK_PREPARED")) check_prepared = opt.mode == Mode::Infer && std::string(e) == "1";
  for (int p : g.params) {
    const auto& e = store->find(g.values[p].name);
    char* base = opt.compute == DType::f64 ? static_cast<char*>(e.trainable ? private_params.get() : private_buffers.get())
                                           : reinterpret_cast<char*>(e.trainable ? pblock : bblock);
    ptr[p] = base + e.offset * fsz;
  }
  if (opt.mode != Mode::Infer) {
    n_grad = store->num_params();
    grad_block = make_buffer(std::max<size_t>(n_grad, 1) * fsz);
    report.grad_bytes = n_grad * fsz;
    for (size_t i = 0; i < g.params.size(); ++i) {
      int gv = ad.param_grads[i];
      if (gv < 0) continue;
      if (storage[gv] != Storage::Planned) {  // gradient is itself a feed/param (identity paths): copy not supported
        throw Error("compile: gradient of parameter '" + g.values[g.params[i]].name + "' is not produced by a node");
      }
      const auto& e = store->find(g.values[g.params[i]].name);
      storage[gv] = Storage::Grad;
      ptr[gv] = static_cast<char*>(grad_block.get()) + e.offset * fsz;
      if (opt.mode == Mode::Grad) {
        fetches.push_back({e.name + ".grad", g.values[gv].desc});
        fetch_values.push_back(gv);
      }
    }
  }
  if (opt.mode == Mode::Train) {
    fetches.push_back({"loss", g.values[loss_value].desc});
    fetch_values.push_back(loss_value);
  }

  // ---- lifetimes and in-place aliasing ----
  std::vector<int> first(nv, -1), last(nv, -1);
  for (int s = 0; s < n_steps; ++s) {
    for (int v : g.nodes[s].outputs) first[v] = last[v] = s;
    for (int v : g.nodes[s].inputs) last[v] = std::max(last[v], s);
  }
  std::vector<bool> fetched(nv, false);
  for (int v : fetch_values) fetched[v] = true;
  for (int v : fetch_values) last[v] = n_steps;
  std::vector<int> root(nv);
  std::iota(root.begin(), root.end(), 0);
  for (int s = 0; s < n_steps; ++s) {
    const Node& n = g.nodes[s];
    const OpSchema& op = get_op(n.op);
    const int k = op.inplace_input ? op.inplace_input(n) : op.inplace ? 0 : -1;
    if (k < 0 || k >= int(n.inputs.size()) || n.outputs.empty()) continue;
    int a = root[n.inputs[k]], b = n.outputs[0];
    if (storage[a] != Storage::Planned || storage[b] != Storage::Planned) continue;
    if (last[a] != s || fetched[a]) continue;
    // same bytes in the same places: the node reads input k in a layout that its output is stored in
    if (!layouts_alias(in_view[s][k], layout[b], g.values[b].desc.shape)) continue;
    if (!layouts_alias(layout[n.inputs[k]], in_view[s][k], g.values[n.inputs[k]].desc.shape)) continue;
    if (vtype(a) != vtype(b)) continue;
    if (value_bytes(g.values[a].desc, vtype(a), layout[a]) != value_bytes(g.values[b].desc, vtype(b), layout[b])) continue;
    if (std::count(n.inputs.begin(), n.inputs.end(), n.inputs[k]) > 1) continue;
    root[b] = a;
    last[a] = std::max(last[a], last[b]);
    report.num_inplace++;
  }

  std::vector<int> planned;
  std::vector<BufferReq> reqs;
  for (size_t v = 0; v < nv; ++v) {
    if (storage[v] != Storage::Planned || root[v] != int(v)) continue;
    if (first[v] < 0) continue;  // never produced (unused)
    planned.push_back(int(v));
    reqs.push_back(BufferReq{value_bytes(g.values[v].desc, vtype(int(v)), layout[v]), first[v], last[v]});
  }
  MemoryPlan plan = plan_memory(reqs, 64, opt.plan_memory);
  std::string bad = validate_plan(reqs, plan, 64);
  if (!bad.empty()) throw Error("internal: memory plan failed validation: " + bad);
  const size_t budget = opt.max_arena_bytes ? opt.max_arena_bytes : physical_memory_bytes();
  const size_t fixed_bytes = opt.mode == Mode::Train ? store->num_params() * 4 * 4 : 0;  // grads + up to 3 state blocks
  check_budget(plan.arena_bytes + fixed_bytes, budget, planned, reqs);
  arena = make_buffer(std::max<size_t>(plan.arena_bytes, 64));
  for (size_t i = 0; i < planned.size(); ++i) ptr[planned[i]] = static_cast<char*>(arena.get()) + plan.offsets[i];
  for (size_t v = 0; v < nv; ++v)
    if (root[v] != int(v)) ptr[v] = ptr[root[v]];
  report.arena_bytes = plan.arena_bytes;
  report.lower_bound_bytes = plan.lower_bound;
  report.naive_bytes = plan.naive_sum;
  report.num_planned = planned.size();
  report.param_bytes = store->num_params() * fsz;
  report.buffer_bytes = store->num_buffers() * fsz;

  // ---- kernels ----
  size_t scratch_bytes = 0;
  for (int s = 0; s < n_steps; ++s) {
    const Node& n = g.nodes[s];
    KernelCtx kc{n, {}, {}, opt.compute};
    kc.training = opt.mode != Mode::Infer;
    kc.cache_weights = opt.mode == Mode::Infer && opt.cache_weights;
    kc.winograd = opt.winograd;
    kc.deterministic = opt.deterministic;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      TensorDesc d = g.values[n.inputs[i]].desc;
      d.dtype = vtype(n.inputs[i]);
      kc.in.push_back(d);
      kc.in_layout.push_back(in_view[s][i]);
    }
    for (int v : n.outputs) {
      TensorDesc d = g.values[v].desc;
      d.dtype = vtype(v);
      kc.out.push_back(d);
      kc.out_layout.push_back(layout[v]);
    }
    const KernelEntry* entry = backend->kernel(n.op);
    const KernelFactory* f = entry ? &entry->make : &get_op(n.op).ref;
    if (!entry && backend->has_fast_kernels()) uses_reference.push_back(n.op + " " + n.name);
    try {
      kernels.push_back((*f)(kc));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // oneDNN refusing a primitive, an allocation failing, ...
      op_error(n, "cannot create its " + opt.backend + " kernel for inputs " + descs_str(kc.in) + ": " + e.what());
    }
    const auto& fl = get_op(n.op).flops;
    node_flops.push_back(fl ? fl(kc.in, kc.out) : 0.0);
    scratch_bytes = std::max(scratch_bytes, kernels.back()->scratch_bytes());
    std::vector<void*> in, out;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      in.push_back(ptr[n.inputs[i]]);
      if (storage[n.inputs[i]] == Storage::Feed) {
        int fi = int(std::find(feed_values.begin(), feed_values.end(), n.inputs[i]) - feed_values.begin());
        patches.push_back({s, int(i), fi});
      }
    }
    for (int v : n.outputs) out.push_back(ptr[v]);
    node_in.push_back(std::move(in));
    node_out.push_back(std::move(out));
  }
  // kernels' persistent regions (prepared weights): one block, 64-byte aligned slices, filled on the first run
  std::vector<size_t> persist_off;
  size_t persist_total = 0;
  for (auto& k : kernels) {
    persist_off.push_back(persist_total);
    persist_total += (k->persistent_bytes() + 63) / 64 * 64;
  }
  check_budget(plan.arena_bytes + fixed_bytes + scratch_bytes + persist_total, budget, planned, reqs);
  scratch = make_buffer(std::max<size_t>(scratch_bytes, 64));
  if (persist_total) prepared = make_buffer(persist_total);
  for (size_t s = 0; s < kernels.size(); ++s)
    persist_ptr.push_back(kernels[s]->persistent_bytes() ? static_cast<char*>(prepared.get()) + persist_off[s] : nullptr);
  report.prepared_bytes = persist_total;
  prof_ns.assign(n_steps + 1, 0.0);
  prof_calls.assign(n_steps + 1, 0);
  report.scratch_bytes = scratch_bytes;
  for (int v : fetch_values) {
    auto it = std::find(feed_values.begin(), feed_values.end(), v);
    feed_fetch.push_back(it == feed_values.end() ? -1 : int(it - feed_values.begin()));
  }

  // ---- optimizer state ----
  if (opt.mode == Mode::Train) {
    const auto& oc = opt.optim;
    size_t n = std::max<size_t>(n_grad, 1) * 4;
    if (oc.kind == "sgd") {
      if (oc.momentum != 0) state_m = make_buffer(n);
      if (oc.nesterov && (oc.momentum <= 0 || oc.dampening != 0))
        throw Error("SGD: nesterov momentum requires momentum > 0 and dampening = 0");
    } else if (oc.kind == "adam" || oc.kind == "adamw") {
      state_m = make_buffer(n);
      state_v = make_buffer(n);
      if (oc.amsgrad) state_vmax = make_buffer(n);
    } else {
      throw Error("unknown optimizer '" + oc.kind + "' (sgd, adam, adamw)");
    }
    report.optimizer_state_bytes = (state_m ? n_grad * 4 : 0) + (state_v ? n_grad * 4 : 0) + (state_vmax ? n_grad * 4 : 0);
    // BN running statistics change during the forward pass; a step that fails restores them from here.
    if (store->num_buffers()) buffers_backup = make_buffer(store->num_buffers() * 4);
  }
}

namespace {
// Index of the first NaN/inf in x, or -1. One vectorized pass (x * 0 is 0 for finite x, NaN otherwise).
template <class T>
int64_t first_non_finite(const T* x, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i] * T(0);
  if (acc == T(0)) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}
std::string index_str(const Shape& s, int64_t flat) {
  Shape idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = flat % s[d];
    flat /= s[d];
  }
  return shape_str(idx);
}
}  // namespace

// Refuses a session that would need more than the budget, before anything that size is allocated; names the
// largest planned values so the user sees which layer asks for it.
void SessionImpl::check_budget(size_t need, size_t budget, const std::vector<int>& planned, const std::vector<BufferReq>& reqs) const {
  if (need <= budget) return;
  std::vector<size_t> order(planned.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reqs[a].size > reqs[b].size; });
  std::string largest;
  for (size_t i = 0; i < order.size() && i < 3; ++i) {
    const Value& v = g.values[planned[order[i]]];
    const int prod = v.producer;
    largest += std::string(i ? ", " : "") + "'" + (prod >= 0 ? g.nodes[prod].name + "' (" + g.nodes[prod].op + ")" : v.name + "'") +
               " " + shape_str(v.desc.shape) + " " + mib(reqs[order[i]].size);
  }
  throw Error("compile: the session needs " + mib(need) + " (activation arena, scratch, prepared weights" +
              (opt.mode == Mode::Train ? std::string(", gradients and optimizer state") : std::string()) + "), over the budget of " +
              mib(budget) + (opt.max_arena_bytes ? " (max_arena_bytes)" : " (the machine's physical memory; raise it with max_arena_bytes)") +
              (largest.empty() ? std::string() : "; largest values: " + largest));
}

// "'name' at [i, j]" for a flat index into the parameter (trainable) or buffer block.
std::string SessionImpl::locate(bool trainable, size_t flat) const {
  for (const auto& e : store->entries()) {
    const size_t n = size_t(numel(e.shape));
    if (e.trainable == trainable && flat >= e.offset && flat < e.offset + n)
      return "'" + e.name + "' at " + index_str(e.shape, int64_t(flat - e.offset));
  }
  return "index " + std::to_string(flat);
}

void SessionImpl::diverged(const std::string& what) const {
  throw Error("step " + std::to_string(steps) + ": " + what +
              "; parameters, optimizer state and running statistics are left as they were before this step "
              "(training diverged: lower the learning rate)");
}

// The optimizer update, guarded so that it never writes a non-finite parameter or state value: the gradients
// are checked (one pass, which also gives max |g|); with the maxima the previous update left (when nobody wrote
// the store since), a bound on every intermediate of the update rule tells whether anything can overflow; only
// when it might does an exact dry run (scalar, same arithmetic) look for the first element that would. On any
// failure nothing has been written, and run() restores the running statistics.
void SessionImpl::update() {
  const auto& oc = opt.optim;
  float* p = store->params();
  const float* gr = static_cast<const float*>(grad_block.get());
  float* m = static_cast<float*>(state_m.get());
  float* v = static_cast<float*>(state_v.get());
  float* vmax = static_cast<float*>(state_vmax.get());
  const long t = long(steps + 1);
  bool finite = true;
  const double G = backend->absmax(gr, n_grad, &finite);
  if (!finite) {
    int64_t i = backend->first_non_finite(gr, n_grad);
    diverged("the gradient of " + locate(true, size_t(i)) + " is " + (std::isnan(gr[i]) ? "nan" : "inf") + " (the loss was finite)");
  }
  if (maxima_version == 0 || maxima_version != store->version()) {  // written from outside: measure the blocks
    maxima.p = backend->absmax(p, n_grad, &finite);
    if (!finite) {
      int64_t i = backend->first_non_finite(p, n_grad);
      diverged("parameter " + locate(true, size_t(i)) + " is not finite before the update (it was written so from outside)");
    }
    maxima.m = m ? backend->absmax(m, n_grad, nullptr) : 0.f;
    maxima.v = std::max(v ? backend->absmax(v, n_grad, nullptr) : 0.f, vmax ? backend->absmax(vmax, n_grad, nullptr) : 0.f);
  }
  const double P = maxima.p, M = maxima.m, V = maxima.v;
  const double limit = 0.5 * double(std::numeric_limits<float>::max());
  auto below = [&](std::initializer_list<double> xs) {
    for (double x : xs)
      if (!(x < limit)) return false;  // NaN-safe
    return true;
  };
  auto fail_at = [&](long i) {
    char lrs[32];
    std::snprintf(lrs, sizeof lrs, "%g", lr);
    diverged(std::string("the update (lr ") + lrs + ") would make " + locate(true, size_t(i)) +
             " or its optimizer state non-finite");
  };
  if (oc.kind == "sgd") {
    SGDConfig c;
    c.lr = float(lr);
    c.momentum = float(oc.momentum);
    c.dampening = float(oc.dampening);
    c.weight_decay = float(oc.weight_decay);
    c.nesterov = oc.nesterov;
    const double wd = c.weight_decay, mu = c.momentum, omd = std::fabs(1.0 - double(c.dampening));
    const double d = G + wd * P;
    double b = 0, dd = d;
    if (mu != 0) {
      b = t == 1 ? d : mu * M + omd * d;
      dd = c.nesterov ? d + mu * b : b;
    }
    if (!below({d, b, dd, double(c.lr) * dd, P + double(c.lr) * dd})) {
      long i = backend->sgd_first_non_finite(p, gr, m, n_grad, c, t);
      if (i >= 0) fail_at(i);
    }
    backend->sgd_update(p, gr, m, n_grad, c, t, &maxima);
  } else {
    AdamConfig c;
    c.lr = float(lr);
    c.beta1 = float(oc.beta1);
    c.beta2 = float(oc.beta2);
    c.eps = float(oc.eps);
    c.weight_decay = float(oc.weight_decay);
    c.decoupled = oc.kind == "adamw";
    c.amsgrad = oc.amsgrad;
    const double wd = c.weight_decay, lrd = c.lr;
    const double pv = c.decoupled ? P * std::fabs(1.0 - lrd * wd) : P;
    const double d = c.decoupled ? G : G + wd * pv;
    const double mn = 2.0 * (M + d);  // the lerp and its intermediate d - m
    const double vn = double(c.beta2) * V + d * d, s = std::max(V, vn);
    const double bc1 = 1.0 - std::pow(double(c.beta1), double(t)), bc2s = std::sqrt(1.0 - std::pow(double(c.beta2), double(t)));
    const double step_size = lrd / bc1, eps = c.eps;
    const bool ok = eps > 0 && bc2s > 0 &&
                    below({pv, d, mn, vn, s, d * d, std::sqrt(s) / bc2s, step_size * mn, step_size * mn / eps, pv + step_size * mn / eps});
    if (!ok) {
      long i = backend->adam_first_non_finite(p, gr, m, v, vmax, n_grad, c, t);
      if (i >= 0) fail_at(i);
    }
    backend->adam_update(p, gr, m, v, vmax, n_grad, c, t, &maxima);
  }
}

void SessionImpl::refresh_private() {
  private_version = store->version();
  double* pp = static_cast<double*>(private_params.get());
  double* pb = static_cast<double*>(private_buffers.get());
  for (size_t i = 0; i < store->num_params(); ++i) pp[i] = store->params()[i];
  for (size_t i = 0; i < store->num_buffers(); ++i) pb[i] = store->buffers()[i];
}

void SessionImpl::check_store_unchanged() {
  auto mix = [](uint64_t h, const float* p, size_t n) {  // FNV-1a over 32-bit words, four independent lanes
    const uint32_t* w = reinterpret_cast<const uint32_t*>(p);
    uint64_t l[4] = {h, h + 1, h + 2, h + 3};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int k = 0; k < 4; ++k) l[k] = (l[k] ^ w[i + k]) * 0x100000001b3ull;
    for (; i < n; ++i) l[0] = (l[0] ^ w[i]) * 0x100000001b3ull;
    return ((l[0] * 31 + l[1]) * 31 + l[2]) * 31 + l[3];
  };
  uint64_t h = mix(mix(0xcbf29ce484222325ull, store->params(), store->num_params()), store->buffers(), store->num_buffers());
  uint64_t v = store->version();
  if (v == checked_version && h != checked_sum)
    throw Error("run: the parameter store changed while its version did not (a writer skipped ParamStore::touch()); "
                "prepared weights would be stale");
  checked_version = v;
  checked_sum = h;
}


void SessionImpl::run(const std::vector<const void*>& fd) {
  std::lock_guard<std::recursive_mutex> hold(mu);
  threads_used = apply_num_threads();
  if (fd.size() != feeds.size())
    throw Error("run: expected " + std::to_string(feeds.size()) + " inputs, got " + std::to_string(fd.size()));
  // A NaN/inf input would not always reach the loss (ReLU maps NaN to 0) yet poison BN statistics: refuse it
  // before anything runs.
  for (size_t i = 0; i < feeds.size(); ++i) {
    const TensorDesc& d = feeds[i].desc;
    if (!is_float(d.dtype)) continue;
    const int64_t n = numel(d.shape);
    int64_t bad = opt.compute == DType::f64 ? first_non_finite(static_cast<const double*>(fd[i]), n)
                                            : first_non_finite(static_cast<const float*>(fd[i]), n);
    if (bad >= 0) {
      double v = opt.compute == DType::f64 ? static_cast<const double*>(fd[i])[bad] : static_cast<const float*>(fd[i])[bad];
      throw Error("input '" + feeds[i].name + "' has a non-finite value (" + (std::isnan(v) ? "nan" : "inf") + ") at " +
                  index_str(d.shape, bad) + "; nothing was run or updated");
    }
  }
  for (auto& p : patches) node_in[p.node][p.slot] = const_cast<void*>(fd[p.feed]);
  for (size_t i = 0; i < feed_values.size(); ++i) ptr[feed_values[i]] = const_cast<void*>(fd[i]);
  if (private_params && store->version() != private_version) refresh_private();
  if (check_prepared && prepared) check_store_unchanged();
  RunCtx rc{nullptr, nullptr, scratch.get(), opt.seed, steps};
  rc.params_version = store->version();
  // A train/grad run writes the store (BN running statistics in the forward pass, the optimizer update): the
  // version moves when it ends, whether it succeeded or not, so inference sessions sharing the store re-prepare.
  struct Bump {
    ParamStore* s;
    ~Bump() {
      if (s) s->touch();
    }
  } bump{writes_store ? store.get() : nullptr};
  using clock = std::chrono::steady_clock;
  auto exec = [&](int s) {
    rc.in = node_in[s].data();
    rc.out = node_out[s].data();
    rc.persist = persist_ptr[s];
    auto t0 = clock::now();
    try {
      kernels[s]->run(rc);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      op_error(g.nodes[s], std::string("its kernel failed: ") + e.what());
    }
    prof_ns[s] += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    prof_calls[s]++;
  };
  const int n = int(kernels.size());
  if (opt.mode == Mode::Train) {
    float* bufs = store->buffers();
    const size_t nb = buffers_backup ? store->num_buffers() * 4 : 0;
    if (nb) std::memcpy(buffers_backup.get(), bufs, nb);
    try {
      for (int s = 0; s < nf; ++s) exec(s);
    } catch (...) {  // e.g. a label out of range: leave the running statistics as they were
      if (nb) std::memcpy(bufs, buffers_backup.get(), nb);
      throw;
    }
    double L = *static_cast<const float*>(ptr[loss_value]);
    if (!std::isfinite(L)) {
      if (nb) std::memcpy(bufs, buffers_backup.get(), nb);
      throw Error(std::string("non-finite loss (") + (std::isnan(L) ? "nan" : "inf") + ") at step " + std::to_string(steps) +
                  "; parameters and running statistics were not updated");
    }
    try {
      // BN's running variance overflows first when training diverges (the normalized loss can stay finite)
      if (nb) {
        int64_t bad = backend->first_non_finite(bufs, store->num_buffers());
        if (bad >= 0)
          diverged("running statistic " + locate(false, size_t(bad)) + " became " + (std::isnan(bufs[bad]) ? "nan" : "inf") +
                   " in the forward pass (the loss was finite)");
      }
      for (int s = nf; s < n; ++s) exec(s);
      auto t0 = clock::now();
      update();
      prof_ns[n] += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
      prof_calls[n]++;
    } catch (...) {
      if (nb) std::memcpy(bufs, buffers_backup.get(), nb);
      throw;
    }
    last_loss = L;
    ++steps;
    bump.s = nullptr;
    store->touch();
    maxima_version = store->version();
    return;
  } else {
    for (int s = 0; s < n; ++s) exec(s);
  }
  ++steps;
}

// ---- Session facade ----
Session::Session(const Graph& g, std::shared_ptr<ParamStore> store, const CompileOptions& opt)
    : impl_(std::make_unique<SessionImpl>(g, std::move(store), opt)) {}
Session::~Session() = default;
const std::vector<FeedInfo>& Session::feeds() const { return impl_->feeds; }
const std::vector<FeedInfo>& Session::fetches() const { return impl_->fetches; }
void Session::run(const std::vector<const void*>& feeds) { impl_->run(feeds); }
std::unique_lock<std::recursive_mutex> Session::lock() const { return std::unique_lock<std::recursive_mutex>(impl_->mu); }
const void* Session::fetch(size_t i) const {
  if (i >= impl_->fetch_values.size()) throw Error("fetch index out of range");
  return impl_->ptr[impl_->fetch_values[i]];
}
double Session::loss() const { return impl_->last_loss; }
void Session::set_lr(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) throw Error("learning rate must be finite and >= 0");
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  impl_->lr = lr;
}
double Session::lr() const { return impl_->lr; }
int64_t Session::step_count() const { return impl_->steps; }
int Session::num_threads() const { return impl_->threads_used; }
void Session::set_step_count(int64_t steps) {
  if (steps < 0) throw Error("step count must be >= 0, got " + std::to_string(steps));
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  impl_->steps = steps;
}
std::vector<std::pair<std::string, float*>> Session::optimizer_state() {
  std::vector<std::pair<std::string, float*>> v;
  auto& I = *impl_;
  I.maxima_version = 0;  // the caller may write the blocks: measure them again before the next update
  if (I.opt.mode != Mode::Train) return v;
  const bool sgd = I.opt.optim.kind == "sgd";
  if (I.state_m) v.push_back({sgd ? "momentum_buffer" : "exp_avg", static_cast<float*>(I.state_m.get())});
  if (I.state_v) v.push_back({"exp_avg_sq", static_cast<float*>(I.state_v.get())});
  if (I.state_vmax) v.push_back({"max_exp_avg_sq", static_cast<float*>(I.state_vmax.get())});
  return v;
}
MemoryReport Session::memory_report() const { return impl_->report; }
std::vector<std::string> Session::schedule() const {
  std::vector<std::string> v;
  for (auto& n : impl_->g.nodes) v.push_back(n.op + " " + n.name);
  return v;
}
std::vector<NodeProfile> Session::profile() const {
  std::vector<NodeProfile> v;
  const auto& I = *impl_;
  for (size_t s = 0; s < I.kernels.size(); ++s)
    v.push_back({I.g.nodes[s].op, I.g.nodes[s].name, I.prof_ns[s] * 1e-6, I.prof_calls[s], I.node_flops[s]});
  if (I.opt.mode == Mode::Train)
    v.push_back({"optimizer_update", I.opt.optim.kind, I.prof_ns.back() * 1e-6, I.prof_calls.back(), 0.0});
  return v;
}
void Session::reset_profile() {
  std::fill(impl_->prof_ns.begin(), impl_->prof_ns.end(), 0.0);
  std::fill(impl_->prof_calls.begin(), impl_->prof_calls.end(), 0);
}
float* Session::grads() { return static_cast<float*>(impl_->grad_block.get()); }
size_t Session::num_grads() const { return impl_->n_grad; }

}  // namespace cnn
