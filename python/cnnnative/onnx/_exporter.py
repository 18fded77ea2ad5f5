"""cnnnative -> ONNX, and file conversion. export_model traces a model in eval mode through a recording
GraphBuilder (every node's op, input values, attributes and outputs are recorded as forward() emits them:
the C++ graph's nodes are not readable from Python) and writes one ONNX node (or a few) per engine op,
opset 17, with the state_dict as initializers. The batch dimension is exported as the symbol 'N' when the
graph does not depend on it (no batch-specific constants or reshapes); otherwise it stays fixed."""
from __future__ import annotations

import contextlib

import os

import numpy as np

from .._atomic import write_atomic
from ..graph import GraphBuilder, Tensor
from . import _ops_act, _ops_binary, _ops_norm, _ops_quant, _ops_reduce, _ops_resize, _ops_shape  # noqa: F401,E501 (register exporters)
from . import _registry
from ._common import UnsupportedError, require_onnx

OPSET = 17
IR_VERSION = 8  # the IR that goes with opset 17; onnxruntime and older tools read it


class _Recorder(GraphBuilder):
    """A GraphBuilder that also records (op, input vids, attrs, output vids, node name)."""

    def __init__(self):
        super().__init__(training=False)
        self.records = []
        self.param_of = {}
        self.input_vids = []

    def input(self, name, shape, dtype="float32"):
        t = super().input(name, shape, dtype)
        self.input_vids.append(t.vid)
        return t

    def param(self, name, shape, trainable=True):
        t = super().param(name, shape, trainable)
        self.param_of[t.vid] = name
        return t

    def op(self, op, inputs, attrs=None, name=None):
        name = name if name else self.node_name(op)
        outs = super().op(op, inputs, attrs, name)
        self.records.append((op, [t.vid for t in inputs], dict(attrs or {}), [t.vid for t in outs], name))
        return outs


def _pair(v, default):
    if v is None:
        return [default, default]
    v = [int(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return v * 2 if len(v) == 1 else v


class _Emitter:
    def __init__(self, graph, onnx, batch):
        self.graph, self.onnx, self.h = graph, onnx, onnx.helper
        self.names, self.taken, self.node_names = {}, set(), set()
        self.nodes, self.inits, self.problems = [], [], []
        self.batch_specific = []
        self.batch = batch

    def name(self, vid, hint=None):
        if vid not in self.names:
            base = hint or self.graph.value_name(vid) or f"v{vid}"
            n, k = base, 1
            while n in self.taken:
                n, k = f"{base}_{k}", k + 1
            self.taken.add(n)
            self.names[vid] = n
        return self.names[vid]

    def shape(self, vid):
        return list(self.graph.shape(vid))

    def const(self, hint, arr):
        n, k = hint, 1
        while n in self.taken:
            n, k = f"{hint}_{k}", k + 1
        self.taken.add(n)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(self, op, ins, outs, name, **attrs):
        n, k = name, 1
        while n in self.node_names:  # a module called twice (a shared ReLU) names two nodes alike
            n, k = f"{name}_{k}", k + 1
        self.node_names.add(n)
        self.nodes.append(self.h.make_node(op, ins, outs, name=n, **attrs))

    def emit(self, op, ins, attrs, outs, name):
        I = [self.name(v) for v in ins]
        O = [self.name(v, name if len(outs) == 1 else f"{name}:{k}") for k, v in enumerate(outs)]
        a = attrs
        fn = _registry.EXPORTERS.get(op)
        if fn is not None:  # an op family's exporter (onnx/_registry.py)
            return fn(self, ins, a, outs, name, I, O)
        if op == "conv2d":
            w = self.shape(ins[1])
            p = _pair(a.get("padding"), 0)
            self.node("Conv", I, O, name, kernel_shape=w[2:], strides=_pair(a.get("stride"), 1), pads=p + p,
                      dilations=_pair(a.get("dilation"), 1), group=int(_first(a.get("groups", 1))))
        elif op == "conv_transpose2d":
            w = self.shape(ins[1])
            p = _pair(a.get("padding"), 0)
            self.node("ConvTranspose", I, O, name, kernel_shape=w[2:], strides=_pair(a.get("stride"), 1),
                      pads=p + p, output_padding=_pair(a.get("output_padding"), 0),
                      dilations=_pair(a.get("dilation"), 1), group=int(_first(a.get("groups", 1))))
        elif op == "linear":
            self.node("Gemm", I, O, name, transB=1)
        elif op in ("max_pool2d", "avg_pool2d"):
            k = _pair(a.get("kernel"), 1)
            p = _pair(a.get("padding"), 0)
            kw = dict(kernel_shape=k, strides=_pair(a.get("stride"), 1) if a.get("stride") is not None else k,
                      pads=p + p, ceil_mode=int(_flag(a.get("ceil_mode", 0))))
            if op == "max_pool2d":
                self.node("MaxPool", I, O[:1], name, dilations=_pair(a.get("dilation"), 1), **kw)
            else:
                self.node("AveragePool", I, O, name, count_include_pad=int(_flag(a.get("count_include_pad", 1))), **kw)
        elif op == "global_avg_pool":
            self.node("GlobalAveragePool", I, O, name)
        elif op == "adaptive_avg_pool2d":
            xs, oh_ow = self.shape(ins[0]), _pair(a.get("output"), 1)
            h, w = xs[2], xs[3]
            if h % oh_ow[0] or w % oh_ow[1]:
                return self.problems.append((name, op, f"adaptive pooling of {h}x{w} to {oh_ow} has no ONNX "
                                             "equivalent (only exact divisors export, as AveragePool)"))
            k = [h // oh_ow[0], w // oh_ow[1]]
            self.node("AveragePool", I, O, name, kernel_shape=k, strides=k)
        elif op == "batch_norm":
            if _flag(a.get("training", 0)):
                return self.problems.append((name, op, "training-mode batch norm (export traces in eval mode)"))
            self.node("BatchNormalization", I, O[:1], name, epsilon=float(a.get("eps", 1e-5)),
                      momentum=1.0 - float(a.get("momentum", 0.1)))
        elif op in ("relu", "sigmoid", "tanh"):
            self.node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[op], I, O, name)
        elif op == "leaky_relu":
            self.node("LeakyRelu", I, O, name, alpha=float(a.get("negative_slope", 0.01)))
        elif op == "add":
            self.node("Add", I, O, name)
        elif op == "softmax":
            self.node("Softmax", I, O, name, axis=-1)
        elif op in ("reshape", "flatten"):
            xs, ys = self.shape(ins[0]), self.shape(outs[0])
            if op == "flatten" and len(ys) == 2 and int(_first(a.get("start_dim", 1))) in (1, 1 - len(xs)):
                self.node("Flatten", I, O, name, axis=1)
                return
            target = list(ys)
            if target and xs and target[0] == xs[0]:
                target[0] = 0  # keep the batch: the exported graph stays batch-size agnostic
            else:
                self.batch_specific.append(name)
            shp = self.const(f"{name}.shape", np.array(target, np.int64))
            self.node("Reshape", [I[0], shp], O, name)
        elif op == "dropout":
            self.node("Identity", I[:1], O[:1], name)
        elif op == "concat":
            axis = int(_first(a.get("axis", 1)))
            if axis in (0, -len(self.shape(ins[0]))):
                self.batch_specific.append(name)
            self.node("Concat", I, O, name, axis=axis)
        elif op == "split":
            axis = int(_first(a.get("axis", 1)))
            if axis in (0, -len(self.shape(ins[0]))):
                self.batch_specific.append(name)
            sizes = self.const(f"{name}.split", np.array([int(s) for s in a["sizes"]], np.int64))
            self.node("Split", [I[0], sizes], O, name, axis=axis)
        elif op == "lrn":
            self.node("LRN", I, O, name, size=int(_first(a["size"])), alpha=float(a.get("alpha", 1e-4)),
                      beta=float(a.get("beta", 0.75)), bias=float(a.get("k", 1.0)))
        elif op == "upsample_nearest2d":
            sh, sw = _pair(a.get("scale"), 1)
            sc = self.const(f"{name}.scales", np.array([1, 1, sh, sw], np.float32))
            self.node("Resize", [I[0], "", sc], O, name, mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        elif op == "pad":
            t, left, b, right = (int(v) for v in a["pads"])
            pads = self.const(f"{name}.pads", np.array([0, 0, t, left, 0, 0, b, right], np.int64))
            value = self.const(f"{name}.value", np.array(float(a.get("value", 0.0)), np.float32))
            self.node("Pad", [I[0], pads, value], O, name, mode="constant")
        elif op == "fill":
            ys = self.shape(outs[0])
            val = np.full(ys, float(a.get("value", 0.0)), np.float32)
            self.node("Constant", [], O, name, value=self.onnx.numpy_helper.from_array(val))
            self.batch_specific.append(name)
        else:
            self.problems.append((name, op, "no ONNX equivalent is implemented for this engine op"))


def _flag(v):
    return _first(v)


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def trace_records(model, input_shape):
    """Traces model in eval mode, recording every node. Returns (recorder, input tensor, outputs list)."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) < 2 or any(s <= 0 for s in input_shape):
        raise ValueError(f"export: input_shape must be (N, C, ...) with positive sizes, got {input_shape}")
    model._ensure_store()
    for name, m in model.named_modules():
        object.__setattr__(m, "_trace_name", name)
    rec = _Recorder()
    training_as = getattr(model, "_training_as", None)  # self.training in forward() is False, as in compile()
    with rec, (training_as(False) if training_as else contextlib.nullcontext()):
        x = rec.input("x", input_shape)
        y = model(x)
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    if not ys or not all(isinstance(t, Tensor) for t in ys):
        raise TypeError("export: forward() must return a Tensor or a tuple of Tensors")
    return rec, x, ys


def export_model(model, path=None, input_shape=None, *, dynamic_batch=True, input_name="input",
                 output_name="output", opset=OPSET, check=True):
    """Writes `model` (a cnnnative Module) as an ONNX model (opset 17) to `path` (None: don't write) and
    returns the ModelProto. input_shape: (N, C, H, W) to trace with (default: the model's own
    `example_input_shape(1)` or `input_shape` when it has one). The batch dimension is the symbol 'N' when
    dynamic_batch and the graph allows it. Raises UnsupportedError listing engine ops without an ONNX
    equivalent (e.g. general adaptive pooling). The file is written atomically (see save_model): an export
    that fails or is killed leaves a previous file at `path` as it was."""
    onnx = require_onnx()
    if opset != OPSET:
        raise ValueError(f"export_model writes opset {OPSET} only, got opset={opset}")
    if input_shape is None:
        if hasattr(model, "example_input_shape"):
            input_shape = model.example_input_shape(1)
        elif getattr(model, "input_shape", None) is not None:
            input_shape = tuple(model.input_shape)
        else:
            raise ValueError("export_model: pass input_shape, e.g. (1, 3, 32, 32)")
    input_shape = tuple(int(s) for s in input_shape)
    if hasattr(model, "_graph_for"):  # a model loaded from a .cnn file: its graph, not a forward()
        graph, records, param_of, x_vid, y_vids = _records_from_graph(model, input_shape)
    else:
        rec, x, ys = trace_records(model, input_shape)
        graph, records, param_of, x_vid, y_vids = rec.graph, rec.records, rec.param_of, x.vid, [y.vid for y in ys]
    m = _write(onnx, graph, records, param_of, x_vid, y_vids, _tensors(model), input_shape,
               type(model).__name__, dynamic_batch, input_name, output_name)
    if check:
        onnx.checker.check_model(m, full_check=True)
    if path is not None:
        save_model(m, path)
    return m


def save_model(model_proto, path) -> str:
    """Writes a ModelProto to `path` atomically, through cnnnative._atomic.write_atomic: a temporary file
    `<path>.tmp.<pid>.<n>` in the same folder, fsynced, then renamed over `path`. A reader sees the old file or
    the whole new one; an error or a kill at any point leaves the old one intact, and the next successful save
    removes temporaries left by killed writers. The model is serialized before the file is created, so a model
    protobuf cannot hold (over 2 GiB) fails without touching anything. Returns the absolute path."""
    data = model_proto.SerializeToString()
    return write_atomic(path, lambda f: _write_chunks(f, data))


def _write_chunks(f, data, chunk=1 << 22):
    mv = memoryview(data)
    for i in range(0, len(mv), chunk):
        f.write(mv[i:i + chunk])


def _tensors(model) -> dict:
    """Every tensor a traced graph may read, by name: the state_dict plus buffers left out of it
    (register_buffer(..., persistent=False)), which the graph needs all the same."""
    out = dict(model.state_dict())
    for name, b in model.named_buffers():
        out.setdefault(name, b)
    return out


def _records_from_graph(model, input_shape):
    """Node records of a loaded model's graph. Needs node introspection from the core: Graph.nodes()
    returning dicts {op, name, inputs, outputs, attrs}."""
    graph = model._graph_for(input_shape)
    if not hasattr(graph, "nodes"):
        raise RuntimeError("export: this model holds a compiled graph (loaded from a .cnn file) and this build's "
                           "cnnnative._core.Graph has no nodes() to read it; export the original Module instead")
    records, produced = [], set()
    for n in graph.nodes():
        records.append((n["op"], list(n["inputs"]), dict(n["attrs"]), list(n["outputs"]), n["name"]))
        produced.update(n["outputs"])
    state = set(_tensors(model))
    inputs = list(graph.inputs)
    if len(inputs) != 1:
        raise UnsupportedError([("<graph>", "inputs", f"{len(inputs)} graph inputs (export takes one)")], "export")
    param_of = {}
    for _, ins, _, _, _ in records:
        for v in ins:
            if v not in produced and v not in inputs:
                name = graph.value_name(v)
                if name not in state:
                    raise ValueError(f"export: graph value {name!r} is neither computed, an input nor a parameter")
                param_of[v] = name
    return graph, records, param_of, inputs[0], list(graph.outputs)


def _write(onnx, graph, records, param_of, x_vid, y_vids, sd, input_shape, graph_name, dynamic_batch,
           input_name, output_name):
    em = _Emitter(graph, onnx, input_shape[0])
    for vid, pname in param_of.items():
        if pname not in sd:
            raise ValueError(f"export: parameter {pname!r} is traced but not among the model's parameters and buffers")
        em.names[vid] = pname
        em.taken.add(pname)
        em.inits.append(onnx.numpy_helper.from_array(np.ascontiguousarray(sd[pname], np.float32), pname))
    em.name(x_vid, input_name)
    outs = []  # (vid, graph output name, needs an Identity: the value is an input, a weight or repeated)
    for k, vid in enumerate(y_vids):
        hint = output_name if len(y_vids) == 1 else f"{output_name}{k}"
        alias = vid in em.names
        if not alias:
            em.name(vid, hint)
        outs.append((vid, hint, alias))
    for op, ins, attrs, o, name in records:
        em.emit(op, ins, attrs, o, name)
    if em.problems:
        raise UnsupportedError(em.problems, "export")
    for vid, hint, alias in outs:
        if alias:
            em.node("Identity", [em.name(vid)], [hint], f"{hint}.identity")
    dyn = dynamic_batch and not em.batch_specific
    tp = onnx.TensorProto.FLOAT

    def dims(shape):
        return (["N"] + list(shape[1:])) if dyn else list(shape)

    inputs = [onnx.helper.make_tensor_value_info(input_name, tp, dims(input_shape))]
    outputs = []
    for vid, hint, _ in outs:
        s = list(graph.shape(vid))
        outputs.append(onnx.helper.make_tensor_value_info(hint, tp, dims(s) if s and s[0] == input_shape[0] else s))
    used = {i for n in em.nodes for i in n.input} | {hint for _, hint, _ in outs}
    inits = [t for t in em.inits if t.name in used]
    g = onnx.helper.make_graph(em.nodes, graph_name, inputs, outputs, inits)
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                               producer_name="cnnnative", producer_version=_version())
    m.ir_version = IR_VERSION
    return m


def _version():
    from .. import __version__
    return __version__


def convert(src, dst, input_shape=None):
    """File conversion for `python -m cnnnative convert SRC DST`: .onnx -> .cnn (import, then
    cnnnative.save), .cnn -> .onnx (cnnnative.load, then export) and .onnx -> .onnx (import, then export:
    a normalized, folded copy). input_shape: the shape to save/trace with; default: the ONNX model's
    declared input shape with batch 1, or the .cnn file's recorded input shape. Returns dst."""
    import cnnnative as cn
    from ._importer import import_model

    s_ext = os.path.splitext(os.fspath(src))[1].lower()
    d_ext = os.path.splitext(os.fspath(dst))[1].lower()
    if s_ext == ".onnx" and d_ext in (".cnn", ".onnx"):
        model = import_model(src)
        shape = tuple(int(s) for s in input_shape) if input_shape else model.example_input_shape(1)
        if d_ext == ".onnx":
            export_model(model, dst, shape)
        else:
            save = getattr(cn, "save", None)
            if save is None:
                raise RuntimeError("convert: writing .cnn files needs cnnnative.save (cnnnative.io), "
                                   "which this build lacks")
            save(model, dst, shape)
        return dst
    if s_ext == ".cnn" and d_ext == ".onnx":
        load = getattr(cn, "load", None)
        if load is None:
            raise RuntimeError("convert: reading .cnn files needs cnnnative.load (cnnnative.io), "
                               "which this build lacks")
        model = load(src)
        shape = input_shape or getattr(model, "input_shape", None)
        if shape is None or any(d is None for d in shape):
            raise ValueError(f"convert: {src} records no complete input shape; pass input_shape")
        export_model(model, dst, tuple(int(s) for s in shape))
        return dst
    raise ValueError(f"convert: cannot convert {src!r} to {dst!r} (supported: .onnx -> .cnn, .cnn -> .onnx, "
                     ".onnx -> .onnx)")
