// What the conv2d kernels share across their files. The four ops (conv2d, conv2d_grad_data, conv2d_grad_weights,
// fused_conv2d) are implemented in:
//   conv_direct.cpp    oneDNN convolution_direct kernels (training, inference, deterministic, fused, bf16);
//   conv_winograd.cpp  the Winograd F(4x4, 3x3) kernels (cpu/winograd.hpp) and, per op, the choice between a
//                      Winograd and a direct kernel (the kernel registration);
//   conv_small.cpp     native AVX-512 kernels for few-channel convolutions in plain layout (small_*_ok);
//   conv_layouts.cpp   the layout rules: the (x, y) layout pair each node runs in, ranked by oneDNN's implementation.
// Shared here: the oneDNN descriptors of one convolution (ConvDescs), fused_conv2d's attributes (FusedConvAttrs),
// the ranking of oneDNN implementations (also conv_transpose2d's), and the direct kernels' factories.
#pragma once
#include <dnnl.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/op.hpp"
#include "cpu/dnnl_common.hpp"
#include "cpu/eltwise_alg.hpp"

namespace cnn {
namespace cpu {
namespace conv {

using dims = dnnl::memory::dims;
using mdesc = dnnl::memory::desc;

// A pair attribute (stride, padding, dilation) as oneDNN dims: one value stands for both.
inline dims pair_attr(const Attrs& a, const char* name, int64_t dflt) {
  std::vector<int64_t> v = a.is(name, {dflt, dflt});
  return {v[0], v.back()};
}

// Descriptors and geometry shared by the kernels; x, w, y are the forward shapes, lx, ly the layouts of x
// and y (src md = format_tag::any when lx is not given, for the layout rules' query).
struct ConvDescs {
  mdesc src, dst, w_user, w_any, bias;
  dims strides, dilates, pad;
  DType compute = DType::f32;  // src/weights dtype: bf16 when either activation is bf16 (bf16 sessions)
  ConvDescs(const Attrs& a, DType ts, DType td, const Shape& x, const Shape& w, const Shape& y,
            std::optional<Layout> lx, Layout ly) {
    int64_t G = a.i("groups", 1);
    Shape ws = G > 1 ? Shape{G, w[0] / G, w[1], w[2], w[3]} : w;
    compute = ts == DType::bf16 || td == DType::bf16 ? DType::bf16 : ts;
    const DType tp = compute == DType::bf16 ? DType::f32 : compute;  // parameters (and the bias) stay float32
    src = lx ? md_of(x, compute, *lx) : mdesc(dims_of(x), dt_of(compute), dnnl::memory::format_tag::any);
    dst = md_of(y, td, ly);
    w_user = plain_desc(ws, tp);
    w_any = mdesc(dims_of(ws), dt_of(compute), dnnl::memory::format_tag::any);
    bias = plain_desc(Shape{w[0]}, tp);
    strides = pair_attr(a, "stride", 1);
    pad = pair_attr(a, "padding", 0);
    dims d = pair_attr(a, "dilation", 1);
    dilates = {d[0] - 1, d[1] - 1};
  }
  ConvDescs(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, std::optional<Layout> lx,
            Layout ly)
      : ConvDescs(a, t, t, x, w, y, lx, ly) {}
  // tx, ty: the dtypes the session stores x (or dx) and y (or dy) in
  ConvDescs(const KernelCtx& c, DType tx, DType ty, const Shape& x, const Shape& w, const Shape& y, Layout lx,
            Layout ly)
      : ConvDescs(c.node.attrs, tx, ty, x, w, y, lx, ly) {}
  dnnl::convolution_forward::primitive_desc fwd(bool with_bias, const dnnl::primitive_attr& attr = {},
                                                dnnl::prop_kind pk = dnnl::prop_kind::forward_training) const {
    using fpd = dnnl::convolution_forward::primitive_desc;
    auto alg = dnnl::algorithm::convolution_direct;
    return with_bias ? fpd(engine(), pk, alg, src, w_any, bias, dst, strides, dilates, pad, pad, attr)
                     : fpd(engine(), pk, alg, src, w_any, dst, strides, dilates, pad, pad, attr);
  }
};

// How good a oneDNN implementation (impl_info_str) is, for the layout rules: 3 AVX-512 jit/brgemm, 2 other jit,
// 1 gemm, 0 ref:any.
int impl_rank(const std::string& impl);

// fused_conv2d (x, w, [b], [gamma, beta, mean, var], [residual]) -> y, inference only (ops/conv_fused.cpp): its
// attributes and input positions, and BN folded into the convolution (fold_bn); shared by ConvFused
// (conv_direct.cpp) and WinoFused (conv_winograd.cpp).
struct FusedConvAttrs {
  bool bias, bn, sum;      // has a bias input, folds a batch norm, adds a residual
  int bn_in, residual_in;  // input index of gamma (beta, mean, var follow) and of the residual
  int act;                 // 0 none, 1 relu, 2 leaky_relu, 3 act_kind (see core/fuse.cpp)
  float eps, alpha;        // BN epsilon, leaky_relu slope
  OneDnnAlg elt;           // the activation's eltwise post-op (act != 0)
  int64_t K;               // output channels
  explicit FusedConvAttrs(const KernelCtx& c) {
    const Attrs& a = c.node.attrs;
    bias = a.i("has_bias", 0);
    bn = a.i("bn", 0);
    sum = a.i("sum", 0);
    bn_in = 2 + (bias ? 1 : 0);
    residual_in = bn_in + (bn ? 4 : 0);
    act = int(a.i("act", 0));
    alpha = act == 2 ? float(a.f("negative_slope", 0.01)) : 0.f;
    fused_eltwise(c.node, &elt);
    eps = float(a.f("bn_eps", 1e-5));
    K = c.in[1].shape[0];
  }
  // BN(conv(x, w) + b) = conv(x, w * s) + t: s = gamma / sqrt(var + eps), t = beta + (b - mean) * s
  void fold_bn(const RunCtx& r, float* s, float* t) const {
    const float *gamma = static_cast<const float*>(r.in[bn_in]), *beta = static_cast<const float*>(r.in[bn_in + 1]);
    const float *mean = static_cast<const float*>(r.in[bn_in + 2]), *var = static_cast<const float*>(r.in[bn_in + 3]);
    const float* b = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      s[k] = gamma[k] / std::sqrt(var[k] + eps);
      t[k] = beta[k] + ((b ? b[k] : 0.f) - mean[k]) * s[k];
    }
  }
};

// The direct (oneDNN convolution_direct) kernels, deterministic ones when KernelCtx::deterministic (conv_direct.cpp).
std::unique_ptr<Kernel> make_direct_fwd(const KernelCtx& c);          // conv2d (x, w [, b]) -> y
std::unique_ptr<Kernel> make_direct_bwd_data(const KernelCtx& c);     // conv2d_grad_data (dy, w) -> dx
std::unique_ptr<Kernel> make_direct_bwd_weights(const KernelCtx& c);  // conv2d_grad_weights (dy, x) -> dw [, db]
std::unique_ptr<Kernel> make_direct_fused(const KernelCtx& c);        // fused_conv2d

// The native small-channel kernels (conv_small.cpp): float32, plain x and y, stride 1, dilation 1, one group, AVX-512;
// the forward with at most 8 output channels, the data gradient with at most 8 input channels, the weight gradient
// with at most 4 input channels. x, w, y are the forward shapes. The layout rules give such nodes plain x and y,
// and the kernel factories build these kernels for them when both layouts are plain.
bool small_fwd_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y);
bool small_fused_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y);  // and fused_conv2d's
bool small_bwd_data_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y);
bool small_bwd_weights_ok(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y);
std::unique_ptr<Kernel> make_small_fwd(const KernelCtx& c);       // conv2d (x, w [, b]) -> y, fused_conv2d
std::unique_ptr<Kernel> make_small_bwd_data(const KernelCtx& c);  // conv2d_grad_data (dy, w) -> dx
// Whether make_small_bwd_data builds the batch-lanes kernel for a data gradient of x's shape (from 16 images): it
// reads dy in any layout (plain, nhwc, nChw16c, nChw8c), so that layout rule takes dy as it comes.
bool small_bwd_data_any_dy(const Shape& x);
std::unique_ptr<Kernel> make_small_bwd_weights(const KernelCtx& c);  // conv2d_grad_weights (dy, x) -> dw [, db]

}  // namespace conv
}  // namespace cpu
}  // namespace cnn
