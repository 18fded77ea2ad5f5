// cuda kernels for softmax (x [N, K] over axis 1, the only axis the op accepts) and softmax_grad (dy, y) -> dx,
// float32 plain. Our own kernels rather than cuDNN's SoftmaxForward/Backward: the reference sums rows in float64
// (exp sums, the backward's dot product) and rounds once, which these reproduce:
//   softmax       m = max_k x_k (float); e_k = exp(x_k - m) (float); s = sum_k e_k (float64); y_k = float(e_k / s)
//   softmax_grad  dot = sum_k dy_k y_k (float64); dx_k = y_k * (dy_k - float(dot))
// One warp per row (rows are independent; a block holds kRowsPerBlock rows), lanes striding the row, reductions by
// warp shuffles in a fixed order (deterministic). In place is safe: a lane rereads and rewrites only its own
// elements (softmax writes e_k to y and divides it in place, as the reference does; softmax_grad reads dy_k and y_k
// before writing dx_k).
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = kThreads / kWarp;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = (u > v || isnan(u)) ? u : v;  // NaN-propagating max: a NaN row gives NaN, as exp(x - NaN) does
  }
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

unsigned row_blocks(int64_t rows) { return blocks_for(rows * kWarp); }

__global__ void softmax_kernel(const float* x, float* y, int64_t N, int64_t K) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kRowsPerBlock;
  for (int64_t n = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp; n < N; n += warps) {
    const float* xr = x + n * K;
    float* yr = y + n * K;
    float m = -INFINITY;
    for (int64_t k = lane; k < K; k += kWarp) {
      const float v = xr[k];
      m = (v > m || isnan(v)) ? v : m;
    }
    m = warp_max(m);
    double s = 0;
    for (int64_t k = lane; k < K; k += kWarp) {
      const float e = expf(xr[k] - m);
      yr[k] = e;
      s += e;
    }
    s = warp_sum(s);
    for (int64_t k = lane; k < K; k += kWarp) yr[k] = float(double(yr[k]) / s);
  }
}

__global__ void softmax_grad_kernel(const float* dy, const float* y, float* dx, int64_t N, int64_t K) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kRowsPerBlock;
  for (int64_t n = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp; n < N; n += warps) {
    const float* dyr = dy + n * K;
    const float* yr = y + n * K;
    float* dxr = dx + n * K;
    double dot = 0;
    for (int64_t k = lane; k < K; k += kWarp) dot += double(dyr[k]) * double(yr[k]);
    const float d = float(warp_sum(dot));
    for (int64_t k = lane; k < K; k += kWarp) dxr[k] = yr[k] * (dyr[k] - d);
  }
}

struct SoftmaxFwd : Kernel {
  int64_t N, K;
  explicit SoftmaxFwd(const KernelCtx& c) : N(c.in[0].shape[0]), K(c.in[0].shape[1]) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    softmax_kernel<<<row_blocks(N), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                        static_cast<float*>(r.out[0]), N, K);
    check_launch("softmax");
  }
};

// in: dy, y; out: dx
struct SoftmaxBwd : Kernel {
  int64_t N, K;
  explicit SoftmaxBwd(const KernelCtx& c) : N(c.in[0].shape[0]), K(c.in[0].shape[1]) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    softmax_grad_kernel<<<row_blocks(N), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), N, K);
    check_launch("softmax_grad");
  }
};

KernelRegistrar reg_softmax("cuda", "softmax", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<SoftmaxFwd>(c);
});
KernelRegistrar reg_softmax_grad("cuda", "softmax_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<SoftmaxBwd>(c);
});

}  // namespace
}  // namespace cnn::cuda
