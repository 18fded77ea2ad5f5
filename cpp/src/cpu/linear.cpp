// oneDNN kernels for linear, linear_grad_data and linear_grad_weights (inner_product forward /
// backward_data / backward_weights). Activations are plain (x, dx, y, dy are nc). Training: w and dw are oi
// ([OUT, IN] row-major, PyTorch's layout), which oneDNN's gemm-based inner product takes directly, so no
// reorder runs. Inference: the weights are format_tag::any, so oneDNN picks its blocked brgemm layout (the
// plain-weights gemm path is ~5x slower for ResNet-50's fc at batch 16), and the kernel keeps them reordered
// in its persistent region, redone when the parameter store's version moved (like the convolutions, see
// dnnl_common.hpp; with cache_weights off, into scratch on every run). fused_linear (inference) adds its activation
// as an eltwise post-op, and folds an eval-mode batch norm over the out features (attr bn) into the prepared weights
// and bias as fused_conv2d does (FusedConvAttrs::fold_bn, conv_common.hpp: fused_linear's attributes are
// fused_conv2d's without the residual): s = gamma / sqrt(var + eps) scales the weight rows inside the weight reorder,
// t = beta + (b - mean) * s is the bias, all rebuilt when the parameter store's version moved. Primitives are created
// once; run() only swaps handles.
//
// Deterministic mode (KernelCtx::deterministic; dnnl_common.hpp): oneDNN's inner product may split the reduction
// across threads (fc 4096->4096 at batch 64 gives different outputs at 1 and 2 threads), so each of the three GEMMs
// runs instead as a grid of output blocks (BlockGemm), each a matmul built for one thread with the whole
// reduction inside it; the bias gradient is a column sum in row order.
#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include <omp.h>

#include "core/backend.hpp"
#include "cpu/conv_common.hpp"
#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using dnnl::memory;

dnnl::inner_product_forward::primitive_desc fwd_pd(const memory::desc& x, const memory::desc& w, const memory::desc* b,
                                                   const memory::desc& y,
                                                   dnnl::prop_kind pk = dnnl::prop_kind::forward_training,
                                                   dnnl::primitive_attr attr = user_scratchpad_attr()) {
  using pd_t = dnnl::inner_product_forward::primitive_desc;
  return b ? pd_t(engine(), pk, x, w, *b, y, attr) : pd_t(engine(), pk, x, w, y, attr);
}

struct LinearKernel : Kernel {
  std::string impl_name;  // Kernel::impl(), fixed at construction
  std::string impl() const override { return impl_name; }
  DnnlExec ex;
  size_t scratch = 0;
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
  void bind_scratchpad(const memory::desc& pad) {
    scratch = std::max(scratch, pad.get_size());
    if (pad.get_size()) ex.bind(DNNL_ARG_SCRATCHPAD, pad, Src::scratch(0));
  }
};

// fused_linear's batch norm (attr bn), or nothing: its attributes and input positions (gamma at bn_in).
std::optional<conv::FusedConvAttrs> linear_bn(const KernelCtx& c) {
  if (c.node.op != "fused_linear" || !c.node.attrs.i("bn", 0)) return std::nullopt;
  return conv::FusedConvAttrs(c);
}
// Whether the linear node reads a bias input: linear (x, w, [b]); fused_linear says so in has_bias.
bool linear_has_bias(const KernelCtx& c) {
  return c.node.op == "fused_linear" ? c.node.attrs.i("has_bias", 0) != 0 : c.in.size() == 3;
}

// x = in 0 [N, IN], w = in 1 [OUT, IN], b = in 2 [OUT] -> y = out 0 [N, OUT]; fused_linear: act (1 relu,
// 2 leaky_relu with negative_slope, 3 act_kind: cpu/eltwise_alg.hpp) as a post-op, BN folded (gamma, beta, mean,
// var after b).
struct LinearFwd : LinearKernel {
  DnnlExec reorder_w;
  size_t persist = 0, scale_off = 0, shift_off = 0;
  PreparedVersion prepared;
  std::optional<conv::FusedConvAttrs> bn;
  explicit LinearFwd(const KernelCtx& c) : bn(linear_bn(c)) {
    const bool has_bias = linear_has_bias(c);
    auto x = plain_desc(c.in[0]), w = plain_desc(c.in[1]), y = plain_desc(c.out[0]);
    const int64_t OUT = c.in[1].shape[0];
    memory::desc b = bn ? plain_desc(Shape{OUT}, DType::f32) : has_bias ? plain_desc(c.in[2]) : memory::desc();
    auto attr = user_scratchpad_attr();
    OneDnnAlg e;
    if (c.node.op == "fused_linear" && fused_eltwise(c.node, &e)) {
      dnnl::post_ops po;
      po.append_eltwise(e.a, e.alpha, e.beta);
      attr.set_post_ops(po);
    }
    auto pk = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    prepared.cached = c.cache_weights;
    memory::desc w_any = c.training ? w : memory::desc(w.get_dims(), w.get_data_type(), memory::format_tag::any);
    auto pd = fwd_pd(x, w_any, has_bias || bn ? &b : nullptr, y, pk, attr);
    std::optional<dnnl::reorder::primitive_desc> r;
    if (bn) {  // always a reorder: it applies the per-output-feature scale (dimension 0 of w [OUT, IN])
      auto rattr = user_scratchpad_attr();
      rattr.set_scales_mask(DNNL_ARG_SRC, 1);
      r = dnnl::reorder::primitive_desc(engine(), w, engine(), pd.weights_desc(), rattr);
    } else {
      r = weight_reorder(w, pd.weights_desc());
    }
    WeightScratch sc(pd.scratchpad_desc().get_size(), r, pd.weights_desc().get_size(), prepared.cached);
    persist = sc.persist;
    scratch = sc.total;
    auto at = [&](size_t off) { return prepared.cached ? Src::persist(off) : Src::scratch(off); };
    if (bn) {  // the BN scale and shift after the prepared weights
      ScratchLayout W;
      W.total = prepared.cached ? persist : scratch;
      scale_off = W.add(size_t(OUT) * 4);
      shift_off = W.add(size_t(OUT) * 4);
      (prepared.cached ? persist : scratch) = W.total;
    }
    if (r) reorder_w = bind_reorder(*r, Src::in(1), sc.weights);
    if (bn) reorder_w.bind(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, plain_desc(Shape{OUT}, DType::f32), at(scale_off));
    ex = DnnlExec(dnnl::inner_product_forward(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(0));
    ex.bind(DNNL_ARG_WEIGHTS, pd.weights_desc(), r ? sc.weights : Src::in(1));
    if (bn)
      ex.bind(DNNL_ARG_BIAS, b, at(shift_off));
    else if (has_bias)
      ex.bind(DNNL_ARG_BIAS, b, Src::in(2));
    ex.bind(DNNL_ARG_DST, y, Src::out(0));
    bind_scratchpad(pd.scratchpad_desc());  // already within `scratch`: binds it
  }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    if (bn && prepared.stale(r)) {  // fold before the reorder, which reads the scale
      char* base = static_cast<char*>(prepared.cached ? r.persist : r.scratch);
      bn->fold_bn(r, reinterpret_cast<float*>(base + scale_off), reinterpret_cast<float*>(base + shift_off));
    }
    prepared.refresh(r, reorder_w);
    ex.run(r);
  }
};

// dy = in 0 [N, OUT], w = in 1 [OUT, IN] -> dx = out 0 [N, IN]
struct LinearGradData : LinearKernel {
  explicit LinearGradData(const KernelCtx& c) {
    auto dy = plain_desc(c.in[0]), w = plain_desc(c.in[1]), dx = plain_desc(c.out[0]);
    auto hint = fwd_pd(dx, w, nullptr, dy);
    dnnl::inner_product_backward_data::primitive_desc pd(engine(), dx, w, dy, hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::inner_product_backward_data(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_WEIGHTS, w, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_SRC, dx, Src::out(0));
    bind_scratchpad(pd.scratchpad_desc());
  }
};

// dy = in 0 [N, OUT], x = in 1 [N, IN] -> dw = out 0 [OUT, IN] (+ db = out 1 [OUT])
struct LinearGradWeights : LinearKernel {
  explicit LinearGradWeights(const KernelCtx& c) {
    const bool has_bias = c.out.size() == 2;
    auto dy = plain_desc(c.in[0]), x = plain_desc(c.in[1]), dw = plain_desc(c.out[0]);
    memory::desc db = has_bias ? plain_desc(c.out[1]) : memory::desc();
    using pd_t = dnnl::inner_product_backward_weights::primitive_desc;
    auto hint = fwd_pd(x, dw, has_bias ? &db : nullptr, dy);
    auto attr = user_scratchpad_attr();
    pd_t pd = has_bias ? pd_t(engine(), x, dw, db, dy, hint, attr) : pd_t(engine(), x, dw, dy, hint, attr);
    ex = DnnlExec(dnnl::inner_product_backward_weights(pd));
    impl_name = onednn_impl(pd);
    ex.bind(DNNL_ARG_SRC, x, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_DST, dy, Src::in(0));
    ex.bind(DNNL_ARG_DIFF_WEIGHTS, dw, Src::out(0));
    if (has_bias) ex.bind(DNNL_ARG_DIFF_BIAS, db, Src::out(1));
    bind_scratchpad(pd.scratchpad_desc());
  }
};

// ---- deterministic mode ----
// C[M, N] (row stride ldc) = A[M, K] B[K, N] (+ bias[N]) (+ relu / leaky_relu), A and B given by element strides,
// as a grid of kBlock x kBlock output blocks (edge blocks smaller, up to four primitive variants), each computed by
// a oneDNN matmul built for one thread over the whole K: every element's summation order is that kernel's, whatever
// the thread count and whichever thread runs the block.
struct BlockGemm {
  static constexpr int64_t kBlock = 256;
  int64_t M = 0, N = 0, bm = 1, bn = 1, gm = 1, gn = 1;
  int64_t a_m = 0, a_k = 0, b_k = 0, b_n = 0, ldc = 0;
  bool bias = false;
  int var_of[4] = {-1, -1, -1, -1};  // (m edge) + 2 (n edge) -> variant
  PartExec exec;
  std::string impl_name;  // the kernels' Kernel::impl(): the full block's matmul
  BlockGemm(int64_t M_, int64_t N_, int64_t K, int64_t am, int64_t ak, int64_t bk, int64_t bnn, int64_t ldc_,
            bool with_bias, const OneDnnAlg* act)
      : M(M_), N(N_), a_m(am), a_k(ak), b_k(bk), b_n(bnn), ldc(ldc_), bias(with_bias) {
    bm = std::min(M, kBlock);
    bn = std::min(N, kBlock);
    gm = (M + bm - 1) / bm;
    gn = (N + bn - 1) / bn;
    const int threads = omp_get_max_threads();
    dnnl::primitive_attr attr = user_scratchpad_attr();
    if (act) {
      dnnl::post_ops po;
      po.append_eltwise(act->a, act->alpha, act->beta);
      attr.set_post_ops(po);
    }
    using dt = memory::data_type;
    std::vector<dnnl::primitive_desc> pds;
    OneThread one;
    for (int v = 0; v < 4; ++v) {
      const int64_t m = v & 1 ? M - (gm - 1) * bm : bm, n = v & 2 ? N - (gn - 1) * bn : bn;
      if ((v & 1 && m == bm) || (v & 2 && n == bn)) continue;  // no such edge
      memory::desc a({m, K}, dt::f32, memory::dims{a_m, a_k}), b({K, n}, dt::f32, memory::dims{b_k, b_n}),
          c({m, n}, dt::f32, memory::dims{ldc, 1});
      var_of[v] = int(pds.size());
      if (bias)
        pds.push_back(
            dnnl::matmul::primitive_desc(engine(), a, b, memory::desc({1, n}, dt::f32, memory::dims{n, 1}), c, attr));
      else
        pds.push_back(dnnl::matmul::primitive_desc(engine(), a, b, c, attr));
    }
    std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    if (bias) args.push_back(DNNL_ARG_BIAS);
    exec = PartExec(pds, args, threads);
    impl_name = onednn_impl(pds[0]) + " deterministic(output blocks)";
  }
  size_t scratch_bytes() const { return exec.scratch_bytes(); }
  void run(const float* A, const float* B, float* C, const float* b, char* pads) const {
    exec.run(
        gm * gn,
        [&](int64_t q) {
          const int64_t i = q / gn, j = q % gn;
          return var_of[(i == gm - 1 && M % bm ? 1 : 0) + (j == gn - 1 && N % bn ? 2 : 0)];
        },
        [&](int64_t q, int k) -> void* {
          const int64_t m0 = q / gn * bm, n0 = q % gn * bn;
          switch (k) {
            case 0: return const_cast<float*>(A + m0 * a_m);
            case 1: return const_cast<float*>(B + n0 * b_n);
            case 2: return C + m0 * ldc + n0;
            default: return const_cast<float*>(b + n0);
          }
        },
        pads);
  }
};

// y = x w^T (+ b) (+ activation): A = x [N, IN], B = w^T (w is [OUT, IN]), C = y [N, OUT]. fused_linear's BN:
// the gemm reads w * s (row-wise) and the bias t, prepared (in the persistent region, or with cache_weights off
// in scratch after the gemm's scratchpads) when the parameter store's version moved.
struct LinearFwdDet : Kernel {
  std::string impl() const override { return gemm->impl_name; }
  std::optional<BlockGemm> gemm;
  std::optional<conv::FusedConvAttrs> bn;
  PreparedVersion prepared;
  bool has_bias;
  int64_t IN = 0, OUT = 0;
  size_t scratch = 0, persist = 0, w_off = 0, scale_off = 0, shift_off = 0;
  explicit LinearFwdDet(const KernelCtx& c) : bn(linear_bn(c)), has_bias(linear_has_bias(c)) {
    const int64_t N = c.in[0].shape[0];
    IN = c.in[0].shape[1];
    OUT = c.in[1].shape[0];
    OneDnnAlg e;
    const bool act = c.node.op == "fused_linear" && fused_eltwise(c.node, &e);
    gemm.emplace(N, OUT, IN, IN, 1, 1, IN, OUT, has_bias || bn, act ? &e : nullptr);
    prepared.cached = c.cache_weights;
    ScratchLayout L, P;
    L.add(gemm->scratch_bytes());
    if (bn) {
      ScratchLayout& W = prepared.cached ? P : L;
      w_off = W.add(size_t(OUT * IN) * 4);
      scale_off = W.add(size_t(OUT) * 4);
      shift_off = W.add(size_t(OUT) * 4);
    }
    scratch = L.total;
    persist = P.total;
  }
  size_t scratch_bytes() const override { return scratch; }
  size_t persistent_bytes() const override { return persist; }
  void run(const RunCtx& r) override {
    const float* w = static_cast<const float*>(r.in[1]);
    const float* b = has_bias ? static_cast<const float*>(r.in[2]) : nullptr;
    if (bn) {
      char* base = static_cast<char*>(prepared.cached ? r.persist : r.scratch);
      float *ws = reinterpret_cast<float*>(base + w_off), *s = reinterpret_cast<float*>(base + scale_off);
      float* t = reinterpret_cast<float*>(base + shift_off);
      if (prepared.stale(r)) {
        bn->fold_bn(r, s, t);
        const int64_t in = IN, out = OUT;
#pragma omp parallel for schedule(static) if (OUT * IN >= (1 << 16))
        for (int64_t o = 0; o < out; ++o)
          for (int64_t i = 0; i < in; ++i) ws[o * in + i] = w[o * in + i] * s[o];
        prepared.mark(r);
      }
      w = ws;
      b = t;
    }
    gemm->run(static_cast<const float*>(r.in[0]), w, static_cast<float*>(r.out[0]), b, static_cast<char*>(r.scratch));
  }
};

// dx = dy w: A = dy [N, OUT], B = w [OUT, IN], C = dx [N, IN]
struct LinearGradDataDet : Kernel {
  std::string impl() const override { return gemm->impl_name; }
  std::optional<BlockGemm> gemm;
  explicit LinearGradDataDet(const KernelCtx& c) {
    const int64_t N = c.in[0].shape[0], OUT = c.in[0].shape[1], IN = c.out[0].shape[1];
    gemm.emplace(N, IN, OUT, OUT, 1, IN, 1, IN, false, nullptr);
  }
  size_t scratch_bytes() const override { return gemm->scratch_bytes(); }
  void run(const RunCtx& r) override {
    gemm->run(static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]),
              nullptr, static_cast<char*>(r.scratch));
  }
};

// dw = dy^T x: A = dy^T (dy is [N, OUT]), B = x [N, IN], C = dw [OUT, IN]; db[o] = sum over rows n of dy[n, o], in
// row order (threads split the columns in blocks of 16).
struct LinearGradWeightsDet : Kernel {
  std::string impl() const override { return gemm->impl_name; }
  std::optional<BlockGemm> gemm;
  int64_t N, OUT;
  bool has_bias;
  explicit LinearGradWeightsDet(const KernelCtx& c)
      : N(c.in[0].shape[0]), OUT(c.in[0].shape[1]), has_bias(c.out.size() == 2) {
    const int64_t IN = c.in[1].shape[1];
    gemm.emplace(OUT, IN, N, 1, OUT, IN, 1, IN, false, nullptr);
  }
  size_t scratch_bytes() const override { return gemm->scratch_bytes(); }
  void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    gemm->run(dy, static_cast<const float*>(r.in[1]), static_cast<float*>(r.out[0]), nullptr,
              static_cast<char*>(r.scratch));
    if (!has_bias) return;
    float* db = static_cast<float*>(r.out[1]);
    const int64_t nb = (OUT + 15) / 16, n_ = N, out = OUT;
#pragma omp parallel for schedule(static) if (N * OUT >= (1 << 16))
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t o0 = j * 16, w = std::min<int64_t>(16, out - o0);
      float acc[16] = {0};
      for (int64_t n = 0; n < n_; ++n)
        for (int64_t l = 0; l < w; ++l) acc[l] += dy[n * out + o0 + l];
      std::memcpy(db + o0, acc, size_t(w) * sizeof(float));
    }
  }
};

std::unique_ptr<Kernel> make_linear_fwd(const KernelCtx& c) {
  if (c.deterministic) return std::make_unique<LinearFwdDet>(c);
  return std::make_unique<LinearFwd>(c);
}

KernelRegistrar r1("cpu", "linear", make_linear_fwd);
KernelRegistrar r4("cpu", "fused_linear", make_linear_fwd);
KernelRegistrar r2("cpu", "linear_grad_data", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  if (c.deterministic) return std::make_unique<LinearGradDataDet>(c);
  return std::make_unique<LinearGradData>(c);
});
KernelRegistrar r3("cpu", "linear_grad_weights", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  if (c.deterministic) return std::make_unique<LinearGradWeightsDet>(c);
  return std::make_unique<LinearGradWeights>(c);
});

}  // namespace
}  // namespace cpu
}  // namespace cnn
