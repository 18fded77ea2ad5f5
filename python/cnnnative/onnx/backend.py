"""cnnnative as an ONNX backend (onnx.backend.base.Backend, as onnxruntime.backend): prepare(model) ->
BackendRep whose run(inputs) returns the outputs; run_model, run_node, supports_device('CPU').

Graph inputs fed at run time are split in two: inputs read as data (a Conv's X, an Add's operands of one
shape, ...) become inputs of the compiled engine graph; inputs read as weights or shape arguments (a Conv's
W and B, BatchNormalization's statistics, Gemm's B and C, Reshape's shape, Pad's pads, a broadcast Add's
smaller operand, ...) are bound as constants and the model is re-imported when their values change.
Initializers also listed as graph inputs (IR < 4 models) keep their initializer values unless fed. One
compiled session is kept per data-input shapes."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..graph import GraphBuilder, Tensor
from ._common import UnsupportedError, require_onnx

onnx = require_onnx()
from onnx.backend.base import Backend, BackendRep, Device, DeviceType  # noqa: E402

from ._importer import HANDLERS, import_model, load_model_proto  # noqa: E402

# input slots read as weights / shape arguments: inputs fed there are bound as constants
_PARAM_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "BatchNormalization": (1, 2, 3, 4), "Gemm": (1, 2), "MatMul": (1,),
    "Reshape": (1,), "Pad": (1, 2, 3), "Resize": (1, 2, 3), "Upsample": (1,), "Dropout": (1, 2),
    "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Expand": (1,), "ConstantOfShape": (0,),
    "Mul": (1,), "Div": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,),
}


def _bound_inputs(model, feeds: dict) -> set:
    """Names of fed inputs to treat as constants (see the module docstring)."""
    bound = set()
    for n in model.graph.node:
        for k, name in enumerate(n.input):
            if name not in feeds:
                continue
            if k in _PARAM_SLOTS.get(n.op_type, ()):
                bound.add(name)
            elif n.op_type in ("Add", "Sub", "Mul", "Div") and len(n.input) == 2:
                other = n.input[1 - k]
                a, b = np.shape(feeds[name]), np.shape(feeds[other]) if other in feeds else None
                if b is not None and a != b and np.prod(a) <= np.prod(b):
                    bound.add(name)  # the smaller operand of a broadcast: a per-channel constant
    return bound


class CnnBackendRep(BackendRep):
    """A prepared model: run(inputs) compiles (once per input shapes and bound values) and runs it."""

    def __init__(self, model, device: str = "CPU"):
        super().__init__()
        self.model = model
        g = model.graph
        inits = {t.name for t in g.initializer}
        self.input_names = [vi.name for vi in g.input if vi.name not in inits]
        self.all_input_names = [vi.name for vi in g.input]
        self.output_names = [o.name for o in g.output]
        self.output_types = {o.name: o.type.tensor_type.elem_type for o in g.output}
        self._cache = {}

    def _feeds(self, inputs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) == len(self.input_names):
                names = self.input_names
            elif len(inputs) == len(self.all_input_names):
                names = self.all_input_names
            else:
                raise ValueError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                                 f"got {len(inputs)}")
            feeds = dict(zip(names, inputs))
        unknown = [k for k in feeds if k not in self.all_input_names]
        if unknown:
            raise ValueError(f"unknown input(s) {unknown}; the model's inputs are {self.all_input_names}")
        missing = [k for k in self.input_names if k not in feeds]
        if missing:
            raise ValueError(f"missing input(s) {missing}")
        return {k: np.asarray(v) for k, v in feeds.items()}

    def _compiled(self, feeds):
        bound_names = _bound_inputs(self.model, feeds) | {k for k in feeds if k not in self.input_names}
        data = [k for k in self.input_names if k not in bound_names]
        for k in data:
            if feeds[k].size == 0:
                raise UnsupportedError([(k, "input", f"zero-size input {list(feeds[k].shape)}")], "ONNX backend")
            if feeds[k].dtype != np.float32:
                raise UnsupportedError([(k, "input", f"data input of dtype {feeds[k].dtype} (float32 only)")],
                                       "ONNX backend")
        key = (tuple((k, feeds[k].shape) for k in data), tuple(sorted(bound_names)))
        hit = self._cache.get(key)
        bound = {k: feeds[k] for k in bound_names}
        if hit is not None and all(np.array_equal(hit[0][k], v) and hit[0][k].dtype == v.dtype
                                   for k, v in bound.items()):
            return hit, data
        module = import_model(self.model, bind=bound, validate=False)
        store = module._ensure_store()
        b = GraphBuilder(False)
        with b:
            xs = [b.input(k, feeds[k].shape) for k in data]
            outs = module(*xs)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        fetch, plan = [], []
        for v in outs:
            if isinstance(v, Tensor):
                if v.vid not in fetch:
                    fetch.append(v.vid)
                plan.append(("fetch", fetch.index(v.vid)))
            else:
                plan.append(("const", np.asarray(v)))
        sess = None
        if fetch:
            b.graph.set_outputs(fetch)
            sess = _core.Session(b.graph, store, "infer")
        hit = ({k: v.copy() for k, v in bound.items()}, module, sess, plan)
        self._cache = {key: hit}  # keep one: a rep is usually run with one set of shapes
        return hit, data

    def run(self, inputs, **kwargs):
        feeds = self._feeds(inputs)
        (_, _, sess, plan), data = self._compiled(feeds)
        if sess is not None:
            sess.run([np.ascontiguousarray(feeds[k], np.float32) for k in data])
        res = []
        for name, (kind, v) in zip(self.output_names, plan):
            out = sess.fetch(v) if kind == "fetch" else v.copy()
            et = self.output_types.get(name, 0)
            if et:
                want = onnx.helper.tensor_dtype_to_np_dtype(et)
                if out.dtype != want:
                    out = out.astype(want)
            res.append(out)
        return tuple(res)


class CnnBackend(Backend):
    """onnx.backend.base.Backend for cnnnative (CPU only)."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        """True when every node of the model has an importer (attributes are checked at run)."""
        try:
            model = load_model_proto(model)
        except Exception:
            return False
        return cls.supports_device(device) and all(n.op_type in HANDLERS or n.op_type == "Constant"
                                                   for n in model.graph.node)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> CnnBackendRep:
        if not cls.supports_device(device):
            raise ValueError(f"cnnnative runs on CPU only, got device {device!r}")
        model = load_model_proto(model)
        super().prepare(model, device, **kwargs)
        return CnnBackendRep(model, device)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Runs one NodeProto on inputs (a list in node.input order, or a dict); builds a one-node model."""
        h = onnx.helper
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            names = [n for n in node.input if n]
            feeds = dict(zip(names, inputs))
        vis = [h.make_tensor_value_info(k, h.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.shape(v))
               for k, v in feeds.items()]
        if outputs_info:
            outs = [h.make_tensor_value_info(o, h.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                    for o, (dt, shape) in zip(node.output, outputs_info)]
        else:
            outs = [h.make_empty_tensor_value_info(o) for o in node.output if o]
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        graph = h.make_graph([node], "run_node", vis, outs)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
        if not cls.supports_device(device):
            raise ValueError(f"cnnnative runs on CPU only, got device {device!r}")
        # no checker here: without outputs_info the outputs carry no types, which it would refuse
        return CnnBackendRep(model, device).run(feeds)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except Exception:
            return False


prepare = CnnBackend.prepare
run_model = CnnBackend.run_model
run_node = CnnBackend.run_node
supports_device = CnnBackend.supports_device
is_compatible = CnnBackend.is_compatible
