// Finds and loads cuDNN 9 and cuBLAS 13 at run time (see api.hpp for why), resolving every function the backend
// calls. Once per process; a failure is remembered and rethrown with the same message.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cnnnative/cnnnative.hpp"
#include "cuda/api.hpp"

namespace cnn::cuda {
namespace {

// The folder of this plugin library.
std::string plugin_dir() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&libraries_info), &info) || !info.dli_fname) return ".";
  std::string p = info.dli_fname;
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::vector<std::string> split_dirs(const char* env) {
  std::vector<std::string> v;
  if (!env) return v;
  std::string s = env;
  for (size_t a = 0; a <= s.size();) {
    size_t b = s.find(':', a);
    if (b == std::string::npos) b = s.size();
    if (b > a) v.push_back(s.substr(a, b - a));
    a = b + 1;
  }
  return v;
}

bool exists(const std::string& path) {
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
    return true;
  }
  return false;
}

struct Loaded {
  void* handle = nullptr;
  std::string path;
};

// Opens the first candidate that exists (or, last, the bare soname through the loader's search path).
Loaded open_library(const char* env_file, const char* soname, const char* wheel_subdir, const char* wheel,
                    const char* what) {
  std::vector<std::string> tried;
  std::vector<std::string> candidates;
  if (const char* f = std::getenv(env_file)) candidates.push_back(f);
  for (const auto& d : split_dirs(std::getenv("CNNNATIVE_NVIDIA_LIB_DIRS"))) candidates.push_back(d + "/" + soname);
  // site-packages/cnnnative/lib/libcnnnative_cuda.so -> site-packages/nvidia/<subdir>/lib
  candidates.push_back(plugin_dir() + "/../../nvidia/" + wheel_subdir + "/lib/" + soname);
  std::string errors;
  for (const auto& c : candidates) {
    if (!exists(c)) {
      tried.push_back(c);
      continue;
    }
    if (void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL)) return {h, c};
    const char* e = dlerror();
    errors += std::string("; ") + c + ": " + (e ? e : "failed to load");
  }
  if (void* h = dlopen(soname, RTLD_NOW | RTLD_GLOBAL)) return {h, soname};
  const char* e = dlerror();
  std::string where;
  for (const auto& t : tried) where += (where.empty() ? "" : ", ") + t;
  throw Error(std::string("device='cuda': ") + what + " (" + soname + ") was not found: looked in " + where +
              " and the system's library path (" + (e ? e : "not found") + ")" + errors +
              ". Install it with `pip install " + wheel + "` (or `pip install 'cnnnative[cuda]'`), or point " +
              env_file + " at the library file");
}

template <class F>
void resolve(void* h, const char* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(h, name));
  if (!fn) throw Error(std::string("device='cuda': ") + lib + " has no function " + name + " (too old a version?)");
}

struct State {
  std::once_flag once;
  std::string error;  // non-empty: loading failed
  dnn::Api dnn{};
  blas::Api blas{};
  std::string dnn_path, blas_path;
};
State& state() {
  static State s;
  return s;
}

void load_all() {
  State& s = state();
  try {
    // cuBLAS first: cuDNN's engines use it too
    Loaded b = open_library("CNNNATIVE_CUBLAS_LIB", "libcublas.so.13", "cu13", "nvidia-cublas", "cuBLAS 13");
    s.blas_path = b.path;
    auto& B = s.blas;
    const char* bl = "cuBLAS";
    resolve(b.handle, bl, "cublasCreate_v2", B.Create);
    resolve(b.handle, bl, "cublasDestroy_v2", B.Destroy);
    resolve(b.handle, bl, "cublasSetStream_v2", B.SetStream);
    resolve(b.handle, bl, "cublasSetMathMode", B.SetMathMode);
    resolve(b.handle, bl, "cublasSetWorkspace_v2", B.SetWorkspace);
    resolve(b.handle, bl, "cublasGetVersion_v2", B.GetVersion);
    resolve(b.handle, bl, "cublasGetStatusString", B.GetStatusString);
    resolve(b.handle, bl, "cublasGemmEx", B.GemmEx);
    resolve(b.handle, bl, "cublasSgemmStridedBatched", B.SgemmStridedBatched);

    Loaded d = open_library("CNNNATIVE_CUDNN_LIB", "libcudnn.so.9", "cudnn", "nvidia-cudnn-cu13", "cuDNN 9");
    s.dnn_path = d.path;
    auto& D = s.dnn;
    const char* dl = "cuDNN";
    // libcudnn.so.9 is a shim that loads its sub-libraries on the first call, and aborts the process when one is
    // missing (or cannot load: libcudnn_graph needs libz): load them here first, so that is an Error instead.
    {
      size_t (*version)() = nullptr;
      resolve(d.handle, dl, "cudnnGetVersion", version);
      Dl_info di{};
      std::string dir = dladdr(reinterpret_cast<void*>(version), &di) && di.dli_fname ? di.dli_fname : "";
      dir = dir.rfind('/') == std::string::npos ? std::string(".") : dir.substr(0, dir.rfind('/'));
      for (const char* sub : {"libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9"}) {
        const std::string p = dir + "/" + sub;
        if (!dlopen(p.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
          const char* e = dlerror();
          throw Error(std::string("device='cuda': cuDNN's sub-library ") + p + " cannot be loaded (" +
                      (e ? e : "not found") + "); reinstall nvidia-cudnn-cu13");
        }
      }
      size_t (*cudart)() = nullptr;
      resolve(d.handle, dl, "cudnnGetCudartVersion", cudart);
      if (cudart() / 1000 != 13)
        throw Error("device='cuda': " + s.dnn_path + " is a cuDNN built for CUDA " + std::to_string(cudart() / 1000) +
                    " (nvidia-cudnn-cu12?); the cuda backend needs the CUDA 13 build: pip install nvidia-cudnn-cu13");
      for (const char* check : {"cudnnGraphVersionCheck", "cudnnOpsVersionCheck", "cudnnCnnVersionCheck"}) {
        int (*fn)() = nullptr;
        resolve(d.handle, dl, check, fn);
        if (const int st = fn())
          throw Error(std::string("device='cuda': cuDNN's ") + check + " failed with status " + std::to_string(st) +
                      " (sub-libraries of different versions? reinstall nvidia-cudnn-cu13)");
      }
    }
#define CNN_DNN(name) resolve(d.handle, dl, "cudnn" #name, D.name)
    CNN_DNN(GetVersion);
    CNN_DNN(GetErrorString);
    CNN_DNN(Create);
    CNN_DNN(Destroy);
    CNN_DNN(SetStream);
    CNN_DNN(CreateTensorDescriptor);
    CNN_DNN(SetTensorNdDescriptor);
    CNN_DNN(SetTensor4dDescriptorEx);
    CNN_DNN(DestroyTensorDescriptor);
    CNN_DNN(CreateFilterDescriptor);
    CNN_DNN(SetFilter4dDescriptor);
    CNN_DNN(DestroyFilterDescriptor);
    CNN_DNN(CreateConvolutionDescriptor);
    CNN_DNN(SetConvolution2dDescriptor);
    CNN_DNN(SetConvolutionGroupCount);
    CNN_DNN(SetConvolutionMathType);
    CNN_DNN(DestroyConvolutionDescriptor);
    CNN_DNN(GetConvolutionForwardAlgorithm_v7);
    CNN_DNN(GetConvolutionBackwardDataAlgorithm_v7);
    CNN_DNN(GetConvolutionBackwardFilterAlgorithm_v7);
    CNN_DNN(FindConvolutionForwardAlgorithmEx);
    CNN_DNN(FindConvolutionBackwardDataAlgorithmEx);
    CNN_DNN(FindConvolutionBackwardFilterAlgorithmEx);
    CNN_DNN(GetConvolutionForwardWorkspaceSize);
    CNN_DNN(GetConvolutionBackwardDataWorkspaceSize);
    CNN_DNN(GetConvolutionBackwardFilterWorkspaceSize);
    CNN_DNN(ConvolutionForward);
    CNN_DNN(ConvolutionBackwardData);
    CNN_DNN(ConvolutionBackwardFilter);
    CNN_DNN(ConvolutionBiasActivationForward);
    CNN_DNN(ConvolutionBackwardBias);
    CNN_DNN(AddTensor);
    CNN_DNN(CreatePoolingDescriptor);
    CNN_DNN(SetPooling2dDescriptor);
    CNN_DNN(DestroyPoolingDescriptor);
    CNN_DNN(PoolingForward);
    CNN_DNN(PoolingBackward);
    CNN_DNN(CreateActivationDescriptor);
    CNN_DNN(SetActivationDescriptor);
    CNN_DNN(DestroyActivationDescriptor);
    CNN_DNN(ActivationForward);
    CNN_DNN(ActivationBackward);
    CNN_DNN(SoftmaxForward);
    CNN_DNN(SoftmaxBackward);
    CNN_DNN(CreateLRNDescriptor);
    CNN_DNN(SetLRNDescriptor);
    CNN_DNN(DestroyLRNDescriptor);
    CNN_DNN(LRNCrossChannelForward);
    CNN_DNN(LRNCrossChannelBackward);
    CNN_DNN(BatchNormalizationForwardTraining);
    CNN_DNN(BatchNormalizationForwardInference);
    CNN_DNN(BatchNormalizationBackward);
#undef CNN_DNN
    const size_t v = D.GetVersion();
    if (v < 90000 || v >= 100000)
      throw Error("device='cuda': cuDNN 9 is needed, " + s.dnn_path + " is version " + std::to_string(v) +
                  " (pip install nvidia-cudnn-cu13)");
  } catch (const Error& e) {
    s.error = e.what();
  }
}

const State& loaded() {
  State& s = state();
  std::call_once(s.once, load_all);
  if (!s.error.empty()) throw Error(s.error);
  return s;
}

}  // namespace

const dnn::Api& dnn_api() { return loaded().dnn; }
const blas::Api& blas_api() { return loaded().blas; }

std::string libraries_info() {
  const State& s = loaded();
  const size_t v = s.dnn.GetVersion();
  return "cuDNN " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) +
         " (" + s.dnn_path + "), cuBLAS (" + s.blas_path + ")";
}

}  // namespace cnn::cuda
