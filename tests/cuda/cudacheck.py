"""Helpers for tests/cuda: single-op graphs (tests/opcheck.py's graph building) run on the cuda backend and on
the CPU reference backend with the same inputs, forward and backward ("grad" sessions), and comparisons scaled
to the reference's magnitude. cuda sessions run with tf32=False (exact float32 math) unless a test says
otherwise; each single-op session runs several times so that the CUDA-graph replay (after the warm-up run) is
what gets compared, not only the first, eager run."""
from __future__ import annotations

import os

import numpy as np

from cnnnative import _core
from opcheck import _dtype_name, _graph

# The backend under test: "cuda". CNNNATIVE_CUDA_TESTS_BACKEND=cpu runs the same tests on the cpu backend (no
# GPU needed), which checks the tests themselves; conftest.py then does not skip them.
BACKEND = os.environ.get("CNNNATIVE_CUDA_TESTS_BACKEND", "cuda")


def device_kw(**kw):
    """model.compile(...) keywords that select the backend under test (device="cuda", or backend=... for the
    self-check on a CPU backend)."""
    if BACKEND == "cuda":
        return dict(device="cuda", tf32=kw.pop("tf32", False), **kw)
    kw.pop("tf32", None)
    kw.pop("cuda_graphs", None)
    return dict(backend=BACKEND, **kw)


def sync(s):
    """Waits for a session's queued work (sess.synchronize(); core sessions too)."""
    f = getattr(s, "synchronize", None)
    if f is not None:
        f()


RTOL = 1e-4  # float32 vs float32 with a different summation order
FWD_ATOL = 1e-5  # times max(1, max|reference|)
BWD_ATOL = 1e-4  # backward sums more terms (weight gradients over the batch)


def session(op, inputs, attrs, backend, mode="infer", grad_outputs=(0,), wrt=(), seed=0, tf32=False, graphs=True):
    dts = [_dtype_name(a) for a in inputs]
    g, ids, outs = _graph(op, inputs, attrs or {}, dts)
    kw = dict(grad_of=[outs[k] for k in grad_outputs], wrt=[ids[i] for i in wrt]) if mode == "grad" else {}
    s = _core.Session(g, _core.ParamStore([]), mode, backend=backend, seed=seed, tf32=tf32, graphs=graphs, **kw)
    return s, dts, outs


def _feeds(inputs, dts):
    return [np.ascontiguousarray(a, np.float32) if dt == "float32" else np.ascontiguousarray(a)
            for a, dt in zip(inputs, dts)]


def fetch_all(s):
    sync(s)
    return [np.array(s.fetch(i), copy=True) for i in range(len(s.fetches))]


def forward(op, inputs, attrs=None, backend=BACKEND, runs=1, seed=0, **kw):
    """Outputs of each of `runs` runs (a list of lists)."""
    s, dts, _ = session(op, inputs, attrs, backend, seed=seed, **kw)
    res = []
    for _ in range(runs):
        s.run(_feeds(inputs, dts))
        res.append(fetch_all(s))
    return res


def backward(op, inputs, attrs, dys, wrt, backend=BACKEND, grad_outputs=(0,), runs=1, seed=0, **kw):
    """(outputs, gradients w.r.t. inputs[wrt]) of each of `runs` runs."""
    s, dts, outs = session(op, inputs, attrs, backend, mode="grad", grad_outputs=grad_outputs, wrt=wrt, seed=seed,
                           **kw)
    res = []
    for _ in range(runs):
        s.run(_feeds(inputs, dts) + [np.asarray(d, np.float32) for d in dys])
        f = fetch_all(s)
        res.append((f[:len(outs)], f[len(outs):len(outs) + len(wrt)]))
    return res


def assert_close(got, ref, what, rtol=RTOL, atol=FWD_ATOL):
    """|got - ref| <= atol * max(1, max|ref|) + rtol * |ref| elementwise; integer outputs must be equal."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    if ref.dtype.kind in "iub":
        bad = got != ref
        assert not bad.any(), f"{what}: {int(bad.sum())} of {ref.size} integer elements differ"
        return
    g64, r64 = got.astype(np.float64), ref.astype(np.float64)
    assert np.isfinite(g64).all() == np.isfinite(r64).all(), f"{what}: non-finite values differ"
    scale = max(1.0, float(np.max(np.abs(r64)))) if r64.size else 1.0
    err = np.abs(g64 - r64)
    bad = err > atol * scale + rtol * np.abs(r64)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {ref.size} elements differ; max abs err {err.max():.3g} "
                           f"(reference max |x| {scale:.3g})")


def check_op_cuda(op, inputs, attrs=None, wrt=None, grad_outputs=(0,), grad=True, seed=0, runs=3):
    """cuda vs reference: every output of the forward op, then (grad) the outputs and input gradients of a grad
    session, on each of `runs` runs of the same session (the first eager, the later ones graph replays)."""
    attrs = attrs or {}
    ref = forward(op, inputs, attrs, backend="reference", seed=seed)[0]
    for r, got in enumerate(forward(op, inputs, attrs, backend=BACKEND, runs=runs, seed=seed)):
        assert len(got) == len(ref), f"{op}: {len(got)} outputs vs the reference's {len(ref)}"
        for k, (g, e) in enumerate(zip(got, ref)):
            if e.dtype.kind == "f":  # integer outputs are workspaces (max-pool indices) in each backend's format
                assert_close(g, e, f"{op} output {k} (run {r})")
    if not grad:
        return ref
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs) if np.asarray(a).dtype.kind == "f"]
    rng = np.random.default_rng(seed + 1)
    dys = [rng.standard_normal(ref[k].shape).astype(np.float32) for k in grad_outputs]
    ref_outs, ref_grads = backward(op, inputs, attrs, dys, wrt, backend="reference", grad_outputs=grad_outputs,
                                   seed=seed)[0]
    for r, (outs, grads) in enumerate(backward(op, inputs, attrs, dys, wrt, backend=BACKEND,
                                               grad_outputs=grad_outputs, runs=runs, seed=seed)):
        for k, (g, e) in enumerate(zip(outs, ref_outs)):
            if e.dtype.kind == "f":
                assert_close(g, e, f"{op} grad session output {k} (run {r})")
        for i, g, e in zip(wrt, grads, ref_grads):
            assert_close(g, e, f"{op} d(input {i}) (run {r})", atol=BWD_ATOL)
    return ref
