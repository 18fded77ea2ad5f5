// The Winograd F(4x4, 3x3) kernels (cpu/winograd.hpp) for conv2d, conv2d_grad_data, conv2d_grad_weights and
// fused_conv2d, and, per op, the kernel registered for the cpu backend: a native small-channel kernel for plain nodes
// in its range (conv_small.cpp), a Winograd kernel when the node qualifies
// (winograd_geom) and the Winograd split is worthwhile, else the direct oneDNN kernel (conv_direct.cpp). See
// conv_common.hpp for how the conv2d files divide the work.
#include <omp.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "core/backend.hpp"
#include "cpu/conv_common.hpp"
#include "cpu/winograd.hpp"

namespace cnn {
namespace cpu {
namespace conv {
namespace {

// The convolution x [N, C, H, W] -> y [N, K, OH, OW] qualifies when CompileOptions::winograd is on, the CPU has
// AVX-512, both activations are float32 nChw16c, the filter is 3x3 with stride 1, dilation 1, one group and
// padding <= 2 on each side, and both channel counts are multiples of 16 and at least 64 (below that the 36
// GEMMs per tile chunk are too thin to beat the direct kernel).
// Kernel::impl() of the Winograd kernels: "winograd <split>[ deterministic]" (wino::Split: how threads share the work).
std::string winograd_impl(wino::Split split, bool deterministic) {
  return std::string("winograd ") + wino::split_name(split) + (deterministic ? " deterministic" : "");
}

std::optional<wino::Geom> winograd_geom(const KernelCtx& c, const TensorDesc& x, const Shape& w, const TensorDesc& y,
                                        Layout lx, Layout ly) {
  const Attrs& a = c.node.attrs;
  if (!c.winograd || !wino::available() || x.dtype != DType::f32 || y.dtype != DType::f32) return std::nullopt;
  if (lx != Layout::nChw16c || ly != Layout::nChw16c || a.i("groups", 1) != 1) return std::nullopt;
  if (w.size() != 4 || w[2] != 3 || w[3] != 3) return std::nullopt;
  if (pair_attr(a, "stride", 1) != dims{1, 1} || pair_attr(a, "dilation", 1) != dims{1, 1}) return std::nullopt;
  const dims p = pair_attr(a, "padding", 0);
  if (p[0] < 0 || p[0] > 2 || p[1] < 0 || p[1] > 2) return std::nullopt;
  const int64_t C = w[1], K = w[0];
  if (C % 16 || K % 16 || C < 64 || K < 64) return std::nullopt;
  wino::Geom g;
  g.N = x.shape[0];
  g.IC = C;
  g.OC = K;
  g.H = x.shape[2];
  g.W = x.shape[3];
  g.pad_h = p[0];
  g.pad_w = p[1];
  if (g.OH() != y.shape[2] || g.OW() != y.shape[3]) return std::nullopt;
  return g;
}

// conv2d (x, w [, b]) -> y, and conv2d_grad_data (dy, w) -> dx: dx is dy convolved with the flipped, transposed
// filter and padding 2 - pad, i.e. a Winograd convolution from K to C channels over the OH x OW gradient
// (flip_transpose). The transformed weights are rebuilt every run.
struct WinoConv : Kernel {
  wino::Conv conv;
  bool flip_transpose, bias;
  std::string impl_name;  // Kernel::impl(), fixed at construction
  WinoConv(const KernelCtx& c, const wino::Geom& g, bool flip, bool with_bias)
      : conv(g, omp_get_max_threads(), c.deterministic),
        flip_transpose(flip),
        bias(with_bias),
        impl_name(winograd_impl(conv.split(), conv.deterministic())) {}
  std::string impl() const override { return impl_name; }
  size_t scratch_bytes() const override { return conv.scratch_bytes(); }
  void run(const RunCtx& r) override {
    wino::Epilogue ep;
    ep.bias = bias ? static_cast<const float*>(r.in[2]) : nullptr;
    conv.run(static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[1]),
             flip_transpose, nullptr, ep, static_cast<char*>(r.scratch));
  }
};

// conv2d_grad_weights (dy, x) -> dw [, db]
struct WinoBwdWeights : Kernel {
  wino::BwdWeights grad;
  bool bias;
  std::string impl_name;  // Kernel::impl(), fixed at construction
  WinoBwdWeights(const KernelCtx& c, const wino::Geom& g)
      : grad(g, omp_get_max_threads(), c.deterministic),
        bias(c.out.size() > 1),
        impl_name(winograd_impl(grad.split(), grad.deterministic())) {}
  std::string impl() const override { return impl_name; }
  size_t scratch_bytes() const override { return grad.scratch_bytes(); }
  void run(const RunCtx& r) override {
    grad.run(static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]),
             bias ? static_cast<float*>(r.out[1]) : nullptr, static_cast<char*>(r.scratch));
  }
};

// fused_conv2d (inference) as Winograd: BN folds into the filter transform (per-output-channel scale) and the
// bias; the residual sum and the activation (relu or leaky_relu: make_conv_fused sends act 3 to the direct
// kernel) run in the output transform. The transformed filter (4x the
// filter's bytes) is rebuilt into scratch on every run rather than kept: for the batches this path takes (at
// least kWinoInferTiles tiles) that costs about 2 % of the convolution and keeps inference memory flat (whole mode
// transforms one block of output channels at a time, in cache, which at batch 1 beats reading a kept transformed
// filter 4x the filter's size). 16 tiles = a 14x14 output at batch 1: measured at batch 1 on the 2-core AMD EPYC
// (AVX-512), lowering the threshold from 64 to 16 took ResNet-50 from 36.7 to 35.4 ms, ResNet-18 from 15.3 to
// 13.5, ResNet-34 from 30.3 to 27.2 and VGG-16 from 108 to 85 ms; at 4 tiles (7x7 outputs) ResNet-50's 512-channel
// layers ran 2.8-3.0 ms against 1.3 ms direct.
constexpr int64_t kWinoInferTiles = 16;
struct WinoFused : Kernel, FusedConvAttrs {
  wino::Conv conv;
  size_t scale_shift_off;  // where the folded BN scale and shift (K floats each) go in the scratch, after conv's
  size_t residual_bytes;
  std::string impl_name;  // Kernel::impl(), fixed at construction
  WinoFused(const KernelCtx& c, const wino::Geom& g)
      : FusedConvAttrs(c), conv(g, omp_get_max_threads(), c.deterministic) {
    scale_shift_off = (conv.scratch_bytes() + 63) / 64 * 64;
    residual_bytes = layout_bytes(c.out[0], c.layout_out(0));
    impl_name = winograd_impl(conv.split(), conv.deterministic());
  }
  std::string impl() const override { return impl_name; }
  size_t scratch_bytes() const override { return scale_shift_off + size_t(K) * 8; }
  void run(const RunCtx& r) override {
    char* scratch = static_cast<char*>(r.scratch);
    float* s = reinterpret_cast<float*>(scratch + scale_shift_off);
    float* t = s + K;
    wino::Epilogue ep;
    if (bn) {
      fold_bn(r, s, t);
      ep.bias = t;
    } else if (bias) {
      ep.bias = static_cast<const float*>(r.in[2]);
    }
    if (sum && r.out[0] != r.in[residual_in])  // the residual is still live: copy it to y, which the sum reads
      std::memcpy(r.out[0], r.in[residual_in], residual_bytes);
    ep.sum = sum;
    ep.act = act;
    ep.alpha = alpha;
    conv.run(static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[1]),
             false, bn ? s : nullptr, ep, scratch);
  }
};

int64_t tiles(const wino::Geom& g) { return g.N * ((g.OH() + 3) / 4) * ((g.OW() + 3) / 4); }

// Both activations plain float32 and the node within a native small-channel kernel's range (conv_small.cpp; the
// layout rules give such nodes plain layouts): that kernel.
bool plain_f32(const KernelCtx& c, const TensorDesc& x, Layout lx, const TensorDesc& y, Layout ly) {
  return c.compute == DType::f32 && x.dtype == DType::f32 && y.dtype == DType::f32 && lx == Layout::plain &&
         ly == Layout::plain;
}

std::unique_ptr<Kernel> make_conv_fused(const KernelCtx& c) {
  if (plain_f32(c, c.in[0], c.layout_in(0), c.out[0], c.layout_out(0)) &&
      small_fused_ok(c.node.attrs, DType::f32, c.in[0].shape, c.in[1].shape, c.out[0].shape))
    return make_small_fwd(c);
  // the output transform applies relu and leaky_relu only: other activations (act 3) take the direct kernel,
  // which has them as an eltwise post-op
  if (c.node.attrs.i("act", 0) <= 2)
    if (auto g = winograd_geom(c, c.in[0], c.in[1].shape, c.out[0], c.layout_in(0), c.layout_out(0)))
      if (tiles(*g) >= kWinoInferTiles && wino::Conv::worthwhile(*g, omp_get_max_threads(), c.deterministic))
        return std::make_unique<WinoFused>(c, *g);
  return make_direct_fused(c);
}

std::unique_ptr<Kernel> make_conv_fwd(const KernelCtx& c) {  // inference sessions: the same tile threshold
  if (plain_f32(c, c.in[0], c.layout_in(0), c.out[0], c.layout_out(0)) &&
      small_fwd_ok(c.node.attrs, DType::f32, c.in[0].shape, c.in[1].shape, c.out[0].shape))
    return make_small_fwd(c);
  if (auto g = winograd_geom(c, c.in[0], c.in[1].shape, c.out[0], c.layout_in(0), c.layout_out(0)))
    if ((c.training || tiles(*g) >= kWinoInferTiles) &&
        wino::Conv::worthwhile(*g, omp_get_max_threads(), c.deterministic))
      return std::make_unique<WinoConv>(c, *g, false, c.in.size() > 2);
  return make_direct_fwd(c);
}
std::unique_ptr<Kernel> make_conv_bwd_data(const KernelCtx& c) {
  if (plain_f32(c, c.out[0], c.layout_out(0), c.in[0],
                small_bwd_data_any_dy(c.out[0].shape) ? Layout::plain : c.layout_in(0)) &&
      small_bwd_data_ok(c.node.attrs, DType::f32, c.out[0].shape, c.in[1].shape, c.in[0].shape))
    return make_small_bwd_data(c);  // dy in any layout for the batch-lanes kernel
  // the forward convolution: x = dx (out 0), y = dy (in 0)
  if (auto f = winograd_geom(c, c.out[0], c.in[1].shape, c.in[0], c.layout_out(0), c.layout_in(0))) {
    wino::Geom g;
    g.N = f->N;
    g.IC = f->OC;
    g.OC = f->IC;
    g.H = c.in[0].shape[2];
    g.W = c.in[0].shape[3];
    g.pad_h = 2 - f->pad_h;
    g.pad_w = 2 - f->pad_w;
    if (wino::Conv::worthwhile(g, omp_get_max_threads(), c.deterministic))
      return std::make_unique<WinoConv>(c, g, true, false);
  }
  return make_direct_bwd_data(c);
}

std::unique_ptr<Kernel> make_conv_bwd_weights(const KernelCtx& c) {
  if (plain_f32(c, c.in[1], c.layout_in(1), c.in[0], c.layout_in(0)) &&
      small_bwd_weights_ok(c.node.attrs, DType::f32, c.in[1].shape, c.out[0].shape, c.in[0].shape))
    return make_small_bwd_weights(c);
  // the forward convolution: x = in 1, w = dw (out 0), y = dy (in 0); dw leaves plain [K, C, 3, 3]
  if (c.layout_out(0) == Layout::plain)
    if (auto g = winograd_geom(c, c.in[1], c.out[0].shape, c.in[0], c.layout_in(1), c.layout_in(0)))
      return std::make_unique<WinoBwdWeights>(c, *g);
  return make_direct_bwd_weights(c);
}

KernelRegistrar r1("cpu", "conv2d", make_conv_fwd);
KernelRegistrar r2("cpu", "conv2d_grad_data", make_conv_bwd_data);
KernelRegistrar r3("cpu", "conv2d_grad_weights", make_conv_bwd_weights);
KernelRegistrar r4("cpu", "fused_conv2d", make_conv_fused);

}  // namespace
}  // namespace conv
}  // namespace cpu
}  // namespace cnn
