// A toy backend, "ref2", built as its own shared library against the backend interface alone (no edit to any
// core file): it wraps every op's reference kernel, and its memory is "device" memory the host may not touch
// (host_accessible() is false), so the session copies inputs in, fetches out and mirrors the parameter store.
// The memory is ordinary host memory underneath, allocated and freed by the backend itself, and every copy is
// counted, so tests/test_backend_seam.py can check that the session went through the seam.
//
// Loaded into a process (ctypes.CDLL(..., RTLD_GLOBAL)) after libcnnnative, its static initializer registers the
// kernels and the backend; compile(backend="ref2") then uses it.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "core/backend.hpp"
#include "core/op.hpp"
#include "host/optim.hpp"

namespace {

std::atomic<long> g_allocs{0}, g_frees{0}, g_copies_in{0}, g_copies_out{0}, g_runs{0}, g_captures{0}, g_replays{0};

// "ref2graph"'s stream: records kernel runs as a CUDA stream capture does (nothing runs while recording; a replay
// runs the recorded kernels with the buffers they were recorded with, and with this run's seed and step, as a
// device kernel reads them from Stream::set_run_info's device copy). So the session's segment recording, replay
// and re-recording run on the CPU exactly as they drive a GPU.
struct ToyStream : cnn::Stream {
  using Rec = std::function<void(uint64_t seed, int64_t step)>;
  bool capturing = false;
  std::vector<Rec> recording;
  std::vector<std::vector<Rec>> segments;
  uint64_t seed = 0;
  int64_t step = 0;
  void set_run_info(uint64_t s, int64_t t) override {
    seed = s;
    step = t;
  }
  bool can_capture() const override { return true; }
  void begin_capture() override {
    if (capturing) throw cnn::Error("ref2graph: capture already in progress");
    capturing = true;
    recording.clear();
  }
  void end_capture(int segment) override {
    if (!capturing) throw cnn::Error("ref2graph: end_capture without begin_capture");
    capturing = false;
    if (int(segments.size()) <= segment) segments.resize(segment + 1);
    segments[segment] = std::move(recording);
    recording.clear();
    g_captures++;
  }
  void replay(int segment) override {
    if (segment >= int(segments.size()) || segments[segment].empty()) throw cnn::Error("ref2graph: replay of nothing");
    g_replays++;
    for (auto& r : segments[segment]) r(seed, step);
  }
  void drop_captures() override {
    capturing = false;
    recording.clear();
    segments.clear();
  }
};

void device_free(void* p) {
  g_frees++;
  std::free(p);
}

// Wraps a reference kernel: same arithmetic, reported as this backend's own.
struct Wrapped : cnn::Kernel {
  std::unique_ptr<cnn::Kernel> inner;
  explicit Wrapped(std::unique_ptr<cnn::Kernel> k) : inner(std::move(k)) {}
  size_t scratch_bytes() const override { return inner->scratch_bytes(); }
  size_t persistent_bytes() const override { return inner->persistent_bytes(); }
  void run(const cnn::RunCtx& r) override {
    if (auto* ts = dynamic_cast<ToyStream*>(r.stream); ts && ts->capturing) {
      cnn::RunCtx rc = r;  // the session's pointer tables are stable; seed and step come from the stream
      ts->recording.push_back([this, rc](uint64_t seed, int64_t step) {
        cnn::RunCtx c = rc;
        c.seed = seed;
        c.step = step;
        g_runs++;
        inner->run(c);
      });
      return;
    }
    g_runs++;
    inner->run(r);
  }
  std::string impl() const override { return "ref2"; }
};

class Ref2 : public cnn::Backend {
 public:
  explicit Ref2(const char* name = "ref2") : Backend(name) {}
  bool host_accessible() const override { return false; }
  cnn::Buffer allocate(size_t bytes) const override {
    g_allocs++;
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw cnn::Error("ref2: out of memory");
    std::memset(p, 0, (bytes + 63) / 64 * 64);
    return cnn::Buffer(p, cnn::BufferDeleter{device_free});
  }
  void copy_in(void* dst, const void* src, size_t bytes, cnn::Stream*) const override {
    g_copies_in++;
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_out(void* dst, const void* src, size_t bytes, cnn::Stream*) const override {
    g_copies_out++;
    if (bytes) std::memcpy(dst, src, bytes);
  }
  float absmax(const float* x, size_t n, bool* finite, cnn::Stream*) const override {
    return cnn::absmax(x, n, finite);
  }
  int64_t first_non_finite(const float* x, size_t n, cnn::Stream*) const override {
    for (size_t i = 0; i < n; ++i)
      if (!(x[i] - x[i] == 0)) return int64_t(i);
    return -1;
  }
  void sgd_update(float* p, const float* g, float* m, size_t n, const cnn::SGDConfig& c, long step,
                  cnn::OptimMaxima* maxima, cnn::Stream*) const override {
    cnn::sgd_update(p, g, m, n, c, step, maxima);
  }
  void adam_update(float* p, const float* g, float* m, float* v, float* vmax, size_t n, const cnn::AdamConfig& c,
                   long step, cnn::OptimMaxima* maxima, cnn::Stream*) const override {
    cnn::adam_update(p, g, m, v, vmax, n, c, step, maxima);
  }
  long sgd_first_non_finite(const float* p, const float* g, const float* m, size_t n, const cnn::SGDConfig& c,
                            long step, cnn::Stream*) const override {
    return cnn::sgd_first_non_finite(p, g, m, n, c, step);
  }
  long adam_first_non_finite(const float* p, const float* g, const float* m, const float* v, const float* vmax,
                             size_t n, const cnn::AdamConfig& c, long step, cnn::Stream*) const override {
    return cnn::adam_first_non_finite(p, g, m, v, vmax, n, c, step);
  }
};

// "ref2fast": the same in host-accessible memory, claiming fast kernels but registering none for relu, so a model
// with a ReLU falls back to the op's reference kernel there (a warning, or an error with strict=True).
class Ref2Fast : public Ref2 {
 public:
  Ref2Fast() : Ref2("ref2fast") {}
  bool has_fast_kernels() const override { return true; }
  bool host_accessible() const override { return true; }
};

// "ref2graph": ref2 with a stream that records and replays runs (ToyStream), as a CUDA graph does.
class Ref2Graph : public Ref2 {
 public:
  Ref2Graph() : Ref2("ref2graph") {}
  std::unique_ptr<cnn::Stream> make_stream(const cnn::StreamOptions& o) const override {
    if (!o.graphs) return nullptr;  // compile(cuda_graphs=False): plain eager runs
    return std::make_unique<ToyStream>();
  }
};

// "ref2partial": host-inaccessible memory and no relu kernel: the reference kernel cannot stand in (compile error).
class Ref2Partial : public Ref2 {
 public:
  Ref2Partial() : Ref2("ref2partial") {}
};

struct Init {
  Init() {
    for (const std::string& op : cnn::op_names()) {
      const cnn::KernelFactory ref = cnn::get_op(op).ref;
      if (!ref) continue;
      auto wrap = [ref](const cnn::KernelCtx& c) -> std::unique_ptr<cnn::Kernel> {
        return std::make_unique<Wrapped>(ref(c));
      };
      cnn::register_kernel("ref2", op, wrap);
      cnn::register_kernel("ref2graph", op, wrap);
      if (op != "relu") cnn::register_kernel("ref2fast", op, wrap);
      if (op != "relu") cnn::register_kernel("ref2partial", op, wrap);
    }
    cnn::register_backend(std::make_shared<Ref2>());
    cnn::register_backend(std::make_shared<Ref2Fast>());
    cnn::register_backend(std::make_shared<Ref2Partial>());
    cnn::register_backend(std::make_shared<Ref2Graph>());
  }
} init;

}  // namespace

extern "C" long toy_counter(int which) {
  switch (which) {
    case 0: return g_allocs;
    case 1: return g_frees;
    case 2: return g_copies_in;
    case 3: return g_copies_out;
    case 5: return g_captures;
    case 6: return g_replays;
    default: return g_runs;
  }
}
