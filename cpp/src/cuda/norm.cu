// cuda kernels for layer_norm, group_norm and their gradients (ops/norm.cpp), float32, plain. Both ops normalize
// "rows": layer_norm's row (o, i) is the L values x[(o * L + l) * inner + i] (weight/bias index l); group_norm's
// row (n, g) is the Cg * S contiguous values of its channels (weight/bias index c = g * Cg + j / S).
//   forward: one block per row (grid-stride over rows): the row's sum, then the sum of squared deviations from
//            the mean, both in float64 and reduced in a fixed order (deterministic); mean and rstd = 1 / sqrt(var +
//            eps) (var biased) written as floats; y = (x - mean) * rstd * w + b in float64.
//   backward dx: one block per row: sums of g = dy * w and g * xhat (float64); dx = rstd (g - mean g - xhat mean(g
//            xhat)).
//   backward dweight/dbias: one thread per parameter element, summing over the rows in order (float64): a gather,
//            no atomics.
// Every element of y is written by the block that read its row, after the row's statistics: y may alias x.
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

struct Geo {
  bool group = false;
  int64_t outer = 1, L = 1, inner = 1;
  int64_t N = 1, C = 1, G = 1, Cg = 1, S = 1;
  __host__ __device__ int64_t rows() const { return group ? N * G : outer * inner; }
  __host__ __device__ int64_t M() const { return group ? Cg * S : L; }
  __host__ __device__ int64_t params() const { return group ? C : L; }
  __host__ __device__ int64_t offset(int64_t r, int64_t j) const {
    return group ? r * Cg * S + j : ((r / inner) * L + j) * inner + r % inner;
  }
  __host__ __device__ int64_t param(int64_t r, int64_t j) const { return group ? (r % G) * Cg + j / S : j; }
};

Geo geo_of(const Node& n, const Shape& x) {
  Geo g;
  const int64_t r = int64_t(x.size());
  if (n.op == "group_norm" || n.op == "group_norm_grad") {
    g.group = true;
    g.N = x[0];
    g.C = x[1];
    g.G = n.attrs.i("groups");
    g.Cg = g.C / g.G;
    for (int64_t d = 2; d < r; ++d) g.S *= x[d];
  } else {
    const int64_t axis = n.attrs.i("axis", r - 1), k = n.attrs.i("num_axes", r - axis);
    for (int64_t d = 0; d < r; ++d) (d < axis ? g.outer : d < axis + k ? g.L : g.inner) *= x[d];
  }
  return g;
}

// Sums (a, b) over the block in a fixed order; every thread gets the result.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kThreads / 32], sb[kThreads / 32];
  for (int o = 16; o > 0; o /= 2) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  double ta = 0, tb = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) {
    ta += sa[w];
    tb += sb[w];
  }
  a = ta;
  b = tb;
  __syncthreads();  // the shared arrays are reused by the next row
}

__global__ void norm_fwd_kernel(const float* x, const float* __restrict__ w, const float* __restrict__ b, float* y,
                                float* __restrict__ mean, float* __restrict__ rstd_out, Geo g, double eps) {
  const int64_t M = g.M();
  for (int64_t r = blockIdx.x; r < g.rows(); r += gridDim.x) {
    double s = 0, unused = 0;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += x[g.offset(r, j)];
    block_sum2(s, unused);
    const double mu = s / double(M);
    double q = 0;
    unused = 0;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const double d = double(x[g.offset(r, j)]) - mu;
      q += d * d;
    }
    block_sum2(q, unused);
    const double v = q / double(M), rstd = 1.0 / sqrt(v + eps);
    if (threadIdx.x == 0) {
      mean[r] = float(mu);
      rstd_out[r] = float(rstd);
    }
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const int64_t o = g.offset(r, j), p = g.param(r, j);
      double t = (double(x[o]) - mu) * rstd;
      if (w) t *= double(w[p]);
      if (b) t += double(b[p]);
      y[o] = float(t);
    }
  }
}

__global__ void norm_bwd_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                   const float* __restrict__ mean, const float* __restrict__ rs,
                                   const float* __restrict__ w, float* __restrict__ dx, Geo g, double eps) {
  const int64_t M = g.M();
  for (int64_t r = blockIdx.x; r < g.rows(); r += gridDim.x) {
    const double mu = mean[r], rstd = rs[r];
    double sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const int64_t o = g.offset(r, j);
      const double gj = double(dy[o]) * (w ? double(w[g.param(r, j)]) : 1.0);
      sg += gj;
      sgx += gj * ((double(x[o]) - mu) * rstd);
    }
    block_sum2(sg, sgx);
    sg /= double(M);
    sgx /= double(M);
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      const int64_t o = g.offset(r, j);
      const double gj = double(dy[o]) * (w ? double(w[g.param(r, j)]) : 1.0);
      const double xh = (double(x[o]) - mu) * rstd;
      dx[o] = float(rstd * (gj - sg - xh * sgx));
    }
  }
}

// dweight[p], dbias[p]: sums over every (row, j) with param(row, j) == p, in row order.
__global__ void norm_bwd_params_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                       const float* __restrict__ mean, const float* __restrict__ rs,
                                       float* __restrict__ dw, float* __restrict__ db, Geo g, double eps) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < g.params();
       p += int64_t(gridDim.x) * blockDim.x) {
    double sw = 0, sb = 0;
    if (g.group) {
      const int64_t grp = p / g.Cg;
      for (int64_t n = 0; n < g.N; ++n) {
        const int64_t r = n * g.G + grp;
        const double mu = mean[r], rstd = rs[r];
        const int64_t base = (n * g.C + p) * g.S;
        for (int64_t s = 0; s < g.S; ++s) {
          sw += double(dy[base + s]) * ((double(x[base + s]) - mu) * rstd);
          sb += dy[base + s];
        }
      }
    } else {
      for (int64_t r = 0; r < g.rows(); ++r) {
        const double mu = mean[r], rstd = rs[r];
        const int64_t o = g.offset(r, p);
        sw += double(dy[o]) * ((double(x[o]) - mu) * rstd);
        sb += dy[o];
      }
    }
    dw[p] = float(sw);
    db[p] = float(sb);
  }
}

unsigned row_blocks(int64_t rows) { return unsigned(rows < 65535LL * 32 ? rows : 65535LL * 32); }

struct Fwd : Kernel {
  Geo g;
  double eps;
  size_t nin;
  explicit Fwd(const KernelCtx& c)
      : g(geo_of(c.node, c.in[0].shape)), eps(c.node.attrs.f("eps", 1e-5)), nin(c.in.size()) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    norm_fwd_kernel<<<row_blocks(g.rows()), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), nin > 1 ? static_cast<const float*>(r.in[1]) : nullptr,
        nin > 2 ? static_cast<const float*>(r.in[2]) : nullptr, static_cast<float*>(r.out[0]),
        static_cast<float*>(r.out[1]), static_cast<float*>(r.out[2]), g, eps);
    check_launch("norm_fwd_kernel");
  }
};

struct Bwd : Kernel {
  Geo g;
  double eps;
  bool affine;
  explicit Bwd(const KernelCtx& c)
      : g(geo_of(c.node, c.in[1].shape)), eps(c.node.attrs.f("eps", 1e-5)), affine(c.in.size() == 5) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    auto in = [&](int i) { return static_cast<const float*>(r.in[i]); };
    cudaStream_t s = stream_of(r).stream;
    norm_bwd_dx_kernel<<<row_blocks(g.rows()), kThreads, 0, s>>>(in(0), in(1), in(2), in(3), affine ? in(4) : nullptr,
                                                                 static_cast<float*>(r.out[0]), g, eps);
    check_launch("norm_bwd_dx_kernel");
    if (!affine) return;
    norm_bwd_params_kernel<<<blocks_for(g.params()), kThreads, 0, s>>>(
        in(0), in(1), in(2), in(3), static_cast<float*>(r.out[1]), static_cast<float*>(r.out[2]), g, eps);
    check_launch("norm_bwd_params_kernel");
  }
};

std::unique_ptr<Kernel> make_fwd(const KernelCtx& c) { return std::make_unique<Fwd>(c); }
std::unique_ptr<Kernel> make_bwd(const KernelCtx& c) { return std::make_unique<Bwd>(c); }

KernelRegistrar r1("cuda", "layer_norm", make_fwd);
KernelRegistrar r2("cuda", "layer_norm_grad", make_bwd);
KernelRegistrar r3("cuda", "group_norm", make_fwd);
KernelRegistrar r4("cuda", "group_norm_grad", make_bwd);

}  // namespace
}  // namespace cnn::cuda
