"""Model files (.cnn). save(model, path, input_shape) traces the model in inference mode and writes its graph,
parameters, buffers and input shape into one checksummed file, atomically; load(path or bytes) validates the
file in C++ and returns a GraphModule: state_dict()/load_state_dict() by name, compile(input_shape) for any
batch size. The format and its checks live in cpp/src/core/serialize.cpp; the layout is in docs/cpp.md."""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from . import _core, _params
from .nn import Module, _entry_of
from .session import Session, _dump_dir, arena_budget, warn_reference_fallbacks

__all__ = ["save", "load", "dumps", "GraphModule", "FORMAT_VERSION"]

FORMAT_VERSION = _core.MODEL_FORMAT_VERSION


def _shape(input_shape) -> tuple:
    s = tuple(int(d) for d in input_shape)
    if len(s) < 1 or any(d <= 0 for d in s):
        raise ValueError(f"save: input_shape must be (N, C, ...) with positive sizes, got {input_shape}")
    return s


def _is_batch(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _core_model(model, input_shape) -> "_core.Model":
    """input_shape as compile() takes it: a full shape, a batch size N with the shape the model declares (its
    `input_shape`, as the zoo's and loaded models have), or None for the declared shape itself."""
    if isinstance(model, GraphModule):
        if _is_batch(input_shape):
            input_shape = (int(input_shape),) + tuple(model.input_shape[1:])
        shape = model.input_shape if input_shape is None else _shape(input_shape)
        return _core.Model(model._graph_for(shape), model._ensure_store(), list(shape), model._extra_list())
    if not isinstance(model, Module):
        raise TypeError(f"save: expected a cnnnative.nn.Module, got {type(model).__name__}")
    if input_shape is None or _is_batch(input_shape):
        from .session import declared_input_shape
        declared = declared_input_shape(model)
        if declared is None:
            raise ValueError(f"save: {type(model).__name__} declares no input shape; give the full input_shape to "
                             f"trace it with, e.g. (1, 1, 28, 28)")
        input_shape = declared if input_shape is None else (int(input_shape),) + declared[1:]
    elif isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"save: input_shape must be a shape (N, C, ...) or a batch size, got "
                        f"{type(input_shape).__name__} {input_shape!r}")
    shape = _shape(input_shape)
    store = model._ensure_store()
    own = [(n, a, True) for n, a in model.named_parameters()] + [(n, a, False) for n, a in model.named_buffers()]
    if len(store.names()) != len(own) or any(_entry_of(a) != (store, n) for n, a, _ in own):
        # a submodule compiled onto its model's store (model.features): the file holds this module alone, by its
        # own names, from a store of its own
        store = _core.ParamStore([(n, list(a.shape), t) for n, a, t in own])
        for n, a, _ in own:
            _params.write(store.array(n), a)
        graph, extra = traced_graph(model, shape, by_entry=False)
    else:
        graph, extra = traced_graph(model, shape)
    return _core.Model(graph, store, list(shape), extra)


def traced_graph(model, shape, by_entry: bool = True):
    """(graph, extra state) of a Module traced in inference mode for `shape`: what model files and quantization
    start from. Extra state: (module path.name, int) pairs such as BatchNorm's num_batches_tracked. by_entry: as
    Module.trace."""
    b, _, y = model.trace(shape, training=False, by_entry=by_entry)
    b.graph.set_outputs([y.vid])
    extra = []
    for mname, m in model.named_modules():
        for n, v in getattr(m, "_extra_state", {}).items():
            extra.append((f"{mname}.{n}" if mname else n, int(np.asarray(v))))
    return b.graph, extra


def save(model, path, input_shape=None) -> str:
    """Writes `model` to `path` (a .cnn file): traced with input_shape in inference mode (BatchNorm uses its
    running statistics, dropout is off). input_shape as compile() takes it: (N, C, H, W), a batch size N, or None
    for a model that declares its input shape (the zoo's). A GraphModule keeps its input shape unless one is given (only the
    batch size may change). The write is atomic: on failure `path` is unchanged. Returns the path."""
    path = _path(path)
    _core_model(model, input_shape).save(path)
    return path


def _path(p) -> str:
    p = os.fspath(p)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if "\0" in p:
        raise ValueError(f"embedded null byte in the path {p[:p.index(chr(0))]!r}...")  # as open() says
    return p


def dumps(model, input_shape=None) -> bytes:
    """The bytes save() would write."""
    return _core_model(model, input_shape).to_bytes()


def load(source) -> "GraphModule":
    """Loads a .cnn file from a path or from bytes; every problem with the file raises cnnnative.Error."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        m = _core.Model.from_bytes(memoryview(source).cast("B"))
    else:
        m = _core.Model.load(_path(source))
    return GraphModule(m)


class GraphModule(Module):
    """A model loaded from a .cnn file: its graph, parameters and buffers (by their saved names, so
    state_dict() and load_state_dict() match the original model's), the input shape it was saved with.
    compile(input_shape) builds an inference session for any batch size; training is not supported."""

    def __init__(self, core_model: "_core.Model"):
        super().__init__()
        graph = core_model.graph
        store = core_model.store
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "input_shape", tuple(core_model.input_shape))
        object.__setattr__(self, "output_shape", tuple(core_model.output_shape))
        for name, _, trainable in core_model.tensors:
            view = store.array(name)  # read-only views of the store: a Parameter when trainable, else a Buffer
            if trainable:
                self._parameters[name] = view
            else:
                self._buffers[name] = view
        object.__setattr__(self, "_extra_state",
                           OrderedDict((n, np.array(v, dtype=np.int64)) for n, v in core_model.extra_state))
        # Module._ensure_store() keeps a store whose signature matches: this one, already holding the weights.
        sig = [(n, p.shape, True) for n, p in self.named_parameters()] + \
              [(n, b.shape, False) for n, b in self.named_buffers()]
        object.__setattr__(self, "_store", (store, sig))

    def _is_quantized(self) -> bool:
        """Whether the graph holds quantize/dequantize nodes (what cnnnative.quantize and int8 ONNX files give)."""
        return any(o.split()[0] in ("quantize", "dequantize") for o in self.graph.node_ops())

    def _extra_list(self):
        return [(n, int(v)) for n, v in self._extra_state.items()]

    def _graph_for(self, input_shape):
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != len(self.input_shape) or input_shape[1:] != self.input_shape[1:]:
            want = ", ".join(["N"] + [str(d) for d in self.input_shape[1:]])
            raise _core.Error(f"this model takes input [{want}] (any batch size N), got {list(input_shape)}")
        if input_shape == self.input_shape:
            return self.graph
        return _core.rebatch(self.graph, input_shape[0])

    def forward(self, *args):
        raise _core.Error("a loaded GraphModule runs through compile(input_shape); it cannot be called inside "
                          "another module's forward()")

    def compile(self, input_shape=None, mode: str = "infer", optimizer=None, loss: str = "cross_entropy",
                seed: int = 0, backend: str = "cpu", plan_memory: bool = True, winograd: bool = True,
                max_arena_bytes=None, strict: bool = False, dump_passes=None, device=None, tf32: bool = True,
                cuda_graphs: bool = True, batch_pieces: bool = True):
        """An inference Session for input_shape (default: the saved shape; an int is a batch size).
        winograd=False keeps oneDNN's direct kernels for the 3x3 convolutions (see Module.compile);
        max_arena_bytes refuses a session needing more memory (default: the machine's physical memory);
        strict, dump_passes, device, tf32, cuda_graphs and batch_pieces as in Module.compile."""
        if mode != "infer":
            what = "an int8 model (cnnnative.quantize)" if self._is_quantized() else "a model loaded from a file"
            raise _core.Error(f"compile: {what} compiles for inference only (mode='infer'), got mode={mode!r}; "
                              f"training it is not supported (train the float model, then quantize or save it)")
        if input_shape is None:
            input_shape = self.input_shape
        elif isinstance(input_shape, (int, np.integer)):
            input_shape = (int(input_shape),) + self.input_shape[1:]
        return _GraphSession(self, input_shape, backend=backend, plan_memory=plan_memory, seed=seed, winograd=winograd,
                             max_arena_bytes=max_arena_bytes, strict=strict, dump_passes=dump_passes,
                             device=device, tf32=tf32, cuda_graphs=cuda_graphs, batch_pieces=batch_pieces)

    def extra_repr(self) -> str:
        return (f"input_shape={list(self.input_shape)}, output_shape={list(self.output_shape)}, "
                f"nodes={self.graph.num_nodes}, parameters={self.num_parameters():,}")


class _GraphSession(Session):
    """A Session over a loaded graph (no tracing): inference only."""

    def __init__(self, gm: GraphModule, input_shape, backend="cpu", plan_memory=True, seed=0, winograd=True,
                 max_arena_bytes=None, strict=False, dump_passes=None, device=None, tf32=True, cuda_graphs=True,
                 batch_pieces=True):
        from .cuda import resolve_device
        backend = resolve_device(device, backend)
        self.device = "cuda" if backend == "cuda" else "cpu"
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) < 1 or any(s <= 0 for s in input_shape):
            raise ValueError(f"compile: input_shape must be (N, C, ...) with positive sizes, got {input_shape}")
        g = gm._graph_for(input_shape)
        self.model = gm
        self.mode = "infer"
        self.input_shape = input_shape
        self.graph = g
        self.optimizer = None
        self._bn = []
        self._store = gm._ensure_store()
        self._s = _core.Session(g, self._store, "infer", backend=backend, plan_memory=plan_memory, seed=int(seed),
                                winograd=bool(winograd), max_arena_bytes=arena_budget(max_arena_bytes),
                                strict=bool(strict), dump_passes=_dump_dir(dump_passes), tf32=bool(tf32),
                                graphs=bool(cuda_graphs), batch_pieces=bool(batch_pieces))
        warn_reference_fallbacks(self._s)
        self.deterministic = False
        self.output_shape = tuple(self._s.fetches[0][1])
