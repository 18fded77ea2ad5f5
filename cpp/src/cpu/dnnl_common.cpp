#include "cpu/dnnl_common.hpp"

#include <algorithm>

#include <cstring>

namespace cnn {
namespace cpu {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
// One stream per calling thread: oneDNN streams are not thread-safe, and sessions may run concurrently.
dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::dims dims_of(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }

dnnl::memory::data_type dt_of(DType t) {
  switch (t) {
    case DType::f32: return dnnl::memory::data_type::f32;
    case DType::bf16: return dnnl::memory::data_type::bf16;
    case DType::i32: return dnnl::memory::data_type::s32;
    case DType::u8: return dnnl::memory::data_type::u8;
    default: throw Error(std::string("oneDNN kernels do not take ") + dtype_name(t));
  }
}

dnnl::memory::desc plain_desc(const Shape& s, DType t) {
  dnnl::memory::dims d = dims_of(s);
  dnnl::memory::dims strides(d.size(), 1);
  for (int i = int(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return dnnl::memory::desc(d, dt_of(t), strides);
}
dnnl::memory::desc plain_desc(const TensorDesc& d) { return plain_desc(d.shape, d.dtype); }

dnnl::memory::desc md_of(const Shape& s, DType t, Layout l) {
  using tag = dnnl::memory::format_tag;
  if (l == Layout::plain) return plain_desc(s, t);
  if (s.size() != 4) throw Error("internal: layout " + std::string(layout_name(l)) + " for a " + shape_str(s) + " tensor");
  tag f = l == Layout::nhwc ? tag::nhwc : l == Layout::nChw16c ? tag::aBcd16b : tag::aBcd8b;
  return dnnl::memory::desc(dims_of(s), dt_of(t), f);
}
dnnl::memory::desc md_of(const TensorDesc& d, Layout l) { return md_of(d.shape, d.dtype, l); }

bool layout_of(const dnnl::memory::desc& md, const Shape& s, DType t, Layout* out) {
  for (Layout l : {Layout::plain, Layout::nhwc, Layout::nChw16c, Layout::nChw8c}) {
    if (l != Layout::plain && s.size() != 4) break;
    if (md == md_of(s, t, l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

void DnnlExec::bind(int arg, const dnnl::memory::desc& md, Src src) {
  dnnl::memory m(md, engine(), DNNL_MEMORY_NONE);
  args_[arg] = m;
  handles_.push_back({m, src});
}

void DnnlExec::run(const RunCtx& ctx) {
  for (auto& h : handles_) {
    void* p = h.second.kind == Src::In        ? ctx.in[h.second.index]
              : h.second.kind == Src::Out     ? ctx.out[h.second.index]
              : h.second.kind == Src::Persist ? static_cast<char*>(ctx.persist) + h.second.offset
                                              : static_cast<char*>(ctx.scratch) + h.second.offset;
    h.first.set_data_handle(p);
  }
  prim_.execute(stream(), args_);
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

namespace {

// reorder (x) -> y: the same tensor in layout attrs `to` (from `from`), converting float32 <-> bfloat16 where the
// session stores the two sides in different dtypes; the padding of blocked outputs is zeroed.
struct Reorder : Kernel {
  DnnlExec ex;
  size_t bytes = 0, scratch = 0;
  explicit Reorder(const KernelCtx& c) {
    Layout from = Layout(c.node.attrs.i("from", 0)), to = Layout(c.node.attrs.i("to", 0));
    if (from == to && c.in[0].dtype == c.out[0].dtype) {
      bytes = layout_bytes(c.in[0], from);
      return;
    }
    dnnl::reorder::primitive_desc pd(engine(), md_of(c.in[0], from), engine(), md_of(c.out[0], to), user_scratchpad_attr());
    ex = DnnlExec(dnnl::reorder(pd));
    ex.bind(DNNL_ARG_FROM, pd.src_desc(), Src::in(0));
    ex.bind(DNNL_ARG_TO, pd.dst_desc(), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    if (!ex.empty()) ex.run(r);
    else if (r.out[0] != r.in[0]) std::memcpy(r.out[0], r.in[0], bytes);
  }
};

KernelRegistrar reorder_reg("cpu", "reorder", [](const KernelCtx& c) { return std::make_unique<Reorder>(c); });

}  // namespace

std::optional<dnnl::reorder::primitive_desc> weight_reorder(const dnnl::memory::desc& from,
                                                            const dnnl::memory::desc& to) {
  if (from == to) return std::nullopt;
  return dnnl::reorder::primitive_desc(engine(), from, engine(), to, user_scratchpad_attr());
}

WeightScratch::WeightScratch(size_t pad, const std::optional<dnnl::reorder::primitive_desc>& r, size_t weight_bytes,
                             bool cached) {
  ScratchLayout L;
  L.add(std::max(pad, r ? r->scratchpad_desc().get_size() : size_t(0)));
  if (r && cached) {
    ScratchLayout P;
    weights = Src::persist(P.add(weight_bytes));
    persist = P.total;
  } else if (r) {
    weights = Src::scratch(L.add(weight_bytes));
  }
  total = L.total;
}

void bind_scratchpad(DnnlExec& ex, const dnnl::memory::desc& md) {
  if (md.get_size()) ex.bind(DNNL_ARG_SCRATCHPAD, md, Src::scratch(0));
}

DnnlExec bind_reorder(const dnnl::reorder::primitive_desc& pd, Src from, Src to) {
  DnnlExec ex{dnnl::reorder(pd)};
  ex.bind(DNNL_ARG_FROM, pd.src_desc(), from);
  ex.bind(DNNL_ARG_TO, pd.dst_desc(), to);
  bind_scratchpad(ex, pd.scratchpad_desc());
  return ex;
}

}  // namespace cpu
}  // namespace cnn
