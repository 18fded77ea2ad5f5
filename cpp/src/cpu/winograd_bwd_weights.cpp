// Winograd F(4x4, 3x3) weight gradient for float32 nChw16c activations (see winograd.hpp).
//
//   dU[xi][ic][oc] = sum_tiles V[xi][t][ic] * D[xi][t][oc],  V = B^T d B (6x6 input patch), D = A dY A^T (4x4 dy tile)
//   dW[oc][ic]     = G^T dU G
//
// GEMMs are computed transposed: dU^T[xi] (OC x IC) = D[xi]^T V[xi] (oneDNN matmul, SRC = D with transposed
// strides, WEIGHTS = V), so the final G^T . G pass writes dw rows of 16 consecutive ic (144 contiguous floats).
// Three work decompositions (Split, chosen in the constructor):
//   tile_chunks:         every thread owns a contiguous range of tile chunks (Tc tiles each) and a private
//                        dU^T[36][OC][IC]; one batched (36) matmul per chunk accumulates into it (sum post-op);
//                        at the end the private copies are summed in thread order and transformed.
//   points:              one shared dU^T; per chunk all threads transform a slice of the tiles, barrier, then every
//                        thread runs the 2-D matmuls of its share of the 36 xi, barrier. Fallback for wide layers
//                        with many tiles.
//   output_blocks:       all tiles are transformed once into shared V / D (channel-blocked), barrier, then
//                        threads split (OCB x ICB) output blocks: one batched matmul with K = all tiles into an
//                        L2-sized per-thread block, immediately turned into dw. No dU round trip through memory.
// All are deterministic for a given thread count (fixed partitions, fixed reduction order).
//
// Deterministic mode (independent of the thread count too; KernelCtx::deterministic): the split follows the sizes
// alone; the GEMMs are built for one thread; tile_chunks sums into Q private dU^T copies ("partials", Q from the tile
// count, not the thread count), each owning a fixed range of chunks, which the threads share and which are summed
// in partial order; db is accumulated per fixed group of tiles (tile_chunks: per partial; points, output_blocks: G
// groups of tiles or chunk rows) and the groups summed in order. Partial and group buffers live in the shared scratch.
#include "cpu/winograd.hpp"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace wino {

namespace {
constexpr int VL = 16;
constexpr int NXI = 36;

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// 1-D dy transform A y (4 -> 6): rows of A are the columns of A^T.
__attribute__((target("avx512f"))) inline void a6(const float* const y[4], float* const o[6]) {
#pragma omp simd
  for (int l = 0; l < VL; ++l) {
    const float y0 = y[0][l], y1 = y[1][l], y2 = y[2][l], y3 = y[3][l];
    const float e = y0 + y2, od = y1 + y3;
    const float e4 = y0 + 4.f * y2, od4 = 2.f * y1 + 8.f * y3;
    o[0][l] = y0;
    o[1][l] = e + od;
    o[2][l] = e - od;
    o[3][l] = e4 + od4;
    o[4][l] = e4 - od4;
    o[5][l] = y3;
  }
}

alignas(64) const float kZero[VL] = {0};

constexpr int kMaxThreads = 256;
constexpr int64_t kBlocksMinCC = 256 * 256;        // output_blocks only for IC*OC >= this
constexpr int64_t kChunkBytes = int64_t(1) << 20;  // tile_chunks: target V+D bytes per chunk
constexpr int64_t kBlk = 64;                       // output_blocks: ICB = OCB
constexpr int64_t kDetPartials = 8;                // deterministic tile_chunks: at most this many partial dU^T copies
constexpr int64_t kDetPartTiles = 64;              // ... and at least this many tiles each
constexpr int64_t kDetGroups = 32;                 // deterministic points, output_blocks: db groups
}  // namespace

struct BwdWeights::Impl {
  Geom g{};
  int64_t OH = 0, OW = 0, TH = 0, TW = 0, T = 0, CB = 0, OB = 0;
  int nthr_max = 1;
  Split split = Split::tile_chunks;
  bool det = false;
  int64_t Q = 0, G = 0;  // deterministic: partials (tile_chunks), db groups (the others)
  size_t det_off = 0;    // deterministic: where the partials / groups start in the shared scratch
  int64_t Tc = 0, nchunks = 0;
  // Channel blocking of V / D / dU^T. tile_chunks, points: ICB = IC, OCB = OC;
  // output_blocks: the output block of one GEMM batch.
  //   V[ib][xi][row][ICB]   (ib = ic / ICB)     D[ob][xi][row][OCB]   (ob = oc / OCB)
  int64_t ICB = 0, OCB = 0;

  dnnl::engine eng = engine();
  std::vector<dnnl::stream> strm;
  dnnl::matmul mm_first, mm_acc;  // first write / accumulate (sum post-op)
  std::string info;

  // scratch layout
  size_t szV = 0, szD = 0, szU = 0, szB = 0, szS = 0;  // bytes, each 64-aligned
  size_t thr_stride = 0;                               // bytes per thread block
  size_t shared_bytes = 0;                             // points, output_blocks: shared buffers at the front
  size_t total = 0;

  // per thread: matmul memory objects (SRC = D^T, WEIGHTS = V, DST = dU^T) and argument arrays
  std::vector<dnnl::memory> msrc, mwei, mdst, mscr;
  std::vector<std::array<dnnl_exec_arg_t, 4>> args;

  float* vptr(float* V, int64_t xi, int64_t row, int64_t c) const {
    return V + ((c / ICB * NXI + xi) * Tc + row) * ICB + c % ICB;
  }
  float* dptr(float* D, int64_t xi, int64_t row, int64_t c) const {
    return D + ((c / OCB * NXI + xi) * Tc + row) * OCB + c % OCB;
  }
  void transform_tile(const float* x, const float* dy, int64_t t, int64_t row, float* V, float* D, float* dbt) const;
  void zero_row(int64_t row, float* V, float* D) const;
  void finish_block(const float* const* Us, int nU, size_t xs, size_t rs, int64_t oc0, int64_t noc, int64_t ic0,
                    int64_t nic, float* dw) const;
  void reduce_db(int ithr, int nt, const float* const* dbs, float* db) const;
  void exec(const dnnl::matmul& p, int ithr) const {
    dnnl_primitive_execute(p.get(), strm[ithr].get(), 4, args[ithr].data());
  }
  // points: rows [r0, r1) of the chunk starting at tile t0 (`rows` of its Tc rows hold tiles; the rest are zeroed)
  void transform_rows(const float* x, const float* dy, int64_t t0, int64_t rows, int64_t r0, int64_t r1, float* V,
                      float* D, float* dbt) const {
    for (int64_t r = r0; r < r1; ++r) {
      if (r < rows)
        transform_tile(x, dy, t0 + r, r, V, D, dbt);
      else
        zero_row(r, V, D);
    }
  }
  // points: this thread's points [x0, x1) of chunk c: dU^T[xi] (+)= D[xi]^T V[xi] (the first chunk writes).
  void point_gemms(int ithr, int x0, int x1, float* D, float* V, float* U, int64_t c) const {
    for (int xi = x0; xi < x1; ++xi) {
      msrc[ithr].set_data_handle(D + xi * Tc * g.OC);
      mwei[ithr].set_data_handle(V + xi * Tc * g.IC);
      mdst[ithr].set_data_handle(U + xi * g.OC * g.IC);
      exec(c == 0 ? mm_first : mm_acc, ithr);
    }
  }
  // output_blocks: this thread's (OCB x ICB) output blocks, K = all tiles, each finished into dw through U.
  void block_gemms(int ithr, int nt, float* D, float* V, const float* U, float* dw) const {
    const int64_t nbi = g.IC / ICB, nblk = nbi * (g.OC / OCB);
    for (int64_t b = nblk * ithr / nt; b < nblk * (ithr + 1) / nt; ++b) {
      const int64_t ic0 = (b % nbi) * ICB, oc0 = (b / nbi) * OCB;
      msrc[ithr].set_data_handle(dptr(D, 0, 0, oc0));
      mwei[ithr].set_data_handle(vptr(V, 0, 0, ic0));
      exec(mm_first, ithr);
      const float* Us[1] = {U};
      finish_block(Us, 1, size_t(OCB) * ICB, ICB, oc0, OCB, ic0, ICB, dw);
    }
  }
};

__attribute__((target("avx512f"))) void BwdWeights::Impl::zero_row(int64_t row, float* V, float* D) const {
  for (int64_t c = 0; c < g.IC; c += ICB)
    for (int xi = 0; xi < NXI; ++xi) std::memset(vptr(V, xi, row, c), 0, sizeof(float) * ICB);
  for (int64_t c = 0; c < g.OC; c += OCB)
    for (int xi = 0; xi < NXI; ++xi) std::memset(dptr(D, xi, row, c), 0, sizeof(float) * OCB);
}

__attribute__((target("avx512f"))) void BwdWeights::Impl::transform_tile(const float* x, const float* dy, int64_t t,
                                                                         int64_t row, float* V, float* D,
                                                                         float* dbt) const {
  const int64_t n = t / (TH * TW), r = t % (TH * TW), th = r / TW, tw = r % TW;
  const int64_t H = g.H, W = g.W;
  // ---- input patch -> V (the forward's transform; channels grouped in blocks of ICB)
  input_transform(x + n * CB * H * W * VL, CB, H, W, th * 4 - g.pad_h, tw * 4 - g.pad_w, vptr(V, 0, row, 0), Tc * ICB,
                  ICB / VL, NXI * Tc * ICB);
  // ---- dy tile -> D (and db: D[1][1] is the plain sum of the 4x4 tile)
  const int64_t oh0 = th * 4, ow0 = tw * 4;
  for (int64_t ob = 0; ob < OB; ++ob) {
    const float* base = dy + (n * OB + ob) * OH * OW * VL;
    const float* y[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t oh = oh0 + i, ow = ow0 + j;
        y[i][j] = (oh < OH && ow < OW) ? base + (oh * OW + ow) * VL : kZero;
      }
    alignas(64) float tq[6][4][VL];
    for (int j = 0; j < 4; ++j) {
      const float* in[4] = {y[0][j], y[1][j], y[2][j], y[3][j]};
      float* out[6] = {tq[0][j], tq[1][j], tq[2][j], tq[3][j], tq[4][j], tq[5][j]};
      a6(in, out);
    }
    float* d0 = dptr(D, 0, row, ob * VL);
    const int64_t xs = Tc * OCB;
    for (int i = 0; i < 6; ++i) {
      const float* in[4] = {tq[i][0], tq[i][1], tq[i][2], tq[i][3]};
      float* out[6];
      for (int j = 0; j < 6; ++j) out[j] = d0 + (i * 6 + j) * xs;
      a6(in, out);
    }
    const float* s = d0 + 7 * xs;
    float* b = dbt + ob * VL;
#pragma omp simd
    for (int l = 0; l < VL; ++l) b[l] += s[l];
  }
}

// Sum the nU dU^T copies (fixed order), apply G^T . G and write dw for oc in [oc0, oc0+noc), ic in [ic0, ic0+nic).
// Element (xi, oc, ic) at Us[k][xi*xs + (oc-oc0)*rs + (ic-ic0)]. Lanes run over 16 consecutive ic, so every
// (oc, 16 ic) item writes 144 contiguous floats of dw.
__attribute__((target("avx512f"))) void BwdWeights::Impl::finish_block(const float* const* Us, int nU, size_t xs,
                                                                       size_t rs, int64_t oc0, int64_t noc, int64_t ic0,
                                                                       int64_t nic, float* dw) const {
  const int64_t IC = g.IC;
  for (int64_t oc = 0; oc < noc; ++oc)
    for (int64_t iv = 0; iv < nic / VL; ++iv) {
      alignas(64) float m[NXI][VL];
      for (int xi = 0; xi < NXI; ++xi) {
        const size_t off = xi * xs + oc * rs + iv * VL;
        const float* p0 = Us[0] + off;
#pragma omp simd
        for (int l = 0; l < VL; ++l) m[xi][l] = p0[l];
        for (int k = 1; k < nU; ++k) {
          const float* p = Us[k] + off;
#pragma omp simd
          for (int l = 0; l < VL; ++l) m[xi][l] += p[l];
        }
      }
      // G^T applied along a (rows), then along b (columns):
      //   r0 = a0/4 - (a1+a2)/6 + (a3+a4)/24,  r1 = (a2-a1)/6 + (a3-a4)/12,  r2 = (a3+a4-a1-a2)/6 + a5
      alignas(64) float tt[3][6][VL];
      for (int b = 0; b < 6; ++b) {
#pragma omp simd
        for (int l = 0; l < VL; ++l) {
          const float a0 = m[b][l], a1 = m[6 + b][l], a2 = m[12 + b][l], a3 = m[18 + b][l], a4 = m[24 + b][l],
                      a5 = m[30 + b][l];
          const float s12 = a1 + a2, d12 = a2 - a1, s34 = a3 + a4, d34 = a3 - a4;
          tt[0][b][l] = 0.25f * a0 - s12 * (1.f / 6) + s34 * (1.f / 24);
          tt[1][b][l] = d12 * (1.f / 6) + d34 * (1.f / 12);
          tt[2][b][l] = (s34 - s12) * (1.f / 6) + a5;
        }
      }
      alignas(64) float w[9][VL];
      for (int kh = 0; kh < 3; ++kh) {
#pragma omp simd
        for (int l = 0; l < VL; ++l) {
          const float a0 = tt[kh][0][l], a1 = tt[kh][1][l], a2 = tt[kh][2][l], a3 = tt[kh][3][l], a4 = tt[kh][4][l],
                      a5 = tt[kh][5][l];
          const float s12 = a1 + a2, d12 = a2 - a1, s34 = a3 + a4, d34 = a3 - a4;
          w[kh * 3 + 0][l] = 0.25f * a0 - s12 * (1.f / 6) + s34 * (1.f / 24);
          w[kh * 3 + 1][l] = d12 * (1.f / 6) + d34 * (1.f / 12);
          w[kh * 3 + 2][l] = (s34 - s12) * (1.f / 6) + a5;
        }
      }
      float* o = dw + ((oc0 + oc) * IC + ic0 + iv * VL) * 9;
      for (int l = 0; l < VL; ++l)
        for (int k = 0; k < 9; ++k) o[l * 9 + k] = w[k][l];
    }
}

void BwdWeights::Impl::reduce_db(int ithr, int nt, const float* const* dbs, float* db) const {
  if (!db) return;
  const int64_t OC = g.OC, o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
  for (int64_t oc = o0; oc < o1; ++oc) {
    float s = dbs[0][oc];
    for (int k = 1; k < nt; ++k) s += dbs[k][oc];
    db[oc] = s;
  }
}

BwdWeights::BwdWeights(const Geom& g, int max_threads, bool deterministic) : impl_(new Impl) {
  using namespace dnnl;
  using dt = memory::data_type;
  Impl& I = *impl_;
  I.g = g;
  I.OH = g.H + 2 * g.pad_h - 2;
  I.OW = g.W + 2 * g.pad_w - 2;
  I.TH = (I.OH + 3) / 4;
  I.TW = (I.OW + 3) / 4;
  I.T = g.N * I.TH * I.TW;
  I.CB = g.IC / VL;
  I.OB = g.OC / VL;
  // Thread count is fixed here: min(max_threads, omp_get_max_threads()); run() never uses more (scratch is per thread).
  I.nthr_max = std::max(1, std::min({max_threads, omp_get_max_threads(), kMaxThreads}));
  I.det = deterministic;
  const int64_t IC = g.IC, OC = g.OC, T = I.T;
  const int P = I.nthr_max;
  // deterministic: the partial count stands in for the thread count wherever the split depends on it
  I.Q = I.det ? std::clamp<int64_t>((T + kDetPartTiles - 1) / kDetPartTiles, 1, kDetPartials) : 0;
  const int64_t fB = int64_t(NXI) * sizeof(float);

  // ---- decomposition
  //   output_blocks if all transformed tiles (V + D for every tile) fit a 32 MiB budget and channels are wide;
  //   else tile_chunks if the private dU copies are small; else points.
  const int64_t vd_all = fB * T * (IC + OC);
  if (IC * OC >= kBlocksMinCC && vd_all <= (int64_t(32) << 20))
    I.split = Split::output_blocks;
  else if ((P == 1 && !I.det) || fB * IC * OC <= (int64_t(4) << 20))
    I.split = Split::tile_chunks;
  else
    I.split = Split::points;
  if (P == 1 && !I.det && I.split == Split::points) I.split = Split::tile_chunks;

  int64_t tc;
  if (I.split == Split::tile_chunks) {
    // V+D chunk ~ kChunkBytes, K clamped to [32, 256]; then equal chunk counts per thread.
    tc = kChunkBytes / (fB * (IC + OC));
    tc = std::max<int64_t>(32, std::min<int64_t>(256, tc));
    int64_t nch = (T + tc - 1) / tc;
    const int64_t split = I.det ? I.Q : P;
    nch = (nch + split - 1) / split * split;
    tc = (T + nch - 1) / nch;
  } else if (I.split == Split::output_blocks) {
    tc = T;
  } else {
    // shared chunk of ~16 MiB
    tc = std::max<int64_t>(64, (int64_t(16) << 20) / (fB * (IC + OC)));
    const int64_t nch = (T + tc - 1) / tc;
    tc = (T + nch - 1) / nch;
  }
  tc = std::max<int64_t>(1, std::min(tc, T));
  I.Tc = tc;
  I.nchunks = (T + tc - 1) / tc;
  const int64_t Tc = I.Tc;
  if (I.split == Split::output_blocks) {
    I.ICB = std::min<int64_t>(IC, 2 * kBlk);
    I.OCB = std::min<int64_t>(OC, kBlk);
    while (IC % I.ICB) I.ICB -= VL;
    while (OC % I.OCB) I.OCB -= VL;
  } else {
    I.ICB = IC;
    I.OCB = OC;
  }
  const int64_t ICB = I.ICB, OCB = I.OCB;

  // ---- primitives: dU^T[xi] (OCB x ICB) = D[xi]^T (OCB x Tc) * V[xi] (Tc x ICB)
  primitive_attr a_first, a_acc;
  a_first.set_scratchpad_mode(scratchpad_mode::user);
  a_acc.set_scratchpad_mode(scratchpad_mode::user);
  post_ops po;
  po.append_sum(1.f);
  a_acc.set_post_ops(po);
  memory::desc sd, wd, dd;
  if (I.split != Split::points) {
    sd = memory::desc({NXI, OCB, Tc}, dt::f32, memory::dims{Tc * OCB, 1, OCB});
    wd = memory::desc({NXI, Tc, ICB}, dt::f32, memory::dims{Tc * ICB, ICB, 1});
    dd = memory::desc({NXI, OCB, ICB}, dt::f32, memory::dims{OCB * ICB, ICB, 1});
  } else {
    sd = memory::desc({OC, Tc}, dt::f32, memory::dims{1, OC});
    wd = memory::desc({Tc, IC}, dt::f32, memory::dims{IC, 1});
    dd = memory::desc({OC, IC}, dt::f32, memory::dims{IC, 1});
  }
  std::optional<OneThread> one;  // deterministic: GEMMs built for one thread (dnnl_common.hpp)
  if (I.det) one.emplace();
  auto pd_first = matmul::primitive_desc(I.eng, sd, wd, dd, a_first);
  I.mm_first = matmul(pd_first);
  size_t scr = pd_first.scratchpad_desc().get_size();
  I.info = pd_first.impl_info_str();
  if (I.split != Split::output_blocks) {
    auto pd_acc = matmul::primitive_desc(I.eng, sd, wd, dd, a_acc);
    I.mm_acc = matmul(pd_acc);
    scr = std::max(scr, pd_acc.scratchpad_desc().get_size());
  }
  one.reset();

  // ---- scratch layout
  I.szV = align_up(sizeof(float) * NXI * Tc * IC, 4096);
  I.szD = align_up(sizeof(float) * NXI * Tc * OC, 4096);
  I.szU = align_up(sizeof(float) * NXI * OCB * ICB, 4096);
  I.szB = align_up(sizeof(float) * OC, 64);
  I.szS = align_up(std::max<size_t>(scr, 64), 64);
  if (I.split == Split::tile_chunks) {  // per thread: V, D, dU^T, db, matmul scratchpad
    I.shared_bytes = 0;
    I.thr_stride = I.szV + I.szD + I.szU + I.szB + I.szS;
  } else if (I.split == Split::points) {  // shared: V, D, dU^T; per thread: db, scratchpad
    I.shared_bytes = I.szV + I.szD + I.szU;
    I.thr_stride = I.szB + I.szS;
  } else {  // shared: V, D; per thread: dU^T block, db, scratchpad
    I.shared_bytes = I.szV + I.szD;
    I.thr_stride = I.szU + I.szB + I.szS;
  }
  if (I.det) {  // tile_chunks: per thread V, D, scratchpad and Q partials (dU^T, db) shared; others: G db groups shared
    if (I.split == Split::tile_chunks) {
      I.thr_stride = I.szV + I.szD + I.szS;
      I.det_off = 0;
      I.shared_bytes = I.Q * (I.szU + I.szB);
    } else {
      I.G = std::min<int64_t>(kDetGroups, I.split == Split::points ? Tc : T);
      I.det_off = I.shared_bytes;
      I.shared_bytes += I.G * I.szB;
      I.thr_stride -= I.szB;
    }
  }
  I.thr_stride = align_up(I.thr_stride, 4096);
  I.total = I.shared_bytes + I.thr_stride * P;

  // ---- per-thread streams, memory objects (no buffers yet) and argument arrays
  I.strm.reserve(P);
  for (int t = 0; t < P; ++t) {
    I.strm.emplace_back(I.eng);
    I.msrc.emplace_back(sd, I.eng, nullptr);
    I.mwei.emplace_back(wd, I.eng, nullptr);
    I.mdst.emplace_back(dd, I.eng, nullptr);
    I.mscr.emplace_back(memory::desc({int64_t(I.szS)}, dt::u8, memory::format_tag::a), I.eng, nullptr);
  }
  I.args.resize(P);
  for (int t = 0; t < P; ++t)
    I.args[t] = {dnnl_exec_arg_t{DNNL_ARG_SRC, I.msrc[t].get()}, dnnl_exec_arg_t{DNNL_ARG_WEIGHTS, I.mwei[t].get()},
                 dnnl_exec_arg_t{DNNL_ARG_DST, I.mdst[t].get()}, dnnl_exec_arg_t{DNNL_ARG_SCRATCHPAD, I.mscr[t].get()}};
}

BwdWeights::~BwdWeights() = default;
size_t BwdWeights::scratch_bytes() const { return impl_->total; }
Split BwdWeights::split() const { return impl_->split; }
bool BwdWeights::deterministic() const { return impl_->det; }
int64_t BwdWeights::chunk() const { return impl_->Tc; }
const char* BwdWeights::impl_info() const { return impl_->info.c_str(); }

void BwdWeights::run(const float* x, const float* dy, float* dw, float* db, char* scratch) const {
  const Impl& I = *impl_;
  if (I.det) return run_det(x, dy, dw, db, scratch);
  const int nthr = std::max(1, std::min(omp_get_max_threads(), I.nthr_max));
  const int64_t T = I.T, Tc = I.Tc, nchunks = I.nchunks, IC = I.g.IC, OC = I.g.OC;
#pragma omp parallel num_threads(nthr)
  {
    const int ithr = omp_get_thread_num(), nt = omp_get_num_threads();
    char* tb = scratch + I.shared_bytes + I.thr_stride * ithr;
    const float* dbs[kMaxThreads];
    if (I.split == Split::tile_chunks) {
      float* V = reinterpret_cast<float*>(tb);
      float* D = reinterpret_cast<float*>(tb + I.szV);
      float* U = reinterpret_cast<float*>(tb + I.szV + I.szD);
      float* dbt = reinterpret_cast<float*>(tb + I.szV + I.szD + I.szU);
      I.msrc[ithr].set_data_handle(D);
      I.mwei[ithr].set_data_handle(V);
      I.mdst[ithr].set_data_handle(U);
      I.mscr[ithr].set_data_handle(tb + I.szV + I.szD + I.szU + I.szB);
      std::memset(dbt, 0, sizeof(float) * OC);
      const int64_t c0 = nchunks * ithr / nt, c1 = nchunks * (ithr + 1) / nt;
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t t0 = c * Tc, rows = std::min(Tc, T - t0);
        for (int64_t r = 0; r < rows; ++r) I.transform_tile(x, dy, t0 + r, r, V, D, dbt);
        for (int64_t r = rows; r < Tc; ++r) I.zero_row(r, V, D);
        I.exec(c == c0 ? I.mm_first : I.mm_acc, ithr);
      }
#pragma omp barrier
      // threads that owned at least one chunk hold a valid dU^T; the others are skipped. Fixed order.
      const float* Us[kMaxThreads];
      int nU = 0;
      const int64_t o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
      for (int k = 0; k < nt; ++k) {
        const char* kb = scratch + I.shared_bytes + I.thr_stride * k;
        if (nchunks * (k + 1) / nt > nchunks * k / nt)
          Us[nU++] = reinterpret_cast<const float*>(kb + I.szV + I.szD) + o0 * IC;
        dbs[k] = reinterpret_cast<const float*>(kb + I.szV + I.szD + I.szU);
      }
      I.finish_block(Us, nU, size_t(OC) * IC, IC, o0, o1 - o0, 0, IC, dw);
      I.reduce_db(ithr, nt, dbs, db);
    } else if (I.split == Split::output_blocks) {
      float* V = reinterpret_cast<float*>(scratch);
      float* D = reinterpret_cast<float*>(scratch + I.szV);
      float* U = reinterpret_cast<float*>(tb);
      float* dbt = reinterpret_cast<float*>(tb + I.szU);
      I.mdst[ithr].set_data_handle(U);
      I.mscr[ithr].set_data_handle(tb + I.szU + I.szB);
      std::memset(dbt, 0, sizeof(float) * OC);
      for (int64_t t = T * ithr / nt; t < T * (ithr + 1) / nt; ++t) I.transform_tile(x, dy, t, t, V, D, dbt);
#pragma omp barrier
      I.block_gemms(ithr, nt, D, V, U, dw);
      for (int k = 0; k < nt; ++k)
        dbs[k] = reinterpret_cast<const float*>(scratch + I.shared_bytes + I.thr_stride * k + I.szU);
      I.reduce_db(ithr, nt, dbs, db);
    } else {
      float* V = reinterpret_cast<float*>(scratch);
      float* D = reinterpret_cast<float*>(scratch + I.szV);
      float* U = reinterpret_cast<float*>(scratch + I.szV + I.szD);
      float* dbt = reinterpret_cast<float*>(tb);
      I.mscr[ithr].set_data_handle(tb + I.szB);
      std::memset(dbt, 0, sizeof(float) * OC);
      const int x0 = NXI * ithr / nt, x1 = NXI * (ithr + 1) / nt;
      const int64_t r0 = Tc * ithr / nt, r1 = Tc * (ithr + 1) / nt;
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t t0 = c * Tc, rows = std::min(Tc, T - t0);
        I.transform_rows(x, dy, t0, rows, r0, r1, V, D, dbt);
#pragma omp barrier
        I.point_gemms(ithr, x0, x1, D, V, U, c);
#pragma omp barrier
      }
      const int64_t o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
      const float* Us[1] = {U + o0 * IC};
      I.finish_block(Us, 1, size_t(OC) * IC, IC, o0, o1 - o0, 0, IC, dw);
      for (int k = 0; k < nt; ++k) dbs[k] = reinterpret_cast<const float*>(scratch + I.shared_bytes + I.thr_stride * k);
      I.reduce_db(ithr, nt, dbs, db);
    }
  }
}

// Deterministic mode (see the top of the file). Partition of the work among the real threads changes nothing:
// every partial / group is computed by one thread in a fixed order, and they are summed in a fixed order.
void BwdWeights::run_det(const float* x, const float* dy, float* dw, float* db, char* scratch) const {
  const Impl& I = *impl_;
  const int nthr = std::max(1, std::min(omp_get_max_threads(), I.nthr_max));
  const int64_t T = I.T, Tc = I.Tc, nchunks = I.nchunks, IC = I.g.IC, OC = I.g.OC;
  char* det_base = scratch + I.det_off;
  // db[oc] = sum over the np buffers (bs bytes apart) in order; threads split oc
  auto reduce_db = [&](int ithr, int nt, int64_t np, size_t bs) {
    if (!db) return;
    const int64_t o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
    for (int64_t oc = o0; oc < o1; ++oc) {
      float s = reinterpret_cast<const float*>(det_base)[oc];
      for (int64_t k = 1; k < np; ++k) s += reinterpret_cast<const float*>(det_base + size_t(k) * bs)[oc];
      db[oc] = s;
    }
  };
#pragma omp parallel num_threads(nthr)
  {
    const int ithr = omp_get_thread_num(), nt = omp_get_num_threads();
    char* tb = scratch + I.shared_bytes + I.thr_stride * ithr;
    if (I.split == Split::tile_chunks) {
      // partial q: chunks [nchunks q / Q, nchunks (q+1) / Q) summed into its own dU^T and db
      float* V = reinterpret_cast<float*>(tb);
      float* D = reinterpret_cast<float*>(tb + I.szV);
      I.msrc[ithr].set_data_handle(D);
      I.mwei[ithr].set_data_handle(V);
      I.mscr[ithr].set_data_handle(tb + I.szV + I.szD);
      const size_t ps = I.szU + I.szB;
      for (int64_t q = ithr; q < I.Q; q += nt) {
        float* U = reinterpret_cast<float*>(det_base + size_t(q) * ps);
        float* dbt = reinterpret_cast<float*>(det_base + size_t(q) * ps + I.szU);
        I.mdst[ithr].set_data_handle(U);
        std::memset(dbt, 0, sizeof(float) * OC);
        const int64_t c0 = nchunks * q / I.Q, c1 = nchunks * (q + 1) / I.Q;
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t t0 = c * Tc, rows = std::min(Tc, T - t0);
          for (int64_t r = 0; r < rows; ++r) I.transform_tile(x, dy, t0 + r, r, V, D, dbt);
          for (int64_t r = rows; r < Tc; ++r) I.zero_row(r, V, D);
          I.exec(c == c0 ? I.mm_first : I.mm_acc, ithr);
        }
      }
#pragma omp barrier
      const float* Us[kDetPartials];
      int nU = 0;
      const int64_t o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
      for (int64_t q = 0; q < I.Q; ++q)
        if (nchunks * (q + 1) / I.Q > nchunks * q / I.Q)
          Us[nU++] = reinterpret_cast<const float*>(det_base + size_t(q) * ps) + o0 * IC;
      I.finish_block(Us, nU, size_t(OC) * IC, IC, o0, o1 - o0, 0, IC, dw);
      if (db) {  // partials without chunks hold zeros
        for (int64_t oc = o0; oc < o1; ++oc) {
          float s = reinterpret_cast<const float*>(det_base + I.szU)[oc];
          for (int64_t q = 1; q < I.Q; ++q) s += reinterpret_cast<const float*>(det_base + size_t(q) * ps + I.szU)[oc];
          db[oc] = s;
        }
      }
    } else if (I.split == Split::output_blocks) {
      // group k transforms tiles [T k / G, T (k+1) / G) in order into its db; then (OCB x ICB) blocks, K = all tiles
      float* V = reinterpret_cast<float*>(scratch);
      float* D = reinterpret_cast<float*>(scratch + I.szV);
      float* U = reinterpret_cast<float*>(tb);
      I.mdst[ithr].set_data_handle(U);
      I.mscr[ithr].set_data_handle(tb + I.szU);
      for (int64_t k = ithr; k < I.G; k += nt) {
        float* dbt = reinterpret_cast<float*>(det_base + size_t(k) * I.szB);
        std::memset(dbt, 0, sizeof(float) * OC);
        for (int64_t t = T * k / I.G; t < T * (k + 1) / I.G; ++t) I.transform_tile(x, dy, t, t, V, D, dbt);
      }
#pragma omp barrier
      I.block_gemms(ithr, nt, D, V, U, dw);
      reduce_db(ithr, nt, I.G, I.szB);
    } else {
      // per chunk: group k transforms rows [Tc k / G, Tc (k+1) / G) into its db, then threads split the 36 points
      float* V = reinterpret_cast<float*>(scratch);
      float* D = reinterpret_cast<float*>(scratch + I.szV);
      float* U = reinterpret_cast<float*>(scratch + I.szV + I.szD);
      I.mscr[ithr].set_data_handle(tb);
      for (int64_t k = ithr; k < I.G; k += nt) std::memset(det_base + size_t(k) * I.szB, 0, sizeof(float) * OC);
      const int x0 = NXI * ithr / nt, x1 = NXI * (ithr + 1) / nt;
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t t0 = c * Tc, rows = std::min(Tc, T - t0);
        for (int64_t k = ithr; k < I.G; k += nt) {
          float* dbt = reinterpret_cast<float*>(det_base + size_t(k) * I.szB);
          I.transform_rows(x, dy, t0, rows, Tc * k / I.G, Tc * (k + 1) / I.G, V, D, dbt);
        }
#pragma omp barrier
        I.point_gemms(ithr, x0, x1, D, V, U, c);
#pragma omp barrier
      }
      const int64_t o0 = OC * ithr / nt, o1 = OC * (ithr + 1) / nt;
      const float* Us[1] = {U + o0 * IC};
      I.finish_block(Us, 1, size_t(OC) * IC, IC, o0, o1 - o0, 0, IC, dw);
      reduce_db(ithr, nt, I.G, I.szB);
    }
  }
}

}  // namespace wino
}  // namespace cpu
}  // namespace cnn
