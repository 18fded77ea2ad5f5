// The oneDNN eltwise algorithm of an activation, shared by the activation kernels (activations_ext.cpp) and the
// fused kernels' post-ops (fused_conv2d in conv_direct.cpp, fused_linear in linear.cpp): onednn_alg maps an
// act::Params to the eltwise computing the reference's formula (false where none does: softplus, erf, clip with
// min > max); fused_eltwise maps fused_conv2d's / fused_linear's act attributes (core/fuse.cpp) to their post-op.
#pragma once
#include <dnnl.hpp>

#include "core/op.hpp"
#include "ops/activations_math.hpp"

namespace cnn {
namespace cpu {

struct OneDnnAlg {
  dnnl::algorithm a = dnnl::algorithm::eltwise_relu;
  float alpha = 0.f, beta = 0.f;
};

inline bool onednn_alg(const act::Params& p, OneDnnAlg* out) {
  using alg = dnnl::algorithm;
  switch (p.kind) {
    case act::kClip: *out = {alg::eltwise_clip_v2, float(p.a), float(p.b)}; return p.a <= p.b;
    case act::kHardsigmoid: *out = {alg::eltwise_hardsigmoid, float(p.a), float(p.b)}; return true;
    case act::kHardswish: *out = {alg::eltwise_hardswish, 1.f / 6.f, 0.5f}; return true;
    case act::kSilu: *out = {alg::eltwise_swish, 1.f, 0.f}; return true;
    case act::kGeluErf: *out = {alg::eltwise_gelu_erf}; return true;
    case act::kGeluTanh: *out = {alg::eltwise_gelu_tanh}; return true;
    case act::kMish: *out = {alg::eltwise_mish}; return true;
    case act::kElu: *out = {alg::eltwise_elu, float(p.a)}; return true;
    case act::kSoftplus: return false;  // native: log1p (see activations_ext.cpp)
    default: return false;
  }
}

// The post-op of a fused node's activation (act 1 relu, 2 leaky_relu, 3 act_kind); false for act 0.
inline bool fused_eltwise(const Node& n, OneDnnAlg* out) {
  act::FusedAct f = act::fused_act(n.attrs);
  if (f.act == 1 || f.act == 2) {
    *out = {dnnl::algorithm::eltwise_relu, f.slope, 0.f};
    return true;
  }
  if (f.act == act::kFusedOther) {
    if (!onednn_alg(f.p, out)) op_error(n, "internal: fused activation without a oneDNN eltwise");
    return true;
  }
  return false;
}

}  // namespace cpu
}  // namespace cnn
