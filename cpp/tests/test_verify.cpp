// The compile pipeline's graph verifier (core/compile.hpp): a well-formed graph passes; each kind of damage a
// faulty pass could do is reported with the node it concerns. Links libcnnnative (the ops must be registered).
#include <cstdio>
#include <string>

#include "core/compile.hpp"
#include "core/op.hpp"

using namespace cnn;

static int failures = 0;
static void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}
static void expect_problem(const Graph& g, const std::string& needle, const std::string& what) {
  const std::string bad = verify_graph(g);
  expect(bad.find(needle) != std::string::npos, what + ": expected '" + needle + "' in '" + bad + "'");
}

static Graph small_net() {
  Graph g;
  int x = g.add_input("x", {2, 3, 8, 8});
  int w = g.add_param("w", {4, 3, 3, 3});
  Attrs conv;
  conv.ints["padding"] = {1, 1};
  int y = g.add_node("conv2d", {x, w}, conv, "conv")[0];
  int r = g.add_node("relu", {y}, Attrs{}, "relu")[0];
  g.set_outputs({r});
  return g;
}

int main() {
  {
    Graph g = small_net();
    expect(verify_graph(g).empty(), "a well-formed graph passes: " + verify_graph(g));
  }
  {  // nodes out of schedule order: relu reads the conv output before the conv runs
    Graph g = small_net();
    std::swap(g.nodes[0], g.nodes[1]);
    expect_problem(g, "before it is produced", "schedule order");
  }
  {  // a pass that changed a shape without re-inferring it
    Graph g = small_net();
    g.values[g.nodes[1].outputs[0]].desc.shape = {2, 4, 8, 9};
    expect_problem(g, "the op infers", "stale shape");
  }
  {  // a dangling id
    Graph g = small_net();
    g.nodes[1].inputs[0] = 99;
    expect_problem(g, "out of range", "dangling id");
  }
  {  // an output written twice
    Graph g = small_net();
    g.nodes[1].outputs[0] = g.nodes[0].outputs[0];
    expect_problem(g, "already defined", "double definition");
  }
  {  // a producer index that lies
    Graph g = small_net();
    g.values[g.nodes[0].outputs[0]].producer = 1;
    expect_problem(g, "names producer", "producer");
  }
  {  // an unknown op
    Graph g = small_net();
    g.nodes[1].op = "no_such_op";
    expect_problem(g, "unknown op", "unknown op");
  }
  {  // the graph's output is never produced
    Graph g = small_net();
    g.nodes.pop_back();
    expect_problem(g, "never produced", "missing output");
  }
  {  // the pipeline's order is the documented one
    std::string names;
    for (const auto& p : compile_pipeline()) names += std::string(names.empty() ? "" : ",") + p.name;
    expect(names.find("check,") == 0, "the pipeline starts with check: " + names);
    expect(names.find("autodiff") < names.find("layouts") && names.find("layouts") < names.find("memory_plan") &&
               names.find("memory_plan") < names.find("kernels"),
           "autodiff < layouts < memory_plan < kernels: " + names);
  }
  {  // the plan verifier: a compiled plan passes; damage to its tables is reported
    Graph g = small_net();
    auto store = std::make_shared<ParamStore>(std::vector<ParamStore::Entry>{{"w", {4, 3, 3, 3}, true, 0}});
    CompileOptions o;
    o.layout = "nChw8c";
    Plan p = compile_plan(g, *store, o);
    expect(verify_plan(p).empty(), "a compiled plan passes: " + verify_plan(p));
    {
      Plan q = p;  // relu reads the conv's blocked output as if it were plain
      q.in_view.back()[0] = q.layout[q.graph.nodes.back().inputs[0]] == Layout::plain ? Layout::nChw8c : Layout::plain;
      expect(verify_plan(q).find("reads") != std::string::npos, "input view: " + verify_plan(q));
    }
    {
      Plan q = p;  // a graph input stored blocked
      q.layout[q.graph.inputs[0]] = Layout::nChw8c;
      expect(!verify_plan(q).empty(), "blocked input: " + verify_plan(q));
    }
    {
      Plan q = p;  // an alias onto a parameter
      const int out = q.graph.nodes.back().outputs[0];
      q.alias_of[out] = q.graph.params[0];
      expect(verify_plan(q).find("outside the arena") != std::string::npos ||
                 verify_plan(q).find("differ") != std::string::npos,
             "alias onto a parameter: " + verify_plan(q));
    }
    {
      Plan q = p;  // a produced value left out of the arena
      q.planned.pop_back();
      expect(!verify_plan(q).empty(), "unplanned value: " + verify_plan(q));
    }
    {
      Plan q = p;
      q.kernels.pop_back();
      expect(verify_plan(q).find("kernel") != std::string::npos, "kernels: " + verify_plan(q));
    }
  }
  if (failures) return 1;
  std::printf("verify: all passed\n");
  return 0;
}
