"""Session: a model compiled for one input shape and mode. Wraps _core.Session: run(x) for inference,
step(x, y) for one training step (loss 'cross_entropy', 'mse' or 'bce_with_logits'), memory_report().
No Python runs per element; a step's work is one call into C++."""
from __future__ import annotations

from collections import abc

import numpy as np

from . import _core
from . import _params
from . import functional as F
from .optim import Optimizer

# loss name -> (functional, target dtype); cross_entropy takes int32 class labels [N], the others float32
# targets of the model output's shape.
_LOSSES = {
    "cross_entropy": (F.cross_entropy, "int32"),
    "mse": (F.mse_loss, "float32"),
    "bce_with_logits": (F.binary_cross_entropy_with_logits, "float32"),
}


def arena_budget(max_arena_bytes) -> int:
    """compile(max_arena_bytes=...) for the core: a positive byte count, or 0 for None (the machine's memory)."""
    if max_arena_bytes is None:
        return 0
    if not isinstance(max_arena_bytes, (int, np.integer)) or isinstance(max_arena_bytes, bool) or max_arena_bytes <= 0:
        raise ValueError(f"compile: max_arena_bytes must be a positive int (bytes) or None, got {max_arena_bytes!r}")
    return int(max_arena_bytes)


def _dump_dir(d) -> str:
    """compile(dump_passes=folder): the folder (created) the pipeline writes the graph into after each pass."""
    if d is None:
        return ""
    import os
    d = os.fspath(d)
    os.makedirs(d, exist_ok=True)
    return d


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _example_shape(model, batch: int) -> tuple:
    """A full input shape to show in an error: the batch, the channels (or features) the model's first
    convolution (or linear layer) takes, and 32x32 pixels."""
    for _, m in model.named_modules():
        if hasattr(m, "in_channels") and hasattr(m, "kernel_size"):
            return (batch, int(m.in_channels), 32, 32)
        if hasattr(m, "in_features"):
            return (batch, int(m.in_features))
    return (batch, 3, 32, 32)


def declared_input_shape(model):
    """The input shape a model declares (its `input_shape` attribute: (N, C, ...) with any batch N, as the zoo
    models and loaded model files have; an imported ONNX model's symbolic batch None reads as 1), checked; None when
    it declares none."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    if isinstance(shape, (tuple, list)) and len(shape) >= 2 and shape[0] is None:
        shape = (1,) + tuple(shape[1:])  # a symbolic batch (an imported ONNX model's): any batch size, as N is
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)) or len(shape) < 2 \
            or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(f"{type(model).__name__}.input_shape must be (N, C, ...) with positive int sizes, got "
                         f"{shape!r}")
    return tuple(int(s) for s in shape)


def resolve_input_shape(model, input_shape) -> tuple:
    """compile()'s input shape: a full shape (N, C, ...), a batch size N (with the model's declared input shape
    for the rest), or None (the declared shape as it is)."""
    if input_shape is None or _is_int(input_shape):
        declared = declared_input_shape(model)
        call = "compile()" if input_shape is None else f"compile({int(input_shape)})"
        if declared is None:
            n = 16 if input_shape is None else int(input_shape)
            raise ValueError(f"{call}: {type(model).__name__} declares no input shape; give the full shape, e.g. "
                             f"compile({_example_shape(model, max(n, 1))}), or declare one (model.input_shape = "
                             f"{_example_shape(model, 1)}, any batch size)")
        if input_shape is None:
            return declared
        if input_shape <= 0:
            raise ValueError(f"{call}: the batch size must be positive")
        return (int(input_shape),) + declared[1:]
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, abc.Iterable):
        raise TypeError(f"compile: input_shape must be a shape (N, C, ...) of ints or a batch size (int), got "
                        f"{type(input_shape).__name__} {input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) < 2 or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(f"compile: input_shape must be (N, C, ...) with positive int sizes, got {input_shape!r}")
    return tuple(int(s) for s in shape)


def warn_reference_fallbacks(core_session) -> None:
    """One warning per compile naming the nodes that run an op's naive reference kernel on a backend that has
    fast kernels (compile(strict=True) refuses such a session instead)."""
    slow = core_session.reference_fallbacks()
    if slow:
        import warnings
        warnings.warn(f"the {core_session.backend} backend has no kernel for {len(slow)} node(s), which run the "
                      f"naive reference kernel: {', '.join(slow)} (session.kernels() lists every node; "
                      "compile(strict=True) refuses this)", RuntimeWarning, stacklevel=3)


def _recompute_choice(recompute, mode, memory_budget) -> str:
    """compile(recompute=...) for the core: None = 'auto' (the smallest of 'none', 'cheap', 'lean' in training),
    True = 'segments', False = 'none'."""
    if recompute is None:
        return "auto"
    if memory_budget is not None:
        raise ValueError("compile: give recompute= or memory_budget=, not both (memory_budget picks the recompute "
                         "choice)")
    if recompute is True:
        return "segments"
    if recompute is False:
        return "none"
    ok = recompute in ("auto", "none", "cheap", "lean", "segments")
    if isinstance(recompute, str) and recompute.startswith("lean:"):
        try:
            ok = float(recompute[5:]) >= 0
        except ValueError:
            ok = False
    if not ok:
        raise ValueError("compile: recompute must be None/'auto' (the default), 'none', 'cheap', "
                         f"'lean', 'lean:<flops per byte>', 'segments' (or True/False), got {recompute!r}")
    return recompute


def _budget_bytes(memory_budget, mode) -> int:
    """compile(memory_budget=...) for the core: a positive byte count, or 0 for None."""
    if memory_budget is None:
        return 0
    if (not isinstance(memory_budget, (int, np.integer)) or isinstance(memory_budget, bool)
            or memory_budget <= 0):
        raise ValueError(f"compile: memory_budget must be a positive int (bytes) or None, got {memory_budget!r}")
    if mode != "train":
        raise ValueError("compile: memory_budget applies to mode='train' only (it picks what training recomputes)")
    return int(memory_budget)


class Session:
    def __init__(self, model, input_shape=None, mode="infer", optimizer=None, loss=None, seed=0,
                 backend="cpu", plan_memory=True, optimize=True, layout="auto", recompute=None,
                 dtype="float32", cache_weights=True, winograd=True, deterministic=None,
                 max_arena_bytes=None, strict=False, dump_passes=None, device=None, tf32=True, cuda_graphs=True,
                 distributed=False, memory_budget=None, batch_pieces=True):
        if mode not in ("infer", "train"):
            raise ValueError(f"compile: mode must be 'infer' or 'train', got {mode!r}")
        input_shape = resolve_input_shape(model, input_shape)
        recompute = _recompute_choice(recompute, mode, memory_budget)
        if dtype == "int8":
            raise ValueError("compile: dtype='int8' needs calibration data: model.compile(..., dtype='int8', "
                             "calibration=batches) or cnnnative.quantize(model, batches).compile(...)")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compile: dtype must be 'float32', 'bfloat16' or 'int8', got {dtype!r}")
        if recompute not in ("none", "auto") and mode != "train":
            raise ValueError("compile: recompute applies to mode='train' only (inference keeps no activations for backward)")
        if mode == "train":
            loss = "cross_entropy" if loss is None else loss
            if loss not in _LOSSES:
                raise ValueError(f"compile: unknown loss {loss!r} (supported: {', '.join(_LOSSES)})")
            if optimizer is None:
                raise ValueError("compile(mode='train') needs an optimizer, e.g. "
                                 "compile(..., mode='train', optimizer=cn.optim.SGD(model.parameters(), lr=0.01))")
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"compile: optimizer must be a cnnnative.optim optimizer (SGD, Adam, AdamW), got "
                                f"{type(optimizer).__name__}")
        else:
            if optimizer is not None:
                raise ValueError("compile: optimizer applies to mode='train' only (an inference session does not "
                                 "update weights)")
            if loss is not None:
                raise ValueError(f"compile: loss applies to mode='train' only, got loss={loss!r} with mode='infer'")
        if deterministic is None:
            from . import _determinism
            deterministic = _determinism.enabled()
        self.deterministic = bool(deterministic)
        from .cuda import resolve_device
        backend = resolve_device(device, backend)  # device='cuda': a clear error here when it cannot run
        self.device = "cuda" if backend == "cuda" else "cpu"
        self.model = model
        self.mode = mode
        self.dtype = dtype
        self.input_shape = input_shape
        store = model._ensure_store()
        b, x, y = model.trace(input_shape, training=(mode == "train"))
        self.output_shape = y.shape
        g = b.graph
        kw = {}
        if mode == "train":
            fn, target_dtype = _LOSSES[loss]
            if loss == "cross_entropy":
                if len(y.shape) != 2:
                    raise ValueError(f"compile: cross_entropy needs [N, classes] logits, the model gives "
                                     f"{list(y.shape)}")
                target_shape, self.num_classes = [input_shape[0]], y.shape[1]
            else:
                target_shape, self.num_classes = list(y.shape), None
            with b:
                target = b.input("labels" if loss == "cross_entropy" else "target", target_shape, target_dtype)
                lv = fn(y, target)
            kw = dict(loss=lv.vid, optim=optimizer.config())
            self.loss = loss
            self.target_shape = tuple(target_shape)
        g.set_outputs([y.vid])
        self.graph = g
        self.optimizer = optimizer
        # a session runs the structure it was compiled from (checked before each run, see _core_checked)
        from .nn import StructureWatch
        self._watch = StructureWatch(model)
        self._store = store
        try:
            self._s = _core.Session(g, store, mode, backend=backend, plan_memory=plan_memory, seed=int(seed),
                                    optimize=bool(optimize), layout=str(layout), recompute=recompute, dtype=dtype,
                                    cache_weights=bool(cache_weights), winograd=bool(winograd),
                                    deterministic=self.deterministic, max_arena_bytes=arena_budget(max_arena_bytes),
                                    strict=bool(strict), dump_passes=_dump_dir(dump_passes), tf32=bool(tf32),
                                    graphs=bool(cuda_graphs), memory_budget=_budget_bytes(memory_budget, mode),
                                    batch_pieces=bool(batch_pieces), **kw)
        except _core.Error as e:  # a node the compiler refused: say which module it came from
            from .nn import locate_node_error
            msg = locate_node_error(str(e), model)
            if msg == str(e):
                raise
            raise _core.Error(msg).with_traceback(e.__traceback__) from None
        warn_reference_fallbacks(self._s)
        if optimizer is not None:
            optimizer._attach(self)
        self._bn = [m for m in model.modules() if hasattr(m, "_extra_state")] if mode == "train" else []
        if distributed:
            from . import distributed as dist
            opts = distributed if isinstance(distributed, dict) else {}
            unknown = sorted(set(opts) - {"bucket_bytes", "overlap"})
            if unknown:
                raise ValueError(f"compile: distributed options are 'bucket_bytes' and 'overlap', got {unknown}")
            # same model and settings on every rank, rank 0's weights, gradient averaging
            dist.attach(self, **opts)

    _watch = None
    _store = None
    _dist = None  # distributed=True: the gradient averaging hook (cnnnative.distributed)

    def _core_checked(self):
        """The core session, once the model's registered structure is known to be the one compiled: after a
        module, parameter or buffer was added, removed or replaced, the session frees its memory and refuses
        (cn.Error) for good, instead of running a graph and weights the model no longer has."""
        if self._watch is not None:
            why = self._watch.check()
            if why is not None:
                self._s = None
                raise _core.Error(f"this session was compiled before the model's structure changed ({why}); its "
                                  "graph and weights are no longer the model's: compile the model again")
        return self._s

    # ---- running ----
    def run(self, x: np.ndarray) -> np.ndarray:
        """Inference on one batch of exactly input_shape; returns a new array."""
        if self.mode != "infer":
            raise ValueError("run(): this session was compiled with mode='train'; use step(x, y)")
        s = self._core_checked()
        if _params.editing() and self._store is not None:
            # inside `with cn.no_grad():` the parameters may have been written since the last run: prepared
            # weights are rebuilt on every run until the context is left
            self._store.touch()
        return s.run_fetch([x], 0)

    __call__ = run

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step (forward, loss, backward, update). Returns the loss. y: int32 labels [N] for
        loss='cross_entropy', a float32 target of the output's shape for 'mse' and 'bce_with_logits'."""
        if self.mode != "train":
            raise ValueError("step(): this session was compiled with mode='infer'; use run(x)")
        if self._dist is not None:
            return self._distributed_step(x, y)
        loss = self._core_checked().step(x, y)
        for m in self._bn:
            m._extra_state["num_batches_tracked"] += 1
        return loss

    def _distributed_step(self, x, y) -> float:
        """step() of a distributed session: the gradients are averaged over the ranks before the update and the
        loss returned is the mean over the ranks. A failure on any rank before the exchange raises
        DistributedError on every rank (and no rank updates)."""
        hook = self._dist
        hook.begin(hook.step + 1 if self._s is None else self._s.step_count)
        try:  # inside: a rank whose session refuses (structure changed) still announces it to the others
            core = self._core_checked()
            loss = core.step(x, y)
        except Exception as e:
            if hook.reached:  # the status word was exchanged: every rank raises the same (or the update failed)
                raise
            hook.drain(e)
        hook.sync_buffers(hook.buffers)
        for m in self._bn:
            m._extra_state["num_batches_tracked"] += 1
        return loss

    def output(self) -> np.ndarray:
        """The model output (logits) of the last run or step."""
        return self._core_checked().fetch(0)

    @property
    def lr(self) -> float:
        return self._core_checked().lr

    @lr.setter
    def lr(self, value: float) -> None:
        if self._s is not None:  # a retired session ignores its optimizer's schedule
            self._s.lr = float(value)

    @property
    def num_threads(self) -> int:
        """OpenMP threads the last run used (cn.set_num_threads applies to runs from any thread); 0 before any."""
        return self._core_checked().num_threads

    @property
    def batch_pieces(self):
        """How the last run split its batch: (piece, count, workers) when it ran as `count` pieces of `piece`
        samples over `workers` single-threaded workers (inference on a loaded machine, or a training step of a
        small model with 2+ threads, where count == workers: compile's batch_pieces), None for a whole-batch run."""
        return self._core_checked().batch_pieces

    @property
    def auto_choice(self):
        """What auto thread mode chooses for this session's runs on a loaded machine (it times the options on the
        session's own runs and keeps the fastest): 'pieces' (the batch in pieces, see batch_pieces), 'all' (whole
        batches on every thread), 'more' (inference: whole batches on one thread more than the CPUs, which gets a
        static split the scheduler's fair share of a CPU another process holds) or 'fewer' (whole batches on the
        reduced count the load leaves); None when no choice is being made (a quiet machine, or a fixed count:
        cn.set_num_threads(n))."""
        return self._core_checked().auto_choice

    @property
    def step_count(self) -> int:
        """Completed runs/steps. Settable (resume): Adam's bias correction and the dropout streams follow it."""
        return self._core_checked().step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self._core_checked().step_count = int(value)

    def optimizer_state(self) -> dict:
        """Copies of the optimizer's flat state blocks, by PyTorch's state names ('momentum_buffer';
        'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'), each one float per parameter element in the order of the
        model's parameter block. Empty for inference sessions and SGD without momentum."""
        return self._core_checked().optimizer_state()

    def load_optimizer_state(self, state: dict) -> None:
        """Replaces the optimizer state with blocks from optimizer_state(); all are checked (names, sizes,
        finite) before any is written."""
        self._core_checked().load_optimizer_state(dict(state))

    def memory_report(self) -> dict:
        return self._core_checked().memory_report()

    def memory_plan(self) -> list:
        """The planner's decisions, one dict per block: every arena buffer (value, node, op, kind 'activation',
        'recomputed' or 'gradient', bytes, offset in the arena, first and last schedule step it is live on), then
        every kernel workspace (kind 'workspace', offset in the scratch block, live on its one step).
        memory_report() has the arena's size and lower bound; num_forward_steps where the backward pass starts.
        cnnnative.viz.memory_plan draws it."""
        return self._core_checked().memory_plan()

    @property
    def num_forward_steps(self) -> int:
        """The number of schedule steps of the forward pass (all of them for an inference session)."""
        return self._core_checked().num_forward_steps

    @property
    def graph_status(self) -> str:
        """CUDA graphs (device='cuda', cuda_graphs=True): 'off', 'recorded from the second run', 'replayed', or
        'eager (recording failed: why)' when a kernel could not be recorded (runs then launch every kernel)."""
        return self._core_checked().graph_status

    def synchronize(self) -> None:
        """Waits for the work this session queued on its device (run() and step() already return only once their
        results reached the host; a no-op on the CPU)."""
        self._core_checked().synchronize()

    def kernels(self) -> list:
        """One dict per schedule step: op, name, impl (what runs it: "onednn:<primitive> <implementation>",
        "winograd", "native" for our own AVX-512/AVX2 loops ("native 2x2": the AVX-512 2x2 stride-2 max pooling of
        plain layouts), "reference" for an op's naive loops), in_layouts /
        out_layouts (plain, nhwc, nChw16c, nChw8c) and the stored dtypes of input 0 and output 0."""
        return self._s.kernels()

    def passes(self) -> list:
        """The compile pipeline as it ran for this session: one dict per pass (name, ran, nodes after it, a
        summary of what it did, ms). compile(dump_passes=folder) also writes the graph after each pass."""
        return self._s.passes()

    def schedule(self) -> list:
        return self._core_checked().schedule()

    def profile(self, reset: bool = False, top: int | None = None) -> list:
        """Per-node time since the last reset: op, name, calls, ms per call, GFLOP/s (conv/linear),
        share of the total; sorted by time. The optimizer update is its own entry in training. Steps trained in
        pieces (compile's batch_pieces) add the first worker's nodes as 'pieces/<name>' (its piece of the batch on
        one thread; the other workers ran theirs at the same time) and 'pieces_mean' (the gradients' average)."""
        rows = self._core_checked().profile()
        total = sum(r["total_ms"] for r in rows) or 1.0
        out = []
        for r in rows:
            calls = max(r["calls"], 1)
            ms = r["total_ms"] / calls
            out.append({"op": r["op"], "name": r["name"], "calls": r["calls"], "ms": ms,
                        "gflops": (r["flops"] / (ms * 1e6)) if r["flops"] and ms > 0 else None,
                        "share": r["total_ms"] / total})
        out.sort(key=lambda r: -r["ms"] * max(r["calls"], 1))
        if reset:
            self._s.reset_profile()
        return out[:top] if top else out

    def print_profile(self, top: int = 15) -> None:
        print(f"{'op':<24}{'node':<28}{'calls':>6}{'ms/call':>10}{'GFLOP/s':>9}{'share':>7}")
        for r in self.profile(top=top):
            g = f"{r['gflops']:.1f}" if r["gflops"] else "-"
            print(f"{r['op']:<24}{r['name'][:27]:<28}{r['calls']:>6}{r['ms']:>10.3f}{g:>9}{r['share']:>7.1%}")

    def __repr__(self):
        return f"Session(mode={self.mode!r}, input_shape={self.input_shape}, output_shape={self.output_shape})"
