// The cuda backend's shared pieces (common.hpp): error checks, device discovery, counted device memory, the
// session stream with its library handles and CUDA graphs, cuDNN descriptors.
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/alloc.hpp"
#include "cuda/common.hpp"

namespace cnn::cuda {

void fail(const std::string& what) { throw Error("cuda: " + what); }

namespace {
// Errors after which the process's CUDA context is unusable: every later call returns them, so the call that
// reports one is rarely the one that caused it.
bool sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable: return true;
    default: return false;
  }
}
[[noreturn]] void fail_sticky(cudaError_t e, const char* what) {
  fail(std::string("a device kernel failed earlier (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
       "), seen at " + what +
       "; the CUDA context of this process is now unusable: restart the process (CUDA_LAUNCH_BLOCKING=1 and "
       "compile(cuda_graphs=False) name the kernel)");
}
}  // namespace

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  if (sticky(e)) fail_sticky(e, what);
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  fail(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

void check_dnn(dnn::Status s, const char* what) {
  if (s == dnn::SUCCESS) return;
  fail(std::string(what) + ": cuDNN status " + std::to_string(s) + " (" + dnn_api().GetErrorString(s) + ")");
}

void check_blas(blas::Status s, const char* what) {
  if (s == blas::SUCCESS) return;
  fail(std::string(what) + ": cuBLAS status " + std::to_string(s) + " (" + blas_api().GetStatusString(s) + ")");
}

void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return;
  const std::string what = std::string("launching ") + kernel;
  if (sticky(e)) fail_sticky(e, what.c_str());
  fail(what + ": " + cudaGetErrorString(e));
}

int ensure_device() {
  static std::once_flag once;
  static std::string error;
  static int device = 0;
  std::call_once(once, [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || (e == cudaSuccess && n == 0)) {
      void* drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
      if (!drv) drv = dlopen("libcuda.so.1", RTLD_LAZY);
      error = e == cudaErrorInsufficientDriver
                  ? (drv ? "device='cuda': the NVIDIA driver is too old for CUDA 13 (cudaGetDeviceCount: " +
                               std::string(cudaGetErrorString(e)) + "); update the driver"
                         : std::string("device='cuda': no NVIDIA driver is installed (libcuda.so.1 not found), so "
                                       "there is no GPU to run on here"))
                  : "device='cuda': no CUDA GPU was found (cudaGetDeviceCount: " +
                        std::string(e == cudaSuccess ? "0 devices" : cudaGetErrorString(e)) + ")";
      cudaGetLastError();
      return;
    }
    if (e != cudaSuccess) {
      error = std::string("device='cuda': CUDA could not start (cudaGetDeviceCount: ") + cudaGetErrorName(e) + ", " +
              cudaGetErrorString(e) + ")";
      cudaGetLastError();
      return;
    }
    const cudaError_t s = cudaSetDevice(0);
    if (s != cudaSuccess) error = std::string("device='cuda': cudaSetDevice(0) failed: ") + cudaGetErrorString(s);
  });
  if (!error.empty()) throw Error(error);
  return device;
}

namespace {
// A process-wide stream for zero-filling new allocations (never destroyed: nothing to order at exit). A plain
// cudaMemset would run on the legacy stream, which the sessions' non-blocking streams do not wait for.
cudaStream_t fill_stream() {
  static cudaStream_t s = [] {
    cudaStream_t t = nullptr;
    check(cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking), "cudaStreamCreate (zero-fill)");
    return t;
  }();
  return s;
}
}  // namespace

void* device_alloc(size_t bytes) {
  ensure_device();
  void* p = nullptr;
  const size_t n = std::max<size_t>((bytes + 255) / 256 * 256, 256);
  const cudaError_t e = cudaMalloc(&p, n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("cuda: out of device memory allocating " + std::to_string(bytes >> 20) + " MiB (" +
                std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB)");
  }
  // zeroed before anything queued after this returns can touch it
  cudaError_t z = cudaMemsetAsync(p, 0, n, fill_stream());
  if (z == cudaSuccess) z = cudaStreamSynchronize(fill_stream());
  if (z != cudaSuccess) {
    cudaFree(p);
    check(z, "cudaMemsetAsync (zero-fill of a new allocation)");
  }
  count_allocation();
  return p;
}

void device_free(void* p) {
  if (p) cudaFree(p);  // no throw from a deleter; a failure here leaves nothing to recover
}

// ---- the session stream ----
CudaStream::CudaStream(const StreamOptions& o) : opt(o) {
  device = ensure_device();
  const dnn::Api& D = dnn_api();  // throws when cuDNN / cuBLAS are missing
  const blas::Api& B = blas_api();
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  try {
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check_dnn(D.Create(&dnn), "cudnnCreate");
    check_dnn(D.SetStream(dnn, stream), "cudnnSetStream");
    check_blas(B.Create(&blas), "cublasCreate");
    check_blas(B.SetStream(blas, stream), "cublasSetStream");
    check_blas(B.SetMathMode(blas, o.tf32 ? blas::TF32_TENSOR_OP_MATH : blas::PEDANTIC_MATH), "cublasSetMathMode");
    // cuBLAS gets its workspace from us, so that captured products allocate nothing (32 MiB: NVIDIA's
    // recommendation for Hopper)
    constexpr size_t kBlasWs = size_t(32) << 20;
    blas_workspace_ = device_alloc(kBlasWs);
    check_blas(B.SetWorkspace(blas, blas_workspace_, kBlasWs), "cublasSetWorkspace");
    run_info_dev_ = static_cast<RunInfo*>(device_alloc(sizeof(RunInfo)));
    run_info = run_info_dev_;
    small_dev = device_alloc(kSmall);
    check(cudaMallocHost(reinterpret_cast<void**>(&run_info_host_), sizeof(RunInfo)), "cudaMallocHost");
    count_allocation();
    check(cudaMallocHost(&small_host, kSmall), "cudaMallocHost");
    count_allocation();
  } catch (...) {
    release();
    throw;
  }
}

CudaStream::~CudaStream() { release(); }

void CudaStream::release() {
  // At process exit (a C++ global session destroyed after the CUDA runtime's teardown) the driver reclaims
  // everything: calling into cuDNN / cuBLAS then would crash.
  const cudaError_t q = stream ? cudaStreamQuery(stream) : cudaSuccess;
  if (q == cudaErrorCudartUnloading || q == cudaErrorContextIsDestroyed) {
    graphs_.clear();
    capturing_ = false;
    blas = nullptr;
    dnn = nullptr;
    blas_workspace_ = run_info_dev_ = nullptr;
    small_dev = small_host = nullptr;
    run_info_host_ = nullptr;
    stream = nullptr;
    return;
  }
  drop_captures();
  if (stream) cudaStreamSynchronize(stream);
  if (blas) blas_api().Destroy(blas);
  if (dnn) dnn_api().Destroy(dnn);
  device_free(blas_workspace_);
  device_free(run_info_dev_);
  device_free(small_dev);
  if (run_info_host_) cudaFreeHost(run_info_host_);
  if (small_host) cudaFreeHost(small_host);
  if (stream) cudaStreamDestroy(stream);
  blas = nullptr;
  dnn = nullptr;
  blas_workspace_ = run_info_dev_ = nullptr;
  small_dev = small_host = nullptr;
  run_info_host_ = nullptr;
  stream = nullptr;
}

void CudaStream::synchronize() { check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (a kernel failed)"); }

void CudaStream::set_run_info(uint64_t seed, int64_t step) {
  // every run ends with a synchronization (also a failed one: the session waits before rethrowing), so the copy
  // of the previous run is done and the pinned word is free to rewrite
  run_info_host_->seed = seed;
  run_info_host_->step = step;
  check(cudaMemcpyAsync(run_info_dev_, run_info_host_, sizeof(RunInfo), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (run info)");
}

void CudaStream::begin_capture() {
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  capturing_ = true;
}

void CudaStream::end_capture(int segment) {
  cudaGraph_t g = nullptr;
  capturing_ = false;
  const cudaError_t ec = cudaStreamEndCapture(stream, &g);
  if (ec != cudaSuccess) {
    if (g) cudaGraphDestroy(g);
    check(ec, "cudaStreamEndCapture (a kernel did something a graph cannot record)");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  check(e, "cudaGraphInstantiate");
  if (int(graphs_.size()) <= segment) graphs_.resize(segment + 1, nullptr);
  if (graphs_[segment]) cudaGraphExecDestroy(graphs_[segment]);
  graphs_[segment] = exec;
}

void CudaStream::replay(int segment) {
  if (segment >= int(graphs_.size()) || !graphs_[segment]) fail("replay of a segment never recorded");
  check(cudaGraphLaunch(graphs_[segment], stream), "cudaGraphLaunch");
}

void CudaStream::drop_captures() {
  if (capturing_) {  // a kernel threw while recording: end the capture and drop what it recorded
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    capturing_ = false;
  }
  for (auto& e : graphs_)
    if (e) cudaGraphExecDestroy(e);
  graphs_.clear();
}

CudaStream& stream_of(Stream* s) {
  auto* c = dynamic_cast<CudaStream*>(s);
  if (!c) fail("a cuda kernel ran without the cuda backend's stream");
  return *c;
}

// ---- descriptors ----
TensorDesc::TensorDesc() { check_dnn(dnn_api().CreateTensorDescriptor(&d), "cudnnCreateTensorDescriptor"); }
TensorDesc::~TensorDesc() {
  if (d) dnn_api().DestroyTensorDescriptor(d);
}
void TensorDesc::set4(int n, int c, int h, int w, int dtype) {
  check_dnn(dnn_api().SetTensor4dDescriptorEx(d, dtype, n, c, h, w, c * h * w, h * w, w, 1),
            "cudnnSetTensor4dDescriptor");
}
void TensorDesc::set(const Shape& s, int dtype) {
  if (s.size() <= 4) {
    int v[4] = {1, 1, 1, 1};
    for (size_t i = 0; i < s.size(); ++i) v[i] = int(s[i]);
    set4(v[0], v[1], v[2], v[3], dtype);
    return;
  }
  std::vector<int> dims(s.begin(), s.end()), strides(s.size());
  int64_t st = 1;
  for (size_t i = s.size(); i-- > 0;) {
    strides[i] = int(st);
    st *= s[i];
  }
  check_dnn(dnn_api().SetTensorNdDescriptor(d, dtype, int(s.size()), dims.data(), strides.data()),
            "cudnnSetTensorNdDescriptor");
}

FilterDesc::FilterDesc() { check_dnn(dnn_api().CreateFilterDescriptor(&d), "cudnnCreateFilterDescriptor"); }
FilterDesc::~FilterDesc() {
  if (d) dnn_api().DestroyFilterDescriptor(d);
}
void FilterDesc::set(int k, int c, int h, int w, int dtype) {
  check_dnn(dnn_api().SetFilter4dDescriptor(d, dtype, dnn::FORMAT_NCHW, k, c, h, w), "cudnnSetFilter4dDescriptor");
}

}  // namespace cnn::cuda
