// What every file of the cuda backend shares: error checks, the session stream (CUDA stream, cuDNN and cuBLAS
// handles, per-run values on the device, CUDA graphs), descriptor helpers and launch helpers.
//
// Conventions for kernels (KernelRegistrar("cuda", op, factory)):
//   - tensors are plain (NCHW, C-contiguous) float32 in device memory (ints: int32 labels); RunCtx::in/out point
//     into the session's device arena, RunCtx::scratch is device memory of scratch_bytes() (cuDNN workspaces),
//     RunCtx::persist device memory of persistent_bytes();
//   - everything is queued on the session's stream (stream_of(ctx).stream, cuDNN/cuBLAS handles already bound to
//     it); run() never synchronizes, allocates, or reads device memory on the host;
//   - run() queues the same work on every call: no branch on RunCtx::step, seed or params_version (a run is
//     recorded once as a CUDA graph and replayed). Per-run values are read on the device from
//     CudaStream::run_info (seed, step);
//   - library objects (descriptors, algorithm choices) are created in the factory / constructor, once; algorithm
//     search runs there too (heuristics; measured search with StreamOptions::autotune);
//   - errors: check()/check_dnn()/check_blas() throw cnn::Error naming the call; a kernel launch is followed by
//     check_launch("name").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "core/backend.hpp"
#include "core/op.hpp"
#include "cuda/api.hpp"

namespace cnn::cuda {

[[noreturn]] void fail(const std::string& what);  // throws Error("cuda: " + what)
void check(cudaError_t e, const char* what);      // throws Error naming the call and cudaGetErrorString(e)
void check_dnn(dnn::Status s, const char* what);  // cuDNN's error string
void check_blas(blas::Status s, const char* what);
void check_launch(const char* kernel);  // cudaGetLastError() after a kernel launch

// Per-run values the session sets before each run (Stream::set_run_info), read by kernels on the device.
struct RunInfo {
  uint64_t seed;
  int64_t step;
};

class CudaStream : public Stream {
 public:
  explicit CudaStream(const StreamOptions& o);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  void synchronize() override;
  void set_run_info(uint64_t seed, int64_t step) override;
  bool can_capture() const override { return true; }
  void begin_capture() override;
  void end_capture(int segment) override;
  void replay(int segment) override;
  void drop_captures() override;
  bool recapture_on_param_change() const override { return false; }  // kernels read parameters in place

  StreamOptions opt;
  cudaStream_t stream = nullptr;
  dnn::Handle dnn = nullptr;
  blas::Handle blas = nullptr;
  int device = 0;
  cudaDeviceProp prop{};
  const RunInfo* run_info = nullptr;  // device memory: this run's seed and step
  // Small buffers for the session's reductions (absmax, first_non_finite, optimizer maxima): kSmall bytes each,
  // device memory and pinned host memory.
  static constexpr size_t kSmall = 256;
  void* small_dev = nullptr;
  void* small_host = nullptr;

 private:
  void release();  // frees everything the constructor made (also after a partial construction)
  RunInfo* run_info_dev_ = nullptr;
  RunInfo* run_info_host_ = nullptr;  // pinned
  void* blas_workspace_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;
  bool capturing_ = false;
};

// The session stream of a kernel (throws if the session has none: a cuda kernel on another backend).
CudaStream& stream_of(Stream* s);
inline CudaStream& stream_of(const KernelCtx& c) { return stream_of(c.stream); }
inline CudaStream& stream_of(const RunCtx& r) { return stream_of(r.stream); }

// Device memory, counted (allocation_count()) and zero-filled; released with cudaFree. Used by the backend for
// every session buffer, and by kernels only in their constructors (e.g. autotuning scratch), never in run().
void* device_alloc(size_t bytes);
void device_free(void* p);

// The device of this process (cudaSetDevice(0) on first use) after checking that a driver and a GPU exist;
// throws Error saying what is missing.
int ensure_device();

// ---- cuDNN descriptors (RAII) ----
struct TensorDesc {
  dnn::TensorDesc d = nullptr;
  TensorDesc();
  ~TensorDesc();
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  // NCHW float32; fewer than 4 dims are padded with trailing 1s ([N, C] -> N, C, 1, 1); more than 4 use the Nd form.
  void set(const Shape& s, int dtype = dnn::DATA_FLOAT);
  void set4(int n, int c, int h, int w, int dtype = dnn::DATA_FLOAT);
  operator dnn::TensorDesc() const { return d; }
};
struct FilterDesc {
  dnn::FilterDesc d = nullptr;
  FilterDesc();
  ~FilterDesc();
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  void set(int k, int c, int h, int w, int dtype = dnn::DATA_FLOAT);  // NCHW (KCRS)
  operator dnn::FilterDesc() const { return d; }
};

// ---- launch helpers ----
constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 32) b = 65535LL * 32;  // kernels use grid-stride loops
  return unsigned(b);
}

}  // namespace cnn::cuda
