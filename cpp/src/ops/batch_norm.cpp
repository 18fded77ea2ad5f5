// Batch normalization (torch.nn.BatchNorm2d): batch_norm(x [N,C,H,W] or [N,C], gamma, beta, running_mean,
// running_var; eps, momentum, training, track_running_stats) -> y, plus save_mean and save_var (biased) [C]
// when training. Side effect, deliberate: training with track_running_stats updates inputs 3 and 4 in place
// (rm = (1-momentum) rm + momentum mean, rv likewise with the unbiased variance). training=0 uses the running
// stats. batch_norm_grad(dy, x, gamma, mean, var; eps, training) -> dx, dgamma, dbeta; y/dx may alias x/dy.
// sync=1 (both ops, torch.nn.SyncBatchNorm): in a data-parallel training run (RunCtx::allreduce set) the batch
// statistics and dx's correction sums are the whole job's; dgamma/dbeta stay this process's (the gradient
// exchange sums them). Without an allreduce (one process) sync=1 is plain batch normalization.
#include <cmath>
#include <vector>

#include "core/op.hpp"

namespace cnn {
namespace {

// x viewed as [N, C, S] with S = H*W (1 for [N, C]).
struct Dims {
  int64_t N, C, S;
  explicit Dims(const Shape& x) : N(x[0]), C(x[1]), S(x.size() == 4 ? x[2] * x[3] : 1) {}
  int64_t per_channel() const { return N * S; }
};

void check_attrs(const Node& n) {
  for (const char* k : {"eps", "momentum"})
    if (n.attrs.ints.count(k)) op_error(n, std::string("attribute '") + k + "' must be a float");
  for (const char* k : {"training", "track_running_stats", "sync"}) {
    int64_t v = n.attrs.i(k, 0);
    if (v != 0 && v != 1) op_error(n, std::string("attribute '") + k + "' must be 0 or 1, got " + std::to_string(v));
  }
  if (!(n.attrs.f("eps", 1e-5) >= 0)) op_error(n, "eps must be >= 0");
}

// in[xi] is x; every later input is a per-channel [C] tensor.
void check_channels(const Node& n, const std::vector<TensorDesc>& in, const char* const* names, size_t xi) {
  const Shape& xs = in[xi].shape;
  if (xs.size() != 4 && xs.size() != 2) op_error(n, "x must be [N, C, H, W] or [N, C], got " + shape_str(xs));
  Shape cs{xs[1]};
  for (size_t i = 0; i < in.size(); ++i)
    if (!is_float(in[i].dtype))
      op_error(n, std::string(names[i]) + " must be a float tensor, got " + dtype_name(in[i].dtype));
  for (size_t i = xi + 1; i < in.size(); ++i)
    if (in[i].shape != cs)
      op_error(n, std::string(names[i]) + " must be " + shape_str(cs) + " (C of x " + shape_str(xs) + "), got " +
                      shape_str(in[i].shape));
}

std::vector<TensorDesc> infer_fwd(const Node& n, const std::vector<TensorDesc>& in) {
  static const char* const names[] = {"x", "gamma", "beta", "running_mean", "running_var"};
  if (in.size() != 5) op_error(n, "expects 5 inputs (x, gamma, beta, running_mean, running_var), got " + descs_str(in));
  check_attrs(n);
  check_channels(n, in, names, 0);
  const bool training = n.attrs.i("training", 0);
  if (training && Dims(in[0].shape).per_channel() <= 1)
    op_error(n, "training needs more than 1 value per channel, got x " + shape_str(in[0].shape));
  if (!training) return {in[0]};
  TensorDesc stat{Shape{in[0].shape[1]}, in[0].dtype};
  return {in[0], stat, stat};
}

std::vector<TensorDesc> infer_bwd(const Node& n, const std::vector<TensorDesc>& in) {
  static const char* const names[] = {"dy", "x", "gamma", "mean", "var"};
  if (in.size() != 5) op_error(n, "expects 5 inputs (dy, x, gamma, mean, var), got " + descs_str(in));
  check_attrs(n);
  if (in[0].shape != in[1].shape)
    op_error(n, "dy must have x's shape " + shape_str(in[1].shape) + ", got " + shape_str(in[0].shape));
  check_channels(n, in, names, 1);
  return {in[1], in[2], in[2]};
}

template <class T>
struct FwdRef {
  static void run(const RefArgs<T>& a) {
    const Dims d(a.in_shape(0));
    const bool training = a.attrs().i("training", 0);
    const bool track = a.attrs().i("track_running_stats", 1);
    const double eps = a.attrs().f("eps", 1e-5), mom = a.attrs().f("momentum", 0.1);
    const T *x = a.in(0), *gamma = a.in(1), *beta = a.in(2);
    T* rm = static_cast<T*>(a.r.in[3]);
    T* rv = static_cast<T*>(a.r.in[4]);
    T* y = a.out(0);
    const bool synced = training && a.attrs().i("sync", 0) && a.r.allreduce;
    double m = double(d.per_channel());
    // sync: the job's per-channel sums and count, then its sums of squares about the job's mean
    std::vector<double> gsum, gsq;
    if (synced) {
      gsum.assign(size_t(d.C + 1), 0.0);
      for (int64_t c = 0; c < d.C; ++c)
        for (int64_t n = 0; n < d.N; ++n)
          for (int64_t s = 0; s < d.S; ++s) gsum[size_t(c)] += x[(n * d.C + c) * d.S + s];
      gsum[size_t(d.C)] = m;
      (*a.r.allreduce)(gsum.data(), gsum.size());
      m = gsum[size_t(d.C)];
      gsq.assign(size_t(d.C), 0.0);
      for (int64_t c = 0; c < d.C; ++c)
        for (int64_t n = 0; n < d.N; ++n)
          for (int64_t s = 0; s < d.S; ++s) {
            double t = x[(n * d.C + c) * d.S + s] - gsum[size_t(c)] / m;
            gsq[size_t(c)] += t * t;
          }
      (*a.r.allreduce)(gsq.data(), gsq.size());
    }
    for (int64_t c = 0; c < d.C; ++c) {
      double mean = rm[c], var = rv[c];
      if (training && synced) {
        mean = gsum[size_t(c)] / m;
        var = gsq[size_t(c)] / m;
      } else if (training) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < d.N; ++n)
          for (int64_t s = 0; s < d.S; ++s) sum += x[(n * d.C + c) * d.S + s];
        mean = sum / m;
        for (int64_t n = 0; n < d.N; ++n)
          for (int64_t s = 0; s < d.S; ++s) {
            double t = x[(n * d.C + c) * d.S + s] - mean;
            sq += t * t;
          }
        var = sq / m;
      }
      if (training) {
        a.out(1)[c] = T(mean);
        a.out(2)[c] = T(var);
        if (track) {
          rm[c] = T((1 - mom) * rm[c] + mom * mean);
          rv[c] = T((1 - mom) * rv[c] + mom * var * m / (m - 1));
        }
      }
      const double scale = double(gamma[c]) / std::sqrt(var + eps);
      for (int64_t n = 0; n < d.N; ++n)
        for (int64_t s = 0; s < d.S; ++s) {
          int64_t i = (n * d.C + c) * d.S + s;
          y[i] = T((x[i] - mean) * scale + beta[c]);
        }
    }
  }
};

template <class T>
struct BwdRef {
  static void run(const RefArgs<T>& a) {
    const Dims d(a.in_shape(1));
    const bool training = a.attrs().i("training", 0);
    const double eps = a.attrs().f("eps", 1e-5);
    const T *dy = a.in(0), *x = a.in(1), *gamma = a.in(2), *mean = a.in(3), *var = a.in(4);
    T *dx = a.out(0), *dgamma = a.out(1), *dbeta = a.out(2);
    double m = double(d.per_channel());
    // per channel: sum dy, sum dy * xhat (this process's; with sync, dx uses the job's)
    std::vector<double> sums(size_t(2 * d.C + 1), 0.0);
    for (int64_t c = 0; c < d.C; ++c) {
      const double mu = mean[c], inv = 1 / std::sqrt(double(var[c]) + eps);
      for (int64_t n = 0; n < d.N; ++n)
        for (int64_t s = 0; s < d.S; ++s) {
          int64_t i = (n * d.C + c) * d.S + s;
          sums[size_t(c)] += dy[i];
          sums[size_t(d.C + c)] += double(dy[i]) * (x[i] - mu) * inv;
        }
      dbeta[c] = T(sums[size_t(c)]);
      dgamma[c] = T(sums[size_t(d.C + c)]);
    }
    if (training && a.attrs().i("sync", 0) && a.r.allreduce) {
      sums[size_t(2 * d.C)] = m;
      (*a.r.allreduce)(sums.data(), sums.size());
      m = sums[size_t(2 * d.C)];
    }
    for (int64_t c = 0; c < d.C; ++c) {
      const double mu = mean[c], inv = 1 / std::sqrt(double(var[c]) + eps);
      const double sdy = sums[size_t(c)], sdyxhat = sums[size_t(d.C + c)];
      const double g = double(gamma[c]) * inv;
      for (int64_t n = 0; n < d.N; ++n)
        for (int64_t s = 0; s < d.S; ++s) {
          int64_t i = (n * d.C + c) * d.S + s;
          double v = dy[i];
          if (training) v -= (sdy + (x[i] - mu) * inv * sdyxhat) / m;
          dx[i] = T(g * v);
        }
    }
  }
};

struct Registrar {
  Registrar() {
    OpSchema f;
    f.name = "batch_norm";
    f.infer = infer_fwd;
    f.inplace = true;
    f.recompute = RecomputeClass::cheap;  // the rerun normalizes with the saved batch statistics
    f.grad = [](GradCtx& c) {
      const Node& n = c.node();
      const bool training = n.attrs.i("training", 0);
      if (c.dy(0) < 0 || (training && (c.dy(1) >= 0 || c.dy(2) >= 0)))
        op_error(n, "gradients flow only through y, not through save_mean/save_var");
      Attrs a;
      a.floats["eps"] = n.attrs.f("eps", 1e-5);
      a.ints["training"] = {training ? 1 : 0};
      if (n.attrs.i("sync", 0)) a.ints["sync"] = {1};
      std::vector<int> ins{c.dy(0), c.input(0), c.input(1), training ? c.output(1) : c.input(3),
                           training ? c.output(2) : c.input(4)};
      std::vector<int> g = c.emit("batch_norm_grad", ins, a);
      for (int i = 0; i < 3; ++i)
        if (c.need_dx(i)) c.set_dx(i, g[i]);
    };
    f.ref = ref_kernel<FwdRef>();
    register_op(f);

    OpSchema b;
    b.name = "batch_norm_grad";
    b.infer = infer_bwd;
    b.inplace = true;
    b.ref = ref_kernel<BwdRef>();
    register_op(b);
  }
} registrar;

}  // namespace
}  // namespace cnn
