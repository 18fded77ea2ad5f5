// Winograd F(4x4, 3x3) convolution for float32 activations in the nChw16c layout (AVX-512). A 3x3, stride-1
// convolution computes each 4x4 output tile from a 6x6 input patch with 36 multiplies per (input, output)
// channel pair instead of 144: V = B^T d B (input transform), M[xi] = V[xi] U[xi] for the 36 points xi
// (batched GEMMs over tiles x channels, a oneDNN matmul), Y = A^T M A (output transform), U = G g G^T the
// transformed 3x3 filter. The backward-data pass of such a convolution is itself one (dy convolved with the
// flipped, transposed filter, padding 2 - pad), so the same class runs both.
//
// Many tiles (large images): work is split into chunks of tiles; each thread transforms a chunk into its own V,
// runs the 36 GEMMs of the chunk single-threaded (oneDNN runs sequentially inside an OpenMP region) and
// transforms the result out, so a chunk's V and M stay in that core's cache. Few tiles and many channels (U,
// 36 IC OC floats, would be streamed once per chunk): all tiles are transformed first, one batched matmul
// runs on all threads, then the output transform ("whole" mode; U is read once). Every primitive, memory
// object and argument map is made in the constructor; run() only swaps data handles and allocates nothing.
#pragma once
#include <dnnl.hpp>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace cnn {
namespace cpu {
namespace wino {

// y[N][OC][OH][OW] = conv(x[N][IC][H][W], w 3x3), stride 1, zero padding pad_h/pad_w (0..2).
struct Geom {
  int64_t N = 0, IC = 0, OC = 0, H = 0, W = 0, pad_h = 0, pad_w = 0;
  int64_t OH() const { return H + 2 * pad_h - 2; }
  int64_t OW() const { return W + 2 * pad_w - 2; }
};

bool available();  // the CPU has AVX-512F

// What the output transform adds: y = act(A^T M A + bias [+ y_before]).
struct Epilogue {
  const float* bias = nullptr;  // [OC] or null
  bool sum = false;             // add the value y holds before the run (a residual)
  int act = 0;                  // 0 none, 1 relu, 2 leaky_relu
  float alpha = 0.f;            // leaky_relu slope
};

class Conv {
 public:
  Conv(const Geom& g, int max_threads);
  Conv(const Conv&) = delete;
  Conv& operator=(const Conv&) = delete;
  // Scratch layout: [U (36*IC*OC floats) | per thread: V chunk, M chunk, matmul scratchpad].
  size_t scratch_bytes() const { return total_; }
  size_t u_bytes() const { return u_bytes_; }
  // Writes U into u (u_bytes() bytes; the start of scratch, or a persistent region). w is the float32 [OC][IC][3][3]
  // filter of this convolution; with flip_transpose it is the [IC][OC][3][3] filter of the forward convolution
  // whose backward-data pass this is (taps flipped). scale: optional per-OC factor folded in (BN).
  void transform_weights(const float* w, bool flip_transpose, const float* scale, float* u) const;
  // x: nChw16c [N][IC/16][H][W][16]; y: nChw16c [N][OC/16][OH][OW][16]; u: transformed weights.
  void run(const float* x, float* y, const float* u, const Epilogue& ep, char* scratch) const;

 private:
  struct Thread {
    dnnl::memory src, wei, dst, pad, src_t, dst_t, pad_t;
    std::unordered_map<int, dnnl::memory> args, args_t;
  };
  Geom g_;
  int64_t TH_ = 0, TW_ = 0, T_ = 0, Tc_ = 0, tail_ = 0, nchunks_ = 0;
  int nthr_ = 1;
  bool whole_ = false;  // one matmul over all tiles (run by oneDNN on all threads) instead of per-thread chunks
  size_t u_bytes_ = 0, v_bytes_ = 0, m_bytes_ = 0, pad_bytes_ = 0, per_thread_ = 0, total_ = 0;
  dnnl::matmul mm_, mm_tail_;
  mutable std::vector<Thread> th_;  // per thread (whole mode: one): memory handles are swapped in run()
};

// The weight gradient of such a convolution: dU[xi] = sum over tiles of V[xi]^T D[xi] with D = A dy A^T (the 4x4
// dy tile), dw = G^T dU G; by bilinearity this is the transpose of the forward's algebra. Three work splits,
// picked in the constructor: per-thread tile chunks each summing into a private dU (small IC OC), all tiles
// transformed once then threads splitting (OC x IC) output blocks with K = all tiles (wide layers whose
// transformed tiles fit 32 MiB), or threads splitting the 36 points of a shared dU per chunk. Deterministic for
// a given thread count; run() allocates nothing (pre-built argument arrays, the C execute call).
class BwdWeights {
 public:
  BwdWeights(const Geom& g, int max_threads);
  ~BwdWeights();
  BwdWeights(const BwdWeights&) = delete;
  BwdWeights& operator=(const BwdWeights&) = delete;
  size_t scratch_bytes() const;
  // x: nChw16c [N][IC/16][H][W][16]; dy: nChw16c [N][OC/16][OH][OW][16]; dw: plain [OC][IC][3][3] and db: [OC]
  // (or null), both overwritten; scratch: scratch_bytes() bytes, 64-byte aligned, contents undefined.
  void run(const float* x, const float* dy, float* dw, float* db, char* scratch) const;
  int mode() const;       // 0 tile split, 1 point split, 2 output-block split
  int64_t chunk() const;  // tiles per GEMM (K)
  const char* impl_info() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace wino
}  // namespace cpu
}  // namespace cnn
