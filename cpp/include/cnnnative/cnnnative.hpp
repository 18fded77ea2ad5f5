// cnnnative public API. Owns: dtypes, shapes, the error type, the graph builder, the parameter store
// and compiled sessions. Promises: no oneDNN or CUDA types here, so embedders need neither.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace cnn {

enum class DType : int { f32 = 0, f64 = 1, i32 = 2, u8 = 3, bf16 = 4, s8 = 5 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);
bool is_float(DType t);

using Shape = std::vector<int64_t>;
int64_t numel(const Shape& s);
std::string shape_str(const Shape& s);

// The one exception type of the library; its text names the op, the node and the shapes involved.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorDesc {
  Shape shape;
  DType dtype = DType::f32;
  size_t bytes() const { return size_t(numel(shape)) * dtype_size(dtype); }
};

// Node attributes: integer lists and floats, by name.
struct Attrs {
  std::map<std::string, std::vector<int64_t>> ints;
  std::map<std::string, double> floats;
  int64_t i(const std::string& k, int64_t dflt) const;
  int64_t i(const std::string& k) const;  // throws when missing
  std::vector<int64_t> is(const std::string& k, std::vector<int64_t> dflt) const;
  double f(const std::string& k, double dflt) const;
  bool has(const std::string& k) const { return ints.count(k) || floats.count(k); }
};

enum class ValueKind : int { Input = 0, Param = 1, Buffer = 2, Intermediate = 3 };

struct Value {
  std::string name;
  TensorDesc desc;
  ValueKind kind = ValueKind::Intermediate;
  int producer = -1;  // node index, -1 for inputs/params/buffers
};

struct Node {
  std::string op;
  std::string name;
  Attrs attrs;
  std::vector<int> inputs;
  std::vector<int> outputs;
};

// A dataflow graph of values and nodes in topological order (nodes only consume existing values).
// Shape inference runs as each node is added, so errors surface while building, naming the node.
class Graph {
 public:
  int add_input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  // A named parameter (trainable) or buffer (e.g. BN running stats) living in a ParamStore.
  int add_param(const std::string& name, const Shape& shape, bool trainable = true);
  std::vector<int> add_node(const std::string& op, const std::vector<int>& inputs, const Attrs& attrs,
                            const std::string& name);
  void set_outputs(const std::vector<int>& outs);

  std::vector<Value> values;
  std::vector<Node> nodes;
  std::vector<int> inputs;
  std::vector<int> outputs;
  std::vector<int> params;  // params and buffers, in creation order
};

// Parameters and buffers of one model: two flat float blocks allocated once, shared by every session
// compiled from the model. Python sees each entry as a numpy view.
//
// Version: a counter that every writer bumps (touch()) after changing any parameter or buffer, so inference
// sessions can keep weights prepared from it (reordered into oneDNN's layout, BatchNorm folded in) and redo
// them only when version() moved. The core bumps it itself in every run of a train/grad session (optimizer
// update, BN running statistics); the Python layer bumps it on every write through the arrays it hands out
// (docs/ARCHITECTURE.md, "Prepared weights"). Code that writes through params()/buffers()/data() directly
// must call touch() afterwards, before the next run of an inference session on this store.
class ParamStore {
 public:
  struct Entry {
    std::string name;
    Shape shape;
    bool trainable;
    size_t offset;  // in floats, inside params() (trainable) or buffers()
  };
  explicit ParamStore(const std::vector<Entry>& entries);  // offsets are computed here
  ~ParamStore();
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry& find(const std::string& name) const;  // throws Error when missing
  float* params() { return params_; }
  float* buffers() { return buffers_; }
  size_t num_params() const { return n_params_; }
  size_t num_buffers() const { return n_buffers_; }
  float* data(const Entry& e) { return (e.trainable ? params_ : buffers_) + e.offset; }
  uint64_t version() const { return version_.load(std::memory_order_acquire); }  // starts at 1
  void touch() { version_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  float* params_ = nullptr;
  float* buffers_ = nullptr;
  size_t n_params_ = 0, n_buffers_ = 0;
  std::atomic<uint64_t> version_{1};
};

enum class Mode : int { Infer = 0, Train = 1, Grad = 2 };

struct OptimConfig {
  std::string kind = "sgd";  // sgd | adam | adamw
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool amsgrad = false;
};

// Whether this CPU has AVX512-BF16 (CompileOptions::activations = bf16 needs it).
bool cpu_has_avx512_bf16();

struct CompileOptions {
  Mode mode = Mode::Infer;
  std::string backend = "cpu";  // cpu (oneDNN + native kernels) | reference (naive loops)
  DType compute = DType::f32;   // f64 only with the reference backend
  int loss = -1;                // Train: scalar value to minimise
  std::vector<int> grad_of;     // Grad: values whose gradients are fed (seeds)
  std::vector<int> wrt;         // Grad: inputs whose gradients are fetched (params always are)
  OptimConfig optim;
  bool plan_memory = true;  // false: no reuse (every buffer its own range), for comparison
  uint64_t seed = 0;        // dropout and other random ops
  // Graph optimizations of the cpu backend. Infer mode: conv2d [-> batch_norm(eval)] [-> add] [-> relu] chains
  // and linear -> relu run as one fused kernel (oneDNN post-ops). false: the graph runs as built, for comparison.
  bool optimize = true;
  // Activation layouts between layout-capable cpu kernels (the reference backend is always plain):
  // "auto" = "blocked" (nChw16c, or nChw8c without AVX-512; C padded to the block; oneDNN's own preference),
  // "nChw16c" / "nChw8c" (a block size forced), "nhwc", or "plain" (NCHW everywhere, no reorders).
  // Graph inputs and outputs are plain.
  // "auto" keeps Grad-mode sessions (gradient checks) plain; an explicit layout applies to them too.
  std::string layout = "auto";
  // Train/Grad: forward activations the backward pass recomputes instead of keeping (core/recompute.hpp):
  // "none", "cheap" (BN/ReLU/add outputs, recomputed from kept conv outputs), "lean" (cheap, plus convolutions
  // and pooling of few flops per output byte and every other multi-reader value such as ResNet block outputs;
  // "lean:<flops per byte>" sets the threshold) or "segments" (only segment boundaries such as ResNet block
  // outputs are kept; one extra forward over the rest). "auto": "lean" in Train ("cheap" where that plans
  // the smaller arena), "none" in Grad.
  std::string recompute = "auto";
  // Train: > 0 picks the recompute choice (recompute_ladder(): none, cheap, lean at rising thresholds,
  // segments) with the least recomputation whose arena + parameters, buffers, gradients and optimizer state fit
  // in this many bytes; none fits: an Error naming the smallest reachable size. Replaces `recompute`.
  size_t memory_budget = 0;
  // cpu backend: bf16 stores activations (and in training their gradients) between bf16-capable kernels as
  // bfloat16 in blocked layouts (oneDNN accumulates in f32); inputs, outputs, parameters, their gradients and
  // optimizer state stay float32 (mixed-precision training with float32 master weights). Needs AVX512-BF16.
  DType activations = DType::f32;
  // Infer mode, cpu backend: kernels keep weights prepared (reordered into the primitive's layout, BatchNorm
  // folded) between runs and rebuild them when the ParamStore's version moves. false: prepare them on every run
  // (the behaviour before prepared weights; for comparison and tests).
  bool cache_weights = true;
  // cpu backend, float32: 3x3 stride-1 convolutions between 64+-channel nChw16c activations (forward and
  // backward-data) run as Winograd F(4x4, 3x3) (cpu/winograd.hpp), about half the time of the direct
  // convolution at relative differences ~1e-5. false: always the direct convolution.
  bool winograd = true;
  // Training results independent of the thread count: every kernel whose reduction order would depend on how
  // many threads run it (weight gradients, batch-norm statistics, Winograd's tile sums) takes an order fixed by
  // the problem alone (cn.use_deterministic_algorithms; docs/ARCHITECTURE.md, "Determinism"). Results are
  // bitwise reproducible for the same seed and thread count either way.
  bool deterministic = false;
  // Infer mode, cpu backend, auto thread count: on a loaded machine a run may split its batch into pieces that
  // single-threaded workers take as they become free (Session::batch_pieces), when the graph treats every sample on
  // its own (its values keep the batch as their first dimension; no op reduces, concatenates or permutes along it)
  // and that is faster. Train mode, cpu backend, float32, 2+ threads: a small network (at most 2^20 parameters,
  // a 64 MiB arena) whose graph treats every sample on its own up to a mean loss (no batch norm or dropout in
  // training mode) runs each step's forward and backward passes as one equal piece of the batch per thread (at
  // least 8 samples each), each on one thread with no barrier between nodes, and averages the pieces' gradients
  // before the update (data parallelism inside the process). Results equal a whole-batch run's to float rounding.
  // false: always the whole batch. Never in deterministic mode.
  bool batch_pieces = true;
  // Memory budget: compile refuses (Error naming the sizes and the largest planned values) a session whose
  // arena + scratch + prepared weights (+ gradients and optimizer state in training) exceed it, before
  // allocating. 0 = the machine's physical memory.
  size_t max_arena_bytes = 0;
  // A node with no kernel on a backend that has fast kernels runs the op's naive reference kernel; it is listed
  // by Session::reference_fallbacks() (Python warns once per compile). strict: refuse to compile instead.
  bool strict = false;
  // Device backends (cuda): float32 convolutions and matrix products may use TF32 tensor-core math (10-bit
  // mantissa products, float32 accumulation), as PyTorch's cudnn.allow_tf32 default; false: full float32.
  bool tf32 = true;
  // Device backends whose streams can record work (CUDA graphs): after the first run, each run's kernels are
  // recorded once and replayed. false: every kernel is launched on every run (eager).
  bool graphs = true;
  // A folder to write the graph after each compile pass into (<NN>-<pass>.txt, and plan.txt for the final
  // plan); empty: the CNNNATIVE_DUMP_PASSES environment variable, if set.
  std::string dump_passes;
};

struct MemoryReport {
  size_t arena_bytes = 0, lower_bound_bytes = 0, naive_bytes = 0;
  size_t param_bytes = 0, grad_bytes = 0, optimizer_state_bytes = 0, buffer_bytes = 0, scratch_bytes = 0;
  size_t prepared_bytes = 0;  // inference: weights kept prepared (reordered, BN folded) by the kernels
  // batch pieces (CompileOptions::batch_pieces), once a run made them: the workers' arenas, scratch, prepared
  // weights and (training) gradient blocks, and the pieces' input and output copies
  size_t pieces_bytes = 0;
  size_t num_planned = 0, num_inplace = 0;
  size_t num_recomputed = 0;         // nodes the recompute option added to the backward pass
  std::string recompute;             // the recompute choice the plan was made with ("none", "lean", ...)
  size_t num_relu_pool_swapped = 0;  // relu -> max_pool2d pairs run as max_pool2d -> relu (training)
  size_t persistent_bytes() const {
    return param_bytes + grad_bytes + optimizer_state_bytes + buffer_bytes + prepared_bytes;
  }
};

struct FeedInfo {
  std::string name;
  TensorDesc desc;
};

// Time spent per schedule step since the last reset (the last entry is the optimizer update).
struct NodeProfile {
  std::string op, name;
  double total_ms = 0;
  int64_t calls = 0;
  double flops = 0;  // per call; 0 when the op does not count them
};

// What runs one schedule step (Session::kernels()).
struct KernelInfo {
  std::string op, name;
  std::string impl;  // "onednn:<primitive> <implementation>", "winograd", "native", "reference", ...
  std::vector<std::string> in_layouts, out_layouts;  // the layouts the kernel reads and writes
  std::string in_dtype, out_dtype;                   // the stored dtype of input 0 / output 0 ("" when none)
};

// One pass of the compile pipeline as it ran for a session (Session::passes()).
struct PassInfo {
  std::string name;
  bool ran = false;     // false: the pass does not apply to this session
  int nodes = 0;        // graph nodes after the pass
  std::string summary;  // what it did
  double ms = 0;
};

// One block of the session's memory plan (Session::memory_plan()): an arena buffer (a planned value and the values
// written in place over it) or a kernel's workspace at one step.
struct PlannedBuffer {
  std::string value;  // the planned value (arena), or "" (workspace)
  std::string node;   // the node that produces it (arena) or runs with it (workspace)
  std::string op;
  // "activation" (produced by the forward pass, or a forward value re-laid out for a backward kernel), "recomputed"
  // (a forward value produced again in the backward pass), "gradient" (a gradient the backward pass produces),
  // "workspace" (a kernel's scratch, in the scratch block)
  std::string kind;
  size_t bytes = 0;         // as stored, before alignment
  size_t offset = 0;        // in the arena, or in the scratch block (always 0: one step uses it at a time)
  int first = 0, last = 0;  // schedule steps it is live on, inclusive
};

class SessionImpl;

// A graph compiled for one input shape and mode: kernels created once, one arena allocated once.
// run()/step() perform no allocation of their own, except a run for a thread count the session has no kernels for
// yet (see num_threads()).
//
// Threads: a session may be used from several threads; its calls are serialized by the session's own lock
// (run() takes it; so do set_lr, set_step_count). Outputs (fetch(), loss()) belong to the last run, so a caller
// that shares a session reads them while holding lock() across run() and the reads. Different sessions run in
// parallel, also when they share a ParamStore (inference sessions only read it; a training session writing it
// while another session runs is a data race, as in any framework).
class Session {
 public:
  Session(const Graph& g, std::shared_ptr<ParamStore> store, const CompileOptions& opt);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<FeedInfo>& feeds() const;    // graph inputs, then (Grad) one seed per grad_of
  const std::vector<FeedInfo>& fetches() const;  // graph outputs, then (Grad) grads of wrt, then param grads
  // Runs the whole schedule on caller buffers (one per feed, dtype as feeds() says; f32 values are f64
  // in an f64 session). Train: forward, checks the loss is finite, backward, optimizer update.
  void run(const std::vector<const void*>& feeds);
  // The session's lock (recursive: run() may be called while holding it).
  std::unique_lock<std::recursive_mutex> lock() const;
  const void* fetch(size_t i) const;  // valid until the next run
  double loss() const;                // Train: the last loss
  void set_lr(double lr);
  double lr() const;
  // Train: parameters the update leaves as they are (their gradients are still computed), by store entry name; the
  // others are updated as before. An empty list updates every parameter (the default). Throws Error for a name
  // that is not a trainable parameter of the session's store, and outside training.
  void set_frozen(const std::vector<std::string>& names);
  std::vector<std::string> frozen() const;
  int64_t step_count() const;
  // OpenMP threads the last run used (set_num_threads, from any thread, or the automatic count); 0 before any. The
  // session holds kernels for at most two counts (oneDNN fixes a primitive's threads when it is created): the one
  // it was compiled with and the last other one; a run for a new count creates its kernels (and allocates) once.
  int num_threads() const;
  // An inference run in auto thread mode on a loaded machine may run its batch as pieces: one worker per thread,
  // each with kernels for one thread, takes the next piece of the batch as soon as it is free, so a thread whose CPU
  // another process shares does fewer pieces instead of holding back every parallel region (docs/ARCHITECTURE.md,
  // "Threads"). The session times such runs against its whole-batch runs and keeps what is faster. What the last
  // run did: pieces of `piece` samples, `count` of them, over `workers` threads; all 0 for a whole-batch run. A
  // training step in pieces (CompileOptions::batch_pieces) reports count == workers.
  struct BatchPieces {
    int64_t piece = 0, count = 0;
    int workers = 0;
  };
  BatchPieces batch_pieces() const;
  // Auto thread mode on a loaded machine: what the session's trials currently choose for its runs between probes
  // (docs/ARCHITECTURE.md, "Trials under load"): "pieces" (the batch in pieces, see batch_pieces), "all" (whole
  // batches on every thread), "more" (inference: whole batches on one thread more than the CPUs), "fewer" (whole
  // batches on the governor's reduced count); "" when no trials run (a quiet machine, a fixed thread count).
  std::string auto_choice() const;
  // Resume: the number of completed runs (Adam's bias correction and the dropout streams depend on it).
  void set_step_count(int64_t steps);
  // Train: the optimizer's state blocks by name ("momentum_buffer" for SGD with momentum; "exp_avg",
  // "exp_avg_sq" and, with amsgrad, "max_exp_avg_sq" for Adam/AdamW), each num_grads() floats in the order of
  // the parameter block. Empty for inference sessions and plain SGD. Like grads(), these are the backend's
  // memory: host memory for the cpu and reference backends, device memory for a backend the host cannot address.
  std::vector<std::pair<std::string, float*>> optimizer_state();
  MemoryReport memory_report() const;
  // Every arena buffer with its offset and lifetime, then every kernel workspace (steps with scratch > 0): what
  // the planner decided, for pictures and inspection. The arena's size is memory_report().arena_bytes.
  std::vector<PlannedBuffer> memory_plan() const;
  int num_forward_steps() const;              // the schedule's first steps that are the forward pass
  std::vector<std::string> schedule() const;  // "op name" per step, for inspection
  std::vector<KernelInfo> kernels() const;    // per step: what implements it and in which layouts
  std::vector<PassInfo> passes() const;       // the compile pipeline as it ran
  // "op name" of the steps that run an op's reference kernel on a backend that has fast kernels.
  std::vector<std::string> reference_fallbacks() const;
  const std::string& backend() const;
  std::vector<NodeProfile> profile() const;
  void reset_profile();
  float* grads();  // Train/Grad: the flat gradient block (params order)
  // Train: called by run() after the backward pass and before the optimizer update, with the flat gradient block
  // (grads(), num_grads() floats, in the backend's memory) and the step's loss. It may rewrite the gradients in
  // place (data-parallel training all-reduces them here) and returns the loss the step reports (loss()). An
  // exception it throws fails the step like a kernel error: parameters, optimizer state and running statistics
  // stay as they were before the step. An empty hook (the default) removes it.
  using GradHook = std::function<double(float* grads, size_t n, double loss)>;
  void set_grad_hook(GradHook hook);
  // Train: where each trainable parameter's gradient becomes final during the backward pass: per parameter with a
  // slot in the gradient block (params order), its name, offset and count (floats) in grads(), and the schedule
  // step after which no later step writes it (-1: nothing in this graph writes it; it stays zero). Data-parallel
  // training starts a bucket's exchange as soon as its last gradient is final (set_step_hook).
  struct GradReady {
    std::string name;
    size_t offset = 0, count = 0;
    int step = -1;
  };
  std::vector<GradReady> grad_ready() const;
  // Train: hook(step) is called by run() right after each backward schedule step listed in `steps` ran (steps in
  // [num_forward_steps(), schedule().size())), in schedule order, before the grad hook and the update; the
  // gradients grad_ready() names final at that step may be read from another thread from then on until the grad
  // hook returns. An exception it throws fails the step like a kernel error. An empty hook removes it.
  using StepHook = std::function<void(int step)>;
  void set_step_hook(std::vector<int> steps, StepHook hook);
  // Train: the job-wide sum kernels use to synchronize statistics across processes (batch_norm nodes with
  // sync=1: SyncBatchNorm): allreduce(data, n) sums n doubles in place over every process. Called from run(),
  // outside parallel regions; an exception it throws fails the step. Empty (the default): each process
  // normalizes with its own batch. collective_sizes(): the n of every call one training step makes, in order
  // (per batch_norm node with sync=1: C + 1 then C; per batch_norm_grad: 2C + 1), the same on every process that
  // compiled the same model: a process that failed mid-step makes the remaining calls so no peer waits forever.
  using Allreduce = std::function<void(double* data, size_t n)>;
  void set_allreduce(Allreduce fn);
  std::vector<size_t> collective_sizes() const;
  // Copies between the session's backend memory (grads(), optimizer_state()) and the host: what callers use for
  // a backend whose memory the host cannot address (a memcpy on the cpu and reference backends).
  void copy_to_host(void* host_dst, const void* src, size_t bytes) const;
  void copy_from_host(void* dst, const void* host_src, size_t bytes);
  // Waits until the work the session queued on its backend's stream has finished (a no-op on host backends:
  // run() returns when its work is done there; a device backend's run() also returns only after its fetches
  // reached the host).
  void synchronize() const;
  // Graph recording (CompileOptions::graphs on a backend whose streams record): "off", "recorded from the second
  // run", "replayed", or "eager (recording failed: why)".
  std::string graph_status() const;
  size_t num_grads() const;

 private:
  std::unique_ptr<SessionImpl> impl_;
};

// Number of buffers the core has allocated since the process started (arena, parameters, gradients,
// optimizer state, scratch). A step after the first must leave it unchanged.
uint64_t allocation_count();
// The OpenMP thread count of every later compile and run, from any thread of the process (1 <= n <=
// max(1024, 4 x hardware threads)); it turns the automatic count off. get_num_threads: that count; in auto mode the
// most threads a run uses (OpenMP's default: the CPUs this process may use).
void set_num_threads(int n);
int get_num_threads();
// Auto mode, the default unless set_num_threads was called or OMP_NUM_THREADS is in the environment: every run
// uses as many threads as there are CPUs that other processes leave free (runnable threads on the machine, smoothed
// over ~0.4 s), between 1 and get_num_threads(). A session switches to kernels created for a new count once it has
// held ~0.5 s (docs/ARCHITECTURE.md, "Threads"); while that count is below get_num_threads(), a session also times
// a few of its runs at get_num_threads() now and then and keeps whichever count ran faster. Runs are then bitwise
// reproducible only with deterministic kernels (CompileOptions::deterministic); a fixed count makes them so for the
// same count.
void set_num_threads_auto();
struct ThreadsInfo {
  std::string mode;  // "auto", "fixed" (set_num_threads) or "environment" (OMP_NUM_THREADS, never set)
  int max = 1;       // get_num_threads()
  int current = 1;   // the count a run started now would use (auto: the governor's wanted count; a session under
                     // load may run get_num_threads() instead, when its own runs were faster with it)
  int cpus = 1;      // CPUs this process may run on (its affinity mask)
  double load = 0;   // auto: other processes' runnable threads on those CPUs (smoothed); -1: no /proc, no auto
};
ThreadsInfo threads_info();

}  // namespace cnn
