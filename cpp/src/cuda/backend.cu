// The "cuda" backend: device memory the host cannot address, one CudaStream per session (cuDNN and cuBLAS handles
// bound to it, CUDA graphs), pinned staging for feeds and fetches, the optimizer and guard reductions of
// cuda/optim.cu. Built as the plugin libcnnnative_cuda.so, which core/backend.cpp loads on the first
// compile(backend="cuda"); its kernels register from the other files of this folder.
#include <cstring>

#include "core/alloc.hpp"
#include "cuda/common.hpp"
#include "cuda/optim.hpp"

namespace cnn::cuda {
namespace {

void pinned_free(void* p) {
  if (p) cudaFreeHost(p);
}

CudaStream* cuda(Stream* s) {
  if (!s) fail("no session stream (the cuda backend queues everything on its session's stream)");
  return &stream_of(s);
}

class CudaBackend : public Backend {
 public:
  CudaBackend() : Backend("cuda") {}

  bool supports_compute(DType c) const override { return c == DType::f32; }
  bool supports_training_in(DType c) const override { return c == DType::f32; }
  bool has_layouts() const override { return false; }
  bool has_fast_kernels() const override { return true; }
  std::string bf16_unavailable() const override {
    return "the cuda backend has no bfloat16 kernels yet (float32 with TF32 tensor-core math is its fast path)";
  }

  std::string describe() const override {
    const int dev = ensure_device();
    cudaDeviceProp p{};
    check(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    return std::string("name=") + p.name + "\ncompute_capability=" + std::to_string(p.major) + "." +
           std::to_string(p.minor) + "\nmemory_bytes=" + std::to_string(p.totalGlobalMem) +
           "\nmultiprocessors=" + std::to_string(p.multiProcessorCount) + "\ncuda_runtime=" + std::to_string(rt) +
           "\ncuda_driver=" + std::to_string(drv) + "\nlibraries=" + libraries_info();
  }

  std::unique_ptr<Stream> make_stream(const StreamOptions& o) const override { return std::make_unique<CudaStream>(o); }
  bool host_accessible() const override { return false; }
  Buffer allocate(size_t bytes) const override { return Buffer(device_alloc(bytes), BufferDeleter{device_free}); }
  Buffer allocate_host(size_t bytes) const override {
    ensure_device();
    void* p = nullptr;
    check(cudaMallocHost(&p, bytes ? bytes : 64), "cudaMallocHost");
    count_allocation();
    std::memset(p, 0, bytes ? bytes : 64);
    return Buffer(p, BufferDeleter{pinned_free});
  }
  bool pin_host(void* p, size_t bytes) const override {
    if (!p || !bytes) return false;
    ensure_device();
    const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (e != cudaSuccess) {  // already registered by another session, or not allowed: copies stay pageable
      cudaGetLastError();
      return false;
    }
    return true;
  }
  void unpin_host(void* p) const override {
    if (p && cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
  }
  void copy_in(void* dst, const void* src, size_t bytes, Stream* s) const override {
    if (!bytes) return;
    CudaStream* c = cuda(s);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync (host to device)");
  }
  void copy_out(void* dst, const void* src, size_t bytes, Stream* s) const override {
    if (!bytes) return;
    CudaStream* c = cuda(s);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "cudaMemcpyAsync (device to host)");
    c->synchronize();
  }
  void copy(void* dst, const void* src, size_t bytes, Stream* s) const override {
    if (!bytes) return;
    CudaStream* c = cuda(s);
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "cudaMemcpyAsync (device to device)");
  }
  void synchronize(Stream* s) const override {
    if (s) s->synchronize();
  }

  float absmax(const float* x, size_t n, bool* finite, Stream* s) const override {
    return cuda::absmax(x, n, finite, *cuda(s));
  }
  int64_t first_non_finite(const float* x, size_t n, Stream* s) const override {
    return cuda::first_non_finite(x, n, *cuda(s));
  }
  void sgd_update(float* p, const float* g, float* m, size_t n, const SGDConfig& c, long step, OptimMaxima* maxima,
                  Stream* s) const override {
    cuda::sgd_update(p, g, m, n, c, step, maxima, *cuda(s));
  }
  void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c, long step,
                   OptimMaxima* maxima, Stream* s) const override {
    cuda::adam_update(p, g, m, v, vmax, n, c, step, maxima, *cuda(s));
  }
  long sgd_first_non_finite(const float* p, const float* g, const float* m, size_t n, const SGDConfig& c, long step,
                            Stream* s) const override {
    return cuda::sgd_first_non_finite(p, g, m, n, c, step, *cuda(s));
  }
  long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                             size_t n, const AdamConfig& c, long step, Stream* s) const override {
    return cuda::adam_first_non_finite(p, g, m, v, vmax, n, c, step, *cuda(s));
  }
};

BackendRegistrar reg(std::make_shared<CudaBackend>());

}  // namespace

}  // namespace cnn::cuda
