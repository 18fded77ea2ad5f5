// Native max pooling of float32 planes (one (n, c) image of a plain NCHW tensor), for cpu/pool.cpp's kernels.
// Semantics are PyTorch's: y is the first maximum of the window in row-major order, a NaN taking over wherever it
// appears (`v > max || isnan(v)`); padding, and the extra right padding of ceil_mode, is skipped (never chosen).
// The workspace holds, per output, the flat index h * W + w of the chosen input element in its plane (int32).
// The backward writes dx = 0 + the sum of dy over the outputs that chose each element, in (oh, ow) order.
//
// Three implementations, all giving the same bits: portable loops (any window; the compiler vectorizes the
// sweep along a row), AVX-512F loops for any window, and AVX-512F loops for 2x2 stride-2 windows without padding
// (the "fast path": full and ceil_mode-partial windows in one vector loop; its backward writes each dx element
// once, with no zero pass). The AVX-512 code sits in function-level target regions (the translation unit needs no
// -m flags) and runs where the CPU has AVX-512F and CNNNATIVE_POOL_ISA is not 0 (a test hook, as
// CNNNATIVE_REDUCE_ISA; read at each avx512() call, i.e. at kernel creation). Nothing here allocates or threads.
#pragma once
#include <cstdint>

namespace cnn {
namespace cpu {
namespace maxpool {

struct Window {
  int64_t kh, kw, sh, sw, ph, pw;  // dilation 1
};

// The AVX-512F loops may run (the CPU has AVX-512F, CNNNATIVE_POOL_ISA is unset or not 0).
bool avx512();
// 2x2 windows, stride 2, no padding: the fast path's geometry.
inline bool is_2x2(const Window& g) {
  return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

// `planes` planes one after the other: x [planes, H, W] -> y [planes, OH, OW] and, unless ws is null, the workspace
// [planes, OH, OW]. OH, OW: PyTorch's output sizes for g (ceil_mode or not). avx512: use the AVX-512 loops (only
// where avx512() said so). The result of a plane does not depend on the others or on how the planes are split.
void forward(const float* x, float* y, int32_t* ws, int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
             const Window& g, bool avx512);
// dy, ws [planes, OH, OW] -> dx [planes, H, W] (every element written).
void backward(const float* dy, const int32_t* ws, float* dx, int64_t planes, int64_t H, int64_t W, int64_t OH,
              int64_t OW, const Window& g, bool avx512);

}  // namespace maxpool
}  // namespace cpu
}  // namespace cnn
