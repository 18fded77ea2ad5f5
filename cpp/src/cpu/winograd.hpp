// Winograd F(4x4, 3x3) convolution for float32 activations in the nChw16c layout (AVX-512). A 3x3, stride-1
// convolution computes each 4x4 output tile from a 6x6 input patch with 36 multiplies per (input, output)
// channel pair instead of 144: V = B^T d B (input transform), M[xi] = V[xi] U[xi] for the 36 points xi
// (batched GEMMs over tiles x channels, a oneDNN matmul), Y = A^T M A (output transform), U = G g G^T the
// transformed 3x3 filter. The backward-data pass of such a convolution is itself one (dy convolved with the
// flipped, transposed filter, padding 2 - pad), so the same class runs both.
//
// Many tiles (large images): U is transformed whole into scratch, then work is split into chunks of tiles; each
// thread transforms a chunk into its own V, runs the 36 GEMMs of the chunk single-threaded (oneDNN's
// parallel() runs sequentially inside an OpenMP region, as in the pinned 3.2) and transforms the result out,
// so a chunk's V and M stay in that core's cache. Few tiles and many channels (U, 36 IC OC floats, would be
// streamed once per chunk): all tiles are transformed first, then threads split the output channels in
// blocks of 32, each transforming its block of U (36 IC 32 floats, cache-sized) and running that block's 36
// GEMMs at once, then the output transform ("whole" mode: U never goes through memory). Primitives, memory
// objects and argument maps are made in the constructor (run() swaps data handles; oneDNN's execute call
// itself builds a small argument vector). Threads: at most the OpenMP thread count seen at construction.
//
// Deterministic mode (`deterministic`, KernelCtx::deterministic): the split (chunk size, chunk or whole mode) is
// planned for kDetThreads virtual threads instead of the real count, and the GEMMs are built for one thread (they
// run single-threaded anyway), so every output element is computed the same way whatever the thread count; the
// real threads then share the chunks or blocks of that fixed plan.
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

// Deterministic mode plans the forward split as if this many threads ran it (chunk counts are multiples of it).
constexpr int kDetThreads = 8;

// V = B^T d B of the 6x6 patch at (ih0, iw0) (zero outside the image) of one nChw16c image xn [CB][H][W][16],
// for every 16-channel block cb: point xi of block cb goes to v + (cb / per) * group_stride + (cb % per) * 16 +
// xi * xi_stride (per = CB for one channel-contiguous row; the weight gradient groups channels in blocks).
void input_transform(const float* xn, int64_t CB, int64_t H, int64_t W, int64_t ih0, int64_t iw0, float* v,
                     int64_t xi_stride, int64_t per, int64_t group_stride);

// How a Winograd kernel shares its work among threads (each kernel picks one at construction from the problem
// size; see Conv and BwdWeights).
enum class Split {
  tile_chunks,    // threads take chunks of tiles: Conv keeps a chunk's V and M in cache with U whole in scratch;
                  // BwdWeights sums each thread's chunks into a private dU, the copies summed at the end
  points,         // BwdWeights only: per shared chunk of tiles, threads split the 36 transform points
  output_blocks,  // all tiles transformed first, then threads split output blocks (Conv's "whole" mode: blocks of
                  // output channels, each thread transforming its block of U; BwdWeights: (OC x IC) blocks of dU
                  // with K = all tiles)
};
const char* split_name(Split s);  // "tile-chunks", "points", "output-blocks"

// What the output transform adds: y = act(A^T M A + bias [+ y_before]).
struct Epilogue {
  const float* bias = nullptr;  // [OC] or null
  bool sum = false;             // add the value y holds before the run (a residual)
  int act = 0;                  // 0 none, 1 relu, 2 leaky_relu
  float alpha = 0.f;            // leaky_relu slope
};

class Conv {
 public:
  // How a convolution would be split: tiles, tiles per chunk, chunks, whole mode.
  struct Plan {
    int64_t T = 0, Tc = 0, nchunks = 0;
    bool whole = false;
  };
  static Plan plan(const Geom& g, int max_threads, bool deterministic = false);
  // Whether the Winograd path is worth taking: false when whole mode would need more than 64 MiB of
  // transformed tiles (e.g. 512-channel layers at batch 256; chunks would re-read U per chunk instead).
  static bool worthwhile(const Geom& g, int max_threads, bool deterministic = false);
  Conv(const Geom& g, int max_threads, bool deterministic = false);
  Conv(const Conv&) = delete;
  Conv& operator=(const Conv&) = delete;
  // Scratch: chunk mode [U | per thread: V chunk, M chunk, matmul scratchpad]; whole mode [V | M | per
  // thread: U block, matmul scratchpad].
  size_t scratch_bytes() const { return total_; }
  Split split() const { return whole_ ? Split::output_blocks : Split::tile_chunks; }
  bool deterministic() const { return det_; }
  // x: nChw16c [N][IC/16][H][W][16]; y: nChw16c [N][OC/16][OH][OW][16]. w: the float32 [OC][IC][3][3] filter of
  // this convolution, or with flip_transpose the [IC][OC][3][3] filter of the forward convolution whose
  // backward-data pass this is (taps flipped). scale: optional per-OC factor folded into w (BN).
  void run(const float* x, float* y, const float* w, bool flip_transpose, const float* scale, const Epilogue& ep,
           char* scratch) const;

 private:
  // U[xi][ic][o] for output channels [ob0 * 16, ob0 * 16 + nob * 16), o counted from ob0 * 16, row length ld
  void transform_weights(const float* w, bool flip_transpose, const float* scale, int64_t ob0, int64_t nob, int64_t ld,
                         float* u) const;
  struct Thread {
    dnnl::memory src, wei, dst, pad, src_t, dst_t, pad_t;
    std::unordered_map<int, dnnl::memory> args, args_t;
  };
  Geom g_;
  int64_t TH_ = 0, TW_ = 0, T_ = 0, Tc_ = 0, tail_ = 0, nchunks_ = 0;
  int nthr_ = 1;
  bool det_ = false;
  bool whole_ = false;  // all tiles at once, threads splitting the output channels in blocks of nb_
  int64_t nb_ = 16;
  size_t u_bytes_ = 0, v_bytes_ = 0, m_bytes_ = 0, pad_bytes_ = 0, per_thread_ = 0, shared_ = 0, total_ = 0;
  dnnl::matmul mm_, mm_tail_;
  mutable std::vector<Thread> th_;  // per thread (whole mode: one): memory handles are swapped in run()
};

// The weight gradient of such a convolution: dU[xi] = sum over tiles of V[xi]^T D[xi] with D = A dy A^T (the 4x4
// dy tile), dw = G^T dU G; by bilinearity this is the transpose of the forward's algebra. Three work splits,
// picked in the constructor: per-thread tile chunks each summing into a private dU (small IC OC), all tiles
// transformed once then threads splitting (OC x IC) output blocks with K = all tiles (wide layers whose
// transformed tiles fit 32 MiB), or threads splitting the 36 points of a shared dU per chunk. Deterministic for
// a given thread count; run() makes no buffers (working memory is the session's scratch; oneDNN's execute
// call builds a small argument list). Threads: at most the OpenMP thread count seen at construction.
// `deterministic`: independent of the thread count too (the split and the partial sums follow the problem
// alone; see winograd_bwd_weights.cpp).
class BwdWeights {
 public:
  BwdWeights(const Geom& g, int max_threads, bool deterministic = false);
  ~BwdWeights();
  BwdWeights(const BwdWeights&) = delete;
  BwdWeights& operator=(const BwdWeights&) = delete;
  size_t scratch_bytes() const;
  // x: nChw16c [N][IC/16][H][W][16]; dy: nChw16c [N][OC/16][OH][OW][16]; dw: plain [OC][IC][3][3] and db: [OC]
  // (or null), both overwritten; scratch: scratch_bytes() bytes, 64-byte aligned, contents undefined.
  void run(const float* x, const float* dy, float* dw, float* db, char* scratch) const;
  Split split() const;
  bool deterministic() const;
  int64_t chunk() const;  // tiles per GEMM (K)
  const char* impl_info() const;

  struct Impl;

 private:
  void run_det(const float* x, const float* dy, float* dw, float* db, char* scratch) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wino
}  // namespace cpu
}  // namespace cnn
