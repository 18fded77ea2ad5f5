// cuda kernels for lrn and lrn_grad (ops/lrn.cpp, PyTorch's LocalResponseNorm), float32 plain x [N, C, H, W].
// Our own kernels rather than cuDNN's LRNCrossChannel: cuDNN's window for an even size is centred differently from
// PyTorch's [c - size/2, c + (size-1)/2], and its backward wants y as well, while lrn_grad gets (dy, x) only.
//   D_c  = k + alpha/size * sum_{c' in [c - size/2, c + (size-1)/2] within [0, C)} x_c'^2  (float, ascending c')
//   lrn       y_c  = x_c * D_c^-beta
//   lrn_grad  dx_j = dy_j D_j^-beta - 2 beta alpha/size x_j sum_{c in [j - (size-1)/2, j + size/2]} dy_c x_c
//   D_c^(-beta-1)
// One thread per element; the backward recomputes each D_c it needs (O(size^2) reads per element, all from the
// same pixel's channels; no scratch). The output never aliases an input (the op has no in-place form).
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

struct LrnParams {
  int size, lo, hi;  // window [c - lo, c + hi]
  float alpha_n;     // alpha / size, rounded to float as the reference does
  float neg_beta, neg_beta1, coef, k;
  int C;
  int64_t HW, total;
};

LrnParams lrn_params(const KernelCtx& c, const Shape& x) {
  const Attrs& a = c.node.attrs;
  LrnParams p;
  p.size = int(a.i("size"));
  p.lo = p.size / 2;
  p.hi = (p.size - 1) / 2;
  const double alpha = a.f("alpha", 1e-4), beta = a.f("beta", 0.75), k = a.f("k", 1.0);
  p.alpha_n = float(alpha) / float(p.size);
  p.neg_beta = float(-beta);
  p.neg_beta1 = float(-beta - 1);
  p.coef = float(2 * beta * alpha / double(p.size));
  p.k = float(k);
  p.C = int(x[1]);
  p.HW = x[2] * x[3];
  p.total = numel(x);
  return p;
}

// D at channel c of the pixel whose channel 0 is at xp (channels HW apart)
__device__ __forceinline__ float denominator(const float* xp, const LrnParams& p, int c) {
  float sum = 0.f;
  const int c1 = min(c + p.hi, p.C - 1);
  for (int cc = max(c - p.lo, 0); cc <= c1; ++cc) {
    const float v = xp[cc * p.HW];
    sum += v * v;
  }
  return p.k + p.alpha_n * sum;
}

__global__ void lrn_fwd_kernel(const float* __restrict__ x, float* __restrict__ y, LrnParams p) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < p.total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = o % p.HW;
    const int c = int((o / p.HW) % p.C);
    const int64_t n = o / (p.HW * p.C);
    const float* xp = x + n * p.C * p.HW + i;
    y[o] = x[o] * powf(denominator(xp, p, c), p.neg_beta);
  }
}

__global__ void lrn_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dx,
                               LrnParams p) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < p.total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = o % p.HW;
    const int j = int((o / p.HW) % p.C);
    const int64_t n = o / (p.HW * p.C);
    const int64_t base = n * p.C * p.HW + i;
    const float* xp = x + base;
    const float* dyp = dy + base;
    float acc = 0.f;
    const int c1 = min(j + p.lo, p.C - 1);
    for (int c = max(j - p.hi, 0); c <= c1; ++c)
      acc += dyp[c * p.HW] * xp[c * p.HW] * powf(denominator(xp, p, c), p.neg_beta1);
    dx[o] = dy[o] * powf(denominator(xp, p, j), p.neg_beta) - p.coef * x[o] * acc;
  }
}

struct LrnFwd : Kernel {
  LrnParams p;
  explicit LrnFwd(const KernelCtx& c) : p(lrn_params(c, c.in[0].shape)) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    lrn_fwd_kernel<<<blocks_for(p.total), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                              static_cast<float*>(r.out[0]), p);
    check_launch("lrn");
  }
};

// in: dy, x; out: dx
struct LrnBwd : Kernel {
  LrnParams p;
  explicit LrnBwd(const KernelCtx& c) : p(lrn_params(c, c.in[1].shape)) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    lrn_bwd_kernel<<<blocks_for(p.total), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), p);
    check_launch("lrn_grad");
  }
};

KernelRegistrar reg_lrn("cuda", "lrn",
                        [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<LrnFwd>(c); });
KernelRegistrar reg_lrn_grad("cuda", "lrn_grad",
                             [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<LrnBwd>(c); });

}  // namespace
}  // namespace cnn::cuda
