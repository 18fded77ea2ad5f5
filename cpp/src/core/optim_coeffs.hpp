// The optimizer's argument checks and per-call coefficients, shared by every backend's update kernels
// (host/optim.cpp, cuda/optim.cu) so that they compute the same floats: the scalar coefficients (bias
// corrections, step size, 1 - lr*wd) are computed in double and rounded to float once, as PyTorch does.
#pragma once
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "core/optim_config.hpp"

namespace cnn::optim_detail {

[[noreturn]] inline void bad(const std::string& what) { throw std::invalid_argument("cnn optim: " + what); }

inline bool finite_nonneg(float x) { return std::isfinite(x) && x >= 0.f; }

inline void check_sgd(const void* p, const void* g, const void* buf, size_t n, const SGDConfig& c, long step) {
  if (!finite_nonneg(c.lr)) bad("SGD learning rate must be finite and >= 0");
  if (!finite_nonneg(c.momentum)) bad("SGD momentum must be finite and >= 0");
  if (!std::isfinite(c.dampening)) bad("SGD dampening must be finite");
  if (!finite_nonneg(c.weight_decay)) bad("SGD weight_decay must be finite and >= 0");
  if (c.nesterov && (c.momentum <= 0.f || c.dampening != 0.f))
    bad("Nesterov momentum requires a momentum > 0 and zero dampening");
  if (step < 1) bad("step must be >= 1 (1-based count of updates)");
  if (n > 0) {
    if (p == nullptr || g == nullptr) bad("null parameter or gradient buffer");
    if (c.momentum != 0.f && buf == nullptr) bad("SGD with momentum needs a momentum buffer");
  }
}

inline void check_adam(const void* p, const void* g, const void* m, const void* v, const void* vmax, size_t n,
                       const AdamConfig& c, long step) {
  if (!finite_nonneg(c.lr)) bad("Adam learning rate must be finite and >= 0");
  if (!finite_nonneg(c.eps)) bad("Adam eps must be finite and >= 0");
  if (!(c.beta1 >= 0.f && c.beta1 < 1.f)) bad("Adam beta1 must be in [0, 1)");
  if (!(c.beta2 >= 0.f && c.beta2 < 1.f)) bad("Adam beta2 must be in [0, 1)");
  if (!finite_nonneg(c.weight_decay)) bad("Adam weight_decay must be finite and >= 0");
  if (step < 1) bad("step must be >= 1 (1-based count of updates)");
  if (n > 0) {
    if (p == nullptr || g == nullptr) bad("null parameter or gradient buffer");
    if (m == nullptr || v == nullptr) bad("Adam needs m and v buffers");
    if (c.amsgrad && vmax == nullptr) bad("AMSGrad needs a vmax buffer");
  }
}

// per-call coefficients

struct SgdK {
  float lr, wd, mu, omd;  // omd = 1 - dampening
  bool has_wd;
  int mom;  // 0: no momentum, 1: first step (buf = d), 2: buf = mu*buf + omd*d
  bool nesterov;
};

inline SgdK make_sgd(const SGDConfig& c, long step) {
  SgdK k;
  k.lr = c.lr;
  k.wd = c.weight_decay;
  k.mu = c.momentum;
  k.omd = static_cast<float>(1.0 - static_cast<double>(c.dampening));
  k.has_wd = c.weight_decay != 0.f;
  k.mom = c.momentum == 0.f ? 0 : (step == 1 ? 1 : 2);
  k.nesterov = c.nesterov;
  return k;
}

struct AdamK {
  float decay;  // AdamW: p *= decay (= 1 - lr*wd)
  bool has_decay;
  float wd;  // Adam: d = g + wd*p
  bool has_wd;
  float w1, omw1;  // lerp weight 1-b1 and 1-w1
  bool lerp_lo;    // |w1| < 0.5: m + w1*(d-m), else d - (d-m)*omw1
  float b2, omb2;
  float step_size, bc2s, eps;
  bool ams;
};

inline AdamK make_adam(const AdamConfig& c, long step) {
  const double lr = c.lr, wd = c.weight_decay, b1 = c.beta1, b2 = c.beta2;
  const double t = static_cast<double>(step);
  AdamK k;
  k.has_decay = c.decoupled && c.weight_decay != 0.f;
  k.decay = static_cast<float>(1.0 - lr * wd);
  k.has_wd = !c.decoupled && c.weight_decay != 0.f;
  k.wd = c.weight_decay;
  k.w1 = static_cast<float>(1.0 - b1);
  k.omw1 = 1.f - k.w1;
  k.lerp_lo = std::fabs(k.w1) < 0.5f;
  k.b2 = c.beta2;
  k.omb2 = static_cast<float>(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, t);
  const double bc2 = 1.0 - std::pow(b2, t);
  k.step_size = static_cast<float>(lr / bc1);
  k.bc2s = static_cast<float>(std::sqrt(bc2));
  k.eps = c.eps;
  k.ams = c.amsgrad;
  return k;
}

}  // namespace cnn::optim_detail
