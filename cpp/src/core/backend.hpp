// The backend interface: everything device-specific that the compile pipeline and the session ask for.
//
// A backend is a registered object (register_backend) plus the kernels registered under its name. It owns:
//   - the kernel registry and per-kernel capabilities: a factory per op, the layout rule (which activation
//     layouts the kernel takes and gives; none: plain only), whether it takes bfloat16 activations, whether its
//     output may share its input's buffer;
//   - capabilities of the backend as a whole: the compute dtypes it runs, whether its activations have layouts
//     (the layout pass runs only then), whether it has fast kernels (then a node that falls back to the op's
//     reference kernel is reported: Session::kernels(), a warning, or an error with CompileOptions::strict);
//   - memory: allocation of every buffer a session owns (arena, scratch, prepared weights, gradients,
//     optimizer state), copies in and out and within, synchronization; a backend whose memory the host cannot
//     address (host_accessible() false) gets its inputs copied in, its fetches copied out, and mirrors of the
//     parameter store refreshed whenever the store's version moves;
//   - the optimizer update over the flat parameter / gradient / state blocks, and the reductions the session's
//     divergence guard needs (max |x|, first non-finite element, dry runs of an update).
// `cpu` (cpu/backend.cpp: oneDNN and native AVX-512/AVX2 kernels, host memory) and `reference`
// (ref/backend.cpp: every op's naive reference kernel, float32 and float64) are the implementations.
// Adding one (e.g. `cuda`) is a new folder: a Backend subclass registered with BackendRegistrar and kernels
// registered with KernelRegistrar under its name; nothing in core/ names a backend.
//
// Files under a backend's folder include this header, core/op.hpp's types and their own headers, nothing else
// of the core.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/alloc.hpp"
#include "core/op.hpp"
#include "core/optim_config.hpp"

namespace cnn {

// ---- activation layouts: the policy a session asks for and the rules kernels declare ----
// The session's choice of activation layout (CompileOptions::layout). `block` is 16 (AVX-512) or 8.
struct LayoutPolicy {
  enum Kind { plain, nhwc, blocked } kind = plain;
  int block = 16;
  // "auto": the layouts are ours to choose (kernels may pick others than the policy's, e.g. plain for the native
  // small-channel convolutions); an explicit layout is kept wherever a kernel runs in it.
  bool automatic = false;
  // bfloat16 activations (inference, CompileOptions::activations): every float value stored in a blocked
  // layout is bf16, every other value (plain graph inputs/outputs, parameters, non-4-D tensors) float32, so a
  // reorder into or out of a blocked layout also converts. Ops keep blocked layouts only if they are registered
  // bf16-capable (register_bf16_op); the others are plain-only in such a session.
  bool bf16 = false;
  // The dtype a float value has when stored in layout l (`compute` for non-bf16 sessions).
  DType dtype_in(Layout l, DType compute) const { return bf16 && is_blocked(l) ? DType::bf16 : compute; }
  static bool is_blocked(Layout l) { return l == Layout::nChw16c || l == Layout::nChw8c; }
  // layouts_alias, and in a bf16 session never between a blocked (bf16) and another (f32) layout.
  bool aliases(Layout a, Layout b, const Shape& s) const;
  // "auto" and "blocked" (nChw16c with AVX-512, nChw8c otherwise) | "nChw16c" | "nChw8c" | "nhwc" | "plain";
  // throws Error on anything else.
  static LayoutPolicy parse(const std::string& s);
  // The layout the policy gives an activation: plain unless 4-D.
  Layout act(const TensorDesc& d) const;
  Layout blocked_layout() const { return block == 8 ? Layout::nChw8c : Layout::nChw16c; }
};

// What a layout rule is asked for one node.
struct LayoutQuery {
  const Node& node;
  const std::vector<TensorDesc>& in;
  const std::vector<TensorDesc>& out;
  const std::vector<Layout>& in_layout;  // the layouts the inputs have now
  const LayoutPolicy& policy;
  bool training;  // the graph has backward nodes (rules may check both directions)
};

// The rule's answer: the layout wanted for each input (a reorder is inserted where it differs from the
// current one) and the layout of each output. Outputs that are not 4-D must be plain.
struct LayoutChoice {
  std::vector<Layout> in, out;
};
using LayoutRule = std::function<LayoutChoice(const LayoutQuery&)>;

// Common rules.
// Every 4-D input and output takes the current layout of input k (plain when input k is not 4-D); other
// tensors (per-channel parameters, statistics) stay plain. Elementwise ops, batch norm, pooling forward.
LayoutRule rule_follow_input(int k);
// Every 4-D input and output takes the policy's layout for it (pooling backward without a workspace).
LayoutRule rule_policy();

// ---- kernel registry ----
// Ops whose backend kernel takes bfloat16 activations (in a blocked layout), optionally only for some nodes.
using Bf16Pred =
    std::function<bool(const Node&, const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out)>;

// What a backend registers for one op.
struct KernelEntry {
  KernelFactory make;   // may be empty while only capabilities were registered (then the op is not implemented)
  LayoutRule layout;    // empty: plain in, plain out
  bool bf16 = false;    // takes bfloat16 activations in blocked layouts ...
  Bf16Pred bf16_pred;   // ... for the nodes this accepts (empty: all)
  bool inplace = true;  // may write its output over the input the op schema allows (OpSchema::inplace*)
};

void register_kernel(const std::string& backend, const std::string& op, KernelFactory f);
void register_layout_rule(const std::string& backend, const std::string& op, LayoutRule r);
void register_bf16_op(const std::string& backend, const std::string& op, Bf16Pred pred = nullptr);
void register_kernel_inplace(const std::string& backend, const std::string& op, bool inplace);
// The entry for (backend, op), or nullptr; an entry without a factory counts as absent.
const KernelEntry* find_kernel_entry(const std::string& backend, const std::string& op);
// Static registration helpers, used at namespace scope in a backend's kernel files.
struct KernelRegistrar {
  KernelRegistrar(const char* backend, const char* op, KernelFactory f) { register_kernel(backend, op, std::move(f)); }
};
struct LayoutRuleRegistrar {
  LayoutRuleRegistrar(const char* backend, const char* op, LayoutRule r) {
    register_layout_rule(backend, op, std::move(r));
  }
};
struct Bf16Registrar {
  Bf16Registrar(const char* backend, const char* op, Bf16Pred pred = nullptr) {
    register_bf16_op(backend, op, std::move(pred));
  }
};

// ---- the per-session execution context ----
// A session's queue of work on its backend (a CUDA stream with its library handles): created once per session
// (Backend::make_stream), handed to every kernel at creation (KernelCtx::stream) and run (RunCtx::stream), and to
// the backend's copies, reductions and optimizer updates. Work queued on one stream runs in order; two sessions'
// streams run concurrently. Host backends have none (nullptr): their work runs on the calling thread.
class Stream {
 public:
  virtual ~Stream() = default;
  // Waits until everything queued on the stream has finished (errors of that work surface here as Error).
  virtual void synchronize() {}
  // Per-run values that kernels read from the device rather than from RunCtx, so a captured replay sees the
  // current run's (dropout's step and seed): the session sets them before each run.
  virtual void set_run_info(uint64_t seed, int64_t step) {}
  // Graph capture (CUDA graphs): the work queued between begin_capture() and end_capture(segment) is recorded as
  // that segment, and replay(segment) queues it again with the same buffers. A stream that cannot capture
  // returns false from can_capture(); the session then always runs its kernels eagerly.
  virtual bool can_capture() const { return false; }
  virtual void begin_capture() {}
  virtual void end_capture(int segment) {}
  virtual void replay(int segment) {}
  virtual void drop_captures() {}  // forget every recorded segment (the next runs capture again)
  // Whether a recording must be redone when the parameter store's version moved (kernels that branch on
  // RunCtx::params_version); a stream whose kernels read parameters in place every run says false.
  virtual bool recapture_on_param_change() const { return true; }
};

// What a session asks its stream for (CompileOptions that only a device backend reads).
struct StreamOptions {
  bool tf32 = true;            // float32 convolutions and matrix products may use TF32 tensor-core math
  bool graphs = true;          // record steady-state runs once and replay them (Stream::can_capture)
  bool deterministic = false;  // library algorithms whose results do not depend on scheduling
};

// ---- the backend ----
class Backend {
 public:
  explicit Backend(std::string name) : name_(std::move(name)) {}
  virtual ~Backend() = default;
  const std::string& name() const { return name_; }

  // The kernel registered for op on this backend (nullptr: none, the op's reference kernel runs).
  const KernelEntry* kernel(const std::string& op) const { return find_kernel_entry(name_, op); }
  // Whether node n (with these descs, stored in blocked layouts) may take bfloat16 activations here.
  bool bf16_capable(const Node& n, const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) const;

  // "key=value" lines about the backend and its device (a device backend checks here that it can run, and
  // throws Error saying what is missing otherwise).
  virtual std::string describe() const { return "name=" + name_; }

  // ---- capabilities ----
  virtual bool supports_compute(DType compute) const { return compute == DType::f32; }
  virtual bool supports_training_in(DType compute) const { return compute == DType::f32; }
  virtual bool has_layouts() const { return false; }       // runs the layout pass (kernels register rules)
  virtual bool has_fast_kernels() const { return false; }  // a reference fallback is worth reporting
  // An empty string when bfloat16 activations can run here, else why not (shown to the user).
  virtual std::string bf16_unavailable() const { return "the " + name_ + " backend has no bfloat16 kernels"; }
  // Whether the optimizer update and the guard's reductions may run (training sessions).
  virtual bool can_train() const { return true; }

  // ---- streams and memory ----
  // The session's execution context (nullptr: none, work runs on the calling thread). Throws Error saying what
  // is missing when the backend cannot run here (no device, no driver, a library not found).
  virtual std::unique_ptr<Stream> make_stream(const StreamOptions& o) const { return nullptr; }
  virtual bool host_accessible() const { return true; }  // the host may read and write its buffers directly
  virtual Buffer allocate(size_t bytes) const { return make_buffer(bytes); }  // zero-filled, 64-byte aligned
  // Host memory the backend copies from and to fastest (pinned memory for a GPU): the session stages its feeds
  // and fetches there. Zero-filled, 64-byte aligned.
  virtual Buffer allocate_host(size_t bytes) const { return make_buffer(bytes); }
  // Makes host memory the session copies from and to often (the parameter store's blocks) faster to copy (page-
  // locks it on a GPU); returns whether it did, and then unpin_host(p) must follow before the memory is freed.
  virtual bool pin_host(void* p, size_t bytes) const { return false; }
  virtual void unpin_host(void* p) const {}
  // Copies are queued on stream s (nullptr: the backend's default queue) after the work queued there before
  // them. copy_in may return before the copy is done: host_src must stay unchanged until s is synchronized;
  // copy_out returns when the host copy is complete.
  virtual void copy_in(void* dst, const void* host_src, size_t bytes, Stream* s = nullptr) const;   // host -> backend
  virtual void copy_out(void* host_dst, const void* src, size_t bytes, Stream* s = nullptr) const;  // backend -> host
  virtual void copy(void* dst, const void* src, size_t bytes, Stream* s = nullptr) const;  // backend -> backend
  virtual void synchronize(Stream* s = nullptr) const {
    if (s) s->synchronize();
  }

  // ---- the optimizer over flat blocks (p, g, state: n floats each) and the guard's reductions ----
  // Queued on stream s; the ones that return a value (and those that fill maxima) return it on the host.
  virtual float absmax(const float* x, size_t n, bool* finite, Stream* s = nullptr) const = 0;
  virtual int64_t first_non_finite(const float* x, size_t n, Stream* s = nullptr) const = 0;  // -1: all finite
  virtual void sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step,
                          OptimMaxima* maxima, Stream* s = nullptr) const = 0;
  virtual void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c,
                           long step, OptimMaxima* maxima, Stream* s = nullptr) const = 0;
  // Dry runs (nothing written): the first element whose update would not be finite, or -1.
  virtual long sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n, const SGDConfig& c,
                                    long step, Stream* s = nullptr) const = 0;
  virtual long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                                     size_t n, const AdamConfig& c, long step, Stream* s = nullptr) const = 0;

 private:
  std::string name_;
};

// A backend whose buffers are host memory: counted allocations, memcpy copies, and the optimizer update and guard
// reductions of host/optim.hpp (AVX-512 / AVX2 / scalar, bit-identical across paths), defined in
// host/host_backend.cpp. The `cpu` and `reference` backends derive from it; a device backend derives from Backend.
class HostBackend : public Backend {
 public:
  using Backend::Backend;
  float absmax(const float* x, size_t n, bool* finite, Stream* s = nullptr) const override;
  int64_t first_non_finite(const float* x, size_t n, Stream* s = nullptr) const override;
  void sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step,
                  OptimMaxima* maxima, Stream* s = nullptr) const override;
  void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c, long step,
                   OptimMaxima* maxima, Stream* s = nullptr) const override;
  long sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n, const SGDConfig& c,
                            long step, Stream* s = nullptr) const override;
  long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                             size_t n, const AdamConfig& c, long step, Stream* s = nullptr) const override;
};

void register_backend(std::shared_ptr<Backend> b);
// The backend registered as name. A name not registered yet is looked for as a plugin library,
// libcnnnative_<name>.so beside libcnnnative (or in CNNNATIVE_PLUGIN_PATH), loaded once; its static initializers
// register the backend. Throws Error naming the registered ones, or saying why the plugin could not load.
std::shared_ptr<const Backend> get_backend(const std::string& name);
std::vector<std::string> backend_names();
struct BackendRegistrar {
  explicit BackendRegistrar(std::shared_ptr<Backend> b) { register_backend(std::move(b)); }
};

}  // namespace cnn
