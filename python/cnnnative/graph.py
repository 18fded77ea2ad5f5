"""Tracing: while a module's forward() runs under a GraphBuilder, Tensors are symbolic values of a
_core.Graph. Every op call adds one node named after the module that called it, so shape errors name
the layer ("features.3") and the shapes."""
from __future__ import annotations

import contextlib
import threading

from . import _core

_state = threading.local()


def current() -> "GraphBuilder":
    b = getattr(_state, "builder", None)
    if b is None:
        raise RuntimeError("cnnnative modules build graphs: call model.compile(input_shape, ...) "
                           "instead of calling the model directly")
    return b


class GraphBuilder:
    def __init__(self, training: bool):
        self.graph = _core.Graph()
        self.training = training
        self.params: dict[str, int] = {}
        self._scope: list[str] = []
        self._counts: dict[str, int] = {}

    def __enter__(self):
        self._prev = getattr(_state, "builder", None)
        _state.builder = self
        return self

    def __exit__(self, *exc):
        _state.builder = self._prev

    @contextlib.contextmanager
    def scope(self, name: str):
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def scope_name(self) -> str:
        """Qualified name of the module being traced ("layer1.0.conv1"); leaf modules name their node so."""
        return self._scope[-1] if self._scope else ""

    def node_name(self, op: str) -> str:
        """Name for a functional op: "<module>.<op>", numbered when repeated in one module."""
        base = self.scope_name()
        key = f"{base}:{op}"
        k = self._counts.get(key, 0)
        self._counts[key] = k + 1
        prefix = f"{base}." if base else ""
        return f"{prefix}{op}" + (f"_{k}" if k else "")

    def input(self, name, shape, dtype="float32") -> "Tensor":
        return Tensor(self, self.graph.add_input(name, [int(s) for s in shape], dtype))

    def param(self, name: str, shape, trainable=True) -> "Tensor":
        if name not in self.params:
            self.params[name] = self.graph.add_param(name, [int(s) for s in shape], trainable)
        return Tensor(self, self.params[name])

    def op(self, op: str, inputs, attrs=None, name=None):
        ids = [t.vid for t in inputs]
        outs = self.graph.add_node(op, ids, attrs or {}, name if name else self.node_name(op))
        return [Tensor(self, v) for v in outs]


class Tensor:
    """A symbolic value while tracing (shape known, data not)."""

    __slots__ = ("b", "vid")

    def __init__(self, builder: GraphBuilder, vid: int):
        self.b = builder
        self.vid = vid

    @property
    def shape(self) -> tuple:
        return tuple(self.b.graph.shape(self.vid))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> str:
        return self.b.graph.dtype(self.vid)

    def __add__(self, other: "Tensor") -> "Tensor":
        return self.b.op("add", [self, other])[0]

    __radd__ = __add__

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.b.op("reshape", [self], {"shape": [int(s) for s in shape]})[0]

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        return self.b.op("flatten", [self], {"start_dim": int(start_dim), "end_dim": int(end_dim)})[0]

    def relu(self) -> "Tensor":
        return self.b.op("relu", [self])[0]

    def sigmoid(self) -> "Tensor":
        return self.b.op("sigmoid", [self])[0]

    def tanh(self) -> "Tensor":
        return self.b.op("tanh", [self])[0]

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype})"
