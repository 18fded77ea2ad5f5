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
// sync: 4C + 1 float64 per-channel totals exchanged with the other processes (SyncBatchNorm) and this process's
// own, after the constants.
struct BnScratch {
  size_t partials = 0, consts = 0, synced = 0, total = 0;
  BnScratch(const Chunks& chunks, int nconst, bool sums, bool sync) {
    partials = sums ? size_t(2 * chunks.U * chunks.lv.V) * sizeof(double) : 0;
    consts = size_t(nconst * chunks.lv.Cp) * sizeof(float);
    synced = sync ? size_t(4 * chunks.lv.C + 1) * sizeof(double) : 0;
    total = partials + consts + synced;
  }
  double* sync_buf(void* scratch) const {
    return reinterpret_cast<double*>(static_cast<char*>(scratch) + partials + consts);
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
  Schedule(const Chunks& chunks) {
    groups = chunks.lv.G / chunks.lv.per_c;
#ifdef _OPENMP
    const int64_t threads = omp_get_max_threads();
#else
    const int64_t threads = 1;
#endif
    by_group = chunks.lv.kind != red::LaneView::Rows && groups >= 2 * threads;
  }
};

template <class T>
struct BatchNormFwd : Kernel {
  std::string impl() const override { return "native"; }
  Chunks chunks;
  BnScratch scratch_plan;
  bool training, update;
  double momentum, eps;

  bool sync;  // SyncBatchNorm: the batch statistics are the whole job's (RunCtx::allreduce, when set)

  explicit BatchNormFwd(const KernelCtx& c)
      : chunks(c.in[0].shape, c.layout_in(0)),
        scratch_plan(chunks, 3, c.node.attrs.i("training", 0) != 0,
                     c.node.attrs.i("training", 0) && c.node.attrs.i("sync", 0)) {
    const Attrs& at = c.node.attrs;
    training = at.i("training", 0);
    sync = training && at.i("sync", 0);
    update = training && at.i("track_running_stats", 1);
    momentum = at.f("momentum", 0.1);
    eps = at.f("eps", 1e-5);
  }
  size_t scratch_bytes() const override { return scratch_plan.total; }

  struct Args {
    const T* x;
    T* y;
    const float *gamma, *beta;
    float *running_mean, *running_var, *save_mean, *save_var;
    double *sum, *m2;
    float *mean_c, *scale_c, *shift_c;  // per channel (Cp floats): y = (x - mean_c) * scale_c + shift_c
    bool stream;                        // y is written with non-temporal stores
  };

  void stats(const Args& a, int64_t u) const {
    const int64_t V = chunks.lv.V;
    red::lane_stats(a.x + chunks.offset(u), chunks.count(u), V, V, a.sum + u * V, a.m2 + u * V);
  }
  // channel c's sum and M2 about `mean` from its chunks, in (n, chunk) order
  double channel_sum(const Args& a, int64_t c) const {
    const int64_t s0 = chunks.slot0(c), ns = chunks.n_stride(), V = chunks.lv.V, per_c = chunks.lv.per_c, K = chunks.K;
    double total = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) total += a.sum[s0 + n * ns + k * V];
    return total;
  }
  double channel_m2(const Args& a, int64_t c, double mean) const {
    const int64_t s0 = chunks.slot0(c), ns = chunks.n_stride(), V = chunks.lv.V, per_c = chunks.lv.per_c, K = chunks.K;
    double M2 = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = s0 + n * ns + k * V;
        const double cnt = double(chunks.count_of(k)), d = a.sum[s] / cnt - mean;
        M2 += a.m2[s] + cnt * d * d;
      }
    return M2;
  }
  double count() const { return double(chunks.lv.per_c) * double(chunks.lv.S); }
  // channel c's mean and variance from its chunks; outputs, running stats, constants
  void finish(const Args& a, int64_t c) const {
    const double m = count(), mean = channel_sum(a, c) / m;
    set_stats(a, c, mean, std::max(0.0, channel_m2(a, c, mean) / m), m);
  }
  // The whole job's statistics (SyncBatchNorm), exactly as one process would combine its chunks: the sums and
  // counts first (the global mean), then every process's M2 about that mean (Chan's update: M2 + cnt*(mean_p -
  // mean)^2 per chunk), so no E[x^2] - E[x]^2 cancellation. Two exchanges of C + 1 doubles.
  void finish_synced(const Args& a, const RunCtx& r) const {
    const int64_t C = chunks.lv.C;
    double* buf = scratch_plan.sync_buf(r.scratch);
    for (int64_t c = 0; c < C; ++c) buf[c] = channel_sum(a, c);
    buf[C] = count();
    (*r.allreduce)(buf, size_t(C + 1));
    const double m = buf[C];
    for (int64_t c = 0; c < C; ++c) buf[C + 1 + c] = buf[c] / m;  // the global means
    for (int64_t c = 0; c < C; ++c) buf[c] = channel_m2(a, c, buf[C + 1 + c]);
    (*r.allreduce)(buf, size_t(C));
    for (int64_t c = 0; c < C; ++c) set_stats(a, c, buf[C + 1 + c], std::max(0.0, buf[c] / m), m);
  }
  void set_stats(const Args& a, int64_t c, double mean, double var, double m) const {
    a.save_mean[c] = float(mean);
    a.save_var[c] = float(var);
    if (update) {
      a.running_mean[c] = float((1 - momentum) * a.running_mean[c] + momentum * mean);
      a.running_var[c] = float((1 - momentum) * a.running_var[c] + momentum * var * m / (m - 1));
    }
    set_consts(a, c, a.save_mean[c], a.save_var[c]);
  }
  void set_consts(const Args& a, int64_t c, float mean, float var) const {
    a.mean_c[c] = mean;
    a.scale_c[c] = float(double(a.gamma[c]) / std::sqrt(double(var) + eps));
    a.shift_c[c] = a.beta[c];
  }
  void normalize(const Args& a, int64_t u) const {
    const int64_t o = chunks.offset(u), c0 = chunks.chan0(u), V = chunks.lv.V;
    red::lane_affine(a.x + o, a.y + o, chunks.count(u), V, V, a.mean_c + c0, a.scale_c + c0, a.shift_c + c0, a.stream);
  }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = chunks.lv;
    Args a;
    a.x = static_cast<const T*>(r.in[0]);
    a.y = static_cast<T*>(r.out[0]);
    a.gamma = static_cast<const float*>(r.in[1]);
    a.beta = static_cast<const float*>(r.in[2]);
    a.running_mean = static_cast<float*>(r.in[3]);
    a.running_var = static_cast<float*>(r.in[4]);
    a.save_mean = training ? static_cast<float*>(r.out[1]) : nullptr;
    a.save_var = training ? static_cast<float*>(r.out[2]) : nullptr;
    a.sum = static_cast<double*>(r.scratch);
    a.m2 = a.sum + chunks.U * lv.V;
    a.mean_c = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + scratch_plan.partials);
    a.scale_c = a.mean_c + lv.Cp;
    a.shift_c = a.scale_c + lv.Cp;
    a.stream = chunks.stream && static_cast<const void*>(a.x) != static_cast<const void*>(a.y);
    const int64_t C = lv.C, U = chunks.U, K = chunks.K;
    std::fill(a.mean_c, a.mean_c + 3 * lv.Cp, 0.f);
    const Schedule sch(chunks);
    const bool synced = sync && r.allreduce;
    if (training && sch.by_group && !synced) {
      const int64_t Gn = sch.groups, per_c = lv.per_c, cpg = lv.kind == red::LaneView::Plain ? 1 : lv.V;
#pragma omp parallel for schedule(static) if (chunks.par)
      for (int64_t j = 0; j < Gn; ++j) {
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) stats(a, (n * Gn + j) * K + k);
        for (int64_t c = j * cpg; c < std::min(C, j * cpg + cpg); ++c) finish(a, c);
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) normalize(a, (n * Gn + j) * K + k);
        if (a.stream) red::stream_fence();
      }
      return;
    }
    if (training) {
#pragma omp parallel for schedule(static) if (chunks.par)
      for (int64_t u = 0; u < U; ++u) stats(a, u);
      if (synced) {
        finish_synced(a, r);
      } else {
#pragma omp parallel for schedule(static) if (chunks.par)
        for (int64_t c = 0; c < C; ++c) finish(a, c);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) set_consts(a, c, a.running_mean[c], a.running_var[c]);
    }
#pragma omp parallel for schedule(static) if (chunks.par)
    for (int64_t u = 0; u < U; ++u) {
      normalize(a, u);
      if (a.stream) red::stream_fence();
    }
  }
};

// in: dy, x, gamma, mean, var (batch stats when training, running stats otherwise); out: dx, dgamma, dbeta
template <class T>
struct BatchNormBwd : Kernel {
  std::string impl() const override { return "native"; }
  Chunks chunks;
  BnScratch scratch_plan;
  bool training;
  double eps;

  bool sync;  // SyncBatchNorm: dx from the whole job's sums (RunCtx::allreduce, when set)

  explicit BatchNormBwd(const KernelCtx& c)
      : chunks(c.in[1].shape, c.layout_in(1)),
        scratch_plan(chunks, 4, true, c.node.attrs.i("training", 0) && c.node.attrs.i("sync", 0)) {
    training = c.node.attrs.i("training", 0);
    sync = training && c.node.attrs.i("sync", 0);
    eps = c.node.attrs.f("eps", 1e-5);
  }
  size_t scratch_bytes() const override { return scratch_plan.total; }

  struct Args {
    const T *dy, *x;
    T* dx;
    const float *gamma, *var;
    float *dgamma, *dbeta;
    double *sdy, *sdyx;
    float *mean_c, *coef_a, *coef_b, *coef_c;  // per channel: dx = dy * a + ((x - mean) * b + c)
  };

  void sums(const Args& a, int64_t u) const {
    const int64_t o = chunks.offset(u), V = chunks.lv.V;
    red::lane_dot(a.dy + o, a.x + o, chunks.count(u), V, V, a.mean_c + chunks.chan0(u), a.sdy + u * V, a.sdyx + u * V);
  }
  // channel c's sum dy and sum dy*(x - mean) from its chunks, in (n, chunk) order
  void channel_sums(const Args& a, int64_t c, double& s1, double& s2) const {
    const int64_t s0 = chunks.slot0(c), ns = chunks.n_stride(), V = chunks.lv.V, per_c = chunks.lv.per_c, K = chunks.K;
    s1 = s2 = 0;
    for (int64_t n = 0; n < per_c; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = s0 + n * ns + k * V;
        s1 += a.sdy[s];
        s2 += a.sdyx[s];
      }
  }
  double count() const { return double(chunks.lv.per_c) * double(chunks.lv.S); }
  void finish(const Args& a, int64_t c) const {
    double s1, s2;
    channel_sums(a, c, s1, s2);
    set_coefs(a, c, s1, s2, s1, s2, count());
  }
  // dgamma, dbeta: this process's sums (the gradient exchange adds the other processes' parts); dx's correction
  // terms: the job's sums (g1, g2) over the job's count m.
  void set_coefs(const Args& a, int64_t c, double s1, double s2, double g1, double g2, double m) const {
    const double inv = 1 / std::sqrt(double(a.var[c]) + eps), g = double(a.gamma[c]) * inv;
    a.dbeta[c] = float(s1);
    a.dgamma[c] = float(s2 * inv);
    a.coef_a[c] = float(g);
    a.coef_b[c] = training ? float(-g * inv * inv * g2 / m) : 0.f;
    a.coef_c[c] = training ? float(-g * g1 / m) : 0.f;
  }
  void finish_synced(const Args& a, const RunCtx& r) const {
    const int64_t C = chunks.lv.C;
    double* buf = scratch_plan.sync_buf(r.scratch);
    double* local = buf + 2 * C + 1;
    for (int64_t c = 0; c < C; ++c) channel_sums(a, c, local[c], local[C + c]);
    std::copy(local, local + 2 * C, buf);
    buf[2 * C] = count();
    (*r.allreduce)(buf, size_t(2 * C + 1));
    for (int64_t c = 0; c < C; ++c) set_coefs(a, c, local[c], local[C + c], buf[c], buf[C + c], buf[2 * C]);
  }
  void apply(const Args& a, int64_t u) const {
    const int64_t o = chunks.offset(u), c0 = chunks.chan0(u), V = chunks.lv.V;
    red::lane_affine_bwd(a.dy + o, a.x + o, a.dx + o, chunks.count(u), V, V, a.mean_c + c0, a.coef_a + c0,
                         a.coef_b + c0, a.coef_c + c0);
  }

  void run(const RunCtx& r) override {
    const red::LaneView& lv = chunks.lv;
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
    a.sdyx = a.sdy + chunks.U * lv.V;
    a.mean_c = reinterpret_cast<float*>(static_cast<char*>(r.scratch) + scratch_plan.partials);
    a.coef_a = a.mean_c + lv.Cp;
    a.coef_b = a.coef_a + lv.Cp;
    a.coef_c = a.coef_b + lv.Cp;
    const int64_t C = lv.C, U = chunks.U, K = chunks.K;
    std::fill(a.mean_c, a.mean_c + 4 * lv.Cp, 0.f);
    std::copy(mean, mean + C, a.mean_c);
    const Schedule sch(chunks);
    const bool synced = sync && r.allreduce;
    if (sch.by_group && !synced) {
      const int64_t Gn = sch.groups, per_c = lv.per_c, cpg = lv.kind == red::LaneView::Plain ? 1 : lv.V;
#pragma omp parallel for schedule(static) if (chunks.par)
      for (int64_t j = 0; j < Gn; ++j) {
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) sums(a, (n * Gn + j) * K + k);
        for (int64_t c = j * cpg; c < std::min(C, j * cpg + cpg); ++c) finish(a, c);
        for (int64_t n = 0; n < per_c; ++n)
          for (int64_t k = 0; k < K; ++k) apply(a, (n * Gn + j) * K + k);
      }
      return;
    }
#pragma omp parallel for schedule(static) if (chunks.par)
    for (int64_t u = 0; u < U; ++u) sums(a, u);
    if (synced) {
      finish_synced(a, r);
    } else {
#pragma omp parallel for schedule(static) if (chunks.par)
      for (int64_t c = 0; c < C; ++c) finish(a, c);
    }
#pragma omp parallel for schedule(static) if (chunks.par)
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
