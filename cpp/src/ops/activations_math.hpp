// The formulas of the activations of ops/activations.cpp, written once for the reference kernels (float and
// double), the cpu backend's native loops and the cuda kernels (float; this header compiles as host and device
// code). Each activation is a Kind plus two parameters (a, b); the derivative is taken from the input x (the
// backward ops get (dy, x)). Kinks follow PyTorch's backward: clip and hardsigmoid pass the gradient strictly
// inside the interval, hardswish's derivative is x / 3 + 1/2 on [-3, 3], softplus switches to the identity above
// its threshold in both directions.
#pragma once
#include <cmath>

#ifdef __CUDACC__
#define CN_ACT_FN __host__ __device__ __forceinline__
#else
#define CN_ACT_FN inline
#endif

namespace cnn {
namespace act {

using std::erf;
using std::exp;
using std::expm1;
using std::log1p;
using std::tanh;

enum Kind : int {
  kClip = 0,         // a = min, b = max                     y = min(max(x, a), b)
  kHardsigmoid = 1,  // a = alpha, b = beta                  y = max(0, min(1, a * x + b))
  kHardswish = 2,    //                                      y = x * min(max(x + 3, 0), 6) / 6
  kSilu = 3,         //                                      y = x * sigmoid(x)
  kGeluErf = 4,      //                                      y = x / 2 * (1 + erf(x / sqrt(2)))
  kGeluTanh = 5,     //                                      y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))
  kMish = 6,         //                                      y = x * tanh(softplus(x))
  kElu = 7,          // a = alpha                            y = x > 0 ? x : a * (exp(x) - 1)
  kSoftplus = 8,     // a = beta, b = threshold              y = a * x > b ? x : log(1 + exp(a * x)) / a
  kErf = 9,          //                                      y = erf(x)
};

template <class T>
CN_ACT_FN T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}
// log(1 + exp(x)) as PyTorch's softplus with beta 1, threshold 20
template <class T>
CN_ACT_FN T softplus1(T x) {
  return x > T(20) ? x : log1p(exp(x));
}

template <class T>
CN_ACT_FN T fwd(int kind, T x, T a, T b) {
  switch (kind) {
    case kClip: {  // min(max(x, a), b): b everywhere when a > b (ONNX, torch.clamp); NaN stays NaN
      T t = x < a ? a : x;
      return t > b ? b : t;
    }
    case kHardsigmoid: {
      T v = a * x + b;
      return v <= T(0) ? T(0) : (v >= T(1) ? T(1) : v);
    }
    case kHardswish: {
      T r = x + T(3);
      r = r < T(0) ? T(0) : (r > T(6) ? T(6) : r);
      return x * r / T(6);
    }
    case kSilu: return x * sigmoid(x);
    case kGeluErf: return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
    case kGeluTanh: {
      T inner = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
      return T(0.5) * x * (T(1) + tanh(inner));
    }
    case kMish: return x * tanh(softplus1(x));
    case kElu: return x > T(0) ? x : a * expm1(x);
    case kSoftplus: {
      T bx = a * x;
      return bx > b ? x : log1p(exp(bx)) / a;
    }
    default: return erf(x);
  }
}

// dy/dx at x
template <class T>
CN_ACT_FN T deriv(int kind, T x, T a, T b) {
  switch (kind) {
    case kClip: return x > a && x < b ? T(1) : T(0);
    case kHardsigmoid: {
      T v = a * x + b;
      return v > T(0) && v < T(1) ? a : T(0);
    }
    case kHardswish: return x < T(-3) ? T(0) : (x <= T(3) ? x / T(3) + T(0.5) : T(1));
    case kSilu: {
      T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case kGeluErf: {
      T cdf = T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
      T pdf = exp(T(-0.5) * x * x) * T(0.39894228040143267794);
      return cdf + x * pdf;
    }
    case kGeluTanh: {
      const T k = T(0.79788456080286535588);
      T x2 = x * x;
      T t = tanh(k * (x + T(0.044715) * x2 * x));
      T dinner = k * (T(1) + T(3 * 0.044715) * x2);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner;
    }
    case kMish: {
      T t = tanh(softplus1(x));
      return t + x * (T(1) - t * t) * sigmoid(x);
    }
    case kElu: return x > T(0) ? T(1) : a * exp(x);
    case kSoftplus: {
      T bx = a * x;
      if (bx > b) return T(1);
      T z = exp(bx);
      return z / (z + T(1));
    }
    default: return T(1.12837916709551257390) * exp(-x * x);
  }
}

}  // namespace act
}  // namespace cnn

#include <cnnnative/cnnnative.hpp>

#include <limits>
#include <string>

namespace cnn {
namespace act {

// An activation node's formula: its kind and parameters, from the op name (forward or *_grad) and attributes.
struct Params {
  int kind = kErf;
  double a = 0, b = 0;
};
inline Params params_of(const std::string& op_name, const Attrs& at) {
  std::string op = op_name;
  const std::string suffix = "_grad";
  if (op.size() > suffix.size() && op.compare(op.size() - suffix.size(), suffix.size(), suffix) == 0)
    op.resize(op.size() - suffix.size());
  const double inf = std::numeric_limits<double>::infinity();
  if (op == "clip") return {kClip, at.f("min", -inf), at.f("max", inf)};
  if (op == "hardsigmoid") return {kHardsigmoid, at.f("alpha", 1.0 / 6.0), at.f("beta", 0.5)};
  if (op == "hardswish") return {kHardswish, 0, 0};
  if (op == "silu") return {kSilu, 0, 0};
  if (op == "gelu") return {at.i("approximate", 0) == 1 ? kGeluTanh : kGeluErf, 0, 0};
  if (op == "mish") return {kMish, 0, 0};
  if (op == "elu") return {kElu, at.f("alpha", 1.0), 0};
  if (op == "softplus") return {kSoftplus, at.f("beta", 1.0), at.f("threshold", 20.0)};
  return {kErf, 0, 0};
}

// The inverse of params_of: the forward op and attributes computing p (fused nodes' reference decomposition).
inline std::string op_of(const Params& p, Attrs* at) {
  switch (p.kind) {
    case kClip:
      at->floats["min"] = p.a;
      at->floats["max"] = p.b;
      return "clip";
    case kHardsigmoid:
      at->floats["alpha"] = p.a;
      at->floats["beta"] = p.b;
      return "hardsigmoid";
    case kHardswish: return "hardswish";
    case kSilu: return "silu";
    case kGeluErf: at->ints["approximate"] = {0}; return "gelu";
    case kGeluTanh: at->ints["approximate"] = {1}; return "gelu";
    case kMish: return "mish";
    case kElu: at->floats["alpha"] = p.a; return "elu";
    case kSoftplus:
      at->floats["beta"] = p.a;
      at->floats["threshold"] = p.b;
      return "softplus";
    default: return "erf";
  }
}

// Whether the fusion pass (core/fuse.cpp) may fold p into a fused_conv2d / fused_linear: the kinds whose oneDNN
// eltwise equals the reference (cpu/activations_ext.cpp's onednn_alg), so every backend's epilogue can apply it.
// Not softplus (oneDNN's soft_relu drops log1p's accuracy) nor erf (no eltwise); clip only with min <= max
// (oneDNN's clip_v2 differs from min(max(x, a), b) when a > b).
inline bool fusable(const Params& p) {
  switch (p.kind) {
    case kClip: return p.a <= p.b;
    case kHardsigmoid:
    case kHardswish:
    case kSilu:
    case kGeluErf:
    case kGeluTanh:
    case kMish:
    case kElu: return true;
    default: return false;
  }
}

// fused_conv2d / fused_linear's activation, from their attributes (core/fuse.cpp): act 0 none, 1 relu,
// 2 leaky_relu (negative_slope), kFusedOther an activation of this header: act_kind (a Kind), act_a, act_b.
constexpr int kFusedOther = 3;
struct FusedAct {
  int act = 0;
  float slope = 0.f;  // leaky_relu's
  Params p;           // act == kFusedOther
};
inline FusedAct fused_act(const Attrs& at) {
  FusedAct f;
  f.act = int(at.i("act", 0));
  if (f.act == 2) f.slope = float(at.f("negative_slope", 0.01));
  if (f.act == kFusedOther) f.p = {int(at.i("act_kind", kErf)), at.f("act_a", 0.0), at.f("act_b", 0.0)};
  return f;
}

}  // namespace act
}  // namespace cnn
