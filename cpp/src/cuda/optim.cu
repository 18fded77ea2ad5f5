// The cuda backend's optimizer updates and the session guard's reductions (declared in cuda/optim.hpp).
//
// Arithmetic: the same as host/optim.cpp, operation by operation. The scalar coefficients are computed on the
// host in double and rounded to float once (make_sgd / make_adam below mirror the host's), then passed as kernel
// arguments; every element operation is a separately rounded IEEE single-precision operation through the _rn
// intrinsics (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), which nvcc never contracts into an FMA,
// in the host's order. So the GPU update equals the CPU update bit for bit (as long as the build neither flushes
// denormals (-ftz=true) nor uses --use_fast_math, which both the host build and this one avoid).
//
// Reductions: grid-stride loops over 64-bit indices, a per-thread value, a block reduction (warp shuffles, then
// shared memory), then one atomic per block into CudaStream::small_dev: atomicMax on the bit pattern of a
// non-negative float (non-negative floats order like their unsigned bits; a NaN key 0x7fc00000 orders above
// inf), atomicMin on an unsigned long long index. The accumulators are reset by cudaMemsetAsync before the
// kernel and copied back through the pinned CudaStream::small_host on s.stream, then the stream is synchronized.
//
// NaN in the maxima: absmax ignores NaNs in its maximum (like the host's std::max loop) and reports them through
// *finite; the update's maxima (OptimMaxima) propagate a NaN (the maximum becomes NaN), so the session's next
// bound check fails and its dry run names the element (the host's maxima are path-dependent there).
#include "cuda/optim.hpp"

#include "core/optim_coeffs.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace cnn::cuda {
namespace {

// ---------------------------------------------------------------- validation (as host/optim.cpp)

using namespace optim_detail;  // argument checks and coefficients: core/optim_coeffs.hpp, as the host's

// ------------------------------------------------------------ element math (as sgd_elem / adam_elem)

// The new parameter and momentum of one element. bo: the old momentum (not read when k.mom != 2).
__device__ __forceinline__ void sgd_math(float pv, float g, float bo, const SgdK& k, float& pn, float& bn) {
  float d = g;
  if (k.has_wd) d = __fadd_rn(d, __fmul_rn(k.wd, pv));
  bn = 0.f;
  if (k.mom != 0) {
    const float b = (k.mom == 1) ? d : __fadd_rn(__fmul_rn(k.mu, bo), __fmul_rn(k.omd, d));
    bn = b;
    d = k.nesterov ? __fadd_rn(d, __fmul_rn(k.mu, b)) : b;
  }
  pn = __fsub_rn(pv, __fmul_rn(k.lr, d));
}

// The new parameter, m, v and s (= v, or the new vmax with amsgrad) of one element. xo: the old vmax (read only
// with amsgrad).
__device__ __forceinline__ void adam_math(float pv, float g, float mo, float vo, float xo, const AdamK& k, float& pn,
                                          float& mn, float& vn, float& s) {
  if (k.has_decay) pv = __fmul_rn(pv, k.decay);
  float d = g;
  if (k.has_wd) d = __fadd_rn(d, __fmul_rn(k.wd, pv));
  mn = k.lerp_lo ? __fadd_rn(mo, __fmul_rn(k.w1, __fsub_rn(d, mo))) : __fsub_rn(d, __fmul_rn(__fsub_rn(d, mo), k.omw1));
  vn = __fadd_rn(__fmul_rn(k.b2, vo), __fmul_rn(__fmul_rn(k.omb2, d), d));
  s = vn;
  if (k.ams) s = (xo > vn) ? xo : vn;  // same NaN behaviour as the host's (v)maxps(vmax, v)
  const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(s), k.bc2s), k.eps);
  pn = __fsub_rn(pv, __fdiv_rn(__fmul_rn(k.step_size, mn), den));
}

// ------------------------------------------------------------ reductions

// Max key of a value expected >= 0: its bits when > 0, 0 for (+-)0 and negatives, the canonical NaN's bits
// (above inf) for a NaN.
__device__ __forceinline__ unsigned max_key(float x) {
  return x > 0.f ? __float_as_uint(x) : (x != x ? 0x7fc00000u : 0u);
}

__device__ __forceinline__ unsigned warp_max(unsigned v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ unsigned long long warp_min(unsigned long long v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// Block maximum of v[0..K) (every thread of the block calls it), then atomicMax into out[0..K) by thread 0.
// blockDim.x must be a multiple of 32 (kThreads).
template <int K>
__device__ void block_max_atomic(unsigned (&v)[K], unsigned* out) {
  __shared__ unsigned sh[K][32];
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < K; ++j) v[j] = warp_max(v[j]);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < K; ++j) sh[j][warp] = v[j];
  }
  __syncthreads();
  if (warp == 0) {
    const unsigned nw = blockDim.x >> 5;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const unsigned x = warp_max(lane < nw ? sh[j][lane] : 0u);
      if (lane == 0 && x != 0u) atomicMax(out + j, x);
    }
  }
}

// Block minimum of v, then atomicMin into *out by thread 0.
__device__ void block_min_atomic(unsigned long long v, unsigned long long* out) {
  __shared__ unsigned long long sh[32];
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  v = warp_min(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const unsigned nw = blockDim.x >> 5;
    const unsigned long long x = warp_min(lane < nw ? sh[lane] : ~0ull);
    if (lane == 0 && x != ~0ull) atomicMin(out, x);
  }
}

__device__ __forceinline__ size_t first_index() { return size_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t grid_stride() { return size_t(gridDim.x) * blockDim.x; }

// ------------------------------------------------------------ kernels

// out (with kMax): max |p|, max |momentum|, 0 (max_key bits).
template <bool kMax>
__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf, size_t n,
                           SgdK k, unsigned* out) {
  unsigned mx[3] = {0u, 0u, 0u};
  for (size_t i = first_index(); i < n; i += grid_stride()) {
    float pn, bn;
    sgd_math(p[i], g[i], k.mom == 2 ? buf[i] : 0.f, k, pn, bn);
    if (k.mom != 0) buf[i] = bn;
    p[i] = pn;
    if (kMax) {
      mx[0] = max(mx[0], max_key(fabsf(pn)));
      mx[1] = max(mx[1], max_key(fabsf(bn)));
    }
  }
  if (kMax) block_max_atomic<3>(mx, out);
}

// out (with kMax): max |p|, max |m|, max v (max vmax with amsgrad) (max_key bits).
template <bool kMax>
__global__ void adam_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, float* __restrict__ vmax, size_t n, AdamK k, unsigned* out) {
  unsigned mx[3] = {0u, 0u, 0u};
  for (size_t i = first_index(); i < n; i += grid_stride()) {
    float pn, mn, vn, s;
    adam_math(p[i], g[i], m[i], v[i], k.ams ? vmax[i] : 0.f, k, pn, mn, vn, s);
    m[i] = mn;
    v[i] = vn;
    if (k.ams) vmax[i] = s;
    p[i] = pn;
    if (kMax) {
      mx[0] = max(mx[0], max_key(fabsf(pn)));
      mx[1] = max(mx[1], max_key(fabsf(mn)));
      mx[2] = max(mx[2], max_key(s));
    }
  }
  if (kMax) block_max_atomic<3>(mx, out);
}

// out: max |x| over the non-NaN elements (bits), 1 if some element is not finite.
__global__ void absmax_kernel(const float* __restrict__ x, size_t n, unsigned* out) {
  unsigned r[2] = {0u, 0u};
  for (size_t i = first_index(); i < n; i += grid_stride()) {
    const float a = fabsf(x[i]);
    if (a == a) r[0] = max(r[0], __float_as_uint(a));
    if (!isfinite(a)) r[1] = 1u;
  }
  block_max_atomic<2>(r, out);
}

// The indices a thread visits increase, so its first hit is its smallest: it stops there.
__global__ void first_non_finite_kernel(const float* __restrict__ x, size_t n, unsigned long long* out) {
  unsigned long long r = ~0ull;
  for (size_t i = first_index(); i < n; i += grid_stride())
    if (!isfinite(x[i])) {
      r = i;
      break;
    }
  block_min_atomic(r, out);
}

__global__ void sgd_dry_kernel(const float* __restrict__ p, const float* __restrict__ g, const float* __restrict__ buf,
                               size_t n, SgdK k, unsigned long long* out) {
  unsigned long long r = ~0ull;
  for (size_t i = first_index(); i < n; i += grid_stride()) {
    float pn, bn;
    sgd_math(p[i], g[i], k.mom == 2 ? buf[i] : 0.f, k, pn, bn);
    if (!isfinite(pn) || !isfinite(bn)) {
      r = i;
      break;
    }
  }
  block_min_atomic(r, out);
}

__global__ void adam_dry_kernel(const float* __restrict__ p, const float* __restrict__ g, const float* __restrict__ m,
                                const float* __restrict__ v, const float* __restrict__ vmax, size_t n, AdamK k,
                                unsigned long long* out) {
  unsigned long long r = ~0ull;
  for (size_t i = first_index(); i < n; i += grid_stride()) {
    float pn, mn, vn, s;
    adam_math(p[i], g[i], m[i], v[i], k.ams ? vmax[i] : 0.f, k, pn, mn, vn, s);
    // As the host: vmax is checked only with amsgrad (then s is the new vmax).
    if (!isfinite(pn) || !isfinite(mn) || !isfinite(vn) || (k.ams && !isfinite(s))) {
      r = i;
      break;
    }
  }
  block_min_atomic(r, out);
}

// ------------------------------------------------------------ host side

// Enough blocks to fill the GPU for a memory-bound grid-stride loop; fewer atomics than one block per 256 elements.
unsigned grid_for(size_t n, const CudaStream& s) {
  const int sms = s.prop.multiProcessorCount > 0 ? s.prop.multiProcessorCount : 132;
  return std::min(blocks_for(int64_t(std::min<size_t>(n, size_t(INT64_MAX)))), unsigned(sms) * 32u);
}

void reset_small(CudaStream& s, int value, size_t bytes) {
  check(cudaMemsetAsync(s.small_dev, value, bytes, s.stream), "cudaMemsetAsync (optimizer reduction)");
}

// Copies the first `bytes` of small_dev to small_host on s.stream and waits for it.
void fetch_small(CudaStream& s, size_t bytes) {
  check(cudaMemcpyAsync(s.small_host, s.small_dev, bytes, cudaMemcpyDeviceToHost, s.stream),
        "cudaMemcpyAsync (optimizer reduction)");
  check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize (optimizer reduction)");
}

float bits_to_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

void read_maxima(CudaStream& s, OptimMaxima* maxima) {
  fetch_small(s, 3 * sizeof(unsigned));
  unsigned r[3];
  std::memcpy(r, s.small_host, sizeof r);
  maxima->p = bits_to_float(r[0]);
  maxima->m = bits_to_float(r[1]);
  maxima->v = bits_to_float(r[2]);
}

long read_index(CudaStream& s) {
  fetch_small(s, sizeof(unsigned long long));
  unsigned long long r;
  std::memcpy(&r, s.small_host, sizeof r);
  return r == ~0ull ? -1L : long(r);
}

}  // namespace

float absmax(const float* x, size_t n, bool* finite, CudaStream& s) {
  if (finite) *finite = true;
  if (n == 0) return 0.f;
  unsigned* acc = static_cast<unsigned*>(s.small_dev);
  reset_small(s, 0, 2 * sizeof(unsigned));
  absmax_kernel<<<grid_for(n, s), kThreads, 0, s.stream>>>(x, n, acc);
  check_launch("absmax_kernel");
  fetch_small(s, 2 * sizeof(unsigned));
  unsigned r[2];
  std::memcpy(r, s.small_host, sizeof r);
  if (finite) *finite = r[1] == 0u;
  return bits_to_float(r[0]);
}

int64_t first_non_finite(const float* x, size_t n, CudaStream& s) {
  if (n == 0) return -1;
  reset_small(s, 0xFF, sizeof(unsigned long long));
  first_non_finite_kernel<<<grid_for(n, s), kThreads, 0, s.stream>>>(x, n,
                                                                     static_cast<unsigned long long*>(s.small_dev));
  check_launch("first_non_finite_kernel");
  return int64_t(read_index(s));
}

void sgd_update(float* p, const float* g, float* momentum, size_t n, const SGDConfig& c, long step, OptimMaxima* maxima,
                CudaStream& s) {
  check_sgd(p, g, momentum, n, c, step);
  if (maxima) *maxima = OptimMaxima{};
  if (n == 0) return;
  const SgdK k = make_sgd(c, step);
  float* buf = k.mom ? momentum : nullptr;
  const unsigned blocks = grid_for(n, s);
  if (maxima) {
    unsigned* acc = static_cast<unsigned*>(s.small_dev);
    reset_small(s, 0, 3 * sizeof(unsigned));
    sgd_kernel<true><<<blocks, kThreads, 0, s.stream>>>(p, g, buf, n, k, acc);
    check_launch("sgd_kernel");
    read_maxima(s, maxima);
  } else {
    sgd_kernel<false><<<blocks, kThreads, 0, s.stream>>>(p, g, buf, n, k, nullptr);
    check_launch("sgd_kernel");
  }
}

void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const AdamConfig& c, long step,
                 OptimMaxima* maxima, CudaStream& s) {
  check_adam(p, g, m, v, vmax, n, c, step);
  if (maxima) *maxima = OptimMaxima{};
  if (n == 0) return;
  const AdamK k = make_adam(c, step);
  float* vx = k.ams ? vmax : nullptr;
  const unsigned blocks = grid_for(n, s);
  if (maxima) {
    unsigned* acc = static_cast<unsigned*>(s.small_dev);
    reset_small(s, 0, 3 * sizeof(unsigned));
    adam_kernel<true><<<blocks, kThreads, 0, s.stream>>>(p, g, m, v, vx, n, k, acc);
    check_launch("adam_kernel");
    read_maxima(s, maxima);
  } else {
    adam_kernel<false><<<blocks, kThreads, 0, s.stream>>>(p, g, m, v, vx, n, k, nullptr);
    check_launch("adam_kernel");
  }
}

long sgd_first_non_finite(const float* p, const float* g, const float* momentum, size_t n, const SGDConfig& c,
                          long step, CudaStream& s) {
  check_sgd(p, g, momentum, n, c, step);
  if (n == 0) return -1;
  const SgdK k = make_sgd(c, step);
  reset_small(s, 0xFF, sizeof(unsigned long long));
  sgd_dry_kernel<<<grid_for(n, s), kThreads, 0, s.stream>>>(p, g, k.mom ? momentum : nullptr, n, k,
                                                            static_cast<unsigned long long*>(s.small_dev));
  check_launch("sgd_dry_kernel");
  return read_index(s);
}

long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax, size_t n,
                           const AdamConfig& c, long step, CudaStream& s) {
  check_adam(p, g, m, v, vmax, n, c, step);
  if (n == 0) return -1;
  const AdamK k = make_adam(c, step);
  reset_small(s, 0xFF, sizeof(unsigned long long));
  adam_dry_kernel<<<grid_for(n, s), kThreads, 0, s.stream>>>(p, g, m, v, k.ams ? vmax : nullptr, n, k,
                                                             static_cast<unsigned long long*>(s.small_dev));
  check_launch("adam_dry_kernel");
  return read_index(s);
}

}  // namespace cnn::cuda
