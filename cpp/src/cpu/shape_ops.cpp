// CPU kernels of the shape op family (ops/shape_ops.cpp), plain layout, float and double.
//   transpose / slice: a strided gather over output rows (the last axis' run copied with memcpy when its
//     source is contiguous), rows split over threads. slice_grad: zero dx, then scatter each dy row (slices
//     never overlap). pad_nd: each output row maps its elements through the per-axis source index;
//     pad_nd_grad: each dx element sums the dy elements that read it in the reference's order
//     (shape_ops.hpp), so fast and reference gradients are equal bit for bit, whatever the thread count.
//   matmul: oneDNN's matmul primitive (batch broadcasting and transposes as strides) for float32 sessions that
//     are not deterministic; native loops otherwise (float64, deterministic sessions, or shapes oneDNN refuses):
//     each output row accumulates over k in ascending order, as the reference does. With sum_to reducing batch
//     dims, the full product goes to scratch and each target element sums its batch entries in ascending order.
// run() allocates nothing: the full product lives in the kernel's scratch.
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"
#include "ops/shape_ops_geom.hpp"

namespace cnn {
namespace cpu {
namespace {

using namespace shape_ops;
constexpr int64_t kParallel = 1 << 15;  // below this many elements, one thread

template <class T>
void gather(const Strided& s, const T* x, T* y) {
  const int64_t inner = s.dims[s.rank - 1], istride = s.stride[s.rank - 1];
  int64_t rows = 1;
  for (int d = 0; d < s.rank - 1; ++d) rows *= s.dims[d];
  const bool par = rows > 1 && rows * inner >= kParallel;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t row = 0; row < rows; ++row) {
    const T* src = x + s.offset(row * inner);
    T* dst = y + row * inner;
    if (istride == 1) {
      std::memcpy(dst, src, size_t(inner) * sizeof(T));
    } else {
      for (int64_t i = 0; i < inner; ++i) dst[i] = src[i * istride];
    }
  }
}

template <class T>
void scatter(const Strided& s, const T* dy, T* dx, int64_t nx) {
  std::memset(dx, 0, size_t(nx) * sizeof(T));
  const int64_t inner = s.dims[s.rank - 1], istride = s.stride[s.rank - 1];
  int64_t rows = 1;
  for (int d = 0; d < s.rank - 1; ++d) rows *= s.dims[d];
  const bool par = rows > 1 && rows * inner >= kParallel;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t row = 0; row < rows; ++row) {
    T* dst = dx + s.offset(row * inner);
    const T* src = dy + row * inner;
    for (int64_t i = 0; i < inner; ++i) dst[i * istride] = src[i];
  }
}

template <class T>
struct StridedCopy : Kernel {  // transpose, slice
  Strided s;
  StridedCopy(const KernelCtx& c, bool is_transpose)
      : s(is_transpose ? transpose_geom(c.node, c.in[0].shape) : slice_geom(c.node, c.in[0].shape)) {}
  void run(const RunCtx& r) override { gather(s, static_cast<const T*>(r.in[0]), static_cast<T*>(r.out[0])); }
};

template <class T>
struct SliceGrad : Kernel {
  Strided s;
  int64_t nx;
  explicit SliceGrad(const KernelCtx& c) : s(slice_geom(c.node, c.out[0].shape)), nx(numel(c.out[0].shape)) {}
  void run(const RunCtx& r) override { scatter(s, static_cast<const T*>(r.in[0]), static_cast<T*>(r.out[0]), nx); }
};

template <class T>
struct PadNd : Kernel {
  PadGeom g;
  T value;
  int64_t rows, inner;
  explicit PadNd(const KernelCtx& c) : g(pad_geom(c.node, c.in[0].shape)), value(T(c.node.attrs.f("value", 0.0))) {
    inner = g.out[g.rank - 1];
    rows = numel(c.out[0].shape) / inner;
  }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    const PadGeom& g = this->g;
    const int L = g.rank - 1;
    const int64_t n = g.in[L], before = g.before[L], inner = this->inner;
    const bool par = rows > 1 && rows * inner >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t row = 0; row < rows; ++row) {
      T* dst = y + row * inner;
      // source row: the leading axes mapped, the last one at 0
      int64_t off = 0, mul = n, q = row;
      bool constant = false;
      for (int d = L - 1; d >= 0; --d) {
        const int64_t sidx = pad_src(q % g.out[d], g.in[d], g.before[d], g.mode);
        q /= g.out[d];
        if (sidx < 0) constant = true;
        off += sidx * mul;
        mul *= g.in[d];
      }
      if (constant) {
        std::fill(dst, dst + inner, value);
        continue;
      }
      const T* src = x + off;
      for (int64_t o = 0; o < inner; ++o) {
        const int64_t sidx = pad_src(o, n, before, g.mode);
        dst[o] = sidx < 0 ? value : src[sidx];
      }
    }
  }
};

template <class T>
struct PadNdGrad : Kernel {
  PadGeom g;
  int64_t nx;
  explicit PadNdGrad(const KernelCtx& c) : g(pad_geom(c.node, c.out[0].shape)), nx(numel(c.out[0].shape)) {}
  void run(const RunCtx& r) override {
    const T* dy = static_cast<const T*>(r.in[0]);
    T* dx = static_cast<T*>(r.out[0]);
    const PadGeom& g = this->g;
    const bool par = nx >= kParallel / 4;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < nx; ++i) dx[i] = pad_grad_at(g, i, dy);
  }
};

template <class T>
struct Matmul : Kernel {
  MatmulGeom g;
  bool onednn = false;
  DnnlExec ex;
  std::string impl_name = "native";
  size_t pad_bytes = 0, full_off = 0, total = 0;
  explicit Matmul(const KernelCtx& c) {
    Shape ys;
    g = matmul_geom(c.node, c.in[0].shape, c.in[1].shape, &ys);
    if (std::is_same<T, float>::value && !c.deterministic) try_onednn(c);
    ScratchLayout S;
    S.add(pad_bytes);
    if (g.reduces) {
      full_off = S.add(size_t(g.nbatch * g.M * g.N) * sizeof(T));
    }
    total = S.total;
  }
  void try_onednn(const KernelCtx& c) {
    using dnnl::memory;
    const int r = g.brank + 2;
    memory::dims ad(r), as(r), bd(r), bs(r), dd(r);
    for (int d = 0; d < g.brank; ++d) {
      ad[d] = g.a_bs[d] ? g.batch[d] : 1;
      bd[d] = g.b_bs[d] ? g.batch[d] : 1;
      dd[d] = g.batch[d];
    }
    // strides of broadcast (size 1) dims are arbitrary: give them the next dim's extent times its stride
    int64_t sa = g.a_mat, sb = g.b_mat;
    for (int d = g.brank - 1; d >= 0; --d) {
      as[d] = sa, bs[d] = sb;
      sa *= ad[d], sb *= bd[d];
    }
    ad[r - 2] = g.M, ad[r - 1] = g.K, as[r - 2] = g.a_m, as[r - 1] = g.a_k;
    bd[r - 2] = g.K, bd[r - 1] = g.N, bs[r - 2] = g.b_k, bs[r - 1] = g.b_n;
    dd[r - 2] = g.M, dd[r - 1] = g.N;
    try {
      memory::desc a(ad, memory::data_type::f32, as), b(bd, memory::data_type::f32, bs);
      memory::desc d(dd, memory::data_type::f32,
                     memory::format_tag(r == 2   ? memory::format_tag::ab
                                        : r == 3 ? memory::format_tag::abc
                                        : r == 4 ? memory::format_tag::abcd
                                        : r == 5 ? memory::format_tag::abcde
                                                 : memory::format_tag::abcdef));
      dnnl::matmul::primitive_desc pd(engine(), a, b, d, user_scratchpad_attr());
      ex = DnnlExec(dnnl::matmul(pd));
      ex.bind(DNNL_ARG_SRC, a, Src::in(0));
      ex.bind(DNNL_ARG_WEIGHTS, b, Src::in(1));
      pad_bytes = pd.scratchpad_desc().get_size();
      bind_scratchpad(ex, pd.scratchpad_desc());
      full_off = (pad_bytes + 63) / 64 * 64;
      ex.bind(DNNL_ARG_DST, d, g.reduces ? Src::scratch(full_off) : Src::out(0));
      impl_name = onednn_impl(pd);
      onednn = true;
    } catch (const dnnl::error&) {
      onednn = false, pad_bytes = 0, ex = DnnlExec();
    }
  }
  size_t scratch_bytes() const override { return total; }
  std::string impl() const override { return impl_name; }
  void native(const T* A, const T* B, T* P) const {
    const MatmulGeom& g = this->g;
    const int64_t rows = g.nbatch * g.M;
    const bool par = rows > 1 && double(rows) * double(g.N) * double(g.K) >= double(kParallel);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t bi = row / g.M, m = row % g.M;
      int64_t ao, bo, to;
      g.offsets(bi, ao, bo, to);
      T* y = P + row * g.N;
      std::fill(y, y + g.N, T(0));
      for (int64_t k = 0; k < g.K; ++k) {
        const T av = A[ao + m * g.a_m + k * g.a_k];
        const T* brow = B + bo + k * g.b_k;
        if (g.b_n == 1) {
          for (int64_t n = 0; n < g.N; ++n) y[n] += av * brow[n];
        } else {
          for (int64_t n = 0; n < g.N; ++n) y[n] += av * brow[n * g.b_n];
        }
      }
    }
  }
  void run(const RunCtx& r) override {
    T* Y = static_cast<T*>(r.out[0]);
    T* P = g.reduces ? reinterpret_cast<T*>(static_cast<char*>(r.scratch) + full_off) : Y;
    if (onednn)
      ex.run(r);
    else
      native(static_cast<const T*>(r.in[0]), static_cast<const T*>(r.in[1]), P);
    if (!g.reduces) return;
    const int64_t mn = g.M * g.N, n = g.tbatch * mn, per = g.nbatch / g.tbatch;
    const bool par = n >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = i / mn, e = i % mn;
      T s = 0;
      for (int64_t j = 0; j < per; ++j) s += P[g.full_index(t, j) * mn + e];
      Y[i] = s;
    }
  }
};

template <template <class> class K, class... Extra>
KernelFactory factory(Extra... extra) {
  return [=](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    if (c.compute == DType::f64) return std::make_unique<K<double>>(c, extra...);
    return std::make_unique<K<float>>(c, extra...);
  };
}

KernelRegistrar r1("cpu", "transpose", factory<StridedCopy>(true));
KernelRegistrar r2("cpu", "slice", factory<StridedCopy>(false));
KernelRegistrar r3("cpu", "slice_grad", factory<SliceGrad>());
KernelRegistrar r4("cpu", "pad_nd", factory<PadNd>());
KernelRegistrar r5("cpu", "pad_nd_grad", factory<PadNdGrad>());
KernelRegistrar r6("cpu", "matmul", factory<Matmul>());

}  // namespace
}  // namespace cpu
}  // namespace cnn
