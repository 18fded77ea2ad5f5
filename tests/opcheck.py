"""Shared op-test harness: one op, checked four ways.

check_op(op, inputs, attrs, numpy_ref) builds a one-node graph whose inputs are all graph inputs and
checks (1) the fast CPU kernel against a numpy reference, (2) the fast kernel against the naive
reference kernel (float32), (3) the reference backward in float64 against central finite differences
of the reference forward in float64, and (4) the fast backward against the reference backward.
"""
from __future__ import annotations

import numpy as np

from cnnnative import _core


def _graph(op, inputs, attrs, dtypes):
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(a.shape), dt) for i, (a, dt) in enumerate(zip(inputs, dtypes))]
    outs = g.add_node(op, ids, attrs, "node")
    g.set_outputs(outs)
    return g, ids, outs


def _dtype_name(a):
    return {np.dtype(np.int32): "int32", np.dtype(np.uint8): "uint8"}.get(a.dtype, "float32")


def run_forward(op, inputs, attrs=None, backend="cpu", compute="float32"):
    attrs = attrs or {}
    dts = [_dtype_name(a) for a in inputs]
    g, ids, outs = _graph(op, inputs, attrs, dts)
    s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, compute=compute)
    fdt = np.float64 if compute == "float64" else np.float32
    s.run([a.astype(fdt) if dt == "float32" else a for a, dt in zip(inputs, dts)])
    return [s.fetch(i) for i in range(len(outs))]


def run_backward(op, inputs, attrs, dys, wrt, backend="cpu", compute="float32", outputs=(0,)):
    """Gradients of sum_k <out_k, dy_k> w.r.t. inputs[wrt]."""
    dts = [_dtype_name(a) for a in inputs]
    g, ids, outs = _graph(op, inputs, attrs, dts)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, compute=compute,
                      grad_of=[outs[k] for k in outputs], wrt=[ids[i] for i in wrt])
    fdt = np.float64 if compute == "float64" else np.float32
    feeds = [a.astype(fdt) if dt == "float32" else a for a, dt in zip(inputs, dts)]
    s.run(feeds + [d.astype(fdt) for d in dys])
    n_out = len(outs)
    return [s.fetch(n_out + j) for j in range(len(wrt))]


def finite_diff(op, inputs, attrs, dys, wrt, eps=1e-6, outputs=(0,)):
    """Central differences of sum_k <out_k, dy_k> in float64 on the reference backend."""
    base = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]
    grads = []
    for i in wrt:
        gi = np.zeros_like(base[i], dtype=np.float64)
        flat = base[i].reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            vals = []
            for sgn in (1, -1):
                flat[j] = old + sgn * eps
                outs = run_forward(op, base, attrs, backend="reference", compute="float64")
                vals.append(sum(float(np.sum(outs[k] * dys[n])) for n, k in enumerate(outputs)))
            flat[j] = old
            gi.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * eps)
        grads.append(gi)
    return grads


def assert_close(a, b, rtol, atol, what):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    err = np.abs(a - b)
    tol = atol + rtol * np.abs(b)
    bad = err > tol
    assert not bad.any(), f"{what}: {bad.sum()} of {a.size} elements differ; max abs err {err.max():.3g}"


def check_op(op, inputs, attrs=None, numpy_ref=None, wrt=None, outputs=(0,), rtol=1e-4, atol=1e-5,
             grad=True, fd_rtol=1e-3, fd_atol=1e-5, seed=0):
    """Runs the four checks. numpy_ref(*inputs) -> list of expected outputs (float64)."""
    attrs = attrs or {}
    fast = run_forward(op, inputs, attrs)
    ref32 = run_forward(op, inputs, attrs, backend="reference")
    for k, (f, r) in enumerate(zip(fast, ref32)):
        if r.dtype.kind == "f":
            assert_close(f, r, rtol, atol, f"{op} output {k}: fast vs reference")
    if numpy_ref is not None:
        expected = numpy_ref(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs])
        for k, e in enumerate(expected):
            assert_close(fast[k], e, rtol, atol, f"{op} output {k}: fast vs numpy")
    if not grad:
        return fast
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs) if a.dtype.kind == "f"]
    rng = np.random.default_rng(seed)
    dys = [rng.standard_normal(fast[k].shape) for k in outputs]
    ref64 = run_backward(op, inputs, attrs, dys, wrt, backend="reference", compute="float64", outputs=outputs)
    fd = finite_diff(op, inputs, attrs, dys, wrt, outputs=outputs)
    for i, (r, n) in zip(wrt, zip(ref64, fd)):
        assert_close(r, n, fd_rtol, fd_atol, f"{op} d(input {i}): reference float64 vs finite differences")
    fastg = run_backward(op, inputs, attrs, dys, wrt, outputs=outputs)
    for i, (f, r) in zip(wrt, zip(fastg, ref64)):
        assert_close(f, r, rtol * 10, atol * 10, f"{op} d(input {i}): fast vs reference")
    return fast
