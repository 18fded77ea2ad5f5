// oneDNN glue for CPU kernels. Owns: the process-wide engine and stream, memory descriptors for the
// session's layouts (core/op.hpp's Layout), the cpu `reorder` kernel, and DnnlExec (a primitive plus its argument map whose memory handles are refreshed from RunCtx pointers
// before each execute). Only files under cpp/src/cpu/ include this (and oneDNN).
#pragma once
#include <dnnl.hpp>

#include <optional>
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
  int index = 0;        // input/output index
  size_t offset = 0;    // byte offset inside scratch / the kernel's persistent region
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
  size_t total = 0;    // scratch bytes
  size_t persist = 0;  // persistent bytes
  Src weights{Src::Scratch, 0, 0};  // where the reordered weights go (when there is a reorder)
  WeightScratch(size_t pad, const std::optional<dnnl::reorder::primitive_desc>& r, size_t weight_bytes, bool cached = false);
};
// When a kernel's prepared data (derived from parameters/buffers) must be rebuilt: always when not cached,
// else when the store's version differs from the one it was built at (0: never built).
struct PreparedVersion {
  bool cached = false;
  uint64_t version = 0;
  bool stale(const RunCtx& r) const { return !cached || version != r.params_version; }
  void mark(const RunCtx& r) { version = r.params_version; }
};
void bind_scratchpad(DnnlExec& ex, const dnnl::memory::desc& md);  // binds when the primitive needs one
DnnlExec bind_reorder(const dnnl::reorder::primitive_desc& pd, Src from, Src to);

}  // namespace cpu
}  // namespace cnn
