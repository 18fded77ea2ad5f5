// CUDA kernels of the shape op family (ops/shape_ops.cpp), float32, plain layout, one thread per element with
// grid-stride loops, over the geometry of ops/shape_ops.hpp (passed by value): transpose / slice gather,
// slice_grad zero-fills then scatters (slices never overlap), pad_nd gathers, pad_nd_grad sums for each dx
// element the dy elements that read it in the reference's order, matmul computes each output element as a
// k-ascending dot product and, with sum_to reducing batch dims, sums the batch entries that map to it in
// ascending order (deterministic, no atomics). Simple rather than fast: cuBLAS batched GEMMs can come later.
#include "cuda/common.hpp"
#include "ops/shape_ops_geom.hpp"

namespace cnn::cuda {
namespace {

using namespace cnn::shape_ops;

void require_f32(const KernelCtx& c) {
  for (const auto* v : {&c.in, &c.out})
    for (const cnn::TensorDesc& d : *v)
      if (is_float(d.dtype) && d.dtype != DType::f32)
        fail("op '" + c.node.op + "' (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(*v));
}

__global__ void gather_kernel(float* __restrict__ y, const float* __restrict__ x, Strided s, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[s.offset(i)];
}

__global__ void zero_kernel(float* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = 0.f;
}

__global__ void scatter_kernel(float* __restrict__ dx, const float* __restrict__ dy, Strided s, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[s.offset(i)] = dy[i];
}

__global__ void pad_kernel(float* __restrict__ y, const float* __restrict__ x, PadGeom g, float value, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = pad_src_offset(g, i);
    y[i] = s < 0 ? value : x[s];
  }
}

__global__ void pad_grad_kernel(float* __restrict__ dx, const float* __restrict__ dy, PadGeom g, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = pad_grad_at(g, i, dy);
}

// One thread per target element: the sum over the full batch entries that map to it (ascending), each a
// k-ascending dot product.
__global__ void matmul_kernel(float* __restrict__ y, const float* __restrict__ a, const float* __restrict__ b,
                              MatmulGeom g, int64_t n) {
  const int64_t mn = g.M * g.N;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / mn, e = i % mn, m = e / g.N, col = e % g.N;
    const int64_t per = g.nbatch / g.tbatch;
    float acc = 0.f;
    for (int64_t j = 0; j < per; ++j) {
      int64_t ao, bo, to;
      g.offsets(g.full_index(t, j), ao, bo, to);
      float s = 0.f;
      for (int64_t k = 0; k < g.K; ++k) s += a[ao + m * g.a_m + k * g.a_k] * b[bo + k * g.b_k + col * g.b_n];
      acc += s;
    }
    y[i] = acc;
  }
}

enum class Kind { transpose, slice, slice_grad, pad, pad_grad };

struct Movement : Kernel {
  Kind kind;
  Strided s;
  PadGeom g;
  float value = 0.f;
  int64_t n = 0, nx = 0;  // output elements; slice_grad: dy's elements (n) and dx's (nx)
  Movement(const KernelCtx& c, Kind k) : kind(k) {
    require_f32(c);
    n = numel(c.out[0].shape);
    switch (k) {
      case Kind::transpose: s = transpose_geom(c.node, c.in[0].shape); break;
      case Kind::slice: s = slice_geom(c.node, c.in[0].shape); break;
      case Kind::slice_grad:
        s = slice_geom(c.node, c.out[0].shape);
        nx = n, n = numel(c.in[0].shape);
        break;
      case Kind::pad:
        g = pad_geom(c.node, c.in[0].shape);
        value = float(c.node.attrs.f("value", 0.0));
        break;
      case Kind::pad_grad: g = pad_geom(c.node, c.out[0].shape); break;
    }
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t st = stream_of(r).stream;
    float* out = static_cast<float*>(r.out[0]);
    const float* in = static_cast<const float*>(r.in[0]);
    switch (kind) {
      case Kind::transpose:
      case Kind::slice:
        gather_kernel<<<blocks_for(n), kThreads, 0, st>>>(out, in, s, n);
        check_launch("gather_kernel");
        break;
      case Kind::slice_grad:
        zero_kernel<<<blocks_for(nx), kThreads, 0, st>>>(out, nx);
        check_launch("zero_kernel");
        scatter_kernel<<<blocks_for(n), kThreads, 0, st>>>(out, in, s, n);
        check_launch("scatter_kernel");
        break;
      case Kind::pad:
        pad_kernel<<<blocks_for(n), kThreads, 0, st>>>(out, in, g, value, n);
        check_launch("pad_nd pad_kernel");
        break;
      case Kind::pad_grad:
        pad_grad_kernel<<<blocks_for(n), kThreads, 0, st>>>(out, in, g, n);
        check_launch("pad_nd pad_grad_kernel");
        break;
    }
  }
};

struct Matmul : Kernel {
  MatmulGeom g;
  int64_t n = 0;
  explicit Matmul(const KernelCtx& c) {
    require_f32(c);
    Shape ys;
    g = matmul_geom(c.node, c.in[0].shape, c.in[1].shape, &ys);
    n = numel(ys);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t st = stream_of(r).stream;
    matmul_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[0]),
                                                      static_cast<const float*>(r.in[1]), g, n);
    check_launch("matmul_kernel");
  }
};

KernelFactory movement(Kind k) {
  return [k](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Movement>(c, k); };
}

KernelRegistrar reg_transpose("cuda", "transpose", movement(Kind::transpose));
KernelRegistrar reg_slice("cuda", "slice", movement(Kind::slice));
KernelRegistrar reg_slice_grad("cuda", "slice_grad", movement(Kind::slice_grad));
KernelRegistrar reg_pad_nd("cuda", "pad_nd", movement(Kind::pad));
KernelRegistrar reg_pad_nd_grad("cuda", "pad_nd_grad", movement(Kind::pad_grad));
KernelRegistrar reg_matmul("cuda", "matmul",
                           [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Matmul>(c); });

}  // namespace
}  // namespace cnn::cuda
