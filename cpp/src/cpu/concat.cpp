// CPU kernels for concat (oneDNN concat primitive, plain layouts, one DNNL_ARG_MULTIPLE_SRC per input) and
// split (native). Why split is native: in a plain layout every output is a set of contiguous row blocks of x,
// so the copy is memcpy; one parallel region covers all outputs (a DenseNet concat's backward has dozens),
// where per-output oneDNN reorders would run one small parallel region each. The work list (output, element
// range) is cut once at construction into fixed chunks; run() only copies and allocates nothing.
#include <algorithm>
#include <cstring>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

// Axis as validated by ops/concat.cpp's shape inference.
int64_t axis_of(const Node& n, size_t rank) {
  int64_t a = n.attrs.i("axis", 1);
  return a < 0 ? a + int64_t(rank) : a;
}

// in: x0 .. xK-1; out: y
struct ConcatFwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  explicit ConcatFwd(const KernelCtx& c) {
    const int axis = int(axis_of(c.node, c.out[0].shape.size()));
    std::vector<dnnl::memory::desc> srcs;
    for (const auto& d : c.in) srcs.push_back(plain_desc(d));
    auto dst = plain_desc(c.out[0]);
    dnnl::concat::primitive_desc pd(engine(), dst, axis, srcs, user_scratchpad_attr());
    ex = DnnlExec(dnnl::concat(pd));
    for (size_t i = 0; i < srcs.size(); ++i) ex.bind(DNNL_ARG_MULTIPLE_SRC + int(i), srcs[i], Src::in(int(i)));
    ex.bind(DNNL_ARG_DST, dst, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// in: x; out: y0 .. yK-1. x's row o (of `outer`) is y0's row o, y1's row o, ... side by side.
struct SplitNative : Kernel {
  static constexpr int64_t kChunk = 1 << 16;        // elements per work item
  static constexpr int64_t kParallel = 1 << 15;     // below this many elements, one thread
  struct Item { int k; int64_t begin, end; };       // elements [begin, end) of output k
  size_t esize;
  int64_t row = 0, total = 0;
  std::vector<int64_t> len, off;                    // per output: row length and offset inside x's row
  std::vector<Item> items;
  explicit SplitNative(const KernelCtx& c) : esize(dtype_size(c.in[0].dtype)) {
    const Shape& xs = c.in[0].shape;
    const int64_t axis = axis_of(c.node, xs.size());
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= xs[d];
    for (size_t d = axis + 1; d < xs.size(); ++d) inner *= xs[d];
    row = xs[axis] * inner;
    total = outer * row;
    int64_t o = 0;
    for (size_t k = 0; k < c.out.size(); ++k) {
      len.push_back(c.out[k].shape[axis] * inner);
      off.push_back(o);
      o += len.back();
      const int64_t n = outer * len.back();
      for (int64_t b = 0; b < n; b += kChunk) items.push_back({int(k), b, std::min(n, b + kChunk)});
    }
  }
  void run(const RunCtx& r) override {
    const char* x = static_cast<const char*>(r.in[0]);
    const int64_t ni = int64_t(items.size());
#pragma omp parallel for schedule(static) if (ni > 1 && total >= kParallel)
    for (int64_t i = 0; i < ni; ++i) {
      const Item& it = items[i];
      const int64_t L = len[it.k];
      char* y = static_cast<char*>(r.out[it.k]);
      int64_t o = it.begin / L, j = it.begin % L;
      for (int64_t p = it.begin; p < it.end; j = 0, ++o) {
        const int64_t n = std::min(L - j, it.end - p);
        std::memcpy(y + p * esize, x + (o * row + off[it.k] + j) * esize, size_t(n) * esize);
        p += n;
      }
    }
  }
};

KernelRegistrar r1("cpu", "concat", [](const KernelCtx& c) { return std::make_unique<ConcatFwd>(c); });
KernelRegistrar r2("cpu", "split", [](const KernelCtx& c) { return std::make_unique<SplitNative>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
