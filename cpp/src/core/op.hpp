// Op registry and kernel interface. Owns: the OpSchema each op file registers (shape inference,
// capabilities, autodiff rule, reference kernel) and the per-backend kernel factories.
// Promises: ops declare, the planner decides; kernels are created once per session and run() allocates nothing.
#pragma once
#include <cnnnative/cnnnative.hpp>

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace cnn {

// Whether the recompute pass (core/recompute.hpp) may run a forward node again in the backward pass instead of
// keeping its outputs, and what a rerun costs: `cheap` (a pass over memory: elementwise, normalization, views)
// or `costly` (convolutions, pooling, ...). `never` (the default): the op draws random numbers, has side effects
// beyond its outputs, or nobody has said it is safe. batch_norm declares `cheap`: its rerun uses the batch
// statistics the forward node saved, so the running statistics are updated once.
enum class RecomputeClass : int { never = 0, cheap = 1, costly = 2 };

// Memory layout of an activation, chosen per value by the session's layout pass (core/layout.hpp). plain is
// row-major in the logical shape (NCHW for 4-D), the only layout of graph inputs/outputs, parameters and every
// kernel that does not declare a layout rule. The others exist only for 4-D tensors [N, C, H, W]:
// nhwc (channels last), nChw16c / nChw8c (channel blocks of 16 / 8, C padded up to the block; the padding
// holds zeros). A workspace of a layout-capable kernel (max-pool indices) carries the layout it was written in.
enum class Layout : int { plain = 0, nhwc = 1, nChw16c = 2, nChw8c = 3 };
const char* layout_name(Layout l);
// Bytes a tensor occupies in a layout (padding included), for dtype d.dtype.
size_t layout_bytes(const TensorDesc& d, Layout l);
// Two layouts that put every element of a tensor of shape s at the same offset (and so need no reorder):
// equal ones, nhwc and plain when C == 1 or H*W == 1, a blocked one and plain when H*W == 1 and the block
// divides C, nhwc and a blocked one whose block is C. A consumer may read a value in any layout that aliases the
// one it is stored in.
bool layouts_alias(Layout a, Layout b, const Shape& s);

// Element offset of logical index (n, c, h, w) of a 4-D tensor of shape s in layout l (reference kernels).
int64_t layout_offset(Layout l, const Shape& s, int64_t n, int64_t c, int64_t h, int64_t w);

class Stream;  // core/backend.hpp: a session's execution context on its backend

struct KernelCtx {
  const Node& node;
  std::vector<TensorDesc> in, out;  // float tensors carry the session's compute dtype here
  DType compute = DType::f32;
  bool training = false;       // false in an inference session: kernels may use inference-only paths
  bool cache_weights = true;   // inference: keep prepared weights between runs (CompileOptions::cache_weights)
  bool winograd = true;        // CompileOptions::winograd
  bool deterministic = false;  // CompileOptions::deterministic: a reduction order independent of the thread count
  std::vector<Layout> in_layout{}, out_layout{};  // empty or one per input/output; missing entries are plain
  Stream* stream = nullptr;  // the session's stream (Backend::make_stream; nullptr on host backends)
  Layout layout_in(size_t i) const { return i < in_layout.size() ? in_layout[i] : Layout::plain; }
  Layout layout_out(size_t i) const { return i < out_layout.size() ? out_layout[i] : Layout::plain; }
};

struct RunCtx {
  void* const* in;   // one pointer per node input
  void* const* out;  // one pointer per node output
  void* scratch;     // shared scratch, at least scratch_bytes()
  uint64_t seed;
  int64_t step;                 // 0-based count of completed runs of this session
  void* persist = nullptr;      // this kernel's own persistent region, persistent_bytes() (kept between runs)
  uint64_t params_version = 0;  // the ParamStore's version() when this run started (>= 1)
  // The session's stream (nullptr on host backends). A kernel of a backend whose streams capture graphs queues
  // the same work on every run after its first (no branch on step, seed or params_version; per-run values are
  // read from the device, Stream::set_run_info), so that a recorded run can be replayed.
  Stream* stream = nullptr;
  // Data-parallel training (Session::set_allreduce): sums n doubles in place across the processes of the job.
  // nullptr in a single-process session; kernels that synchronize statistics (batch_norm with sync=1) then use
  // their own batch only. Called outside parallel regions; may throw (a peer failed).
  const std::function<void(double*, size_t)>* allreduce = nullptr;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual size_t scratch_bytes() const { return 0; }
  // Bytes the kernel keeps between runs (prepared weights), in RunCtx::persist. The session allocates them
  // once at compile time. Whatever a kernel derives from parameters or buffers and keeps there must be
  // rebuilt when RunCtx::params_version differs from the version it was built at.
  virtual size_t persistent_bytes() const { return 0; }
  virtual void run(const RunCtx& ctx) = 0;
  // What implements the node, for Session::kernels(): "onednn:<primitive>", "winograd", "native", "reference"
  // (the op's naive loops), possibly with a detail after a space ("onednn:convolution jit:avx512_core").
  virtual std::string impl() const { return "native"; }
  // After a run whose loss came out non-finite: why, when this kernel recorded a reason it could not throw
  // while it ran (a device kernel that met a label out of range); empty otherwise. May wait for the device.
  virtual std::string explain_failure(const RunCtx& ctx) { return ""; }
};

using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelCtx&)>;

class GradCtx;

struct OpSchema {
  std::string name;
  // Output descs from input descs; throws via op_error() on bad shapes.
  std::function<std::vector<TensorDesc>(const Node&, const std::vector<TensorDesc>&)> infer;
  bool inplace = false;  // output 0 may share input 0's buffer
  // Generalizes `inplace`: which input output 0 may share its buffer with (-1: none), e.g. the residual of a
  // fused convolution. When set it is asked instead of `inplace`.
  std::function<int(const Node&)> inplace_input;
  RecomputeClass recompute = RecomputeClass::never;
  std::function<void(GradCtx&)> grad;  // empty: not differentiable
  KernelFactory ref;                   // naive loops, float and double (ctx.compute)
  // Floating-point operations of one run (for profiles); empty: not counted.
  std::function<double(const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out)> flops;
};

// 2 * (output elements) * (weight elements per output channel): conv, linear and their gradients,
// given the tensor that has the output's shape and the weight tensor [K, ...].
inline double mac_flops(const TensorDesc& out_like, const TensorDesc& w) {
  return 2.0 * double(numel(out_like.shape)) * double(numel(w.shape)) / double(w.shape[0]);
}

void register_op(OpSchema s);
const OpSchema& get_op(const std::string& name);  // throws Error for an unknown op
bool has_op(const std::string& name);
std::vector<std::string> op_names();

// Static registration helpers: `static OpRegistrar reg{schema};`
struct OpRegistrar {
  explicit OpRegistrar(OpSchema s) { register_op(std::move(s)); }
};

// "op 'conv2d' (node 'features.0'): <msg>"
[[noreturn]] void op_error(const Node& n, const std::string& msg);
std::string descs_str(const std::vector<TensorDesc>& d);

// Autodiff context handed to an op's grad rule for one forward node.
class GradCtx {
 public:
  GradCtx(Graph& g, int node_index, std::vector<int> dys, std::vector<bool> need_dx)
      : g_(g),
        node_(node_index),
        fwd_(g.nodes[node_index]),
        dys_(std::move(dys)),
        need_dx_(std::move(need_dx)),
        dx_(need_dx_.size(), -1) {}
  // A copy of the forward node: emit() may reallocate the graph's node list.
  const Node& node() const { return fwd_; }
  int input(int i) const { return node().inputs[i]; }
  int output(int i) const { return node().outputs[i]; }
  const TensorDesc& desc(int value) const { return g_.values[value].desc; }
  int dy(int k) const { return dys_[k]; }            // -1: output k receives no gradient
  bool need_dx(int i) const { return need_dx_[i]; }  // input i is on a path to something trained/requested
  void set_dx(int i, int grad_value) { dx_[i] = grad_value; }
  const std::vector<int>& dxs() const { return dx_; }
  // Adds a backward node named "<forward name>/<suffix>".
  std::vector<int> emit(const std::string& op, const std::vector<int>& inputs, const Attrs& attrs,
                        const std::string& suffix = "grad");

 private:
  Graph& g_;
  int node_;
  Node fwd_;
  std::vector<int> dys_;
  std::vector<bool> need_dx_;
  std::vector<int> dx_;
};

// Typed access for reference kernels: float tensors are T (float or double) in ctx.compute.
template <class T>
struct RefArgs {
  const KernelCtx& k;
  const RunCtx& r;
  const Attrs& attrs() const { return k.node.attrs; }
  template <class U = T>
  const U* in(int i) const {
    return static_cast<const U*>(r.in[i]);
  }
  template <class U = T>
  U* out(int i) const {
    return static_cast<U*>(r.out[i]);
  }
  const Shape& in_shape(int i) const { return k.in[i].shape; }
  const Shape& out_shape(int i) const { return k.out[i].shape; }
};

// Wraps `Fn<T>::run(RefArgs<T>)` for T = float and double into a kernel factory.
// `static`: op files name their kernels alike (FwdRef, ...) in anonymous namespaces, and GCC does not
// give internal linkage to a template instantiated with such a *template* template argument, so without
// it the linker merges different ops' instantiations.
template <template <class> class Fn>
static KernelFactory ref_kernel() {
  struct K : Kernel {
    KernelCtx ctx;
    explicit K(const KernelCtx& c) : ctx(c) {}
    std::string impl() const override { return "reference"; }
    void run(const RunCtx& r) override {
      if (ctx.compute == DType::f64)
        Fn<double>::run(RefArgs<double>{ctx, r});
      else
        Fn<float>::run(RefArgs<float>{ctx, r});
    }
  };
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<K>(c); };
}

// Plain-stride helpers for reference kernels.
inline int64_t dim(const Shape& s, int i) { return s[i < 0 ? s.size() + i : i]; }

}  // namespace cnn
