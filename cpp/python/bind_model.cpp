// pybind11 bindings for model files: _core.Model (graph + ParamStore + input shape + extra state; load/save
// to a path or bytes) and _core.rebatch. File work and parsing run without the GIL; errors are cnn::Error,
// so Python sees cnnnative.Error with the C++ text.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>

#include <cnnnative/model.hpp>

namespace py = pybind11;
using namespace cnn;

void bind_model(py::module_& m) {
  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def(py::init([](const Graph& g, std::shared_ptr<ParamStore> store, const Shape& input_shape,
                       const Model::ExtraState& extra) {
             return std::make_shared<Model>(g, std::move(store), input_shape, extra);
           }),
           py::arg("graph"), py::arg("store"), py::arg("input_shape"), py::arg("extra_state") = Model::ExtraState{})
      .def_static(
          "load",
          [](const std::string& path) {
            py::gil_scoped_release nogil;
            return std::make_shared<Model>(load_model(path));
          },
          py::arg("path"))
      .def_static(
          "from_bytes",
          [](const py::buffer& b) {
            py::buffer_info info = b.request();
            if (info.ndim > 1 && info.strides.back() != info.itemsize)
              throw Error("Model.from_bytes: the buffer must be contiguous");
            size_t n = size_t(info.size) * size_t(info.itemsize);
            py::gil_scoped_release nogil;
            return std::make_shared<Model>(Model::from_bytes(info.ptr, n));
          },
          py::arg("data"))
      .def(
          "save",
          [](const Model& self, const std::string& path) {
            py::gil_scoped_release nogil;
            self.save(path);
          },
          py::arg("path"))
      .def("to_bytes",
           [](const Model& self) {
             std::vector<uint8_t> b;
             {
               py::gil_scoped_release nogil;
               b = self.to_bytes();
             }
             return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
           })
      .def_property_readonly("graph", [](const Model& self) { return self.graph(); })  // a copy
      .def_property_readonly("store", &Model::params)
      .def_property_readonly("input_shape", &Model::input_shape)
      .def_property_readonly("output_shape", &Model::output_shape)
      .def_property_readonly("extra_state", &Model::extra_state)
      .def_property_readonly("tensors", [](const Model& self) {  // (name, shape, trainable) in store order
        std::vector<std::tuple<std::string, Shape, bool>> v;
        for (auto& e : self.params()->entries()) v.emplace_back(e.name, e.shape, e.trainable);
        return v;
      });

  m.def("rebatch", &rebatch, py::arg("graph"), py::arg("batch"));
  m.attr("MODEL_FORMAT_VERSION") = kModelFormatVersion;
}
