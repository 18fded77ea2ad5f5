// Session: the compile pipeline (core/compile.hpp) turns the graph into a Plan; the session allocates the plan's
// buffers through the backend (arena, scratch, the kernels' persistent regions, gradients, optimizer state),
// creates one kernel per step and runs them. Owns those buffers; borrows parameters and buffers from the shared
// ParamStore (or keeps mirrors of them: float64 copies for a float64 session, backend copies for a backend whose
// memory the host cannot address, refreshed whenever the store's version moves). run() allocates nothing: every
// pointer table is built here. The one exception is a run for a thread count the session holds no kernels for
// (set_num_threads, or auto mode's load-driven count): it creates another kernel set (choose_set). Every run hands
// the kernels the store's version (prepared weights are rebuilt when it moved); a train/grad run that writes the
// store bumps it when it ends.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <thread>

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include "cnnnative/model.hpp"
#include "core/alloc.hpp"
#include "core/backend.hpp"
#include "core/compile.hpp"
#include "core/finite.hpp"
#include "core/op.hpp"
#include "core/threads.hpp"

namespace cnn {

class SessionImpl {
 public:
  // fixed_threads > 0: every run uses that many threads, whatever the process setting (a batch piece's worker)
  SessionImpl(const Graph& graph, std::shared_ptr<ParamStore> st, const CompileOptions& o, int fixed_threads = 0);
  void run(const std::vector<const void*>& feeds);
  void run_pieces(const std::vector<const void*>& feeds);
  bool make_pieces(int workers);
  const void* fetch_ptr(size_t i) const;
  void update();
  std::string locate(bool trainable, size_t flat) const;
  [[noreturn]] void diverged(const std::string& what) const;
  void check_budget(size_t need, size_t budget) const;
  void refresh_mirrors();
  void write_back_mirrors(bool params);
  struct KernelSet;
  std::unique_ptr<KernelSet> build_set(int threads, size_t bytes_used);
  void choose_set();
  int trial_option(int settled);
  void end_run();

  mutable std::recursive_mutex mu;  // serializes run() and the setters across threads
  Plan plan;                        // what the compile pipeline decided
  const Graph& g;                   // plan.graph
  const CompileOptions& opt;        // plan.opt
  const Backend& backend;           // *plan.backend
  std::shared_ptr<ParamStore> store;
  std::unique_ptr<Stream> stream;  // the backend's execution context for this session (nullptr on host backends)

  std::vector<void*> ptr;  // per value
  struct Patch {
    int node, slot, feed;
  };
  std::vector<Patch> patches;  // node inputs that are caller buffers (host-accessible backends)
  // The kernels and what depends on the thread count they were created for: oneDNN fixes a primitive's threads
  // when it creates it (its work split, its scratchpad), so a run with another count needs kernels created for it.
  struct KernelSet {
    int threads = 0;
    std::vector<std::unique_ptr<Kernel>> kernels;
    std::vector<std::vector<void*>> node_in, node_out;
    Buffer scratch, prepared;        // prepared: the kernels' persistent regions, filled on the set's first run
    std::vector<void*> persist_ptr;  // per step: the kernel's persistent region (nullptr when it keeps none)
    size_t scratch_bytes = 0, prepared_bytes = 0;
  };
  // sets[0]: created with the session, for the count then in effect; sets[1], sets[2]: the last two other counts
  // runs used (created by those runs; a fourth count replaces the one used longest ago). Runs use *active.
  static constexpr int kSets = 3;
  std::unique_ptr<KernelSet> sets[kSets];
  uint64_t set_used[kSets] = {0, 0, 0}, set_clock = 0;  // when each set was last made active (least recently: evicted)
  KernelSet* active = nullptr;
  int pending_threads = 0, pending_runs = 0;  // auto mode: a count other than the active one, runs in a row wanting it
  int failed_threads = 0;                     // auto mode: a count whose kernels could not be created (not retried)
  int settled = 0;  // auto mode: the governor's count once it held (what runs use, unless a trial says otherwise)
  // Auto mode on a loaded machine: the governor settled on fewer threads than the most a run may use (top). Which is
  // faster depends on the session: a descheduled thread stalls each parallel region it has a share of, which costs
  // small kernels far more than large ones, while fewer threads get a smaller share of the CPUs other processes
  // also want. So the session times its own runs over up to four options: the governor's count (kLow), the top
  // count with every kernel split over all threads (kTop), for a session that can, the batch in pieces over top
  // single-threaded workers (kPieces, see Pieces), and for inference, one thread more than the top count (kMore):
  // with another process on one of two cores, 2 threads split statically run at the speed of the one sharing its
  // core (2x slower), while 3 get the kernel's fair share of both cores, 2 of 4 runnable threads (ResNet-18 b16 at
  // 224x224 under one CPU-bound process: 178 ms against 206 ms; a LeNet-5 training step, with its tens of parallel
  // regions a step each waiting for a descheduled thread, ran 6x slower, so training never probes it). It uses
  // `choice` (first the pieces where it can and the weights fit one core's L2 cache; where they do not, one thread
  // more for inference, the top count for training; else the governor's count), probes one other option with
  // kTrialRuns runs once three runs of `choice` are timed (the others in turn), and again every `every_s`
  // seconds; the faster by 10 % becomes the choice. every_s is 1 s after a change of choice and doubles up to 16 s
  // while the choice holds. A probe also waits until the runs since the last one (or since the trials began) took
  // 1 / kTrialShare times what it will cost (its 1 + kTrialRuns runs at the choice's time): probes of a slow model
  // come further apart, so that they cost at most about kTrialShare of its time (ResNet-18 b16 at ~200 ms a run
  // spent 4 of every ~15 runs in probes in its first seconds, 6 % slower than a fixed count). A new governor count
  // or a fixed count ends the trials. Timed: the wall time of a run that
  // completed; not timed: an option's first run after a switch (its workers wake, a set's first run prepares its
  // weights).
  static constexpr int kLow = 1, kTop = 2, kPieces = 3, kMore = 4;
  struct Trial {
    int low = 0;                                    // the governor's count the trials are for; 0: none
    int choice = 0;                                 // the option runs use between probes
    int probe = 0;                                  // the option a running probe times; 0: none
    int last_probe = 0;                             // the option probed last (the next probe takes another)
    int runs = 0;                                   // runs of the current probe, its first one included
    bool skip = false;                              // the next run of `choice` follows a switch: not timed
    bool pieces = false;                            // kPieces is an option
    bool more = false;                              // kMore is an option
    double probe_ms = 0, choice_ms[3] = {0, 0, 0};  // the probe's timed runs; the last 3 timed runs of `choice`
    int nchoice = 0;
    double every_s = 1;
    std::chrono::steady_clock::time_point next, since;  // since: when the last probe ended (or the trials began)
  } trial;
  int ran_option = 0;  // the trial option the running run uses (0: no trials)
  // Batch pieces (Session::batch_pieces): an inference session that may run its batch as pieces keeps the graph it
  // was compiled from; the first run that wants pieces compiles it for the piece size once per worker (fixed to one
  // thread) and checks that the graph treats samples independently. Workers share the ParamStore; each holds its
  // own small arena and prepared weights. The pieces' outputs land in `outs`, which fetch() reads after such a run.
  //
  // A run (run_pieces) never waits for a worker that the machine has descheduled: there is no barrier. The workers
  // are threads of their own, woken per run; the caller copies the feeds into `staged` (by the run's parity, so a
  // worker one run late still reads its own run's copy), wakes them and sleeps until the last piece's outputs are in
  // place (a sleeping caller is woken promptly; a caller computing pieces itself could be preempted holding one and
  // end the run a time slice late). Pieces are taken from `next`; a piece's outputs are copied by whoever finishes it
  // first (`state`: a compare-and-swap on the run's number). A worker with no piece left to take waits for those
  // others hold only as long as a piece takes (1.5x the last one), then runs them itself. A worker finishing a piece
  // of an earlier run finds its number gone and drops the result.
  // With as many workers as the caller may use CPUs, worker w is pinned to the w-th of them (`cpu`): unpinned, the
  // kernel's wake-up placement often queued both workers on one CPU while another process held the other, and a run
  // got about 1.2 CPUs where an ORT run got 1.4 (docs/ARCHITECTURE.md, "Batch pieces"). With fewer workers than
  // CPUs there is no right CPU to pick, so none is pinned. CNNNATIVE_PIECES_PIN=0 turns it off.
  int fixed_threads = 0;
  std::unique_ptr<Graph> source;  // null: this session never runs in pieces
  struct Pieces {
    static constexpr uint64_t kWon = 1, kCopied = 2;  // state bits below the run number (state = run << 2 | bits)
    int64_t piece = 0, count = 0;
    std::vector<std::unique_ptr<SessionImpl>> workers;  // [w]: worker thread w's
    std::vector<int> cpu;                               // [w]: the CPU worker thread w is pinned to; -1: none
    std::vector<size_t> feed_bytes, fetch_bytes;        // per piece
    std::vector<Buffer> outs;                           // per fetch: the whole batch
    std::vector<Buffer> staged[2];                      // per feed: the whole batch, by the run's parity
    std::unique_ptr<std::atomic<uint64_t>[]> state;     // per piece
    std::unique_ptr<std::atomic<int64_t>[]> taken_ns;   // per piece: when it was taken (steady clock)
    std::atomic<uint64_t> next{0};                      // run << 32 | the next piece to take
    std::atomic<int64_t> remaining{0};                  // pieces of the current run whose outputs are not in place
    std::atomic<int64_t> piece_ns{int64_t(1) << 50};    // how long a piece takes (the last one finished; none yet)
    std::mutex mu;                                      // guards run, stop and the failure
    std::condition_variable wake, done;                 // wake: the workers, for a run; done: the caller
    uint64_t run = 0;
    bool stop = false;
    uint64_t failed_run = 0;  // a worker's error in that run (the caller raises it)
    std::exception_ptr failure;
    std::vector<std::thread> threads;
    ~Pieces();
    int64_t take(uint64_t r);                         // the next piece of run r, or -1
    bool finish(size_t w, uint64_t r, int64_t i);     // piece i of run r done on worker w: copy its outputs if first
    void run_piece(size_t w, uint64_t r, int64_t i);  // runs piece i of run r on worker w (from `staged`)
    void serve(size_t w);                             // worker thread w
    void help(size_t w, uint64_t r);  // once no piece is left: runs those held longer than a piece takes
  };
  std::unique_ptr<Pieces> pieces;
  // Training in pieces (CompileOptions::batch_pieces; docs/ARCHITECTURE.md, "Training in pieces"): a training
  // session whose graph treats every sample on its own up to a loss that is a mean over the batch may run each
  // step's forward and backward passes as one equal piece of the batch per thread, on workers compiled for that
  // piece and one thread (their own arenas and gradient blocks, the shared ParamStore), inside one OpenMP parallel
  // region: no node is split over threads, so no node waits at a barrier. The gradients are the mean of the
  // pieces' (summed in worker order: deterministic for a thread count), then the session's own update runs as
  // after a whole-batch step. Small networks only (kTrainPiecesMaxParams, kTrainPiecesMaxArena): with large nodes
  // the barriers cost little and the pieces' extra arenas and gradient pass would not pay. A step whose pieces fail
  // (an error, a non-finite loss) runs again as a whole batch, which reports the error as a whole-batch step does.
  struct TrainPieces {
    int64_t piece = 0;
    std::vector<std::unique_ptr<SessionImpl>> workers;  // [w]: piece w of every step, one thread
    std::vector<size_t> feed_bytes, fetch_bytes;        // one piece's bytes, per feed and per fetch (the loss: 0)
    std::vector<Buffer> outs;                           // per fetch but the loss: the whole batch
    std::vector<std::vector<const void*>> feeds;        // [w]: worker w's feed pointers (set per step)
    std::vector<const float*> grads;                    // [w]: worker w's gradient block
    float loss = 0;                                     // the step's loss: the mean of the pieces'
    double combine_ns = 0;                              // profile: the gradients' mean
    int64_t combine_calls = 0;
  };
  std::unique_ptr<Graph> train_source;  // null: this session never trains in pieces
  std::unique_ptr<TrainPieces> tpieces;
  size_t pieces_limit = 0;    // the caller's budget (max_arena_bytes, else memory_budget), 0: none
  int tpieces_failed = 0;     // a worker count whose pieces could not be made (not retried)
  bool tpieced_last = false;  // the last completed step ran in pieces (fetch() reads tpieces' outputs)
  bool make_train_pieces(int workers);
  // what the session itself holds against a budget the caller set: its arena, fixed blocks and kernel sets
  size_t held_bytes() const {
    size_t held = plan.memory.arena_bytes + fixed_bytes;
    for (const auto& k : sets)
      if (k) held += k->scratch_bytes + k->prepared_bytes;
    return held;
  }
  // a batch piece's worker: what it holds (its arena, gradient block in training, scratch and prepared weights)
  size_t worker_bytes() const {
    return plan.memory.arena_bytes + n_grad * 4 + active->scratch_bytes + active->prepared_bytes;
  }
  bool train_in_pieces(const std::vector<const void*>& feeds, double& loss);
  void piece_pass(const std::vector<const void*>& feeds, int64_t step);
  bool pieces_failed = false;  // made once and refused (not separable, no piece size, compile failed): not retried
  bool use_pieces = false;     // choose_set's decision for the running run
  bool pieced_last = false;    // the last completed run ran in pieces (fetch() reads `outs`)
  int ran_threads = 0;         // threads the running run uses (the pieces' workers for a pieced run)
  std::chrono::steady_clock::time_point run_t0;  // when the running run chose its kernels
  int64_t runs_at_t0 = 0;                        // eager_runs then: the run completed when it moved
  size_t budget = 0, fixed_bytes = 0;            // check_budget's: the memory budget, gradients and optimizer state

  Buffer buffers_backup;  // Train: the running statistics before the running step
  Buffer arena, grad_block, state_m, state_v, state_vmax;
  // Mirrors of the store's blocks: float64 copies (f64 sessions) or backend copies (!host_accessible()).
  Buffer mirror_params, mirror_buffers;
  bool mirrored = false, convert_f64 = false;
  uint64_t mirror_version = 0;       // the store version the mirrors were taken at
  std::vector<Buffer> feed_copies;   // !host_accessible(): the feeds' backend buffers
  std::vector<Buffer> feed_staging;  // !host_accessible(): host buffers the feeds are staged in (pinned on a GPU)
  std::vector<Buffer> fetch_copies;  // !host_accessible(): host copies of the fetches, written after each run
  // Graph capture (Stream::can_capture and CompileOptions::graphs): per segment (0: the forward pass, or the
  // whole schedule outside training; 1: the backward pass), whether it is recorded, and the store version an
  // inference session recorded at (a moved version records again).
  bool capture = false;
  bool captured[2] = {false, false};
  uint64_t captured_version = 0;
  int64_t eager_runs = 0;     // runs completed before capturing (the first one warms up)
  bool writes_store = false;  // train/grad in float32: BN running statistics, optimizer update
  size_t n_grad = 0;
  MemoryReport report;
  double lr = 0;
  int64_t steps = 0;
  int threads_used = 0;  // OpenMP threads of the last run
  double last_loss = NAN;
  Session::GradHook grad_hook;   // Train: between the backward pass and the update (Session::set_grad_hook)
  Session::StepHook step_hook;   // Train: after the marked backward steps (Session::set_step_hook)
  std::vector<char> step_marks;  // per step: call step_hook after it
  Session::Allreduce allreduce;  // Session::set_allreduce: RunCtx::allreduce when set
  // Largest magnitudes of the parameters and optimizer state, as the last update left them, and the store version
  // after that update: while nobody else wrote the store, they bound what the next update can produce, so a step is
  // checked for overflow with one pass over the gradients (update()).
  OptimMaxima maxima;
  uint64_t maxima_version = 0;  // 0: unknown (recomputed from the blocks)
  // Session::set_frozen: the frozen entries' names, and the [begin, end) ranges of the parameter block the update
  // writes (the complement of the frozen entries; unused while `frozen` is empty).
  std::vector<std::string> frozen;
  std::vector<std::pair<size_t, size_t>> update_ranges;
  std::vector<double> prof_ns;  // per step, plus one for the optimizer update
  std::vector<int64_t> prof_calls;
  std::vector<double> node_flops;
  // Store blocks page-locked for this session's copies (Backend::pin_host), released when it ends.
  struct Pinned {
    const Backend* b = nullptr;
    std::vector<void*> ptrs;
    ~Pinned() {
      for (void* p : ptrs) b->unpin_host(p);
    }
  } pinned;
  std::string capture_failure;  // why recording was given up (runs are eager from then on); empty: none
  // Declared last, so destroyed first: waits for the stream's work before any buffer above is freed.
  struct Drain {
    Stream* s = nullptr;
    ~Drain() {
      if (s) try {
          s->synchronize();
        } catch (...) {
        }
    }
  } drain;

  float* params_block() { return mirrored ? static_cast<float*>(mirror_params.get()) : store->params(); }
  float* buffers_block() { return mirrored ? static_cast<float*>(mirror_buffers.get()) : store->buffers(); }
};

namespace {
size_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : SIZE_MAX;
}
// An environment switch set to "0" (CNNNATIVE_TRAIN_PIECES, CNNNATIVE_PIECES_PIN): that feature is off
bool switched_off(const char* var) {
  const char* v = std::getenv(var);
  return v && std::string(v) == "0";
}
std::string mib(size_t b) {
  if (b < (size_t(1) << 20)) return std::to_string(b) + " bytes";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / 1048576.0);
  return buf;
}

// Training in pieces (see TrainPieces) is for small networks: at most this many parameters (the pieces' gradients
// are averaged in one extra pass) and this large an arena (each worker holds its own for its piece).
constexpr size_t kTrainPiecesMaxParams = size_t(1) << 20;
constexpr size_t kTrainPiecesMaxArena = size_t(64) << 20;
constexpr int64_t kTrainPiecesMinPiece = 8;  // samples per piece, at least

// Whether node n works along the batch (its first input's first dimension): an axis, axes or permutation naming it,
// or a slice without explicit axes.
bool along_batch(const Graph& g, const Node& n) {
  const int64_t r = n.inputs.empty() ? 0 : int64_t(g.values[n.inputs[0]].desc.shape.size());
  auto batch_axis = [&](int64_t a) { return a == 0 || a == -r; };
  if (n.attrs.ints.count("axis") && batch_axis(n.attrs.i("axis"))) return true;
  for (int64_t a : n.attrs.is("axes", {}))
    if (batch_axis(a)) return true;
  const std::vector<int64_t> perm = n.attrs.is("perm", {});
  if (!perm.empty() && perm[0] != 0) return true;
  return (n.attrs.ints.count("starts") || n.attrs.ints.count("steps")) && !n.attrs.ints.count("axes");
}

// Whether training graph g can train in pieces: its loss is a mean over the batch of per-sample terms (the loss ops
// of compile(mode="train"), all with mean reduction over equally many elements per sample, so the mean of equal
// pieces' losses and gradients is the whole batch's), every other value but the parameters keeps the batch as its
// first dimension, and no op works along that dimension (an axis, axes or permutation naming it, a slice without
// explicit axes) or mixes samples or their random streams (batch norm or dropout in training mode, synchronized
// ops; max pooling's training flag only keeps its indices). Conservative: a false "no" only costs the pieces.
bool train_separable(const Graph& g, int loss) {
  if (loss < 0 || loss >= int(g.values.size()) || g.values[loss].producer < 0) return false;
  const Node& L = g.nodes[size_t(g.values[loss].producer)];
  if (L.op != "softmax_cross_entropy" && L.op != "mse_loss" && L.op != "bce_with_logits") return false;
  int64_t batch = -1;
  for (size_t v = 0; v < g.values.size(); ++v) {
    const Value& val = g.values[v];
    if (val.kind == ValueKind::Param || val.kind == ValueKind::Buffer || int(v) == loss) continue;
    if (val.desc.shape.empty() || val.desc.shape[0] < 1 || (batch >= 0 && val.desc.shape[0] != batch)) return false;
    batch = val.desc.shape[0];
  }
  for (const Node& n : g.nodes) {
    if (&n == &L) continue;
    if ((n.attrs.i("training", 0) != 0 && n.op != "max_pool2d") || n.attrs.i("sync", 0) != 0) return false;
    if (along_batch(g, n)) return false;
  }
  return batch > 0;
}
}  // namespace

SessionImpl::SessionImpl(const Graph& graph, std::shared_ptr<ParamStore> st, const CompileOptions& o, int fixed)
    : plan(((fixed > 0 ? use_num_threads(fixed) : (void)apply_num_threads()),  // oneDNN sizes its primitives for
                                                                               // the thread count at creation
            st ? compile_plan(graph, *st, o) : throw Error("compile: no parameter store"))),
      g(plan.graph),
      opt(plan.opt),
      backend(*plan.backend),
      store(std::move(st)),
      lr(o.optim.lr) {
  fixed_threads = fixed;
  report = plan.report;
  const size_t nv = g.values.size();
  const int n_steps = int(g.nodes.size());
  const size_t fsz = dtype_size(opt.compute);
  ptr.assign(nv, nullptr);
  StreamOptions so;
  so.tf32 = opt.tf32;
  so.graphs = opt.graphs;
  so.deterministic = opt.deterministic;
  stream = backend.make_stream(so);  // throws first when the backend cannot run here
  drain.s = stream.get();
  // recording needs fixed buffers: a host-accessible backend runs on the caller's feed buffers (patched per run)
  capture = stream && opt.graphs && stream->can_capture() && !backend.host_accessible();

  // ---- the store's blocks, or mirrors of them ----
  convert_f64 = opt.compute == DType::f64;
  mirrored = convert_f64 || !backend.host_accessible();
  if (!backend.host_accessible()) {  // the store's blocks are copied in (and, training, out) through the stream
    pinned.b = &backend;
    for (auto [p, n] : {std::pair<void*, size_t>{store->params(), store->num_params() * 4},
                        std::pair<void*, size_t>{store->buffers(), store->num_buffers() * 4}})
      if (backend.pin_host(p, n)) pinned.ptrs.push_back(p);
  }
  if (mirrored) {
    mirror_params = backend.allocate(std::max<size_t>(store->num_params(), 1) * fsz);
    mirror_buffers = backend.allocate(std::max<size_t>(store->num_buffers(), 1) * fsz);
    refresh_mirrors();
  }
  writes_store = opt.mode != Mode::Infer && opt.compute == DType::f32;
  for (int p : g.params) {
    const auto& e = store->find(g.values[p].name);
    char* base = reinterpret_cast<char*>(e.trainable ? params_block() : buffers_block());
    ptr[p] = base + e.offset * fsz;
  }
  if (opt.mode != Mode::Infer) {
    n_grad = store->num_params();
    grad_block = backend.allocate(std::max<size_t>(n_grad, 1) * fsz);
    for (size_t i = 0; i < g.params.size(); ++i) {
      const int gv = plan.param_grads[i];
      if (gv < 0) continue;
      ptr[gv] = static_cast<char*>(grad_block.get()) + store->find(g.values[g.params[i]].name).offset * fsz;
    }
  }
  if (!backend.host_accessible())
    for (size_t i = 0; i < plan.feed_values.size(); ++i) {
      const size_t bytes = std::max<size_t>(plan.value_bytes(plan.feed_values[i]), 64);
      feed_copies.push_back(backend.allocate(bytes));
      feed_staging.push_back(backend.allocate_host(bytes));
      ptr[plan.feed_values[i]] = feed_copies.back().get();
    }

  // ---- the arena ----
  budget = opt.max_arena_bytes ? opt.max_arena_bytes : physical_memory_bytes();
  fixed_bytes = opt.mode == Mode::Train ? store->num_params() * 4 * 4 : 0;  // grads + up to 3 state blocks
  check_budget(plan.memory.arena_bytes + fixed_bytes, budget);
  arena = backend.allocate(std::max<size_t>(plan.memory.arena_bytes, 64));
  for (size_t i = 0; i < plan.planned.size(); ++i)
    ptr[plan.planned[i]] = static_cast<char*>(arena.get()) + plan.memory.offsets[i];
  for (size_t v = 0; v < nv; ++v)
    if (plan.alias_of[v] != int(v)) ptr[v] = ptr[plan.alias_of[v]];

  // ---- kernels ----
  sets[0] = build_set(omp_get_max_threads(), plan.memory.arena_bytes + fixed_bytes);  // the count applied above
  active = sets[0].get();
  report.prepared_bytes = active->prepared_bytes;
  report.scratch_bytes = active->scratch_bytes;
  prof_ns.assign(n_steps + 1, 0.0);
  prof_calls.assign(n_steps + 1, 0);
  if (!backend.host_accessible())
    for (int v : plan.fetch_values)
      fetch_copies.push_back(backend.allocate_host(std::max<size_t>(plan.value_bytes(v), 64)));

  if (!fixed && opt.mode == Mode::Infer && opt.batch_pieces && !opt.deterministic && opt.compute == DType::f32 &&
      backend.host_accessible() && backend.has_fast_kernels() && opt.dump_passes.empty() &&
      !std::getenv("CNNNATIVE_DUMP_PASSES"))
    source = std::make_unique<Graph>(graph);
  if (!fixed && opt.mode == Mode::Train && opt.batch_pieces && !opt.deterministic && opt.compute == DType::f32 &&
      opt.activations == DType::f32 && backend.host_accessible() && backend.has_fast_kernels() &&
      opt.dump_passes.empty() && !std::getenv("CNNNATIVE_DUMP_PASSES") && !switched_off("CNNNATIVE_TRAIN_PIECES") &&
      n_grad <= kTrainPiecesMaxParams && plan.memory.arena_bytes <= kTrainPiecesMaxArena &&
      train_separable(graph, opt.loss))
    train_source = std::make_unique<Graph>(graph);
  pieces_limit = o.max_arena_bytes ? o.max_arena_bytes : o.memory_budget;  // plan.opt no longer has memory_budget

  // ---- optimizer state ----
  if (opt.mode == Mode::Train) {
    const auto& oc = opt.optim;
    const size_t bytes = std::max<size_t>(n_grad, 1) * 4;
    if (oc.kind == "sgd") {  // the kind and its options were checked by the pipeline's check pass
      if (oc.momentum != 0) state_m = backend.allocate(bytes);
    } else {
      state_m = backend.allocate(bytes);
      state_v = backend.allocate(bytes);
      if (oc.amsgrad) state_vmax = backend.allocate(bytes);
    }
    report.optimizer_state_bytes =
        (state_m ? n_grad * 4 : 0) + (state_v ? n_grad * 4 : 0) + (state_vmax ? n_grad * 4 : 0);
    // BN running statistics change during the forward pass; a step that fails restores them from here.
    if (store->num_buffers()) buffers_backup = backend.allocate(store->num_buffers() * 4);
  }
}

// Copies the store's blocks into the mirrors (converted to float64, or into the backend's memory).
void SessionImpl::refresh_mirrors() {
  mirror_version = store->version();
  if (convert_f64) {
    double* pp = static_cast<double*>(mirror_params.get());
    double* pb = static_cast<double*>(mirror_buffers.get());
    for (size_t i = 0; i < store->num_params(); ++i) pp[i] = store->params()[i];
    for (size_t i = 0; i < store->num_buffers(); ++i) pb[i] = store->buffers()[i];
  } else {
    backend.copy_in(mirror_params.get(), store->params(), store->num_params() * 4, stream.get());
    backend.copy_in(mirror_buffers.get(), store->buffers(), store->num_buffers() * 4, stream.get());
    backend.synchronize(stream.get());  // the store may be written as soon as this returns
  }
}

// A run on a backend with its own memory wrote the mirrors: the running statistics (train and grad runs) and the
// parameters (the optimizer update of a train run) go back to the store.
void SessionImpl::write_back_mirrors(bool params) {
  if (params) backend.copy_out(store->params(), mirror_params.get(), store->num_params() * 4, stream.get());
  backend.copy_out(store->buffers(), mirror_buffers.get(), store->num_buffers() * 4, stream.get());
}

// Creates one kernel per step for `threads` OpenMP threads (applied to the calling thread, where oneDNN reads it),
// with the pointer tables, the scratch block and the persistent regions they run with. bytes_used: what the session
// already holds, for the budget. The first set also records what describes the plan rather than the kernels (flops,
// the feed patches, the reference fallbacks).
std::unique_ptr<SessionImpl::KernelSet> SessionImpl::build_set(int threads, size_t bytes_used) {
  use_num_threads(threads);
  auto ks = std::make_unique<KernelSet>();
  ks->threads = threads;
  const bool first = !sets[0];
  const int n_steps = int(g.nodes.size());
  auto& kernels = ks->kernels;
  size_t scratch_bytes = 0;
  for (int s = 0; s < n_steps; ++s) {
    const Node& n = g.nodes[s];
    KernelCtx ctx{n, {}, {}, opt.compute};
    ctx.training = opt.mode != Mode::Infer;
    ctx.cache_weights = opt.mode == Mode::Infer && opt.cache_weights;
    ctx.winograd = opt.winograd;
    ctx.deterministic = opt.deterministic;
    ctx.stream = stream.get();
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      TensorDesc d = g.values[n.inputs[i]].desc;
      d.dtype = plan.stored_dtype[n.inputs[i]];
      ctx.in.push_back(d);
      ctx.in_layout.push_back(plan.in_view[s][i]);
    }
    for (int v : n.outputs) {
      TensorDesc d = g.values[v].desc;
      d.dtype = plan.stored_dtype[v];
      ctx.out.push_back(d);
      ctx.out_layout.push_back(plan.layout[v]);
    }
    try {
      kernels.push_back((*plan.kernels[s].factory)(ctx));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // oneDNN refusing a primitive, an allocation failing, ...
      op_error(n, "cannot create its " + backend.name() + " kernel for inputs " + descs_str(ctx.in) + ": " + e.what());
    }
    if (first) {
      const auto& flops = get_op(n.op).flops;
      node_flops.push_back(flops ? flops(ctx.in, ctx.out) : 0.0);
    }
    scratch_bytes = std::max(scratch_bytes, kernels.back()->scratch_bytes());
    std::vector<void*> in, out;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      in.push_back(ptr[n.inputs[i]]);
      if (first && plan.storage[n.inputs[i]] == Storage::Feed && backend.host_accessible()) {
        int fi =
            int(std::find(plan.feed_values.begin(), plan.feed_values.end(), n.inputs[i]) - plan.feed_values.begin());
        patches.push_back({s, int(i), fi});
      }
    }
    for (int v : n.outputs) out.push_back(ptr[v]);
    ks->node_in.push_back(std::move(in));
    ks->node_out.push_back(std::move(out));
  }
  // A backend factory may itself hand a node to the op's reference kernel (a configuration its library refuses):
  // reported like a node without a kernel.
  if (first && backend.has_fast_kernels()) {
    for (int s = 0; s < n_steps; ++s)
      if (!plan.kernels[s].reference && kernels[s]->impl() == "reference")
        plan.reference_fallbacks.push_back(g.nodes[s].op + " " + g.nodes[s].name);
    if (opt.strict && !plan.reference_fallbacks.empty()) {
      std::string list;
      for (const auto& f : plan.reference_fallbacks) list += (list.empty() ? "" : ", ") + f;
      throw Error("compile(strict): the " + backend.name() + " backend runs " + list +
                  " on the op's naive reference kernel (no fast kernel for this configuration)");
    }
  }
  // kernels' persistent regions (prepared weights): one block, 64-byte aligned slices, filled on the first run
  std::vector<size_t> persist_off;
  size_t persist_total = 0;
  for (auto& k : kernels) {
    persist_off.push_back(persist_total);
    persist_total += (k->persistent_bytes() + 63) / 64 * 64;
  }
  check_budget(bytes_used + scratch_bytes + persist_total, budget);
  ks->scratch = backend.allocate(std::max<size_t>(scratch_bytes, 64));
  if (persist_total) ks->prepared = backend.allocate(persist_total);
  for (size_t s = 0; s < kernels.size(); ++s)
    ks->persist_ptr.push_back(kernels[s]->persistent_bytes() ? static_cast<char*>(ks->prepared.get()) + persist_off[s]
                                                             : nullptr);
  ks->scratch_bytes = scratch_bytes;
  ks->prepared_bytes = persist_total;
  return ks;
}

// Picks the kernel set this run uses and applies its count to the calling thread. A fixed count switches at once;
// auto mode switches when the wanted count has held for kSwitchAfterS and this session saw it on kSwitchRuns runs in
// a row (a load that lasts, not a burst), and on a loaded machine may run the most threads instead when its own
// runs were faster with them (trial_count). A switch to a count without kernels creates them (and allocates).
void SessionImpl::choose_set() {
  constexpr double kSwitchAfterS = 0.5;
  constexpr int kSwitchRuns = 3;
  const ThreadChoice c = fixed_threads > 0 ? ThreadChoice{fixed_threads, false, 0.0} : choose_num_threads();
  use_pieces = false;
  if (!backend.host_accessible()) {  // a device backend: the host threads only stage copies; one set
    use_num_threads(c.count);
    threads_used = ran_threads = c.count;
    return;
  }
  run_t0 = std::chrono::steady_clock::now();
  runs_at_t0 = eager_runs;
  if (!settled) settled = active->threads;
  int target = c.count;
  if (c.automatic) {
    if (c.count != settled && c.count != failed_threads) {
      if (c.count != pending_threads) pending_runs = 0;
      pending_threads = c.count;
      if (++pending_runs >= kSwitchRuns && c.stable_s >= kSwitchAfterS) {
        settled = c.count;
        pending_runs = 0;
      }
    } else {
      pending_runs = 0;
    }
    ran_option = trial_option(settled);
    target = ran_option == kTop || ran_option == kPieces ? get_num_threads()
             : ran_option == kMore                       ? get_num_threads() + 1
                                                         : settled;
    // the trials' pieces: the batch over top single-threaded workers (no second kernel set; the workers hold their
    // own)
    if (ran_option == kPieces) {
      if (make_pieces(target)) {
        use_pieces = true;
        use_num_threads(active->threads);  // make_pieces' compiles set one thread on this thread
        threads_used = ran_threads = target;
        return;
      }
      ran_option = kTop;  // (made when the trials began: not reached)
    }
  } else {
    pending_runs = 0;
    settled = c.count;
    trial = Trial{};
    ran_option = 0;
  }
  if (target != active->threads && !(c.automatic && target == failed_threads)) {
    KernelSet* next = nullptr;
    for (auto& k : sets)
      if (k && k->threads == target) next = k.get();
    if (!next) {
      try {
        // while it is built, the sets held now still exist: the budget counts them all
        size_t held = 0;
        for (auto& k : sets)
          if (k) held += k->scratch_bytes + k->prepared_bytes;
        auto ks = build_set(target, plan.memory.arena_bytes + fixed_bytes + held);
        // an empty slot, else the other count's set used longest ago (never sets[0]; the active one, if it goes,
        // is left below)
        int slot = 0;
        for (int i = 1; i < kSets && !slot; ++i)
          if (!sets[i]) slot = i;
        if (!slot) {
          slot = 1;
          for (int i = 2; i < kSets; ++i)
            if (set_used[i] < set_used[slot]) slot = i;
        }
        sets[slot] = std::move(ks);
        next = sets[slot].get();
      } catch (const std::exception&) {
        use_num_threads(active->threads);  // build_set set the new count on this thread
        if (!c.automatic) throw;           // the count the caller fixed cannot run: say why
        failed_threads = target;           // auto: keep running on the kernels that work
        if (target == settled) settled = active->threads;
        trial = Trial{};
        ran_option = 0;
      }
    }
    if (next) {
      active = next;
      for (int i = 0; i < kSets; ++i)
        if (sets[i].get() == active) set_used[i] = ++set_clock;
      report.prepared_bytes = active->prepared_bytes;
      report.scratch_bytes = active->scratch_bytes;
    }
  }
  use_num_threads(active->threads);
  threads_used = ran_threads = active->threads;
}

namespace {
size_t l2_bytes() {  // one core's L2 cache (1 MiB where the system does not say)
  static const size_t b = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? size_t(v) : size_t(1) << 20;
  }();
  return b;
}
}  // namespace

// Auto mode: the option this run uses (see Trial), given the governor's settled count low; 0: no trials (low).
int SessionImpl::trial_option(int low) {
  const int top = get_num_threads();
  Trial& t = trial;
  // the counts must fit the three sets a session holds: the other two are the ones a switch replaces, so sets[0]
  // (the compile's count) must be one of them, or probes would rebuild kernels (possible with more than 2 CPUs)
  const bool fits = sets[0]->threads == low || sets[0]->threads == top || sets[0]->threads == top + 1;
  if (low >= top || top == failed_threads || !fits) {
    t = Trial{};
    return 0;
  }
  if (t.low != low) {  // the governor settled on fewer threads: the first choice (see Trial)
    t = Trial{};
    t.low = low;
    // the pieces do at least what the governor's count would (the worker on a free CPU alone does that much), and
    // the most where the weights stay in a core's cache; larger weights each piece streams again from memory (8
    // times a run for ResNet-18 b16's 46 MB), and whole batches on the top count ran faster there
    t.pieces = make_pieces(top);
    t.more = opt.mode == Mode::Infer && top + 1 != failed_threads;
    t.choice = !t.pieces ? kLow : store->num_params() * 4 <= l2_bytes() ? kPieces : t.more ? kMore : kTop;
    t.last_probe = kLow;  // the first probe: the top count (whole batches), then the governor's count
    t.skip = true;
    t.next = t.since = std::chrono::steady_clock::now();  // the first probe once three runs of the choice are timed
  }
  return t.probe ? t.probe : t.choice;
}

// After a run (also one that threw): a completed run's time feeds the trial of its count (see Trial).
void SessionImpl::end_run() {
  constexpr int kTrialRuns = 3;
  constexpr double kTrialShare = 0.02;  // the most of a session's time probes may take (see Trial)
  Trial& t = trial;
  if (!t.low || !ran_option || eager_runs == runs_at_t0) return;
  const auto now = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - run_t0).count();
  const int ran = ran_option;
  auto choice_ms = [&] {  // the choice's recent time per run
    double sum = 0;
    for (int i = 0; i < t.nchoice; ++i) sum += t.choice_ms[i];
    return sum / std::max(1, t.nchoice);
  };
  auto after = [&](double s) {
    return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
  };
  if (t.probe) {
    if (ran != t.probe) return;
    if (t.runs++ > 0) t.probe_ms += ms;  // the probe's first run is not timed
    if (t.runs < kTrialRuns + 1) return;
    const double probe = t.probe_ms / kTrialRuns;
    if (probe < 0.9 * choice_ms()) {
      t.choice = t.probe;
      t.every_s = 1;
      t.nchoice = 0;
    } else {
      t.every_s = std::min(16.0, 2 * t.every_s);
    }
    t.probe = t.runs = 0;
    t.probe_ms = 0;
    t.skip = true;  // the next run switches back (or stays on the new choice's warm kernels: timed from the next)
    t.next = after(t.every_s);
    t.since = now;
    return;
  }
  if (ran != t.choice) return;
  if (t.skip) {
    t.skip = false;
    return;
  }
  t.choice_ms[t.nchoice < 3 ? t.nchoice : 0] = ms;
  if (t.nchoice < 3) {
    ++t.nchoice;
  } else {  // keep the last three: shift
    std::rotate(t.choice_ms, t.choice_ms + 1, t.choice_ms + 3);
  }
  const double probe_cost_s = (kTrialRuns + 1) * choice_ms() / 1000;
  if (t.nchoice >= 3 && now >= t.next && now - t.since >= std::chrono::duration<double>(probe_cost_s / kTrialShare)) {
    // the options other than the choice in turn
    int o = t.last_probe;
    do o = o % kMore + 1;
    while (o == t.choice || (o == kPieces && !t.pieces) || (o == kMore && !t.more));
    t.probe = t.last_probe = o;
  }
}

namespace {
std::string index_str(const Shape& s, int64_t flat) {
  Shape idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = flat % s[d];
    flat /= s[d];
  }
  return shape_str(idx);
}
}  // namespace

// Refuses a session that would need more than the budget, before anything that size is allocated; names the
// largest planned values so the user sees which layer asks for it.
void SessionImpl::check_budget(size_t need, size_t budget) const {
  if (need <= budget) return;
  const std::vector<int>& planned = plan.planned;
  const std::vector<BufferReq>& reqs = plan.requests;
  std::vector<size_t> order(planned.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reqs[a].size > reqs[b].size; });
  std::string largest;
  for (size_t i = 0; i < order.size() && i < 3; ++i) {
    const Value& v = g.values[planned[order[i]]];
    const int prod = v.producer;
    largest += std::string(i ? ", " : "") + "'" +
               (prod >= 0 ? g.nodes[prod].name + "' (" + g.nodes[prod].op + ")" : v.name + "'") + " " +
               shape_str(v.desc.shape) + " " + mib(reqs[order[i]].size);
  }
  throw Error(
      "compile: the session needs " + mib(need) + " (activation arena, scratch, prepared weights" +
      (opt.mode == Mode::Train ? std::string(", gradients and optimizer state") : std::string()) +
      "), over the budget of " + mib(budget) +
      (opt.max_arena_bytes ? " (max_arena_bytes)" : " (the machine's physical memory; raise it with max_arena_bytes)") +
      (largest.empty() ? std::string() : "; largest values: " + largest));
}

// "'name' at [i, j]" for a flat index into the parameter (trainable) or buffer block.
std::string SessionImpl::locate(bool trainable, size_t flat) const {
  for (const auto& e : store->entries()) {
    const size_t n = size_t(numel(e.shape));
    if (e.trainable == trainable && flat >= e.offset && flat < e.offset + n)
      return "'" + e.name + "' at " + index_str(e.shape, int64_t(flat - e.offset));
  }
  return "index " + std::to_string(flat);
}

void SessionImpl::diverged(const std::string& what) const {
  throw Error("step " + std::to_string(steps) + ": " + what +
              "; parameters, optimizer state and running statistics are left as they were before this step "
              "(training diverged: lower the learning rate)");
}

// The optimizer update, guarded so that it never writes a non-finite parameter or state value: the gradients
// are checked (one pass, which also gives max |g|); with the maxima the previous update left (when nobody wrote
// the store since), a bound on every intermediate of the update rule tells whether anything can overflow; only
// when it might does an exact dry run (scalar, same arithmetic) look for the first element that would. On any
// failure nothing has been written, and run() restores the running statistics.
void SessionImpl::update() {
  const auto& oc = opt.optim;
  float* p = params_block();
  const float* gr = static_cast<const float*>(grad_block.get());
  float* m = static_cast<float*>(state_m.get());
  float* v = static_cast<float*>(state_v.get());
  float* vmax = static_cast<float*>(state_vmax.get());
  const long t = long(steps + 1);
  Stream* st = stream.get();
  bool finite = true;
  const double G = backend.absmax(gr, n_grad, &finite, st);
  if (!finite) {
    int64_t i = backend.first_non_finite(gr, n_grad, st);
    float bad = 0;
    backend.copy_out(&bad, gr + i, sizeof bad, st);
    diverged("the gradient of " + locate(true, size_t(i)) + " is " + (std::isnan(bad) ? "nan" : "inf") +
             " (the loss was finite)");
  }
  if (maxima_version == 0 || maxima_version != store->version()) {  // written from outside: measure the blocks
    maxima.p = backend.absmax(p, n_grad, &finite, st);
    if (!finite) {
      int64_t i = backend.first_non_finite(p, n_grad, st);
      diverged("parameter " + locate(true, size_t(i)) +
               " is not finite before the update (it was written so from outside)");
    }
    maxima.m = m ? backend.absmax(m, n_grad, nullptr, st) : 0.f;
    maxima.v = std::max(v ? backend.absmax(v, n_grad, nullptr, st) : 0.f,
                        vmax ? backend.absmax(vmax, n_grad, nullptr, st) : 0.f);
  }
  const double P = maxima.p, M = maxima.m, V = maxima.v;
  const double limit = 0.5 * double(std::numeric_limits<float>::max());
  auto below = [&](std::initializer_list<double> xs) {
    for (double x : xs)
      if (!(x < limit)) return false;  // NaN-safe
    return true;
  };
  auto fail_at = [&](long i) {
    char lrs[32];
    std::snprintf(lrs, sizeof lrs, "%g", lr);
    diverged(std::string("the update (lr ") + lrs + ") would make " + locate(true, size_t(i)) +
             " or its optimizer state non-finite");
  };
  // the update over the whole block, or over the ranges frozen parameters leave (Session::set_frozen), each range's
  // maxima combined (the guard above bounds the frozen ones too: their values are in P)
  auto each_range = [&](auto&& fn) {
    if (frozen.empty()) return fn(size_t(0), n_grad, &maxima);
    OptimMaxima all;
    for (const auto& [a, e] : update_ranges) {
      OptimMaxima one;
      fn(a, e - a, &one);
      all.p = std::max(all.p, one.p);
      all.m = std::max(all.m, one.m);
      all.v = std::max(all.v, one.v);
    }
    maxima = all;
  };
  if (oc.kind == "sgd") {
    SGDConfig c;
    c.lr = float(lr);
    c.momentum = float(oc.momentum);
    c.dampening = float(oc.dampening);
    c.weight_decay = float(oc.weight_decay);
    c.nesterov = oc.nesterov;
    const double wd = c.weight_decay, mu = c.momentum, omd = std::fabs(1.0 - double(c.dampening));
    const double d = G + wd * P;
    double b = 0, dd = d;
    if (mu != 0) {
      b = t == 1 ? d : mu * M + omd * d;
      dd = c.nesterov ? d + mu * b : b;
    }
    if (!below({d, b, dd, double(c.lr) * dd, P + double(c.lr) * dd})) {
      long i = backend.sgd_first_non_finite(p, gr, m, n_grad, c, t, st);
      if (i >= 0) fail_at(i);
    }
    each_range([&](size_t a, size_t n, OptimMaxima* mx) {
      backend.sgd_update(p + a, gr + a, m ? m + a : nullptr, n, c, t, mx, st);
    });
  } else {
    AdamConfig c;
    c.lr = float(lr);
    c.beta1 = float(oc.beta1);
    c.beta2 = float(oc.beta2);
    c.eps = float(oc.eps);
    c.weight_decay = float(oc.weight_decay);
    c.decoupled = oc.kind == "adamw";
    c.amsgrad = oc.amsgrad;
    const double wd = c.weight_decay, lrd = c.lr;
    const double pv = c.decoupled ? P * std::fabs(1.0 - lrd * wd) : P;
    const double d = c.decoupled ? G : G + wd * pv;
    const double mn = 2.0 * (M + d);  // the lerp and its intermediate d - m
    const double vn = double(c.beta2) * V + d * d, s = std::max(V, vn);
    const double bc1 = 1.0 - std::pow(double(c.beta1), double(t)),
                 bc2s = std::sqrt(1.0 - std::pow(double(c.beta2), double(t)));
    const double step_size = lrd / bc1, eps = c.eps;
    const bool ok = eps > 0 && bc2s > 0 &&
                    below({pv, d, mn, vn, s, d * d, std::sqrt(s) / bc2s, step_size * mn, step_size * mn / eps,
                           pv + step_size * mn / eps});
    if (!ok) {
      long i = backend.adam_first_non_finite(p, gr, m, v, vmax, n_grad, c, t, st);
      if (i >= 0) fail_at(i);
    }
    each_range([&](size_t a, size_t n, OptimMaxima* mx) {
      backend.adam_update(p + a, gr + a, m ? m + a : nullptr, v ? v + a : nullptr, vmax ? vmax + a : nullptr, n, c, t,
                          mx, st);
    });
  }
}

void SessionImpl::run(const std::vector<const void*>& fd) {
  std::lock_guard<std::recursive_mutex> hold(mu);
  if (fd.size() != plan.feeds.size())
    throw Error("run: expected " + std::to_string(plan.feeds.size()) + " inputs, got " + std::to_string(fd.size()));
  // A NaN/inf input would not always reach the loss (ReLU maps NaN to 0) yet poison BN statistics: refuse it
  // before anything runs.
  for (size_t i = 0; i < plan.feeds.size(); ++i) {
    const TensorDesc& d = plan.feeds[i].desc;
    if (!is_float(d.dtype)) continue;
    const int64_t n = numel(d.shape);
    int64_t bad = opt.compute == DType::f64 ? first_non_finite(static_cast<const double*>(fd[i]), n)
                                            : first_non_finite(static_cast<const float*>(fd[i]), n);
    if (bad >= 0) {
      double v =
          opt.compute == DType::f64 ? static_cast<const double*>(fd[i])[bad] : static_cast<const float*>(fd[i])[bad];
      throw Error("input '" + plan.feeds[i].name + "' has a non-finite value (" + (std::isnan(v) ? "nan" : "inf") +
                  ") at " + index_str(d.shape, bad) + "; nothing was run or updated");
    }
  }
  choose_set();
  struct EndRun {
    SessionImpl* s;
    ~EndRun() { s->end_run(); }
  } end_run_{this};
  if (use_pieces) {
    run_pieces(fd);
    return;
  }
  pieced_last = tpieced_last = false;
  KernelSet& K = *active;
  Stream* st = stream.get();
  if (backend.host_accessible()) {
    for (auto& p : patches) K.node_in[p.node][p.slot] = const_cast<void*>(fd[p.feed]);
    for (size_t i = 0; i < plan.feed_values.size(); ++i) ptr[plan.feed_values[i]] = const_cast<void*>(fd[i]);
  } else {
    // staged through the session's host buffers (pinned on a GPU): the copies run asynchronously on the stream
    for (size_t i = 0; i < plan.feed_values.size(); ++i) {
      const size_t bytes = plan.value_bytes(plan.feed_values[i]);
      std::memcpy(feed_staging[i].get(), fd[i], bytes);
      backend.copy_in(feed_copies[i].get(), feed_staging[i].get(), bytes, st);
    }
  }
  if (mirrored && store->version() != mirror_version) refresh_mirrors();
  RunCtx run_ctx{nullptr, nullptr, K.scratch.get(), opt.seed, steps};
  run_ctx.params_version = store->version();
  run_ctx.stream = st;
  if (allreduce && opt.mode == Mode::Train) run_ctx.allreduce = &allreduce;
  if (st) st->set_run_info(opt.seed, steps);
  // A train/grad run writes the store (BN running statistics in the forward pass, the optimizer update): the
  // version moves when it ends, whether it succeeded or not, so inference sessions sharing the store re-prepare.
  struct Bump {
    ParamStore* s;
    ~Bump() {
      if (s) s->touch();
    }
  } bump{writes_store ? store.get() : nullptr};
  using clock = std::chrono::steady_clock;
  auto exec = [&](int s) {
    run_ctx.in = K.node_in[s].data();
    run_ctx.out = K.node_out[s].data();
    run_ctx.persist = K.persist_ptr[s];
    auto t0 = clock::now();
    try {
      K.kernels[s]->run(run_ctx);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      op_error(g.nodes[s], std::string("its kernel failed: ") + e.what());
    }
    prof_ns[s] += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    prof_calls[s]++;
  };
  // Runs steps [from, to) as segment seg: eagerly, or (a capturing stream, after the first run) recorded once and
  // replayed. An inference session records again when the store's version moved (prepared weights).
  if (capture && opt.mode == Mode::Infer && captured[0] && captured_version != run_ctx.params_version &&
      st->recapture_on_param_change()) {
    st->drop_captures();
    captured[0] = captured[1] = false;
  }
  const bool hooked = step_hook && opt.mode == Mode::Train;
  auto segment = [&](int seg, int from, int to) {
    if (!capture || eager_runs == 0) {
      for (int s = from; s < to; ++s) {
        exec(s);
        if (hooked && step_marks[s]) step_hook(s);
      }
      return;
    }
    if (!captured[seg]) {
      bool ok = false;
      st->begin_capture();
      try {
        for (int s = from; s < to; ++s) exec(s);
        st->end_capture(seg);
        ok = true;
      } catch (const std::exception& e) {  // nothing recorded ran: run the segment eagerly, now and from now on
        st->drop_captures();
        captured[0] = captured[1] = false;
        capture = false;
        capture_failure = e.what();
      }
      if (!ok) {
        for (int s = from; s < to; ++s) exec(s);  // a real kernel error throws here
        return;
      }
      captured[seg] = true;
      captured_version = run_ctx.params_version;
    }
    st->replay(seg);
    if (hooked) {  // a recorded segment runs as one: its steps' results are all there once it finished
      backend.synchronize(st);
      for (int s = from; s < to; ++s)
        if (step_marks[s]) step_hook(s);
    }
  };
  const int n = int(K.kernels.size());
  const int nf = plan.num_forward_nodes;
  // !host_accessible(): the host reads the fetches from copies made after the run
  auto copy_fetches = [&]() {
    if (backend.host_accessible()) return;
    for (size_t i = 0; i < plan.fetch_values.size(); ++i) {
      const int v = plan.fetch_values[i];
      backend.copy_out(fetch_copies[i].get(), ptr[v], plan.value_bytes(v), st);
    }
    backend.synchronize(st);
  };
  if (opt.mode == Mode::Train) {
    float* bufs = buffers_block();
    const size_t nb = buffers_backup ? store->num_buffers() * 4 : 0;
    if (nb) backend.copy(buffers_backup.get(), bufs, nb, st);
    // on a failure: the running statistics as they were; never throws (the first error is the one to report)
    auto restore = [&]() noexcept {
      try {
        if (nb) backend.copy(bufs, buffers_backup.get(), nb, st);
        backend.synchronize(st);
      } catch (...) {
      }
    };
    // in pieces (see TrainPieces) when the session can; a step whose pieces failed runs as a whole batch below
    double L = 0;
    bool pieced = false, fell_back = false;
    if (train_source && !hooked && ran_threads >= 2) {
      const bool made = make_train_pieces(ran_threads);
      use_num_threads(active->threads);  // the workers' compiles set one thread on this thread
      pieced = made && train_in_pieces(fd, L);
      fell_back = made && !pieced;
    }
    if (!pieced) {
      try {
        segment(0, 0, nf);
      } catch (...) {  // e.g. a label out of range: leave the running statistics as they were
        restore();
        throw;
      }
      float loss_host = 0;
      try {
        backend.copy_out(&loss_host, ptr[plan.loss_value], sizeof loss_host, st);
      } catch (...) {  // a device kernel's failure surfaces at the first wait
        restore();
        throw;
      }
      L = loss_host;
    }
    if (!std::isfinite(L)) {
      restore();
      for (int s = 0; s < nf; ++s) {  // a kernel that could not throw while it ran may know why
        run_ctx.in = K.node_in[s].data();
        run_ctx.out = K.node_out[s].data();
        run_ctx.persist = K.persist_ptr[s];
        const std::string why = K.kernels[s]->explain_failure(run_ctx);
        if (!why.empty()) op_error(g.nodes[s], why + "; parameters and running statistics were not updated");
      }
      throw Error(std::string("non-finite loss (") + (std::isnan(L) ? "nan" : "inf") + ") at step " +
                  std::to_string(steps) + "; parameters and running statistics were not updated");
    }
    try {
      // BN's running variance overflows first when training diverges (the normalized loss can stay finite)
      if (nb) {
        int64_t bad = backend.first_non_finite(bufs, store->num_buffers(), st);
        if (bad >= 0) {
          float x = 0;
          backend.copy_out(&x, bufs + bad, sizeof x, st);
          diverged("running statistic " + locate(false, size_t(bad)) + " became " + (std::isnan(x) ? "nan" : "inf") +
                   " in the forward pass (the loss was finite)");
        }
      }
      if (!pieced) segment(1, nf, n);
      if (grad_hook) {
        backend.synchronize(st);  // the gradients are final
        L = grad_hook(static_cast<float*>(grad_block.get()), n_grad, L);
      }
      auto t0 = clock::now();
      update();
      prof_ns[n] += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
      prof_calls[n]++;
    } catch (...) {
      restore();
      throw;
    }
    if (mirrored) write_back_mirrors(true);
    copy_fetches();
    tpieced_last = pieced;
    if (fell_back) {  // the pieces failed where the whole batch did not: whole batches from now on
      tpieces_failed = ran_threads;
      tpieces.reset();
      report.pieces_bytes = 0;
    }
    last_loss = L;
    ++steps;
    ++eager_runs;
    bump.s = nullptr;
    store->touch();
    maxima_version = store->version();
    if (mirrored) mirror_version = store->version();
    return;
  }
  try {
    segment(0, 0, n);
  } catch (...) {  // nothing of this run may still be queued when the next one starts
    try {
      backend.synchronize(st);
    } catch (...) {
    }
    throw;
  }
  copy_fetches();
  ++steps;
  ++eager_runs;
  if (writes_store) {  // a grad run: BN running statistics
    if (mirrored) write_back_mirrors(false);
    bump.s = nullptr;
    store->touch();
    if (mirrored) mirror_version = store->version();
  }
}

namespace {
// Whether graph g (its batch `batch`) treats every sample on its own: every value but the parameters keeps the batch
// as its first dimension, and no op works along that dimension (an axis, axes or permutation naming it, a slice
// without explicit axes) or mixes samples in training mode. Conservative: a false "no" only costs the pieces.
bool batch_separable(const Graph& g, int64_t batch) {
  for (const Value& v : g.values) {
    if (v.kind == ValueKind::Param || v.kind == ValueKind::Buffer) continue;
    if (v.desc.shape.empty() || v.desc.shape[0] != batch) return false;
  }
  for (const Node& n : g.nodes) {
    if (n.attrs.i("training", 0) != 0 || n.attrs.i("sync", 0) != 0) return false;
    if (along_batch(g, n)) return false;
  }
  return true;
}
}  // namespace

// Compiles the pieces once (see Pieces): the piece is the smallest divisor of the batch that makes at most 4 pieces
// per worker, and there must be at least 2 per worker (what lets a fast worker take over a slow one's share).
bool SessionImpl::make_pieces(int workers) {
  if (pieces && int(pieces->workers.size()) == workers) return true;
  if (pieces_failed || !source || workers < 2) return false;
  pieces.reset();
  try {
    int64_t batch = -1;
    bool same = true;
    for (const auto* infos : {&plan.feeds, &plan.fetches})
      for (const FeedInfo& f : *infos) {
        const int64_t b = f.desc.shape.empty() ? -1 : f.desc.shape[0];
        if (batch < 0) batch = b;
        same = same && b == batch && b > 0;
      }
    int64_t piece = 0;
    for (int64_t p = 1; same && p <= batch && !piece; ++p)
      if (batch % p == 0 && batch / p <= 4 * workers) piece = p;
    if (!piece || batch / piece < 2 * workers || !batch_separable(*source, batch)) {
      pieces_failed = true;
      return false;
    }
    Graph gp = rebatch(*source, piece);
    if (!batch_separable(gp, piece)) {
      pieces_failed = true;
      return false;
    }
    auto pc = std::make_unique<Pieces>();
    pc->piece = piece;
    pc->count = batch / piece;
    for (int w = 0; w < workers; ++w) pc->workers.push_back(std::make_unique<SessionImpl>(gp, store, opt, 1));
    const Plan& wp = pc->workers[0]->plan;
    if (wp.feeds.size() != plan.feeds.size() || wp.fetches.size() != plan.fetches.size()) {
      pieces_failed = true;
      return false;
    }
    for (const FeedInfo& f : plan.feeds)
      pc->feed_bytes.push_back(size_t(numel(f.desc.shape) / batch * piece) * dtype_size(f.desc.dtype));
    for (const FeedInfo& f : plan.fetches) {
      pc->fetch_bytes.push_back(size_t(numel(f.desc.shape) / batch * piece) * dtype_size(f.desc.dtype));
      pc->outs.push_back(backend.allocate(std::max<size_t>(pc->fetch_bytes.back() * size_t(pc->count), 64)));
    }
    for (auto& st : pc->staged)
      for (size_t b : pc->feed_bytes) st.push_back(backend.allocate(std::max<size_t>(b * size_t(pc->count), 64)));
    pc->state.reset(new std::atomic<uint64_t>[size_t(pc->count)]);
    pc->taken_ns.reset(new std::atomic<int64_t>[size_t(pc->count)]);
    for (int64_t i = 0; i < pc->count; ++i) {
      pc->state[i].store(0);
      pc->taken_ns[i].store(0);
    }
    pc->cpu.assign(size_t(workers), -1);
    cpu_set_t allowed;  // the caller's CPUs, which its new threads inherit
    if (!switched_off("CNNNATIVE_PIECES_PIN") && sched_getaffinity(0, sizeof allowed, &allowed) == 0 &&
        CPU_COUNT(&allowed) == workers)
      for (int c = 0, w = 0; c < CPU_SETSIZE && w < workers; ++c)
        if (CPU_ISSET(c, &allowed)) pc->cpu[size_t(w++)] = c;
    for (int w = 0; w < workers; ++w) pc->threads.emplace_back([p = pc.get(), w] { p->serve(size_t(w)); });
    size_t bytes = 0;
    for (const auto& w : pc->workers) bytes += w->worker_bytes();
    for (size_t b : pc->fetch_bytes) bytes += b * size_t(pc->count);
    for (size_t b : pc->feed_bytes) bytes += 2 * b * size_t(pc->count);
    // a budget the caller set (max_arena_bytes, memory_budget) holds for the session and its pieces together: over
    // it, whole batches (pc and its workers are freed here)
    if (pieces_limit && held_bytes() + bytes > pieces_limit) {
      pieces_failed = true;
      return false;
    }
    pieces = std::move(pc);
    report.pieces_bytes = bytes;
    return true;
  } catch (const std::exception&) {  // a piece size some op refuses, memory: whole batches it is
    pieces_failed = true;
    return false;
  }
}

SessionImpl::Pieces::~Pieces() {
  {
    std::lock_guard<std::mutex> hold(mu);
    stop = true;
  }
  wake.notify_all();
  for (auto& t : threads) t.join();
}

int64_t SessionImpl::Pieces::take(uint64_t r) {
  uint64_t v = next.load();
  for (;;) {
    if ((v >> 32) != (r & 0xffffffffu) || int64_t(v & 0xffffffffu) >= count) return -1;
    if (next.compare_exchange_weak(v, v + 1)) break;
  }
  const int64_t i = int64_t(v & 0xffffffffu);
  taken_ns[i].store(std::chrono::steady_clock::now().time_since_epoch().count());
  return i;
}

void SessionImpl::Pieces::run_piece(size_t w, uint64_t r, int64_t i) {
  std::vector<const void*> f;
  for (size_t k = 0; k < feed_bytes.size(); ++k)
    f.push_back(static_cast<const char*>(staged[r & 1][k].get()) + size_t(i) * feed_bytes[k]);
  workers[w]->run(f);
}

bool SessionImpl::Pieces::finish(size_t w, uint64_t r, int64_t i) {
  uint64_t expect = r << 2;
  if (!state[i].compare_exchange_strong(expect, (r << 2) | kWon)) return false;  // another was first, or a late run
  for (size_t k = 0; k < outs.size(); ++k)
    std::memcpy(static_cast<char*>(outs[k].get()) + size_t(i) * fetch_bytes[k], workers[w]->fetch_ptr(k),
                fetch_bytes[k]);
  state[i].store((r << 2) | kWon | kCopied);
  if (remaining.fetch_sub(1) == 1) {  // the run's last piece: wake the caller
    std::lock_guard<std::mutex> hold(mu);
    done.notify_all();
  }
  return true;
}

void SessionImpl::Pieces::help(size_t w, uint64_t r) {
  using clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < count; ++i)
    for (;;) {
      const uint64_t st = state[i].load();
      if ((st >> 2) != r || (st & kWon)) break;  // done, or a later run began
      const double held = double(clock::now().time_since_epoch().count() - taken_ns[i].load());
      if (held > 1.5 * double(piece_ns.load())) {
        run_piece(w, r, i);
        finish(w, r, i);
        break;
      }
      std::this_thread::yield();
    }
}

void SessionImpl::Pieces::serve(size_t w) {
  if (cpu[w] >= 0) {  // best effort: a refused pin leaves the thread where the kernel puts it
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu[w], &one);
    (void)sched_setaffinity(0, sizeof one, &one);  // 0: this thread
  }
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu);
      wake.wait(lk, [&] { return stop || run != seen; });
      if (stop) return;
      seen = run;
    }
    try {
      for (int64_t i; (i = take(seen)) >= 0;) {
        const auto t0 = std::chrono::steady_clock::now();
        run_piece(w, seen, i);
        if (finish(w, seen, i))
          piece_ns.store(
              int64_t(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count()));
      }
      help(w, seen);
    } catch (...) {
      std::lock_guard<std::mutex> hold(mu);
      if (run == seen && failed_run != seen) {  // a late run's error is nobody's business
        failed_run = seen;
        failure = std::current_exception();
        done.notify_all();
      }
    }
  }
}

// One run as pieces (see Pieces).
void SessionImpl::run_pieces(const std::vector<const void*>& fd) {
  Pieces& P = *pieces;
  pieced_last = false;
  uint64_t r;
  {
    std::lock_guard<std::mutex> hold(P.mu);
    r = P.run + 1;
  }
  for (size_t k = 0; k < fd.size(); ++k)
    std::memcpy(P.staged[r & 1][k].get(), fd[k], P.feed_bytes[k] * size_t(P.count));
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  for (int64_t i = 0; i < P.count; ++i) {
    P.state[i].store(r << 2);
    P.taken_ns[i].store(now);  // until taken (a helper between a take and its time stamp sees this run's start)
  }
  P.remaining.store(P.count);
  P.next.store((r & 0xffffffffu) << 32);
  std::unique_lock<std::mutex> lk(P.mu);
  P.run = r;
  P.wake.notify_all();
  P.done.wait(lk, [&] { return P.remaining.load() == 0 || P.failed_run == r; });
  if (P.remaining.load() != 0) std::rethrow_exception(P.failure);
  lk.unlock();
  pieced_last = true;
  ++steps;
  ++eager_runs;
}

// Makes the training pieces for `workers` threads once (see TrainPieces): one worker per piece, compiled for the
// piece and one thread, in Train mode with a plain SGD (they keep no optimizer state; the session's own update
// runs). Leaves one thread set on this thread (the caller restores its count).
bool SessionImpl::make_train_pieces(int workers) {
  if (tpieces && int(tpieces->workers.size()) == workers) return true;
  if (!train_source || workers < 2 || workers == tpieces_failed) return false;
  tpieces.reset();
  report.pieces_bytes = 0;
  auto refuse = [&] {  // not for this count: whole batches
    tpieces_failed = workers;
    return false;
  };
  const int64_t batch = plan.feeds.empty() || plan.feeds[0].desc.shape.empty() ? 0 : plan.feeds[0].desc.shape[0];
  if (batch % workers != 0 || batch / workers < kTrainPiecesMinPiece) return refuse();
  try {
    auto tp = std::make_unique<TrainPieces>();
    tp->piece = batch / workers;
    const Graph gp = rebatch(*train_source, tp->piece);
    CompileOptions wo = opt;
    wo.optim = OptimConfig{};
    wo.batch_pieces = false;
    for (int w = 0; w < workers; ++w) tp->workers.push_back(std::make_unique<SessionImpl>(gp, store, wo, 1));
    const Plan& wp = tp->workers[0]->plan;
    if (wp.feeds.size() != plan.feeds.size() || wp.fetch_values != plan.fetch_values ||
        wp.loss_value != plan.loss_value || tp->workers[0]->n_grad != n_grad)
      return refuse();
    for (const FeedInfo& f : plan.feeds) {
      if (f.desc.shape.empty() || f.desc.shape[0] != batch) return refuse();
      tp->feed_bytes.push_back(size_t(numel(f.desc.shape) / workers) * dtype_size(f.desc.dtype));
    }
    for (size_t k = 0; k < plan.fetches.size(); ++k) {
      const TensorDesc& d = plan.fetches[k].desc;
      const bool is_loss = plan.fetch_values[k] == plan.loss_value;
      if (!is_loss && (d.shape.empty() || d.shape[0] != batch)) return refuse();
      tp->fetch_bytes.push_back(is_loss ? 0 : size_t(numel(d.shape) / workers) * dtype_size(d.dtype));
      tp->outs.push_back(is_loss ? Buffer() : backend.allocate(std::max<size_t>(tp->fetch_bytes.back() * workers, 64)));
    }
    for (const auto& w : tp->workers) {
      tp->feeds.emplace_back(plan.feeds.size(), nullptr);
      tp->grads.push_back(static_cast<const float*>(w->grad_block.get()));
    }
    size_t bytes = 0;
    for (const auto& w : tp->workers) bytes += w->worker_bytes();
    for (size_t b : tp->fetch_bytes) bytes += b * size_t(workers);
    // a budget the caller set (max_arena_bytes, memory_budget) holds for the session and its pieces together
    if (pieces_limit && held_bytes() + bytes > pieces_limit) return refuse();
    tpieces = std::move(tp);
    report.pieces_bytes = bytes;
    return true;
  } catch (const std::exception&) {  // a piece size some op refuses, memory: whole batches it is
    return refuse();
  }
}

// A worker's forward and backward passes over its piece (one thread, the calling one): the loss and the gradients
// land in its own arena and gradient block. Nothing else: no checks (the session checked the whole batch's feeds),
// no update, no store version (the graph has nothing that writes the store in the forward pass).
void SessionImpl::piece_pass(const std::vector<const void*>& fd, int64_t step) {
  KernelSet& K = *active;
  for (auto& p : patches) K.node_in[p.node][p.slot] = const_cast<void*>(fd[p.feed]);
  for (size_t i = 0; i < plan.feed_values.size(); ++i) ptr[plan.feed_values[i]] = const_cast<void*>(fd[i]);
  RunCtx rc{nullptr, nullptr, K.scratch.get(), opt.seed, step};
  rc.params_version = store->version();
  using clock = std::chrono::steady_clock;
  for (size_t s = 0; s < K.kernels.size(); ++s) {
    rc.in = K.node_in[s].data();
    rc.out = K.node_out[s].data();
    rc.persist = K.persist_ptr[s];
    const auto t0 = clock::now();
    K.kernels[s]->run(rc);
    prof_ns[s] += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    prof_calls[s]++;
  }
}

// One training step's forward and backward passes in pieces (see TrainPieces): thread t of one parallel region
// runs worker t's piece on one thread, then, past a barrier, averages its share of the gradient block. L: the
// step's loss. false: a piece failed or the loss is not finite (the caller runs the whole batch, which says why).
bool SessionImpl::train_in_pieces(const std::vector<const void*>& fd, double& L) {
  TrainPieces& T = *tpieces;
  const int W = int(T.workers.size());
  std::atomic<int> failed{0};
  float* out = static_cast<float*>(grad_block.get());
  const int64_t step = steps;
  std::atomic<int64_t> combine_ns{0};
#pragma omp parallel num_threads(W)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    use_num_threads(1);  // the kernels were made for one thread; a nested region must not spawn more
    for (int w = t; w < W; w += nt) {
      try {
        std::vector<const void*>& f = T.feeds[size_t(w)];
        for (size_t k = 0; k < fd.size(); ++k) f[k] = static_cast<const char*>(fd[k]) + size_t(w) * T.feed_bytes[k];
        SessionImpl& wk = *T.workers[size_t(w)];
        wk.piece_pass(f, step);
        for (size_t k = 0; k < T.outs.size(); ++k)
          if (T.fetch_bytes[k])
            std::memcpy(static_cast<char*>(T.outs[k].get()) + size_t(w) * T.fetch_bytes[k],
                        wk.ptr[wk.plan.fetch_values[k]], T.fetch_bytes[k]);
      } catch (...) {
        failed.store(1);
      }
    }
#pragma omp barrier
    if (!failed.load()) {
      const auto t0 = std::chrono::steady_clock::now();
      const size_t lo = n_grad * size_t(t) / size_t(nt), hi = n_grad * size_t(t + 1) / size_t(nt);
      const float scale = 1.f / float(W);
      const float* const* g = T.grads.data();
      if (W == 2) {  // the usual case, as one vectorized loop (a loop over the workers inside it is not vectorized)
#pragma omp simd
        for (size_t i = lo; i < hi; ++i) out[i] = (g[0][i] + g[1][i]) * scale;
      } else {
        for (size_t i = lo; i < hi; ++i) {
          float a = g[0][i];
          for (int w = 1; w < W; ++w) a += g[w][i];
          out[i] = a * scale;
        }
      }
      if (t == 0)
        combine_ns.store(
            int64_t(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count()));
    }
  }
  use_num_threads(active->threads);
  if (failed.load()) return false;
  double sum = 0;
  for (const auto& w : T.workers) sum += double(*static_cast<const float*>(w->ptr[w->plan.loss_value]));
  L = sum / double(W);
  T.loss = float(L);
  T.combine_ns += double(combine_ns.load());
  T.combine_calls++;
  return std::isfinite(L);
}

const void* SessionImpl::fetch_ptr(size_t i) const {
  if (i >= plan.fetch_values.size()) throw Error("fetch index out of range");
  if (pieced_last) return pieces->outs[i].get();
  if (tpieced_last) return plan.fetch_values[i] == plan.loss_value ? &tpieces->loss : tpieces->outs[i].get();
  if (!fetch_copies.empty()) return fetch_copies[i].get();
  return ptr[plan.fetch_values[i]];
}

// ---- Session facade ----
Session::Session(const Graph& g, std::shared_ptr<ParamStore> store, const CompileOptions& opt)
    : impl_(std::make_unique<SessionImpl>(g, std::move(store), opt)) {}
Session::~Session() = default;
const std::vector<FeedInfo>& Session::feeds() const { return impl_->plan.feeds; }
const std::vector<FeedInfo>& Session::fetches() const { return impl_->plan.fetches; }
void Session::run(const std::vector<const void*>& feeds) { impl_->run(feeds); }
std::unique_lock<std::recursive_mutex> Session::lock() const {
  return std::unique_lock<std::recursive_mutex>(impl_->mu);
}
const void* Session::fetch(size_t i) const { return impl_->fetch_ptr(i); }
Session::BatchPieces Session::batch_pieces() const {
  const auto& I = *impl_;
  if (I.tpieced_last) return {I.tpieces->piece, int64_t(I.tpieces->workers.size()), int(I.tpieces->workers.size())};
  if (!I.pieced_last) return {};
  return {I.pieces->piece, I.pieces->count, int(I.pieces->workers.size())};
}
std::string Session::auto_choice() const {
  const auto& t = impl_->trial;
  if (!t.low) return "";
  switch (t.choice) {
    case SessionImpl::kPieces: return "pieces";
    case SessionImpl::kTop: return "all";
    case SessionImpl::kMore: return "more";
    default: return "fewer";
  }
}
double Session::loss() const { return impl_->last_loss; }
void Session::set_lr(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) throw Error("learning rate must be finite and >= 0");
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  impl_->lr = lr;
}
double Session::lr() const { return impl_->lr; }
void Session::set_frozen(const std::vector<std::string>& names) {
  SessionImpl& I = *impl_;
  if (I.opt.mode != Mode::Train) throw Error("set_frozen: only a training session updates parameters");
  std::lock_guard<std::recursive_mutex> hold(I.mu);
  std::vector<std::pair<size_t, size_t>> frozen_ranges;
  std::vector<std::string> kept;
  for (const std::string& n : names) {
    const ParamStore::Entry* e = nullptr;
    try {
      e = &I.store->find(n);
    } catch (const Error&) {  // not in the store: said below, with what set_frozen takes
    }
    if (!e || !e->trainable)
      throw Error("set_frozen: '" + n + "' is not a trainable parameter of this session's model");
    if (std::find(kept.begin(), kept.end(), n) != kept.end()) continue;
    kept.push_back(n);
    frozen_ranges.push_back({e->offset, e->offset + size_t(numel(e->shape))});
  }
  std::sort(frozen_ranges.begin(), frozen_ranges.end());
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t at = 0;
  for (const auto& [a, e] : frozen_ranges) {
    if (a > at) ranges.push_back({at, a});
    at = std::max(at, e);
  }
  if (at < I.n_grad) ranges.push_back({at, I.n_grad});
  I.frozen = std::move(kept);
  I.update_ranges = std::move(ranges);
  I.maxima_version = 0;  // the maxima are measured again before the next update
}
std::vector<std::string> Session::frozen() const {
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  return impl_->frozen;
}
int64_t Session::step_count() const { return impl_->steps; }
int Session::num_threads() const { return impl_->threads_used; }
void Session::set_step_count(int64_t steps) {
  if (steps < 0) throw Error("step count must be >= 0, got " + std::to_string(steps));
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  impl_->steps = steps;
}
std::vector<std::pair<std::string, float*>> Session::optimizer_state() {
  std::vector<std::pair<std::string, float*>> v;
  auto& I = *impl_;
  I.maxima_version = 0;  // the caller may write the blocks: measure them again before the next update
  if (I.opt.mode != Mode::Train) return v;
  const bool sgd = I.opt.optim.kind == "sgd";
  if (I.state_m) v.push_back({sgd ? "momentum_buffer" : "exp_avg", static_cast<float*>(I.state_m.get())});
  if (I.state_v) v.push_back({"exp_avg_sq", static_cast<float*>(I.state_v.get())});
  if (I.state_vmax) v.push_back({"max_exp_avg_sq", static_cast<float*>(I.state_vmax.get())});
  return v;
}
MemoryReport Session::memory_report() const {
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);  // a run may switch the kernel set (scratch, prepared)
  return impl_->report;
}
std::vector<PlannedBuffer> Session::memory_plan() const {
  const auto& I = *impl_;
  std::lock_guard<std::recursive_mutex> hold(I.mu);  // a run may switch the kernel set
  const Plan& p = I.plan;
  std::vector<PlannedBuffer> v;
  for (size_t i = 0; i < p.planned.size(); ++i) {
    const int val = p.planned[i];
    const Value& value = I.g.values[val];
    PlannedBuffer b;
    b.value = value.name;
    const int s = value.producer;
    if (s >= 0) {
      b.node = I.g.nodes[s].name;
      b.op = I.g.nodes[s].op;
    }
    const bool backward = s >= p.num_forward_nodes && p.opt.mode != Mode::Infer;
    const bool recomputed = b.node.size() > 10 && b.node.compare(b.node.size() - 10, 10, "/recompute") == 0;
    // the backward pass also re-lays out forward values for its kernels (reorders named after them): activations
    const bool grad = value.name.find("grad") != std::string::npos || value.name.find("/seed") != std::string::npos;
    b.kind = !backward ? "activation" : recomputed ? "recomputed" : grad ? "gradient" : "activation";
    b.bytes = p.requests[i].size;
    b.offset = p.memory.offsets[i];
    b.first = p.requests[i].first;
    b.last = p.requests[i].last;
    v.push_back(std::move(b));
  }
  for (size_t s = 0; s < I.active->kernels.size(); ++s) {
    const size_t bytes = I.active->kernels[s]->scratch_bytes();
    if (!bytes) continue;
    PlannedBuffer b;
    b.node = I.g.nodes[s].name;
    b.op = I.g.nodes[s].op;
    b.kind = "workspace";
    b.bytes = bytes;
    b.first = b.last = int(s);
    v.push_back(std::move(b));
  }
  return v;
}
int Session::num_forward_steps() const {
  return impl_->plan.opt.mode == Mode::Infer ? int(impl_->g.nodes.size()) : impl_->plan.num_forward_nodes;
}
std::vector<std::string> Session::schedule() const {
  std::vector<std::string> v;
  for (auto& n : impl_->g.nodes) v.push_back(n.op + " " + n.name);
  return v;
}
std::vector<KernelInfo> Session::kernels() const {
  std::vector<KernelInfo> v;
  const auto& I = *impl_;
  std::lock_guard<std::recursive_mutex> hold(I.mu);  // a run may switch the kernel set
  const Plan& p = I.plan;
  for (size_t s = 0; s < I.active->kernels.size(); ++s) {
    const Node& n = I.g.nodes[s];
    KernelInfo k{n.op, n.name, I.active->kernels[s]->impl(), {}, {}, "", ""};
    for (Layout l : p.in_view[s]) k.in_layouts.push_back(layout_name(l));
    for (int o : n.outputs) k.out_layouts.push_back(layout_name(p.layout[o]));
    if (!n.inputs.empty()) k.in_dtype = dtype_name(p.stored_dtype[n.inputs[0]]);
    if (!n.outputs.empty()) k.out_dtype = dtype_name(p.stored_dtype[n.outputs[0]]);
    v.push_back(std::move(k));
  }
  return v;
}
std::vector<PassInfo> Session::passes() const {
  std::vector<PassInfo> v;
  for (const auto& r : impl_->plan.passes) v.push_back({r.name, r.ran, r.nodes, r.summary, r.ms});
  return v;
}
std::vector<std::string> Session::reference_fallbacks() const { return impl_->plan.reference_fallbacks; }
const std::string& Session::backend() const { return impl_->backend.name(); }
std::vector<NodeProfile> Session::profile() const {
  std::vector<NodeProfile> v;
  const auto& I = *impl_;
  std::lock_guard<std::recursive_mutex> hold(I.mu);
  for (size_t s = 0; s < I.active->kernels.size(); ++s)
    v.push_back({I.g.nodes[s].op, I.g.nodes[s].name, I.prof_ns[s] * 1e-6, I.prof_calls[s], I.node_flops[s]});
  if (I.opt.mode == Mode::Train)
    v.push_back({"optimizer_update", I.opt.optim.kind, I.prof_ns.back() * 1e-6, I.prof_calls.back(), 0.0});
  // steps trained in pieces: the first worker's nodes ("pieces/" + name; the other workers ran theirs at the same
  // time) and the gradients' mean
  if (I.tpieces && I.tpieces->combine_calls) {
    const SessionImpl& w = *I.tpieces->workers[0];
    for (size_t s = 0; s < w.active->kernels.size(); ++s)
      v.push_back(
          {w.g.nodes[s].op, "pieces/" + w.g.nodes[s].name, w.prof_ns[s] * 1e-6, w.prof_calls[s], w.node_flops[s]});
    v.push_back({"pieces_mean", "gradients", I.tpieces->combine_ns * 1e-6, I.tpieces->combine_calls, 0.0});
  }
  return v;
}
void Session::reset_profile() {
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  std::fill(impl_->prof_ns.begin(), impl_->prof_ns.end(), 0.0);
  std::fill(impl_->prof_calls.begin(), impl_->prof_calls.end(), 0);
  if (auto* tp = impl_->tpieces.get()) {
    for (auto& w : tp->workers) {
      std::fill(w->prof_ns.begin(), w->prof_ns.end(), 0.0);
      std::fill(w->prof_calls.begin(), w->prof_calls.end(), 0);
    }
    tp->combine_ns = 0;
    tp->combine_calls = 0;
  }
}
void Session::copy_to_host(void* host_dst, const void* src, size_t bytes) const {
  impl_->backend.copy_out(host_dst, src, bytes, impl_->stream.get());
}
void Session::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  impl_->backend.copy_in(dst, host_src, bytes, impl_->stream.get());
  impl_->backend.synchronize(impl_->stream.get());  // host_src may change as soon as this returns
}
std::string Session::graph_status() const {
  const auto& I = *impl_;
  if (!I.capture_failure.empty()) return "eager (recording failed: " + I.capture_failure + ")";
  if (!I.capture) return "off";
  return I.captured[0] ? "replayed" : "recorded from the second run";
}
void Session::synchronize() const { impl_->backend.synchronize(impl_->stream.get()); }
float* Session::grads() { return static_cast<float*>(impl_->grad_block.get()); }
void Session::set_grad_hook(GradHook hook) {
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  if (hook && impl_->opt.mode != Mode::Train) throw Error("set_grad_hook: only a training session has an update");
  impl_->grad_hook = std::move(hook);
}
size_t Session::num_grads() const { return impl_->n_grad; }
std::vector<Session::GradReady> Session::grad_ready() const {
  const auto& I = *impl_;
  std::vector<GradReady> v;
  if (I.opt.mode == Mode::Infer) return v;
  for (size_t i = 0; i < I.g.params.size(); ++i) {
    const auto& e = I.store->find(I.g.values[I.g.params[i]].name);
    if (!e.trainable) continue;
    const int gv = I.plan.param_grads[i];
    // the gradient block holds no aliases (verify_plan): the node producing gv is its only writer
    v.push_back({e.name, e.offset, size_t(numel(e.shape)), gv >= 0 ? I.g.values[gv].producer : -1});
  }
  std::sort(v.begin(), v.end(), [](const GradReady& a, const GradReady& b) { return a.offset < b.offset; });
  return v;
}
void Session::set_step_hook(std::vector<int> steps, StepHook hook) {
  auto& I = *impl_;
  std::lock_guard<std::recursive_mutex> hold(I.mu);
  if (hook && I.opt.mode != Mode::Train) throw Error("set_step_hook: only a training session has a backward pass");
  const int n = int(I.g.nodes.size()), nf = I.plan.num_forward_nodes;
  std::vector<char> marks(size_t(n), 0);
  for (int s : steps) {
    if (s < nf || s >= n)
      throw Error("set_step_hook: step " + std::to_string(s) + " is not a backward step (" + std::to_string(nf) +
                  " to " + std::to_string(n - 1) + ")");
    marks[size_t(s)] = 1;
  }
  I.step_marks = hook ? std::move(marks) : std::vector<char>();
  I.step_hook = std::move(hook);
}
void Session::set_allreduce(Allreduce fn) {
  std::lock_guard<std::recursive_mutex> hold(impl_->mu);
  if (fn && impl_->opt.mode != Mode::Train) throw Error("set_allreduce: only a training session synchronizes");
  impl_->allreduce = std::move(fn);
}
std::vector<size_t> Session::collective_sizes() const {
  const auto& I = *impl_;
  std::vector<size_t> v;
  if (I.opt.mode != Mode::Train) return v;
  for (const Node& n : I.g.nodes) {
    if (!n.attrs.i("sync", 0) || !n.attrs.i("training", 0)) continue;
    // the protocol of batch_norm's kernels (ops/batch_norm.cpp, cpu/batch_norm.cpp)
    if (n.op == "batch_norm") {
      const size_t C = size_t(I.g.values[n.inputs[0]].desc.shape[1]);
      v.push_back(C + 1);
      v.push_back(C);
    } else if (n.op == "batch_norm_grad") {
      v.push_back(2 * size_t(I.g.values[n.inputs[1]].desc.shape[1]) + 1);
    }
  }
  return v;
}

}  // namespace cnn
