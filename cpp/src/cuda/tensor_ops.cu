// cuda kernels of the structural ops: add, concat, split, reshape, flatten, fill, pad, pad_grad,
// upsample_nearest2d, upsample_nearest2d_grad and reorder (plain to plain only). Own kernels (no library has
// them), one thread per output element in grid-stride loops, so every output is written completely and every
// gradient is a gather (no atomics, no zero-fill, deterministic). Index arithmetic runs in 32 bits when the
// tensor's element count allows it, else in 64. The same arithmetic as the ops' reference kernels
// (ops/basic.cpp, concat.cpp, pad.cpp, upsample.cpp): outputs match them bit for bit in float32.
// Views (reshape, flatten, reorder plain -> plain) are one cudaMemcpyAsync when the planner did not put the
// output over the input, nothing otherwise.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/common.hpp"

namespace cnn::cuda {
namespace {

// Every float tensor of the node must be float32 (the cuda backend computes in float32 only).
void require_f32(const KernelCtx& c) {
  for (const auto* v : {&c.in, &c.out})
    for (const cnn::TensorDesc& d : *v)
      if (is_float(d.dtype) && d.dtype != DType::f32)
        fail("op '" + c.node.op + "' (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(*v));
}

bool fits32(int64_t n) { return n < (int64_t(1) << 31); }

// Device-to-device copy on the session stream, skipped when the planner aliased the two buffers.
void copy_async(void* dst, const void* src, size_t bytes, const RunCtx& r) {
  if (dst == src || bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_of(r).stream), "cudaMemcpyAsync");
}

// ---- add ----

__global__ void add_kernel(float* z, const float* x, const float* y, int64_t n) {
  // z may alias x (in place): each element is read before it is written by the same thread.
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    z[i] = x[i] + y[i];
}

struct Add : Kernel {
  int64_t n;
  explicit Add(const KernelCtx& c) : n(numel(c.out[0].shape)) {
    require_f32(c);
    if (c.out[0].dtype != DType::f32)
      fail("add (node '" + c.node.name + "'): float32 tensors only, got " + descs_str(c.in));
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    if (n == 0) return;
    add_kernel<<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(
        static_cast<float*>(r.out[0]), static_cast<const float*>(r.in[0]), static_cast<const float*>(r.in[1]), n);
    check_launch("add_kernel");
  }
};

// ---- concat / split: piece k is [outer, len_k] inside the big tensor's rows of `row` elements at offset off_k ----

// big[o * row + off + j] <-> piece[o * len + j] for o < outer, j < len; to_big: concat, else split.
template <class I>
__global__ void piece_copy_kernel(float* __restrict__ big, float* __restrict__ piece, I outer, I len, I row, I off,
                                  bool to_big) {
  const I n = outer * len;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I o = i / len, j = i - o * len;
    const I b = o * row + off + j;
    if (to_big)
      big[b] = piece[i];
    else
      piece[i] = big[b];
  }
}

int64_t axis_of(const Node& n, const Shape& like) {
  const int64_t r = int64_t(like.size());
  int64_t a = n.attrs.i("axis", 1);
  if (a < 0) a += r;
  if (a < 0 || a >= r) fail("op '" + n.op + "' (node '" + n.name + "'): axis out of range for " + shape_str(like));
  return a;
}

struct ConcatSplit : Kernel {
  bool concat;
  int64_t outer = 1, row = 0;
  std::vector<int64_t> len;  // elements of one row of each piece
  ConcatSplit(const KernelCtx& c, bool is_concat) : concat(is_concat) {
    require_f32(c);
    const Shape& big = concat ? c.out[0].shape : c.in[0].shape;
    const std::vector<cnn::TensorDesc>& pieces = concat ? c.in : c.out;
    const int64_t axis = axis_of(c.node, big);
    int64_t inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= big[d];
    for (size_t d = size_t(axis) + 1; d < big.size(); ++d) inner *= big[d];
    row = big[axis] * inner;
    for (const cnn::TensorDesc& p : pieces) len.push_back(p.shape[axis] * inner);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t s = stream_of(r).stream;
    float* big = static_cast<float*>(concat ? r.out[0] : r.in[0]);
    int64_t off = 0;
    for (size_t k = 0; k < len.size(); ++k) {
      float* piece = static_cast<float*>(concat ? r.in[k] : r.out[k]);
      const int64_t n = outer * len[k];
      if (n > 0) {
        if (fits32(outer * row))
          piece_copy_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(big, piece, uint32_t(outer), uint32_t(len[k]),
                                                                         uint32_t(row), uint32_t(off), concat);
        else
          piece_copy_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(big, piece, outer, len[k], row, off, concat);
        check_launch(concat ? "concat piece_copy_kernel" : "split piece_copy_kernel");
      }
      off += len[k];
    }
  }
};

// ---- reshape / flatten / reorder (plain -> plain): the same bytes ----

struct ViewCopy : Kernel {
  size_t bytes;
  explicit ViewCopy(const KernelCtx& c) : bytes(c.in[0].bytes()) {}
  std::string impl() const override { return "cuda copy"; }
  void run(const RunCtx& r) override { copy_async(r.out[0], r.in[0], bytes, r); }
};

std::unique_ptr<Kernel> make_reorder(const KernelCtx& c) {
  const int64_t from = c.node.attrs.i("from", 0), to = c.node.attrs.i("to", 0);
  if (from != int64_t(Layout::plain) || to != int64_t(Layout::plain) || c.layout_in(0) != Layout::plain ||
      c.layout_out(0) != Layout::plain)
    fail("reorder (node '" + c.node.name + "') from layout " + std::to_string(from) + " to " + std::to_string(to) +
         ": the cuda backend has plain layouts only");
  require_f32(c);
  return std::make_unique<ViewCopy>(c);
}

// ---- fill ----

__global__ void fill_kernel(float* __restrict__ y, float v, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = v;
}

struct Fill : Kernel {
  int64_t n;
  float value;
  explicit Fill(const KernelCtx& c) : n(numel(c.out[0].shape)), value(float(c.node.attrs.f("value", 0.0))) {
    require_f32(c);
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    if (n == 0) return;
    fill_kernel<<<blocks_for(n), kThreads, 0, stream_of(r).stream>>>(static_cast<float*>(r.out[0]), value, n);
    check_launch("fill_kernel");
  }
};

// ---- pad (constant) / pad_grad (the crop) ----

// y [NC, OH, OW] <- x [NC, H, W] placed at (top, left), every other element v.
template <class I>
__global__ void pad_kernel(float* __restrict__ y, const float* __restrict__ x, I NC, I H, I W, I OH, I OW, I top,
                           I left, float v) {
  const I n = NC * OH * OW;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I ow = i % OW, t = i / OW, oh = t % OH, q = t / OH;
    // unsigned-safe: compare before subtracting
    float val = v;
    if (oh >= top && ow >= left) {
      const I h = oh - top, w = ow - left;
      if (h < H && w < W) val = x[(q * H + h) * W + w];
    }
    y[i] = val;
  }
}

// dx [NC, H, W] <- dy [NC, OH, OW] at (top + h, left + w).
template <class I>
__global__ void pad_grad_kernel(float* __restrict__ dx, const float* __restrict__ dy, I NC, I H, I W, I OH, I OW, I top,
                                I left) {
  const I n = NC * H * W;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I w = i % W, t = i / W, h = t % H, q = t / H;
    dx[i] = dy[(q * OH + h + top) * OW + w + left];
  }
}

std::vector<int64_t> pads_of(const Node& n) {
  std::vector<int64_t> p = n.attrs.is("pads", {});
  if (p.size() != 4) fail("pad (node '" + n.name + "'): attribute 'pads' must be [top, left, bottom, right]");
  return p;
}

struct Pad : Kernel {
  bool grad;
  int64_t NC, H, W, OH, OW, top, left;
  float value;
  Pad(const KernelCtx& c, bool is_grad) : grad(is_grad) {
    require_f32(c);
    const std::vector<int64_t> p = pads_of(c.node);
    const Shape& x = grad ? c.out[0].shape : c.in[0].shape;
    const Shape& y = grad ? c.in[0].shape : c.out[0].shape;
    NC = x[0] * x[1], H = x[2], W = x[3], OH = y[2], OW = y[3], top = p[0], left = p[1];
    value = float(c.node.attrs.f("value", 0.0));
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t s = stream_of(r).stream;
    float* out = static_cast<float*>(r.out[0]);
    const float* in = static_cast<const float*>(r.in[0]);
    const int64_t n = grad ? NC * H * W : NC * OH * OW;
    if (n == 0) return;
    const bool small = fits32(NC * OH * OW + top + left);  // the larger tensor (y / dy) bounds every index
    if (grad) {
      if (small)
        pad_grad_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(
            out, in, uint32_t(NC), uint32_t(H), uint32_t(W), uint32_t(OH), uint32_t(OW), uint32_t(top), uint32_t(left));
      else
        pad_grad_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, H, W, OH, OW, top, left);
      check_launch("pad_grad_kernel");
    } else {
      if (small)
        pad_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, uint32_t(NC), uint32_t(H), uint32_t(W),
                                                                uint32_t(OH), uint32_t(OW), uint32_t(top),
                                                                uint32_t(left), value);
      else
        pad_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, H, W, OH, OW, top, left, value);
      check_launch("pad_kernel");
    }
  }
};

// ---- upsample_nearest2d / upsample_nearest2d_grad ----

// y [NC, H*sh, W*sw] <- x [NC, H, W]: y[q, oh, ow] = x[q, oh / sh, ow / sw].
template <class I>
__global__ void upsample_kernel(float* __restrict__ y, const float* __restrict__ x, I NC, I H, I W, I sh, I sw) {
  const I OH = H * sh, OW = W * sw, n = NC * OH * OW;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I ow = i % OW, t = i / OW, oh = t % OH, q = t / OH;
    y[i] = x[(q * H + oh / sh) * W + ow / sw];
  }
}

// dx [NC, H, W] <- the sum of each sh x sw block of dy, in the reference's order (rows i, then columns j, float).
template <class I>
__global__ void upsample_grad_kernel(float* __restrict__ dx, const float* __restrict__ dy, I NC, I H, I W, I sh, I sw) {
  const I OH = H * sh, OW = W * sw, n = NC * H * W;
  for (I k = I(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += I(gridDim.x) * blockDim.x) {
    const I w = k % W, t = k / W, h = t % H, q = t / H;
    const float* base = dy + (q * OH + h * sh) * OW + w * sw;
    float acc = 0.f;
    for (I i = 0; i < sh; ++i)
      for (I j = 0; j < sw; ++j) acc += base[i * OW + j];
    dx[k] = acc;
  }
}

struct Upsample : Kernel {
  bool grad;
  int64_t NC, H, W, sh, sw;
  Upsample(const KernelCtx& c, bool is_grad) : grad(is_grad) {
    require_f32(c);
    std::vector<int64_t> s = c.node.attrs.is("scale", {});
    if (s.empty() || s.size() > 2 || s[0] < 1 || s.back() < 1)
      fail("upsample_nearest2d (node '" + c.node.name + "'): attribute 'scale' must be 1 or 2 integers >= 1");
    const Shape& x = grad ? c.out[0].shape : c.in[0].shape;
    NC = x[0] * x[1], H = x[2], W = x[3], sh = s[0], sw = s.back();
  }
  std::string impl() const override { return "cuda native"; }
  void run(const RunCtx& r) override {
    cudaStream_t s = stream_of(r).stream;
    float* out = static_cast<float*>(r.out[0]);
    const float* in = static_cast<const float*>(r.in[0]);
    const int64_t big = NC * H * sh * W * sw, n = grad ? NC * H * W : big;
    if (n == 0) return;
    const bool small = fits32(big);
    if (grad) {
      if (small)
        upsample_grad_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, uint32_t(NC), uint32_t(H),
                                                                          uint32_t(W), uint32_t(sh), uint32_t(sw));
      else
        upsample_grad_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, H, W, sh, sw);
      check_launch("upsample_grad_kernel");
    } else {
      if (small)
        upsample_kernel<uint32_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, uint32_t(NC), uint32_t(H), uint32_t(W),
                                                                     uint32_t(sh), uint32_t(sw));
      else
        upsample_kernel<int64_t><<<blocks_for(n), kThreads, 0, s>>>(out, in, NC, H, W, sh, sw);
      check_launch("upsample_kernel");
    }
  }
};

// ---- registration ----

KernelRegistrar reg_add("cuda", "add",
                        [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Add>(c); });
KernelRegistrar reg_concat("cuda", "concat", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<ConcatSplit>(c, true);
});
KernelRegistrar reg_split("cuda", "split", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<ConcatSplit>(c, false);
});
KernelRegistrar reg_reshape("cuda", "reshape", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  require_f32(c);
  return std::make_unique<ViewCopy>(c);
});
KernelRegistrar reg_flatten("cuda", "flatten", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  require_f32(c);
  return std::make_unique<ViewCopy>(c);
});
KernelRegistrar reg_reorder("cuda", "reorder", make_reorder);
KernelRegistrar reg_fill("cuda", "fill",
                         [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Fill>(c); });
KernelRegistrar reg_pad("cuda", "pad",
                        [](const KernelCtx& c) -> std::unique_ptr<Kernel> { return std::make_unique<Pad>(c, false); });
KernelRegistrar reg_pad_grad("cuda", "pad_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Pad>(c, true);
});
KernelRegistrar reg_up("cuda", "upsample_nearest2d", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Upsample>(c, false);
});
KernelRegistrar reg_up_grad("cuda", "upsample_nearest2d_grad", [](const KernelCtx& c) -> std::unique_ptr<Kernel> {
  return std::make_unique<Upsample>(c, true);
});

}  // namespace
}  // namespace cnn::cuda
