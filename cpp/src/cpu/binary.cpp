// CPU kernels of the broadcasting arithmetic ops (ops/binary.cpp), native loops over plain tensors, float and
// double. binary_*: the output shape and both operands' strides are collapsed (ops/binary.hpp) to the fewest
// dimensions; the innermost one is walked contiguously (stride 1) or as one repeated value (stride 0, a broadcast
// operand), in blocks of kBlock elements split over threads. binary_scalar: one elementwise pass. sum_to: the
// collapsed dimensions alternate between kept (the target has them) and reduced ones; threads split the target's
// rows (and, when the innermost dimension is kept, chunks of it), each summing its elements in float64 in the
// input's order, as the reference kernel does, so both give the same bits whatever the thread count.
// Nothing allocates in run().
#include <algorithm>
#include <vector>

#include "core/backend.hpp"
#include "core/op.hpp"
#include "ops/binary.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kBlock = 4096;        // elements per task of the elementwise kernels
constexpr int64_t kParallel = 1 << 15;  // below this many elements, one thread
constexpr int64_t kChunk = 256;         // sum_to: target elements per task when the innermost dimension is kept

// Offset of outer index o (over dims[0 .. r-2]) along strides st.
inline int64_t outer_offset(int64_t o, const std::vector<int64_t>& dims, const std::vector<int64_t>& st) {
  int64_t off = 0;
  for (size_t d = dims.size() - 1; d-- > 0;) {
    off += (o % dims[d]) * st[d];
    o /= dims[d];
  }
  return off;
}

template <class T, int K>
void inner_loop(const T* a, int64_t sa, const T* b, int64_t sb, T* z, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t j = 0; j < n; ++j) z[j] = bcast::apply<T>(K, a[j], b[j]);
  } else if (sa == 1) {
    const T v = b[0];
    for (int64_t j = 0; j < n; ++j) z[j] = bcast::apply<T>(K, a[j], v);
  } else if (sb == 1) {
    const T v = a[0];
    for (int64_t j = 0; j < n; ++j) z[j] = bcast::apply<T>(K, v, b[j]);
  } else {
    const T v = bcast::apply<T>(K, a[0], b[0]);
    for (int64_t j = 0; j < n; ++j) z[j] = v;
  }
}

template <class T, int K>
struct BinaryFwd : Kernel {
  bcast::Space sp;
  int64_t total;
  explicit BinaryFwd(const KernelCtx& c) : total(numel(c.out[0].shape)) {
    const Shape& out = c.out[0].shape;
    sp = bcast::collapse(out, {bcast::strides_in(c.in[0].shape, out), bcast::strides_in(c.in[1].shape, out)});
  }
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* a = static_cast<const T*>(r.in[0]);
    const T* b = static_cast<const T*>(r.in[1]);
    T* z = static_cast<T*>(r.out[0]);
    const auto& dims = sp.dims;
    const auto &sa = sp.strides[0], &sb = sp.strides[1];
    const int64_t inner = dims.back(), outer = total / inner;
    const int64_t per = (inner + kBlock - 1) / kBlock, tasks = outer * per;
    const int64_t ia = sa.back(), ib = sb.back();
#pragma omp parallel for schedule(static) if (total >= kParallel && tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t o = t / per, j0 = (t % per) * kBlock, n = std::min(kBlock, inner - j0);
      inner_loop<T, K>(a + outer_offset(o, dims, sa) + j0 * ia, ia, b + outer_offset(o, dims, sb) + j0 * ib, ib,
                       z + o * inner + j0, n);
    }
  }
};

template <class T, int K>
void scalar_pass(const T* x, T v, T* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallel)
  for (int64_t j = 0; j < n; ++j) y[j] = bcast::apply<T>(K, x[j], v);
}

template <class T>
struct ScalarFwd : Kernel {
  int kind;
  T value;
  int64_t n;
  explicit ScalarFwd(const KernelCtx& c)
      : kind(int(c.node.attrs.i("kind", 0))), value(T(c.node.attrs.f("value", 0.0))), n(numel(c.in[0].shape)) {}
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    switch (kind) {
      case bcast::kAdd: scalar_pass<T, bcast::kAdd>(x, value, y, n); break;
      case bcast::kSub: scalar_pass<T, bcast::kSub>(x, value, y, n); break;
      case bcast::kRsub: scalar_pass<T, bcast::kRsub>(x, value, y, n); break;
      case bcast::kMul: scalar_pass<T, bcast::kMul>(x, value, y, n); break;
      case bcast::kDiv: scalar_pass<T, bcast::kDiv>(x, value, y, n); break;
      default: scalar_pass<T, bcast::kRdiv>(x, value, y, n);
    }
  }
};

template <class T>
struct SumTo : Kernel {
  std::vector<int64_t> kept_dims, kept_xs, red_dims, red_xs;  // outer dims (all but the innermost), by kind
  int64_t L = 1;                                              // innermost dimension (contiguous in x)
  bool last_kept = false;
  int64_t rows = 1, reds = 1;
  double scale;
  explicit SumTo(const KernelCtx& c) : scale(c.node.attrs.f("scale", 1.0)) {
    const Shape& in = c.in[0].shape;
    bcast::Space sp = bcast::collapse(in, {bcast::strides_in(in, in), bcast::strides_in(c.out[0].shape, in)});
    const size_t r = sp.dims.size();
    L = sp.dims[r - 1];
    last_kept = sp.strides[1][r - 1] != 0;
    for (size_t d = 0; d + 1 < r; ++d) {
      if (sp.strides[1][d] != 0) {
        kept_dims.push_back(sp.dims[d]);
        kept_xs.push_back(sp.strides[0][d]);
        rows *= sp.dims[d];
      } else {
        red_dims.push_back(sp.dims[d]);
        red_xs.push_back(sp.strides[0][d]);
        reds *= sp.dims[d];
      }
    }
  }
  static int64_t offset(int64_t i, const std::vector<int64_t>& dims, const std::vector<int64_t>& st) {
    int64_t off = 0;
    for (size_t d = dims.size(); d-- > 0;) {
      off += (i % dims[d]) * st[d];
      i /= dims[d];
    }
    return off;
  }
  std::string impl() const override { return "native"; }
  void run(const RunCtx& r) override {
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    const int64_t per = last_kept ? (L + kChunk - 1) / kChunk : 1, tasks = rows * per;
    const bool par = tasks > 1 && rows * reds * L >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t row = t / per;
      const int64_t base = offset(row, kept_dims, kept_xs);
      if (last_kept) {
        const int64_t j0 = (t % per) * kChunk, n = std::min(kChunk, L - j0);
        double acc[kChunk];
        std::fill(acc, acc + n, 0.0);
        for (int64_t q = 0; q < reds; ++q) {
          const T* p = x + base + offset(q, red_dims, red_xs) + j0;
          for (int64_t j = 0; j < n; ++j) acc[j] += double(p[j]);
        }
        T* out = y + row * L + j0;
        for (int64_t j = 0; j < n; ++j) out[j] = T(acc[j] * scale);
      } else {
        double s = 0.0;
        for (int64_t q = 0; q < reds; ++q) {
          const T* p = x + base + offset(q, red_dims, red_xs);
          for (int64_t j = 0; j < L; ++j) s += double(p[j]);
        }
        y[row] = T(s * scale);
      }
    }
  }
};

template <template <class> class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    if (c.in[0].dtype == DType::f64) return std::make_unique<K<double>>(c);
    return std::make_unique<K<float>>(c);
  };
}
template <int Kind>
KernelFactory binary_factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    if (c.in[0].dtype == DType::f64) return std::make_unique<BinaryFwd<double, Kind>>(c);
    return std::make_unique<BinaryFwd<float, Kind>>(c);
  };
}

KernelRegistrar r1("cpu", "binary_add", binary_factory<bcast::kAdd>());
KernelRegistrar r2("cpu", "binary_sub", binary_factory<bcast::kSub>());
KernelRegistrar r3("cpu", "binary_mul", binary_factory<bcast::kMul>());
KernelRegistrar r4("cpu", "binary_div", binary_factory<bcast::kDiv>());
KernelRegistrar r5("cpu", "binary_scalar", factory<ScalarFwd>());
KernelRegistrar r6("cpu", "sum_to", factory<SumTo>());

}  // namespace
}  // namespace cpu
}  // namespace cnn
