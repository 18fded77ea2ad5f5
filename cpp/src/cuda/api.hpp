// The subset of cuDNN 9 and cuBLAS 13 that the cuda backend calls, declared here and resolved at run time
// (loader.cpp: dlopen of the libraries NVIDIA's PyPI wheels install, nvidia-cudnn-cu13 and nvidia-cublas).
//
// Why not the vendor headers: the build then needs only nvcc (the CUDA toolkit has no cuDNN, and the wheels
// that carry the headers are ~1 GB that a plain `pip install .` must not download); the libraries are found
// where the user's `pip install '.[cuda]'` put them, whatever their minor versions. The declarations are the
// documented C ABI: opaque handles, int-sized enums, the values below. cpp/tests/cuda_api_check.cpp compiles
// them against the real headers (static_asserts on every value and function type); CI runs it with the headers
// extracted from the wheels (.ci/cuda_headers.sh).
//
// Only the legacy (non-graph) cuDNN API is used: descriptors plus one call per operation, with algorithm
// search once per kernel at compile time. Every function pointer is non-null after load() succeeded.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace cnn::cuda {

// ---- cuDNN ----
namespace dnn {
using Handle = struct HandleOpaque*;
using TensorDesc = struct TensorDescOpaque*;
using FilterDesc = struct FilterDescOpaque*;
using ConvDesc = struct ConvDescOpaque*;
using PoolDesc = struct PoolDescOpaque*;
using ActDesc = struct ActDescOpaque*;
using LrnDesc = struct LrnDescOpaque*;
using Status = int;  // 0: success

enum : int { SUCCESS = 0 };
// cudnnDataType_t
enum : int { DATA_FLOAT = 0, DATA_DOUBLE = 1, DATA_HALF = 2, DATA_BFLOAT16 = 9 };
// cudnnTensorFormat_t
enum : int { FORMAT_NCHW = 0, FORMAT_NHWC = 1 };
// cudnnMathType_t
enum : int { DEFAULT_MATH = 0, TENSOR_OP_MATH = 1, TENSOR_OP_MATH_ALLOW_CONVERSION = 2, FMA_MATH = 3 };
// cudnnNanPropagation_t
enum : int { NOT_PROPAGATE_NAN = 0, PROPAGATE_NAN = 1 };
// cudnnConvolutionMode_t
enum : int { CONVOLUTION = 0, CROSS_CORRELATION = 1 };
// cudnnDeterminism_t
enum : int { NON_DETERMINISTIC = 0, DETERMINISTIC = 1 };
// cudnnPoolingMode_t
enum : int { POOL_MAX = 0, POOL_AVG_INCLUDE_PAD = 1, POOL_AVG_EXCLUDE_PAD = 2, POOL_MAX_DETERMINISTIC = 3 };
// cudnnActivationMode_t
enum : int { ACT_SIGMOID = 0, ACT_RELU = 1, ACT_TANH = 2, ACT_CLIPPED_RELU = 3, ACT_ELU = 4, ACT_IDENTITY = 5 };
// cudnnSoftmaxAlgorithm_t, cudnnSoftmaxMode_t
enum : int { SOFTMAX_FAST = 0, SOFTMAX_ACCURATE = 1, SOFTMAX_LOG = 2 };
enum : int { SOFTMAX_MODE_INSTANCE = 0, SOFTMAX_MODE_CHANNEL = 1 };
// cudnnLRNMode_t
enum : int { LRN_CROSS_CHANNEL_DIM1 = 0 };
// cudnnBatchNormMode_t
enum : int { BATCHNORM_PER_ACTIVATION = 0, BATCHNORM_SPATIAL = 1, BATCHNORM_SPATIAL_PERSISTENT = 2 };

// cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t (one layout for the three)
struct AlgoPerf {
  int algo;
  Status status;
  float time;  // ms
  size_t memory;
  int determinism;
  int math_type;
  int reserved[3];
};

struct Api {
  size_t (*GetVersion)();
  const char* (*GetErrorString)(Status);
  Status (*Create)(Handle*);
  Status (*Destroy)(Handle);
  Status (*SetStream)(Handle, cudaStream_t);

  Status (*CreateTensorDescriptor)(TensorDesc*);
  Status (*SetTensorNdDescriptor)(TensorDesc, int dtype, int nb_dims, const int dims[], const int strides[]);
  Status (*SetTensor4dDescriptorEx)(TensorDesc, int dtype, int n, int c, int h, int w, int ns, int cs, int hs, int ws);
  Status (*DestroyTensorDescriptor)(TensorDesc);
  Status (*CreateFilterDescriptor)(FilterDesc*);
  Status (*SetFilter4dDescriptor)(FilterDesc, int dtype, int format, int k, int c, int h, int w);
  Status (*DestroyFilterDescriptor)(FilterDesc);
  Status (*CreateConvolutionDescriptor)(ConvDesc*);
  Status (*SetConvolution2dDescriptor)(ConvDesc, int pad_h, int pad_w, int stride_h, int stride_w, int dil_h, int dil_w,
                                       int mode, int compute_dtype);
  Status (*SetConvolutionGroupCount)(ConvDesc, int groups);
  Status (*SetConvolutionMathType)(ConvDesc, int math_type);
  Status (*DestroyConvolutionDescriptor)(ConvDesc);

  Status (*GetConvolutionForwardAlgorithm_v7)(Handle, TensorDesc x, FilterDesc w, ConvDesc, TensorDesc y, int requested,
                                              int* returned, AlgoPerf* perf);
  Status (*GetConvolutionBackwardDataAlgorithm_v7)(Handle, FilterDesc w, TensorDesc dy, ConvDesc, TensorDesc dx,
                                                   int requested, int* returned, AlgoPerf* perf);
  Status (*GetConvolutionBackwardFilterAlgorithm_v7)(Handle, TensorDesc x, TensorDesc dy, ConvDesc, FilterDesc dw,
                                                     int requested, int* returned, AlgoPerf* perf);
  Status (*FindConvolutionForwardAlgorithmEx)(Handle, TensorDesc x, const void* xp, FilterDesc w, const void* wp,
                                              ConvDesc, TensorDesc y, void* yp, int requested, int* returned,
                                              AlgoPerf* perf, void* ws, size_t ws_bytes);
  Status (*FindConvolutionBackwardDataAlgorithmEx)(Handle, FilterDesc w, const void* wp, TensorDesc dy, const void* dyp,
                                                   ConvDesc, TensorDesc dx, void* dxp, int requested, int* returned,
                                                   AlgoPerf* perf, void* ws, size_t ws_bytes);
  Status (*FindConvolutionBackwardFilterAlgorithmEx)(Handle, TensorDesc x, const void* xp, TensorDesc dy,
                                                     const void* dyp, ConvDesc, FilterDesc dw, void* dwp, int requested,
                                                     int* returned, AlgoPerf* perf, void* ws, size_t ws_bytes);
  Status (*GetConvolutionForwardWorkspaceSize)(Handle, TensorDesc x, FilterDesc w, ConvDesc, TensorDesc y, int algo,
                                               size_t* bytes);
  Status (*GetConvolutionBackwardDataWorkspaceSize)(Handle, FilterDesc w, TensorDesc dy, ConvDesc, TensorDesc dx,
                                                    int algo, size_t* bytes);
  Status (*GetConvolutionBackwardFilterWorkspaceSize)(Handle, TensorDesc x, TensorDesc dy, ConvDesc, FilterDesc dw,
                                                      int algo, size_t* bytes);
  Status (*ConvolutionForward)(Handle, const void* alpha, TensorDesc x, const void* xp, FilterDesc w, const void* wp,
                               ConvDesc, int algo, void* ws, size_t ws_bytes, const void* beta, TensorDesc y, void* yp);
  Status (*ConvolutionBackwardData)(Handle, const void* alpha, FilterDesc w, const void* wp, TensorDesc dy,
                                    const void* dyp, ConvDesc, int algo, void* ws, size_t ws_bytes, const void* beta,
                                    TensorDesc dx, void* dxp);
  Status (*ConvolutionBackwardFilter)(Handle, const void* alpha, TensorDesc x, const void* xp, TensorDesc dy,
                                      const void* dyp, ConvDesc, int algo, void* ws, size_t ws_bytes, const void* beta,
                                      FilterDesc dw, void* dwp);
  Status (*ConvolutionBiasActivationForward)(Handle, const void* alpha1, TensorDesc x, const void* xp, FilterDesc w,
                                             const void* wp, ConvDesc, int algo, void* ws, size_t ws_bytes,
                                             const void* alpha2, TensorDesc z, const void* zp, TensorDesc bias,
                                             const void* biasp, ActDesc act, TensorDesc y, void* yp);
  Status (*ConvolutionBackwardBias)(Handle, const void* alpha, TensorDesc dy, const void* dyp, const void* beta,
                                    TensorDesc db, void* dbp);
  Status (*AddTensor)(Handle, const void* alpha, TensorDesc a, const void* ap, const void* beta, TensorDesc c,
                      void* cp);

  Status (*CreatePoolingDescriptor)(PoolDesc*);
  Status (*SetPooling2dDescriptor)(PoolDesc, int mode, int nan_opt, int win_h, int win_w, int pad_h, int pad_w,
                                   int stride_h, int stride_w);
  Status (*DestroyPoolingDescriptor)(PoolDesc);
  Status (*PoolingForward)(Handle, PoolDesc, const void* alpha, TensorDesc x, const void* xp, const void* beta,
                           TensorDesc y, void* yp);
  Status (*PoolingBackward)(Handle, PoolDesc, const void* alpha, TensorDesc y, const void* yp, TensorDesc dy,
                            const void* dyp, TensorDesc x, const void* xp, const void* beta, TensorDesc dx, void* dxp);

  Status (*CreateActivationDescriptor)(ActDesc*);
  Status (*SetActivationDescriptor)(ActDesc, int mode, int nan_opt, double coef);
  Status (*DestroyActivationDescriptor)(ActDesc);
  Status (*ActivationForward)(Handle, ActDesc, const void* alpha, TensorDesc x, const void* xp, const void* beta,
                              TensorDesc y, void* yp);
  Status (*ActivationBackward)(Handle, ActDesc, const void* alpha, TensorDesc y, const void* yp, TensorDesc dy,
                               const void* dyp, TensorDesc x, const void* xp, const void* beta, TensorDesc dx,
                               void* dxp);

  Status (*SoftmaxForward)(Handle, int algo, int mode, const void* alpha, TensorDesc x, const void* xp,
                           const void* beta, TensorDesc y, void* yp);
  Status (*SoftmaxBackward)(Handle, int algo, int mode, const void* alpha, TensorDesc y, const void* yp, TensorDesc dy,
                            const void* dyp, const void* beta, TensorDesc dx, void* dxp);

  Status (*CreateLRNDescriptor)(LrnDesc*);
  Status (*SetLRNDescriptor)(LrnDesc, unsigned n, double alpha, double beta, double k);
  Status (*DestroyLRNDescriptor)(LrnDesc);
  Status (*LRNCrossChannelForward)(Handle, LrnDesc, int mode, const void* alpha, TensorDesc x, const void* xp,
                                   const void* beta, TensorDesc y, void* yp);
  Status (*LRNCrossChannelBackward)(Handle, LrnDesc, int mode, const void* alpha, TensorDesc y, const void* yp,
                                    TensorDesc dy, const void* dyp, TensorDesc x, const void* xp, const void* beta,
                                    TensorDesc dx, void* dxp);

  Status (*BatchNormalizationForwardTraining)(Handle, int mode, const void* alpha, const void* beta, TensorDesc x,
                                              const void* xp, TensorDesc y, void* yp, TensorDesc stats,
                                              const void* scale, const void* bias, double exp_avg_factor,
                                              void* running_mean, void* running_var, double eps, void* save_mean,
                                              void* save_inv_var);
  Status (*BatchNormalizationForwardInference)(Handle, int mode, const void* alpha, const void* beta, TensorDesc x,
                                               const void* xp, TensorDesc y, void* yp, TensorDesc stats,
                                               const void* scale, const void* bias, const void* mean, const void* var,
                                               double eps);
  Status (*BatchNormalizationBackward)(Handle, int mode, const void* alpha_data, const void* beta_data,
                                       const void* alpha_param, const void* beta_param, TensorDesc x, const void* xp,
                                       TensorDesc dy, const void* dyp, TensorDesc dx, void* dxp, TensorDesc stats,
                                       const void* scale, void* dscale, void* dbias, double eps, const void* save_mean,
                                       const void* save_inv_var);
};
}  // namespace dnn

// ---- cuBLAS ----
namespace blas {
using Handle = struct HandleOpaque*;
using Status = int;  // 0: success
enum : int { SUCCESS = 0 };
// cublasOperation_t
enum : int { OP_N = 0, OP_T = 1 };
// cublasMath_t
enum : int { DEFAULT_MATH = 0, PEDANTIC_MATH = 2, TF32_TENSOR_OP_MATH = 3 };
// cublasComputeType_t
enum : int { COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77 };
// cublasGemmAlgo_t
enum : int { GEMM_DEFAULT = -1 };

struct Api {
  Status (*Create)(Handle*);
  Status (*Destroy)(Handle);
  Status (*SetStream)(Handle, cudaStream_t);
  Status (*SetMathMode)(Handle, int mode);
  Status (*SetWorkspace)(Handle, void* ws, size_t bytes);
  Status (*GetVersion)(Handle, int* version);
  const char* (*GetStatusString)(Status);
  // column-major C = alpha op(A) op(B) + beta C; data types are cudaDataType (CUDA_R_32F, CUDA_R_16BF)
  Status (*GemmEx)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a, int a_type,
                   int lda, const void* b, int b_type, int ldb, const void* beta, void* c, int c_type, int ldc,
                   int compute_type, int algo);
  Status (*SgemmStridedBatched)(Handle, int transa, int transb, int m, int n, int k, const float* alpha, const float* a,
                                int lda, long long stride_a, const float* b, int ldb, long long stride_b,
                                const float* beta, float* c, int ldc, long long stride_c, int batch);
};
}  // namespace blas

// Loads cuDNN and cuBLAS once per process (thread-safe). Throws cnn::Error saying which library was looked for
// where, and how to install it, when one is missing or too old. Looked for, in order: the file named by
// CNNNATIVE_CUDNN_LIB / CNNNATIVE_CUBLAS_LIB; the wheels' folders beside this installation
// (<site-packages>/nvidia/cudnn/lib, <site-packages>/nvidia/cu13/lib) and in CNNNATIVE_NVIDIA_LIB_DIRS
// (colon-separated folders; the Python package sets it from the installed wheels); then the loader's own
// search path (LD_LIBRARY_PATH, a system install).
const dnn::Api& dnn_api();
const blas::Api& blas_api();
// "cuDNN 9.x.y (path), cuBLAS 13.x (path)", after loading.
std::string libraries_info();

}  // namespace cnn::cuda
