#include "cpu/dnnl_common.hpp"

#include "core/backend.hpp"

#include <omp.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <algorithm>
#include <cmath>
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
    case DType::s8: return dnnl::memory::data_type::s8;
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
  if (s.size() != 4)
    throw Error("internal: layout " + std::string(layout_name(l)) + " for a " + shape_str(s) + " tensor");
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

std::string onednn_impl(const dnnl::primitive_desc_base& pd) {
  dnnl_primitive_kind_t kind = dnnl_undefined_primitive;
  const char* info = nullptr;
  dnnl_primitive_desc_query(pd.get(), dnnl_query_primitive_kind, 0, &kind);
  dnnl_primitive_desc_query(pd.get(), dnnl_query_impl_info_str, 0, &info);
  std::string s = std::string("onednn:") + dnnl_prim_kind2str(kind);
  if (info && *info) s += std::string(" ") + info;
  return s;
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
  std::string impl_name = "native copy";  // the same bytes on both sides: a copy (or nothing, in place)
  explicit Reorder(const KernelCtx& c) {
    Layout from = Layout(c.node.attrs.i("from", 0)), to = Layout(c.node.attrs.i("to", 0));
    if (from == to && c.in[0].dtype == c.out[0].dtype) {
      bytes = layout_bytes(c.in[0], from);
      return;
    }
    dnnl::reorder::primitive_desc pd(engine(), md_of(c.in[0], from), engine(), md_of(c.out[0], to),
                                     user_scratchpad_attr());
    ex = DnnlExec(dnnl::reorder(pd));
    ex.bind(DNNL_ARG_FROM, pd.src_desc(), Src::in(0));
    ex.bind(DNNL_ARG_TO, pd.dst_desc(), Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
    impl_name = onednn_impl(pd);
  }
  size_t scratch_bytes() const override { return scratch; }
  std::string impl() const override { return impl_name; }
  void run(const RunCtx& r) override {
    if (!ex.empty())
      ex.run(r);
    else if (r.out[0] != r.in[0])
      std::memcpy(r.out[0], r.in[0], bytes);
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

void* resolve(const Src& s, const RunCtx& r) {
  switch (s.kind) {
    case Src::In: return r.in[s.index];
    case Src::Out: return r.out[s.index];
    case Src::Persist: return static_cast<char*>(r.persist) + s.offset;
    default: return static_cast<char*>(r.scratch) + s.offset;
  }
}

// ---- deterministic mode ----

OneThread::OneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
OneThread::~OneThread() { omp_set_num_threads(saved_); }

PartExec::PartExec(const std::vector<dnnl::primitive_desc>& pds, const std::vector<int>& args, int max_threads)
    : nargs_(args.size()), threads_(std::max(1, max_threads)) {
  for (const auto& pd : pds) {
    prims_.emplace_back(pd);
    pad_ = std::max(pad_, (pd.scratchpad_desc().get_size() + 63) / 64 * 64);
    has_pad_.push_back(pd.scratchpad_desc().get_size() > 0);
  }
  slots_.resize(size_t(threads_) * pds.size());
  for (int t = 0; t < threads_; ++t)
    for (size_t v = 0; v < pds.size(); ++v) {
      Slot& sl = slots_[size_t(t) * pds.size() + v];
      for (int a : args) sl.mem.emplace_back(pds[v].query_md(dnnl::query::exec_arg_md, a), engine(), nullptr);
      if (has_pad_[v]) sl.mem.emplace_back(pds[v].scratchpad_desc(), engine(), nullptr);
      for (size_t k = 0; k < args.size(); ++k) sl.args.push_back({args[k], sl.mem[k].get()});
      if (has_pad_[v]) sl.args.push_back({DNNL_ARG_SCRATCHPAD, sl.mem.back().get()});
    }
}

void PartExec::run(int64_t count, const std::function<int(int64_t)>& var, const std::function<void*(int64_t, int)>& ptr,
                   char* pads) const {
  const size_t nv = prims_.size();
  auto part = [&](int t, int64_t q) {
    const int v = var(q);
    Slot& sl = slots_[size_t(t) * nv + size_t(v)];
    for (size_t k = 0; k < nargs_; ++k) sl.mem[k].set_data_handle(ptr(q, int(k)));
    if (has_pad_[size_t(v)]) sl.mem[nargs_].set_data_handle(pads + pad_ * size_t(t));
    dnnl::error::wrap_c_api(
        dnnl_primitive_execute(prims_[size_t(v)].get(), stream().get(), int(sl.args.size()), sl.args.data()),
        "could not execute a primitive");
  };
  const int nt = int(std::min<int64_t>({int64_t(threads_), int64_t(omp_get_max_threads()), count}));
  if (nt <= 1) {  // outside any parallel region: keep oneDNN's own parallel loops (parallel_nd) to one thread too
    OneThread one;
    for (int64_t q = 0; q < count; ++q) part(0, q);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t q = 0; q < count; ++q) part(omp_get_thread_num(), q);
}

int64_t part_images(int64_t n, double flops_per_image, int64_t max_parts) {
  constexpr double kPartFlops = 4e6;
  const int64_t per = std::max<int64_t>(1, int64_t(std::ceil(kPartFlops / std::max(flops_per_image, 1.0))));
  const int64_t parts = std::max<int64_t>(1, std::min({(n + per - 1) / per, max_parts, kMaxParts, n}));
  return (n + parts - 1) / parts;
}

int64_t partial_parts(size_t partial_bytes) {
  constexpr size_t kBudget = size_t(32) << 20;
  int64_t p = 1;
  while (p * 2 <= kMaxParts && size_t(p * 2) * partial_bytes <= kBudget) p *= 2;
  return p;
}

MinibatchParts::MinibatchParts(int64_t n, int64_t part, const std::function<dnnl::primitive_desc(int64_t)>& make,
                               std::vector<PartArg> args)
    : n_(n), part_(std::max<int64_t>(1, std::min(part, n))), args_(std::move(args)) {
  if (args_.size() > kMaxArgs) throw Error("internal: MinibatchParts takes at most 16 arguments");
  count_ = (n_ + part_ - 1) / part_;
  tail_ = n_ % part_ != 0;
  const int threads = omp_get_max_threads();
  OneThread one;
  std::vector<dnnl::primitive_desc> pds{make(part_)};
  if (tail_) pds.push_back(make(n_ - (count_ - 1) * part_));
  pd_ = pds[0];
  std::vector<int> ids;
  for (const PartArg& a : args_) ids.push_back(a.arg);
  exec_ = PartExec(pds, ids, threads);
}

void MinibatchParts::run(const RunCtx& r, size_t pad_offset) const {
  void* base[kMaxArgs];
  for (size_t k = 0; k < args_.size(); ++k) base[k] = resolve(args_[k].src, r);
  const int64_t last = count_ - 1, part = part_;
  const bool tail = tail_;
  exec_.run(
      count_, [&](int64_t q) { return tail && q == last ? 1 : 0; },
      [&](int64_t q, int k) -> void* {
        const PartArg& a = args_[size_t(k)];
        char* p = static_cast<char*>(base[k]);
        if (a.kind == PartArg::Batched) return p + size_t(q * part) * a.stride;
        if (a.kind == PartArg::PerPart) return p + size_t(q) * a.stride;
        return p;
      },
      static_cast<char*>(r.scratch) + pad_offset);
}

void sum_parts(float* dst, const float* first, size_t stride, int64_t count, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1 && n * count >= (1 << 15))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kBlock, m = std::min(n, i0 + kBlock) - i0;
    alignas(64) float acc[kBlock];
    std::memcpy(acc, first + i0, size_t(m) * sizeof(float));
    for (int64_t q = 1; q < count; ++q) {
      const float* p = first + size_t(q) * stride + size_t(i0);
#pragma omp simd
      for (int64_t i = 0; i < m; ++i) acc[i] += p[i];
    }
    std::memcpy(dst + i0, acc, size_t(m) * sizeof(float));
  }
}

size_t PartialWeightGrads::reorder_pad(const dnnl::memory::desc& wmd, const dnnl::memory::desc& w_user) {
  auto r = weight_reorder(wmd, w_user);
  return r ? r->scratchpad_desc().get_size() : 0;
}

void PartialWeightGrads::plan(ScratchLayout& L, int64_t n, int64_t part, int64_t K, bool with_bias,
                              const dnnl::memory::desc& wmd, const dnnl::memory::desc& w_user,
                              const std::function<dnnl::primitive_desc(int64_t mb)>& make, Src src,
                              size_t src_per_image, Src diff_dst, size_t dst_per_image) {
  K_ = K;
  with_bias_ = with_bias;
  auto r = weight_reorder(wmd, w_user);
  direct_ = !r;
  const int64_t count = (n + part - 1) / part;
  dw_stride_ = (wmd.get_size() + 63) / 64 * 64;
  dw_n_ = int64_t(wmd.get_size() / 4);
  dw_off_ = L.add(dw_stride_ * size_t(count));
  db_stride_ = (size_t(K) * 4 + 63) / 64 * 64;
  if (with_bias) db_off_ = L.add(db_stride_ * size_t(count));
  std::vector<PartArg> args{{PartArg::Batched, DNNL_ARG_SRC, src, src_per_image},
                            {PartArg::Batched, DNNL_ARG_DIFF_DST, diff_dst, dst_per_image},
                            {PartArg::PerPart, DNNL_ARG_DIFF_WEIGHTS, Src::scratch(dw_off_), dw_stride_}};
  if (with_bias) args.push_back({PartArg::PerPart, DNNL_ARG_DIFF_BIAS, Src::scratch(db_off_), db_stride_});
  parts_ = MinibatchParts(n, part, make, args);
  pad_off_ = L.add(parts_.scratch_bytes());
  if (r) reorder_dw_ = bind_reorder(*r, Src::scratch(dw_off_), Src::out(0));
}

void PartialWeightGrads::run(const RunCtx& r) {
  parts_.run(r, pad_off_);
  char* sc = static_cast<char*>(r.scratch);
  float* dw0 = reinterpret_cast<float*>(sc + dw_off_);
  sum_parts(direct_ ? static_cast<float*>(r.out[0]) : dw0, dw0, dw_stride_ / 4, parts_.count(), dw_n_);
  if (!direct_) reorder_dw_.run(r);
  if (with_bias_)
    sum_parts(static_cast<float*>(r.out[1]), reinterpret_cast<float*>(sc + db_off_), db_stride_ / 4, parts_.count(),
              K_);
}

}  // namespace cpu
}  // namespace cnn
