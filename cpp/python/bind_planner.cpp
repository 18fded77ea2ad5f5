// Python bindings for the memory planner (cnn::plan_memory, cnn::validate_plan) in cnnnative._core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "core/planner.hpp"

namespace py = pybind11;

namespace {

std::vector<cnn::BufferReq> make_reqs(const std::vector<size_t>& sizes, const std::vector<int>& firsts,
                                      const std::vector<int>& lasts) {
  if (firsts.size() != sizes.size() || lasts.size() != sizes.size())
    throw py::value_error("sizes, firsts and lasts must have the same length (got " + std::to_string(sizes.size()) +
                          ", " + std::to_string(firsts.size()) + ", " + std::to_string(lasts.size()) + ")");
  std::vector<cnn::BufferReq> reqs(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) reqs[i] = {sizes[i], firsts[i], lasts[i]};
  return reqs;
}

}  // namespace

void bind_planner(py::module_& m) {
  m.def(
      "plan_memory",
      [](const std::vector<size_t>& sizes, const std::vector<int>& firsts, const std::vector<int>& lasts,
         size_t alignment, bool enabled) {
        cnn::MemoryPlan p = cnn::plan_memory(make_reqs(sizes, firsts, lasts), alignment, enabled);
        py::dict d;
        d["offsets"] = py::cast(p.offsets);
        d["arena_bytes"] = p.arena_bytes;
        d["lower_bound"] = p.lower_bound;
        d["naive_sum"] = p.naive_sum;
        return d;
      },
      py::arg("sizes"), py::arg("firsts"), py::arg("lasts"), py::arg("alignment") = 64, py::arg("enabled") = true,
      "Greedy-by-size best-fit arena plan for buffers live on steps [first, last]; returns a dict with "
      "offsets, arena_bytes, lower_bound, naive_sum. enabled=False gives the naive layout.");
  m.def(
      "validate_plan",
      [](const std::vector<size_t>& sizes, const std::vector<int>& firsts, const std::vector<int>& lasts,
         const std::vector<size_t>& offsets, size_t arena_bytes, size_t alignment) {
        cnn::MemoryPlan p;
        p.offsets = offsets;
        p.arena_bytes = arena_bytes;
        return cnn::validate_plan(make_reqs(sizes, firsts, lasts), p, alignment);
      },
      py::arg("sizes"), py::arg("firsts"), py::arg("lasts"), py::arg("offsets"), py::arg("arena_bytes"),
      py::arg("alignment") = 64,
      "Empty string when live-together buffers never share bytes, offsets are aligned and all fit the arena; "
      "otherwise a message naming the first offending buffer or pair.");
}
