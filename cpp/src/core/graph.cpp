// Graph building, dtypes/shapes, attributes, the op registry, the parameter store and the allocation
// counter. Shape inference runs in add_node so a bad model fails while it is built, naming the node.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/alloc.hpp"
#include "core/op.hpp"
#include "core/threads.hpp"

namespace cnn {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::u8: return 1;
    case DType::bf16: return 2;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}
bool is_float(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}
std::string descs_str(const std::vector<TensorDesc>& d) {
  std::ostringstream o;
  for (size_t i = 0; i < d.size(); ++i) o << (i ? ", " : "") << shape_str(d[i].shape) << " " << dtype_name(d[i].dtype);
  return o.str();
}

int64_t Attrs::i(const std::string& k, int64_t dflt) const {
  auto it = ints.find(k);
  return it == ints.end() || it->second.empty() ? dflt : it->second[0];
}
int64_t Attrs::i(const std::string& k) const {
  auto it = ints.find(k);
  if (it == ints.end() || it->second.empty()) throw Error("missing integer attribute '" + k + "'");
  return it->second[0];
}
std::vector<int64_t> Attrs::is(const std::string& k, std::vector<int64_t> dflt) const {
  auto it = ints.find(k);
  return it == ints.end() ? dflt : it->second;
}
double Attrs::f(const std::string& k, double dflt) const {
  auto it = floats.find(k);
  return it == floats.end() ? dflt : it->second;
}

// ---- registry ----
namespace {
std::map<std::string, OpSchema>& ops() {
  static std::map<std::string, OpSchema> m;
  return m;
}
}  // namespace

void register_op(OpSchema s) { ops()[s.name] = std::move(s); }
bool has_op(const std::string& name) { return ops().count(name) > 0; }
const OpSchema& get_op(const std::string& name) {
  auto it = ops().find(name);
  if (it == ops().end()) throw Error("unknown op '" + name + "'");
  return it->second;
}
std::vector<std::string> op_names() {
  std::vector<std::string> v;
  for (auto& kv : ops()) v.push_back(kv.first);
  return v;
}

void op_error(const Node& n, const std::string& msg) {
  throw Error("op '" + n.op + "' (node '" + n.name + "'): " + msg);
}

// ---- graph ----
int Graph::add_input(const std::string& name, const Shape& shape, DType dtype) {
  for (auto d : shape)
    if (d <= 0) throw Error("input '" + name + "': every dimension must be positive, got " + shape_str(shape));
  values.push_back(Value{name, TensorDesc{shape, dtype}, ValueKind::Input, -1});
  inputs.push_back(int(values.size()) - 1);
  return inputs.back();
}

int Graph::add_param(const std::string& name, const Shape& shape, bool trainable) {
  for (auto d : shape)
    if (d <= 0) throw Error("parameter '" + name + "': every dimension must be positive, got " + shape_str(shape));
  values.push_back(Value{name, TensorDesc{shape, DType::f32}, trainable ? ValueKind::Param : ValueKind::Buffer, -1});
  params.push_back(int(values.size()) - 1);
  return params.back();
}

std::vector<int> Graph::add_node(const std::string& op, const std::vector<int>& ins, const Attrs& attrs,
                                 const std::string& name) {
  const OpSchema& s = get_op(op);
  Node n{op, name.empty() ? op + "_" + std::to_string(nodes.size()) : name, attrs, ins, {}};
  std::vector<TensorDesc> in;
  for (int v : ins) {
    if (v < 0 || v >= int(values.size())) op_error(n, "input value id " + std::to_string(v) + " does not exist");
    in.push_back(values[v].desc);
  }
  std::vector<TensorDesc> out = s.infer(n, in);
  for (auto& d : out)
    for (auto x : d.shape)
      if (x <= 0)
        op_error(
            n, "output shape " + shape_str(d.shape) + " has a non-positive dimension (inputs: " + descs_str(in) + ")");
  int idx = int(nodes.size());
  for (size_t k = 0; k < out.size(); ++k) {
    values.push_back(Value{n.name + (k ? ":" + std::to_string(k) : ""), out[k], ValueKind::Intermediate, idx});
    n.outputs.push_back(int(values.size()) - 1);
  }
  nodes.push_back(std::move(n));
  return nodes.back().outputs;
}

void Graph::set_outputs(const std::vector<int>& outs) {
  for (int v : outs)
    if (v < 0 || v >= int(values.size())) throw Error("output value id " + std::to_string(v) + " does not exist");
  outputs = outs;
}

std::vector<int> GradCtx::emit(const std::string& op, const std::vector<int>& inputs, const Attrs& attrs,
                               const std::string& suffix) {
  std::string name = fwd_.name + "/" + suffix;
  return g_.add_node(op, inputs, attrs, name);
}

// ---- allocation ----
namespace {
std::atomic<uint64_t> g_allocs{0};
}
void* counted_alloc(size_t bytes, size_t alignment) {
  size_t n = (std::max<size_t>(bytes, 1) + alignment - 1) / alignment * alignment;
  void* p = std::aligned_alloc(alignment, n);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, n);
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return p;
}
void counted_free(void* p) { std::free(p); }
uint64_t allocation_count() { return g_allocs.load(); }
void count_allocation() { g_allocs++; }

// ---- threads (core/threads.hpp) ----
namespace {
std::atomic<int> g_threads{0};  // 0: never set, OpenMP's default
}
void set_num_threads(int n) {
  // libgomp itself crashes somewhere past ~50,000 threads; no machine has use for more than a few per core.
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  const int limit = std::max(1024, 4 * hw);
  if (n < 1 || n > limit)
    throw Error("set_num_threads: n must be between 1 and " + std::to_string(limit) + " (this machine has " +
                std::to_string(hw) + " hardware threads), got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);
}
int get_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}
int apply_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
  return omp_get_max_threads();
}

// ---- parameter store ----
ParamStore::ParamStore(const std::vector<Entry>& entries) : entries_(entries) {
  for (auto& e : entries_) {
    if (index_.count(e.name)) throw Error("parameter '" + e.name + "' is declared twice");
    for (auto d : e.shape)
      if (d <= 0) throw Error("parameter '" + e.name + "' has a non-positive dimension " + shape_str(e.shape));
    size_t& n = e.trainable ? n_params_ : n_buffers_;
    e.offset = n;
    n += size_t(numel(e.shape));
    n = (n + 15) / 16 * 16;  // keep every entry 64-byte aligned
    index_[e.name] = &e - entries_.data();
  }
  params_ = static_cast<float*>(counted_alloc(std::max<size_t>(n_params_, 1) * 4));
  try {
    buffers_ = static_cast<float*>(counted_alloc(std::max<size_t>(n_buffers_, 1) * 4));
  } catch (...) {
    counted_free(params_);
    throw;
  }
}
ParamStore::~ParamStore() {
  counted_free(params_);
  counted_free(buffers_);
}
const ParamStore::Entry& ParamStore::find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("parameter '" + name + "' is not in the model's parameter store");
  return entries_[it->second];
}

}  // namespace cnn
