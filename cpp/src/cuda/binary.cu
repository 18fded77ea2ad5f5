// cuda kernels of the broadcasting arithmetic ops (ops/binary.cpp), float32, plain:
//   binary_add / binary_sub / binary_mul / binary_div: one thread per output element; the output shape and both
//     operands' strides are collapsed on the host (ops/binary.hpp) to at most kMaxDims dimensions, passed by value;
//   binary_scalar: elementwise x op value (kind 0 add .. 5 rdiv);
//   sum_to: one thread per target element, summing (in double, in the input's order, as the reference does) the
//     input elements that broadcast from it: the collapsed dimensions split into kept ones (the target's) and
//     reduced ones.
// Elementwise kernels read element i of a same-shaped input and write element i, so output 0 may alias input 0.
// Divisions and products are single IEEE operations (no FMA contraction is possible in these formulas).
#include "cuda/common.hpp"
#include "ops/binary.hpp"

namespace cnn::cuda {
namespace {

constexpr int kMaxDims = 8;

struct Geo {
  int r = 0;
  int64_t dims[kMaxDims];
  int64_t sa[kMaxDims];
  int64_t sb[kMaxDims];
};

Geo make_geo(const bcast::Space& sp, const char* op) {
  if (sp.dims.size() > size_t(kMaxDims))
    fail(std::string(op) + ": more than " + std::to_string(kMaxDims) + " dimensions after collapsing broadcasts");
  Geo g;
  g.r = int(sp.dims.size());
  for (int d = 0; d < g.r; ++d) {
    g.dims[d] = sp.dims[d];
    g.sa[d] = sp.strides[0][d];
    g.sb[d] = sp.strides.size() > 1 ? sp.strides[1][d] : 0;
  }
  return g;
}

template <int K>
__device__ __forceinline__ float apply(float a, float b) {
  if (K == bcast::kAdd) return a + b;
  if (K == bcast::kSub) return a - b;
  if (K == bcast::kRsub) return b - a;
  if (K == bcast::kMul) return a * b;
  if (K == bcast::kDiv) return a / b;
  return b / a;
}

template <int K>
__global__ void binary_kernel(const float* a, const float* b, float* z, int64_t n, Geo g) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = i, oa = 0, ob = 0;
    for (int d = g.r - 1; d >= 0; --d) {
      const int64_t q = rest % g.dims[d];
      rest /= g.dims[d];
      oa += q * g.sa[d];
      ob += q * g.sb[d];
    }
    z[i] = apply<K>(a[oa], b[ob]);
  }
}

template <int K>
__global__ void scalar_kernel(const float* x, float v, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = apply<K>(x[i], v);
}

// kept: the target's dims (dims/sa = x strides over them); red: the reduced dims (dims/sa) in g2.
__global__ void sum_to_kernel(const float* x, float* y, int64_t n_out, Geo kept, Geo red, int64_t n_red, double scale) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n_out; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest = t, base = 0;
    for (int d = kept.r - 1; d >= 0; --d) {
      base += (rest % kept.dims[d]) * kept.sa[d];
      rest /= kept.dims[d];
    }
    double s = 0.0;
    for (int64_t q = 0; q < n_red; ++q) {
      int64_t r2 = q, off = 0;
      for (int d = red.r - 1; d >= 0; --d) {
        off += (r2 % red.dims[d]) * red.sa[d];
        r2 /= red.dims[d];
      }
      s += double(x[base + off]);
    }
    y[t] = float(s * scale);
  }
}

template <int K>
struct Binary : Kernel {
  Geo g;
  int64_t n;
  const char* name;
  Binary(const KernelCtx& c, const char* nm) : n(numel(c.out[0].shape)), name(nm) {
    const Shape& out = c.out[0].shape;
    g = make_geo(bcast::collapse(out, {bcast::strides_in(c.in[0].shape, out), bcast::strides_in(c.in[1].shape, out)}),
                 nm);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    binary_kernel<K><<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), n, g);
    check_launch(name);
  }
};

struct Scalar : Kernel {
  int kind;
  float value;
  int64_t n;
  explicit Scalar(const KernelCtx& c)
      : kind(int(c.node.attrs.i("kind", 0))), value(float(c.node.attrs.f("value", 0.0))), n(numel(c.in[0].shape)) {}
  std::string impl() const override { return "cuda native"; }
  template <int K>
  void launch(const RunCtx& r) {
    scalar_kernel<K><<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]), value,
                                                                          static_cast<float*>(r.out[0]), n);
  }
  void run(const RunCtx& r) override {
    switch (kind) {
      case bcast::kAdd: launch<bcast::kAdd>(r); break;
      case bcast::kSub: launch<bcast::kSub>(r); break;
      case bcast::kRsub: launch<bcast::kRsub>(r); break;
      case bcast::kMul: launch<bcast::kMul>(r); break;
      case bcast::kDiv: launch<bcast::kDiv>(r); break;
      default: launch<bcast::kRdiv>(r);
    }
    check_launch("binary_scalar");
  }
};

struct SumTo : Kernel {
  Geo kept, red;
  int64_t n_out, n_red = 1;
  double scale;
  explicit SumTo(const KernelCtx& c) : n_out(numel(c.out[0].shape)), scale(c.node.attrs.f("scale", 1.0)) {
    const Shape& in = c.in[0].shape;
    bcast::Space sp = bcast::collapse(in, {bcast::strides_in(in, in), bcast::strides_in(c.out[0].shape, in)});
    bcast::Space k, rd;
    k.strides.resize(1);
    rd.strides.resize(1);
    for (size_t d = 0; d < sp.dims.size(); ++d) {
      bcast::Space& s = sp.strides[1][d] != 0 ? k : rd;
      s.dims.push_back(sp.dims[d]);
      s.strides[0].push_back(sp.strides[0][d]);
      if (&s == &rd) n_red *= sp.dims[d];
    }
    kept = make_geo(k, "sum_to");
    red = make_geo(rd, "sum_to");
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    sum_to_kernel<<<blocks_for(n_out), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), n_out, kept, red, n_red, scale);
    check_launch("sum_to");
  }
};

KernelRegistrar reg_add("cuda", "binary_add", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Binary<bcast::kAdd>>(c, "binary_add");
});
KernelRegistrar reg_sub("cuda", "binary_sub", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Binary<bcast::kSub>>(c, "binary_sub");
});
KernelRegistrar reg_mul("cuda", "binary_mul", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Binary<bcast::kMul>>(c, "binary_mul");
});
KernelRegistrar reg_div("cuda", "binary_div", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Binary<bcast::kDiv>>(c, "binary_div");
});
KernelRegistrar reg_scalar("cuda", "binary_scalar",
                           [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Scalar>(c); });
KernelRegistrar reg_sum_to("cuda", "sum_to",
                           [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<SumTo>(c); });

}  // namespace
}  // namespace cnn::cuda
