// cpu kernels of layer_norm, group_norm and their gradients (ops/norm.cpp), float32, plain layout.
//
// layer_norm over the last dims (inner = 1, torch's LayerNorm / ONNX LayerNormalization): oneDNN's
// layer_normalization primitive (forward_training: it writes mean and variance; use_scale / use_shift as the node
// has weight / bias). It computes a row's mean, then its variance as the mean of (x - mean)^2: two passes, no
// E[x^2] - E[x]^2 cancellation, one thread per row, so the result is independent of the thread count. The variance
// it writes to the rstd output is turned into 1 / sqrt(var + eps) in place afterwards (outer values).
// Everything else is native (OpenMP), statistics in float64, two passes:
//  - layer_norm with inner > 1 (over channels of NCHW, ConvNeXt's LayerNorm2d): a unit is (o, a block of up to
//    kLanes consecutive inner positions); the L values of each lane are summed lane-parallel (contiguous reads);
//  - group_norm: each row (n, group) is contiguous; it is cut into chunks of kChunk values fixed by the shape,
//    chunk sums in parallel, combined per row in chunk order (then the same for the squared deviations from the
//    row mean), so the statistics do not depend on the thread count and few large rows still use every thread;
//  - backward: per row sums of g = dy * weight and g * xhat (float64), then dx = rstd (g - mean g - xhat mean(g
//    xhat)); dweight / dbias per parameter element summed over rows in a fixed order (float64).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kLanes = 64;          // inner positions per layer-norm unit
constexpr int64_t kChunk = 4096;        // group-norm values per chunk
constexpr int64_t kParallel = 1 << 14;  // elements below which a kernel runs on one thread

// x viewed as [outer, L, inner] (layer norm) or [N, G, Cg, S] (group norm).
struct Geo {
  bool group = false;
  int64_t outer = 1, L = 1, inner = 1;
  int64_t N = 1, C = 1, G = 1, Cg = 1, S = 1;
  Geo(const Node& n, const Shape& x) {
    const int64_t r = int64_t(x.size());
    if (n.op == "group_norm" || n.op == "group_norm_grad") {
      group = true;
      N = x[0];
      C = x[1];
      G = n.attrs.i("groups");
      Cg = C / G;
      for (int64_t d = 2; d < r; ++d) S *= x[d];
    } else {
      const int64_t axis = n.attrs.i("axis", r - 1), k = n.attrs.i("num_axes", r - axis);
      for (int64_t d = 0; d < r; ++d) (d < axis ? outer : d < axis + k ? L : inner) *= x[d];
    }
  }
  int64_t numel() const { return group ? N * C * S : outer * L * inner; }
  int64_t rows() const { return group ? N * G : outer * inner; }
  int64_t M() const { return group ? Cg * S : L; }
  int64_t chunks() const { return (M() + kChunk - 1) / kChunk; }  // group norm
};

// ---------------- layer norm, native (any inner) ----------------

// Unit u: o = u / B, lanes [i0, i0 + n) with B = blocks of kLanes per o.
struct LnUnits {
  int64_t B, U;
  explicit LnUnits(const Geo& g) : B((g.inner + kLanes - 1) / kLanes), U(g.outer * B) {}
  int64_t o(int64_t u) const { return u / B; }
  int64_t i0(int64_t u) const { return u % B * kLanes; }
};

void ln_fwd_native(const Geo& g, double eps, const float* x, const float* w, const float* b, float* y, float* mean,
                   float* rstd) {
  const LnUnits un(g);
  const int64_t L = g.L, I = g.inner;
#pragma omp parallel for schedule(static) if (g.numel() >= kParallel)
  for (int64_t u = 0; u < un.U; ++u) {
    const int64_t o = un.o(u), i0 = un.i0(u), n = std::min(kLanes, I - i0);
    double s[kLanes], q[kLanes];
    float mf[kLanes], rf[kLanes];
    for (int64_t i = 0; i < n; ++i) s[i] = q[i] = 0;
    const float* xo = x + o * L * I + i0;
    for (int64_t l = 0; l < L; ++l)
      for (int64_t i = 0; i < n; ++i) s[i] += xo[l * I + i];
    for (int64_t i = 0; i < n; ++i) s[i] /= double(L);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t i = 0; i < n; ++i) {
        const double d = xo[l * I + i] - s[i];
        q[i] += d * d;
      }
    for (int64_t i = 0; i < n; ++i) {
      const double v = q[i] / double(L);
      mean[o * I + i0 + i] = mf[i] = float(s[i]);
      rstd[o * I + i0 + i] = rf[i] = float(1 / std::sqrt(v + eps));
    }
    float* yo = y + o * L * I + i0;
    for (int64_t l = 0; l < L; ++l) {
      const float wl = w ? w[l] : 1.f, bl = b ? b[l] : 0.f;
      for (int64_t i = 0; i < n; ++i) yo[l * I + i] = (xo[l * I + i] - mf[i]) * (rf[i] * wl) + bl;
    }
  }
}

// dx, and (with w) dw/db.
void ln_bwd_native(const Geo& g, const float* dy, const float* x, const float* mean, const float* rstd, const float* w,
                   float* dx, float* dw, float* db) {
  const LnUnits un(g);
  const int64_t L = g.L, I = g.inner;
  const bool par = g.numel() >= kParallel;
  if (I == 1) {  // contiguous rows: vectorized reductions (a fixed lane split, the same at any thread count)
#pragma omp parallel for schedule(static) if (par)
    for (int64_t o = 0; o < g.outer; ++o) {
      const float *xo = x + o * L, *dyo = dy + o * L;
      const double mu = mean[o], rs = rstd[o];
      double sg = 0, sgx = 0;
      if (w) {
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t l = 0; l < L; ++l) {
          const double gj = double(dyo[l]) * double(w[l]);
          sg += gj;
          sgx += gj * ((xo[l] - mu) * rs);
        }
      } else {
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t l = 0; l < L; ++l) {
          sg += dyo[l];
          sgx += double(dyo[l]) * ((xo[l] - mu) * rs);
        }
      }
      sg /= double(L);
      sgx /= double(L);
      float* dxo = dx + o * L;
#pragma omp simd
      for (int64_t l = 0; l < L; ++l)
        dxo[l] = float(rs * (double(dyo[l]) * (w ? double(w[l]) : 1.0) - sg - (xo[l] - mu) * rs * sgx));
    }
  }
#pragma omp parallel for schedule(static) if (par && I > 1)
  for (int64_t u = 0; u < (I == 1 ? 0 : un.U); ++u) {
    const int64_t o = un.o(u), i0 = un.i0(u), n = std::min(kLanes, I - i0);
    double sg[kLanes], sgx[kLanes], mu[kLanes], rs[kLanes];
    for (int64_t i = 0; i < n; ++i) {
      sg[i] = sgx[i] = 0;
      mu[i] = mean[o * I + i0 + i];
      rs[i] = rstd[o * I + i0 + i];
    }
    const float *xo = x + o * L * I + i0, *dyo = dy + o * L * I + i0;
    for (int64_t l = 0; l < L; ++l) {
      const double wl = w ? w[l] : 1.0;
      for (int64_t i = 0; i < n; ++i) {
        const double gj = double(dyo[l * I + i]) * wl;
        sg[i] += gj;
        sgx[i] += gj * (xo[l * I + i] - mu[i]) * rs[i];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      sg[i] /= double(L);
      sgx[i] /= double(L);
    }
    float* dxo = dx + o * L * I + i0;
    for (int64_t l = 0; l < L; ++l) {
      const double wl = w ? w[l] : 1.0;
      for (int64_t i = 0; i < n; ++i) {
        const double xh = (xo[l * I + i] - mu[i]) * rs[i];
        dxo[l * I + i] = float(rs[i] * (double(dyo[l * I + i]) * wl - sg[i] - xh * sgx[i]));
      }
    }
  }
  if (!dw) return;
  // dw[l] = sum_{o, i} dy * xhat, db[l] = sum dy: blocks of 16 l, rows in order
  // (one l per block when the inner runs are long enough to stream: more blocks for the threads, e.g. C = 96)
  constexpr int64_t kB = 32;
  const int64_t B = I >= 64 ? 1 : kB, nb = (L + B - 1) / B;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t l0 = blk * B, n = std::min(B, L - l0);
    double aw[kB] = {}, ab[kB] = {};
    if (I == 1) {  // rows contiguous: l across the vector lanes
      for (int64_t o = 0; o < g.outer; ++o) {
        const float *xo = x + o * L + l0, *dyo = dy + o * L + l0;
        const double mu = mean[o], rs = rstd[o];
#pragma omp simd
        for (int64_t l = 0; l < n; ++l) {
          aw[l] += double(dyo[l]) * ((xo[l] - mu) * rs);
          ab[l] += dyo[l];
        }
      }
    }
    for (int64_t o = 0; o < (I == 1 ? 0 : g.outer); ++o)
      for (int64_t l = 0; l < n; ++l) {
        const int64_t base = (o * L + l0 + l) * I;
        double sw = 0, sb = 0;
        for (int64_t i = 0; i < I; ++i) {
          const double d = dy[base + i];
          sw += d * ((x[base + i] - double(mean[o * I + i])) * double(rstd[o * I + i]));
          sb += d;
        }
        aw[l] += sw;
        ab[l] += sb;
      }
    for (int64_t l = 0; l < n; ++l) {
      dw[l0 + l] = float(aw[l]);
      db[l0 + l] = float(ab[l]);
    }
  }
}

template <class F>
std::unique_ptr<Kernel> make(F f) {
  struct K : Kernel {
    F fn;
    std::string name;
    explicit K(F f) : fn(std::move(f)) {}
    void run(const RunCtx& r) override { fn(r); }
  };
  return std::make_unique<K>(std::move(f));
}

// oneDNN's layer normalization over the last dims (inner == 1).
struct LnDnnl : Kernel {
  std::string impl_name;
  DnnlExec ex;
  size_t scratch = 0;
  std::string impl() const override { return impl_name; }
  int64_t rows = 0;
  double eps = 0;
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override {
    ex.run(r);
    float* v = static_cast<float*>(r.out[2]);  // the variance -> rstd
#pragma omp parallel for schedule(static) if (rows >= kParallel)
    for (int64_t i = 0; i < rows; ++i) v[i] = float(1 / std::sqrt(double(v[i]) + eps));
  }
  LnDnnl(const KernelCtx& c, const Geo& g) : rows(g.outer), eps(c.node.attrs.f("eps", 1e-5)) {
    using nf = dnnl::normalization_flags;
    const size_t nin = c.in.size();
    auto md = plain_desc(Shape{g.outer, g.L}, DType::f32), stat = plain_desc(Shape{g.outer}, DType::f32),
         pmd = plain_desc(Shape{g.L}, DType::f32);
    nf flags = nf::none;
    if (nin > 1) flags = flags | nf::use_scale;
    if (nin > 2) flags = flags | nf::use_shift;
    dnnl::layer_normalization_forward::primitive_desc pd(engine(), dnnl::prop_kind::forward_training, md, md, stat,
                                                         float(c.node.attrs.f("eps", 1e-5)), flags,
                                                         user_scratchpad_attr());
    ex = DnnlExec(dnnl::layer_normalization_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, md, Src::in(0));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
    if (nin > 1) ex.bind(DNNL_ARG_SCALE, pmd, Src::in(1));
    if (nin > 2) ex.bind(DNNL_ARG_SHIFT, pmd, Src::in(2));
    ex.bind(DNNL_ARG_MEAN, stat, Src::out(1));
    ex.bind(DNNL_ARG_VARIANCE, stat, Src::out(2));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
};

std::unique_ptr<Kernel> ln_fwd(const KernelCtx& c) {
  const Geo g(c.node, c.in[0].shape);
  if (g.inner == 1) {
    try {
      return std::make_unique<LnDnnl>(c, g);
    } catch (const dnnl::error&) {  // oneDNN refuses the shape: the native loops do it
    }
  }
  const double eps = c.node.attrs.f("eps", 1e-5);
  const size_t nin = c.in.size();
  return make([g, eps, nin](const RunCtx& r) {
    ln_fwd_native(g, eps, static_cast<const float*>(r.in[0]), nin > 1 ? static_cast<const float*>(r.in[1]) : nullptr,
                  nin > 2 ? static_cast<const float*>(r.in[2]) : nullptr, static_cast<float*>(r.out[0]),
                  static_cast<float*>(r.out[1]), static_cast<float*>(r.out[2]));
  });
}

std::unique_ptr<Kernel> ln_bwd(const KernelCtx& c) {
  const Geo g(c.node, c.in[1].shape);
  const bool affine = c.in.size() == 5;
  return make([g, affine](const RunCtx& r) {
    auto in = [&](int i) { return static_cast<const float*>(r.in[i]); };
    ln_bwd_native(g, in(0), in(1), in(2), in(3), affine ? in(4) : nullptr, static_cast<float*>(r.out[0]),
                  affine ? static_cast<float*>(r.out[1]) : nullptr, affine ? static_cast<float*>(r.out[2]) : nullptr);
  });
}

// ---------------- group norm, native ----------------

// Calls f(p, j0, j1) for the runs of chunk k of a row that share a channel p (relative to the group: 0..Cg-1).
template <class F>
inline void chunk_runs(const Geo& g, int64_t k, F f) {
  const int64_t j0 = k * kChunk, j1 = std::min(g.M(), j0 + kChunk);
  for (int64_t j = j0; j < j1;) {
    const int64_t p = j / g.S, e = std::min(j1, (p + 1) * g.S);
    f(p, j, e);
    j = e;
  }
}

struct GnFwd : Kernel {
  Geo g;
  double eps;
  bool has_w, has_b;
  GnFwd(const KernelCtx& c) : g(c.node, c.in[0].shape) {
    eps = c.node.attrs.f("eps", 1e-5);
    has_w = c.in.size() > 1;
    has_b = c.in.size() > 2;
  }
  // chunk partials (R * K), then the float64 mean of each row (R)
  size_t scratch_bytes() const override { return size_t(g.rows() * (g.chunks() + 1)) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    const float* w = has_w ? static_cast<const float*>(r.in[1]) : nullptr;
    const float* b = has_b ? static_cast<const float*>(r.in[2]) : nullptr;
    float *y = static_cast<float*>(r.out[0]), *mean = static_cast<float*>(r.out[1]),
          *rstd = static_cast<float*>(r.out[2]);
    const int64_t R = g.rows(), K = g.chunks(), M = g.M();
    double* part = static_cast<double*>(r.scratch);
    double* mu = part + R * K;
    const bool par = g.numel() >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < R * K; ++u) {
      const float* xr = x + u / K * M;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = u % K * kChunk; j < std::min(M, u % K * kChunk + kChunk); ++j) s += xr[j];
      part[u] = s;
    }
    for (int64_t row = 0; row < R; ++row) {  // chunk order
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += part[row * K + k];
      mu[row] = s / double(M);
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < R * K; ++u) {
      const float* xr = x + u / K * M;
      const double m = mu[u / K];
      double q = 0;
#pragma omp simd reduction(+ : q)
      for (int64_t j = u % K * kChunk; j < std::min(M, u % K * kChunk + kChunk); ++j) {
        const double d = xr[j] - m;
        q += d * d;
      }
      part[u] = q;
    }
    for (int64_t row = 0; row < R; ++row) {
      double q = 0;
      for (int64_t k = 0; k < K; ++k) q += part[row * K + k];
      const double v = q / double(M);
      mean[row] = float(mu[row]);
      rstd[row] = float(1 / std::sqrt(v + eps));
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t u = 0; u < R * K; ++u) {
      const int64_t row = u / K, c0 = (row % g.G) * g.Cg;
      const float mf = mean[row], rf = rstd[row];
      const float* xr = x + row * M;
      float* yr = y + row * M;
      chunk_runs(g, u % K, [&](int64_t p, int64_t j0, int64_t j1) {
        const float sc = rf * (w ? w[c0 + p] : 1.f), sh = b ? b[c0 + p] : 0.f;
        for (int64_t j = j0; j < j1; ++j) yr[j] = (xr[j] - mf) * sc + sh;
      });
    }
  }
};

struct GnBwd : Kernel {
  Geo g;
  bool affine;
  GnBwd(const KernelCtx& c) : g(c.node, c.in[1].shape) { affine = c.in.size() == 5; }
  void run(const RunCtx& r) override {
    auto in = [&](int i) { return static_cast<const float*>(r.in[i]); };
    const float *dy = in(0), *x = in(1), *mean = in(2), *rstd = in(3), *w = affine ? in(4) : nullptr;
    float* dx = static_cast<float*>(r.out[0]);
    const int64_t R = g.rows(), M = g.M(), S = g.S;
    const bool par = g.numel() >= kParallel;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t row = 0; row < R; ++row) {
      const double mu = mean[row], rs = rstd[row];
      const int64_t c0 = (row % g.G) * g.Cg;
      const float *xr = x + row * M, *dyr = dy + row * M;
      double sg = 0, sgx = 0;
      for (int64_t p = 0; p < g.Cg; ++p) {
        double a = 0, bsum = 0;
#pragma omp simd reduction(+ : a, bsum)
        for (int64_t j = p * S; j < (p + 1) * S; ++j) {
          a += dyr[j];
          bsum += double(dyr[j]) * (xr[j] - mu);
        }
        const double wp = w ? w[c0 + p] : 1.0;
        sg += wp * a;
        sgx += wp * bsum * rs;
      }
      sg /= double(M);
      sgx /= double(M);
      float* dxr = dx + row * M;
      for (int64_t p = 0; p < g.Cg; ++p) {
        const double wp = w ? w[c0 + p] : 1.0;
        for (int64_t j = p * S; j < (p + 1) * S; ++j) {
          const double xh = (xr[j] - mu) * rs;
          dxr[j] = float(rs * (double(dyr[j]) * wp - sg - xh * sgx));
        }
      }
    }
    if (!affine) return;
    float *dw = static_cast<float*>(r.out[1]), *db = static_cast<float*>(r.out[2]);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t c = 0; c < g.C; ++c) {
      double aw = 0, ab = 0;
      for (int64_t n = 0; n < g.N; ++n) {
        const int64_t row = n * g.G + c / g.Cg;
        const double mu = mean[row], rs = rstd[row];
        const int64_t base = (n * g.C + c) * S;
        double sw = 0, sb = 0;
#pragma omp simd reduction(+ : sw, sb)
        for (int64_t s = 0; s < S; ++s) {
          sw += double(dy[base + s]) * (x[base + s] - mu);
          sb += dy[base + s];
        }
        aw += sw * rs;
        ab += sb;
      }
      dw[c] = float(aw);
      db[c] = float(ab);
    }
  }
};

KernelRegistrar r1("cpu", "layer_norm", ln_fwd);
KernelRegistrar r2("cpu", "layer_norm_grad", ln_bwd);
KernelRegistrar r3("cpu", "group_norm", [](const KernelCtx& c) { return std::make_unique<GnFwd>(c); });
KernelRegistrar r4("cpu", "group_norm_grad", [](const KernelCtx& c) { return std::make_unique<GnBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
