// CPU kernels for concat (oneDNN concat primitive, one DNNL_ARG_MULTIPLE_SRC per input) and split (native),
// and their layout rules: a 4-D concat runs in its first non-plain input's layout (the other inputs are
// reordered to it), split in dy's; oneDNN concat handles blocked pieces that are not block-aligned (24 + 32
// channels in nChw16c) and zeroes the padding. Why split is native: every output is a set of contiguous row
// blocks of x in its physical shape (plain; nhwc as [N, H, W, C]; a blocked layout as [N, C/b, H, W, b] for
// any axis but C), so the copy is memcpy; one parallel region covers all outputs (a DenseNet concat's backward
// has dozens), where per-output oneDNN reorders would run one small parallel region each. The one case that is
// not rows is a blocked layout split along C (BlockedSplit): output k's channel block j holds channels
// off_k + j*b .. off_k + j*b + b-1 of x, lanes of one or two x blocks (one whole block when off_k is a multiple
// of b), and its lanes past C_k are zeroed. Work lists are cut once at construction; run() only copies and
// allocates nothing.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

// Axis as validated by ops/concat.cpp's shape inference.
int64_t axis_of(const Node& n, size_t rank) {
  int64_t a = n.attrs.i("axis", 1);
  return a < 0 ? a + int64_t(rank) : a;
}

int64_t block_of(Layout l) { return l == Layout::nChw16c ? 16 : l == Layout::nChw8c ? 8 : 1; }

// in: x0 .. xK-1; out: y
struct ConcatFwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  std::string impl_name;
  explicit ConcatFwd(const KernelCtx& c) {
    const int axis = int(axis_of(c.node, c.out[0].shape.size()));
    std::vector<dnnl::memory::desc> srcs;
    for (size_t i = 0; i < c.in.size(); ++i) srcs.push_back(md_of(c.in[i], c.layout_in(i)));
    auto dst = md_of(c.out[0], c.layout_out(0));
    dnnl::concat::primitive_desc pd(engine(), dst, axis, srcs, user_scratchpad_attr());
    ex = DnnlExec(dnnl::concat(pd));
    for (size_t i = 0; i < srcs.size(); ++i) ex.bind(DNNL_ARG_MULTIPLE_SRC + int(i), srcs[i], Src::in(int(i)));
    ex.bind(DNNL_ARG_DST, dst, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
    impl_name = onednn_impl(pd);
  }
  size_t scratch_bytes() const override { return scratch; }
  std::string impl() const override { return impl_name; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// The physical shape of a tensor of logical shape s in layout l and the physical axis of logical axis a (not
// defined for a blocked layout's C axis).
Shape physical(const Shape& s, Layout l, int64_t a, int64_t* pa) {
  *pa = a;
  if (l == Layout::plain || s.size() != 4) return s;
  if (l == Layout::nhwc) {
    *pa = a == 0 ? 0 : a == 1 ? 3 : a - 1;
    return {s[0], s[2], s[3], s[1]};
  }
  const int64_t b = block_of(l);
  return {s[0], (s[1] + b - 1) / b, s[2], s[3], b};  // a = 0, 2, 3 keep their index
}

// in: x; out: y0 .. yK-1 (physical shapes, see physical()). x's row o (of `outer`) is y0's row o, y1's row o,
// ... side by side.
struct SplitNative : Kernel {
  static constexpr int64_t kChunk = 1 << 16;     // elements per work item
  static constexpr int64_t kParallel = 1 << 15;  // below this many elements, one thread
  struct Item {
    int k;
    int64_t begin, end;
  };  // elements [begin, end) of output k
  size_t esize;
  int64_t row = 0, total = 0;
  std::vector<int64_t> len, off;  // per output: row length and offset inside x's row
  std::vector<Item> items;
  SplitNative(const KernelCtx& c, Layout l) : esize(dtype_size(c.in[0].dtype)) {
    const int64_t logical_axis = axis_of(c.node, c.in[0].shape.size());
    int64_t axis;
    const Shape xs = physical(c.in[0].shape, l, logical_axis, &axis);
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= xs[d];
    for (size_t d = axis + 1; d < xs.size(); ++d) inner *= xs[d];
    row = xs[axis] * inner;
    total = outer * row;
    int64_t o = 0;
    for (size_t k = 0; k < c.out.size(); ++k) {
      len.push_back(physical(c.out[k].shape, l, logical_axis, &axis)[axis] * inner);
      off.push_back(o);
      o += len.back();
      const int64_t n = outer * len.back();
      for (int64_t b = 0; b < n; b += kChunk) items.push_back({int(k), b, std::min(n, b + kChunk)});
    }
  }
  std::string impl() const override { return "native"; }
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

// Blocked layout (block b), split along C. x: [N, XB, HW, b]; output k: [N, ceil(C_k / b), HW, b], channel
// c of output k being channel off_k + c of x. Work item: one (output, n, output block) plane of HW*b values.
struct BlockedSplit : Kernel {
  struct Item {
    int k;
    int64_t n, j;
  };
  int64_t b, HW, XB, total;
  std::vector<int64_t> C, off, nb;  // per output: channels, channel offset in x, blocks
  std::vector<Item> items;
  size_t esize;
  BlockedSplit(const KernelCtx& c, Layout l) : b(block_of(l)), esize(dtype_size(c.in[0].dtype)) {
    const Shape& xs = c.in[0].shape;
    HW = xs[2] * xs[3];
    XB = (xs[1] + b - 1) / b;
    total = xs[0] * XB * HW * b;
    int64_t o = 0;
    for (size_t k = 0; k < c.out.size(); ++k) {
      C.push_back(c.out[k].shape[1]);
      off.push_back(o);
      nb.push_back((C.back() + b - 1) / b);
      o += C.back();
      for (int64_t n = 0; n < xs[0]; ++n)
        for (int64_t j = 0; j < nb.back(); ++j) items.push_back({int(k), n, j});
    }
  }
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const char* x = static_cast<const char*>(r.in[0]);
    const int64_t ni = int64_t(items.size());
    const size_t es = esize;
#pragma omp parallel for schedule(static) if (ni > 1 && total >= (1 << 15))
    for (int64_t i = 0; i < ni; ++i) {
      const Item& it = items[i];
      char* y = static_cast<char*>(r.out[it.k]) + ((it.n * nb[it.k] + it.j) * HW * b) * es;
      const int64_t c0 = off[it.k] + it.j * b;                // x channel of lane 0
      const int64_t valid = std::min(b, C[it.k] - it.j * b);  // lanes holding channels of output k
      const int64_t q = c0 / b, s = c0 % b;                   // first x block and lane
      const char* x0 = x + ((it.n * XB + q) * HW * b) * es;
      if (s == 0 && valid == b) {
        std::memcpy(y, x0, size_t(HW * b) * es);
        continue;
      }
      const int64_t n0 = std::min(valid, b - s), n1 = valid - n0;  // lanes from block q, then from block q+1
      const char* x1 = x0 + HW * b * es;
      for (int64_t p = 0; p < HW; ++p) {
        char* yp = y + p * b * es;
        std::memcpy(yp, x0 + (p * b + s) * es, size_t(n0) * es);
        if (n1 > 0) std::memcpy(yp + n0 * es, x1 + p * b * es, size_t(n1) * es);
        if (valid < b) std::memset(yp + valid * es, 0, size_t(b - valid) * es);
      }
    }
  }
};

KernelRegistrar r1("cpu", "concat", [](const KernelCtx& c) { return std::make_unique<ConcatFwd>(c); });
KernelRegistrar r2("cpu", "split", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  const Layout l = c.layout_in(0);
  if (block_of(l) > 1 && axis_of(c.node, c.in[0].shape.size()) == 1) return std::make_unique<BlockedSplit>(c, l);
  return std::make_unique<SplitNative>(c, l);
});

// ---- layout rules ----
// bf16 sessions: oneDNN concat and the byte-wise split loops follow the KernelCtx dtypes
Bf16Registrar b1("cpu", "concat");
Bf16Registrar b2("cpu", "split");
LayoutRuleRegistrar l1("cpu", "concat", [](const LayoutQuery& q) {
  Layout L = Layout::plain;
  if (q.out[0].shape.size() == 4)
    for (Layout l : q.in_layout)
      if (l != Layout::plain) {
        L = l;
        break;
      }
  return LayoutChoice{std::vector<Layout>(q.in.size(), L), {L}};
});
LayoutRuleRegistrar l2("cpu", "split", [](const LayoutQuery& q) {
  Layout L = q.in[0].shape.size() == 4 ? q.in_layout[0] : Layout::plain;
  return LayoutChoice{{L}, std::vector<Layout>(q.out.size(), L)};
});

}  // namespace
}  // namespace cpu
}  // namespace cnn
