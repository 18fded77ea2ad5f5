// cnnnative — optimizer update kernel tests (cpp/tests/test_optim.cpp)
//
// Owns: a standalone check of host/optim.{hpp,cpp}. Promises: exits 0 only if
//  * for every config variant (SGD plain / momentum / dampening / nesterov /
//    weight decay; Adam / Adam+wd / AdamW / AMSGrad (+wd)) and sizes
//    1, 17, 1000, 100003, several steps of the float kernel track the double
//    reference (relative error < 1e-5, with a floor of 0.1 * rms of the
//    array so that values near zero are judged against their operands' scale
//    — float rounding of the operands is ~6e-8 of that scale), and each
//    single float step, started from the same state, matches a double step
//    to within 1e-5 of the update size plus float rounding of the result;
//  * every SIMD level the CPU supports gives bit-identical results to the
//    scalar path (only 1e-6 relative agreement under -ffast-math);
//  * results do not depend on the OpenMP thread count (bitwise);
//  * hand-computed values hold and invalid arguments throw.
// Build (from the repository root):
//   g++ -std=c++17 -O2 -fopenmp -Icpp/src cpp/src/host/optim.cpp
//       cpp/tests/test_optim.cpp -o /tmp/to && /tmp/to
#include "host/optim.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace cnn;

#ifdef __FAST_MATH__
static constexpr bool kExpectBitwise = false;
#else
static constexpr bool kExpectBitwise = true;
#endif

static int g_fail = 0;
static int g_checks = 0;

#define CHECK(cond, ...)                                           \
  do {                                                             \
    ++g_checks;                                                    \
    if (!(cond)) {                                                 \
      ++g_fail;                                                    \
      std::printf("FAIL %s:%d: %s | ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                                    \
      std::printf("\n");                                           \
    }                                                              \
  } while (0)

static std::vector<float> randn(std::size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> x(n);
  for (auto& e : x) e = nd(rng);
  return x;
}

static std::vector<double> to_d(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

static double rms(const std::vector<double>& x) {
  double s = 0;
  for (double e : x) s += e * e;
  return x.empty() ? 0.0 : std::sqrt(s / double(x.size()));
}

// max over i of |a-b| / (|b| + floor), floor = 0.1 * rms(b) (+ tiny).
static double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
  const double floor = 0.1 * rms(b) + 1e-30;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]) / (std::fabs(b[i]) + floor);
    if (!(e <= worst)) worst = e;  // NaN sticks
  }
  return worst;
}

// Single-step check: float result pf vs double result pd, both from the same
// start p0 (and the same state). With u = pd - p0 the exact update:
// |pf - pd| <= 1e-5 * (|u| + 0.1 * rms(u)) + 2^-22 * |pd|. The last term is
// four half-ulps of p: the final rounding of p, and for AdamW the rounding of
// the float decay factor and of p * decay. The rms floor covers elements
// whose update cancels to near zero.
static double max_step_excess(const std::vector<float>& pf, const std::vector<double>& pd,
                              const std::vector<double>& p0) {
  std::vector<double> u(pd.size());
  for (std::size_t i = 0; i < pd.size(); ++i) u[i] = pd[i] - p0[i];
  const double floor = 0.1 * rms(u);
  double worst = 0;
  for (std::size_t i = 0; i < pf.size(); ++i) {
    const double allowed = 1e-5 * (std::fabs(u[i]) + floor) + std::ldexp(std::fabs(pd[i]), -22) + 1e-30;
    const double e = std::fabs(double(pf[i]) - pd[i]) / allowed;
    if (!(e <= worst)) worst = e;
  }
  return worst;  // must be <= 1
}

static bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

static double max_rel_ff(const std::vector<float>& a, const std::vector<float>& b) { return max_rel(a, to_d(b)); }

// ------------------------------------------------------------------ SGD

static float absmax(const std::vector<float>& a) {
  float m = 0.f;
  for (float x : a) m = std::max(m, std::fabs(x));
  return m;
}

struct SgdState {
  std::vector<float> p, buf;
  OptimMaxima mx;  // the last step's maxima of |p| and |buf| (the divergence guard's)
};

static SgdState run_sgd_float(const std::vector<float>& p0, const std::vector<std::vector<float>>& grads,
                              const SGDConfig& c) {
  SgdState s{p0, std::vector<float>(p0.size(), 0.f), {}};
  for (std::size_t t = 0; t < grads.size(); ++t) {
    s.mx = OptimMaxima{};
    sgd_update(s.p.data(), grads[t].data(), c.momentum != 0.f ? s.buf.data() : nullptr, s.p.size(), c, long(t + 1),
               &s.mx);
  }
  return s;
}

static void test_sgd_variant(const char* name, const SGDConfig& c) {
  const std::size_t sizes[] = {1, 17, 1000, 100003};
  const int steps = 5;
  std::mt19937 rng(1234);
  for (std::size_t n : sizes) {
    const std::vector<float> p0 = randn(n, rng, 1.f);
    std::vector<std::vector<float>> grads;
    for (int t = 0; t < steps; ++t) grads.push_back(randn(n, rng, 1.f));

    // Trajectory: float kernel vs double reference, several steps; plus a
    // one-step check from the float state at every step.
    std::vector<float> pf = p0, bf(n, 0.f);
    std::vector<double> pd = to_d(p0), bd(n, 0.0);
    double worst_traj = 0, worst_buf = 0, worst_step = 0;
    for (int t = 0; t < steps; ++t) {
      const long step = t + 1;
      std::vector<double> p1 = to_d(pf), b1 = to_d(bf);
      const std::vector<double> p1_start = p1;
      sgd_update_ref(p1.data(), to_d(grads[t]).data(), b1.data(), n, c, step);
      sgd_update(pf.data(), grads[t].data(), c.momentum != 0.f ? bf.data() : nullptr, n, c, step);
      sgd_update_ref(pd.data(), to_d(grads[t]).data(), bd.data(), n, c, step);
      worst_step = std::max(worst_step, max_step_excess(pf, p1, p1_start));
      worst_traj = std::max(worst_traj, max_rel(pf, pd));
      if (c.momentum != 0.f) worst_buf = std::max(worst_buf, max_rel(bf, bd));
    }
    CHECK(worst_traj < 1e-5, "SGD %s n=%zu param rel err %.3g", name, n, worst_traj);
    CHECK(worst_buf < 1e-5, "SGD %s n=%zu momentum rel err %.3g", name, n, worst_buf);
    CHECK(worst_step <= 1.0, "SGD %s n=%zu single-step excess %.3g", name, n, worst_step);

    // Every SIMD level vs scalar.
    const OptimSimd best = optim_best_simd_level();
    optim_set_simd_level(OptimSimd::Scalar);
    const SgdState ref = run_sgd_float(p0, grads, c);
    for (int l = 1; l <= int(best); ++l) {
      optim_set_simd_level(OptimSimd(l));
      const SgdState s = run_sgd_float(p0, grads, c);
      const double e = std::max(max_rel_ff(s.p, ref.p), max_rel_ff(s.buf, ref.buf));
      CHECK(e < 1e-6, "SGD %s n=%zu %s vs scalar rel %.3g", name, n, optim_simd_name(OptimSimd(l)), e);
      CHECK(kExpectBitwise ? bitwise_equal(s.p, ref.p) && bitwise_equal(s.buf, ref.buf) : true,
            "SGD %s n=%zu %s not bitwise equal to scalar", name, n, optim_simd_name(OptimSimd(l)));
      CHECK(s.mx.p == absmax(s.p) && s.mx.m == (c.momentum != 0.f ? absmax(s.buf) : 0.f),
            "SGD %s n=%zu %s maxima %g %g, the arrays' %g %g", name, n, optim_simd_name(OptimSimd(l)), s.mx.p, s.mx.m,
            absmax(s.p), absmax(s.buf));
    }
    CHECK(ref.mx.p == absmax(ref.p), "SGD %s n=%zu scalar maximum %g, the array's %g", name, n, ref.mx.p,
          absmax(ref.p));
    optim_set_simd_level(best);
  }
  std::printf("ok  SGD %-22s\n", name);
}

// ------------------------------------------------------------------ Adam

struct AdamState {
  std::vector<float> p, m, v, vmax;
  OptimMaxima mx;  // the last step's maxima of |p|, |m| and v (vmax under AMSGrad)
};

static AdamState run_adam_float(const std::vector<float>& p0, const std::vector<std::vector<float>>& grads,
                                const AdamConfig& c) {
  const std::size_t n = p0.size();
  AdamState s{p0, std::vector<float>(n, 0.f), std::vector<float>(n, 0.f), std::vector<float>(n, 0.f), {}};
  for (std::size_t t = 0; t < grads.size(); ++t) {
    s.mx = OptimMaxima{};
    adam_update(s.p.data(), grads[t].data(), s.m.data(), s.v.data(), c.amsgrad ? s.vmax.data() : nullptr, n, c,
                long(t + 1), &s.mx);
  }
  return s;
}

static void test_adam_variant(const char* name, const AdamConfig& c) {
  const std::size_t sizes[] = {1, 17, 1000, 100003};
  const int steps = 6;
  std::mt19937 rng(99);
  for (std::size_t n : sizes) {
    const std::vector<float> p0 = randn(n, rng, 1.f);
    std::vector<std::vector<float>> grads;
    // Varying gradient scale so AMSGrad's max actually matters.
    for (int t = 0; t < steps; ++t) grads.push_back(randn(n, rng, (t % 2 == 0) ? 1.f : 0.1f));

    std::vector<float> pf = p0, mf(n, 0.f), vf(n, 0.f), xf(n, 0.f);
    std::vector<double> pd = to_d(p0), md(n, 0.0), vd(n, 0.0), xd(n, 0.0);
    double w_p = 0, w_m = 0, w_v = 0, w_x = 0, w_step = 0;
    for (int t = 0; t < steps; ++t) {
      const long step = t + 1;
      const std::vector<double> gd = to_d(grads[t]);
      std::vector<double> p1 = to_d(pf), m1 = to_d(mf), v1 = to_d(vf), x1 = to_d(xf);
      const std::vector<double> p1_start = p1;
      adam_update_ref(p1.data(), gd.data(), m1.data(), v1.data(), x1.data(), n, c, step);
      adam_update(pf.data(), grads[t].data(), mf.data(), vf.data(), c.amsgrad ? xf.data() : nullptr, n, c, step);
      adam_update_ref(pd.data(), gd.data(), md.data(), vd.data(), xd.data(), n, c, step);
      w_step = std::max(w_step, max_step_excess(pf, p1, p1_start));
      w_p = std::max(w_p, max_rel(pf, pd));
      w_m = std::max(w_m, max_rel(mf, md));
      w_v = std::max(w_v, max_rel(vf, vd));
      if (c.amsgrad) w_x = std::max(w_x, max_rel(xf, xd));
    }
    CHECK(w_p < 1e-5, "Adam %s n=%zu param rel err %.3g", name, n, w_p);
    CHECK(w_m < 1e-5, "Adam %s n=%zu m rel err %.3g", name, n, w_m);
    CHECK(w_v < 1e-5, "Adam %s n=%zu v rel err %.3g", name, n, w_v);
    CHECK(w_x < 1e-5, "Adam %s n=%zu vmax rel err %.3g", name, n, w_x);
    CHECK(w_step <= 1.0, "Adam %s n=%zu single-step excess %.3g", name, n, w_step);

    const OptimSimd best = optim_best_simd_level();
    optim_set_simd_level(OptimSimd::Scalar);
    const AdamState ref = run_adam_float(p0, grads, c);
    for (int l = 1; l <= int(best); ++l) {
      optim_set_simd_level(OptimSimd(l));
      const AdamState s = run_adam_float(p0, grads, c);
      double e = std::max(max_rel_ff(s.p, ref.p), max_rel_ff(s.m, ref.m));
      e = std::max(e, std::max(max_rel_ff(s.v, ref.v), max_rel_ff(s.vmax, ref.vmax)));
      CHECK(e < 1e-6, "Adam %s n=%zu %s vs scalar rel %.3g", name, n, optim_simd_name(OptimSimd(l)), e);
      CHECK(kExpectBitwise ? bitwise_equal(s.p, ref.p) && bitwise_equal(s.m, ref.m) && bitwise_equal(s.v, ref.v) &&
                                 bitwise_equal(s.vmax, ref.vmax)
                           : true,
            "Adam %s n=%zu %s not bitwise equal to scalar", name, n, optim_simd_name(OptimSimd(l)));
      CHECK(s.mx.p == ref.mx.p && s.mx.m == ref.mx.m && s.mx.v == ref.mx.v,
            "Adam %s n=%zu %s maxima differ from scalar", name, n, optim_simd_name(OptimSimd(l)));
    }
    CHECK(ref.mx.p == absmax(ref.p) && ref.mx.m == absmax(ref.m) && ref.mx.v == absmax(c.amsgrad ? ref.vmax : ref.v),
          "Adam %s n=%zu scalar maxima %g %g %g", name, n, ref.mx.p, ref.mx.m, ref.mx.v);
    optim_set_simd_level(best);
  }
  std::printf("ok  Adam %-21s\n", name);
}

// ---------------------------------------------------------- hand values

static bool near(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

static void test_hand_values() {
  {  // plain SGD: 1 - 0.1*0.5
    SGDConfig c;
    c.lr = 0.1f;
    float p = 1.f, g = 0.5f;
    sgd_update(&p, &g, nullptr, 1, c, 1);
    CHECK(near(p, 0.95, 1e-7), "plain sgd p=%.9g", p);
    c.weight_decay = 0.1f;  // d = 0.5 + 0.1*1 = 0.6
    p = 1.f;
    sgd_update(&p, &g, nullptr, 1, c, 1);
    CHECK(near(p, 0.94, 1e-7), "sgd wd p=%.9g", p);
  }
  {  // first momentum step == plain step; buf = d; dampening ignored there
    SGDConfig plain;
    plain.lr = 0.1f;
    plain.weight_decay = 0.01f;
    SGDConfig mom = plain;
    mom.momentum = 0.9f;
    mom.dampening = 0.5f;
    std::mt19937 rng(5);
    const std::vector<float> p0 = randn(1000, rng, 1.f);
    const std::vector<float> g = randn(1000, rng, 1.f);
    std::vector<float> pa = p0, pb = p0, buf(1000, 123.f);
    sgd_update(pa.data(), g.data(), nullptr, 1000, plain, 1);
    sgd_update(pb.data(), g.data(), buf.data(), 1000, mom, 1);
    CHECK(bitwise_equal(pa, pb), "first momentum step != plain step");
    bool buf_ok = true;
    for (int i = 0; i < 1000; ++i) {
      const double want = double(g[i]) + double(0.01f) * double(p0[i]);
      buf_ok = buf_ok && near(buf[i], want, 1e-6 * (std::fabs(want) + 1.0));
    }
    CHECK(buf_ok, "first momentum step: buf != g + wd*p");
  }
  {  // momentum 0.9, lr 0.1, g = 1 twice: p = 0.9, then buf 1.9, p = 0.71
    SGDConfig c;
    c.lr = 0.1f;
    c.momentum = 0.9f;
    float p = 1.f, g = 1.f, b = 0.f;
    sgd_update(&p, &g, &b, 1, c, 1);
    CHECK(near(p, 0.9, 1e-7) && b == 1.f, "mom step1 p=%.9g b=%.9g", p, b);
    sgd_update(&p, &g, &b, 1, c, 2);
    CHECK(near(p, 0.71, 1e-6) && near(b, 1.9, 1e-6), "mom step2 p=%.9g b=%.9g", p, b);
    // dampening 0.5: step 2 buf = 0.9 + 0.5 = 1.4, p = 0.9 - 0.14 = 0.76
    c.dampening = 0.5f;
    p = 1.f;
    b = 0.f;
    sgd_update(&p, &g, &b, 1, c, 1);
    sgd_update(&p, &g, &b, 1, c, 2);
    CHECK(near(p, 0.76, 1e-6) && near(b, 1.4, 1e-6), "dampening step2 p=%.9g b=%.9g", p, b);
    // nesterov step 1: buf = 1, d = 1 + 0.9*1 = 1.9, p = 0.81;
    // step 2: buf = 1.9, d = 1 + 0.9*1.9 = 2.71, p = 0.81 - 0.271 = 0.539
    c.dampening = 0.f;
    c.nesterov = true;
    p = 1.f;
    b = 0.f;
    sgd_update(&p, &g, &b, 1, c, 1);
    CHECK(near(p, 0.81, 1e-6), "nesterov step1 p=%.9g", p);
    sgd_update(&p, &g, &b, 1, c, 2);
    CHECK(near(p, 0.539, 1e-6), "nesterov step2 p=%.9g", p);
  }
  {  // Adam first step moves each param by ~lr*sign(g)
    AdamConfig c;
    std::vector<float> p = {1.f, 1.f, -2.f}, g = {0.3f, -5.f, 1e-3f}, m(3, 0.f), v(3, 0.f);
    adam_update(p.data(), g.data(), m.data(), v.data(), nullptr, 3, c, 1);
    CHECK(near(p[0], 1.0 - 1e-3, 1e-6), "adam1 p0=%.9g", p[0]);
    CHECK(near(p[1], 1.0 + 1e-3, 1e-6), "adam1 p1=%.9g", p[1]);
    CHECK(near(p[2], -2.0 - 1e-3, 1e-6), "adam1 p2=%.9g", p[2]);
    // m = (1-b1)*g, v = (1-b2)*g^2 with the float-rounded betas
    const double wm = (1.0 - double(0.9f)) * double(0.3f);
    const double wv = (1.0 - double(0.999f)) * double(0.3f) * double(0.3f);
    CHECK(near(m[0], wm, 1e-6 * wm) && near(v[0], wv, 1e-6 * wv), "adam1 m=%.9g (%.9g) v=%.9g (%.9g)", m[0], wm, v[0],
          wv);
  }
  {  // AdamW with g = 0: only the decay acts: 2*(1 - 1e-3*0.1) = 1.9998
    AdamConfig c;
    c.weight_decay = 0.1f;
    c.decoupled = true;
    float p = 2.f, g = 0.f, m = 0.f, v = 0.f;
    adam_update(&p, &g, &m, &v, nullptr, 1, c, 1);
    CHECK(near(p, 1.9998, 1e-6) && m == 0.f && v == 0.f, "adamw p=%.9g", p);
    // coupled Adam with g = 0: d = wd*p = 0.2, first step moves by ~lr
    c.decoupled = false;
    p = 2.f;
    adam_update(&p, &g, &m, &v, nullptr, 1, c, 1);
    CHECK(near(p, 1.999, 1e-6), "adam wd p=%.9g", p);
  }
  {  // AMSGrad keeps the running max of v
    AdamConfig c;
    c.amsgrad = true;
    float p = 0.f, m = 0.f, v = 0.f, vmax = 0.f;
    float g = 10.f;
    adam_update(&p, &g, &m, &v, &vmax, 1, c, 1);
    const float v1 = v;
    CHECK(vmax == v1, "amsgrad step1 vmax=%.9g v=%.9g", vmax, v);
    g = 0.f;
    adam_update(&p, &g, &m, &v, &vmax, 1, c, 2);
    CHECK(v < v1 && vmax == v1, "amsgrad step2 vmax=%.9g v=%.9g", vmax, v);
  }
  {  // n == 0 is a no-op even with null buffers
    SGDConfig s;
    s.momentum = 0.9f;
    sgd_update(nullptr, nullptr, nullptr, 0, s, 1);
    AdamConfig a;
    a.amsgrad = true;
    adam_update(nullptr, nullptr, nullptr, nullptr, nullptr, 0, a, 1);
    CHECK(true, "n=0");
  }
  std::printf("ok  hand-computed values\n");
}

// ---------------------------------------------------------- invalid args

static bool throws(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

static void test_invalid() {
  float p = 1.f, g = 1.f, b = 0.f, m = 0.f, v = 0.f;
  auto sgd = [&](SGDConfig c, float* buf, long step) { return throws([&] { sgd_update(&p, &g, buf, 1, c, step); }); };
  SGDConfig c;
  CHECK(!sgd(c, nullptr, 1), "valid plain SGD threw");
  c.lr = -0.1f;
  CHECK(sgd(c, nullptr, 1), "negative lr");
#ifndef __FAST_MATH__  // -ffast-math assumes NaN never occurs
  c = SGDConfig();
  c.lr = NAN;
  CHECK(sgd(c, nullptr, 1), "NaN lr");
#endif
  c = SGDConfig();
  c.momentum = -0.5f;
  CHECK(sgd(c, &b, 1), "negative momentum");
  c = SGDConfig();
  c.weight_decay = -1.f;
  CHECK(sgd(c, nullptr, 1), "negative weight decay");
  c = SGDConfig();
  c.nesterov = true;
  CHECK(sgd(c, &b, 1), "nesterov without momentum");
  c.momentum = 0.9f;
  c.dampening = 0.1f;
  CHECK(sgd(c, &b, 1), "nesterov with dampening");
  c.dampening = 0.f;
  CHECK(!sgd(c, &b, 1), "valid nesterov threw");
  CHECK(sgd(c, nullptr, 1), "momentum without buffer");
  CHECK(sgd(c, &b, 0), "step 0");
  CHECK(throws([&] { sgd_update_ref(nullptr, nullptr, nullptr, 0, SGDConfig{-1.f}, 1); }), "ref negative lr");

  const float p_before = p;
  auto adam = [&](AdamConfig a, float* vmax, long step) {
    return throws([&] { adam_update(&p, &g, &m, &v, vmax, 1, a, step); });
  };
  AdamConfig a;
  a.lr = -1e-3f;
  CHECK(adam(a, nullptr, 1), "adam negative lr");
  a = AdamConfig();
  a.beta1 = 1.f;
  CHECK(adam(a, nullptr, 1), "beta1 = 1");
  a = AdamConfig();
  a.beta2 = -0.1f;
  CHECK(adam(a, nullptr, 1), "negative beta2");
  a = AdamConfig();
  a.eps = -1e-8f;
  CHECK(adam(a, nullptr, 1), "negative eps");
  a = AdamConfig();
  a.weight_decay = -0.01f;
  CHECK(adam(a, nullptr, 1), "negative adam wd");
  a = AdamConfig();
  CHECK(adam(a, nullptr, 0), "adam step 0");
  a.amsgrad = true;
  CHECK(adam(a, nullptr, 1), "amsgrad without vmax");
  CHECK(p == p_before && m == 0.f && v == 0.f, "buffers touched on error");
  CHECK(throws([&] { adam_update(&p, &g, nullptr, &v, nullptr, 1, AdamConfig(), 1); }), "adam without m");
  std::printf("ok  invalid arguments throw\n");
}

// ---------------------------------------------------------- threading

static void test_thread_independence() {
#ifdef _OPENMP
  const std::size_t n = (std::size_t(1) << 20) + 37;
  std::mt19937 rng(7);
  const std::vector<float> p0 = randn(n, rng, 1.f);
  std::vector<std::vector<float>> grads = {randn(n, rng, 1.f), randn(n, rng, 1.f), randn(n, rng, 1.f)};
  SGDConfig s;
  s.momentum = 0.9f;
  s.nesterov = true;
  s.weight_decay = 1e-4f;
  AdamConfig a;
  a.weight_decay = 0.01f;
  a.decoupled = true;
  a.amsgrad = true;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const SgdState s1 = run_sgd_float(p0, grads, s);
  const AdamState a1 = run_adam_float(p0, grads, a);
  omp_set_num_threads(std::max(4, saved));
  const SgdState s4 = run_sgd_float(p0, grads, s);
  const AdamState a4 = run_adam_float(p0, grads, a);
  omp_set_num_threads(saved);
  CHECK(bitwise_equal(s1.p, s4.p) && bitwise_equal(s1.buf, s4.buf), "SGD result depends on thread count");
  CHECK(bitwise_equal(a1.p, a4.p) && bitwise_equal(a1.m, a4.m) && bitwise_equal(a1.v, a4.v) &&
            bitwise_equal(a1.vmax, a4.vmax),
        "Adam result depends on thread count");
  std::printf("ok  thread-count independence\n");
#else
  std::printf("--  thread-count independence skipped (no OpenMP)\n");
#endif
}

int main() {
  std::printf("SIMD path: %s (best %s)\n", optim_simd_name(optim_simd_level()),
              optim_simd_name(optim_best_simd_level()));

  SGDConfig s;
  s.lr = 0.05f;
  test_sgd_variant("plain", s);
  s.weight_decay = 1e-2f;
  test_sgd_variant("weight decay", s);
  s.weight_decay = 0.f;
  s.momentum = 0.9f;
  test_sgd_variant("momentum", s);
  s.dampening = 0.3f;
  test_sgd_variant("momentum+dampening", s);
  s.dampening = 0.f;
  s.nesterov = true;
  test_sgd_variant("nesterov", s);
  s.weight_decay = 5e-3f;
  test_sgd_variant("nesterov+wd", s);
  s.nesterov = false;
  s.dampening = 0.1f;
  test_sgd_variant("momentum+damp+wd", s);

  AdamConfig a;
  a.lr = 1e-2f;
  test_adam_variant("adam", a);
  a.weight_decay = 1e-2f;
  test_adam_variant("adam+wd", a);
  a.decoupled = true;
  test_adam_variant("adamw", a);
  a.decoupled = false;
  a.weight_decay = 0.f;
  a.amsgrad = true;
  test_adam_variant("amsgrad", a);
  a.decoupled = true;
  a.weight_decay = 0.05f;
  test_adam_variant("adamw+amsgrad", a);
  AdamConfig lowb;  // beta1 < 0.5 exercises the other lerp branch
  lowb.beta1 = 0.3f;
  lowb.beta2 = 0.5f;
  lowb.eps = 1e-6f;
  test_adam_variant("low betas", lowb);

  test_hand_values();
  test_invalid();
  test_thread_independence();

  std::printf("%s: %d checks, %d failures\n", g_fail ? "FAILED" : "PASSED", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
