// pybind11 bindings: cnnnative._core. Owns the numpy <-> core boundary: input checks (shape, dtype,
// contiguity) with clear messages, zero-copy use of float32 C-contiguous inputs, numpy views of the
// parameter store. Maps cnn::Error to cnnnative._core.Error (a ValueError).
#include <cmath>
#include <cstring>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cnnnative/cnnnative.hpp>

#include "core/op.hpp"
#include "core/quantize.hpp"

namespace py = pybind11;
using namespace cnn;

void bind_planner(py::module_& m);
void bind_probe(py::module_& m);
void bind_model(py::module_& m);
void bind_pipeline(py::module_& m);

namespace {

DType parse_dtype(const std::string& s) {
  if (s == "float32") return DType::f32;
  if (s == "float64") return DType::f64;
  if (s == "int32") return DType::i32;
  if (s == "uint8") return DType::u8;
  if (s == "bfloat16") return DType::bf16;
  if (s == "int8") return DType::s8;
  throw Error("unknown dtype '" + s + "'");
}

py::dtype np_dtype(DType t) {
  switch (t) {
    case DType::f32: return py::dtype::of<float>();
    case DType::f64: return py::dtype::of<double>();
    case DType::i32: return py::dtype::of<int32_t>();
    case DType::u8: return py::dtype::of<uint8_t>();
    case DType::s8: return py::dtype::of<int8_t>();
    default: throw Error(std::string("no numpy dtype for ") + dtype_name(t));
  }
}

Attrs parse_attrs(const py::dict& d) {
  Attrs a;
  for (auto kv : d) {
    std::string k = py::str(kv.first);
    py::handle v = kv.second;
    if (py::isinstance<py::bool_>(v) || py::isinstance<py::int_>(v)) {
      a.ints[k] = {v.cast<int64_t>()};
    } else if (py::isinstance<py::float_>(v)) {
      a.floats[k] = v.cast<double>();
    } else if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
      a.ints[k] = v.cast<std::vector<int64_t>>();
    } else {
      throw Error("attribute '" + k + "' must be an int, float or list of ints");
    }
  }
  return a;
}

std::string shape_dtype(const py::array& a) {
  Shape s(a.shape(), a.shape() + a.ndim());
  return shape_str(s) + " " + std::string(py::str(a.dtype()));
}

// A session plus the numpy glue. Thread safety: every call converts its inputs into locals (with the GIL), then
// releases the GIL and takes the session's lock for the run and the copies of its results, so two Python threads
// sharing a session get their own outputs (runs are serialized) and sessions in different threads run in parallel.
// The session's lock taken with the GIL released, then the GIL held again: a run holds the session lock and may
// need the GIL (a Python grad hook, set_grad_hook), so no thread may wait for that lock while holding the GIL.
std::unique_lock<std::recursive_mutex> lock_without_gil(const Session& s) {
  py::gil_scoped_release nogil;
  return s.lock();
}

class PySession {
 public:
  PySession(const Graph& g, std::shared_ptr<ParamStore> store, const CompileOptions& o)
      : s_(g, std::move(store), o), compute_(o.compute) {}

  void run(const py::sequence& inputs) { run_impl(inputs, -1); }

  // run, then a copy of fetch i made under the same lock
  py::array run_fetch(const py::sequence& inputs, size_t i) { return run_impl(inputs, int64_t(i)); }

  double step(py::handle x, py::handle y) {
    if (s_.feeds().size() != 2) throw Error("step(x, y) needs a training session with inputs (x, labels)");
    std::vector<py::object> keep(2);
    std::vector<const void*> ptrs{prepare(0, x, keep[0]), prepare(1, y, keep[1])};
    py::gil_scoped_release nogil;
    auto hold = s_.lock();
    s_.run(ptrs);
    return s_.loss();
  }

  py::array fetch(size_t i) {
    py::array out = new_fetch_array(i);
    void* dst = out.mutable_data();
    const size_t bytes = size_t(out.nbytes());
    py::gil_scoped_release nogil;
    auto hold = s_.lock();
    std::memcpy(dst, s_.fetch(i), bytes);
    return out;
  }

  Session& s() { return s_; }

  // hook(grads, loss) -> loss between the backward pass and the update (Session::set_grad_hook): grads is a
  // writable float32 view of the flat gradient block, valid during the call only; None removes it.
  void set_grad_hook(py::object hook) {
    if (!hook.is_none() && !PyCallable_Check(hook.ptr()))
      throw Error("set_grad_hook: the hook must be callable or None");
    auto hold = lock_without_gil(s_);  // no run is in progress from here on
    if (hook.is_none()) {
      s_.set_grad_hook(nullptr);
      hook_ = py::none();
      return;
    }
    s_.set_grad_hook([this](float* g, size_t n, double loss) {
      py::gil_scoped_acquire gil;
      py::array_t<float> view({py::ssize_t(n)}, {py::ssize_t(sizeof(float))}, g, py::none());
      return hook_(view, loss).cast<double>();
    });
    hook_ = std::move(hook);
  }

  // hook(step) after the listed backward steps (Session::set_step_hook); None removes it.
  void set_step_hook(std::vector<int> steps, py::object hook) {
    if (!hook.is_none() && !PyCallable_Check(hook.ptr()))
      throw Error("set_step_hook: the hook must be callable or None");
    auto hold = lock_without_gil(s_);
    if (hook.is_none()) {
      s_.set_step_hook({}, nullptr);
      step_hook_ = py::none();
      return;
    }
    s_.set_step_hook(std::move(steps), [this](int step) {
      py::gil_scoped_acquire gil;
      step_hook_(step);
    });
    step_hook_ = std::move(hook);
  }

  // fn(view) sums a float64 view in place across the job's processes (Session::set_allreduce); None removes it.
  // Its exceptions fail the step as a cnnnative error carrying their text (they surface through a kernel).
  void set_allreduce(py::object fn) {
    if (!fn.is_none() && !PyCallable_Check(fn.ptr())) throw Error("set_allreduce: fn must be callable or None");
    auto hold = lock_without_gil(s_);
    if (fn.is_none()) {
      s_.set_allreduce(nullptr);
      allreduce_ = py::none();
      return;
    }
    s_.set_allreduce([this](double* d, size_t n) {
      py::gil_scoped_acquire gil;
      try {
        py::array_t<double> view({py::ssize_t(n)}, {py::ssize_t(sizeof(double))}, d, py::none());
        allreduce_(view);
      } catch (py::error_already_set& e) {
        throw Error(std::string("allreduce failed: ") + e.what());
      }
    });
    allreduce_ = std::move(fn);
  }

 private:
  py::object hook_ = py::none();
  py::object step_hook_ = py::none();
  py::object allreduce_ = py::none();
  py::array new_fetch_array(size_t i) {
    const auto& f = s_.fetches().at(i);
    DType t = is_float(f.desc.dtype) ? compute_ : f.desc.dtype;
    return py::array(np_dtype(t), f.desc.shape);
  }

  py::array run_impl(const py::sequence& inputs, int64_t fetch_i) {
    const auto& feeds = s_.feeds();
    if (size_t(py::len(inputs)) != feeds.size())
      throw Error("expected " + std::to_string(feeds.size()) + " input arrays, got " + std::to_string(py::len(inputs)));
    std::vector<py::object> keep(feeds.size());
    std::vector<const void*> ptrs(feeds.size());
    for (size_t i = 0; i < feeds.size(); ++i) ptrs[i] = prepare(i, inputs[i], keep[i]);
    py::array out;
    void* dst = nullptr;
    size_t bytes = 0;
    if (fetch_i >= 0) {
      out = new_fetch_array(size_t(fetch_i));
      dst = out.mutable_data();
      bytes = size_t(out.nbytes());
    }
    {
      py::gil_scoped_release nogil;
      auto hold = s_.lock();
      s_.run(ptrs);
      if (dst) std::memcpy(dst, s_.fetch(size_t(fetch_i)), bytes);
    }
    return out;
  }

  // A pointer to input i's data: the array itself when it is already C-contiguous in the feed's dtype, else a
  // converted copy held in `keep` for the duration of the call.
  const void* prepare(size_t i, py::handle obj, py::object& keep) {
    const FeedInfo& f = s_.feeds()[i];
    DType want = is_float(f.desc.dtype) ? compute_ : f.desc.dtype;
    py::array a;
    if (py::isinstance<py::array>(obj)) {
      a = py::reinterpret_borrow<py::array>(obj);
    } else {
      a = py::array::ensure(obj);
      char k = a ? a.dtype().kind() : '?';
      if (!a || !(k == 'f' || k == 'i' || k == 'u' || k == 'b'))
        throw Error("input '" + f.name + "': expected a numpy array of shape " + shape_str(f.desc.shape) + " " +
                    dtype_name(want) + ", got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    }
    Shape got(a.shape(), a.shape() + a.ndim());
    if (got != f.desc.shape)
      throw Error("input '" + f.name + "': expected shape " + shape_str(f.desc.shape) + " " + dtype_name(want) +
                  ", got " + shape_dtype(a));
    char kind = a.dtype().kind();
    bool float_want = is_float(want);
    if (float_want ? !(kind == 'f' || kind == 'i' || kind == 'u') : !(kind == 'i' || kind == 'u'))
      throw Error("input '" + f.name + "': expected dtype " + dtype_name(want) + ", got " +
                  std::string(py::str(a.dtype())));
    py::dtype dt = np_dtype(want);
    bool ok = a.dtype().is(dt) && (a.flags() & py::array::c_style);
    keep = ok ? py::object(a) : py::object(py::module_::import("numpy").attr("ascontiguousarray")(a, dt));
    return py::reinterpret_borrow<py::array>(keep).data();
  }

  Session s_;
  DType compute_;
};

py::dict report_dict(const MemoryReport& r) {
  py::dict d;
  d["arena_bytes"] = r.arena_bytes;
  d["lower_bound_bytes"] = r.lower_bound_bytes;
  d["naive_bytes"] = r.naive_bytes;
  d["param_bytes"] = r.param_bytes;
  d["grad_bytes"] = r.grad_bytes;
  d["optimizer_state_bytes"] = r.optimizer_state_bytes;
  d["buffer_bytes"] = r.buffer_bytes;
  d["scratch_bytes"] = r.scratch_bytes;
  d["prepared_bytes"] = r.prepared_bytes;
  d["pieces_bytes"] = r.pieces_bytes;
  d["persistent_bytes"] = r.persistent_bytes();
  d["num_planned_buffers"] = r.num_planned;
  d["num_inplace"] = r.num_inplace;
  d["num_recomputed"] = r.num_recomputed;
  d["recompute"] = r.recompute;
  d["num_relu_pool_swapped"] = r.num_relu_pool_swapped;
  return d;
}

py::list infos(const std::vector<FeedInfo>& v) {
  py::list l;
  for (auto& f : v) l.append(py::make_tuple(f.name, f.desc.shape, dtype_name(f.desc.dtype)));
  return l;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "cnnnative C++ core";
  py::register_exception<Error>(m, "Error", PyExc_ValueError);

  py::class_<Graph>(m, "Graph")
      .def(py::init<>())
      .def(
          "add_input",
          [](Graph& g, const std::string& n, const Shape& s, const std::string& dt) {
            return g.add_input(n, s, parse_dtype(dt));
          },
          py::arg("name"), py::arg("shape"), py::arg("dtype") = "float32")
      .def("add_param", &Graph::add_param, py::arg("name"), py::arg("shape"), py::arg("trainable") = true)
      .def(
          "add_node",
          [](Graph& g, const std::string& op, const std::vector<int>& ins, const py::dict& attrs,
             const std::string& name) { return g.add_node(op, ins, parse_attrs(attrs), name); },
          py::arg("op"), py::arg("inputs"), py::arg("attrs") = py::dict(), py::arg("name") = "")
      .def("set_outputs", &Graph::set_outputs)
      .def("shape", [](const Graph& g, int v) { return g.values.at(v).desc.shape; })
      .def("dtype", [](const Graph& g, int v) { return std::string(dtype_name(g.values.at(v).desc.dtype)); })
      .def("value_name", [](const Graph& g, int v) { return g.values.at(v).name; })
      .def_property_readonly("num_nodes", [](const Graph& g) { return g.nodes.size(); })
      .def_property_readonly("num_values", [](const Graph& g) { return g.values.size(); })
      .def_property_readonly("outputs", [](const Graph& g) { return g.outputs; })
      .def_property_readonly("inputs", [](const Graph& g) { return g.inputs; })
      .def("nodes",
           [](const Graph& g) {
             // {op, name, inputs, outputs, attrs}: one-element integer lists read back as ints (the Python
             // layer passes scalars), longer ones as lists.
             py::list l;
             for (auto& n : g.nodes) {
               py::dict d, a;
               for (auto& kv : n.attrs.ints) {
                 if (kv.second.size() == 1)
                   a[py::str(kv.first)] = kv.second[0];
                 else
                   a[py::str(kv.first)] = kv.second;
               }
               for (auto& kv : n.attrs.floats) a[py::str(kv.first)] = kv.second;
               d["op"] = n.op;
               d["name"] = n.name;
               d["inputs"] = n.inputs;
               d["outputs"] = n.outputs;
               d["attrs"] = a;
               l.append(d);
             }
             return l;
           })
      .def("node_ops", [](const Graph& g) {
        std::vector<std::string> v;
        for (auto& n : g.nodes) v.push_back(n.op + " " + n.name);
        return v;
      });

  py::class_<ParamStore, std::shared_ptr<ParamStore>>(m, "ParamStore")
      .def(py::init([](const std::vector<std::tuple<std::string, Shape, bool>>& entries) {
        std::vector<ParamStore::Entry> e;
        for (auto& t : entries) e.push_back({std::get<0>(t), std::get<1>(t), std::get<2>(t), 0});
        return std::make_shared<ParamStore>(e);
      }))
      // A read-only numpy view of one entry (cnnnative._params.track: Parameter for trainable entries, writeable
      // inside `cn.no_grad()`, whose exit bumps the store's version; see ParamStore in cnnnative.hpp).
      .def("array",
           [](std::shared_ptr<ParamStore> s, const std::string& name) {
             const auto& e = s->find(name);
             py::capsule owner(new std::shared_ptr<ParamStore>(s),
                               [](void* p) { delete static_cast<std::shared_ptr<ParamStore>*>(p); });
             py::array_t<float> a(e.shape, s->data(e), owner);
             return py::module_::import("cnnnative._params").attr("track")(a, py::cast(s), e.trainable);
           })
      .def("touch", &ParamStore::touch, "Marks the parameters/buffers as changed (prepared weights are rebuilt).")
      .def_property_readonly("version", &ParamStore::version)
      .def_property_readonly("num_params", &ParamStore::num_params)
      .def_property_readonly("num_buffers", &ParamStore::num_buffers)
      .def("names", [](const ParamStore& s) {
        std::vector<std::string> v;
        for (auto& e : s.entries()) v.push_back(e.name);
        return v;
      });

  py::class_<PySession>(m, "Session")
      .def(
          py::init([](const Graph& g, std::shared_ptr<ParamStore> store, const std::string& mode,
                      const std::string& backend, const std::string& compute, int loss, const std::vector<int>& grad_of,
                      const std::vector<int>& wrt, const py::dict& optim, bool plan_memory, uint64_t seed,
                      bool optimize, const std::string& layout, const std::string& recompute, const std::string& dtype,
                      bool cache_weights, bool winograd, bool deterministic, size_t max_arena_bytes, bool strict,
                      const std::string& dump_passes, bool tf32, bool graphs, size_t memory_budget, bool batch_pieces) {
            CompileOptions o;
            if (mode == "infer")
              o.mode = Mode::Infer;
            else if (mode == "train")
              o.mode = Mode::Train;
            else if (mode == "grad")
              o.mode = Mode::Grad;
            else
              throw Error("mode must be 'infer', 'train' or 'grad', got '" + mode + "'");
            o.backend = backend;
            o.compute = parse_dtype(compute);
            o.loss = loss;
            o.grad_of = grad_of;
            o.wrt = wrt;
            o.plan_memory = plan_memory;
            o.seed = seed;
            o.optimize = optimize;
            o.layout = layout;
            o.recompute = recompute;
            o.activations = parse_dtype(dtype);
            o.cache_weights = cache_weights;
            o.winograd = winograd;
            o.deterministic = deterministic;
            o.max_arena_bytes = max_arena_bytes;
            o.strict = strict;
            o.dump_passes = dump_passes;
            o.tf32 = tf32;
            o.graphs = graphs;
            o.memory_budget = memory_budget;
            o.batch_pieces = batch_pieces;
            for (auto kv : optim) {
              std::string k = py::str(kv.first);
              py::handle v = kv.second;
              if (k == "kind")
                o.optim.kind = v.cast<std::string>();
              else if (k == "lr")
                o.optim.lr = v.cast<double>();
              else if (k == "momentum")
                o.optim.momentum = v.cast<double>();
              else if (k == "dampening")
                o.optim.dampening = v.cast<double>();
              else if (k == "weight_decay")
                o.optim.weight_decay = v.cast<double>();
              else if (k == "nesterov")
                o.optim.nesterov = v.cast<bool>();
              else if (k == "beta1")
                o.optim.beta1 = v.cast<double>();
              else if (k == "beta2")
                o.optim.beta2 = v.cast<double>();
              else if (k == "eps")
                o.optim.eps = v.cast<double>();
              else if (k == "amsgrad")
                o.optim.amsgrad = v.cast<bool>();
              else
                throw Error("unknown optimizer option '" + k + "'");
            }
            return new PySession(g, std::move(store), o);
          }),
          py::arg("graph"), py::arg("store"), py::arg("mode") = "infer", py::arg("backend") = "cpu",
          py::arg("compute") = "float32", py::arg("loss") = -1, py::arg("grad_of") = std::vector<int>{},
          py::arg("wrt") = std::vector<int>{}, py::arg("optim") = py::dict(), py::arg("plan_memory") = true,
          py::arg("seed") = 0, py::arg("optimize") = true, py::arg("layout") = "auto", py::arg("recompute") = "auto",
          py::arg("dtype") = "float32", py::arg("cache_weights") = true, py::arg("winograd") = true,
          py::arg("deterministic") = false, py::arg("max_arena_bytes") = 0, py::arg("strict") = false,
          py::arg("dump_passes") = "", py::arg("tf32") = true, py::arg("graphs") = true, py::arg("memory_budget") = 0,
          py::arg("batch_pieces") = true)
      .def("run", &PySession::run)
      .def("run_fetch", &PySession::run_fetch, py::arg("inputs"), py::arg("index") = 0)
      .def("step", &PySession::step)
      .def("fetch", &PySession::fetch)
      .def("set_grad_hook", &PySession::set_grad_hook, py::arg("hook"))
      .def("set_step_hook", &PySession::set_step_hook, py::arg("steps"), py::arg("hook"))
      .def("set_allreduce", &PySession::set_allreduce, py::arg("fn"))
      .def_property_readonly("collective_sizes", [](PySession& p) { return p.s().collective_sizes(); })
      // A writable float32 view of the flat gradient block (host-accessible backends; kept alive by the session)
      .def("grad_view",
           [](py::object self) {
             PySession& p = self.cast<PySession&>();
             if (p.s().backend() != "cpu" && p.s().backend() != "reference")
               throw Error("grad_view: the gradient block of a '" + p.s().backend() + "' session is not host memory");
             const size_t n = p.s().num_grads();
             return py::array_t<float>({py::ssize_t(n)}, {py::ssize_t(sizeof(float))}, p.s().grads(), self);
           })
      // [(name, offset, count, step)] per trainable parameter (Session::grad_ready)
      .def("grad_ready",
           [](PySession& p) {
             py::list out;
             for (auto& r : p.s().grad_ready()) out.append(py::make_tuple(r.name, r.offset, r.count, r.step));
             return out;
           })
      .def_property_readonly("feeds", [](PySession& p) { return infos(p.s().feeds()); })
      .def_property_readonly("fetches", [](PySession& p) { return infos(p.s().fetches()); })
      .def_property_readonly("loss", [](PySession& p) { return p.s().loss(); })
      .def_property(
          "lr", [](PySession& p) { return p.s().lr(); },
          [](PySession& p, double lr) {
            py::gil_scoped_release nogil;  // set_lr waits for a run in progress
            p.s().set_lr(lr);
          })
      .def(
          "set_frozen",
          [](PySession& p, const std::vector<std::string>& names) {
            py::gil_scoped_release nogil;  // waits for a run in progress
            p.s().set_frozen(names);
          },
          py::arg("names"), "Train: parameters (store entry names) the update leaves as they are; [] updates all")
      .def_property_readonly("frozen", [](PySession& p) { return p.s().frozen(); })
      .def_property_readonly("num_threads", [](PySession& p) { return p.s().num_threads(); })
      .def_property_readonly("auto_choice",
                             [](PySession& p) -> py::object {
                               const std::string c = p.s().auto_choice();
                               if (c.empty()) return py::none();
                               return py::str(c);
                             })
      .def_property_readonly("batch_pieces",
                             [](PySession& p) -> py::object {
                               const Session::BatchPieces b = p.s().batch_pieces();
                               if (!b.count) return py::none();
                               return py::make_tuple(b.piece, b.count, b.workers);
                             })
      .def_property(
          "step_count", [](PySession& p) { return p.s().step_count(); },
          [](PySession& p, int64_t n) {
            py::gil_scoped_release nogil;
            p.s().set_step_count(n);
          })
      // {name: float32 copy} of the optimizer's flat state blocks (Session::optimizer_state)
      .def("optimizer_state",
           [](PySession& p) {
             py::dict d;
             const size_t n = p.s().num_grads();
             auto hold = lock_without_gil(p.s());  // a consistent snapshot between steps
             for (auto& kv : p.s().optimizer_state()) {
               py::array_t<float> a{py::ssize_t(n)};
               p.s().copy_to_host(a.mutable_data(), kv.second, n * sizeof(float));
               d[py::str(kv.first)] = a;
             }
             return d;
           })
      // Replaces the state blocks; every name must match and every block be finite and of the right size, all
      // checked before any is written.
      .def("load_optimizer_state",
           [](PySession& p, const py::dict& d) {
             auto hold = lock_without_gil(p.s());
             auto blocks = p.s().optimizer_state();
             const size_t n = p.s().num_grads();
             std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> src;
             for (auto& kv : blocks) {
               if (!d.contains(kv.first)) throw Error("optimizer state: missing block '" + kv.first + "'");
               py::object o = d[py::str(kv.first)];
               auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(o);
               if (!a || a.ndim() != 1 || size_t(a.shape(0)) != n)
                 throw Error("optimizer state: block '" + kv.first + "' must be a 1-D array of " + std::to_string(n) +
                             " floats");
               for (size_t i = 0; i < n; ++i)
                 if (!std::isfinite(a.data()[i]))
                   throw Error("optimizer state: block '" + kv.first + "' has a non-finite value at index " +
                               std::to_string(i));
               src.push_back(a);
             }
             for (auto kv : d) {
               std::string k = py::str(kv.first);
               bool known = false;
               for (auto& b : blocks) known = known || b.first == k;
               if (!known) throw Error("optimizer state: unexpected block '" + k + "' for this optimizer");
             }
             for (size_t i = 0; i < blocks.size(); ++i)
               p.s().copy_from_host(blocks[i].second, src[i].data(), n * sizeof(float));
           })
      .def("memory_report",
           [](PySession& p) {
             auto hold = lock_without_gil(p.s());
             return report_dict(p.s().memory_report());
           })
      .def_property_readonly("graph_status", [](PySession& p) { return p.s().graph_status(); })
      .def("synchronize",
           [](PySession& p) {
             py::gil_scoped_release nogil;
             p.s().synchronize();
           })
      .def("schedule", [](PySession& p) { return p.s().schedule(); })
      .def("memory_plan",
           [](PySession& p) {
             auto hold = lock_without_gil(p.s());
             py::list out;
             for (auto& b : p.s().memory_plan()) {
               py::dict d;
               d["value"] = b.value;
               d["node"] = b.node;
               d["op"] = b.op;
               d["kind"] = b.kind;
               d["bytes"] = b.bytes;
               d["offset"] = b.offset;
               d["first"] = b.first;
               d["last"] = b.last;
               out.append(d);
             }
             return out;
           })
      .def_property_readonly("num_forward_steps", [](PySession& p) { return p.s().num_forward_steps(); })
      .def("kernels",
           [](PySession& p) {
             auto hold = lock_without_gil(p.s());
             py::list out;
             for (auto& k : p.s().kernels()) {
               py::dict d;
               d["op"] = k.op;
               d["name"] = k.name;
               d["impl"] = k.impl;
               d["in_layouts"] = k.in_layouts;
               d["out_layouts"] = k.out_layouts;
               d["in_dtype"] = k.in_dtype;
               d["out_dtype"] = k.out_dtype;
               out.append(d);
             }
             return out;
           })
      .def("passes",
           [](PySession& p) {
             py::list out;
             for (auto& r : p.s().passes()) {
               py::dict d;
               d["name"] = r.name;
               d["ran"] = r.ran;
               d["nodes"] = r.nodes;
               d["summary"] = r.summary;
               d["ms"] = r.ms;
               out.append(d);
             }
             return out;
           })
      .def("reference_fallbacks", [](PySession& p) { return p.s().reference_fallbacks(); })
      .def_property_readonly("backend", [](PySession& p) { return p.s().backend(); })
      .def("profile",
           [](PySession& p) {
             auto hold = lock_without_gil(p.s());
             py::list l;
             for (auto& e : p.s().profile()) {
               py::dict d;
               d["op"] = e.op;
               d["name"] = e.name;
               d["total_ms"] = e.total_ms;
               d["calls"] = e.calls;
               d["flops"] = e.flops;
               l.append(d);
             }
             return l;
           })
      .def("reset_profile", [](PySession& p) {
        auto hold = lock_without_gil(p.s());
        p.s().reset_profile();
      });

  m.def("allocation_count", &allocation_count);
  m.def("set_num_threads", &set_num_threads);
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads_auto", &set_num_threads_auto);
  m.def("threads_info", []() {
    const ThreadsInfo t = threads_info();
    py::dict d;
    d["mode"] = t.mode;
    d["max"] = t.max;
    d["current"] = t.current;
    d["cpus"] = t.cpus;
    d["load"] = t.load;
    return d;
  });
  m.def("op_names", &op_names);
  // int8 calibration (cnnnative.quantize, core/quantize.hpp)
  m.def(
      "quant_points",
      [](const Graph& g) {
        std::vector<std::pair<int, int>> r;
        for (const QuantPoint& p : quant_points(g)) r.push_back({p.value, p.tie});
        return r;
      },
      "Values a quantized model of this graph quantizes: [(value id, value whose scale it shares or -1)].");
  m.def(
      "insert_qdq",
      [](const Graph& g, const std::vector<std::tuple<int, double, std::string>>& specs) {
        std::vector<QdqSpec> s;
        for (auto& [v, scale, dt] : specs) s.push_back({v, scale, parse_dtype(dt)});
        return insert_qdq(g, s);
      },
      "The graph with dequantize(quantize(v, scale, dtype)) read in place of each value v: [(id, scale, dtype)].");
  bind_planner(m);
  bind_probe(m);
  bind_pipeline(m);
  bind_model(m);
}
