// Optimizer hyper-parameters and the maxima an update reports: the vocabulary shared by the session's guarded
// update (core/session.cpp) and every backend's update kernels (Backend::sgd_update / adam_update). Plain data.
#pragma once

namespace cnn {

struct SGDConfig {
  float lr = 0.01f;
  float momentum = 0.f;
  float dampening = 0.f;
  float weight_decay = 0.f;
  bool nesterov = false;
};

struct AdamConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.f;
  bool decoupled = false;  // true = AdamW (decoupled weight decay)
  bool amsgrad = false;
};

// Largest magnitudes written by an update (for the session's overflow bounds, see session.cpp): p = max |p|,
// m = max |momentum_buf| or max |m|, v = max v (max vmax with amsgrad). Thread-count independent.
struct OptimMaxima {
  float p = 0, m = 0, v = 0;
};

}  // namespace cnn
