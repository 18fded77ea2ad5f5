// Convolutions on the cuda backend, through cuDNN's legacy API (descriptors, heuristics, one call per operation):
//   conv2d (x, w [, b]) -> y                       ConvolutionForward (+ AddTensor for the bias)
//   conv2d_grad_data (dy, w) -> dx                 ConvolutionBackwardData
//   conv2d_grad_weights (dy, x) -> dw [, db]       ConvolutionBackwardFilter (+ ConvolutionBackwardBias)
//   conv_transpose2d (x, w [, b]) -> y             ConvolutionBackwardData of the convolution y -> x (+ AddTensor)
//   conv_transpose2d_grad_data (dy, w) -> dx       ConvolutionForward of that convolution
//   conv_transpose2d_grad_weights (dy, x) -> dw [, db]  ConvolutionBackwardFilter (x = dy, dy = x) (+ BackwardBias)
//   fused_conv2d (x, w, [b], [gamma, beta, mean, var], [residual]) -> y
//       BN folded on the device every run (fold_bn_kernel: w * s and t = beta + (b - mean) * s into the persistent
//       region), the residual copied into y (unless y already is it) and accumulated by the convolution (beta = 1),
//       then one elementwise pass adds the bias and applies the activation (epilogue_kernel).
// Groups and dilation go through the convolution descriptor. Math type: TENSOR_OP_MATH (TF32 allowed) when
// StreamOptions::tf32, else FMA_MATH (no TF32 on float data). Algorithms: cuDNN's heuristics (Get*Algorithm_v7),
// the first that succeeds with a workspace under kWorkspaceLimit, a deterministic one first when
// StreamOptions::deterministic or KernelCtx::deterministic. Measured search (Find*AlgorithmEx) is future work.
// All outputs are overwritten (beta = 0) except y of fused_conv2d with a residual (see above).
//
// conv_transpose2d with output_padding >= stride (allowed when it is below the dilation) has an output that the
// convolution y -> x does not map onto x's size with symmetric padding; those nodes run the convolution without
// padding over a "full" buffer in scratch ([N, K, (H-1)*sh + (R-1)*dh + 1, ...]) and crop / pad into it with small
// kernels of their own.
#include <cmath>
#include <cstring>
#include <string>

#include "cuda/common.hpp"
#include "ops/activations_math.hpp"

namespace cnn::cuda {
namespace {

constexpr size_t kWorkspaceLimit = size_t(1) << 30;  // largest cuDNN workspace an algorithm may ask for
constexpr size_t kAlign = 256;
// cuDNN 9's CUDNN_CONVOLUTION_{FWD,BWD_DATA,BWD_FILTER}_ALGO_COUNT: the most entries the heuristics return
constexpr int kFwdAlgos = 8, kBwdDataAlgos = 6, kBwdFilterAlgos = 7;
const float kOne = 1.f, kZero = 0.f;

size_t align_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > int64_t(0x7fffffff)) fail(std::string("conv: ") + what + " out of int range");
  return int(v);
}

struct ConvDescH {  // RAII cuDNN convolution descriptor
  dnn::ConvDesc d = nullptr;
  ConvDescH() { check_dnn(dnn_api().CreateConvolutionDescriptor(&d), "cudnnCreateConvolutionDescriptor"); }
  ~ConvDescH() {
    if (d) dnn_api().DestroyConvolutionDescriptor(d);
  }
  ConvDescH(const ConvDescH&) = delete;
  ConvDescH& operator=(const ConvDescH&) = delete;
};

void require_f32(const KernelCtx& c) {
  for (auto& d : c.in)
    if (d.dtype != DType::f32) fail("conv: op '" + c.node.op + "' (node '" + c.node.name + "') runs float32 only");
  for (auto& d : c.out)
    if (d.dtype != DType::f32) fail("conv: op '" + c.node.op + "' (node '" + c.node.name + "') runs float32 only");
}

// The attrs of a convolution (conv2d's and conv_transpose2d's).
struct ConvAttrs {
  int sh, sw, ph, pw, dh, dw, oph, opw, groups;
  explicit ConvAttrs(const Attrs& a) {
    auto pair = [&](const char* name, int64_t dflt, int* h, int* w) {
      std::vector<int64_t> v = a.is(name, {dflt, dflt});
      if (v.empty()) v = {dflt};
      *h = to_int(v[0], name);
      *w = to_int(v.back(), name);
    };
    pair("stride", 1, &sh, &sw);
    pair("padding", 0, &ph, &pw);
    pair("dilation", 1, &dh, &dw);
    pair("output_padding", 0, &oph, &opw);
    groups = to_int(a.i("groups", 1), "groups");
  }
};

// One convolution xs -> ys with filter ws [K, C/groups, R, S] (cuDNN's view: x the input, y the output), its
// descriptors, and the algorithm chosen for one direction.
struct Conv {
  TensorDesc x, y;
  FilterDesc w;
  ConvDescH cd;
  bool tf32 = false, det = false;
  int algo = -1;
  size_t ws = 0;

  Conv(const KernelCtx& c, const Shape& xs, const Shape& wshape, const Shape& ys, const ConvAttrs& a, int ph, int pw) {
    const CudaStream& st = stream_of(c);
    tf32 = st.opt.tf32;
    det = st.opt.deterministic || c.deterministic;
    x.set4(to_int(xs[0], "N"), to_int(xs[1], "C"), to_int(xs[2], "H"), to_int(xs[3], "W"));
    y.set4(to_int(ys[0], "N"), to_int(ys[1], "K"), to_int(ys[2], "OH"), to_int(ys[3], "OW"));
    w.set(to_int(wshape[0], "K"), to_int(wshape[1], "C/groups"), to_int(wshape[2], "R"), to_int(wshape[3], "S"));
    const dnn::Api& api = dnn_api();
    check_dnn(
        api.SetConvolution2dDescriptor(cd.d, ph, pw, a.sh, a.sw, a.dh, a.dw, dnn::CROSS_CORRELATION, dnn::DATA_FLOAT),
        "cudnnSetConvolution2dDescriptor");
    check_dnn(api.SetConvolutionGroupCount(cd.d, a.groups), "cudnnSetConvolutionGroupCount");
    check_dnn(api.SetConvolutionMathType(cd.d, tf32 ? dnn::TENSOR_OP_MATH : dnn::FMA_MATH),
              "cudnnSetConvolutionMathType");
  }

  // The heuristics' first usable entry (deterministic ones first when asked for). Without TF32 the descriptor
  // keeps FMA_MATH (use_math), so entries the heuristics paired with a non-tensor-op math type come first: one
  // paired with tensor-op math is taken only when nothing else fits (cuDNN may refuse it at run time under FMA).
  const dnn::AlgoPerf& pick(const dnn::AlgoPerf* p, int n, const char* what) const {
    auto tensor_op = [](const dnn::AlgoPerf& e) {
      return e.math_type == dnn::TENSOR_OP_MATH || e.math_type == dnn::TENSOR_OP_MATH_ALLOW_CONVERSION;
    };
    for (int pass = det ? 0 : 1; pass < 2; ++pass)
      for (int any_math = tf32 ? 1 : 0; any_math < 2; ++any_math)
        for (int i = 0; i < n; ++i)
          if (p[i].status == dnn::SUCCESS && p[i].memory <= kWorkspaceLimit &&
              (pass == 1 || p[i].determinism == dnn::DETERMINISTIC) && (any_math || !tensor_op(p[i])))
            return p[i];
    fail(std::string("conv: cuDNN's heuristics found no ") + what + " algorithm with a workspace under 1 GiB");
  }
  // With TF32 allowed, the math type the heuristics paired with the algorithm; without, FMA stays.
  void use_math(const dnn::AlgoPerf& p) {
    if (tf32) check_dnn(dnn_api().SetConvolutionMathType(cd.d, p.math_type), "cudnnSetConvolutionMathType");
  }

  void choose_fwd(const KernelCtx& c) {
    const dnn::Api& api = dnn_api();
    dnn::Handle h = stream_of(c).dnn;
    dnn::AlgoPerf perf[16]{};
    int n = 0;
    check_dnn(api.GetConvolutionForwardAlgorithm_v7(h, x, w, cd.d, y, kFwdAlgos, &n, perf),
              "cudnnGetConvolutionForwardAlgorithm_v7");
    const dnn::AlgoPerf& p = pick(perf, n, "forward");
    use_math(p);
    algo = p.algo;
    check_dnn(api.GetConvolutionForwardWorkspaceSize(h, x, w, cd.d, y, algo, &ws),
              "cudnnGetConvolutionForwardWorkspaceSize");
  }
  void choose_bwd_data(const KernelCtx& c) {
    const dnn::Api& api = dnn_api();
    dnn::Handle h = stream_of(c).dnn;
    dnn::AlgoPerf perf[16]{};
    int n = 0;
    check_dnn(api.GetConvolutionBackwardDataAlgorithm_v7(h, w, y, cd.d, x, kBwdDataAlgos, &n, perf),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7");
    const dnn::AlgoPerf& p = pick(perf, n, "backward-data");
    use_math(p);
    algo = p.algo;
    check_dnn(api.GetConvolutionBackwardDataWorkspaceSize(h, w, y, cd.d, x, algo, &ws),
              "cudnnGetConvolutionBackwardDataWorkspaceSize");
  }
  void choose_bwd_filter(const KernelCtx& c) {
    const dnn::Api& api = dnn_api();
    dnn::Handle h = stream_of(c).dnn;
    dnn::AlgoPerf perf[16]{};
    int n = 0;
    check_dnn(api.GetConvolutionBackwardFilterAlgorithm_v7(h, x, y, cd.d, w, kBwdFilterAlgos, &n, perf),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
    const dnn::AlgoPerf& p = pick(perf, n, "backward-filter");
    use_math(p);
    algo = p.algo;
    check_dnn(api.GetConvolutionBackwardFilterWorkspaceSize(h, x, y, cd.d, w, algo, &ws),
              "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  }

  // y = conv(x, w) (beta 0) or y += conv(x, w) (beta 1)
  void forward(dnn::Handle h, const void* xp, const void* wp, void* yp, void* scratch, const float* beta) const {
    check_dnn(dnn_api().ConvolutionForward(h, &kOne, x, xp, w, wp, cd.d, algo, scratch, ws, beta, y, yp),
              "cudnnConvolutionForward");
  }
  void backward_data(dnn::Handle h, const void* wp, const void* yp, void* xp, void* scratch) const {
    check_dnn(dnn_api().ConvolutionBackwardData(h, &kOne, w, wp, y, yp, cd.d, algo, scratch, ws, &kZero, x, xp),
              "cudnnConvolutionBackwardData");
  }
  void backward_filter(dnn::Handle h, const void* xp, const void* yp, void* wp, void* scratch) const {
    check_dnn(dnn_api().ConvolutionBackwardFilter(h, &kOne, x, xp, y, yp, cd.d, algo, scratch, ws, &kZero, w, wp),
              "cudnnConvolutionBackwardFilter");
  }
};

// ---- own kernels ----

// y[n, k, i] = act(y[n, k, i] + bias[k]) (bias may be null); act 0 none, 1 relu, 2 leaky_relu(alpha),
// 3 act::fwd(kind, ., a, b) (ops/activations_math.hpp).
__global__ void epilogue_kernel(float* y, const float* bias, int64_t total, int64_t hw, int64_t K, int act, float alpha,
                                int kind, float a, float b) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = y[i];
    if (bias) v += bias[(i / hw) % K];
    if (act == 1)
      v = v > 0.f ? v : 0.f;
    else if (act == 2)
      v = v > 0.f ? v : alpha * v;
    else if (act == act::kFusedOther)
      v = act::fwd<float>(kind, v, a, b);
    y[i] = v;
  }
}

// BN(conv(x, w) + b) = conv(x, w * s) + t: s = gamma / sqrt(var + eps), t = beta + (b - mean) * s.
// wf [K, per] (per = C/groups * R * S) and t [K]; b may be null.
__global__ void fold_bn_kernel(float* wf, float* t, const float* w, const float* b, const float* gamma,
                               const float* beta, const float* mean, const float* var, double eps, int64_t K,
                               int64_t per) {
  const int64_t n = K * per;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i / per;
    const double s = double(gamma[k]) / sqrt(double(var[k]) + eps);
    wf[i] = float(double(w[i]) * s);
    if (i % per == 0) t[k] = float(double(beta[k]) + ((b ? double(b[k]) : 0.0) - double(mean[k])) * s);
  }
}

// Transposed convolution with the "full" buffer [N*K, FH, FW] (no padding): crop it into y [N*K, OH, OW],
// y[p, oh, ow] = full[p, oh + ph, ow + pw] (0 outside) + bias[p % K].
__global__ void crop_kernel(float* y, const float* full, const float* bias, int64_t NK, int64_t K, int64_t OH,
                            int64_t OW, int64_t FH, int64_t FW, int64_t ph, int64_t pw) {
  const int64_t total = NK * OH * OW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % OW, oh = (i / OW) % OH, p = i / (OW * OH);
    const int64_t fh = oh + ph, fw = ow + pw;
    float v = fh < FH && fw < FW ? full[(p * FH + fh) * FW + fw] : 0.f;
    if (bias) v += bias[p % K];
    y[i] = v;
  }
}

// The reverse: full[p, fh, fw] = dy[p, fh - ph, fw - pw] (0 outside).
__global__ void pad_kernel(float* full, const float* dy, int64_t NK, int64_t OH, int64_t OW, int64_t FH, int64_t FW,
                           int64_t ph, int64_t pw) {
  const int64_t total = NK * FH * FW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t fw = i % FW, fh = (i / FW) % FH, p = i / (FW * FH);
    const int64_t oh = fh - ph, ow = fw - pw;
    full[i] = oh >= 0 && oh < OH && ow >= 0 && ow < OW ? dy[(p * OH + oh) * OW + ow] : 0.f;
  }
}

// ---- conv2d ----

struct Conv2dFwd : Kernel {
  Conv conv;
  TensorDesc bias_d;
  bool bias;
  Conv2dFwd(const KernelCtx& c, const ConvAttrs& a)
      : conv(c, c.in[0].shape, c.in[1].shape, c.out[0].shape, a, a.ph, a.pw), bias(c.in.size() > 2) {
    conv.choose_fwd(c);
    if (bias) bias_d.set4(1, to_int(c.out[0].shape[1], "K"), 1, 1);
  }
  size_t scratch_bytes() const override { return conv.ws; }
  std::string impl() const override { return "cudnn conv fwd algo " + std::to_string(conv.algo); }
  void run(const RunCtx& r) override {
    dnn::Handle h = stream_of(r).dnn;
    conv.forward(h, r.in[0], r.in[1], r.out[0], r.scratch, &kZero);
    if (bias) check_dnn(dnn_api().AddTensor(h, &kOne, bias_d, r.in[2], &kOne, conv.y, r.out[0]), "cudnnAddTensor");
  }
};

struct Conv2dGradData : Kernel {  // (dy, w) -> dx
  Conv conv;
  Conv2dGradData(const KernelCtx& c, const ConvAttrs& a)
      : conv(c, c.out[0].shape, c.in[1].shape, c.in[0].shape, a, a.ph, a.pw) {
    conv.choose_bwd_data(c);
  }
  size_t scratch_bytes() const override { return conv.ws; }
  std::string impl() const override { return "cudnn conv bwd data algo " + std::to_string(conv.algo); }
  void run(const RunCtx& r) override { conv.backward_data(stream_of(r).dnn, r.in[1], r.in[0], r.out[0], r.scratch); }
};

struct Conv2dGradWeights : Kernel {  // (dy, x) -> dw [, db]
  Conv conv;
  TensorDesc bias_d;
  bool bias;
  Conv2dGradWeights(const KernelCtx& c, const ConvAttrs& a)
      : conv(c, c.in[1].shape, c.out[0].shape, c.in[0].shape, a, a.ph, a.pw), bias(c.out.size() > 1) {
    conv.choose_bwd_filter(c);
    if (bias) bias_d.set4(1, to_int(c.in[0].shape[1], "K"), 1, 1);
  }
  size_t scratch_bytes() const override { return conv.ws; }
  std::string impl() const override { return "cudnn conv bwd filter algo " + std::to_string(conv.algo); }
  void run(const RunCtx& r) override {
    dnn::Handle h = stream_of(r).dnn;
    conv.backward_filter(h, r.in[1], r.in[0], r.out[0], r.scratch);
    if (bias)
      check_dnn(dnn_api().ConvolutionBackwardBias(h, &kOne, conv.y, r.in[0], &kZero, bias_d, r.out[1]),
                "cudnnConvolutionBackwardBias");
  }
};

// ---- conv_transpose2d: the convolution y [N, K, OH, OW] -> x [N, C, H, W] with filter w [C, K/groups, R, S] ----

// Whether that convolution maps OH x OW back onto H x W with the symmetric padding; when not (output_padding >=
// stride), the kernels use the full buffer (no padding): FH = (H-1)*sh + (R-1)*dh + 1, FW likewise.
struct TransGeom {
  Shape x, w, y, full;
  bool use_full = false;
  TransGeom(const Shape& xs, const Shape& ws, const Shape& ys, const ConvAttrs& a) : x(xs), w(ws), y(ys) {
    auto conv_out = [](int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
      return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    };
    use_full = conv_out(ys[2], a.ph, a.dh, ws[2], a.sh) != xs[2] || conv_out(ys[3], a.pw, a.dw, ws[3], a.sw) != xs[3];
    full = {ys[0], ys[1], (xs[2] - 1) * a.sh + (ws[2] - 1) * a.dh + 1, (xs[3] - 1) * a.sw + (ws[3] - 1) * a.dw + 1};
  }
  const Shape& conv_in() const { return use_full ? full : y; }
  size_t full_bytes() const { return use_full ? align_up(size_t(numel(full)) * sizeof(float)) : 0; }
};

struct ConvT2dFwd : Kernel {  // (x, w [, b]) -> y = BackwardData(w, x)
  TransGeom g;
  ConvAttrs a;
  Conv conv;
  TensorDesc bias_d;
  bool bias;
  size_t ws_off = 0;  // scratch: [full buffer][workspace]
  ConvT2dFwd(const KernelCtx& c, const ConvAttrs& at)
      : g(c.in[0].shape, c.in[1].shape, c.out[0].shape, at),
        a(at),
        conv(c, g.conv_in(), c.in[1].shape, c.in[0].shape, at, g.use_full ? 0 : at.ph, g.use_full ? 0 : at.pw),
        bias(c.in.size() > 2) {
    conv.choose_bwd_data(c);
    if (bias) bias_d.set4(1, to_int(c.out[0].shape[1], "K"), 1, 1);
    ws_off = g.full_bytes();
  }
  size_t scratch_bytes() const override { return ws_off + conv.ws; }
  std::string impl() const override {
    return "cudnn conv bwd data algo " + std::to_string(conv.algo) + (g.use_full ? " +crop" : "");
  }
  void run(const RunCtx& r) override {
    dnn::Handle h = stream_of(r).dnn;
    char* scratch = static_cast<char*>(r.scratch);
    const float* b = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    if (!g.use_full) {
      conv.backward_data(h, r.in[1], r.in[0], r.out[0], scratch);
      if (bias) check_dnn(dnn_api().AddTensor(h, &kOne, bias_d, b, &kOne, conv.x, r.out[0]), "cudnnAddTensor");
      return;
    }
    float* full = reinterpret_cast<float*>(scratch);
    conv.backward_data(h, r.in[1], r.in[0], full, scratch + ws_off);
    const int64_t NK = g.y[0] * g.y[1];
    crop_kernel<<<blocks_for(NK * g.y[2] * g.y[3]), kThreads, 0, stream_of(r).stream>>>(
        static_cast<float*>(r.out[0]), full, b, NK, g.y[1], g.y[2], g.y[3], g.full[2], g.full[3], a.ph, a.pw);
    check_launch("crop_kernel");
  }
};

struct ConvT2dGradData : Kernel {  // (dy, w) -> dx = Forward(dy, w)
  TransGeom g;
  ConvAttrs a;
  Conv conv;
  size_t ws_off = 0;
  ConvT2dGradData(const KernelCtx& c, const ConvAttrs& at)
      : g(c.out[0].shape, c.in[1].shape, c.in[0].shape, at),
        a(at),
        conv(c, g.conv_in(), c.in[1].shape, c.out[0].shape, at, g.use_full ? 0 : at.ph, g.use_full ? 0 : at.pw) {
    conv.choose_fwd(c);
    ws_off = g.full_bytes();
  }
  size_t scratch_bytes() const override { return ws_off + conv.ws; }
  std::string impl() const override {
    return "cudnn conv fwd algo " + std::to_string(conv.algo) + (g.use_full ? " +pad" : "");
  }
  void run(const RunCtx& r) override {
    dnn::Handle h = stream_of(r).dnn;
    char* scratch = static_cast<char*>(r.scratch);
    const void* dy = r.in[0];
    if (g.use_full) {
      float* full = reinterpret_cast<float*>(scratch);
      const int64_t NK = g.y[0] * g.y[1];
      pad_kernel<<<blocks_for(NK * g.full[2] * g.full[3]), kThreads, 0, stream_of(r).stream>>>(
          full, static_cast<const float*>(r.in[0]), NK, g.y[2], g.y[3], g.full[2], g.full[3], a.ph, a.pw);
      check_launch("pad_kernel");
      dy = full;
    }
    conv.forward(h, dy, r.in[1], r.out[0], scratch + ws_off, &kZero);
  }
};

struct ConvT2dGradWeights : Kernel {  // (dy, x) -> dw = BackwardFilter(x: dy, dy: x) [, db]
  TransGeom g;
  ConvAttrs a;
  Conv conv;
  TensorDesc dy_d, bias_d;
  bool bias;
  size_t ws_off = 0;
  ConvT2dGradWeights(const KernelCtx& c, const ConvAttrs& at)
      : g(c.in[1].shape, c.out[0].shape, c.in[0].shape, at),
        a(at),
        conv(c, g.conv_in(), c.out[0].shape, c.in[1].shape, at, g.use_full ? 0 : at.ph, g.use_full ? 0 : at.pw),
        bias(c.out.size() > 1) {
    conv.choose_bwd_filter(c);
    ws_off = g.full_bytes();
    if (bias) {
      dy_d.set(c.in[0].shape);
      bias_d.set4(1, to_int(c.in[0].shape[1], "K"), 1, 1);
    }
  }
  size_t scratch_bytes() const override { return ws_off + conv.ws; }
  std::string impl() const override {
    return "cudnn conv bwd filter algo " + std::to_string(conv.algo) + (g.use_full ? " +pad" : "");
  }
  void run(const RunCtx& r) override {
    dnn::Handle h = stream_of(r).dnn;
    char* scratch = static_cast<char*>(r.scratch);
    const void* dy = r.in[0];
    if (g.use_full) {
      float* full = reinterpret_cast<float*>(scratch);
      const int64_t NK = g.y[0] * g.y[1];
      pad_kernel<<<blocks_for(NK * g.full[2] * g.full[3]), kThreads, 0, stream_of(r).stream>>>(
          full, static_cast<const float*>(r.in[0]), NK, g.y[2], g.y[3], g.full[2], g.full[3], a.ph, a.pw);
      check_launch("pad_kernel");
      dy = full;
    }
    conv.backward_filter(h, dy, r.in[1], r.out[0], scratch + ws_off);
    if (bias)
      check_dnn(dnn_api().ConvolutionBackwardBias(h, &kOne, dy_d, r.in[0], &kZero, bias_d, r.out[1]),
                "cudnnConvolutionBackwardBias");
  }
};

// ---- fused_conv2d ----

struct FusedConv : Kernel {
  Conv conv;
  bool bias, bn, sum;
  int bn_in, residual_in, act;
  float alpha;
  act::FusedAct fa;  // act 3's kind and parameters
  double eps;
  int64_t K, per, total, hw;
  size_t w_bytes = 0, persist = 0;  // persistent region (bn): folded weights [K, per], then t [K] at w_bytes
  FusedConv(const KernelCtx& c, const ConvAttrs& a)
      : conv(c, c.in[0].shape, c.in[1].shape, c.out[0].shape, a, a.ph, a.pw) {
    const Attrs& at = c.node.attrs;
    bias = at.i("has_bias", 0) != 0;
    bn = at.i("bn", 0) != 0;
    sum = at.i("sum", 0) != 0;
    bn_in = 2 + (bias ? 1 : 0);
    residual_in = bn_in + (bn ? 4 : 0);
    act = int(at.i("act", 0));
    alpha = act == 2 ? float(at.f("negative_slope", 0.01)) : 0.f;
    fa = act::fused_act(at);
    eps = at.f("bn_eps", 1e-5);
    const Shape &ws = c.in[1].shape, &ys = c.out[0].shape;
    K = ws[0];
    per = ws[1] * ws[2] * ws[3];
    total = numel(ys);
    hw = ys[2] * ys[3];
    if (bn) {
      w_bytes = align_up(size_t(K * per) * sizeof(float));
      persist = w_bytes + align_up(size_t(K) * sizeof(float));
    }
    conv.choose_fwd(c);
  }
  size_t scratch_bytes() const override { return conv.ws; }
  size_t persistent_bytes() const override { return persist; }
  std::string impl() const override {
    return "cudnn conv fwd algo " + std::to_string(conv.algo) + (bn ? " +fold_bn" : "") +
           (bias || bn || act ? " +epilogue" : "");
  }
  void run(const RunCtx& r) override {
    CudaStream& st = stream_of(r);
    const void* w = r.in[1];
    const float* b = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    if (bn) {  // folded every run: the parameters may change between replays
      float* wf = static_cast<float*>(r.persist);
      float* t = reinterpret_cast<float*>(static_cast<char*>(r.persist) + w_bytes);
      auto f = [&](int i) { return static_cast<const float*>(r.in[bn_in + i]); };
      fold_bn_kernel<<<blocks_for(K * per), kThreads, 0, st.stream>>>(wf, t, static_cast<const float*>(r.in[1]), b,
                                                                      f(0), f(1), f(2), f(3), eps, K, per);
      check_launch("fold_bn_kernel");
      w = wf;
      b = t;
    }
    // y may be the residual's buffer (OpSchema::inplace_input): then it already holds it
    if (sum && r.out[0] != r.in[residual_in])
      check(cudaMemcpyAsync(r.out[0], r.in[residual_in], size_t(total) * sizeof(float), cudaMemcpyDeviceToDevice,
                            st.stream),
            "cudaMemcpyAsync (fused_conv2d residual)");
    conv.forward(st.dnn, r.in[0], w, r.out[0], r.scratch, sum ? &kOne : &kZero);
    if (b || act) {
      epilogue_kernel<<<blocks_for(total), kThreads, 0, st.stream>>>(
          static_cast<float*>(r.out[0]), b, total, hw, K, act, alpha, fa.p.kind, float(fa.p.a), float(fa.p.b));
      check_launch("epilogue_kernel");
    }
  }
};

template <class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
    require_f32(c);
    return std::make_unique<K>(c, ConvAttrs(c.node.attrs));
  };
}

KernelRegistrar reg_conv2d("cuda", "conv2d", factory<Conv2dFwd>());
KernelRegistrar reg_conv2d_gd("cuda", "conv2d_grad_data", factory<Conv2dGradData>());
KernelRegistrar reg_conv2d_gw("cuda", "conv2d_grad_weights", factory<Conv2dGradWeights>());
KernelRegistrar reg_convt2d("cuda", "conv_transpose2d", factory<ConvT2dFwd>());
KernelRegistrar reg_convt2d_gd("cuda", "conv_transpose2d_grad_data", factory<ConvT2dGradData>());
KernelRegistrar reg_convt2d_gw("cuda", "conv_transpose2d_grad_weights", factory<ConvT2dGradWeights>());
KernelRegistrar reg_fused_conv2d("cuda", "fused_conv2d", factory<FusedConv>());

}  // namespace
}  // namespace cnn::cuda
