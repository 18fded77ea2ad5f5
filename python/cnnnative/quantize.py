"""Post-training int8 quantization (docs/ARCHITECTURE.md, "int8").

`qmodel = cn.quantize(model, calibration=batches)` runs the float model on the calibration batches, records the
range of every activation an int8 kernel would read (the core's `quant_points`: the inputs of convolutions, linear
layers, max/global-average pools and residual adds once conv/BN/add/ReLU chains are fused), chooses a symmetric
scale per activation (uint8 where the activation never goes below zero, as after a ReLU; int8 otherwise) and
returns a `GraphModule` whose graph has quantize -> dequantize pairs (QDQ) on those activations. Compiling it on
the cpu backend runs convolutions (BN folded, ReLU and residual sum fused), linear layers and pools as oneDNN int8
kernels with per-output-channel int8 weights; an op without an int8 kernel runs in float between a dequantize and
a quantize. Inputs and outputs stay float32. The quantized model saves to a .cnn file like any model
(`cn.save(qmodel, path)`) and loads in Python and C++.

Range methods: "minmax" (the observed min/max), "percentile" (the `percentile`-th percentile of |x|, clipping
rare outliers), "entropy" (the clipping threshold whose quantized distribution has the least KL divergence from
the observed one, TensorRT's calibration)."""
from __future__ import annotations

from collections import abc

import numpy as np

from . import _core

__all__ = ["quantize"]

_METHODS = ("minmax", "percentile", "entropy")
_BINS = 2048
_GROUP_BYTES = 256 << 20  # calibration: activation bytes one float session fetches per run (at most)


def _batches(calibration):
    if calibration is None:
        raise ValueError("quantize: calibration data is required (an iterable of input batches, e.g. a list of "
                         "numpy arrays [N, C, H, W] or a DataLoader)")
    if isinstance(calibration, np.ndarray):
        calibration = [calibration]
    if not isinstance(calibration, abc.Iterable):
        raise TypeError(f"quantize: calibration must be an iterable of input batches, got "
                        f"{type(calibration).__name__}")
    out = []
    for i, b in enumerate(calibration):
        if isinstance(b, (tuple, list)) and b:  # (inputs, labels) pairs from a data loader
            b = b[0]
        a = np.ascontiguousarray(np.asarray(b, dtype=np.float32))
        if a.ndim < 2 or a.shape[0] == 0:
            raise ValueError(f"quantize: calibration batch {i} must be [N, ...] with N > 0, got shape {a.shape}")
        if out and a.shape[1:] != out[0].shape[1:]:
            raise ValueError(f"quantize: calibration batch {i} has shape {a.shape}, the first had "
                             f"{out[0].shape}: every batch must have the same per-sample shape")
        if not np.isfinite(a).all():
            raise ValueError(f"quantize: calibration batch {i} holds NaN or infinite values")
        out.append(a)
    if not out:
        raise ValueError("quantize: the calibration data is empty (no batches)")
    return out


def _kl_threshold(hist: np.ndarray, edges_max: float, levels: int) -> float:
    """The clipping threshold of |x| (histogram over [0, edges_max]) minimizing KL(P || Q), P the distribution
    clipped at the threshold (outliers added to its last bin), Q that distribution merged into `levels` bins."""
    hist = hist.astype(np.float64)
    hist[0] = 0.0  # the first bin (a ReLU's zeros) quantizes to 0 at any threshold; its spike would dominate P
    best, best_i = np.inf, len(hist)
    for i in range(max(levels, 16), len(hist) + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        if not nz.any():
            continue
        # Q: each of `levels` chunks of hist[:i] spread evenly over its non-zero bins
        starts = (np.arange(levels) * i) // levels
        sizes = np.diff(np.append(starts, i))
        sums = np.add.reduceat(hist[:i], starts)
        cnt = np.add.reduceat(nz.astype(np.float64), starts)
        q = np.repeat(np.divide(sums, cnt, out=np.zeros_like(sums), where=cnt > 0), sizes) * nz
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p[nz] / ps, q[nz] / qs
        qn = np.where(qn > 0, qn, 1e-12)
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_i = kl, i
    return edges_max * best_i / len(hist)


def _graph_of(model, shape):
    from .io import GraphModule, traced_graph
    from .nn import Module
    if isinstance(model, GraphModule):
        return model._graph_for(shape), model._extra_list()
    if not isinstance(model, Module):
        raise TypeError(f"quantize: expected a cnnnative.nn.Module, got {type(model).__name__}")
    return traced_graph(model, shape)


def quantize(model, calibration, method: str = "minmax", percentile: float = 99.99):
    """An int8 copy of `model` (it shares the model's weights) calibrated on `calibration`, an iterable of input
    batches (numpy arrays [N, ...] of one per-sample shape, or (inputs, labels) pairs). method: "minmax",
    "percentile" (with `percentile`, e.g. 99.99) or "entropy". Returns a GraphModule: `qmodel.compile(n)` gives
    an inference session for batch size n, `cn.save(qmodel, path)` writes a .cnn file. Quantization is for
    inference: the weights are quantized when the session is compiled (BN folded first) and again when they
    change."""
    if method not in _METHODS:
        raise ValueError(f"quantize: method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    if method == "percentile" and not (isinstance(percentile, (int, float)) and 50 < percentile <= 100):
        raise ValueError(f"quantize: percentile must be in (50, 100], got {percentile!r}")
    batches = _batches(calibration)
    shape = tuple(batches[0].shape)
    store = model._ensure_store()
    g, extra = _graph_of(model, shape)
    outputs = list(g.outputs)
    points = _core.quant_points(g)
    measured = [v for v, tie in points if tie < 0]
    # The values are fetched as extra outputs of float sessions, a group of them per session, so that what one
    # session keeps alive stays under _GROUP_BYTES (every output lives to the end of a run).
    groups, cur, size = [], [], 0
    for v in measured:
        nbytes = 4 * int(np.prod(g.shape(v)))
        if cur and size + nbytes > _GROUP_BYTES:
            groups.append(cur)
            cur, size = [], 0
        cur.append(v)
        size += nbytes
    if cur:
        groups.append(cur)
    lo = np.full(len(measured), np.inf)
    hi = np.full(len(measured), -np.inf)
    thresh = np.zeros(len(measured))
    index = {v: k for k, v in enumerate(measured)}
    for grp in groups:  # one group's sessions at a time: their arenas hold the group's values
        g.set_outputs(outputs + grp)
        sessions = {}

        def run(x):
            n = x.shape[0]
            if n not in sessions:
                sessions[n] = _core.Session(g if n == shape[0] else _core.rebatch(g, n), store, "infer")
            s = sessions[n]
            s.run_fetch([x], 0)
            for j, v in enumerate(grp):
                yield index[v], s.fetch(len(outputs) + j)

        for x in batches:
            for k, a in run(x):
                lo[k] = min(lo[k], float(a.min()))
                hi[k] = max(hi[k], float(a.max()))
        absmax = np.maximum(np.abs(lo), np.abs(hi))
        if method == "minmax":
            for v in grp:
                thresh[index[v]] = absmax[index[v]]
            continue
        hists = {index[v]: np.zeros(_BINS) for v in grp}
        for x in batches:
            for k, a in run(x):
                if absmax[k] > 0:
                    hists[k] += np.histogram(np.abs(a), bins=_BINS, range=(0.0, absmax[k]))[0]
        for k, h in hists.items():
            if absmax[k] <= 0:
                continue
            if method == "percentile":
                c = np.cumsum(h)
                i = int(np.searchsorted(c, c[-1] * percentile / 100.0))
                thresh[k] = absmax[k] * min(i + 1, _BINS) / _BINS
            else:
                thresh[k] = _kl_threshold(h, absmax[k], 255 if lo[k] >= 0 else 127)
        sessions.clear()
    g.set_outputs(outputs)
    specs = {}
    for k, v in enumerate(measured):
        unsigned = lo[k] >= 0
        t = thresh[k] if thresh[k] > 0 else 1.0
        specs[v] = (float(t / (255.0 if unsigned else 127.0)), "uint8" if unsigned else "int8")
    for v, tie in points:  # in value order: a tie names an earlier value
        if tie >= 0:
            while tie not in specs:
                tie = dict(points)[tie]
            specs[v] = specs[tie]
    qgraph = _core.insert_qdq(g, [(v, s, dt) for v, (s, dt) in specs.items()])
    from .io import GraphModule
    return GraphModule(_core.Model(qgraph, store, list(shape), extra))
