// cuda kernels for batch_norm and batch_norm_grad (ops/batch_norm.cpp), float32 plain x [N, C, H, W] or [N, C],
// statistics and parameters float32 [C]. Our own kernels rather than cuDNN's BatchNormalization*: the op's outputs
// are the batch mean and the *biased variance* (cuDNN saves the inverse standard deviation), the reference sums in
// float64 (cuDNN in float), and a training=0 node fed the saved statistics (the recompute pass's clone) must give
// the training output bit for bit. x is seen as [N, C, S] (S = H*W, 1 for [N, C]); m = N*S values per channel.
//
// batch_norm (x, gamma, beta, running_mean, running_var) -> y [, save_mean, save_var when training=1]:
//   1. training: bn_stats_kernel, grid (K, C): block k of channel c sums d = x - x[n=0, s=0 of c] and d^2 over its
//      share of the channel in float64 (the shift keeps sum d^2 / m - (sum d / m)^2 free of cancellation), reduced
//      in a fixed order, into the scratch (2*K*C doubles). K depends on the shape only, so results are
//      deterministic.
//   2. bn_fwd_finish_kernel, one thread per channel: mean and biased var from the K partials in order (float64);
//      save_mean/save_var = their float roundings; running_mean/running_var (inputs 3 and 4) updated in place when
//      track_running_stats=1: rm = (1-mom) rm + mom mean, rv = (1-mom) rv + mom var m/(m-1) (float64, unrounded
//      mean/var, as the reference). The normalization constants use the *float* mean and var (so training=0 with
//      save_mean/save_var as running stats reproduces y exactly): scale = gamma / sqrt(var + eps) in float64.
//      training=0: mean, var = running_mean, running_var.
//   3. bn_affine_kernel: y = float((x - mean) * scale + beta) in float64, elementwise (y may alias x).
// batch_norm_grad (dy, x, gamma, mean, var; eps, training) -> dx, dgamma, dbeta (dx may alias dy):
//   1. bn_grad_stats_kernel: per channel sums of dy and dy * (x - mean) (float64), same split as above;
//   2. bn_bwd_finish_kernel: inv = 1/sqrt(var + eps), dbeta = sum dy, dgamma = sum dy (x - mean) * inv, and
//      dx = a dy + b (x - mean) + c with a = gamma inv; training: b = -a inv^2 sum dy (x-mean) / m,
//      c = -a sum dy / m; eval: b = c = 0 (the reference's formula, float64);
//   3. bn_grad_affine_kernel: dx elementwise in float64.
#include <algorithm>
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

constexpr int64_t kElemsPerBlock = 8192;  // per-channel share of one statistics block
constexpr int kMaxGridY = 65535;

struct Dims {
  int64_t N, C, S, m, K, L;  // K blocks per channel, each over L consecutive values (n, s) of the channel
  explicit Dims(const Shape& x) : N(x[0]), C(x[1]), S(x.size() == 4 ? x[2] * x[3] : 1) {
    m = N * S;
    K = std::max<int64_t>(1, std::min<int64_t>((m + kElemsPerBlock - 1) / kElemsPerBlock, 4096));
    L = (m + K - 1) / K;
  }
  size_t partial_doubles() const { return size_t(2 * K * C); }
};

// Sums (a, b) over the block, in a fixed order; the result is valid in thread 0.
__device__ __forceinline__ void block_sum2(double& a, double& b) {
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
  if (threadIdx.x == 0) {
    double ta = 0, tb = 0;
    for (int w = 0; w < int(blockDim.x / 32); ++w) {
      ta += sa[w];
      tb += sb[w];
    }
    a = ta;
    b = tb;
  }
  __syncthreads();  // the shared arrays are reused by the next channel of a grid-stride loop
}

// Walks the values j in [j0, j1) of channel c: offset (j / S) * C * S + c * S + j % S, stepping by blockDim.x
// without a division per value.
struct ChannelWalk {
  int64_t n, s, bn, bs, S, CS;
  __device__ ChannelWalk(int64_t j, int64_t S_, int64_t C) : S(S_), CS(C * S_) {
    n = j / S;
    s = j % S;
    bn = blockDim.x / S;
    bs = blockDim.x % S;
  }
  __device__ __forceinline__ int64_t offset(int64_t c) const { return n * CS + c * S + s; }
  __device__ __forceinline__ void next() {
    n += bn;
    s += bs;
    if (s >= S) {
      s -= S;
      ++n;
    }
  }
};

// partial[c * K + k] = sum of d, partial[K * C + c * K + k] = sum of d^2, d = x - shift_c
__global__ void bn_stats_kernel(const float* __restrict__ x, double* __restrict__ partial, Dims d) {
  const int64_t k = blockIdx.x;
  const int64_t j0 = k * d.L, j1 = min(d.m, j0 + d.L);
  for (int64_t c = blockIdx.y; c < d.C; c += gridDim.y) {
    const double shift = x[c * d.S];
    double s1 = 0, s2 = 0;
    ChannelWalk w(j0 + threadIdx.x, d.S, d.C);
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x, w.next()) {
      const double v = double(x[w.offset(c)]) - shift;
      s1 += v;
      s2 += v * v;
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
      partial[c * d.K + k] = s1;
      partial[d.K * d.C + c * d.K + k] = s2;
    }
  }
}

// consts: mean[C], scale[C], beta[C] (doubles)
__global__ void bn_fwd_finish_kernel(const float* __restrict__ x, const double* __restrict__ partial,
                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                     float* __restrict__ running_mean, float* __restrict__ running_var,
                                     float* __restrict__ save_mean, float* __restrict__ save_var,
                                     double* __restrict__ consts, Dims d, bool training, bool update, double momentum,
                                     double eps) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d.C; c += int64_t(gridDim.x) * blockDim.x) {
    double mean, var;
    if (training) {
      double s1 = 0, s2 = 0;
      for (int64_t k = 0; k < d.K; ++k) {
        s1 += partial[c * d.K + k];
        s2 += partial[d.K * d.C + c * d.K + k];
      }
      const double m = double(d.m), dm = s1 / m;
      const double mean_d = double(x[c * d.S]) + dm;
      const double var_d = fmax(0.0, s2 / m - dm * dm);
      save_mean[c] = float(mean_d);
      save_var[c] = float(var_d);
      if (update) {
        running_mean[c] = float((1 - momentum) * double(running_mean[c]) + momentum * mean_d);
        running_var[c] = float((1 - momentum) * double(running_var[c]) + momentum * var_d * m / (m - 1));
      }
      mean = double(float(mean_d));
      var = double(float(var_d));
    } else {
      mean = running_mean[c];
      var = running_var[c];
    }
    consts[c] = mean;
    consts[d.C + c] = double(gamma[c]) / sqrt(var + eps);
    consts[2 * d.C + c] = double(beta[c]);
  }
}

template <class I>
__global__ void bn_affine_kernel(const float* x, float* y, const double* __restrict__ consts, I total, I S, I C) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < total; i += I(gridDim.x) * blockDim.x) {
    const I c = (i / S) % C;
    y[i] = float((double(x[i]) - consts[c]) * consts[C + c] + consts[2 * C + c]);
  }
}

// partial[c * K + k] = sum of dy, partial[K * C + c * K + k] = sum of dy * (x - mean_c)
__global__ void bn_grad_stats_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                     const float* __restrict__ mean, double* __restrict__ partial, Dims d) {
  const int64_t k = blockIdx.x;
  const int64_t j0 = k * d.L, j1 = min(d.m, j0 + d.L);
  for (int64_t c = blockIdx.y; c < d.C; c += gridDim.y) {
    const double mu = mean[c];
    double s1 = 0, s2 = 0;
    ChannelWalk w(j0 + threadIdx.x, d.S, d.C);
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x, w.next()) {
      const int64_t o = w.offset(c);
      const double g = dy[o];
      s1 += g;
      s2 += g * (double(x[o]) - mu);
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
      partial[c * d.K + k] = s1;
      partial[d.K * d.C + c * d.K + k] = s2;
    }
  }
}

// consts: mean[C], a[C], b[C], c[C] (doubles): dx = a dy + b (x - mean) + c
__global__ void bn_bwd_finish_kernel(const double* __restrict__ partial, const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ var,
                                     float* __restrict__ dgamma, float* __restrict__ dbeta, double* __restrict__ consts,
                                     Dims d, bool training, double eps) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d.C; c += int64_t(gridDim.x) * blockDim.x) {
    double sdy = 0, sdyx = 0;
    for (int64_t k = 0; k < d.K; ++k) {
      sdy += partial[c * d.K + k];
      sdyx += partial[d.K * d.C + c * d.K + k];
    }
    const double inv = 1 / sqrt(double(var[c]) + eps), m = double(d.m);
    const double sdyxhat = sdyx * inv;
    dbeta[c] = float(sdy);
    dgamma[c] = float(sdyxhat);
    const double a = double(gamma[c]) * inv;
    consts[c] = double(mean[c]);
    consts[d.C + c] = a;
    consts[2 * d.C + c] = training ? -a * inv * sdyxhat / m : 0.0;
    consts[3 * d.C + c] = training ? -a * sdy / m : 0.0;
  }
}

template <class I>
__global__ void bn_grad_affine_kernel(const float* dy, const float* __restrict__ x, float* dx,
                                      const double* __restrict__ consts, I total, I S, I C) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < total; i += I(gridDim.x) * blockDim.x) {
    const I c = (i / S) % C;
    dx[i] = float(consts[C + c] * double(dy[i]) + consts[2 * C + c] * (double(x[i]) - consts[c]) + consts[3 * C + c]);
  }
}

dim3 stats_grid(const Dims& d) { return dim3(unsigned(d.K), unsigned(std::min<int64_t>(d.C, kMaxGridY))); }

struct BatchNormFwd : Kernel {
  Dims d;
  bool training, update;
  double momentum, eps;
  explicit BatchNormFwd(const KernelCtx& c) : d(c.in[0].shape) {
    const Attrs& a = c.node.attrs;
    training = a.i("training", 0) != 0;
    update = training && a.i("track_running_stats", 1) != 0;
    momentum = a.f("momentum", 0.1);
    eps = a.f("eps", 1e-5);
  }
  std::string impl() const override { return "cuda native"; }
  size_t scratch_bytes() const override {
    return ((training ? d.partial_doubles() : 0) + size_t(3 * d.C)) * sizeof(double);
  }
  void run(const RunCtx& r) override {
    cudaStream_t st = stream_of(r).stream;
    const float* x = static_cast<const float*>(r.in[0]);
    double* partial = static_cast<double*>(r.scratch);
    double* consts = partial + (training ? d.partial_doubles() : 0);
    if (training) {
      bn_stats_kernel<<<stats_grid(d), kThreads, 0, st>>>(x, partial, d);
      check_launch("batch_norm stats");
    }
    bn_fwd_finish_kernel<<<blocks_for(d.C), kThreads, 0, st>>>(
        x, partial, static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[2]),
        static_cast<float*>(r.in[3]), static_cast<float*>(r.in[4]), training ? static_cast<float*>(r.out[1]) : nullptr,
        training ? static_cast<float*>(r.out[2]) : nullptr, consts, d, training, update, momentum, eps);
    check_launch("batch_norm finish");
    const int64_t total = d.N * d.C * d.S;
    float* y = static_cast<float*>(r.out[0]);
    if (total <= int64_t(INT32_MAX))  // i + grid stride stays below 2^32
      bn_affine_kernel<uint32_t>
          <<<blocks_for(total), kThreads, 0, st>>>(x, y, consts, uint32_t(total), uint32_t(d.S), uint32_t(d.C));
    else
      bn_affine_kernel<uint64_t>
          <<<blocks_for(total), kThreads, 0, st>>>(x, y, consts, uint64_t(total), uint64_t(d.S), uint64_t(d.C));
    check_launch("batch_norm");
  }
};

// in: dy, x, gamma, mean, var; out: dx, dgamma, dbeta
struct BatchNormBwd : Kernel {
  Dims d;
  bool training;
  double eps;
  explicit BatchNormBwd(const KernelCtx& c) : d(c.in[1].shape) {
    training = c.node.attrs.i("training", 0) != 0;
    eps = c.node.attrs.f("eps", 1e-5);
  }
  std::string impl() const override { return "cuda native"; }
  size_t scratch_bytes() const override { return (d.partial_doubles() + size_t(4 * d.C)) * sizeof(double); }
  void run(const RunCtx& r) override {
    cudaStream_t st = stream_of(r).stream;
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* x = static_cast<const float*>(r.in[1]);
    const float* mean = static_cast<const float*>(r.in[3]);
    double* partial = static_cast<double*>(r.scratch);
    double* consts = partial + d.partial_doubles();
    bn_grad_stats_kernel<<<stats_grid(d), kThreads, 0, st>>>(dy, x, mean, partial, d);
    check_launch("batch_norm_grad stats");
    bn_bwd_finish_kernel<<<blocks_for(d.C), kThreads, 0, st>>>(
        partial, static_cast<const float*>(r.in[2]), mean, static_cast<const float*>(r.in[4]),
        static_cast<float*>(r.out[1]), static_cast<float*>(r.out[2]), consts, d, training, eps);
    check_launch("batch_norm_grad finish");
    const int64_t total = d.N * d.C * d.S;
    float* dx = static_cast<float*>(r.out[0]);
    if (total <= int64_t(INT32_MAX))  // i + grid stride stays below 2^32
      bn_grad_affine_kernel<uint32_t>
          <<<blocks_for(total), kThreads, 0, st>>>(dy, x, dx, consts, uint32_t(total), uint32_t(d.S), uint32_t(d.C));
    else
      bn_grad_affine_kernel<uint64_t>
          <<<blocks_for(total), kThreads, 0, st>>>(dy, x, dx, consts, uint64_t(total), uint64_t(d.S), uint64_t(d.C));
    check_launch("batch_norm_grad");
  }
};

KernelRegistrar reg_bn("cuda", "batch_norm",
                       [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<BatchNormFwd>(c); });
KernelRegistrar reg_bn_grad("cuda", "batch_norm_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<BatchNormBwd>(c);
});

}  // namespace
}  // namespace cnn::cuda
