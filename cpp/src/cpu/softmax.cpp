// CPU kernels: softmax / softmax_grad on oneDNN (softmax_accurate over axis 1, plain layouts);
// softmax_cross_entropy and its grad as native loops, one pass per row (max, sum of exp, loss),
// parallel over rows when the batch is large. Labels are validated before any row is computed so an
// out-of-range label throws cnn::Error outside parallel regions. The loss sums per-row terms from
// scratch in row order, so it does not depend on the thread count. run() allocates nothing.
#include <cmath>
#include <cstdint>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace {

using alg = dnnl::algorithm;

dnnl::softmax_forward::primitive_desc softmax_fwd_pd(const dnnl::memory::desc& md, const dnnl::primitive_attr& attr) {
  return dnnl::softmax_forward::primitive_desc(engine(), dnnl::prop_kind::forward_training, alg::softmax_accurate, md, md, 1, attr);
}

struct SoftmaxFwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  explicit SoftmaxFwd(const KernelCtx& c) {
    auto md = plain_desc(c.in[0]);
    auto pd = softmax_fwd_pd(md, user_scratchpad_attr());
    ex = DnnlExec(dnnl::softmax_forward(pd));
    ex.bind(DNNL_ARG_SRC, md, Src::in(0));
    ex.bind(DNNL_ARG_DST, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

// dy = in 0, y = in 1 -> dx = out 0
struct SoftmaxBwd : Kernel {
  DnnlExec ex;
  size_t scratch = 0;
  explicit SoftmaxBwd(const KernelCtx& c) {
    auto md = plain_desc(c.in[0]);
    auto hint = softmax_fwd_pd(md, dnnl::primitive_attr());
    dnnl::softmax_backward::primitive_desc pd(engine(), alg::softmax_accurate, md, md, md, 1, hint, user_scratchpad_attr());
    ex = DnnlExec(dnnl::softmax_backward(pd));
    ex.bind(DNNL_ARG_DIFF_DST, md, Src::in(0));
    ex.bind(DNNL_ARG_DST, md, Src::in(1));
    ex.bind(DNNL_ARG_DIFF_SRC, md, Src::out(0));
    scratch = pd.scratchpad_desc().get_size();
    if (scratch) ex.bind(DNNL_ARG_SCRATCHPAD, pd.scratchpad_desc(), Src::scratch(0));
  }
  size_t scratch_bytes() const override { return scratch; }
  void run(const RunCtx& r) override { ex.run(r); }
};

constexpr int64_t kParallelElems = 1 << 15;

void check_labels(const Node& n, const int32_t* labels, int64_t N, int64_t K) {
  for (int64_t i = 0; i < N; ++i)
    if (labels[i] < 0 || labels[i] >= K)
      op_error(n, "label " + std::to_string(labels[i]) + " at batch index " + std::to_string(i) + " is out of range [0, " +
                      std::to_string(K) + ")");
}

// Row max and sum of exp(x - max).
inline void row_stats(const float* x, int64_t K, float& m, float& s) {
  m = x[0];
  for (int64_t k = 1; k < K; ++k) m = x[k] > m ? x[k] : m;
  s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < K; ++k) s += std::exp(x[k] - m);
}

// logits = in 0 [N, K], labels = in 1 [N] -> loss = out 0 [1]
struct SceFwd : Kernel {
  const Node& node;
  int64_t N, K;
  SceFwd(const KernelCtx& c) : node(c.node), N(c.in[0].shape[0]), K(c.in[0].shape[1]) {}
  size_t scratch_bytes() const override { return size_t(N) * sizeof(double); }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    const int32_t* lab = static_cast<const int32_t*>(r.in[1]);
    double* row_loss = static_cast<double*>(r.scratch);
    check_labels(node, lab, N, K);
    const int64_t N_ = N, K_ = K;
#pragma omp parallel for if (N_ * K_ >= kParallelElems)
    for (int64_t n = 0; n < N_; ++n) {
      const float* xr = x + n * K_;
      float m, s;
      row_stats(xr, K_, m, s);
      row_loss[n] = double(m) + std::log(double(s)) - double(xr[lab[n]]);
    }
    double total = 0;
    for (int64_t n = 0; n < N; ++n) total += row_loss[n];
    static_cast<float*>(r.out[0])[0] = float(total / double(N));
  }
};

// dloss = in 0 [1], logits = in 1 [N, K], labels = in 2 [N] -> dlogits = out 0 [N, K]
struct SceBwd : Kernel {
  const Node& node;
  int64_t N, K;
  SceBwd(const KernelCtx& c) : node(c.node), N(c.in[1].shape[0]), K(c.in[1].shape[1]) {}
  void run(const RunCtx& r) override {
    const float g = static_cast<const float*>(r.in[0])[0];
    const float* x = static_cast<const float*>(r.in[1]);
    const int32_t* lab = static_cast<const int32_t*>(r.in[2]);
    float* dx = static_cast<float*>(r.out[0]);
    check_labels(node, lab, N, K);
    const float scale = g / float(N);
    const int64_t N_ = N, K_ = K;
#pragma omp parallel for if (N_ * K_ >= kParallelElems)
    for (int64_t n = 0; n < N_; ++n) {
      const float* xr = x + n * K_;
      float* dr = dx + n * K_;
      float m, s;
      row_stats(xr, K_, m, s);
      const float f = scale / s;
#pragma omp simd
      for (int64_t k = 0; k < K_; ++k) dr[k] = std::exp(xr[k] - m) * f;
      dr[lab[n]] -= scale;
    }
  }
};

KernelRegistrar r1("cpu", "softmax", [](const KernelCtx& c) { return std::make_unique<SoftmaxFwd>(c); });
KernelRegistrar r2("cpu", "softmax_grad", [](const KernelCtx& c) { return std::make_unique<SoftmaxBwd>(c); });
KernelRegistrar r3("cpu", "softmax_cross_entropy", [](const KernelCtx& c) { return std::make_unique<SceFwd>(c); });
KernelRegistrar r4("cpu", "softmax_cross_entropy_grad", [](const KernelCtx& c) { return std::make_unique<SceBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
