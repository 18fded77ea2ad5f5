// cuda kernels for the losses: mse_loss, bce_with_logits (ops/losses.cpp), softmax_cross_entropy
// (ops/softmax.cpp) and their *_grad ops. Our own kernels, following the reference kernels' arithmetic: each term
// in float, sums in double, the loss the mean over the elements (mse, bce) or over the batch rows (cross entropy).
//
// Deterministic: no atomics on values. A loss is reduced in two kernels: a fixed grid (set by the sizes at
// construction) writes one double partial sum per block (per row for the cross entropy) into scratch, each block
// summing its grid-stride share and then a fixed shared-memory tree; one block then sums the partials the same way
// and writes the mean. The same inputs give the same bits on every run.
//
// Cross entropy, per row (one block per row, rows in a grid-stride loop): M = max_k x, S = sum_k exp(x - M)
// (double), term = M + log S - x[label]; the gradient is float(exp(x - M) / S) * scale, minus scale at the label,
// scale = dloss / N. A label outside [0, K) cannot throw on the device (the cpu kernel throws an Error naming it):
// that row's term (forward) or its whole gradient row (backward) is NaN instead, so the loss is NaN and the session's
// non-finite-loss check fires, and the kernel records the error in its persistent region: one uint64,
// UINT64_MAX when every label was in range, else (batch index << 32) | uint32(label) of the first bad label (the
// smallest index, by atomicMin: so the same record as the cpu's error). It is reset (cudaMemsetAsync 0xff) at the
// start of every run, so after the run has completed it describes that run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

constexpr int kMaxPartials = 1024;  // blocks of the first pass of mse / bce

// A fixed-order reduction over the block (blockDim.x == kThreads); every thread gets the result. sh: kThreads slots.
template <class T, class Op>
__device__ T block_reduce(T v, T* sh, Op op) {
  const int tid = threadIdx.x;
  sh[tid] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) sh[tid] = op(sh[tid], sh[tid + s]);
    __syncthreads();
  }
  const T r = sh[0];
  __syncthreads();  // sh may be reused right after
  return r;
}
struct Add {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct Max {  // the reference's `x > m ? x : m`
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// out[0] = float(sum(part[0..count)) / divisor), one block of kThreads.
__global__ void finish_mean(const double* __restrict__ part, int64_t count, double divisor, float* __restrict__ out) {
  __shared__ double sh[kThreads];
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) s += part[i];
  s = block_reduce(s, sh, Add());
  if (threadIdx.x == 0) out[0] = float(s / divisor);
}

// ---- mse_loss, bce_with_logits ----
struct Mse {
  static __device__ float term(float p, float t) { return (p - t) * (p - t); }
  // the reference's scale: (wrt ? -2 : 2) * dloss / n; d = scale * (p - t)
  static __device__ float scale(float g, int64_t n, bool wrt_b) { return (wrt_b ? -2.f : 2.f) * g / float(n); }
  static __device__ float grad_a(float p, float t, float sc) { return sc * (p - t); }
  static __device__ float grad_b(float p, float t, float sc) { return sc * (p - t); }
};
struct Bce {
  static __device__ float term(float x, float t) { return fmaxf(x, 0.f) - x * t + log1pf(expf(-fabsf(x))); }
  static __device__ float scale(float g, int64_t n, bool) { return g / float(n); }
  static __device__ float sigmoid(float x) {
    if (x >= 0.f) return 1.f / (1.f + expf(-x));
    const float e = expf(x);
    return e / (1.f + e);
  }
  static __device__ float grad_a(float x, float t, float sc) { return (sigmoid(x) - t) * sc; }
  static __device__ float grad_b(float x, float, float sc) { return -x * sc; }
};

template <class L>
__global__ void loss_partials(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                              double* __restrict__ part) {
  __shared__ double sh[kThreads];
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads)
    s += double(L::term(a[i], b[i]));
  s = block_reduce(s, sh, Add());
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

template <class L>
__global__ void loss_grad(const float* __restrict__ dloss, const float* __restrict__ a, const float* __restrict__ b,
                          int64_t n, bool wrt_b, float* __restrict__ d) {
  const float sc = L::scale(dloss[0], n, wrt_b);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = wrt_b ? L::grad_b(a[i], b[i], sc) : L::grad_a(a[i], b[i], sc);
}

// (a, b) -> loss [1] = mean of the terms
template <class L>
struct LossFwd : Kernel {
  int64_t n;
  unsigned blocks;
  std::string impl() const override { return "cuda native"; }
  explicit LossFwd(const KernelCtx& c)
      : n(numel(c.in[0].shape)), blocks(std::min<unsigned>(blocks_for(n), unsigned(kMaxPartials))) {}
  size_t scratch_bytes() const override { return size_t(blocks) * sizeof(double); }
  void run(const RunCtx& r) override {
    const CudaStream& s = stream_of(r);
    double* part = static_cast<double*>(r.scratch);
    loss_partials<L><<<blocks, kThreads, 0, s.stream>>>(static_cast<const float*>(r.in[0]),
                                                        static_cast<const float*>(r.in[1]), n, part);
    check_launch("loss_partials");
    finish_mean<<<1, kThreads, 0, s.stream>>>(part, int64_t(blocks), double(n), static_cast<float*>(r.out[0]));
    check_launch("finish_mean (loss)");
  }
};

// (dloss [1], a, b; wrt) -> d a (wrt 0) or d b (wrt 1)
template <class L>
struct LossBwd : Kernel {
  int64_t n;
  bool wrt_b;
  std::string impl() const override { return "cuda native"; }
  explicit LossBwd(const KernelCtx& c) : n(numel(c.in[1].shape)), wrt_b(c.node.attrs.i("wrt", 0) != 0) {}
  void run(const RunCtx& r) override {
    if (n == 0) return;
    loss_grad<L><<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[2]), n,
        wrt_b, static_cast<float*>(r.out[0]));
    check_launch("loss_grad");
  }
};

// ---- softmax_cross_entropy ----
__device__ void record_bad_label(unsigned long long* err, int64_t row, int32_t label) {
  const unsigned long long idx = row < 0xffffffffLL ? (unsigned long long)row : 0xfffffffeULL;
  atomicMin(err, (idx << 32) | (unsigned long long)(uint32_t)label);
}

// The row's max (float) and exp sum (double), every thread of the block getting both.
__device__ void row_stats(const float* __restrict__ xr, int64_t K, float* shf, double* shd, float* m_out,
                          double* s_out) {
  float m = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) m = Max()(m, xr[k]);
  m = block_reduce(m, shf, Max());
  double s = 0;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) s += double(expf(xr[k] - m));
  *s_out = block_reduce(s, shd, Add());
  *m_out = m;
}

// row[n] = M + log S - x[n, label] (NaN for a bad label)
__global__ void sce_rows(const float* __restrict__ x, const int32_t* __restrict__ labels, int64_t N, int64_t K,
                         double* __restrict__ row, unsigned long long* err) {
  __shared__ float shf[kThreads];
  __shared__ double shd[kThreads];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * K;
    float m;
    double s;
    row_stats(xr, K, shf, shd, &m, &s);
    if (threadIdx.x == 0) {
      const int32_t lab = labels[n];
      if (lab < 0 || int64_t(lab) >= K) {
        record_bad_label(err, n, lab);
        row[n] = NAN;
      } else {
        row[n] = double(m) + log(s) - double(xr[lab]);
      }
    }
  }
}

// dx[n, k] = float(exp(x - M) / S) * scale (- scale at the label); a bad label's row is NaN
__global__ void sce_grad_rows(const float* __restrict__ dloss, const float* __restrict__ x,
                              const int32_t* __restrict__ labels, int64_t N, int64_t K, float* __restrict__ dx,
                              unsigned long long* err) {
  __shared__ float shf[kThreads];
  __shared__ double shd[kThreads];
  const float scale = dloss[0] / float(N);
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * K;
    float* dr = dx + n * K;
    const int32_t lab = labels[n];
    const bool bad = lab < 0 || int64_t(lab) >= K;
    if (bad) {
      if (threadIdx.x == 0) record_bad_label(err, n, lab);
      for (int64_t k = threadIdx.x; k < K; k += kThreads) dr[k] = NAN;
      continue;  // uniform over the block: no barrier is skipped by some threads only
    }
    float m;
    double s;
    row_stats(xr, K, shf, shd, &m, &s);
    for (int64_t k = threadIdx.x; k < K; k += kThreads) {
      float v = float(double(expf(xr[k] - m)) / s) * scale;
      if (k == lab) v -= scale;
      dr[k] = v;
    }
  }
}

unsigned row_blocks(int64_t N) { return unsigned(std::max<int64_t>(1, std::min<int64_t>(N, 1 << 20))); }

// Common part of the cross-entropy kernels: sizes, the error record in persist.
struct SceBase : Kernel {
  int64_t N, K;
  SceBase(int64_t n, int64_t k) : N(n), K(k) {}
  std::string impl() const override { return "cuda native"; }
  size_t persistent_bytes() const override { return sizeof(unsigned long long); }
  // The first bad label of the last run (recorded by the kernels, read back here after the session saw the NaN).
  std::string explain_failure(const RunCtx& r) override {
    unsigned long long rec = ~0ull;
    check(cudaMemcpyAsync(&rec, r.persist, sizeof rec, cudaMemcpyDeviceToHost, stream_of(r).stream),
          "cudaMemcpyAsync (cross-entropy label check)");
    stream_of(r).synchronize();
    if (rec == ~0ull) return "";
    const int64_t index = int64_t(rec >> 32);
    const int32_t label = int32_t(uint32_t(rec & 0xffffffffull));
    return "label " + std::to_string(label) + " at batch index " + std::to_string(index) + " is out of range [0, " +
           std::to_string(K) + ")";
  }
  unsigned long long* reset_error(const RunCtx& r) const {
    check(cudaMemsetAsync(r.persist, 0xff, sizeof(unsigned long long), stream_of(r).stream),
          "cudaMemsetAsync (cross-entropy label check)");
    return static_cast<unsigned long long*>(r.persist);
  }
};

// (logits [N, K], labels [N] int32) -> loss [1] = mean over rows
struct SceFwd : SceBase {
  explicit SceFwd(const KernelCtx& c) : SceBase(c.in[0].shape[0], c.in[0].shape[1]) {}
  size_t scratch_bytes() const override { return size_t(std::max<int64_t>(N, 1)) * sizeof(double); }
  void run(const RunCtx& r) override {
    const CudaStream& s = stream_of(r);
    unsigned long long* err = reset_error(r);
    double* row = static_cast<double*>(r.scratch);
    sce_rows<<<row_blocks(N), kThreads, 0, s.stream>>>(static_cast<const float*>(r.in[0]),
                                                       static_cast<const int32_t*>(r.in[1]), N, K, row, err);
    check_launch("sce_rows");
    finish_mean<<<1, kThreads, 0, s.stream>>>(row, N, double(N), static_cast<float*>(r.out[0]));
    check_launch("finish_mean (cross entropy)");
  }
};

// (dloss [1], logits [N, K], labels [N] int32) -> dlogits [N, K]
struct SceBwd : SceBase {
  explicit SceBwd(const KernelCtx& c) : SceBase(c.in[1].shape[0], c.in[1].shape[1]) {}
  void run(const RunCtx& r) override {
    const CudaStream& s = stream_of(r);
    unsigned long long* err = reset_error(r);
    if (N == 0) return;
    sce_grad_rows<<<row_blocks(N), kThreads, 0, s.stream>>>(
        static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), static_cast<const int32_t*>(r.in[2]), N,
        K, static_cast<float*>(r.out[0]), err);
    check_launch("sce_grad_rows");
  }
};

template <class K>
KernelFactory factory() {
  return [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<K>(c); };
}

KernelRegistrar reg_mse("cuda", "mse_loss", factory<LossFwd<Mse>>());
KernelRegistrar reg_mse_grad("cuda", "mse_loss_grad", factory<LossBwd<Mse>>());
KernelRegistrar reg_bce("cuda", "bce_with_logits", factory<LossFwd<Bce>>());
KernelRegistrar reg_bce_grad("cuda", "bce_with_logits_grad", factory<LossBwd<Bce>>());
KernelRegistrar reg_sce("cuda", "softmax_cross_entropy", factory<SceFwd>());
KernelRegistrar reg_sce_grad("cuda", "softmax_cross_entropy_grad", factory<SceBwd>());

}  // namespace
}  // namespace cnn::cuda
