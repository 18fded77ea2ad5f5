// Winograd F(4x4, 3x3) convolution (see winograd.hpp). Transform matrices (points 0, 1, -1, 2, -2, inf):
//   B^T = [[4, 0,-5, 0, 1, 0], [0,-4,-4, 1, 1, 0], [0, 4,-4,-1, 1, 0], [0,-2,-1, 2, 1, 0], [0, 2,-1,-2, 1, 0],
//          [0, 4, 0,-5, 0, 1]]
//   G   = [[1/4, 0, 0], [-1/6,-1/6,-1/6], [-1/6, 1/6,-1/6], [1/24, 1/12, 1/6], [1/24,-1/12, 1/6], [0, 0, 1]]
//   A^T = [[1, 1, 1, 1, 1, 0], [0, 1,-1, 2,-2, 0], [0, 1, 1, 4, 4, 0], [0, 1,-1, 8,-8, 1]]
#include "cpu/winograd.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <optional>

#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {
namespace wino {
namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
constexpr int64_t kChunkBytes = 2359296;  // V + M of one chunk: 128 tiles at 64 + 64 channels

#define WINO_AVX512 __attribute__((target("avx512f")))

// o = B^T d along one axis
WINO_AVX512 inline void bt6(const __m512 d[6], __m512 o[6]) {
  const __m512 c2 = _mm512_set1_ps(2.f), c4 = _mm512_set1_ps(4.f), c5 = _mm512_set1_ps(5.f);
  o[0] = _mm512_fmadd_ps(c4, d[0], _mm512_fnmadd_ps(c5, d[2], d[4]));
  o[1] = _mm512_fnmadd_ps(c4, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
  o[2] = _mm512_fmadd_ps(c4, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
  o[3] = _mm512_fmadd_ps(c2, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
  o[4] = _mm512_fnmadd_ps(c2, _mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
  o[5] = _mm512_fmadd_ps(c4, d[1], _mm512_fnmadd_ps(c5, d[3], d[5]));
}
// o = A^T m along one axis
WINO_AVX512 inline void at6(const __m512 m[6], __m512 o[4]) {
  const __m512 c2 = _mm512_set1_ps(2.f), c4 = _mm512_set1_ps(4.f), c8 = _mm512_set1_ps(8.f);
  __m512 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
  __m512 c = _mm512_add_ps(m[3], m[4]), e = _mm512_sub_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
  o[1] = _mm512_fmadd_ps(c2, e, b);
  o[2] = _mm512_fmadd_ps(c4, c, a);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(c8, e, b), m[5]);
}

}  // namespace

WINO_AVX512 void input_transform(const float* xn, int64_t CB, int64_t H, int64_t W, int64_t ih0, int64_t iw0, float* v,
                                 int64_t xi_stride, int64_t per, int64_t group_stride) {
  bool rin[6], cin[6];
  for (int i = 0; i < 6; ++i) rin[i] = ih0 + i >= 0 && ih0 + i < H;
  for (int j = 0; j < 6; ++j) cin[j] = iw0 + j >= 0 && iw0 + j < W;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t cb = 0; cb < CB; ++cb) {
    const float* base = xn + cb * H * W * 16;
    __m512 t[6][6];
    for (int j = 0; j < 6; ++j) {
      __m512 d[6];
      for (int i = 0; i < 6; ++i)
        d[i] = rin[i] && cin[j] ? _mm512_loadu_ps(base + ((ih0 + i) * W + iw0 + j) * 16) : zero;
      __m512 o[6];
      bt6(d, o);
      for (int i = 0; i < 6; ++i) t[i][j] = o[i];
    }
    for (int i = 0; i < 6; ++i) {
      __m512 o[6];
      bt6(t[i], o);
      float* vc = v + cb / per * group_stride + cb % per * 16;
      for (int j = 0; j < 6; ++j) _mm512_storeu_ps(vc + (i * 6 + j) * xi_stride, o[j]);
    }
  }
}

namespace {

WINO_AVX512 void output_tile(const float* m, int64_t xi_stride, int64_t OB, int64_t OH, int64_t OW, int64_t oh0,
                             int64_t ow0, float* yn, const Epilogue& ep) {
  const __m512 zero = _mm512_setzero_ps(), alpha = _mm512_set1_ps(ep.alpha);
  const int nr = int(std::min<int64_t>(4, OH - oh0)), nc = int(std::min<int64_t>(4, OW - ow0));
  for (int64_t ob = 0; ob < OB; ++ob) {
    __m512 t[4][6];
    for (int j = 0; j < 6; ++j) {
      __m512 col[6], o[4];
      for (int i = 0; i < 6; ++i) col[i] = _mm512_loadu_ps(m + (i * 6 + j) * xi_stride + ob * 16);
      at6(col, o);
      for (int i = 0; i < 4; ++i) t[i][j] = o[i];
    }
    const __m512 b = ep.bias ? _mm512_loadu_ps(ep.bias + ob * 16) : zero;
    float* ybase = yn + ob * OH * OW * 16;
    for (int i = 0; i < nr; ++i) {
      __m512 o[4];
      at6(t[i], o);
      for (int j = 0; j < nc; ++j) {
        float* p = ybase + ((oh0 + i) * OW + ow0 + j) * 16;
        __m512 r = _mm512_add_ps(o[j], b);
        if (ep.sum) r = _mm512_add_ps(r, _mm512_loadu_ps(p));
        if (ep.act == 1)
          r = _mm512_max_ps(r, zero);
        else if (ep.act == 2)
          r = _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(r, zero, _CMP_LT_OQ), r, alpha);
        _mm512_storeu_ps(p, r);
      }
    }
  }
}

}  // namespace

bool available() { return __builtin_cpu_supports("avx512f"); }

const char* split_name(Split s) {
  switch (s) {
    case Split::tile_chunks: return "tile-chunks";
    case Split::points: return "points";
    case Split::output_blocks: return "output-blocks";
  }
  return "?";
}

Conv::Plan Conv::plan(const Geom& g, int max_threads, bool deterministic) {
  Plan p;
  const int64_t nthr = deterministic ? kDetThreads : std::max(1, max_threads);
  p.T = g.N * ((g.OH() + 3) / 4) * ((g.OW() + 3) / 4);
  const int64_t target = std::clamp<int64_t>(kChunkBytes / (36 * 4 * (g.IC + g.OC)), 8, 512);
  p.nchunks = (p.T + target - 1) / target;
  p.nchunks = std::min(p.T, (p.nchunks + nthr - 1) / nthr * nthr);  // whole rounds of chunks over the threads
  const size_t u_full = size_t(36 * g.IC * g.OC) * 4;
  // chunks re-read U once each; whole mode writes and reads V and M for all tiles through the caches instead
  p.whole = nthr > 1 && u_full * size_t(p.nchunks) > size_t(36 * p.T * (g.IC + g.OC)) * 4 * 2;
  if (p.whole) p.nchunks = 1;
  p.Tc = (p.T + p.nchunks - 1) / p.nchunks;
  p.nchunks = (p.T + p.Tc - 1) / p.Tc;
  return p;
}

bool Conv::worthwhile(const Geom& g, int max_threads, bool deterministic) {
  const Plan p = plan(g, max_threads, deterministic);
  return !p.whole || size_t(36 * p.T * (g.IC + g.OC)) * 4 <= (size_t(64) << 20);
}

Conv::Conv(const Geom& g, int max_threads, bool deterministic) : g_(g) {
  TH_ = (g.OH() + 3) / 4;
  TW_ = (g.OW() + 3) / 4;
  nthr_ = std::max(1, max_threads);
  det_ = deterministic;
  const Plan p = plan(g, nthr_, det_);
  T_ = p.T;
  Tc_ = p.Tc;
  nchunks_ = p.nchunks;
  whole_ = p.whole;
  const size_t u_full = size_t(36 * g.IC * g.OC) * 4;
  nb_ = g.OC % 32 == 0 ? 32 : 16;  // 16-128 measured: 32 and 64 best (512 channels at 4x4: 9 ms vs 15 with all of U)
  tail_ = T_ - (nchunks_ - 1) * Tc_;
  if (tail_ == Tc_) tail_ = 0;

  auto attr = user_scratchpad_attr();
  auto pd_of = [&](int64_t rows) {
    if (whole_) {  // one block of nb_ output channels of U and of M (rows of OC floats)
      dnnl::memory::desc s({36, rows, g.IC}, dt::f32, tag::abc), w({36, g.IC, nb_}, dt::f32, tag::abc),
          d({36, rows, nb_}, dt::f32, dnnl::memory::dims{rows * g.OC, g.OC, 1});
      return dnnl::matmul::primitive_desc(engine(), s, w, d, attr);
    }
    dnnl::memory::desc s({36, rows, g.IC}, dt::f32, tag::abc), w({36, g.IC, g.OC}, dt::f32, tag::abc),
        d({36, rows, g.OC}, dt::f32, tag::abc);
    return dnnl::matmul::primitive_desc(engine(), s, w, d, attr);
  };
  std::optional<OneThread> one;  // deterministic: GEMMs built for one thread (dnnl_common.hpp)
  if (det_) one.emplace();
  auto pd = pd_of(Tc_);
  mm_ = dnnl::matmul(pd);
  pad_bytes_ = pd.scratchpad_desc().get_size();
  std::optional<dnnl::matmul::primitive_desc> pdt;
  if (tail_) {
    pdt = pd_of(tail_);
    mm_tail_ = dnnl::matmul(*pdt);
    pad_bytes_ = std::max(pad_bytes_, pdt->scratchpad_desc().get_size());
  }
  one.reset();
  v_bytes_ = size_t(36 * Tc_ * g.IC) * 4;
  m_bytes_ = size_t(36 * Tc_ * g.OC) * 4;
  ScratchLayout S, P;
  if (whole_) {
    u_bytes_ = size_t(36 * g.IC * nb_) * 4;
    S.add(v_bytes_);
    S.add(m_bytes_);
    P.add(u_bytes_);
  } else {
    u_bytes_ = u_full;
    S.add(u_bytes_);
    P.add(v_bytes_);
    P.add(m_bytes_);
  }
  P.add(std::max<size_t>(pad_bytes_, 64));
  shared_ = S.total;
  per_thread_ = P.total;
  total_ = shared_ + per_thread_ * size_t(nthr_);

  auto bind = [&](const dnnl::matmul::primitive_desc& p, dnnl::memory& s, dnnl::memory& w, dnnl::memory& d,
                  dnnl::memory& sp, std::unordered_map<int, dnnl::memory>& args) {
    s = dnnl::memory(p.src_desc(), engine(), DNNL_MEMORY_NONE);
    w = dnnl::memory(p.weights_desc(), engine(), DNNL_MEMORY_NONE);
    d = dnnl::memory(p.dst_desc(), engine(), DNNL_MEMORY_NONE);
    args = {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, d}};
    if (p.scratchpad_desc().get_size()) {
      sp = dnnl::memory(p.scratchpad_desc(), engine(), DNNL_MEMORY_NONE);
      args[DNNL_ARG_SCRATCHPAD] = sp;
    }
  };
  th_.resize(size_t(nthr_));
  for (Thread& t : th_) {
    dnnl::memory w_t;
    bind(pd, t.src, t.wei, t.dst, t.pad, t.args);
    if (pdt) {
      bind(*pdt, t.src_t, w_t, t.dst_t, t.pad_t, t.args_t);
      t.args_t[DNNL_ARG_WEIGHTS] = t.wei;  // same U, same descriptor
    }
  }
}

// U[xi][ic][o] = (G g G^T)[xi], 16 output channels at a time; g(ic, oc) is gathered from the filter. Runs its
// own OpenMP loop over the blocks (sequential when called inside a parallel region).
WINO_AVX512 void Conv::transform_weights(const float* w, bool flip_transpose, const float* scale, int64_t ob0,
                                         int64_t nob, int64_t ld, float* u) const {
  const int64_t IC = g_.IC, OC = g_.OC;
  // element (ic, oc, tap k) of the filter: forward [OC][IC][3][3]; flip_transpose [IC][OC][3][3], taps reversed
  const int64_t s_ic = flip_transpose ? OC * 9 : 9, s_oc = flip_transpose ? 9 : IC * 9;
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(int(s_oc)));
  const float G[6][3] = {{1.f / 4, 0, 0},
                         {-1.f / 6, -1.f / 6, -1.f / 6},
                         {-1.f / 6, 1.f / 6, -1.f / 6},
                         {1.f / 24, 1.f / 12, 1.f / 6},
                         {1.f / 24, -1.f / 12, 1.f / 6},
                         {0, 0, 1}};
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < nob; ++j) {
    const int64_t ob = ob0 + j;
    const __m512 s = scale ? _mm512_loadu_ps(scale + ob * 16) : _mm512_set1_ps(1.f);
    for (int64_t ic = 0; ic < IC; ++ic) {
      const float* base = w + ic * s_ic + ob * 16 * s_oc;
      __m512 gk[3][3];
      for (int k = 0; k < 9; ++k)
        gk[k / 3][k % 3] = _mm512_mul_ps(s, _mm512_i32gather_ps(lanes, base + (flip_transpose ? 8 - k : k), 4));
      __m512 t[6][3];
      for (int a = 0; a < 6; ++a)
        for (int k = 0; k < 3; ++k)
          t[a][k] = _mm512_fmadd_ps(
              _mm512_set1_ps(G[a][0]), gk[0][k],
              _mm512_fmadd_ps(_mm512_set1_ps(G[a][1]), gk[1][k], _mm512_mul_ps(_mm512_set1_ps(G[a][2]), gk[2][k])));
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b) {
          __m512 v = _mm512_fmadd_ps(
              _mm512_set1_ps(G[b][0]), t[a][0],
              _mm512_fmadd_ps(_mm512_set1_ps(G[b][1]), t[a][1], _mm512_mul_ps(_mm512_set1_ps(G[b][2]), t[a][2])));
          _mm512_storeu_ps(u + ((a * 6 + b) * IC + ic) * ld + j * 16, v);
        }
    }
  }
}

void Conv::run(const float* x, float* y, const float* w, bool flip_transpose, const float* scale, const Epilogue& ep,
               char* scratch) const {
  const int64_t CB = g_.IC / 16, OB = g_.OC / 16, H = g_.H, W = g_.W, OH = g_.OH(), OW = g_.OW();
  const int64_t tiles_img = TH_ * TW_;
  char* threads_base = scratch + shared_;
  const int nt = std::max(1, std::min(nthr_, omp_get_max_threads()));
  auto gemm = [&](Thread& t, const float* v, const float* u, float* m, char* pad, bool full) {
    dnnl::memory& ms = full ? t.src : t.src_t;
    dnnl::memory& md = full ? t.dst : t.dst_t;
    dnnl::memory& mp = full ? t.pad : t.pad_t;
    ms.set_data_handle(const_cast<float*>(v));
    t.wei.set_data_handle(const_cast<float*>(u));
    md.set_data_handle(m);
    if (mp) mp.set_data_handle(pad);
    (full ? mm_ : mm_tail_).execute(stream(), full ? t.args : t.args_t);
  };
  auto in_tile = [&](float* v, int64_t tile, int64_t r, int64_t rows) {
    const int64_t n = tile / tiles_img, th = tile % tiles_img / TW_, tw = tile % TW_;
    input_transform(x + n * CB * H * W * 16, CB, H, W, th * 4 - g_.pad_h, tw * 4 - g_.pad_w, v + r * g_.IC,
                    rows * g_.IC, CB, 0);
  };
  auto out_tile = [&](const float* m, int64_t tile, int64_t r, int64_t rows) {
    const int64_t n = tile / tiles_img, th = tile % tiles_img / TW_, tw = tile % TW_;
    output_tile(m + r * g_.OC, rows * g_.OC, OB, OH, OW, th * 4, tw * 4, y + n * OB * OH * OW * 16, ep);
  };
  if (whole_) {
    float* v = reinterpret_cast<float*>(scratch);
    float* m = reinterpret_cast<float*>(scratch + (v_bytes_ + 63) / 64 * 64);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < T_; ++t) in_tile(v, t, t, T_);
    const int64_t per = nb_ / 16;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t blk = 0; blk < OB / per; ++blk) {  // each block of output channels: its U block, then its GEMMs
      const int tid = omp_get_thread_num();
      char* base = threads_base + per_thread_ * size_t(tid);
      float* u = reinterpret_cast<float*>(base);
      transform_weights(w, flip_transpose, scale, blk * per, per, nb_, u);
      gemm(th_[size_t(tid)], v, u, m + blk * nb_, base + (u_bytes_ + 63) / 64 * 64, true);
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < T_; ++t) out_tile(m, t, t, T_);
    return;
  }
  float* u = reinterpret_cast<float*>(scratch);
  transform_weights(w, flip_transpose, scale, 0, OB, g_.OC, u);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < nchunks_; ++c) {
    const int tid = omp_get_thread_num();
    char* base = threads_base + per_thread_ * size_t(tid);
    float* v = reinterpret_cast<float*>(base);
    float* m = reinterpret_cast<float*>(base + (v_bytes_ + 63) / 64 * 64);
    char* pad = base + (v_bytes_ + 63) / 64 * 64 + (m_bytes_ + 63) / 64 * 64;
    const int64_t t0 = c * Tc_, rows = std::min(Tc_, T_ - t0);
    for (int64_t r = 0; r < rows; ++r) in_tile(v, t0 + r, r, rows);
    gemm(th_[size_t(tid)], v, u, m, pad, rows == Tc_);
    for (int64_t r = 0; r < rows; ++r) out_tile(m, t0 + r, r, rows);
  }
}

}  // namespace wino
}  // namespace cpu
}  // namespace cnn
