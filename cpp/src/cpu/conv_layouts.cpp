// The layout rules of conv2d, conv2d_grad_data, conv2d_grad_weights and fused_conv2d on the cpu backend (and
// their bfloat16 registration): plain x and y where a native small-channel kernel takes the node (conv_small.cpp),
// else per node and direction, the (x, y) layout pair whose oneDNN implementation ranks best, starting from the
// policy's layout for y and oneDNN's own pick for x. The kernels (conv_direct.cpp, conv_winograd.cpp) then run in
// whatever pair the layout pass gave them.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "cpu/conv_common.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace conv {

int impl_rank(const std::string& impl) {
  if (impl.rfind("ref", 0) == 0) return 0;
  if (impl.find("gemm") != std::string::npos) return 1;
  return impl.find("avx512") != std::string::npos ? 3 : 2;
}

namespace {

// The layouts (x, y) one convolution node runs in: the candidate whose oneDNN implementation of that node's
// direction ranks best (AVX-512 jit/brgemm > other jit > gemm > ref:any), the earliest on ties. Candidates, in
// order: the source layout oneDNN picks given the policy's destination layout; the policy's layouts for both;
// nhwc for both; the blocked layout for both; plain source; plain for both. Mixed pairs (e.g. nchw -> nChw16c)
// have real kernels for some directions only, so the backward nodes of a convolution may land on another
// candidate than its forward; the layout pass then reorders between them (cheap next to a ref:any or gemm
// convolution). Memoized: pd creation is not free and training graphs ask three times per convolution.
struct ConvLayouts {
  Layout x, y;
};
enum class Dir { fwd_infer, fwd_train, bwd_data, bwd_weights };

// tx, ty: the dtypes x and y would be stored in for that layout pair (bf16 sessions: bf16 when blocked)
int rank_of(const Attrs& a, DType tx, DType ty, const Shape& x, const Shape& w, const Shape& y, ConvLayouts l,
            Dir dir) {
  try {
    ConvDescs d(a, tx, ty, x, w, y, l.x, l.y);
    auto f = d.fwd(false, {},
                   dir == Dir::fwd_infer ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training);
    auto alg = dnnl::algorithm::convolution_direct;
    if (dir == Dir::bwd_data)
      return impl_rank(dnnl::convolution_backward_data::primitive_desc(engine(), alg, d.src, d.w_any, d.dst, d.strides,
                                                                       d.dilates, d.pad, d.pad, f)
                           .impl_info_str());
    if (dir == Dir::bwd_weights)
      return impl_rank(dnnl::convolution_backward_weights::primitive_desc(engine(), alg, d.src, d.w_any, d.dst,
                                                                          d.strides, d.dilates, d.pad, d.pad, f)
                           .impl_info_str());
    return impl_rank(f.impl_info_str());
  } catch (const dnnl::error&) {
    return -1;
  }
}

ConvLayouts conv_layouts(const Attrs& a, DType t, const Shape& x, const Shape& w, const Shape& y, const LayoutPolicy& p,
                         Dir dir) {
  static std::mutex mu;
  static std::map<std::string, ConvLayouts> memo;
  std::string key = shape_str(x) + shape_str(w) + shape_str(y) + shape_str(a.is("stride", {})) +
                    shape_str(a.is("padding", {})) + shape_str(a.is("dilation", {})) +
                    std::to_string(a.i("groups", 1)) + "/" + std::to_string(int(p.kind)) + "/" +
                    std::to_string(p.block) + "/" + std::to_string(int(dir)) + dtype_name(t) + (p.bf16 ? "/bf16" : "");
  std::lock_guard<std::mutex> lock(mu);
  auto it = memo.find(key);
  if (it != memo.end()) return it->second;
  const Layout ax = p.act(TensorDesc{x, t}), ay = p.act(TensorDesc{y, t}), b = p.blocked_layout();
  std::vector<ConvLayouts> cands;
  Layout chosen;
  try {
    const DType ty = p.dtype_in(ay, t);
    ConvDescs q(a, ty, ty, x, w, y, std::nullopt, ay);
    if (layout_of(q.fwd(false).src_desc(), x, q.compute, &chosen)) cands.push_back({chosen, ay});
  } catch (const dnnl::error&) {
  }
  cands.insert(cands.end(),
               {{ax, ay}, {Layout::nhwc, Layout::nhwc}, {b, b}, {Layout::plain, ay}, {Layout::plain, Layout::plain}});
  ConvLayouts pick = cands.back();
  int best = -2;
  for (auto c : cands) {
    int r = rank_of(a, p.dtype_in(c.x, t), p.dtype_in(c.y, t), x, w, y, c, dir);
    if (r > best) best = r, pick = c;
    if (r == 3) break;
  }
  memo[key] = pick;
  return pick;
}

// The native small-channel kernels run in plain layout: nodes in their range get plain x and y under the
// "auto" and "plain" policies (an explicit blocked or nhwc policy is kept; bf16 sessions keep oneDNN's bf16 kernels).
bool native_layouts(const LayoutPolicy& p) { return !p.bf16 && (p.automatic || p.kind == LayoutPolicy::plain); }

LayoutChoice conv_fwd_rule(const LayoutQuery& q) {  // conv2d and fused_conv2d: (x, w, [b], [bn x4], [residual]) -> y
  if (native_layouts(q.policy) && (q.node.op == "conv2d" ? small_fwd_ok : small_fused_ok)(
                                      q.node.attrs, q.in[0].dtype, q.in[0].shape, q.in[1].shape, q.out[0].shape))
    return {std::vector<Layout>(q.in.size(), Layout::plain), {Layout::plain}};  // the native small-channel kernel
  ConvLayouts l = conv_layouts(q.node.attrs, q.in[0].dtype, q.in[0].shape, q.in[1].shape, q.out[0].shape, q.policy,
                               q.training ? Dir::fwd_train : Dir::fwd_infer);
  LayoutChoice c;
  c.in.assign(q.in.size(), Layout::plain);
  c.in[0] = l.x;
  if (q.node.op == "fused_conv2d" && q.node.attrs.i("sum", 0)) c.in.back() = l.y;
  c.out = {l.y};
  return c;
}
LayoutChoice conv_grad_data_rule(const LayoutQuery& q) {  // (dy, w) -> dx
  if (native_layouts(q.policy) &&
      small_bwd_data_ok(q.node.attrs, q.in[0].dtype, q.out[0].shape, q.in[1].shape, q.in[0].shape))
    return {{small_bwd_data_any_dy(q.out[0].shape) ? q.in_layout[0] : Layout::plain, Layout::plain}, {Layout::plain}};
  ConvLayouts l =
      conv_layouts(q.node.attrs, q.in[0].dtype, q.out[0].shape, q.in[1].shape, q.in[0].shape, q.policy, Dir::bwd_data);
  return {{l.y, Layout::plain}, {l.x}};
}
LayoutChoice conv_grad_weights_rule(const LayoutQuery& q) {  // (dy, x) -> dw [, db]
  if (native_layouts(q.policy) &&
      small_bwd_weights_ok(q.node.attrs, q.in[0].dtype, q.in[1].shape, q.out[0].shape, q.in[0].shape))
    return {{Layout::plain, Layout::plain}, std::vector<Layout>(q.out.size(), Layout::plain)};
  ConvLayouts l = conv_layouts(q.node.attrs, q.in[0].dtype, q.in[1].shape, q.out[0].shape, q.in[0].shape, q.policy,
                               Dir::bwd_weights);
  return {{l.y, l.x}, std::vector<Layout>(q.out.size(), Layout::plain)};
}

LayoutRuleRegistrar l1("cpu", "conv2d", conv_fwd_rule);
LayoutRuleRegistrar l2("cpu", "fused_conv2d", conv_fwd_rule);
LayoutRuleRegistrar l3("cpu", "conv2d_grad_data", conv_grad_data_rule);
LayoutRuleRegistrar l4("cpu", "conv2d_grad_weights", conv_grad_weights_rule);
Bf16Registrar b1("cpu", "conv2d");
Bf16Registrar b2("cpu", "fused_conv2d");
Bf16Registrar b3("cpu", "conv2d_grad_data");
Bf16Registrar b4("cpu", "conv2d_grad_weights");

}  // namespace
}  // namespace conv
}  // namespace cpu
}  // namespace cnn
