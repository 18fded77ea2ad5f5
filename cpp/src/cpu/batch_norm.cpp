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

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/backend.hpp"
#include "cpu/reduce.hpp"

namespace cnn {
namespace cpu {
namespace {

constexpr int64_t kChunkElems = 4096;   // one-lane groups (plain): floats per chunk
constexpr int64_t kChunkPixels = 256;   // multi-lane groups: pixels per chunk
constexpr int64_t kParallel = 1 << 14;  // elements below which a kernel runs on one thread
// Forward outputs larger than this (about four times this machine's L2) are written with non-temporal stores: no
// read for ownership of lines that would not stay in cache anyway (ResNet-50 b16 BN forward per step, one thread:
// 332 -> 316 ms). Not the backward: dx usually overwrites dy in place, whose lines are then in cache.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// Chunks of a LaneView: K per group, unit u = g*K + k covers pixels [k*P, min(S, k*P + P)) of group g.
struct Chunks {
  red::LaneView lv;
  int64_t P, K, U;
  bool par;
  bool stream;  // the tensor exceeds kStreamBytes
  Chunks(const Shape& x, Layout l) : lv(x, l, true) {
    P = lv.V == 1 ? kChunkElems : kChunkPixels;
    K = (lv.S + P - 1) / P;
    U = lv.G * K;
    par = lv.G * lv.S * lv.V >= kParallel;
    stream = lv.G * lv.S * lv.V * 4 > kStreamBytes;
  }
  int64_t offset(int64_t u) const { return K == 1 ? u * lv.S * lv.V : (u / K * lv.S + u % K * P) * lv.V; }
  int64_t count(int64_t u) const { return K == 1 ? lv.S : std::min(P, lv.S - u % K * P); }
  int64_t count_of(int64_t k) const { return std::min(P, lv.S - k * P); }
  int64_t chan0(int64_t u) const { return lv.chan0(K == 1 ? u : u / K); }
  // Slots (in the U*V partial-sum arrays) of channel c: chunk k of the n-th group holding it is at
  // slot0(c) + n * n_stride() + k * V (groups of one n are consecutive: group(n, c) = group(0, c) + n * G/per_c).
  int64_t slot0(int64_t c) const { return lv.group(0, c) * K * lv.V + lv.lane(c); }
  int64_t n_stride() const { return (lv.G / lv.per_c) * K * lv.V; }
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

// Two schedules, with bitwise the same results (every chunk's sums and every channel's combination are the same
// operations in the same order; only which thread runs them differs):
//  - by phases: all chunks' sums in parallel, then all channels' combinations, then the elementwise pass;
//  - by channel group (plain and blocked layouts, when there are at least two groups per thread): a thread takes
//    whole channel groups (a plain channel, a block of 16/8 channels) through all three steps, so the group's data
//    is read the second time from its cache (ResNet-50 layer3/layer4 shapes), and there are no barriers between.
struct Schedule {
  bool by_group;
  int64_t groups;  // channel groups: G / per_c
  Schedule(const Chunks& ch) {
    groups = ch.lv.G / ch.lv.per_c;
#ifdef _OPENMP
    const int64_t threads = omp_get_max_threads();
#else
    const int64_t threads = 1;
#endif
    by_group = ch.lv.kind != red::LaneView::Rows && groups >= 2 * threads;
  }
};

template <class T>
struct BatchNormFwd : Kernel {
  std::string impl() const override { return "native"; }
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

  struct Args {
    const T* x;
    T* y;
    const float *gamma, *beta;
    float *rm, *rv, *save_mean, *save_var;
    double *sum, *m2;
    float *cm, *cs, *ct;
    bool nt;
  };

  void stats(const Args& a, int64_t u) const {
    const int64_t V = ch.lv.V;
    red::lane_stats(a.x + ch.offset(u), ch.count(u), V, V, a.sum + u * V, a.m2 + u * V);
  }
  // channel c's mean and variance from its chunks, in (n, chunk) order; outputs, running stats, constants
  void finish(const Args& a, int64_t c) const {
    const int64_t s0 = ch.slot0(c), ns = ch.n_stride(), V = ch.lv.V, per_c = ch.lv.per_c, K = ch.K;
    const double m = double(per_c) * double(ch.lv.S);
    double total = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) total += a.sum[s0 + n * ns + k * V];
    const double mean = total / m;
    double M2 = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = s0 + n * ns + k * V;
        const double cnt = double(ch.count_of(k)), d = a.sum[s] / cnt - mean;
        M2 += a.m2[s] + cnt * d * d;
      }
    const double var = std::max(0.0, M2 / m);
    a.save_mean[c] = float(mean);
    a.save_var[c] = float(var);
    if (update) {
      a.rm[c] = float((1 - momentum) * a.rm[c] + momentum * mean);
      a.rv[c] = float((1 - momentum) * a.rv[c] + momentum * var * m / (m - 1));
    }
    set_consts(a, c, a.save_mean[c], a.save_var[c]);
  }
  void set_consts(const Args& a, int64_t c, float mean, float var) const {
    a.cm[c] = mean;
    a.cs[c] = float(double(a.gamma[c]) / std::sqrt(double(var) + eps));
    a.ct[c] = a.beta[c];
  }
  void normalize(const Args& a, int64_t u) const {
    const int64_t o = ch.offset(u), c0 = ch.chan0(u), V = ch.lv.V;
    red::lane_affine(a.x + o, a.y + o, ch.count(u), V, V, a.cm + c0, a.cs + c0, a.ct + c0, a.nt);
  }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = ch.lv;
    Args a;
    a.x = static_cast<const T*>(r.in[0]);
    a.y = static_cast<T*>(r.out[0]);
    a.gamma = static_cast<const float*>(r.in[1]);
    a.beta = static_cast<const float*>(r.in[2]);
    a.rm = static_cast<float*>(r.in[3]);
    a.rv = static_cast<float*>(r.in[4]);
    a.save_mean = training ? static_cast<float*>(r.out[1]) : nullptr;
    a.save_var = training ? static_cast<float*>(r.out[2]) : nullptr;
    a.sum = static_cast<double*>(r.scratch);
    a.m2 = a.sum + ch.U * lv.V;
    a.cm = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + sc.partials);
    a.cs = a.cm + lv.Cp;
    a.ct = a.cs + lv.Cp;
    a.nt = ch.stream && static_cast<const void*>(a.x) != static_cast<const void*>(a.y);
    const int64_t C = lv.C, U = ch.U, K = ch.K;
    std::fill(a.cm, a.cm + 3 * lv.Cp, 0.f);
    const Schedule sch(ch);
    if (training && sch.by_group) {
      const int64_t Gn = sch.groups, per_c = lv.per_c, cpg = lv.kind == red::LaneView::Plain ? 1 : lv.V;
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t j = 0; j < Gn; ++j) {
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) stats(a, (n * Gn + j) * K + k);
        for (int64_t c = j * cpg; c < std::min(C, j * cpg + cpg); ++c) finish(a, c);
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) normalize(a, (n * Gn + j) * K + k);
        if (a.nt) red::stream_fence();
      }
      return;
    }
    if (training) {
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t u = 0; u < U; ++u) stats(a, u);
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t c = 0; c < C; ++c) finish(a, c);
    } else {
      for (int64_t c = 0; c < C; ++c) set_consts(a, c, a.rm[c], a.rv[c]);
    }
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) {
      normalize(a, u);
      if (a.nt) red::stream_fence();
    }
  }
};

// in: dy, x, gamma, mean, var (batch stats when training, running stats otherwise); out: dx, dgamma, dbeta
template <class T>
struct BatchNormBwd : Kernel {
  std::string impl() const override { return "native"; }
  Chunks ch;
  BnScratch sc;
  bool training;
  double eps;

  explicit BatchNormBwd(const KernelCtx& c) : ch(c.in[1].shape, c.layout_in(1)), sc(ch, 4, true) {
    training = c.node.attrs.i("training", 0);
    eps = c.node.attrs.f("eps", 1e-5);
  }
  size_t scratch_bytes() const override { return sc.total; }

  struct Args {
    const T *dy, *x;
    T* dx;
    const float *gamma, *var;
    float *dgamma, *dbeta;
    double *sdy, *sdyx;
    float *cm, *ca, *cb, *cc;
  };

  void sums(const Args& a, int64_t u) const {
    const int64_t o = ch.offset(u), V = ch.lv.V;
    red::lane_dot(a.dy + o, a.x + o, ch.count(u), V, V, a.cm + ch.chan0(u), a.sdy + u * V, a.sdyx + u * V);
  }
  void finish(const Args& a, int64_t c) const {
    const int64_t s0 = ch.slot0(c), ns = ch.n_stride(), V = ch.lv.V, per_c = ch.lv.per_c, K = ch.K;
    const double m = double(per_c) * double(ch.lv.S);
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = s0 + n * ns + k * V;
        s1 += a.sdy[s];
        s2 += a.sdyx[s];
      }
    const double inv = 1 / std::sqrt(double(a.var[c]) + eps), g = double(a.gamma[c]) * inv;
    a.dbeta[c] = float(s1);
    a.dgamma[c] = float(s2 * inv);
    a.ca[c] = float(g);
    a.cb[c] = training ? float(-g * inv * inv * s2 / m) : 0.f;
    a.cc[c] = training ? float(-g * s1 / m) : 0.f;
  }
  void apply(const Args& a, int64_t u) const {
    const int64_t o = ch.offset(u), c0 = ch.chan0(u), V = ch.lv.V;
    red::lane_affine_bwd(a.dy + o, a.x + o, a.dx + o, ch.count(u), V, V, a.cm + c0, a.ca + c0, a.cb + c0, a.cc + c0);
  }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = ch.lv;
    Args a;
    a.dy = static_cast<const T*>(r.in[0]);
    a.x = static_cast<const T*>(r.in[1]);
    a.gamma = static_cast<const float*>(r.in[2]);
    const float* mean = static_cast<const float*>(r.in[3]);
    a.var = static_cast<const float*>(r.in[4]);
    a.dx = static_cast<T*>(r.out[0]);
    a.dgamma = static_cast<float*>(r.out[1]);
    a.dbeta = static_cast<float*>(r.out[2]);
    a.sdy = static_cast<double*>(r.scratch);
    a.sdyx = a.sdy + ch.U * lv.V;
    a.cm = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + sc.partials);
    a.ca = a.cm + lv.Cp;
    a.cb = a.ca + lv.Cp;
    a.cc = a.cb + lv.Cp;
    const int64_t C = lv.C, U = ch.U, K = ch.K;
    std::fill(a.cm, a.cm + 4 * lv.Cp, 0.f);
    std::copy(mean, mean + C, a.cm);
    const Schedule sch(ch);
    if (sch.by_group) {
      const int64_t Gn = sch.groups, per_c = lv.per_c, cpg = lv.kind == red::LaneView::Plain ? 1 : lv.V;
#pragma omp parallel for schedule(static) if (ch.par)
      for (int64_t j = 0; j < Gn; ++j) {
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) sums(a, (n * Gn + j) * K + k);
        for (int64_t c = j * cpg; c < std::min(C, j * cpg + cpg); ++c) finish(a, c);
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) apply(a, (n * Gn + j) * K + k);
      }
      return;
    }
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) sums(a, u);
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t c = 0; c < C; ++c) finish(a, c);
#pragma omp parallel for schedule(static) if (ch.par)
    for (int64_t u = 0; u < U; ++u) apply(a, u);
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
