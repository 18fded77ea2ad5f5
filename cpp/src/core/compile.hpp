// The compile pipeline: a graph as built -> a Plan the session allocates and runs.
//
// compile_plan() runs the passes of compile_pipeline() in order, each a named function over one CompileState.
// The graph rewrites (fusion, ReLU/pool swap, autodiff, recompute, layouts) come first; the analyses after them
// (interface, storage, lifetimes, in-place aliasing, memory plan, kernel choice) only fill the plan. After each
// pass that ran:
//   - with CNNNATIVE_VERIFY_PASSES=1 (the test suite sets it) verify_graph() checks the graph (ids in range,
//     schedule order, producers, shapes re-inferred by every op) and throws naming the pass that broke it;
//   - with CNNNATIVE_DUMP_PASSES=<dir> (or CompileOptions::dump_passes) the graph is written to
//     <dir>/<NN>-<pass>.txt (graph_text()), so a user can see what each pass did;
//   - a PassRecord (name, whether it ran, nodes after, a one-line summary, milliseconds) is kept in the plan
//     (Session::passes()).
// Promises: the plan is complete (every value has a storage class, a layout and a stored dtype; every planned
// value an arena offset; every node a kernel choice), and nothing in it depends on buffers (the session
// allocates them). Passes ask the backend (core/backend.hpp) and the op schemas, never a backend's name.
#pragma once
#include <cnnnative/cnnnative.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/autodiff.hpp"
#include "core/backend.hpp"
#include "core/planner.hpp"

namespace cnn {

// Where a value lives: a caller's input, the store's parameter or buffer block, the gradient block, or the
// planned activation arena.
enum class Storage { Feed, Param, Buffer, Grad, Planned };

// The kernel a node runs: the backend's registered factory, or the op's reference kernel.
struct KernelChoice {
  const KernelFactory* factory = nullptr;
  bool reference = false;  // the op's naive reference kernel
};

struct Plan {
  Graph graph;  // nodes in schedule order; the first num_forward_nodes are the forward pass
  CompileOptions opt;
  std::shared_ptr<const Backend> backend;
  LayoutPolicy policy;
  int num_forward_nodes = 0;
  int loss_value = -1;  // Train: the scalar loss
  std::vector<FeedInfo> feeds, fetches;
  std::vector<int> feed_values, fetch_values;
  std::vector<int> param_grads;  // per graph param: its gradient value (-1: none)
  std::vector<int> wrt_grads;    // Grad: per opt.wrt
  // per value
  std::vector<Storage> storage;
  std::vector<Layout> layout;
  std::vector<DType> stored_dtype;  // float values: the compute dtype, or bf16 in blocked layouts of a bf16 session
  std::vector<int> alias_of;        // the value whose buffer it shares (in place), itself when none
  std::vector<int> first_use, last_use;  // schedule steps (-1: never produced); fetched values live to the end
  // per node and input: the layout the kernel reads it in
  std::vector<std::vector<Layout>> in_view;
  // the arena: planned values (alias roots) and their requests, offsets in memory.offsets
  std::vector<int> planned;
  std::vector<BufferReq> requests;
  MemoryPlan memory;
  std::vector<KernelChoice> kernels;             // per node
  std::vector<std::string> reference_fallbacks;  // "op name" of nodes on reference kernels of a fast backend
  MemoryReport report;

  struct PassRecord {
    std::string name;
    bool ran = false;
    int nodes = 0;        // graph nodes after the pass
    std::string summary;  // what it did, one line
    double ms = 0;
  };
  std::vector<PassRecord> passes;

  // Bytes of value v as stored (its layout's padding included).
  size_t value_bytes(int v) const;
};

// What the passes share while the plan is built.
struct CompileState {
  Plan plan;
  const ParamStore& store;
  AutodiffResult autodiff;
  std::vector<int> outputs_as_built;  // fetch names: the outputs before plain copies were swapped in
};

struct Pass {
  const char* name;
  // Runs the pass: returns false when it does not apply to this session (then `ran` is false and no verification
  // or dump happens), else true with a one-line summary of what it did in `summary`.
  std::function<bool(CompileState&, std::string& summary)> run;
};

// The passes, in order.
const std::vector<Pass>& compile_pipeline();
Plan compile_plan(const Graph& g, const ParamStore& store, const CompileOptions& opt);

// Empty when g is well formed, else the first problem found.
std::string verify_graph(const Graph& g);
// Empty when the parts of the plan filled so far agree with its graph and each other (per-value and per-node
// tables sized to the graph; every input read in a layout aliasing the one it is stored in; feeds, parameters
// and gradients in their storage classes; in-place aliases rooted in the arena with the same bytes; every
// produced arena value planned; a kernel per node), else the first problem found.
std::string verify_plan(const Plan& p);
// A readable listing of g: inputs, parameters, then one line per node (op, name, inputs -> outputs with shapes
// and, when a plan is given, layouts, storage and kernel choice).
std::string graph_text(const Graph& g, const Plan* plan = nullptr);

}  // namespace cnn
