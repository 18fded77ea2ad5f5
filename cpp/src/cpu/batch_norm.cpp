// Native kernels for batch_norm and batch_norm_grad (float32, and bf16 activations in bf16 sessions; statistics,
// gamma and beta float32), in every session layout: x, y, dy and dx share x's layout (layout rule) and are seen as
// groups of V-lane pixels (red::LaneView: plain (n, c) planes, nhwc images and [N, C] matrices with one lane per
// channel, nChw16c/nChw8c blocks of 16/8 channels; blocked padding lanes stay zero).
//
// Why not oneDNN's batch normalization: it sums in float (the mean of 2^24 values of 1e4 + noise was off by 10 %
// and the variance by a factor 1e6), and its reduction split depends on the thread count (bits differ between 3
// and 4 threads). Here:
//  - each group's pixels are cut into chunks of P pixels fixed by the shape (kChunkElems floats for one-lane
//    groups, kChunkPixels pixels otherwise); a chunk's per-lane sum and M2 = sum (x - chunk mean)^2 come from two
//    float64 passes while it is in cache (red::lane_stats), in parallel over chunks; then per channel, in (n,
//    chunk) order, mean = sum of sums / m and M2 = sum_k M2_k + cnt_k (mean_k - mean)^2 (m = N*H*W): float64
//    throughout, no E[x^2] - E[x]^2 cancellation, so the statistics are the float64 ones rounded to float at any
//    size and any mean. The backward sums (sum dy, sum dy*(x - mean)) likewise (red::lane_dot).
//  - chunks are fixed by the shape and combined in a fixed order, so every output is bitwise independent of the
//    thread count, always (KernelCtx::deterministic needs nothing more).
// Training writes the biased batch variance to save_var and updates running_mean/running_var (inputs 3, 4) in
// place when track_running_stats=1 (unbiased variance, momentum). Normalization: y = (x - mean) * s + beta with the
// float mean and s = float(gamma / sqrt(var + eps)) from the float variance, in both modes, so a training=0 node fed
// the saved batch statistics (recompute's clone) reproduces the training output bit for bit. Backward: dx = dy * a
// + ((x - mean) * b + c) per channel (a = gamma/sigma; training: b = -gamma sum(dy*(x-mean)) / (sigma^3 m),
// c = -gamma sum(dy) / (sigma m); eval: b = c = 0), dgamma = sum(dy*(x-mean)) / sigma, dbeta = sum(dy).
#include <algorithm>
#include <cmath>

#include "core/layout.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kChunkElems = 4096;   // one-lane groups (plain): floats per chunk
constexpr int64_t kChunkPixels = 256;   // multi-lane groups: pixels per chunk
constexpr int64_t kParallel = 1 << 14;  // elements below which a kernel runs on one thread

// Chunks of a LaneView: K per group, unit u = g*K + k covers pixels [k*P, min(S, k*P + P)) of group g.
struct Chunks {
  red::LaneView lv;
  int64_t P, K, U;
  bool par;
  Chunks(const Shape& x, Layout l) : lv(x, l, true) {
    P = lv.V == 1 ? kChunkElems : kChunkPixels;
    K = (lv.S + P - 1) / P;
    U = lv.G * K;
    par = lv.G * lv.S * lv.V >= kParallel;
  }
  int64_t offset(int64_t u) const { return (u / K * lv.S + u % K * P) * lv.V; }
  int64_t count(int64_t u) const { return std::min(P, lv.S - u % K * P); }
  int64_t count_of(int64_t k) const { return std::min(P, lv.S - k * P); }
  int64_t chan0(int64_t u) const { return lv.chan0(u / K); }
  // slot (in U*V arrays) of chunk k of the n-th group holding channel c
  int64_t slot(int64_t n, int64_t c, int64_t k) const { return (lv.group(n, c) * K + k) * lv.V + lv.lane(c); }
};

// Per-channel float constants (Cp of each, zero in the padding lanes) and float64 partial sums in the scratch.
struct BnScratch {
  size_t partials = 0, consts = 0, total = 0;
  BnScratch(const Chunks& ch, int nconst, bool sums) {
    partials = sums ? size_t(2 * ch.U * ch.lv.V) * sizeof(double) : 0;
    consts = size_t(nconst * ch.lv.Cp) * sizeof(float);
    total = partials + consts;
  }
};

template <class T>
struct BatchNormFwd : Kernel {
  Chunks ch;
  BnScratch sc;
  bool training, update;
  double momentum, eps;

  explicit BatchNormFwd(const KernelCtx& c)
      : ch(c.in[0].shape, c.layout_in(0)), sc(ch, 3, c.node.attrs.i("training", 0) != 0) {
    const Attrs& at = c.node.attrs;
    training = at.i("training", 0);
    update = training && at.i("track_running_stats", 1);
    momentum = at.f("momentum", 0.1);
    eps = at.f("eps", 1e-5);
  }
  size_t scratch_bytes() const override { return sc.total; }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = ch.lv;
    const T* x = static_cast<const T*>(r.in[0]);
    T* y = static_cast<T*>(r.out[0]);
    const float *gamma = static_cast<const float*>(r.in[1]), *beta = static_cast<const float*>(r.in[2]);
    float *rm = static_cast<float*>(r.in[3]), *rv = static_cast<float*>(r.in[4]);
    double* sum = static_cast<double*>(r.scratch);
    double* m2 = sum + ch.U * lv.V;
    float* cm = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + sc.partials);
    float *cs = cm + lv.Cp, *ct = cs + lv.Cp;
    const int64_t C = lv.C, V = lv.V, U = ch.U;
    std::fill(cm, cm + 3 * lv.Cp, 0.f);
    if (training) {
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t u = 0; u < U; ++u) red::lane_stats(x + ch.offset(u), ch.count(u), V, V, sum + u * V, m2 + u * V);
      float* save_mean = static_cast<float*>(r.out[1]);
      float* save_var = static_cast<float*>(r.out[2]);
      const int64_t per_c = lv.per_c, K = ch.K;
      const double m = double(per_c) * double(lv.S);
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t c = 0; c < C; ++c) {
        double total = 0;
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) total += sum[ch.slot(n, c, k)];
        const double mean = total / m;
        double M2 = 0;
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t s = ch.slot(n, c, k);
            const double cnt = double(ch.count_of(k)), d = sum[s] / cnt - mean;
            M2 += m2[s] + cnt * d * d;
          }
        const double var = std::max(0.0, M2 / m);
        save_mean[c] = float(mean);
        save_var[c] = float(var);
        if (update) {
          rm[c] = float((1 - momentum) * rm[c] + momentum * mean);
          rv[c] = float((1 - momentum) * rv[c] + momentum * var * m / (m - 1));
        }
        set_consts(c, save_mean[c], save_var[c], gamma[c], beta[c], cm, cs, ct);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) set_consts(c, rm[c], rv[c], gamma[c], beta[c], cm, cs, ct);
    }
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) {
      const int64_t o = ch.offset(u), c0 = ch.chan0(u);
      red::lane_affine(x + o, y + o, ch.count(u), V, V, cm + c0, cs + c0, ct + c0);
    }
  }
  void set_consts(int64_t c, float mean, float var, float gamma, float beta, float* cm, float* cs, float* ct) const {
    cm[c] = mean;
    cs[c] = float(double(gamma) / std::sqrt(double(var) + eps));
    ct[c] = beta;
  }
};

// in: dy, x, gamma, mean, var (batch stats when training, running stats otherwise); out: dx, dgamma, dbeta
template <class T>
struct BatchNormBwd : Kernel {
  Chunks ch;
  BnScratch sc;
  bool training;
  double eps;

  explicit BatchNormBwd(const KernelCtx& c) : ch(c.in[1].shape, c.layout_in(1)), sc(ch, 4, true) {
    training = c.node.attrs.i("training", 0);
    eps = c.node.attrs.f("eps", 1e-5);
  }
  size_t scratch_bytes() const override { return sc.total; }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = ch.lv;
    const T* dy = static_cast<const T*>(r.in[0]);
    const T* x = static_cast<const T*>(r.in[1]);
    const float *gamma = static_cast<const float*>(r.in[2]), *mean = static_cast<const float*>(r.in[3]),
                *var = static_cast<const float*>(r.in[4]);
    T* dx = static_cast<T*>(r.out[0]);
    float *dgamma = static_cast<float*>(r.out[1]), *dbeta = static_cast<float*>(r.out[2]);
    double* sdy = static_cast<double*>(r.scratch);
    double* sdyx = sdy + ch.U * lv.V;
    float* cm = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + sc.partials);
    float *ca = cm + lv.Cp, *cb = ca + lv.Cp, *cc = cb + lv.Cp;
    const int64_t C = lv.C, V = lv.V, U = ch.U, per_c = lv.per_c, K = ch.K;
    std::fill(cm, cm + 4 * lv.Cp, 0.f);
    std::copy(mean, mean + C, cm);
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) {
      const int64_t o = ch.offset(u);
      red::lane_dot(dy + o, x + o, ch.count(u), V, V, cm + ch.chan0(u), sdy + u * V, sdyx + u * V);
    }
    const double m = double(per_c) * double(lv.S);
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < per_c; ++n)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = ch.slot(n, c, k);
          s1 += sdy[s];
          s2 += sdyx[s];
        }
      const double inv = 1 / std::sqrt(double(var[c]) + eps), g = double(gamma[c]) * inv;
      dbeta[c] = float(s1);
      dgamma[c] = float(s2 * inv);
      ca[c] = float(g);
      cb[c] = training ? float(-g * inv * inv * s2 / m) : 0.f;
      cc[c] = training ? float(-g * s1 / m) : 0.f;
    }
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) {
      const int64_t o = ch.offset(u), c0 = ch.chan0(u);
      red::lane_affine_bwd(dy + o, x + o, dx + o, ch.count(u), V, V, cm + c0, ca + c0, cb + c0, cc + c0);
    }
  }
};

template <template <class> class K>
std::unique_ptr<Kernel> make(const KernelCtx& c, int x) {
  if (c.in[x].dtype == DType::bf16) return std::make_unique<K<red::bf16>>(c);
  return std::make_unique<K<float>>(c);
}

KernelRegistrar r1("cpu", "batch_norm", [](const KernelCtx& c) { return make<BatchNormFwd>(c, 0); });
KernelRegistrar r2("cpu", "batch_norm_grad", [](const KernelCtx& c) { return make<BatchNormBwd>(c, 1); });
LayoutRuleRegistrar l1("cpu", "batch_norm", rule_follow_input(0));
LayoutRuleRegistrar l2("cpu", "batch_norm_grad", rule_follow_input(1));
Bf16Registrar b1("cpu", "batch_norm");  // x, y in bf16; scale, shift and statistics stay float32
Bf16Registrar b2("cpu", "batch_norm_grad");

}  // namespace
}  // namespace cpu
}  // namespace cnn
