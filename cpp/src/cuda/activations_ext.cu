// cuda kernels for the activations of ops/activations.cpp (float32, plain): clip, hardsigmoid, hardswish, silu,
// gelu, mish, elu, softplus, erf and their *_grad ops, with ops/activations_math.hpp's formulas (the reference's,
// compiled for the device; the plugin is built with --fmad=false so products round as in the reference), and
// prelu / prelu_grad. Elementwise kernels: thread i reads element i and writes element i, so outputs may alias
// inputs. prelu_grad's weight gradient: one block per channel sums dy * x (x <= 0) in double in a fixed order
// (per-thread strided partial sums, then a tree), a shared weight then sums the channels' sums in channel order:
// deterministic, no atomics.
#include "cuda/common.hpp"
#include "ops/activations_math.hpp"

namespace cnn::cuda {
namespace {

__global__ void act_fwd(int kind, const float* x, float* y, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = act::fwd<float>(kind, x[i], a, b);
}

__global__ void act_bwd(int kind, const float* dy, const float* x, float* dx, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = __fmul_rn(dy[i], act::deriv<float>(kind, x[i], a, b));
}

struct Act : Kernel {
  act::Params p;
  int64_t n;
  bool backward;
  std::string name;
  Act(const KernelCtx& c, bool bwd)
      : p(act::params_of(c.node.op, c.node.attrs)), n(numel(c.in[0].shape)), backward(bwd), name(c.node.op) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    auto s = stream_of(r).stream;
    if (!backward)
      act_fwd<<<blocks_for(n), kThreads, 0, s>>>(p.kind, static_cast<const float*>(r.in[0]),
                                                 static_cast<float*>(r.out[0]), n, float(p.a), float(p.b));
    else
      act_bwd<<<blocks_for(n), kThreads, 0, s>>>(p.kind, static_cast<const float*>(r.in[0]),
                                                 static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), n,
                                                 float(p.a), float(p.b));
    check_launch(name.c_str());
  }
};

// x viewed as [outer, c, inner]; weight w[c] (or w[0] when shared)
__global__ void prelu_fwd(const float* x, const float* w, float* y, int64_t n, int64_t c, int64_t inner, bool shared) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = x[i];
    float wk = w[shared ? 0 : (i / inner) % c];
    y[i] = v > 0.f ? v : __fmul_rn(wk, v);
  }
}

__global__ void prelu_dx(const float* dy, const float* x, const float* w, float* dx, int64_t n, int64_t c,
                         int64_t inner, bool shared) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float wk = w[shared ? 0 : (i / inner) % c];
    dx[i] = x[i] > 0.f ? dy[i] : __fmul_rn(dy[i], wk);
  }
}

constexpr int kSumThreads = 256;

// block k: part[k] = sum over the outer * inner elements of channel k of dy * x where x <= 0
__global__ void prelu_dw_channels(const float* dy, const float* x, double* part, int64_t outer, int64_t c,
                                  int64_t inner) {
  __shared__ double buf[kSumThreads];
  const int64_t k = blockIdx.x;
  const int64_t m = outer * inner;
  double s = 0;
  for (int64_t j = threadIdx.x; j < m; j += kSumThreads) {
    int64_t idx = ((j / inner) * c + k) * inner + j % inner;
    float v = x[idx];
    if (!(v > 0.f)) s += double(dy[idx]) * double(v);
  }
  buf[threadIdx.x] = s;
  __syncthreads();
  for (int h = kSumThreads / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) buf[threadIdx.x] += buf[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[k] = buf[0];
}

// dw[k] = part[k], or dw[0] = the sum of part[0..c) in order (shared weight)
__global__ void prelu_dw_finish(const double* part, float* dw, int64_t c, bool shared) {
  if (shared) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      double t = 0;
      for (int64_t k = 0; k < c; ++k) t += part[k];
      dw[0] = float(t);
    }
    return;
  }
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < c; k += int64_t(gridDim.x) * blockDim.x)
    dw[k] = float(part[k]);
}

void dims(const Shape& x, int64_t* outer, int64_t* c, int64_t* inner) {
  *c = x.size() >= 2 ? x[1] : 1;
  *outer = x.size() >= 2 ? x[0] : numel(x);
  *inner = 1;
  for (size_t i = 2; i < x.size(); ++i) *inner *= x[i];
}

struct Prelu : Kernel {
  int64_t n, outer, c, inner;
  bool shared;
  explicit Prelu(const KernelCtx& k) : n(numel(k.in[0].shape)), shared(numel(k.in[1].shape) == 1) {
    dims(k.in[0].shape, &outer, &c, &inner);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    prelu_fwd<<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                   static_cast<const float*>(r.in[1]),
                                                                   static_cast<float*>(r.out[0]), n, c, inner, shared);
    check_launch("prelu");
  }
};

// in: dy, x, w; out: dx, dw; scratch: one double per channel
struct PreluGrad : Kernel {
  int64_t n, outer, c, inner;
  bool shared;
  explicit PreluGrad(const KernelCtx& k) : n(numel(k.in[1].shape)), shared(numel(k.in[2].shape) == 1) {
    dims(k.in[1].shape, &outer, &c, &inner);
  }
  std::string impl() const override { return "cuda native"; }
  size_t scratch_bytes() const override { return size_t(c) * sizeof(double); }
  void run(const RunCtx& r) override {
    auto s = stream_of(r).stream;
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* x = static_cast<const float*>(r.in[1]);
    const float* w = static_cast<const float*>(r.in[2]);
    double* part = static_cast<double*>(r.scratch);
    // the weight gradient first: dx may be written over dy
    prelu_dw_channels<<<unsigned(c), kSumThreads, 0, s>>>(dy, x, part, outer, c, inner);
    check_launch("prelu_grad (weight)");
    prelu_dw_finish<<<blocks_for(c), kThreads, 0, s>>>(part, static_cast<float*>(r.out[1]), c, shared);
    check_launch("prelu_grad (weight sum)");
    prelu_dx<<<blocks_for(n), kThreads, 0, s>>>(dy, x, w, static_cast<float*>(r.out[0]), n, c, inner, shared);
    check_launch("prelu_grad");
  }
};

struct Regs {
  Regs() {
    for (const char* op : {"clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu", "softplus", "erf"}) {
      register_kernel("cuda", op,
                      [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Act>(c, false); });
      register_kernel("cuda", std::string(op) + "_grad",
                      [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Act>(c, true); });
    }
    register_kernel("cuda", "prelu",
                    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Prelu>(c); });
    register_kernel("cuda", "prelu_grad",
                    [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<PreluGrad>(c); });
  }
} regs;

}  // namespace
}  // namespace cnn::cuda
