// cuda kernels of quantize and dequantize (ops/quant.cpp) with their zero points, plain layout: a quantized model's QDQ
// graph runs on the GPU in float between them (simulated quantization). The int8 ops the cpu's int8 pass makes
// (qconv2d, ...) have no cuda kernels; that pass does not run on a backend without them.
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

template <class Q>
__global__ void quantize_kernel(Q* y, const float* x, double scale, int zp, float lo, float hi, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double r = rint(double(x[i]) / scale) + zp;         // round half to even, then the zero point, as the reference
    float v = r >= lo ? (r > hi ? hi : float(r)) : lo;  // NaN saturates to the low end
    y[i] = Q(v);
  }
}

template <class Q>
__global__ void dequantize_kernel(float* y, const Q* x, double scale, int zp, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = float(double(int(x[i]) - zp) * scale);
}

struct QdqKernel : Kernel {
  int64_t n;
  double scale;
  int zp;
  bool quant, u8;
  explicit QdqKernel(const KernelCtx& c)
      : n(numel(c.in[0].shape)),
        scale(c.node.attrs.f("scale", 1.0)),
        zp(int(c.node.attrs.i("zero_point", 0))),
        quant(c.node.op == "quantize") {
    u8 = (quant ? c.out[0].dtype : c.in[0].dtype) == DType::u8;
    if ((quant ? c.in[0].dtype : c.out[0].dtype) != DType::f32)
      throw Error("cuda " + c.node.op + " (node '" + c.node.name + "'): runs in float32 sessions only");
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    if (n == 0) return;
    cudaStream_t s = stream_of(r).stream;
    if (quant && u8)
      quantize_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<uint8_t*>(r.out[0]),
                                                         static_cast<const float*>(r.in[0]), scale, zp, 0.f, 255.f, n);
    else if (quant)
      quantize_kernel<<<blocks_for(n), kThreads, 0, s>>>(
          static_cast<int8_t*>(r.out[0]), static_cast<const float*>(r.in[0]), scale, zp, -128.f, 127.f, n);
    else if (u8)
      dequantize_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<float*>(r.out[0]),
                                                           static_cast<const uint8_t*>(r.in[0]), scale, zp, n);
    else
      dequantize_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<float*>(r.out[0]),
                                                           static_cast<const int8_t*>(r.in[0]), scale, zp, n);
    check_launch(quant ? "quantize_kernel" : "dequantize_kernel");
  }
};

std::unique_ptr<Kernel> make_qdq(const KernelCtx& c) { return std::make_unique<QdqKernel>(c); }
KernelRegistrar reg_quantize("cuda", "quantize", make_qdq);
KernelRegistrar reg_dequantize("cuda", "dequantize", make_qdq);

}  // namespace
}  // namespace cnn::cuda
