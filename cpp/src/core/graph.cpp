// Graph building, dtypes/shapes, attributes, the op registry, the parameter store and the allocation
// counter. Shape inference runs in add_node so a bad model fails while it is built, naming the node.
#include <fcntl.h>
#include <omp.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
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
    case DType::s8: return 1;
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
    case DType::s8: return "int8";
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
constexpr int kAuto = -1;
// > 0: fixed by set_num_threads; kAuto: set_num_threads_auto (auto even with OMP_NUM_THREADS); 0: never set (auto
// unless OMP_NUM_THREADS is in the environment)
std::atomic<int> g_threads{0};
// OpenMP's count before anyone set one (OMP_NUM_THREADS, else the CPUs of the affinity mask), read when the library
// loads: omp_get_max_threads() later answers for the calling thread, which set_num_threads may have changed.
const int g_default_threads = std::max(1, omp_get_max_threads());
const bool g_env_threads = std::getenv("OMP_NUM_THREADS") != nullptr;

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}
int online_cpus() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? int(n) : usable_cpus();
}

// A small /proc file into buf (NUL-terminated), without allocating; false when it cannot be read.
bool read_small_file(const char* path, char* buf, size_t cap) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, buf, cap - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  return true;
}
// Runnable threads on the machine now, the caller included (/proc/loadavg: "1.0 0.9 0.8 running/total last");
// -1 without /proc. CNNNATIVE_LOADAVG_FILE names another file in that format: tests/test_thread_governor.py plays
// a load with it on any machine, a busy one included.
int runnable_threads() {
  char b[256];
  double l1, l5, l15;
  int running = 0, total = 0;
  const char* file = std::getenv("CNNNATIVE_LOADAVG_FILE");
  if (!read_small_file(file && *file ? file : "/proc/loadavg", b, sizeof b)) return -1;
  if (std::sscanf(b, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total) != 5 || running < 0) return -1;
  return running;
}
// This process's threads that are running or runnable now (state R), the caller included: OpenMP workers still
// spinning after the last parallel region, other threads of the application. The directory is read with
// getdents64 into a stack buffer (opendir would allocate on every sample).
int own_runnable_threads() {
  const int fd = ::open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 1;
  int n = 0;
  alignas(8) char dents[4096];
  char path[64], b[512];
  for (;;) {
    const long got = ::syscall(SYS_getdents64, fd, dents, sizeof dents);
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[]
      unsigned short reclen;
      std::memcpy(&reclen, dents + off + 16, sizeof reclen);
      const char* name = dents + off + 19;
      off += reclen;
      if (reclen == 0) break;
      if (name[0] < '0' || name[0] > '9') continue;
      std::snprintf(path, sizeof path, "/proc/self/task/%s/stat", name);
      if (!read_small_file(path, b, sizeof b)) continue;  // the thread ended meanwhile
      const char* p = std::strrchr(b, ')');               // "tid (comm) S ...": comm may hold anything
      if (p && p[1] == ' ' && p[2] == 'R') ++n;
    }
  }
  ::close(fd);
  return std::max(n, 1);
}

struct Governor {
  std::mutex mu;
  bool sampled = false, no_proc = false;
  std::chrono::steady_clock::time_point last, since;
  double load = 0;  // other processes' runnable threads on our CPUs, smoothed
  int cpus = 1;     // CPUs this process may run on, at the last sample
  int wanted = 0;   // 0: none yet
};
Governor& governor() {
  static Governor g;
  return g;
}
constexpr double kSampleEveryS = 0.01, kSmoothingS = 0.4, kHysteresis = 0.6;

// Auto mode's count for a machine with `max` threads wanted at most; samples the load when the last sample is old.
ThreadChoice auto_choice(int max) {
  Governor& G = governor();
  std::lock_guard<std::mutex> hold(G.mu);
  const auto now = std::chrono::steady_clock::now();
  const double age = G.sampled ? std::chrono::duration<double>(now - G.last).count() : 1e9;
  if (age >= kSampleEveryS) {
    const int running = runnable_threads();
    G.no_proc = running < 0;
    if (!G.no_proc) {
      // the machine's other runnable threads, the share of them that competes for the CPUs we may use
      G.cpus = usable_cpus();
      const int own = running > 1 ? own_runnable_threads() : 1;
      const double others = std::max(0, running - own) * std::min(1.0, double(G.cpus) / online_cpus());
      G.load = G.sampled ? G.load + (1.0 - std::exp(-age / kSmoothingS)) * (others - G.load) : others;
      G.sampled = true;
      G.last = now;
    }
  }
  int w = max;
  if (G.sampled && !G.no_proc) {
    const double free_cpus = G.cpus - G.load;
    int cur = G.wanted > 0 ? G.wanted : max;
    if (std::fabs(free_cpus - cur) >= kHysteresis) cur = int(std::lround(free_cpus));
    w = std::clamp(cur, 1, max);
  }
  if (w != G.wanted) {
    G.wanted = w;
    G.since = now;
  }
  return {w, true, std::chrono::duration<double>(now - G.since).count()};
}
}  // namespace

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
void set_num_threads_auto() { g_threads.store(kAuto, std::memory_order_relaxed); }
int get_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : g_default_threads;
}
ThreadChoice choose_num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0) return {n, false, 0.0};
  if (n == 0 && g_env_threads) return {g_default_threads, false, 0.0};
  return auto_choice(g_default_threads);
}
void use_num_threads(int n) {
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}
int apply_num_threads() {
  const int n = choose_num_threads().count;
  use_num_threads(n);
  return n;
}
ThreadsInfo threads_info() {
  const int n = g_threads.load(std::memory_order_relaxed);
  ThreadsInfo t;
  t.mode = n > 0 ? "fixed" : n == 0 && g_env_threads ? "environment" : "auto";
  t.max = get_num_threads();
  t.cpus = usable_cpus();
  t.current = choose_num_threads().count;
  if (t.mode == "auto") {
    Governor& G = governor();
    std::lock_guard<std::mutex> hold(G.mu);
    t.load = G.no_proc ? -1.0 : G.load;
  }
  return t;
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
