// Native CPU kernels for softmax / softmax_grad (axis 1 of [N, K], plain) and softmax_cross_entropy / its grad.
// Every row reduction is exact to float rounding at any K and independent of the thread count: a row is cut into
// chunks of red::kSoftmaxChunk elements (fixed by K); each chunk gives its max m_k and s_k = sum exp(x - m_k) in
// float64 (red::softmax_chunk, vectorized exp), in parallel over (row, chunk); the row's M = max m_k and
// S = sum_k s_k exp(m_k - M) are then combined in chunk order (red::softmax_combine). softmax writes exp(x - M) / S
// (one-chunk rows keep the exps of the first pass and scale them); the loss row term is M + log S - x[label] (float64),
// the loss their sum in row order over N; softmax_grad's sum dy*y is a float64 dot per chunk, added in chunk order.
// (oneDNN's softmax, used before, sums in float: relative errors ~1e-5 over 2^24 classes, and the loss's row sums
// were float: 2e-3.) Labels are validated before any row is computed so an out-of-range label throws cnn::Error
// outside parallel regions. run() allocates nothing (chunk stats live in the session's scratch).
#include <cmath>
#include <cstdint>

#include "core/backend.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kParallelElems = 1 << 15;

void check_labels(const Node& n, const int32_t* labels, int64_t N, int64_t K) {
  for (int64_t i = 0; i < N; ++i)
    if (labels[i] < 0 || labels[i] >= K)
      op_error(n, "label " + std::to_string(labels[i]) + " at batch index " + std::to_string(i) +
                      " is out of range [0, " + std::to_string(K) + ")");
}

// Rows of K floats cut into B chunks each; item i = row * B + chunk. Scratch: per item the chunk max (float),
// its exp sum (double) and a float factor, then per row M (float) and S (double).
struct RowChunks {
  int64_t N, K, B;
  bool par;
  RowChunks(int64_t n, int64_t k)
      : N(n), K(k), B((k + red::kSoftmaxChunk - 1) / red::kSoftmaxChunk), par(n * k >= kParallelElems) {}
  int64_t items() const { return N * B; }
  int64_t offset(int64_t i) const { return i / B * K + i % B * red::kSoftmaxChunk; }
  int64_t count(int64_t i) const { return std::min(red::kSoftmaxChunk, K - i % B * red::kSoftmaxChunk); }
  size_t scratch_bytes() const {
    return size_t(items()) * (sizeof(double) + 2 * sizeof(float)) + size_t(N) * (sizeof(double) + sizeof(float)) + 64;
  }
  struct Views {
    double *s, *S;
    float *m, *f, *M;
  };
  Views views(void* scratch) const {
    Views v;
    v.s = static_cast<double*>(scratch);
    v.S = v.s + items();
    v.m = reinterpret_cast<float*>(v.S + N);
    v.f = v.m + items();
    v.M = v.f + items();
    return v;
  }
  // Per-row M and S of x (chunk-parallel); with e non-null each chunk's exp(x - m_k) is written there.
  void stats(const float* x, float* e, const Views& v) const {
    const int64_t n_items = items();
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < n_items; ++i) {
      const int64_t o = offset(i);
      red::softmax_chunk(x + o, count(i), v.m + i, v.s + i, e ? e + o : nullptr);
    }
    if (B == 1) {
      for (int64_t r = 0; r < N; ++r) v.M[r] = v.m[r], v.S[r] = v.s[r];
      return;
    }
#pragma omp parallel for schedule(static) if (par && N > 1)
    for (int64_t r = 0; r < N; ++r) red::softmax_combine(v.m + r * B, v.s + r * B, B, v.M + r, v.S + r);
  }
  // Rows of one chunk: y holds exp(x - M) from stats(); y *= scale / S. Longer rows: y = exp(x - M) * scale / S
  // from x (exp of the difference to the row's max, not to the chunk's: each value then has one rounded
  // difference, as in a single pass; y may be x since each chunk reads and writes the same elements).
  void normalize(const float* x, float* y, const Views& v, double scale) const {
    const int64_t n_items = items();
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < n_items; ++i) {
      const int64_t r = i / B, o = offset(i);
      if (B == 1)
        red::scale(y + o, count(i), float(scale / v.S[r]));
      else
        red::exp_scale(x + o, y + o, count(i), v.M[r], float(scale / v.S[r]));
    }
  }
  // stats() then normalize(): y = softmax(x) * scale
  void softmax(const float* x, float* y, void* scratch, double scale) const {
    auto v = views(scratch);
    if (B == 1) {  // one pass per row, the row still in cache for the scaling
#pragma omp parallel for schedule(static) if (par)
      for (int64_t r = 0; r < N; ++r) {
        red::softmax_chunk(x + r * K, K, v.m + r, v.s + r, y + r * K);
        red::scale(y + r * K, K, float(scale / v.s[r]));
      }
      return;
    }
    stats(x, B == 1 ? y : nullptr, v);
    normalize(x, y, v, scale);
  }
};

// x [N, K] -> y [N, K] (y may be x)
struct SoftmaxFwd : Kernel {
  std::string impl() const override { return "native"; }
  RowChunks rows;
  explicit SoftmaxFwd(const KernelCtx& c) : rows(c.in[0].shape[0], c.in[0].shape[1]) {}
  size_t scratch_bytes() const override { return rows.scratch_bytes(); }
  void run(const RunCtx& r) override {
    rows.softmax(static_cast<const float*>(r.in[0]), static_cast<float*>(r.out[0]), r.scratch, 1.0);
  }
};

// dy = in 0, y = in 1 -> dx = out 0 = y * (dy - sum_k dy_k y_k) (dx may be dy)
struct SoftmaxBwd : Kernel {
  std::string impl() const override { return "native"; }
  RowChunks rows;
  explicit SoftmaxBwd(const KernelCtx& c) : rows(c.in[0].shape[0], c.in[0].shape[1]) {}
  size_t scratch_bytes() const override { return rows.scratch_bytes(); }
  void run(const RunCtx& r) override {
    const float* dy = static_cast<const float*>(r.in[0]);
    const float* y = static_cast<const float*>(r.in[1]);
    float* dx = static_cast<float*>(r.out[0]);
    auto v = rows.views(r.scratch);
    const int64_t n_items = rows.items(), B = rows.B, N = rows.N, K = rows.K;
    if (B == 1) {
#pragma omp parallel for schedule(static) if (rows.par)
      for (int64_t row = 0; row < N; ++row) {
        const int64_t o = row * K;
        red::softmax_bwd(dy + o, y + o, dx + o, K, float(red::dot(dy + o, y + o, K)));
      }
      return;
    }
#pragma omp parallel for schedule(static) if (rows.par)
    for (int64_t i = 0; i < n_items; ++i) {
      const int64_t o = rows.offset(i);
      v.s[i] = red::dot(dy + o, y + o, rows.count(i));
    }
    for (int64_t row = 0; row < N; ++row) {
      double d = 0;
      for (int64_t k = 0; k < B; ++k) d += v.s[row * B + k];
      v.M[row] = float(d);
    }
#pragma omp parallel for schedule(static) if (rows.par)
    for (int64_t i = 0; i < n_items; ++i) {
      const int64_t o = rows.offset(i);
      red::softmax_bwd(dy + o, y + o, dx + o, rows.count(i), v.M[i / B]);
    }
  }
};

// logits = in 0 [N, K], labels = in 1 [N] -> loss = out 0 [1]
struct SceFwd : Kernel {
  std::string impl() const override { return "native"; }
  const Node& node;
  RowChunks rows;
  SceFwd(const KernelCtx& c) : node(c.node), rows(c.in[0].shape[0], c.in[0].shape[1]) {}
  size_t scratch_bytes() const override { return rows.scratch_bytes(); }
  void run(const RunCtx& r) override {
    const float* x = static_cast<const float*>(r.in[0]);
    const int32_t* lab = static_cast<const int32_t*>(r.in[1]);
    const int64_t N = rows.N, K = rows.K;
    check_labels(node, lab, N, K);
    auto v = rows.views(r.scratch);
    rows.stats(x, nullptr, v);
    double total = 0;
    for (int64_t n = 0; n < N; ++n) total += double(v.M[n]) + std::log(v.S[n]) - double(x[n * K + lab[n]]);
    static_cast<float*>(r.out[0])[0] = float(total / double(N));
  }
};

// dloss = in 0 [1], logits = in 1 [N, K], labels = in 2 [N] -> dlogits = out 0 [N, K] = (softmax - onehot) dloss / N
struct SceBwd : Kernel {
  std::string impl() const override { return "native"; }
  const Node& node;
  RowChunks rows;
  SceBwd(const KernelCtx& c) : node(c.node), rows(c.in[1].shape[0], c.in[1].shape[1]) {}
  size_t scratch_bytes() const override { return rows.scratch_bytes(); }
  void run(const RunCtx& r) override {
    const float g = static_cast<const float*>(r.in[0])[0];
    const float* x = static_cast<const float*>(r.in[1]);
    const int32_t* lab = static_cast<const int32_t*>(r.in[2]);
    float* dx = static_cast<float*>(r.out[0]);
    const int64_t N = rows.N, K = rows.K;
    check_labels(node, lab, N, K);
    const float scale = g / float(N);
    rows.softmax(x, dx, r.scratch, double(scale));
    for (int64_t n = 0; n < N; ++n) dx[n * K + lab[n]] -= scale;
  }
};

KernelRegistrar r1("cpu", "softmax", [](const KernelCtx& c) { return std::make_unique<SoftmaxFwd>(c); });
KernelRegistrar r2("cpu", "softmax_grad", [](const KernelCtx& c) { return std::make_unique<SoftmaxBwd>(c); });
KernelRegistrar r3("cpu", "softmax_cross_entropy", [](const KernelCtx& c) { return std::make_unique<SceFwd>(c); });
KernelRegistrar r4("cpu", "softmax_cross_entropy_grad", [](const KernelCtx& c) { return std::make_unique<SceBwd>(c); });

}  // namespace
}  // namespace cpu
}  // namespace cnn
