// cuda kernels for the activations of ops/eltwise.cpp: relu, sigmoid, tanh, leaky_relu (attr negative_slope) and
// their *_grad ops (float32, plain). Our own elementwise kernels rather than cuDNN's activation API: the backward
// ops get only (dy, saved) where cuDNN's ActivationBackward wants x and y both, and the reference's exact formulas
// are kept:
//   relu        y = x > 0 ? x : 0 (a NaN gives 0)         relu_grad       dx = dy * (y > 0 ? 1 : 0)   (saved y)
//   sigmoid     y = 1 / (1 + exp(-x))                     sigmoid_grad    dx = dy * (y * (1 - y))     (saved y)
//   tanh        y = tanh(x)                               tanh_grad       dx = dy * (1 - y * y)       (saved y)
//   leaky_relu  y = x > 0 ? x : slope * x                 leaky_relu_grad dx = dy * (x > 0 ? 1 : slope) (saved x)
// The derivative multiplies dy (no select), so relu_grad at y == 0 gives dy * 0 (0, or NaN for a non-finite dy) as
// the reference does. Every kernel is elementwise (thread i reads element i and writes element i), so outputs may
// alias inputs (the ops' in-place forms).
#include <cmath>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

enum Kind : int { kRelu = 0, kSigmoid = 1, kTanh = 2, kLeaky = 3 };

template <int K>
__device__ __forceinline__ float act(float x, float slope) {
  if (K == kRelu) return x > 0.f ? x : 0.f;
  if (K == kSigmoid) return 1.f / (1.f + expf(-x));
  if (K == kTanh) return tanhf(x);
  return x > 0.f ? x : slope * x;
}

// derivative from the saved tensor s (the output for relu/sigmoid/tanh, the input for leaky_relu)
template <int K>
__device__ __forceinline__ float dact(float s, float slope) {
  if (K == kRelu) return s > 0.f ? 1.f : 0.f;
  if (K == kSigmoid) return s * (1.f - s);
  if (K == kTanh) return 1.f - s * s;
  return s > 0.f ? 1.f : slope;
}

template <int K>
__global__ void fwd_kernel(const float* x, float* y, int64_t n, float slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = act<K>(x[i], slope);
}

template <int K>
__global__ void bwd_kernel(const float* dy, const float* s, float* dx, int64_t n, float slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i] * dact<K>(s[i], slope);
}

template <int K>
struct Fwd : Kernel {
  int64_t n;
  float slope;
  const char* name;
  Fwd(const KernelCtx& c, const char* nm)
      : n(numel(c.in[0].shape)), slope(float(c.node.attrs.f("negative_slope", 0.01))), name(nm) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    fwd_kernel<K><<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                       static_cast<float*>(r.out[0]), n, slope);
    check_launch(name);
  }
};

// in: dy, saved; out: dx
template <int K>
struct Bwd : Kernel {
  int64_t n;
  float slope;
  const char* name;
  Bwd(const KernelCtx& c, const char* nm)
      : n(numel(c.in[0].shape)), slope(float(c.node.attrs.f("negative_slope", 0.01))), name(nm) {}
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    bwd_kernel<K><<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(static_cast<const float*>(r.in[0]),
                                                                       static_cast<const float*>(r.in[1]),
                                                                       static_cast<float*>(r.out[0]), n, slope);
    check_launch(name);
  }
};

KernelRegistrar reg_relu("cuda", "relu", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Fwd<kRelu>>(c, "relu");
});
KernelRegistrar reg_relu_grad("cuda", "relu_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Bwd<kRelu>>(c, "relu_grad");
});
KernelRegistrar reg_sigmoid("cuda", "sigmoid", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Fwd<kSigmoid>>(c, "sigmoid");
});
KernelRegistrar reg_sigmoid_grad("cuda", "sigmoid_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Bwd<kSigmoid>>(c, "sigmoid_grad");
});
KernelRegistrar reg_tanh("cuda", "tanh", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Fwd<kTanh>>(c, "tanh");
});
KernelRegistrar reg_tanh_grad("cuda", "tanh_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Bwd<kTanh>>(c, "tanh_grad");
});
KernelRegistrar reg_leaky("cuda", "leaky_relu", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Fwd<kLeaky>>(c, "leaky_relu");
});
KernelRegistrar reg_leaky_grad("cuda", "leaky_relu_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Bwd<kLeaky>>(c, "leaky_relu_grad");
});

}  // namespace
}  // namespace cnn::cuda
