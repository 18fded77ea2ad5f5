// Compile-time check that our own cuDNN / cuBLAS declarations (cpp/src/cuda/api.hpp) match NVIDIA's headers.
// Built (never run) by tests/test_cuda_api_decls.py with the headers that the nvidia-cudnn-cu13 and
// nvidia-cublas wheels ship (.ci/cuda_headers.sh extracts them); a mismatch is a compile error.
//
// What is checked:
//  - every enum value api.hpp declares equals the real enumerator;
//  - dnn::AlgoPerf has the size and field offsets of cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t;
//  - every function pointer in dnn::Api / blas::Api has exactly the type of the real function after mapping the
//    real types to ours (Ours<T>: cuDNN/cuBLAS handle and descriptor types to our opaque handles, every enum to
//    int, the AlgoPerf structs to dnn::AlgoPerf, recursively through pointers and const). So a missing or extra
//    argument, two arguments of different kinds swapped (a filter for a tensor descriptor, a pointer for an int,
//    size_t for int, double for float, const for non-const data) or a wrong return type fails to compile;
//  - every member of both tables is checked (the tables' sizes equal the number of checked members), so a
//    function added to api.hpp without a check here fails too.
// What cannot be caught by types: two adjacent arguments of the same mapped kind in the wrong order (two ints).
#include <cstddef>
#include <type_traits>

#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda/api.hpp"

namespace {
namespace dnn = cnn::cuda::dnn;
namespace blas = cnn::cuda::blas;

// ---- real type -> our type ----
template <class T, class Enable = void>
struct OursT {
  using type = T;
};
template <class T>
using Ours = typename OursT<T>::type;
template <class T>
struct OursT<T, std::enable_if_t<std::is_enum_v<T> && !std::is_const_v<T>>> {
  static_assert(sizeof(T) == sizeof(int), "an enum passed as int must be int-sized");
  using type = int;
};
template <class T>
struct OursT<T*, void> {
  using type = Ours<T>*;
};
template <class T>
struct OursT<const T, std::enable_if_t<!std::is_enum_v<T>>> {
  using type = const Ours<T>;
};
template <class T>
struct OursT<const T, std::enable_if_t<std::is_enum_v<T>>> {
  using type = const int;
};
#define CNN_MAP(real, ours)  \
  template <>                \
  struct OursT<real, void> { \
    using type = ours;       \
  };
CNN_MAP(cudnnHandle_t, dnn::Handle)
CNN_MAP(cudnnTensorDescriptor_t, dnn::TensorDesc)
CNN_MAP(cudnnFilterDescriptor_t, dnn::FilterDesc)
CNN_MAP(cudnnConvolutionDescriptor_t, dnn::ConvDesc)
CNN_MAP(cudnnPoolingDescriptor_t, dnn::PoolDesc)
CNN_MAP(cudnnActivationDescriptor_t, dnn::ActDesc)
CNN_MAP(cudnnLRNDescriptor_t, dnn::LrnDesc)
CNN_MAP(cudnnConvolutionFwdAlgoPerf_t, dnn::AlgoPerf)
CNN_MAP(cudnnConvolutionBwdDataAlgoPerf_t, dnn::AlgoPerf)
CNN_MAP(cudnnConvolutionBwdFilterAlgoPerf_t, dnn::AlgoPerf)
CNN_MAP(cublasHandle_t, blas::Handle)
#undef CNN_MAP

template <class F>
struct OursFn;
template <class R, class... A>
struct OursFn<R(A...)> {
  using type = Ours<R> (*)(Ours<A>...);
};
template <class F>
using OursFnPtr = typename OursFn<F>::type;

// The same mapped type for the real function and our table member.
template <class Real, class Member>
constexpr bool same_fn = std::is_same_v<OursFnPtr<Real>, Member>;

// sanity of the mapping itself: distinct handles stay distinct, enums become int, pointers and const follow
static_assert(std::is_same_v<Ours<const cudnnTensorDescriptor_t>, const dnn::TensorDesc>);
static_assert(std::is_same_v<Ours<cudnnFilterDescriptor_t*>, dnn::FilterDesc*>);
static_assert(std::is_same_v<Ours<cudnnDataType_t>, int>);
static_assert(std::is_same_v<Ours<const cudnnStatus_t*>, const int*>);
static_assert(!std::is_same_v<dnn::TensorDesc, dnn::FilterDesc> && !std::is_same_v<dnn::Handle, blas::Handle>);

// ---- enum values ----
#define CNN_EQ(ours, real) static_assert(static_cast<int>(ours) == static_cast<int>(real), #ours " != " #real);
CNN_EQ(dnn::SUCCESS, CUDNN_STATUS_SUCCESS)
CNN_EQ(dnn::DATA_FLOAT, CUDNN_DATA_FLOAT)
CNN_EQ(dnn::DATA_DOUBLE, CUDNN_DATA_DOUBLE)
CNN_EQ(dnn::DATA_HALF, CUDNN_DATA_HALF)
CNN_EQ(dnn::DATA_BFLOAT16, CUDNN_DATA_BFLOAT16)
CNN_EQ(dnn::FORMAT_NCHW, CUDNN_TENSOR_NCHW)
CNN_EQ(dnn::FORMAT_NHWC, CUDNN_TENSOR_NHWC)
CNN_EQ(dnn::DEFAULT_MATH, CUDNN_DEFAULT_MATH)
CNN_EQ(dnn::TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH)
CNN_EQ(dnn::TENSOR_OP_MATH_ALLOW_CONVERSION, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
CNN_EQ(dnn::FMA_MATH, CUDNN_FMA_MATH)
CNN_EQ(dnn::NOT_PROPAGATE_NAN, CUDNN_NOT_PROPAGATE_NAN)
CNN_EQ(dnn::PROPAGATE_NAN, CUDNN_PROPAGATE_NAN)
CNN_EQ(dnn::CONVOLUTION, CUDNN_CONVOLUTION)
CNN_EQ(dnn::CROSS_CORRELATION, CUDNN_CROSS_CORRELATION)
CNN_EQ(dnn::NON_DETERMINISTIC, CUDNN_NON_DETERMINISTIC)
CNN_EQ(dnn::DETERMINISTIC, CUDNN_DETERMINISTIC)
CNN_EQ(dnn::POOL_MAX, CUDNN_POOLING_MAX)
CNN_EQ(dnn::POOL_AVG_INCLUDE_PAD, CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING)
CNN_EQ(dnn::POOL_AVG_EXCLUDE_PAD, CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING)
CNN_EQ(dnn::POOL_MAX_DETERMINISTIC, CUDNN_POOLING_MAX_DETERMINISTIC)
CNN_EQ(dnn::ACT_SIGMOID, CUDNN_ACTIVATION_SIGMOID)
CNN_EQ(dnn::ACT_RELU, CUDNN_ACTIVATION_RELU)
CNN_EQ(dnn::ACT_TANH, CUDNN_ACTIVATION_TANH)
CNN_EQ(dnn::ACT_CLIPPED_RELU, CUDNN_ACTIVATION_CLIPPED_RELU)
CNN_EQ(dnn::ACT_ELU, CUDNN_ACTIVATION_ELU)
CNN_EQ(dnn::ACT_IDENTITY, CUDNN_ACTIVATION_IDENTITY)
CNN_EQ(dnn::SOFTMAX_FAST, CUDNN_SOFTMAX_FAST)
CNN_EQ(dnn::SOFTMAX_ACCURATE, CUDNN_SOFTMAX_ACCURATE)
CNN_EQ(dnn::SOFTMAX_LOG, CUDNN_SOFTMAX_LOG)
CNN_EQ(dnn::SOFTMAX_MODE_INSTANCE, CUDNN_SOFTMAX_MODE_INSTANCE)
CNN_EQ(dnn::SOFTMAX_MODE_CHANNEL, CUDNN_SOFTMAX_MODE_CHANNEL)
CNN_EQ(dnn::LRN_CROSS_CHANNEL_DIM1, CUDNN_LRN_CROSS_CHANNEL_DIM1)
CNN_EQ(dnn::BATCHNORM_PER_ACTIVATION, CUDNN_BATCHNORM_PER_ACTIVATION)
CNN_EQ(dnn::BATCHNORM_SPATIAL, CUDNN_BATCHNORM_SPATIAL)
CNN_EQ(dnn::BATCHNORM_SPATIAL_PERSISTENT, CUDNN_BATCHNORM_SPATIAL_PERSISTENT)

CNN_EQ(blas::SUCCESS, CUBLAS_STATUS_SUCCESS)
CNN_EQ(blas::OP_N, CUBLAS_OP_N)
CNN_EQ(blas::OP_T, CUBLAS_OP_T)
CNN_EQ(blas::DEFAULT_MATH, CUBLAS_DEFAULT_MATH)
CNN_EQ(blas::PEDANTIC_MATH, CUBLAS_PEDANTIC_MATH)
CNN_EQ(blas::TF32_TENSOR_OP_MATH, CUBLAS_TF32_TENSOR_OP_MATH)
CNN_EQ(blas::COMPUTE_32F, CUBLAS_COMPUTE_32F)
CNN_EQ(blas::COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F_FAST_TF32)
CNN_EQ(blas::GEMM_DEFAULT, CUBLAS_GEMM_DEFAULT)
#undef CNN_EQ

// ---- dnn::AlgoPerf layout ----
#define CNN_PERF(real)                                                                                         \
  static_assert(sizeof(dnn::AlgoPerf) == sizeof(real), "sizeof AlgoPerf vs " #real);                           \
  static_assert(alignof(dnn::AlgoPerf) == alignof(real), "alignof AlgoPerf vs " #real);                        \
  static_assert(offsetof(dnn::AlgoPerf, algo) == offsetof(real, algo), "algo in " #real);                      \
  static_assert(offsetof(dnn::AlgoPerf, status) == offsetof(real, status), "status in " #real);                \
  static_assert(offsetof(dnn::AlgoPerf, time) == offsetof(real, time), "time in " #real);                      \
  static_assert(offsetof(dnn::AlgoPerf, memory) == offsetof(real, memory), "memory in " #real);                \
  static_assert(offsetof(dnn::AlgoPerf, determinism) == offsetof(real, determinism), "det in " #real);         \
  static_assert(offsetof(dnn::AlgoPerf, math_type) == offsetof(real, mathType), "mathType in " #real);         \
  static_assert(offsetof(dnn::AlgoPerf, reserved) == offsetof(real, reserved), "reserved in " #real);          \
  static_assert(sizeof(dnn::AlgoPerf::reserved) == sizeof(real::reserved), "reserved size in " #real);         \
  static_assert(std::is_same_v<Ours<decltype(real::algo)>, decltype(dnn::AlgoPerf::algo)> &&                   \
                    std::is_same_v<Ours<decltype(real::status)>, decltype(dnn::AlgoPerf::status)> &&           \
                    std::is_same_v<decltype(real::time), decltype(dnn::AlgoPerf::time)> &&                     \
                    std::is_same_v<decltype(real::memory), decltype(dnn::AlgoPerf::memory)> &&                 \
                    std::is_same_v<Ours<decltype(real::determinism)>, decltype(dnn::AlgoPerf::determinism)> && \
                    std::is_same_v<Ours<decltype(real::mathType)>, decltype(dnn::AlgoPerf::math_type)>,        \
                "field types of " #real);
CNN_PERF(cudnnConvolutionFwdAlgoPerf_t)
CNN_PERF(cudnnConvolutionBwdDataAlgoPerf_t)
CNN_PERF(cudnnConvolutionBwdFilterAlgoPerf_t)
#undef CNN_PERF

// ---- function tables ----
// X(member, real function): each member of the table, with the real function the loader resolves for it.
#define CNN_DNN_FUNCTIONS(X)                                                                   \
  X(GetVersion, cudnnGetVersion)                                                               \
  X(GetErrorString, cudnnGetErrorString)                                                       \
  X(Create, cudnnCreate)                                                                       \
  X(Destroy, cudnnDestroy)                                                                     \
  X(SetStream, cudnnSetStream)                                                                 \
  X(CreateTensorDescriptor, cudnnCreateTensorDescriptor)                                       \
  X(SetTensorNdDescriptor, cudnnSetTensorNdDescriptor)                                         \
  X(SetTensor4dDescriptorEx, cudnnSetTensor4dDescriptorEx)                                     \
  X(DestroyTensorDescriptor, cudnnDestroyTensorDescriptor)                                     \
  X(CreateFilterDescriptor, cudnnCreateFilterDescriptor)                                       \
  X(SetFilter4dDescriptor, cudnnSetFilter4dDescriptor)                                         \
  X(DestroyFilterDescriptor, cudnnDestroyFilterDescriptor)                                     \
  X(CreateConvolutionDescriptor, cudnnCreateConvolutionDescriptor)                             \
  X(SetConvolution2dDescriptor, cudnnSetConvolution2dDescriptor)                               \
  X(SetConvolutionGroupCount, cudnnSetConvolutionGroupCount)                                   \
  X(SetConvolutionMathType, cudnnSetConvolutionMathType)                                       \
  X(DestroyConvolutionDescriptor, cudnnDestroyConvolutionDescriptor)                           \
  X(GetConvolutionForwardAlgorithm_v7, cudnnGetConvolutionForwardAlgorithm_v7)                 \
  X(GetConvolutionBackwardDataAlgorithm_v7, cudnnGetConvolutionBackwardDataAlgorithm_v7)       \
  X(GetConvolutionBackwardFilterAlgorithm_v7, cudnnGetConvolutionBackwardFilterAlgorithm_v7)   \
  X(FindConvolutionForwardAlgorithmEx, cudnnFindConvolutionForwardAlgorithmEx)                 \
  X(FindConvolutionBackwardDataAlgorithmEx, cudnnFindConvolutionBackwardDataAlgorithmEx)       \
  X(FindConvolutionBackwardFilterAlgorithmEx, cudnnFindConvolutionBackwardFilterAlgorithmEx)   \
  X(GetConvolutionForwardWorkspaceSize, cudnnGetConvolutionForwardWorkspaceSize)               \
  X(GetConvolutionBackwardDataWorkspaceSize, cudnnGetConvolutionBackwardDataWorkspaceSize)     \
  X(GetConvolutionBackwardFilterWorkspaceSize, cudnnGetConvolutionBackwardFilterWorkspaceSize) \
  X(ConvolutionForward, cudnnConvolutionForward)                                               \
  X(ConvolutionBackwardData, cudnnConvolutionBackwardData)                                     \
  X(ConvolutionBackwardFilter, cudnnConvolutionBackwardFilter)                                 \
  X(ConvolutionBiasActivationForward, cudnnConvolutionBiasActivationForward)                   \
  X(ConvolutionBackwardBias, cudnnConvolutionBackwardBias)                                     \
  X(AddTensor, cudnnAddTensor)                                                                 \
  X(CreatePoolingDescriptor, cudnnCreatePoolingDescriptor)                                     \
  X(SetPooling2dDescriptor, cudnnSetPooling2dDescriptor)                                       \
  X(DestroyPoolingDescriptor, cudnnDestroyPoolingDescriptor)                                   \
  X(PoolingForward, cudnnPoolingForward)                                                       \
  X(PoolingBackward, cudnnPoolingBackward)                                                     \
  X(CreateActivationDescriptor, cudnnCreateActivationDescriptor)                               \
  X(SetActivationDescriptor, cudnnSetActivationDescriptor)                                     \
  X(DestroyActivationDescriptor, cudnnDestroyActivationDescriptor)                             \
  X(ActivationForward, cudnnActivationForward)                                                 \
  X(ActivationBackward, cudnnActivationBackward)                                               \
  X(SoftmaxForward, cudnnSoftmaxForward)                                                       \
  X(SoftmaxBackward, cudnnSoftmaxBackward)                                                     \
  X(CreateLRNDescriptor, cudnnCreateLRNDescriptor)                                             \
  X(SetLRNDescriptor, cudnnSetLRNDescriptor)                                                   \
  X(DestroyLRNDescriptor, cudnnDestroyLRNDescriptor)                                           \
  X(LRNCrossChannelForward, cudnnLRNCrossChannelForward)                                       \
  X(LRNCrossChannelBackward, cudnnLRNCrossChannelBackward)                                     \
  X(BatchNormalizationForwardTraining, cudnnBatchNormalizationForwardTraining)                 \
  X(BatchNormalizationForwardInference, cudnnBatchNormalizationForwardInference)               \
  X(BatchNormalizationBackward, cudnnBatchNormalizationBackward)

// cublas_v2.h #defines cublasCreate etc. to the *_v2 symbols: the names here expand to the symbols the
// loader must resolve. cublasGemmEx is overloaded in C++ (a static inline wrapper taking the old
// cudaDataType compute type), so it is checked through the exact C prototype, which must select the real
// extern "C" declaration (a prototype that does not exist there fails to compile).
using RealGemmEx = cublasStatus_t(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                  const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                                  cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
constexpr RealGemmEx* real_gemm_ex = &cublasGemmEx;

#define CNN_BLAS_FUNCTIONS(X)               \
  X(Create, cublasCreate)                   \
  X(Destroy, cublasDestroy)                 \
  X(SetStream, cublasSetStream)             \
  X(SetMathMode, cublasSetMathMode)         \
  X(SetWorkspace, cublasSetWorkspace)       \
  X(GetVersion, cublasGetVersion)           \
  X(GetStatusString, cublasGetStatusString) \
  X(GemmEx, *real_gemm_ex)                  \
  X(SgemmStridedBatched, cublasSgemmStridedBatched)

#define CNN_CHECK_DNN(member, real)                                                          \
  static_assert(same_fn<std::remove_pointer_t<decltype(&real)>, decltype(dnn::Api::member)>, \
                "dnn::Api::" #member " does not match " #real);
#define CNN_CHECK_BLAS(member, real)                                                          \
  static_assert(same_fn<std::remove_pointer_t<decltype(&real)>, decltype(blas::Api::member)>, \
                "blas::Api::" #member " does not match " #real);
#define CNN_COUNT(member, real) +1
CNN_DNN_FUNCTIONS(CNN_CHECK_DNN)
CNN_BLAS_FUNCTIONS(CNN_CHECK_BLAS)
// every member is a function pointer that was checked above: none added to api.hpp without a check here
static_assert(sizeof(dnn::Api) == (0 CNN_DNN_FUNCTIONS(CNN_COUNT)) * sizeof(void*),
              "dnn::Api has members this file does not check");
static_assert(sizeof(blas::Api) == (0 CNN_BLAS_FUNCTIONS(CNN_COUNT)) * sizeof(void*),
              "blas::Api has members this file does not check");
}  // namespace

int main() { return 0; }
