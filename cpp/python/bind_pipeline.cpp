// Binds the compile pipeline's introspection: the pass list, the registered backends, the graph verifier and
// the graph listing (core/compile.hpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/backend.hpp"
#include "core/compile.hpp"

namespace py = pybind11;

void bind_pipeline(py::module_& m) {
  m.def(
      "compile_passes",
      [] {
        std::vector<std::string> v;
        for (const auto& p : cnn::compile_pipeline()) v.push_back(p.name);
        return v;
      },
      "The compile pipeline's passes, in order.");
  m.def("backend_names", &cnn::backend_names, "The registered backends.");
  m.def(
      "backend_kernels",
      [](const std::string& name) {
        cnn::get_backend(name);  // loads a plugin backend on first use (its kernels register then)
        std::vector<std::string> ops;
        for (const auto& op : cnn::op_names())
          if (cnn::find_kernel_entry(name, op)) ops.push_back(op);
        return ops;
      },
      py::arg("name"), "The ops a backend has its own kernel for (the others would run the op's reference kernel).");
  m.def(
      "describe_backend",
      [](const std::string& name) {
        auto b = cnn::get_backend(name);  // loads a plugin backend on first use
        py::gil_scoped_release nogil;
        return b->describe();
      },
      py::arg("name"),
      "key=value lines about a backend and its device; loads a plugin backend (libcnnnative_<name>.so) on first use "
      "and raises cn.Error saying what is missing when it cannot run here.");
  m.def("verify_graph", &cnn::verify_graph, py::arg("graph"),
        "Empty when the graph is well formed, else the first problem found (ids, schedule order, shapes).");
  m.def(
      "graph_text", [](const cnn::Graph& g) { return cnn::graph_text(g, nullptr); }, py::arg("graph"),
      "A readable listing of the graph, as the pass dumps write it.");
}
