// cuda kernels of ops/reduce.cpp (float32, plain): reduce_mean / reduce_sum / reduce_max, reduce_sum_grad,
// reduce_max_grad, softmax_axis / log_softmax and their grads. Simple, deterministic kernels that follow the
// reference loops: one thread per output of a reduction (summing its group in float64 in the reference's order;
// reduce_max_grad counts the ties of its group, then writes the whole group: a gather, no atomics), one thread
// per input element for reduce_sum_grad, one thread per (outer, inner) position for the softmaxes over
// [outer, K, inner] (float64 sums). The geometry (x's dimensions coalesced, split into kept and reduced ones) is
// computed once at construction and passed by value.
#include <algorithm>
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

constexpr int kMaxDims = 12;

struct Dims {
  int n = 0;
  int64_t sz[kMaxDims] = {}, st[kMaxDims] = {};
  void push(const Node& node, int64_t s, int64_t t) {
    if (n == kMaxDims) op_error(node, "more than 12 dimensions after coalescing (the cuda kernel's limit)");
    sz[n] = s, st[n] = t, ++n;
  }
  __host__ __device__ int64_t offset(int64_t i) const {
    int64_t o = 0;
    for (int d = n - 1; d >= 0; --d) o += (i % sz[d]) * st[d], i /= sz[d];
    return o;
  }
};

// kept: kept dims with x strides; red: reduced dims with x strides; all: every dim with y strides (0 if reduced)
struct Geom {
  Dims kept, red, all;
  int64_t nout = 1, nred = 1, nin = 1;
  Geom(const Node& node, const Shape& s) {
    std::vector<int64_t> axes = node.attrs.is("axes", {});
    for (int64_t& a : axes) a = a < 0 ? a + int64_t(s.size()) : a;
    std::vector<int64_t> sz, st, ost;
    std::vector<bool> rd;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 1) continue;
      const bool r = std::find(axes.begin(), axes.end(), int64_t(i)) != axes.end();
      if (!sz.empty() && rd.back() == r)
        sz.back() *= s[i];
      else
        sz.push_back(s[i]), rd.push_back(r);
    }
    st.assign(sz.size(), 0);
    ost.assign(sz.size(), 0);
    int64_t a = 1, b = 1;
    for (size_t i = sz.size(); i-- > 0;) {
      st[i] = a, a *= sz[i];
      if (!rd[i]) ost[i] = b, b *= sz[i];
    }
    for (size_t i = 0; i < sz.size(); ++i) {
      (rd[i] ? red : kept).push(node, sz[i], st[i]);
      all.push(node, sz[i], ost[i]);
      (rd[i] ? nred : nout) *= sz[i];
    }
    nin = nout * nred;
  }
};

// kind: 0 sum, 1 mean, 2 max (NaN propagates)
__global__ void reduce_kernel(const float* x, float* y, Geom g, int kind, double scale) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < g.nout; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = g.kept.offset(o);
    if (kind == 2) {
      float m = x[b];
      for (int64_t r = 1; r < g.nred; ++r) {
        const float v = x[b + g.red.offset(r)];
        m = (v > m || isnan(v)) && !isnan(m) ? v : m;
      }
      y[o] = m;
    } else {
      double s = 0;
      for (int64_t r = 0; r < g.nred; ++r) s += double(x[b + g.red.offset(r)]);
      y[o] = float(s * scale);
    }
  }
}

__global__ void sum_grad_kernel(const float* dy, float* dx, Geom g, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.nin; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[g.all.offset(i)] * scale;
}

__global__ void max_grad_kernel(const float* dy, const float* x, const float* y, float* dx, Geom g) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < g.nout; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = g.kept.offset(o);
    const float m = y[o];
    int64_t cnt = 0;
    for (int64_t r = 0; r < g.nred; ++r) cnt += x[b + g.red.offset(r)] == m;
    const float d = cnt ? dy[o] / float(cnt) : 0.f;
    for (int64_t r = 0; r < g.nred; ++r) {
      const int64_t i = b + g.red.offset(r);
      dx[i] = x[i] == m ? d : 0.f;
    }
  }
}

template <bool Log>
__global__ void softmax_kernel(const float* x, float* y, int64_t outer, int64_t K, int64_t inner) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < outer * inner;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = t / inner * K * inner + t % inner;
    float m = x[b];
    for (int64_t k = 1; k < K; ++k) m = fmaxf(m, x[b + k * inner]);
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += exp(double(x[b + k * inner] - m));
    const double ls = log(s);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = b + k * inner;
      const double d = double(x[j] - m);
      y[j] = Log ? float(d - ls) : float(exp(d) / s);
    }
  }
}

template <bool Log>
__global__ void softmax_grad_kernel(const float* dy, const float* y, float* dx, int64_t outer, int64_t K,
                                    int64_t inner) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < outer * inner;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = t / inner * K * inner + t % inner;
    double s = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = b + k * inner;
      s += Log ? double(dy[j]) : double(dy[j]) * double(y[j]);
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = b + k * inner;
      dx[j] = Log ? float(double(dy[j]) - exp(double(y[j])) * s) : float(double(y[j]) * (double(dy[j]) - s));
    }
  }
}

struct ReduceFwd : Kernel {
  Geom g;
  int kind;
  ReduceFwd(const KernelCtx& c, int k) : g(c.node, c.in[0].shape), kind(k) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    const double scale = kind == 1 ? 1.0 / double(g.nred) : 1.0;
    reduce_kernel<<<blocks_for(g.nout), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), g, kind, scale);
    check_launch("reduce");
  }
};

struct SumGrad : Kernel {
  Geom g;
  float scale;
  explicit SumGrad(const KernelCtx& c) : g(c.node, c.out[0].shape), scale(float(c.node.attrs.f("scale", 1.0))) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    sum_grad_kernel<<<blocks_for(g.nin), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                             static_cast<float*>(r.out[0]), g, scale);
    check_launch("reduce_sum_grad");
  }
};

struct MaxGrad : Kernel {
  Geom g;
  explicit MaxGrad(const KernelCtx& c) : g(c.node, c.in[1].shape) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    max_grad_kernel<<<blocks_for(g.nout), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[2]),
        static_cast<float*>(r.out[0]), g);
    check_launch("reduce_max_grad");
  }
};

struct Axis {
  int64_t outer = 1, K = 1, inner = 1;
  Axis(const KernelCtx& c) {
    const Shape& s = c.in[0].shape;
    int64_t a = c.node.attrs.i("axis", -1);
    if (a < 0) a += int64_t(s.size());
    for (int64_t i = 0; i < a; ++i) outer *= s[i];
    K = s[a];
    for (size_t i = a + 1; i < s.size(); ++i) inner *= s[i];
  }
};

template <bool Log>
struct SoftmaxFwd : Kernel {
  Axis ax;
  explicit SoftmaxFwd(const KernelCtx& c) : ax(c) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    softmax_kernel<Log><<<blocks_for(ax.outer * ax.inner), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), ax.outer, ax.K, ax.inner);
    check_launch(Log ? "log_softmax" : "softmax_axis");
  }
};

template <bool Log>
struct SoftmaxBwd : Kernel {
  Axis ax;
  explicit SoftmaxBwd(const KernelCtx& c) : ax(c) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    softmax_grad_kernel<Log><<<blocks_for(ax.outer * ax.inner), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), ax.outer,
        ax.K, ax.inner);
    check_launch(Log ? "log_softmax_grad" : "softmax_axis_grad");
  }
};

using KP = std::unique_ptr<Kernel>;
KernelRegistrar r1("cuda", "reduce_sum", [](const KernelCtx& c) -> KP { return std::make_unique<ReduceFwd>(c, 0); });
KernelRegistrar r2("cuda", "reduce_mean", [](const KernelCtx& c) -> KP { return std::make_unique<ReduceFwd>(c, 1); });
KernelRegistrar r3("cuda", "reduce_max", [](const KernelCtx& c) -> KP { return std::make_unique<ReduceFwd>(c, 2); });
KernelRegistrar r4("cuda", "reduce_sum_grad", [](const KernelCtx& c) -> KP { return std::make_unique<SumGrad>(c); });
KernelRegistrar r5("cuda", "reduce_max_grad", [](const KernelCtx& c) -> KP { return std::make_unique<MaxGrad>(c); });
KernelRegistrar r6("cuda", "softmax_axis",
                   [](const KernelCtx& c) -> KP { return std::make_unique<SoftmaxFwd<false>>(c); });
KernelRegistrar r7("cuda", "log_softmax",
                   [](const KernelCtx& c) -> KP { return std::make_unique<SoftmaxFwd<true>>(c); });
KernelRegistrar r8("cuda", "softmax_axis_grad",
                   [](const KernelCtx& c) -> KP { return std::make_unique<SoftmaxBwd<false>>(c); });
KernelRegistrar r9("cuda", "log_softmax_grad",
                   [](const KernelCtx& c) -> KP { return std::make_unique<SoftmaxBwd<true>>(c); });

}  // namespace
}  // namespace cnn::cuda
