// cuda kernels of dropout and dropout_grad (own kernels, plain float32, may run in place). The mask is the same
// function of (seed, step, node name, element index) as on the CPU (core/dropout_mask.hpp), so CPU and GPU
// training drop the same elements bit for bit: the node name's hash, the threshold and the scale are computed on
// the host once (dropout::name_hash, drop_threshold, read_p), while the per-run part of the key (seed, step) is read
// on the device from CudaStream::run_info, so a run recorded as a CUDA graph draws a new mask on every replay.
// Inference (training=0, one output): a copy, nothing when the output is over the input.
#include <cstdint>
#include <memory>
#include <string>

#include "core/dropout_mask.hpp"
#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

// Device ports of core/dropout_mask.hpp's pure integer functions (that header is host-only code): the same
// arithmetic, kept identical by hand. dev_mix64 = dropout::mix64; dev_stream_key = dropout::stream_key with the
// node name already hashed (dropout::name_hash); dev_keep = dropout::keep.
__host__ __device__ inline uint64_t dev_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
__host__ __device__ inline uint64_t dev_stream_key(uint64_t seed, int64_t step, uint64_t name_hash) {
  uint64_t k = dev_mix64(seed ^ 0x6a09e667f3bcc909ull);
  k = dev_mix64(k ^ name_hash);
  return dev_mix64(k ^ uint64_t(step));
}
__host__ __device__ inline uint8_t dev_keep(uint64_t key, int64_t i, uint64_t threshold) {
  return uint8_t((dev_mix64(key + uint64_t(i + 1) * 0x9e3779b97f4a7c15ull) >> 11) >= threshold);
}
static_assert(dropout::kGamma == 0x9e3779b97f4a7c15ull, "dev_keep's constant must be dropout::kGamma");

// y = x * (mask * scale), mask[i] = keep(key, i); y may alias x.
__global__ void dropout_kernel(float* y, uint8_t* __restrict__ mask, const float* x, const RunInfo* __restrict__ info,
                               uint64_t name_hash, uint64_t threshold, float scale, int64_t n) {
  const uint64_t key = dev_stream_key(info->seed, info->step, name_hash);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t m = dev_keep(key, i, threshold);
    mask[i] = m;
    y[i] = x[i] * (float(m) * scale);
  }
}

// dx = dy * (mask * scale); dx may alias dy.
__global__ void dropout_grad_kernel(float* dx, const float* dy, const uint8_t* __restrict__ mask, float scale,
                                    int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i] * (float(mask[i]) * scale);
}

void require_f32(const KernelCtx& c) {
  if (c.in[0].dtype != DType::f32 || c.out[0].dtype != DType::f32)
    fail("op '" + c.node.op + "' (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(c.in));
}

struct DropoutFwd : Kernel {
  int64_t n;
  bool training;
  uint64_t name_hash, threshold;
  float scale;
  explicit DropoutFwd(const KernelCtx& c)
      : n(numel(c.in[0].shape)), training(c.out.size() == 2), name_hash(dropout::name_hash(c.node.name)) {
    require_f32(c);
    const double p = dropout::read_p(c.node);
    threshold = dropout::drop_threshold(p);
    scale = float(1.0 / (1.0 - p));  // as the reference: T(1.0 / (1.0 - p))
  }
  std::string impl() const override { return training ? "cuda native" : "cuda copy"; }
  void run(const RunCtx& r) override {
    CudaStream& s = stream_of(r);
    if (!training) {
      if (r.out[0] != r.in[0] && n > 0)
        check(cudaMemcpyAsync(r.out[0], r.in[0], size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, s.stream),
              "cudaMemcpyAsync");
      return;
    }
    if (n == 0) return;
    dropout_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(
        static_cast<float*>(r.out[0]), static_cast<uint8_t*>(r.out[1]), static_cast<const float*>(r.in[0]), s.run_info,
        name_hash, threshold, scale, n);
    check_launch("dropout_kernel");
  }
};

struct DropoutGrad : Kernel {
  int64_t n;
  float scale;
  explicit DropoutGrad(const KernelCtx& c) : n(numel(c.in[0].shape)) {
    require_f32(c);
    scale = float(1.0 / (1.0 - dropout::read_p(c.node)));
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    if (n == 0) return;
    dropout_grad_kernel<<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(
        static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[0]), static_cast<const uint8_t*>(r.in[1]), scale,
        n);
    check_launch("dropout_grad_kernel");
  }
};

KernelRegistrar reg_dropout("cuda", "dropout", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<DropoutFwd>(c);
});
KernelRegistrar reg_dropout_grad("cuda", "dropout_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<DropoutGrad>(c);
});

}  // namespace
}  // namespace cnn::cuda
