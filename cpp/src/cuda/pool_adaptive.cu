// cuda kernels of adaptive_avg_pool2d, adaptive_avg_pool2d_grad, global_avg_pool and global_avg_pool_grad (own
// kernels, plain float32; cuDNN has no adaptive pooling). The arithmetic is the reference kernels' (ops/
// adaptive_pool.cpp, ops/pool.cpp):
//   - forward windows are summed in float64 and divided in float64, then rounded to float once (adaptive: one
//     thread per output in the reference's order; global: one warp per (n, c) plane, lanes' float64 partial sums
//     combined by shuffles, so the order differs from the reference's but the float64 sum rounds to the same float
//     except in rare ties);
//   - gradients are gathers, one thread per dx element: adaptive_avg_pool2d_grad adds, in float and in the
//     reference's order (output rows, then columns), dy / window size over every window that holds the element,
//     which gives the reference's scatter result bit for bit with no atomics or zero-fill; global_avg_pool_grad
//     is dy / (H*W). Divisions use __fdiv_rn so the results stay IEEE even under --use_fast_math.
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

void require_f32(const KernelCtx& c) {
  if (c.in[0].dtype != DType::f32 || c.out[0].dtype != DType::f32)
    fail("op '" + c.node.op + "' (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(c.in));
}

// PyTorch's adaptive window of output index i when `in` positions pool to `out` (ops/adaptive_pool.cpp's
// adaptive_window): [floor(i*in/out), ceil((i+1)*in/out)).
__device__ inline int64_t win_begin(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ inline int64_t win_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// y [NC, OH, OW] <- x [NC, H, W]
__global__ void adaptive_fwd_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t NC, int64_t H,
                                    int64_t W, int64_t OH, int64_t OW) {
  const int64_t n = NC * OH * OW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % OW, t = i / OW, oh = t % OH, q = t / OH;
    const int64_t h0 = win_begin(oh, H, OH), h1 = win_end(oh, H, OH);
    const int64_t w0 = win_begin(ow, W, OW), w1 = win_end(ow, W, OW);
    const float* p = x + q * H * W;
    double sum = 0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) sum += double(p[h * W + w]);
    y[i] = float(sum / double((h1 - h0) * (w1 - w0)));
  }
}

// dx [NC, H, W] <- dy [NC, OH, OW]. The windows holding row h are those of output rows
// [floor(h*OH/H), ceil((h+1)*OH/H)) (the same formula with in and out swapped); each candidate is checked against
// its window anyway, so a rounding slip can only cost a wasted iteration, never a wrong term.
__global__ void adaptive_bwd_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t NC, int64_t H,
                                    int64_t W, int64_t OH, int64_t OW) {
  const int64_t n = NC * H * W;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = i % W, t = i / W, h = t % H, q = t / H;
    int64_t oh0 = win_begin(h, OH, H), oh1 = win_end(h, OH, H);
    int64_t ow0 = win_begin(w, OW, W), ow1 = win_end(w, OW, W);
    oh0 = oh0 > 0 ? oh0 - 1 : 0, oh1 = oh1 < OH ? oh1 + 1 : OH;  // a margin of one, checked below
    ow0 = ow0 > 0 ? ow0 - 1 : 0, ow1 = ow1 < OW ? ow1 + 1 : OW;
    const float* p = dy + q * OH * OW;
    float acc = 0.f;
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      const int64_t h0 = win_begin(oh, H, OH), h1 = win_end(oh, H, OH);
      if (h < h0 || h >= h1) continue;
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const int64_t w0 = win_begin(ow, W, OW), w1 = win_end(ow, W, OW);
        if (w < w0 || w >= w1) continue;
        acc += __fdiv_rn(p[oh * OW + ow], float((h1 - h0) * (w1 - w0)));
      }
    }
    dx[i] = acc;
  }
}

// y [NC] <- the mean of each plane of HW elements; one warp per plane.
__global__ void global_fwd_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t NC, int64_t HW) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t q = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; q < NC; q += warps) {
    const float* p = x + q * HW;
    double sum = 0;
    for (int64_t i = lane; i < HW; i += 32) sum += double(p[i]);
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off);
    if (lane == 0) y[q] = float(sum / double(HW));
  }
}

// dx [NC, HW] <- dy [NC] / HW
__global__ void global_bwd_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t NC, int64_t HW) {
  const float div = float(HW);
  const int64_t n = NC * HW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = __fdiv_rn(dy[i / HW], div);
}

// x [N, C, H, W] and y [N, C, OH, OW], whichever direction the kernel runs.
struct AdaptivePool : Kernel {
  bool grad, global;
  int64_t NC, H, W, OH, OW;
  AdaptivePool(const KernelCtx& c, bool is_grad, bool is_global) : grad(is_grad), global(is_global) {
    require_f32(c);
    const Shape& x = grad ? c.out[0].shape : c.in[0].shape;
    const Shape& y = grad ? c.in[0].shape : c.out[0].shape;
    if (x.size() != 4 || y.size() != 4)
      fail("op '" + c.node.op + "' (node '" + c.node.name + "'): expects 4-D tensors, got " + descs_str(c.in));
    NC = x[0] * x[1], H = x[2], W = x[3], OH = y[2], OW = y[3];
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t s = stream_of(r).stream;
    float* out = static_cast<float*>(r.out[0]);
    const float* in = static_cast<const float*>(r.in[0]);
    if (NC * H * W == 0 || NC * OH * OW == 0) return;
    if (global) {
      if (grad) {
        global_bwd_kernel<<<blocks_for(NC * H * W), kThreads, 0, s>>>(out, in, NC, H * W);
        check_launch("global_avg_pool_grad kernel");
      } else {
        global_fwd_kernel<<<blocks_for(NC * 32), kThreads, 0, s>>>(out, in, NC, H * W);
        check_launch("global_avg_pool kernel");
      }
    } else if (grad) {
      adaptive_bwd_kernel<<<blocks_for(NC * H * W), kThreads, 0, s>>>(out, in, NC, H, W, OH, OW);
      check_launch("adaptive_avg_pool2d_grad kernel");
    } else {
      adaptive_fwd_kernel<<<blocks_for(NC * OH * OW), kThreads, 0, s>>>(out, in, NC, H, W, OH, OW);
      check_launch("adaptive_avg_pool2d kernel");
    }
  }
};

KernelRegistrar reg_aap("cuda", "adaptive_avg_pool2d", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<AdaptivePool>(c, false, false);
});
KernelRegistrar reg_aap_grad("cuda", "adaptive_avg_pool2d_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<AdaptivePool>(c, true, false);
});
KernelRegistrar reg_gap("cuda", "global_avg_pool", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<AdaptivePool>(c, false, true);
});
KernelRegistrar reg_gap_grad("cuda", "global_avg_pool_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<AdaptivePool>(c, true, true);
});

}  // namespace
}  // namespace cnn::cuda
