"""NodeContext: the interface between the importer's trace and the op mappers (_ops_*.py). A mapper reads
the node's attributes and inputs through it and emits engine ops with it; the composite emitters (reshape,
crop, explicit pad, batch_norm, 1-D as 2-D) are the few engine-op patterns several mappers share."""
from __future__ import annotations

import numpy as np

from ..graph import Tensor
from ._base import Invalid, Node, Unsupported, engine_ops, numel
from ._common import MAX_DIM, MAX_ELEMENTS


class NodeContext:
    """What an op mapper sees of one node: its attributes, its inputs as traced tensors or numpy constants,
    and an emitter of engine ops under the current GraphBuilder (named after the node)."""

    def __init__(self, trace, node: Node, vals):
        self.trace, self.node, self.vals = trace, node, vals  # vals: per input, a Tensor, an ndarray or None
        self.builder = trace.builder
        self.n_emitted = 0  # engine ops emitted for this node so far (the first is named after the node)

    @property
    def opset(self):
        return self.trace.prog.opset

    def attr(self, name, default=None):
        return self.node.attrs.get(name, default)

    def ints(self, name, default, n):
        v = self.node.attrs.get(name)
        if v is None:
            return [default] * n
        v = [int(x) for x in v]
        if len(v) != n:
            raise Invalid(f"attribute {name}={v} has {len(v)} values, expected {n}")
        return v

    def has(self, k):
        return k < len(self.node.inputs) and bool(self.node.inputs[k])

    def tensor(self, k, what="input"):
        """Input k as a traced tensor (a weight held by the module is a tensor too)."""
        name = self.node.inputs[k] if k < len(self.node.inputs) else ""
        v = self.vals[k] if k < len(self.vals) else None
        if isinstance(v, Tensor):
            return v
        t = self.trace.tensor(name) if name else None
        if t is not None:
            return t
        if v is None:
            raise Unsupported(f"missing {what}")
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1 and v.size and np.all(v == v.flat[0]) \
                and "fill" in engine_ops():
            return self.op("fill", [], {"shape": [int(d) for d in v.shape], "value": float(v.flat[0])})
        raise Unsupported(f"{what} {name!r} is a constant here; the engine needs it computed from the model "
                          "input (constant tensors are only supported as weights, or when all values are equal)")

    def constant(self, k, what="input"):
        """Input k as a numpy constant (None when absent)."""
        if not self.has(k):
            return None
        v = self.vals[k]
        if isinstance(v, np.ndarray):
            return v
        name = self.node.inputs[k]
        if name in self.trace.prog.consts:
            return np.asarray(self.trace.prog.consts[name])
        raise Unsupported(f"{what} {name!r} must be a constant (an initializer or computable from shapes)")

    def need(self, *ops):
        have = engine_ops()
        for op in ops:
            if op not in have:
                raise Unsupported(f"needs the engine op {op!r}, which this build of cnnnative lacks")

    def op(self, op, inputs, attrs=None, n_out=None):
        """Emits engine op `op`. Integer attributes and the shapes it gives are kept within the engine's limits
        (MAX_DIM per value, MAX_ELEMENTS per tensor), so that no size arithmetic of the core can overflow."""
        attrs = attrs or {}
        for k, v in attrs.items():
            vals = v if isinstance(v, (list, tuple)) else [v]
            if any(isinstance(x, (int, np.integer)) and abs(int(x)) > MAX_DIM for x in vals):
                raise Unsupported(f"{op}: {k}={list(vals)} exceeds the engine's limit ({MAX_DIM})")
        if isinstance(attrs.get("shape"), (list, tuple)) and numel(abs(int(d)) for d in attrs["shape"]) > MAX_ELEMENTS:
            raise Unsupported(f"{op}: a tensor of shape {list(attrs['shape'])} exceeds the engine's limit "
                              f"({MAX_ELEMENTS} elements)")
        name = self.node.name if self.n_emitted == 0 else f"{self.node.name}:{op}{self.n_emitted}"
        self.n_emitted += 1
        outs = self.builder.op(op, inputs, attrs, name)
        for t in outs:
            s = list(t.shape)
            if any(d < 1 or d > MAX_DIM for d in s) or numel(s) > MAX_ELEMENTS:
                raise Unsupported(f"{op} gives a tensor of shape {s}, beyond the engine's limits (dimensions 1 to "
                                  f"{MAX_DIM}, {MAX_ELEMENTS} elements)")
        return outs if n_out else outs[0]

    # ---- composite emitters ----
    def reshape(self, x, shape):
        shape = [int(s) for s in shape]
        if list(x.shape) == shape:
            return x
        return self.op("reshape", [x], {"shape": shape})

    def crop(self, x, axis, start, length):
        """x[..., start:start+length, ...] along axis (split)."""
        n = x.shape[axis]
        if start == 0 and length == n:
            return x
        if length <= 0:
            raise Unsupported(f"the result would be empty along axis {axis}")
        self.need("split")
        parts = [(s, i) for i, s in enumerate((start, length, n - start - length)) if s > 0]
        outs = self.op("split", [x], {"axis": int(axis), "sizes": [s for s, _ in parts]}, n_out=True)
        return outs[[i for _, i in parts].index(1)]

    def pad(self, x, axis, before, after, value):
        """Explicit constant padding along axis (negative amounts crop): the engine's `pad` op for H or W of a
        4-D tensor (which runs in every activation layout, and which the compile pass fold_pad folds into a
        following conv or average pool when it can), concat with `fill` tensors for other ranks and axes."""
        if before < 0 or after < 0:
            n = x.shape[axis]
            x = self.crop(x, axis, max(0, -before), n - max(0, -before) - max(0, -after))
            before, after = max(0, before), max(0, after)
        if before == 0 and after == 0:
            return x
        rank = len(x.shape)
        if rank == 4 and axis % rank in (2, 3):
            self.need("pad")
            pads = [before, 0, after, 0] if axis % rank == 2 else [0, before, 0, after]
            return self.op("pad", [x], {"pads": [int(p) for p in pads], "value": float(value)})
        self.need("fill", "concat")
        parts = []
        for amount, where in ((before, 0), (after, 1)):
            if amount:
                s = list(x.shape)
                s[axis] = amount
                f = self.op("fill", [], {"shape": s, "value": float(value)})
                parts.append((where, f))
        seq = [f for w, f in parts if w == 0] + [x] + [f for w, f in parts if w == 1]
        return self.op("concat", seq, {"axis": int(axis)})

    def batch_norm(self, x, weight, bias, mean, var, eps, momentum, training):
        attrs = {"eps": float(eps), "momentum": float(momentum), "training": int(training),
                 "track_running_stats": 1}
        return self.op("batch_norm", [x, weight, bias, mean, var], attrs, n_out=True)[0]

    def to_2d(self, x, what):
        """(x, False) for a 4-D x; ([N, C, 1, L], True) for a 3-D x (1-D ops run as 2-D with H = 1);
        Unsupported for other ranks."""
        r = len(x.shape)
        if r == 4:
            return x, False
        if r == 3:
            return self.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]]), True
        raise Unsupported(f"{r - 2}-D {what} (input {list(x.shape)}); only 1-D and 2-D are supported")
