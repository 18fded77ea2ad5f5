// cuda kernels for linear, linear_grad_data, linear_grad_weights and fused_linear (ops/linear.cpp,
// ops/conv_fused.cpp). The three products are cuBLAS GemmEx calls on row-major tensors; cuBLAS is column-major,
// so each row-major matrix M [r, c] is seen as the column-major M^T (c x r, leading dimension c):
//   linear:              y [N, OUT] = x [N, IN] w^T       <=> y^T (OUT x N) = op_T(w^T (IN x OUT)) x^T (IN x N)
//                        GemmEx(T, N, m=OUT, n=N, k=IN, A=w lda=IN, B=x ldb=IN, C=y ldc=OUT)
//   linear_grad_data:    dx [N, IN] = dy [N, OUT] w [OUT, IN]  <=> dx^T (IN x N) = w^T (IN x OUT) dy^T (OUT x N)
//                        GemmEx(N, N, m=IN, n=N, k=OUT, A=w lda=IN, B=dy ldb=OUT, C=dx ldc=IN)
//   linear_grad_weights: dw [OUT, IN] = dy^T x  <=> dw^T (IN x OUT) = x^T (IN x N) op_T(dy^T (OUT x N))
//                        GemmEx(N, T, m=IN, n=OUT, k=N, A=x lda=IN, B=dy ldb=OUT, C=dw ldc=IN)
// Compute type COMPUTE_32F_FAST_TF32 when StreamOptions::tf32, else COMPUTE_32F; float32 data, GEMM_DEFAULT.
// The rows of x are all its dimensions but the last (shape inference accepts only 2-D x; the kernels take the
// product of the leading dimensions so they stay right if that is relaxed).
//
// The bias, fused_linear's eval-mode batch norm and its activation are one epilogue kernel over y after the GEMM
// (y written with beta = 0, then rewritten in place): y = act((acc + b - mean) * gamma / sqrt(var + eps) + beta),
// the batch-norm part in double like batch_norm's reference kernel (so nothing is folded or kept between runs: no
// persistent memory, nothing to refresh when the parameters change, and the work queued is the same every run).
// The bias gradient db[o] = sum_n dy[n, o] is our own column-sum kernel: each column's partial sums are taken over
// fixed row strides and combined in a fixed order in shared memory, so it is deterministic (no atomics).
#include <library_types.h>

#include <algorithm>
#include <climits>
#include <string>

#include "cuda/common.hpp"
#include "ops/activations_math.hpp"

namespace cnn::cuda {
namespace {

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) fail(std::string("linear: ") + what + " = " + std::to_string(v) + " exceeds cuBLAS's int");
  return int(v);
}

// The rows of an activation: the product of all dimensions but the last.
int64_t leading(const Shape& s) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < s.size(); ++i) n *= s[i];
  return n;
}

int compute_type(const KernelCtx& c) { return stream_of(c).opt.tf32 ? blas::COMPUTE_32F_FAST_TF32 : blas::COMPUTE_32F; }

// Column-major C (m x n, ldc) = op(A) op(B), beta 0. k == 0 (an empty reduction) writes zeros: cuBLAS is not asked.
struct Gemm {
  int ta = blas::OP_N, tb = blas::OP_N, m = 0, n = 0, k = 0, lda = 1, ldb = 1, ldc = 1, compute = blas::COMPUTE_32F;
  void run(const CudaStream& s, const float* a, const float* b, float* c) const {
    if (m == 0 || n == 0) return;
    if (k == 0) {
      check(cudaMemsetAsync(c, 0, size_t(m) * size_t(n) * sizeof(float), s.stream), "cudaMemsetAsync (linear k=0)");
      return;
    }
    const float one = 1.f, zero = 0.f;
    check_blas(blas_api().GemmEx(s.blas, ta, tb, m, n, k, &one, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, &zero, c,
                                 CUDA_R_32F, ldc, compute, blas::GEMM_DEFAULT),
               "cublasGemmEx (linear)");
  }
};

// y [rows, out] in place: y = act(bn(y + b)); b, gamma.. may be null (no bias / no batch norm); act 1 relu,
// 2 leaky_relu (slope), 3 act::fwd(kind, ., a, ab) (ops/activations_math.hpp).
__global__ void linear_epilogue(float* __restrict__ y, int64_t total, int64_t out, const float* __restrict__ b,
                                const float* __restrict__ gamma, const float* __restrict__ beta,
                                const float* __restrict__ mean, const float* __restrict__ var, double eps, int act,
                                float slope, int kind, float a, float ab) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % out;
    float v = y[i];
    if (b) v += b[o];  // the reference starts its float sum at b; the GEMM's sum is added to it here
    if (gamma) {       // batch_norm's reference (eval): (x - mean) * (gamma / sqrt(var + eps)) + beta, in double
      const double scale = double(gamma[o]) / sqrt(double(var[o]) + eps);
      v = float((double(v) - double(mean[o])) * scale + double(beta[o]));
    }
    if (act == 1)
      v = v > 0.f ? v : 0.f;
    else if (act == 2)
      v = v > 0.f ? v : slope * v;
    else if (act == act::kFusedOther)
      v = act::fwd<float>(kind, v, a, ab);
    y[i] = v;
  }
}

// db[o] = sum_n dy[n, o]: blocks of 32 columns x kRowLanes row lanes; lane r sums rows r, r + kRowLanes, ... in
// order, then the lanes are added in lane order. Deterministic for given sizes.
constexpr int kRowLanes = 8;
__global__ void column_sum(const float* __restrict__ dy, float* __restrict__ db, int64_t rows, int64_t cols) {
  __shared__ float part[kRowLanes][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t c0 = int64_t(blockIdx.x) * 32; c0 < cols; c0 += int64_t(gridDim.x) * 32) {
    const int64_t c = c0 + tx;
    float s = 0.f;
    if (c < cols)
      for (int64_t r = ty; r < rows; r += kRowLanes) s += dy[r * cols + c];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < cols) {
      float t = part[0][tx];
      for (int l = 1; l < kRowLanes; ++l) t += part[l][tx];
      db[c] = t;
    }
    __syncthreads();
  }
}

// linear (x, w, [b]) and fused_linear (x, w, [b], [gamma, beta, mean, var]; has_bias, bn, bn_eps, act,
// negative_slope, act_kind, act_a, act_b) -> y
struct LinearFwd : Kernel {
  Gemm g;
  int64_t total = 0, OUT = 0;
  bool bias = false, bn = false;
  int bn_in = 0, act = 0;
  double eps = 1e-5;
  float slope = 0.f;
  act::FusedAct fa;  // act 3's kind and parameters
  std::string impl() const override { return "cublas gemm" + std::string(bn || bias || act ? " + cuda epilogue" : ""); }
  explicit LinearFwd(const KernelCtx& c) {
    const bool fused = c.node.op == "fused_linear";
    const int64_t N = leading(c.in[0].shape), IN = c.in[1].shape[1];
    OUT = c.in[1].shape[0];
    total = numel(c.out[0].shape);
    bias = fused ? c.node.attrs.i("has_bias", 0) != 0 : c.in.size() == 3;
    if (fused) {
      bn = c.node.attrs.i("bn", 0) != 0;
      bn_in = 2 + (bias ? 1 : 0);
      eps = c.node.attrs.f("bn_eps", 1e-5);
      act = int(c.node.attrs.i("act", 0));
      slope = act == 2 ? float(c.node.attrs.f("negative_slope", 0.01)) : 0.f;
      fa = act::fused_act(c.node.attrs);
    }
    g.ta = blas::OP_T;
    g.tb = blas::OP_N;
    g.m = as_int(OUT, "OUT");
    g.n = as_int(N, "N");
    g.k = as_int(IN, "IN");
    g.lda = g.ldb = std::max(1, g.k);
    g.ldc = std::max(1, g.m);
    g.compute = compute_type(c);
  }
  void run(const RunCtx& r) override {
    const CudaStream& s = stream_of(r);
    float* y = static_cast<float*>(r.out[0]);
    g.run(s, static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[0]), y);
    if (total == 0 || !(bias || bn || act)) return;
    auto in = [&](int i) { return static_cast<const float*>(r.in[i]); };
    linear_epilogue<<<blocks_for(total), kThreads, 0, s.stream>>>(
        y, total, OUT, bias ? in(2) : nullptr, bn ? in(bn_in) : nullptr, bn ? in(bn_in + 1) : nullptr,
        bn ? in(bn_in + 2) : nullptr, bn ? in(bn_in + 3) : nullptr, eps, act, slope, fa.p.kind, float(fa.p.a),
        float(fa.p.b));
    check_launch("linear_epilogue");
  }
};

// linear_grad_data (dy [N, OUT], w [OUT, IN]) -> dx [N, IN]
struct LinearGradData : Kernel {
  Gemm g;
  std::string impl() const override { return "cublas gemm"; }
  explicit LinearGradData(const KernelCtx& c) {
    const int64_t N = leading(c.in[0].shape), OUT = c.in[1].shape[0], IN = c.in[1].shape[1];
    g.ta = blas::OP_N;
    g.tb = blas::OP_N;
    g.m = as_int(IN, "IN");
    g.n = as_int(N, "N");
    g.k = as_int(OUT, "OUT");
    g.lda = std::max(1, g.m);
    g.ldb = std::max(1, g.k);
    g.ldc = std::max(1, g.m);
    g.compute = compute_type(c);
  }
  void run(const RunCtx& r) override {
    g.run(stream_of(r), static_cast<const float*>(r.in[1]), static_cast<const float*>(r.in[0]),
          static_cast<float*>(r.out[0]));
  }
};

// linear_grad_weights (dy [N, OUT], x [N, IN]; has_bias) -> dw [OUT, IN] (+ db [OUT])
struct LinearGradWeights : Kernel {
  Gemm g;
  int64_t N = 0, OUT = 0;
  bool has_bias = false;
  std::string impl() const override { return has_bias ? "cublas gemm + cuda column sum" : "cublas gemm"; }
  explicit LinearGradWeights(const KernelCtx& c) : has_bias(c.out.size() == 2) {
    N = leading(c.in[0].shape);
    OUT = c.out[0].shape[0];
    const int64_t IN = c.out[0].shape[1];
    g.ta = blas::OP_N;
    g.tb = blas::OP_T;
    g.m = as_int(IN, "IN");
    g.n = as_int(OUT, "OUT");
    g.k = as_int(N, "N");
    g.lda = std::max(1, g.m);
    g.ldb = std::max(1, g.n);
    g.ldc = std::max(1, g.m);
    g.compute = compute_type(c);
  }
  void run(const RunCtx& r) override {
    const CudaStream& s = stream_of(r);
    const float* dy = static_cast<const float*>(r.in[0]);
    g.run(s, static_cast<const float*>(r.in[1]), dy, static_cast<float*>(r.out[0]));
    if (!has_bias || OUT == 0) return;
    const int64_t col_blocks = (OUT + 31) / 32;
    const unsigned grid = unsigned(std::min<int64_t>(col_blocks, 65535LL * 32));
    column_sum<<<grid, dim3(32, kRowLanes), 0, s.stream>>>(dy, static_cast<float*>(r.out[1]), N, OUT);
    check_launch("column_sum (linear bias gradient)");
  }
};

std::unique_ptr<Kernel> make_fwd(const KernelCtx& c) { return std::make_unique<LinearFwd>(c); }

KernelRegistrar reg_linear("cuda", "linear", make_fwd);
KernelRegistrar reg_fused_linear("cuda", "fused_linear", make_fwd);
KernelRegistrar reg_linear_gd("cuda", "linear_grad_data", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<LinearGradData>(c);
});
KernelRegistrar reg_linear_gw("cuda", "linear_grad_weights", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<LinearGradWeights>(c);
});

}  // namespace
}  // namespace cnn::cuda
