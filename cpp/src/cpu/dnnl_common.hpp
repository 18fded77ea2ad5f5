// oneDNN glue for CPU kernels. Owns: the process-wide engine and stream, memory descriptors for the
// session's layouts (core/op.hpp's Layout), the cpu `reorder` kernel, and DnnlExec (a primitive plus its argument map
// whose memory handles are refreshed from RunCtx pointers before each execute). Only files under cpp/src/cpu/ include
// this (and oneDNN).
#pragma once
#include <dnnl.hpp>

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/op.hpp"

namespace cnn {
namespace cpu {

dnnl::engine& engine();
dnnl::stream& stream();

dnnl::memory::dims dims_of(const Shape& s);
dnnl::memory::data_type dt_of(DType t);
// Plain row-major (abcd...) descriptor for a tensor.
dnnl::memory::desc plain_desc(const TensorDesc& d);
dnnl::memory::desc plain_desc(const Shape& s, DType t);
// Descriptor of a tensor in one of the session's layouts (non-plain layouts are 4-D only).
dnnl::memory::desc md_of(const Shape& s, DType t, Layout l);
dnnl::memory::desc md_of(const TensorDesc& d, Layout l);
// The session layout a oneDNN descriptor is, if any (false for layouts the session does not know).
bool layout_of(const dnnl::memory::desc& md, const Shape& s, DType t, Layout* out);

// Where a memory handle comes from at run time.
struct Src {
  enum Kind { In, Out, Scratch, Persist } kind;
  int index = 0;      // input/output index
  size_t offset = 0;  // byte offset inside scratch / the kernel's persistent region
  static Src in(int i) { return {In, i, 0}; }
  static Src out(int i) { return {Out, i, 0}; }
  static Src scratch(size_t off) { return {Scratch, 0, off}; }
  static Src persist(size_t off) { return {Persist, 0, off}; }
};

// One primitive execution with bound arguments. bind() at compile time; run() only swaps handles.
class DnnlExec {
 public:
  DnnlExec() = default;
  DnnlExec(dnnl::primitive p) : prim_(std::move(p)) {}
  void bind(int arg, const dnnl::memory::desc& md, Src src);
  void run(const RunCtx& ctx);
  bool empty() const { return !prim_; }

 private:
  dnnl::primitive prim_;
  std::unordered_map<int, dnnl::memory> args_;
  std::vector<std::pair<dnnl::memory, Src>> handles_;
};

// What a kernel running this primitive reports as Kernel::impl(): "onednn:<primitive kind> <oneDNN
// implementation>", e.g. "onednn:convolution brg:avx512_core". Queries the descriptor: call at construction.
std::string onednn_impl(const dnnl::primitive_desc_base& pd);
// The suffix of the deterministic kernels' impl() (one-thread primitives over minibatch parts).
constexpr const char* kDetPartsImpl = " deterministic(minibatch parts)";

// Lays out sub-buffers inside a kernel's scratch region (64-byte aligned).
struct ScratchLayout {
  size_t total = 0;
  size_t add(size_t bytes) {
    size_t off = total;
    total += (bytes + 63) / 64 * 64;
    return off;
  }
};

// Primitive attributes with a user-managed scratchpad (the session's shared scratch buffer).
dnnl::primitive_attr user_scratchpad_attr();

// Weight handling shared by the convolution-like kernels (conv2d, conv_transpose2d): the reorder between
// the plain parameter layout and the one a primitive chose (none when equal), and where the reordered
// weights live. Training kernels (parameters change every step): in the kernel scratch, laid out as
// [oneDNN scratchpad of the largest user | reordered weights], reordered on every run. Inference kernels
// (`cached`): in the kernel's persistent region, reordered once and again only when the parameter store's
// version moved (PreparedVersion); the scratch then holds only the scratchpad.
std::optional<dnnl::reorder::primitive_desc> weight_reorder(const dnnl::memory::desc& from,
                                                            const dnnl::memory::desc& to);
struct WeightScratch {
  size_t total = 0;                 // scratch bytes
  size_t persist = 0;               // persistent bytes
  Src weights{Src::Scratch, 0, 0};  // where the reordered weights go (when there is a reorder)
  WeightScratch(size_t pad, const std::optional<dnnl::reorder::primitive_desc>& r, size_t weight_bytes,
                bool cached = false);
};
// When a kernel's prepared data (derived from parameters/buffers) must be rebuilt: always when not cached,
// else when the store's version differs from the one it was built at (0: never built).
struct PreparedVersion {
  bool cached = false;
  uint64_t version = 0;
  bool stale(const RunCtx& r) const { return !cached || version != r.params_version; }
  void mark(const RunCtx& r) { version = r.params_version; }
  // Runs the weight reorder (when there is one) if the store moved since the weights were last prepared.
  void refresh(const RunCtx& r, DnnlExec& reorder) {
    if (!reorder.empty() && stale(r)) {
      reorder.run(r);
      mark(r);
    }
  }
};
void bind_scratchpad(DnnlExec& ex, const dnnl::memory::desc& md);  // binds when the primitive needs one
DnnlExec bind_reorder(const dnnl::reorder::primitive_desc& pd, Src from, Src to);
void* resolve(const Src& s, const RunCtx& r);  // the address a Src names in this run

// ---- deterministic mode (KernelCtx::deterministic, compile(deterministic=True)) ----
// oneDNN builds a primitive for the thread count it sees at creation (omp_get_max_threads()): blocking, loop order,
// work split and, for weight gradients and some GEMMs, how a reduction is split across threads and summed (the
// primitive cache keys on the count too). Results then differ between thread counts. The deterministic kernels
// split their work into parts decided by the problem alone, run each part with a primitive built for ONE thread
// (created under OneThread), in parallel over the parts (a primitive called inside an active OpenMP region runs
// single-threaded), and sum partial results in a fixed order (sum_parts). Which thread runs which part and how
// many threads there are then no longer matter.

// While alive, primitives and primitive descriptors are created for one thread (omp_set_num_threads(1) on the
// calling thread; the previous count is restored).
class OneThread {
 public:
  OneThread();
  ~OneThread();
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int saved_;
};

// Executes primitives built for one thread, one call per part, concurrently. Variant v is pds[v] (e.g. the full
// part and a shorter last part); every variant takes the arguments `args` (DNNL_ARG_*, descriptors queried from
// its pd) and, when it needs one, a scratchpad of its own per thread. Memory objects and argument arrays are made
// once per thread and variant, so run() allocates nothing. Threads: at most those seen at construction (the
// caller's count, passed in because construction happens under OneThread).
class PartExec {
 public:
  PartExec() = default;
  PartExec(const std::vector<dnnl::primitive_desc>& pds, const std::vector<int>& args, int max_threads);
  size_t scratch_bytes() const { return pad_ * size_t(threads_); }  // the per-thread scratchpads
  // Runs parts 0 .. count-1: part q with variant var(q), argument k at ptr(q, k); scratchpads from `pads`.
  void run(int64_t count, const std::function<int(int64_t)>& var, const std::function<void*(int64_t, int)>& ptr,
           char* pads) const;
  bool empty() const { return prims_.empty(); }

 private:
  struct Slot {                     // one thread, one variant
    std::vector<dnnl::memory> mem;  // args, then the scratchpad if any
    std::vector<dnnl_exec_arg_t> args;
  };
  std::vector<dnnl::primitive> prims_;
  std::vector<bool> has_pad_;
  size_t nargs_ = 0, pad_ = 0;
  int threads_ = 1;
  mutable std::vector<Slot> slots_;  // [thread * variants + variant]; handles are set in run()
};

// An argument of a primitive run over minibatch parts (MinibatchParts): shared by every part (weights, bias),
// batched (the part's images of a tensor whose batch dimension is outermost: every session layout; `stride` =
// bytes per image), or per part (the part's own buffer, `stride` bytes after the previous part's: partial weight
// gradients).
struct PartArg {
  enum Kind { Shared, Batched, PerPart } kind;
  int arg;
  Src src;
  size_t stride = 0;
};

// Images per part for `n` images costing `flops_per_image` each: enough work per part to amortize a primitive
// call (about 4 MFLOP), at most kMaxParts (and `max_parts`) parts, then parts of equal size (the last one possibly
// shorter). 16 parts: every thread count up to 16 has work (balanced at 1, 2, 4, 8, 16); one-thread primitives on
// fewer, larger parts also run closer to the multi-threaded primitive's speed on small images (ResNet-18's
// 256->512 stride-2 conv at batch 64: 1 image per part 11.4 ms forward, 4 images 6.9 ms, oneDNN's own 5.6 ms).
constexpr int64_t kMaxParts = 16;
int64_t part_images(int64_t n, double flops_per_image, int64_t max_parts = kMaxParts);
// The most parts (a power of two, at most kMaxParts) whose partial results of `partial_bytes` each fit 32 MiB of
// scratch: partial weight gradients are summed afterwards, so fewer parts also mean less memory traffic.
int64_t partial_parts(size_t partial_bytes);

// Shape s with its batch (dim 0) set to n: the descriptors of one minibatch part.
inline Shape with_batch(Shape s, int64_t n) {
  s[0] = n;
  return s;
}

// A primitive over N images, run as ceil(N / part) parts of `part` images (the last one shorter when part does
// not divide N) by primitives built for one thread: make(mb) returns the primitive descriptor for mb images; it is
// called under OneThread, for `part` first. Scratch: scratch_bytes() (per-thread scratchpads) at the offset given
// to run().
class MinibatchParts {
 public:
  MinibatchParts() = default;
  MinibatchParts(int64_t n, int64_t part, const std::function<dnnl::primitive_desc(int64_t mb)>& make,
                 std::vector<PartArg> args);
  int64_t count() const { return count_; }
  int64_t part() const { return part_; }
  size_t scratch_bytes() const { return exec_.scratch_bytes(); }
  const dnnl::primitive_desc& pd() const { return pd_; }                 // the full part's
  std::string impl() const { return onednn_impl(pd_) + kDetPartsImpl; }  // Kernel::impl() of a kernel running it
  void run(const RunCtx& r, size_t pad_offset) const;
  bool empty() const { return exec_.empty(); }

 private:
  static constexpr size_t kMaxArgs = 16;
  int64_t n_ = 0, part_ = 1, count_ = 0;
  bool tail_ = false;
  dnnl::primitive_desc pd_;
  std::vector<PartArg> args_;
  PartExec exec_;
};

// dst[i] = first[i] + first[stride + i] + ... + first[(count-1) * stride + i], in that order for every i (n floats;
// dst may be first). OpenMP over blocks of i, so the result does not depend on the thread count.
void sum_parts(float* dst, const float* first, size_t stride, int64_t count, int64_t n);

// Deterministic weight gradients (convolution and deconvolution backward-weights): the primitive runs over
// minibatch parts, each writing its own partial dw (and db) into the scratch; run() sums them in part order into
// the outputs (dw straight when the primitive's weight layout `wmd` is the parameter's `w_user`, else through a
// reorder). plan() adds its regions to the caller's scratch layout L (after the caller's own).
class PartialWeightGrads {
 public:
  void plan(ScratchLayout& L, int64_t n, int64_t part, int64_t K, bool with_bias, const dnnl::memory::desc& wmd,
            const dnnl::memory::desc& w_user, const std::function<dnnl::primitive_desc(int64_t mb)>& make, Src src,
            size_t src_per_image, Src diff_dst, size_t dst_per_image);
  void run(const RunCtx& r);
  std::string impl() const { return parts_.impl(); }
  // the reorder's scratchpad, which the caller places at the start of the scratch (run() needs it there)
  static size_t reorder_pad(const dnnl::memory::desc& wmd, const dnnl::memory::desc& w_user);

 private:
  MinibatchParts parts_;
  DnnlExec reorder_dw_;
  size_t pad_off_ = 0, dw_off_ = 0, db_off_ = 0, dw_stride_ = 0, db_stride_ = 0;
  int64_t dw_n_ = 0, K_ = 0;
  bool with_bias_ = false, direct_ = true;
};

}  // namespace cpu
}  // namespace cnn
