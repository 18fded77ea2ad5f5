// Native CPU kernels (plain layout, float32) of ops/reduce.cpp: reduce_mean / reduce_sum / reduce_max and their
// backward ops, softmax_axis / log_softmax and theirs. Sums accumulate in float64 (red::lane_sum, red::dot);
// every summation order is fixed by the shape, so results do not depend on the thread count.
//
// Reductions: x's dimensions are coalesced (size-1 dimensions dropped, neighbours of the same kind — reduced or
// kept — merged). When the innermost one is reduced, each output sums contiguous runs (parallel over outputs);
// when it is kept (e.g. a mean over channels of NCHW), outputs go in blocks of up to kLanes contiguous lanes and
// each block adds rows of x lane-wise (parallel over blocks). softmax_axis / log_softmax see x as
// [outer, K, inner]: rows (inner = 1) use red's vectorized exp and chunked float64 sums; otherwise blocks of
// kLanes lanes of the inner dimension are normalized together. run() allocates nothing.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kLanes = 256;

std::vector<int64_t> axes_of(const Node& n, int64_t r) {
  std::vector<int64_t> a = n.attrs.is("axes", {});
  for (int64_t& v : a) v = v < 0 ? v + r : v;
  std::sort(a.begin(), a.end());
  return a;
}

// The coalesced view of a reduction (see the file comment).
struct Coal {
  std::vector<int64_t> sz, st, ost;  // sizes, strides in x, strides in y (0 for reduced dims)
  std::vector<bool> red;
  Coal(const Shape& s, const std::vector<int64_t>& axes) {
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 1) continue;
      const bool r = std::binary_search(axes.begin(), axes.end(), int64_t(i));
      if (!sz.empty() && red.back() == r)
        sz.back() *= s[i];
      else
        sz.push_back(s[i]), red.push_back(r);
    }
    if (sz.empty()) sz.push_back(1), red.push_back(false);
    st.assign(sz.size(), 0);
    ost.assign(sz.size(), 0);
    int64_t a = 1, b = 1;
    for (size_t i = sz.size(); i-- > 0;) {
      st[i] = a, a *= sz[i];
      if (!red[i]) ost[i] = b, b *= sz[i];
    }
  }
  // sizes and x strides of the kept (want_red = false) or reduced dims among the first `upto`
  void part(bool want_red, size_t upto, std::vector<int64_t>& s, std::vector<int64_t>& t) const {
    for (size_t i = 0; i < upto; ++i)
      if (red[i] == want_red) s.push_back(sz[i]), t.push_back(st[i]);
  }
};

inline int64_t offset(int64_t i, const std::vector<int64_t>& sz, const std::vector<int64_t>& st) {
  int64_t o = 0;
  for (size_t d = sz.size(); d-- > 0;) o += (i % sz[d]) * st[d], i /= sz[d];
  return o;
}
inline int64_t prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t d : v) p *= d;
  return p;
}

inline float max_step(float m, float v) { return (v > m || std::isnan(v)) && !std::isnan(m) ? v : m; }

// Forward reductions. kind: 0 sum, 1 mean, 2 max.
struct ReduceFwd : Kernel {
  int kind;
  Coal c;
  bool inner_red;
  int64_t L = 1, nout = 1, nouter = 1, P = 1;  // run length / lanes, outputs, outer outputs, reduced rows
  std::vector<int64_t> ksz, kst, rsz, rst;     // kept dims (outer ones in case B), the other reduced dims
  double scale = 1;
  ReduceFwd(const KernelCtx& k, int kd)
      : kind(kd), c(k.in[0].shape, axes_of(k.node, int64_t(k.in[0].shape.size()))), inner_red(c.red.back()) {
    const size_t n = c.sz.size();
    L = c.sz.back();
    nout = numel(k.out[0].shape);
    scale = kind == 1 ? double(nout) / double(numel(k.in[0].shape)) : 1.0;
    if (inner_red) {
      c.part(false, n - 1, ksz, kst);
      c.part(true, n - 1, rsz, rst);
    } else if (n > 1) {  // dims: ..., reduced (P rows of stride L), kept (L lanes)
      P = c.sz[n - 2];
      c.part(false, n - 2, ksz, kst);
      c.part(true, n - 2, rsz, rst);
      nouter = nout / L;
    }
  }
  // A few long runs (a full reduction, a mean over the last axes of a small batch) are cut into pieces of
  // kPiece elements summed in parallel into scratch, then combined in piece order.
  static constexpr int64_t kPiece = int64_t(1) << 16;
  int64_t pieces() const {
    return inner_red && rsz.empty() && nout < 64 && L >= 2 * kPiece ? (L + kPiece - 1) / kPiece : 0;
  }
  size_t scratch_bytes() const override { return size_t(nout * pieces()) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    float* y = static_cast<float*>(r.out[0]);
    const int64_t nr = prod(rsz), np = pieces();
    if (np) {
      double* part = static_cast<double*>(r.scratch);
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < nout * np; ++t) {
        const int64_t o = t / np, i0 = t % np * kPiece, n = std::min(kPiece, L - i0);
        const float* p = x + offset(o, ksz, kst) + i0;
        if (kind == 2) {
          float m = p[0];
          for (int64_t i = 1; i < n; ++i) m = max_step(m, p[i]);
          part[t] = m;
        } else {
          part[t] = 0;
          red::lane_sum(p, n, 1, 1, part + t);
        }
      }
      for (int64_t o = 0; o < nout; ++o) {
        double a = part[o * np];
        for (int64_t k = 1; k < np; ++k)
          a = kind == 2 ? double(max_step(float(a), float(part[o * np + k]))) : a + part[o * np + k];
        y[o] = kind == 2 ? float(a) : float(a * scale);
      }
      return;
    }
    if (inner_red) {
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < nout; ++o) {
        const int64_t b = offset(o, ksz, kst);
        if (kind == 2) {
          float m = x[b];
          for (int64_t q = 0; q < nr; ++q) {
            const float* p = x + b + offset(q, rsz, rst);
            for (int64_t i = 0; i < L; ++i) m = max_step(m, p[i]);
          }
          y[o] = m;
        } else {
          double acc = 0;
          for (int64_t q = 0; q < nr; ++q) red::lane_sum(x + b + offset(q, rsz, rst), L, 1, 1, &acc);
          y[o] = float(acc * scale);
        }
      }
      return;
    }
    if (c.sz.size() == 1) {  // nothing reduced (every reduced axis has size 1)
      std::memcpy(y, x, size_t(nout) * sizeof(float));
      return;
    }
    const int64_t nb = (L + kLanes - 1) / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < nouter * nb; ++t) {
      const int64_t oo = t / nb, c0 = t % nb * kLanes, V = std::min(kLanes, L - c0);
      const int64_t b = offset(oo, ksz, kst) + c0;
      float* yo = y + oo * L + c0;
      if (kind == 2) {
        float m[kLanes];
        std::memcpy(m, x + b, size_t(V) * sizeof(float));
        for (int64_t q = 0; q < nr; ++q) {
          const float* p = x + b + offset(q, rsz, rst);
          for (int64_t pp = 0; pp < P; ++pp)
            for (int64_t v = 0; v < V; ++v) m[v] = max_step(m[v], p[pp * L + v]);
        }
        std::memcpy(yo, m, size_t(V) * sizeof(float));
      } else {
        double acc[kLanes];
        std::fill(acc, acc + V, 0.0);
        for (int64_t q = 0; q < nr; ++q) red::lane_sum(x + b + offset(q, rsz, rst), P, V, L, acc);
        for (int64_t v = 0; v < V; ++v) yo[v] = float(acc[v] * scale);
      }
    }
  }
};

// reduce_sum_grad: dx = dy broadcast * scale, row by row of dx's innermost coalesced dim.
struct SumGrad : Kernel {
  Coal c;
  float scale;
  std::vector<int64_t> osz, ost;
  int64_t L, rows;
  explicit SumGrad(const KernelCtx& k)
      : c(k.out[0].shape, axes_of(k.node, int64_t(k.out[0].shape.size()))), scale(float(k.node.attrs.f("scale", 1.0))) {
    osz.assign(c.sz.begin(), c.sz.end() - 1);
    ost.assign(c.ost.begin(), c.ost.end() - 1);
    L = c.sz.back();
    rows = prod(osz);
  }
  void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    float* dx = static_cast<float*>(r.out[0]);
    const bool inner_red = c.red.back();
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < rows; ++q) {
      const float* d = dy + offset(q, osz, ost);
      float* o = dx + q * L;
      if (inner_red)
        std::fill(o, o + L, d[0] * scale);
      else
        for (int64_t i = 0; i < L; ++i) o[i] = d[i] * scale;
    }
  }
};

// reduce_max_grad (dy, x, y) -> dx: dy / (number of ties) at the maxima, 0 elsewhere.
struct MaxGrad : Kernel {
  ReduceFwd g;  // the forward geometry (of x)
  explicit MaxGrad(const KernelCtx& k) : g(fwd_ctx(k), 2) {}
  static KernelCtx fwd_ctx(const KernelCtx& k) {
    KernelCtx f = k;
    f.in = {k.in[1]};
    f.out = {k.in[0]};
    return f;
  }
  void run(const RunCtx& r) override {
    const float *dy = static_cast<const float*>(r.in[0]), *x = static_cast<const float*>(r.in[1]),
                *y = static_cast<const float*>(r.in[2]);
    float* dx = static_cast<float*>(r.out[0]);
    const int64_t nr = prod(g.rsz), L = g.L, P = g.P;
    if (g.c.sz.size() == 1 && !g.inner_red) {
      for (int64_t i = 0; i < g.nout; ++i) dx[i] = x[i] == y[i] ? dy[i] : 0.f;
      return;
    }
    if (g.inner_red) {
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < g.nout; ++o) {
        const int64_t b = offset(o, g.ksz, g.kst);
        const float m = y[o];
        int64_t cnt = 0;
        for (int64_t q = 0; q < nr; ++q) {
          const float* p = x + b + offset(q, g.rsz, g.rst);
          for (int64_t i = 0; i < L; ++i) cnt += p[i] == m;
        }
        const float d = cnt ? dy[o] / float(cnt) : 0.f;
        for (int64_t q = 0; q < nr; ++q) {
          const int64_t off = b + offset(q, g.rsz, g.rst);
          for (int64_t i = 0; i < L; ++i) dx[off + i] = x[off + i] == m ? d : 0.f;
        }
      }
      return;
    }
    const int64_t nb = (L + kLanes - 1) / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g.nouter * nb; ++t) {
      const int64_t oo = t / nb, c0 = t % nb * kLanes, V = std::min(kLanes, L - c0);
      const int64_t b = offset(oo, g.ksz, g.kst) + c0;
      const float* m = y + oo * L + c0;
      int64_t cnt[kLanes] = {};
      for (int64_t q = 0; q < nr; ++q) {
        const float* p = x + b + offset(q, g.rsz, g.rst);
        for (int64_t pp = 0; pp < P; ++pp)
          for (int64_t v = 0; v < V; ++v) cnt[v] += p[pp * L + v] == m[v];
      }
      float d[kLanes];
      for (int64_t v = 0; v < V; ++v) d[v] = cnt[v] ? dy[oo * L + c0 + v] / float(cnt[v]) : 0.f;
      for (int64_t q = 0; q < nr; ++q) {
        const int64_t off = b + offset(q, g.rsz, g.rst);
        for (int64_t pp = 0; pp < P; ++pp)
          for (int64_t v = 0; v < V; ++v) {
            const int64_t i = off + pp * L + v;
            dx[i] = x[i] == m[v] ? d[v] : 0.f;
          }
      }
    }
  }
};

// ---- softmax_axis / log_softmax ----

void split(const KernelCtx& k, const Shape& s, int64_t& outer, int64_t& K, int64_t& inner) {
  int64_t a = k.node.attrs.i("axis", -1);
  if (a < 0) a += int64_t(s.size());
  outer = inner = 1;
  for (int64_t i = 0; i < a; ++i) outer *= s[i];
  K = s[a];
  for (size_t i = a + 1; i < s.size(); ++i) inner *= s[i];
}

// One contiguous row: its max M and S = sum exp(x - M) (float64), chunk by chunk in order.
void row_stats(const float* x, int64_t K, float& M, double& S) {
  M = -INFINITY;
  S = 0;
  for (int64_t c0 = 0; c0 < K; c0 += red::kSoftmaxChunk) {
    float m;
    double s;
    red::softmax_chunk(x + c0, std::min(red::kSoftmaxChunk, K - c0), &m, &s, nullptr);
    const float nm = std::max(M, m);
    S = (c0 ? S * std::exp(double(M) - double(nm)) : 0.0) + s * std::exp(double(m) - double(nm));
    M = nm;
  }
}

template <bool Log>
struct SoftmaxFwd : Kernel {
  int64_t outer, K, inner;
  explicit SoftmaxFwd(const KernelCtx& k) { split(k, k.in[0].shape, outer, K, inner); }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    float* y = static_cast<float*>(r.out[0]);
    if (inner == 1) {
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < outer; ++o) {
        const float* xr = x + o * K;
        float* yr = y + o * K;
        float M;
        double S;
        row_stats(xr, K, M, S);
        if (Log) {
          const float sub = float(double(M) + std::log(S));
          for (int64_t k = 0; k < K; ++k) yr[k] = xr[k] - sub;
        } else {
          red::exp_scale(xr, yr, K, M, float(1.0 / S));
        }
      }
      return;
    }
    const int64_t nb = (inner + kLanes - 1) / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < outer * nb; ++t) {
      const int64_t o = t / nb, c0 = t % nb * kLanes, V = std::min(kLanes, inner - c0);
      const float* xb = x + o * K * inner + c0;
      float* yb = y + o * K * inner + c0;
      float m[kLanes];
      double s[kLanes];
      std::memcpy(m, xb, size_t(V) * sizeof(float));
      for (int64_t k = 1; k < K; ++k)
        for (int64_t v = 0; v < V; ++v) m[v] = std::max(m[v], xb[k * inner + v]);
      std::fill(s, s + V, 0.0);
      if (Log) {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t v = 0; v < V; ++v) s[v] += double(std::exp(xb[k * inner + v] - m[v]));
        float sub[kLanes];
        for (int64_t v = 0; v < V; ++v) sub[v] = float(double(m[v]) + std::log(s[v]));
        for (int64_t k = 0; k < K; ++k)
          for (int64_t v = 0; v < V; ++v) yb[k * inner + v] = xb[k * inner + v] - sub[v];
      } else {  // y = exp(x - m) first (y may be x: each element is read before it is written), then y /= s
        for (int64_t k = 0; k < K; ++k)
          for (int64_t v = 0; v < V; ++v) {
            const float e = std::exp(xb[k * inner + v] - m[v]);
            yb[k * inner + v] = e;
            s[v] += double(e);
          }
        for (int64_t v = 0; v < V; ++v) s[v] = 1.0 / s[v];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t v = 0; v < V; ++v) yb[k * inner + v] = float(double(yb[k * inner + v]) * s[v]);
      }
    }
  }
};

template <bool Log>
struct SoftmaxBwd : Kernel {
  int64_t outer, K, inner;
  explicit SoftmaxBwd(const KernelCtx& k) { split(k, k.in[0].shape, outer, K, inner); }
  void run(const RunCtx& r) override {
    const float *dy = static_cast<const float*>(r.in[0]), *y = static_cast<const float*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    if (inner == 1) {
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < outer; ++o) {
        const int64_t b = o * K;
        if (Log) {
          double s = 0;
          red::lane_sum(dy + b, K, 1, 1, &s);
          for (int64_t k = 0; k < K; ++k) dx[b + k] = float(double(dy[b + k]) - std::exp(double(y[b + k])) * s);
        } else {
          red::softmax_bwd(dy + b, y + b, dx + b, K, float(red::dot(dy + b, y + b, K)));
        }
      }
      return;
    }
    const int64_t nb = (inner + kLanes - 1) / kLanes;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < outer * nb; ++t) {
      const int64_t o = t / nb, c0 = t % nb * kLanes, V = std::min(kLanes, inner - c0);
      const int64_t b = o * K * inner + c0;
      double s[kLanes];
      std::fill(s, s + V, 0.0);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t v = 0; v < V; ++v) {
          const int64_t j = b + k * inner + v;
          s[v] += Log ? double(dy[j]) : double(dy[j]) * double(y[j]);
        }
      for (int64_t k = 0; k < K; ++k)
        for (int64_t v = 0; v < V; ++v) {
          const int64_t j = b + k * inner + v;
          dx[j] =
              Log ? float(double(dy[j]) - std::exp(double(y[j])) * s[v]) : float(double(y[j]) * (double(dy[j]) - s[v]));
        }
    }
  }
};

KernelRegistrar r1("cpu", "reduce_sum", [](const KernelCtx& c) { return std::make_unique<ReduceFwd>(c, 0); });
KernelRegistrar r2("cpu", "reduce_mean", [](const KernelCtx& c) { return std::make_unique<ReduceFwd>(c, 1); });
KernelRegistrar r3("cpu", "reduce_max", [](const KernelCtx& c) { return std::make_unique<ReduceFwd>(c, 2); });
KernelRegistrar r4("cpu", "reduce_sum_grad", [](const KernelCtx& c) { return std::make_unique<SumGrad>(c); });
KernelRegistrar r5("cpu", "reduce_max_grad", [](const KernelCtx& c) { return std::make_unique<MaxGrad>(c); });
KernelRegistrar r6("cpu", "softmax_axis", [](const KernelCtx& c) { return std::make_unique<SoftmaxFwd<false>>(c); });
KernelRegistrar r7("cpu", "log_softmax", [](const KernelCtx& c) { return std::make_unique<SoftmaxFwd<true>>(c); });
KernelRegistrar r8("cpu", "softmax_axis_grad",
                   [](const KernelCtx& c) { return std::make_unique<SoftmaxBwd<false>>(c); });
KernelRegistrar r9("cpu", "log_softmax_grad", [](const KernelCtx& c) { return std::make_unique<SoftmaxBwd<true>>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
