"""ONNX -> cnnnative: the op mapper. `import_model` reads a ModelProto once and returns an OnnxModule: a
cnnnative Module whose parameters and buffers are the model's initializers (names sanitized) and whose
forward() replays the ONNX graph through engine ops while a model is traced, so `compile(input_shape)` works
for any input shape the graph allows. Graph optimizations that make sense for any graph (BN folding into
convs, activation fusion, layouts) are the engine's compile pipeline's, not this module's.

At import (numpy, once), Program:
  - reads and validates the model before anything is computed from it (_proto.py: a regular file of at most
    2 GiB, external data only from files inside the model's folder, initializer sizes matching their data;
    _validate.py: every name defined once and every input defined, no cycle (an unsorted graph is sorted),
    counts and types as the ONNX schema of the model's opset says, attribute values in their ranges):
    InvalidModelError, or UnsupportedError for sizes beyond the engine's limits;
  - evaluates Constant nodes and nodes whose inputs are all constants (_fold.py), each result's size checked
    against the folding budget before it is allocated;
  - runs the ONNX-level rewrites (_rewrite.py: Gemm/MatMul -> LINEAR, Add/Sub/Mul/Div by a constant ->
    AFFINE, affine merging, affine folding where the engine cannot; its docstring says why each stays in
    Python, and that Pad folding is the engine's compile pass fold_pad);
  - makes the constants read as weights module parameters and buffers (_assign_params);
  - opsets outside [6, newest onnx knows] are brought into range by onnx.version_converter first (the error
    says why when that fails);
  - with import_model(..., input_shape=...) fixing every input dimension, traces the graph once to learn the
    values of its shape subgraphs (Shape, Gather, Concat, Range, ConstantOfShape, Expand, ...) and builds
    the Program again with them as constants, so that they fold and the rewrites see them (the model then
    takes that shape only);
  - when the model declares its input shapes (or input_shape gives them), traces it once, so one error lists
    every invalid (InvalidModelError) or unsupported (UnsupportedError) node, op type and attribute at once.
    Each node is checked on its own: the output of a node that failed is stood in for by an engine input of
    the shape it would have (elementwise, broadcasting and Transpose nodes: stand_in_shape), so the nodes
    behind it are checked too (behind other nodes, only unknown operators are listed). The error groups the
    nodes by op type. (onnx.shape_inference is not used for this: it aborts the process on some hostile
    graphs, an assertion in its C++.)
While tracing (per input shape), Trace runs each node's mapper (_ops_*.py, through a NodeContext,
_emit.py): auto_pad and asymmetric pads are resolved against the real sizes, Shape-derived arithmetic folds
to constants, 1-D convs/pools run as 2-D with H = 1.
It never imports onnx at `import cnnnative` time, and never writes to the ModelProto it is given."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .. import nn
from ..graph import Tensor, current
from . import _common, _rewrite
from ._base import (AFFINE, LINEAR, Invalid, Node, Unsupported, broadcast_shapes, check_budget, classify_failure,
                    engine_ops, fmt_bytes, numel, other_domain, type_name, unknown_reason)
from ._common import (FOLDABLE_OPS, MAX_DIM, MAX_ELEMENTS, MAX_NODES, SUPPORTED_OPS, InvalidModelError,
                      UnsupportedError, require_onnx, sanitize)
from ._emit import NodeContext
from ._fold import fold_node
from ._ops_conv import map_conv, map_conv_transpose
from ._ops_math import (activation, map_add, map_affine, map_batchnorm, map_dropout, map_gemm, map_linear, map_lrn,
                        map_matmul, map_mul_div, map_sub, map_sum)
from ._ops_pool import map_avgpool, map_global_avg, map_global_max, map_maxpool
from ._ops_tensor import (map_concat, map_flatten, map_identity, map_pad, map_reshape, map_slice,
                          map_squeeze_unsqueeze)
from ._proto import (attr_value, constant_value, convert_opset, implied_type, inline_functions, load_model_proto,
                     max_opset, model_opset, tensor_array)
from ._rewrite import affine_layout
from ._validate import attr_problems, check_names, check_structure, node_names, schema_of, schema_problems

__all__ = ["import_model", "load_model_proto", "OnnxModule", "HANDLERS"]

_MIN_OPSET = 6


class Program:
    """The importable graph. run(xs) replays it under the current GraphBuilder."""

    def __init__(self, model, bind=None, input_shape=None, shape_values=None):
        onnx = require_onnx()
        if not model.HasField("graph"):
            raise InvalidModelError([(None, "model", "no graph (an empty or non-ONNX file?)")])
        self.opset = model_opset(model)
        self.source_opset = self.opset  # the file's opset; self.opset is the one imported (after conversion)
        self.static_problems = []  # unsupported: (name, op, why)
        self.invalid = []          # invalid: (name, op, why), raised by import_model
        self.failed = set()        # outputs of nodes that could not be parsed or folded (their readers are skipped)
        self.failed_nodes = {}     # first output -> Node of a node that failed at parse (stand-ins may replace it)
        self.folded_bytes = 0
        if model.functions:
            model = inline_functions(onnx, model)
        g = model.graph
        if len(g.node) > MAX_NODES:
            raise UnsupportedError([(None, "graph", f"{len(g.node)} nodes (at most {MAX_NODES})")])
        inv, uns = check_names(g)
        if inv or uns:
            raise InvalidModelError(inv) if inv else UnsupportedError(uns)
        names = node_names(g)
        inv, order = check_structure(g, names, list(bind or {}))
        if inv:
            raise InvalidModelError(inv)
        if self.opset and not _MIN_OPSET <= self.opset <= max_opset(onnx):
            converted, why = convert_opset(onnx, model, self.opset)
            if converted is None:
                self.static_problems.append((None, "opset", why))
            else:  # a valid graph converted: check it again, as the file's graph was
                model, self.opset = converted, model_opset(converted)
                g = model.graph
                inv, uns = check_names(g)
                if inv or uns:
                    raise InvalidModelError(inv) if inv else UnsupportedError(uns)
                names = node_names(g)
                inv, order = check_structure(g, names, list(bind or {}))
                if inv:
                    raise InvalidModelError(inv)
        self.consts = {}
        self.weight_grids = {}  # constant name -> the int8 grid step its DequantizeLinear had (_ops_quant.weight_grid)
        for t in g.initializer:
            try:
                self.consts[t.name] = tensor_array(onnx, t, "the tensor")
            except Invalid as e:
                self.invalid.append((t.name, "initializer", str(e)))
            except Unsupported as e:
                self.static_problems.append((t.name, "initializer", str(e)))
                self.failed.add(t.name)
        for t in g.sparse_initializer:
            self.static_problems.append((t.values.name, "sparse_initializer", "sparse initializers are not supported"))
            self.failed.add(t.values.name)
        for k, v in (bind or {}).items():
            self.consts[k] = np.asarray(v)
        self.inputs = []  # (name, dims with None for symbolic ones, elem type)
        self.dim_params = {}  # input name -> the dim_param (or None) of each dimension, for messages
        for vi in g.input:
            if vi.name in self.consts or vi.name in self.failed:
                continue
            tt = vi.type.tensor_type
            # dim_value <= 0 counts as unknown, as a dim_param does (onnxruntime reads -1 so; the engine has no
            # zero-size tensors)
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tt.shape.dim] if tt.HasField("shape") else None
            self.inputs.append((vi.name, dims, tt.elem_type))
            if dims is not None:
                self.dim_params[vi.name] = [d.dim_param or None for d in tt.shape.dim]
            if tt.elem_type not in (onnx.TensorProto.FLOAT, 0) and vi.HasField("type"):
                self.static_problems.append((vi.name, "input", "graph input of type "
                                             f"{type_name(onnx, tt.elem_type)} (only float32 inputs)"))
            known = [d for d in (dims or []) if d is not None]
            if any(d > MAX_DIM for d in known) or numel(known) > MAX_ELEMENTS:
                self.static_problems.append((vi.name, "input", f"declared shape {dims} exceeds the engine's limits "
                                             f"(dimensions up to {MAX_DIM}, {MAX_ELEMENTS} elements)"))
        self.input_names = [n for n, _, _ in self.inputs]
        self.output_names = [o.name for o in g.output]
        self.fixed = fix_input_shapes(self.inputs, input_shape)  # name -> dims (None: left symbolic), or {}
        self.inputs = [(n, self.fixed.get(n, dims), t) for n, dims, t in self.inputs]
        nodes = []
        for i in order:
            n, name = g.node[i], names[i]
            node = self._parse_node(onnx, n, name)
            if node is not None:
                nodes.append(node)
        if self.invalid:
            raise InvalidModelError(self.invalid)
        self.nodes = nodes
        if shape_values:  # values a trace at the fixed input shapes folded (Shape-derived): constants now
            keep = []
            for n in self.nodes:
                outs = [o for o in n.outputs if o]
                if outs and all(o in shape_values for o in outs):
                    self.consts.update((o, shape_values[o]) for o in outs)
                else:
                    keep.append(n)
            self.nodes = keep
        _ops_quant.expand_qlinear(self)  # QLinearConv / QLinearMatMul -> DequantizeLinear, Conv / MatMul, QuantizeLinear
        self._fold_constants()
        _ops_act.fuse_patterns(self)  # multi-node spellings of GELU / thresholded Softplus -> one node
        _rewrite.canonicalize(self)
        _rewrite.merge_affines(self)
        _rewrite.fold_affines(self)
        self._assign_params()
        self.declared_batch = None
        if self.inputs and self.inputs[0][1]:
            self.declared_batch = self.inputs[0][1][0]

    def _parse_node(self, onnx, n, name):
        """Node of a NodeProto after checking its attributes against the schema and their static ranges;
        None for a Constant (its value goes to self.consts) or a node that failed (problem recorded)."""
        default = n.domain in ("", "ai.onnx")
        attrs, types = {}, {}
        try:
            for a in n.attribute:
                if a.name in attrs:
                    raise Invalid(f"attribute {a.name!r} is given twice")
                types[a.name] = a.type or implied_type(onnx, a)
                attrs[a.name] = attr_value(onnx, a, long_ok=default and n.op_type == "Constant")
        except (Invalid, Unsupported) as e:
            (self.invalid if isinstance(e, Invalid) else self.static_problems).append((name, n.op_type, str(e)))
            self.failed.update(o for o in n.output if o)
            self._keep_failed(n, name, attrs)
            return None
        if not default:  # reported when the graph is replayed or checked
            return Node(f"{n.domain}.{n.op_type}", name, n.input, n.output, attrs, n.op_type)
        schema = schema_of(onnx, n.op_type, self.opset)
        if schema is not None:
            probs = schema_problems(onnx, n, schema, types)
        elif n.op_type in KNOWN_OPS and schema_of(onnx, n.op_type, 0) is not None:
            probs = [f"{n.op_type} is not defined in opset {self.opset} (it appeared in opset "
                     f"{onnx.defs.get_schema(n.op_type).since_version})"]
        else:
            probs = []
        inv, uns = attr_problems(n.op_type, attrs, self.opset) if not probs else ([], [])
        probs += inv
        if probs or uns:
            if probs:
                self.invalid.extend((name, n.op_type, p) for p in probs)
            else:
                self.static_problems.extend((name, n.op_type, p) for p in uns)
            self.failed.update(o for o in n.output if o)
            if not probs:  # unsupported, not invalid: the nodes behind it are still checked
                self._keep_failed(n, name, attrs)
            return None
        if n.op_type == "Constant":
            try:
                v = constant_value(attrs)
                check_budget(v.shape, v.dtype.itemsize, "the constant")
                self.consts[n.output[0]] = v
            except Unsupported as e:
                self.static_problems.append((name, "Constant", str(e)))
                self.failed.add(n.output[0])
            return None
        op = n.op_type if n.op_type.isidentifier() else "?" + n.op_type  # never an internal op's name
        return Node(op, name, n.input, n.output, attrs, n.op_type)

    def _keep_failed(self, n, name, attrs):
        if n.op_type != "Constant" and n.domain in ("", "ai.onnx") and n.output and n.output[0]:
            self.failed_nodes[n.output[0]] = Node(n.op_type, name, n.input, n.output, attrs, n.op_type)

    # ---- graph helpers (used by the rewrites) ----
    def uses(self):
        c = Counter(i for n in self.nodes for i in n.inputs if i)
        c.update(self.output_names)
        return c

    def producers(self):
        return {o: n for n in self.nodes for o in n.outputs if o}

    def derive(self, orig, value, suffix, uses):
        """Name for a rewritten constant: the original name when nothing else reads it."""
        if orig and uses[orig] <= 1 and orig not in self.output_names:
            self.consts[orig] = value
            return orig
        name = self.fresh((orig or "const") + "_" + suffix)
        self.consts[name] = value
        if orig in self.weight_grids:  # a hint only: the engine keeps the grid for the rows still on it
            self.weight_grids[name] = self.weight_grids[orig]
        return name

    def fresh(self, base):
        """A value name used nowhere in the graph yet."""
        if not hasattr(self, "_taken"):
            self._taken = set(self.consts) | set(self.input_names) | set(self.output_names)
            for n in self.nodes:
                self._taken.update(n.inputs)
                self._taken.update(n.outputs)
        name, k = base, 1
        while name in self._taken or name in self.consts:
            name, k = f"{base}{k}", k + 1
        self._taken.add(name)
        return name

    def const(self, name):
        return self.consts.get(name) if name else None

    # ---- passes ----
    def _fold_constants(self):
        keep = []
        for n in self.nodes:
            ins = [i for i in n.inputs if i]
            if n.op in FOLDABLE and ins and all(i in self.consts for i in ins):
                try:
                    ins = [self.consts[i] if i else None for i in n.inputs]
                    outs = fold_node(n, ins)
                    self.count_folded(outs)
                    grid = _ops_quant.weight_grid(n.op, n.attrs, ins)
                    if grid is not None and n.outputs and n.outputs[0]:
                        self.weight_grids[n.outputs[0]] = grid
                except Exception as e:  # noqa: BLE001 - classified by node_failed
                    self.node_failed(n, e)
                    continue
                for o, v in zip(n.outputs, outs):
                    if o:
                        self.consts[o] = np.asarray(v)
            else:
                keep.append(n)
        self.nodes = keep

    def count_folded(self, outs):
        """Adds folded values to the running total, which FOLD_MAX_TOTAL_BYTES bounds."""
        self.folded_bytes += sum(np.asarray(v).nbytes for v in outs if isinstance(v, np.ndarray))
        if self.folded_bytes > _common.FOLD_MAX_TOTAL_BYTES:
            raise Unsupported(f"the constants computed at import add up to more than "
                              f"{fmt_bytes(_common.FOLD_MAX_TOTAL_BYTES)}")

    def node_failed(self, n, e, invalid=None, unsupported=None):
        """Records why node n failed (an Invalid, Unsupported, engine error or anything else: an internal
        error, reported as such) and marks its outputs failed so that their readers are skipped."""
        invalid = self.invalid if invalid is None else invalid
        unsupported = self.static_problems if unsupported is None else unsupported
        if isinstance(e, MemoryError):
            raise e
        classify_failure(n, e, invalid, unsupported)
        self.failed.update(o for o in n.outputs if o)

    def _assign_params(self):
        """Constants read as weights become module parameters (trainable) or buffers (BN statistics,
        affine constants); the rest (shapes, scales, pads) stay Python constants."""
        slots = {"Conv": {1: True, 2: True}, "ConvTranspose": {1: True, 2: True}, LINEAR: {1: True, 2: True},
                 "Gemm": {1: True, 2: True}, "BatchNormalization": {1: True, 2: True, 3: False, 4: False},
                 "PRelu": {1: True}, "MatMul": {0: True, 1: True}, **_REG_WEIGHT_SLOTS}
        self.params = {}       # onnx name -> (key, shape, trainable)
        self.param_values = []  # (key, float32 array, trainable)
        taken = set()
        for n in self.nodes:
            for k, trainable in slots.get(n.op, {}).items():
                name = n.inputs[k] if k < len(n.inputs) else ""
                if not name or name not in self.consts or name in self.params:
                    continue
                v = np.asarray(self.consts[name])
                if v.dtype.kind != "f":
                    self.static_problems.append((n.name, n.onnx_op,
                                                 f"weight {name!r} has dtype {v.dtype} (float only)"))
                    continue
                if v.size == 0:
                    self.static_problems.append((n.name, n.onnx_op, f"weight {name!r} is empty {list(v.shape)}"))
                    continue
                key = sanitize(name, taken)
                self.params[name] = (key, tuple(v.shape), trainable)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), trainable))
        binary_consts = set()  # (node, input) of a broadcasting Add/Sub/Mul/Div whose other operand is computed
        for n in self.nodes:
            if n.op not in ("Add", "Sub", "Mul", "Div") or len(n.inputs) != 2:
                continue
            ca, cb = (i in self.consts for i in n.inputs)
            if ca == cb:
                continue
            k = 0 if ca else 1
            name = n.inputs[k]
            v = np.asarray(self.consts[name])
            if v.dtype.kind != "f" or v.size == 0 or np.all(v == v.reshape(-1)[0]):
                continue  # one value: a number of binary_scalar; others: map_binary says why
            binary_consts.add((id(n), k))
            if name not in self.params:
                key = sanitize(name, taken)
                self.params[name] = (key, tuple(v.shape), False)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), False))
        for n in self.nodes:
            if n.op != AFFINE:
                continue
            layout = affine_layout(n.attrs["scale"], n.attrs["shift"])
            if isinstance(layout, str):
                n.attrs["problem"] = layout
                continue
            d, axis_from_end, ndim, s, t = layout
            base = sanitize(n.name, taken)
            keys = []
            for suffix, v in (("weight", s), ("bias", t), ("running_mean", np.zeros(d)), ("running_var", np.ones(d))):
                key = sanitize(f"{base}.{suffix}", taken)
                self.params[f"\0{key}"] = (key, (d,), False)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), False))
                keys.append(f"\0{key}")
            n.attrs.update(d=d, axis_from_end=axis_from_end, ndim=ndim, keys=keys)
        # the module holds the weights; keep no second copy unless a node also reads one as a constant
        as_const = {i for n in self.nodes for k, i in enumerate(n.inputs)
                    if i and k not in slots.get(n.op, {}) and (id(n), k) not in binary_consts}
        for name in self.params:
            if name in self.consts and name not in as_const and name not in self.output_names:
                del self.consts[name]

    # ---- checks ----
    def unknown_op_problems(self):
        have = engine_ops()
        probs = []
        for n in self.nodes:
            if n.op not in HANDLERS:
                if n.op not in FOLDABLE:  # a foldable op on a computed tensor is reported when traced
                    probs.append((n.name, n.onnx_op, unknown_reason(n)))
                continue
            missing = [e for e in ENGINE_OPS_NEEDED.get(n.op, ()) if e not in have]
            if missing:
                probs.append((n.name, n.onnx_op, f"needs the engine op {missing[0]!r}, which this build of cnnnative "
                              "lacks"))
        return probs

    def dry_shapes(self):
        """Input shapes to validate with (symbolic batch -> 1), or None when a dimension is unknown."""
        shapes = []
        for k, (name, dims, _) in enumerate(self.inputs):
            if dims is None:
                return None
            dims = [1 if (d is None and i == 0) else d for i, d in enumerate(dims)]
            if any(d is None for d in dims) or len(dims) == 0:
                return None
            shapes.append(dims)
        return shapes

    def all_fixed(self):
        """Whether every input dimension is known (declared, or fixed by input_shape)."""
        return all(dims is not None and None not in dims for _, dims, _ in self.inputs)

    def fix_hint(self):
        """Which input dimensions are symbolic, and how to fix them (for errors that need every shape)."""
        parts, example = [], None
        for name, dims, _ in self.inputs:
            if dims is None:
                parts.append(f"input {name!r} declares no shape")
                continue
            params = [(p or "")[:40] for p in self.dim_params.get(name) or [None] * len(dims)]
            free = [i for i, d in enumerate(dims) if d is None]
            if not free:
                continue
            parts.append(f"input {name!r} {_fmt_dims(dims)} has symbolic dimension{'s' if len(free) > 1 else ''} " +
                         ", ".join(f"{i}" + (f" ({params[i]!r})" if params[i] else "") for i in free))
            if example is None and len(self.inputs) == 1:
                example = [str(d) if d is not None else ("1" if i == 0 else params[i] or f"d{i}")
                           for i, d in enumerate(dims)]
        if example:
            how = (f"fix them with cnnnative.onnx.import_model(..., input_shape=({', '.join(example)})) or "
                   f"`python -m cnnnative convert IN OUT --input-shape {','.join(example)}`")
        else:
            how = "fix them with cnnnative.onnx.import_model(..., input_shape={input name: shape, ...})"
        return "the ONNX model's input shape is not complete: " + "; ".join(parts or ["it has no inputs"]) + \
            "; " + how

    def shape_values(self, shapes):
        """The values a trace at these input shapes folds (Shape of a traced tensor and the arithmetic on it:
        Gather, Concat, Cast, Range, ConstantOfShape, Expand, Slice, Squeeze, ReduceProd, ...), by name: with
        every input dimension fixed they are constants, which a second Program folds and rewrites at import
        (an Expand of a constant to an activation's shape then is an affine's operand)."""
        from ..graph import GraphBuilder
        env = {}
        with GraphBuilder(False) as builder:
            xs = [builder.input(name, s) for name, s in zip(self.input_names, shapes)]
            try:
                self.run(xs, stand_ins=False, env_out=env)
            except (InvalidModelError, UnsupportedError):
                pass  # reported by the import's own trace
        produced = {o for n in self.nodes for o in n.outputs if o}
        return {k: v for k, v in env.items() if k in produced and isinstance(v, np.ndarray)}

    # ---- replay ----
    def _stand_in(self, trace, node, name):
        """Replaces value `name` (output 0 of `node`, which failed) with a fresh engine input of the shape the
        node would give (stand_in_shape), so that the nodes reading it are checked on their own; the trace
        fails anyway, listing every node. False when that shape is not known."""
        vals = []
        for i in node.inputs:
            try:
                vals.append(trace.value(i) if i else None)
            except Exception:  # noqa: BLE001 - an input that failed too: no shape to go by
                return False
        shape = stand_in_shape(node, vals)
        if shape is None:
            return False
        trace.stand_ins += 1
        trace.env[name] = trace.builder.input(f"unchecked{trace.stand_ins}:{name[:200]}", shape)
        return True

    def run(self, xs, stand_ins=True, env_out=None):
        """Emits the graph under the current GraphBuilder; returns the outputs (Tensor or numpy constant).
        Raises InvalidModelError listing every node that breaks the ONNX specification for these input
        shapes, else UnsupportedError listing every node that could not be emitted."""
        if len(xs) != len(self.input_names):
            raise ValueError(f"this ONNX model takes {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(xs)}")
        trace = Trace(self, current())
        for name, x in zip(self.input_names, xs):
            if not isinstance(x, Tensor):
                raise TypeError(f"input {name!r}: expected a traced Tensor, got {type(x).__name__}")
            fixed = self.fixed.get(name)
            if fixed is not None and (len(x.shape) != len(fixed) or
                                      any(f is not None and f != d for f, d in zip(fixed, x.shape))):
                raise ValueError(f"input {name!r}: this model was imported with input_shape "
                                 f"{_fmt_dims(fixed)} and takes that shape only, got {list(x.shape)} (import it "
                                 "again with another input_shape; None leaves a dimension free)")
            trace.env[name] = x
        problems, invalid = list(self.static_problems), list(self.invalid)
        poisoned = set(self.failed)
        tainted = set()  # values computed from stand-ins
        for node in self.nodes:
            bad = [i for i in node.inputs if i and i in poisoned]
            for i in bad if stand_ins else ():  # outputs of nodes that failed at parse
                if i in self.failed_nodes and self._stand_in(trace, self.failed_nodes[i], i):
                    poisoned.discard(i)
                    tainted.add(i)
            bad = [i for i in bad if i in poisoned]
            if bad:
                poisoned.update(o for o in node.outputs if o)
                if node.op not in HANDLERS and node.op not in FOLDABLE and not other_domain(node):
                    problems.append((node.name, node.onnx_op, "operator not supported"))
                continue
            from_stand_in = any(i in tainted for i in node.inputs if i)
            if from_stand_in:
                tainted.update(o for o in node.outputs if o)
            try:
                outs = trace.node(node)
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - classified: invalid, unsupported, engine error, internal
                if isinstance(e, Unsupported) and any(isinstance(trace.env.get(i), np.ndarray) and i not in self.consts
                                                      for i in node.inputs if i) and not self.all_fixed():
                    e = Unsupported(f"{e}; an operand is computed from the input's shape, which folds at import "
                                    f"once every input dimension is fixed ({self.fix_hint()})")
                # checked against an inferred shape, a node is not known to be invalid: listed as unsupported
                classify_failure(node, e, problems if from_stand_in else invalid, problems)
                poisoned.update(o for o in node.outputs if o)
                if stand_ins and not isinstance(e, Invalid) and node.outputs and node.outputs[0] and \
                        self._stand_in(trace, node, node.outputs[0]):
                    poisoned.discard(node.outputs[0])  # its readers are checked on their own
                    tainted.add(node.outputs[0])
                continue
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for o, v in zip(node.outputs, outs):
                if o:
                    trace.env[o] = v
        if env_out is not None:
            env_out.update(trace.env)
        if invalid:
            raise InvalidModelError(invalid)
        if problems:
            raise UnsupportedError(problems)
        res = []
        for o in self.output_names:
            v = trace.env.get(o)
            if v is None:
                if o in self.consts:
                    v = np.asarray(self.consts[o])
                elif o in self.params:
                    v = trace.tensor(o)
                else:
                    raise InvalidModelError([(o, "graph output", "is produced by no node")])
            res.append(v)
        return res


def _fmt_dims(dims):
    return "(" + ", ".join("None" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def fix_input_shapes(inputs, input_shape):
    """{input name: dims} for import_model's input_shape (a shape for a one-input model, or {name: shape});
    each dims is the declared shape with its symbolic dimensions replaced by the given ones (None in
    input_shape leaves one symbolic). ValueError when a name is no input, a rank or a declared dimension
    differs, or a value is not a positive int; TypeError for a shape that is not a sequence."""
    if input_shape is None:
        return {}
    names = [n for n, _, _ in inputs]
    if isinstance(input_shape, dict):
        unknown = [k for k in input_shape if k not in names]
        if unknown:
            raise ValueError(f"input_shape names {unknown}, which are not inputs of the model (its inputs: "
                             f"{names})")
        given = dict(input_shape)
    else:
        if len(names) != 1:
            raise ValueError(f"the model has {len(names)} inputs ({names}); pass input_shape as a dict "
                             "{input name: shape}")
        given = {names[0]: input_shape}
    out = {}
    for name, dims, _ in inputs:
        if name not in given:
            continue
        shape = given[name]
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError(f"input_shape for input {name!r}: expected a sequence of ints, got {shape!r}")
        shape = list(shape)
        for d in shape:
            if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer))
                                  or not 1 <= d <= MAX_DIM):
                raise ValueError(f"input_shape for input {name!r}: {d!r} is not a dimension (an int in [1, "
                                 f"{MAX_DIM}], or None to leave it symbolic)")
        if dims is not None and len(dims) != len(shape):
            raise ValueError(f"input_shape for input {name!r} has {len(shape)} dimensions; the model declares "
                             f"{len(dims)}: {_fmt_dims(dims)}")
        merged = []
        for i, v in enumerate(shape):
            d = dims[i] if dims is not None else None
            if d is not None and v is not None and d != int(v):
                raise ValueError(f"input_shape for input {name!r}: dimension {i} is {int(v)}, but the model "
                                 f"declares it as {d} (declared shape {_fmt_dims(dims)})")
            merged.append(int(v) if v is not None else d)
        out[name] = merged
    return out


# Output shapes a failed node would give, for its stand-in: operators whose first output has their first
# input's shape, and those whose output is the broadcast of their inputs' shapes.
_SAME_SHAPE = frozenset((
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu",
    "Clip", "Cos", "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "GroupNormalization", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "InstanceNormalization", "LRN", "LayerNormalization", "LeakyRelu", "Log",
    "LogSoftmax", "MeanVarianceNormalization", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
))
_BROADCAST = frozenset(("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Mod", "Where"))


def stand_in_shape(node, vals):
    """The shape of node's first output when it is a float32 tensor that follows from its inputs' shapes alone
    (_SAME_SHAPE, _BROADCAST, Transpose), within the engine's limits; None otherwise."""
    op = node.onnx_op
    if not any(isinstance(v, Tensor) for v in vals):  # a constant that failed to fold: no activation
        return None
    shapes = [None if v is None else [int(d) for d in v.shape] for v in vals]
    floats = [isinstance(v, Tensor) or (isinstance(v, np.ndarray) and v.dtype == np.float32) for v in vals]
    try:
        if op in _SAME_SHAPE and shapes and shapes[0] is not None:
            if op == "Cast":
                if int(node.attrs.get("to", 0)) != 1:
                    return None
            elif op == "CastLike":
                if len(vals) < 2 or not floats[1]:
                    return None
            elif not floats[0]:
                return None
            shape = shapes[0]
        elif op in _BROADCAST:
            data = vals[1:] if op == "Where" else vals
            if not data or any(v is None for v in vals) or not all(floats[-len(data):]):
                return None
            shape = broadcast_shapes(*[s for s in shapes if s is not None])
        elif op == "Transpose" and shapes and shapes[0] is not None and floats[0]:
            perm = node.attrs.get("perm")
            perm = list(range(len(shapes[0])))[::-1] if perm is None else [int(p) for p in perm]
            if sorted(perm) != list(range(len(shapes[0]))):
                return None
            shape = [shapes[0][p] for p in perm]
        else:
            return None
    except (Invalid, Unsupported, TypeError, ValueError):
        return None
    if not shape or any(not 1 <= d <= MAX_DIM for d in shape) or numel(shape) > MAX_ELEMENTS:
        return None
    return list(shape)


class Trace:
    """One replay of a Program under a GraphBuilder: `env` maps ONNX value names to traced tensors (or numpy
    values folded while tracing); node() runs one node's mapper."""

    def __init__(self, prog: Program, builder):
        self.prog, self.builder, self.env = prog, builder, {}
        self.folded_bytes = 0
        self.stand_ins = 0  # engine inputs standing in for the outputs of failed nodes

    def tensor(self, name):
        v = self.env.get(name)
        if isinstance(v, Tensor):
            return v
        if name in self.prog.params:
            key, shape, trainable = self.prog.params[name]
            return self.builder.param(key, shape, trainable)
        return None

    def node(self, node):
        mapper = HANDLERS.get(node.op)
        vals = [self.value(i) for i in node.inputs]
        if node.op == AFFINE and node.attrs.get("bcast") and vals and isinstance(vals[0], Tensor):
            x = [int(d) for d in vals[0].shape]
            for b in node.attrs["bcast"]:  # a constant collapsed at import (_rewrite._collapse)
                if broadcast_shapes(x, b) != x:  # it grows the result: the original (broadcasting) node
                    return self.node(node.attrs["orig"])
        if node.op in FOLDABLE and any(v is not None for v in vals) and \
                all(v is None or isinstance(v, np.ndarray) for v in vals):
            outs = [np.asarray(v) for v in fold_node(node, vals)]
            self.folded_bytes += sum(v.nbytes for v in outs)
            if self.folded_bytes > _common.FOLD_MAX_TOTAL_BYTES:
                raise Unsupported(f"the constants computed while tracing add up to more than "
                                  f"{fmt_bytes(_common.FOLD_MAX_TOTAL_BYTES)}")
            return outs
        if node.op in ("Shape", "Size") and vals and isinstance(vals[0], Tensor):
            return fold_node(node, vals)
        if mapper is None:
            if node.op in FOLDABLE and not other_domain(node):
                raise Unsupported("operator not supported on tensors computed from the model input (it is folded "
                                  "only when its inputs are constants or shapes)")
            raise Unsupported(unknown_reason(node))
        return mapper(NodeContext(self, node, vals))

    def value(self, name):
        if not name:
            return None
        if name in self.env:
            return self.env[name]
        if name in self.prog.consts:
            return np.asarray(self.prog.consts[name])
        if name in self.prog.params:
            return self.tensor(name)
        raise Invalid(f"input {name!r} is not produced by any node")


# ---------------------------------------------------------------------------------------------------
# the op mappers, by ONNX op type (LINEAR and AFFINE are made by the rewrites)

HANDLERS = {
    "Conv": map_conv, "ConvTranspose": map_conv_transpose, "MaxPool": map_maxpool, "AveragePool": map_avgpool,
    "GlobalAveragePool": map_global_avg, "GlobalMaxPool": map_global_max, "BatchNormalization": map_batchnorm,
    LINEAR: map_linear, "Gemm": map_gemm, "MatMul": map_matmul, "Relu": activation("relu"),
    "LeakyRelu": activation("leaky_relu", negative_slope=("alpha", 0.01)), "Sigmoid": activation("sigmoid"),
    "Tanh": activation("tanh"), AFFINE: map_affine, "Add": map_add, "Sum": map_sum,
    "Sub": map_sub, "Mul": map_mul_div, "Div": map_mul_div, "Concat": map_concat, "Flatten": map_flatten,
    "Reshape": map_reshape, "Squeeze": map_squeeze_unsqueeze, "Unsqueeze": map_squeeze_unsqueeze,
    "Identity": map_identity, "Dropout": map_dropout, "LRN": map_lrn, "Pad": map_pad, "Slice": map_slice,
}
# engine ops a mapper emits that a build of the engine may lack (checked at import when shapes are unknown)
ENGINE_OPS_NEEDED = {"ConvTranspose": ("conv_transpose2d",), "LRN": ("lrn",), "Concat": ("concat",),
                     "Slice": ("split",),
                     "Pad": ("pad", "fill", "concat")}
# the op families that register their mappers (onnx/_registry.py)
from . import _ops_act, _ops_binary, _ops_norm, _ops_quant, _ops_reduce, _ops_resize, _ops_shape  # noqa: E402,F401
from ._registry import ENGINE_OPS as _REG_ENGINE_OPS  # noqa: E402
from ._registry import IMPORTERS as _REG_IMPORTERS  # noqa: E402
from ._registry import WEIGHT_SLOTS as _REG_WEIGHT_SLOTS  # noqa: E402

for _t, _fn in _REG_IMPORTERS.items():
    if _t in HANDLERS:
        raise RuntimeError(f"ONNX op {_t} is mapped twice")
    HANDLERS[_t] = _fn
ENGINE_OPS_NEEDED.update(_REG_ENGINE_OPS)
FOLDABLE = set(FOLDABLE_OPS)
KNOWN_OPS = set(SUPPORTED_OPS) | FOLDABLE | set(_REG_IMPORTERS) | {"QLinearConv", "QLinearMatMul"}
assert set(SUPPORTED_OPS) <= set(HANDLERS) | {"Constant"}


# ---------------------------------------------------------------------------------------------------
# the module


class OnnxModule(nn.Module):
    """An imported ONNX model. Parameters/buffers are the initializers (state_dict keys are the ONNX names
    with characters outside [A-Za-z0-9_.] replaced by '_'); forward(*inputs) replays the graph. compile()
    it like any module: `model.compile((8, 3, 32, 32))`. `input_names`, `output_names`, `input_shapes`
    (None for symbolic dims) and `opset` describe the source model."""

    def __init__(self, program: Program):
        super().__init__()
        object.__setattr__(self, "_program", program)
        for key, arr, trainable in program.param_values:
            if trainable:
                self._parameters[key] = nn.Parameter(arr)
            else:
                self._buffers[key] = nn.Buffer(np.ascontiguousarray(arr, np.float32))
        program.param_values = []
        self.input_names = list(program.input_names)
        self.output_names = list(program.output_names)
        self.input_shapes = [tuple(d) if d is not None else None for _, d, _ in program.inputs]
        self.opset = program.opset

    @property
    def input_shape(self):
        """Declared shape of the first input (None for symbolic dims), or None."""
        return self.input_shapes[0] if self.input_shapes else None

    def example_input_shape(self, batch: int = 1):
        """The first input's declared shape with a symbolic batch replaced by `batch`."""
        s = self.input_shape
        if not s or any(d is None for d in s[1:]):
            raise ValueError(self._program.fix_hint())
        return (batch if s[0] is None else s[0],) + tuple(s[1:])

    def forward(self, *xs):
        outs = self._program.run(list(xs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def trace(self, input_shape, training: bool, by_entry: bool = True):
        """Module.trace, for the batch the caller compiles. Where the file fixes the input's batch (what
        torch.onnx.export writes without dynamic axes) and the caller asks for another, the program runs at the
        file's batch and the graph is then rebatched (`_core.rebatch`): sizes the exporter computed from its batch
        (a Reshape to [1, C, -1], a Slice of the whole batch) follow the new batch as PyTorch's would, and a node
        whose output cannot follow it is refused, naming it, instead of running with the file's constants."""
        shape = tuple(int(d) for d in input_shape)
        fixed = self.input_shape
        if (len(self.input_shapes) == 1 and fixed and fixed[0] is not None and len(shape) == len(fixed)
                and shape[0] != fixed[0]):
            from .. import _core
            b, x, y = super().trace((fixed[0],) + shape[1:], training, by_entry)
            b.graph = _core.rebatch(b.graph, shape[0])
            return b, x, y
        return super().trace(input_shape, training, by_entry)

    def extra_repr(self):
        return (f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._program.nodes)}, "
                f"opset={self.opset}")


def import_model(src, bind=None, validate=True, input_shape=None) -> OnnxModule:
    """ONNX model (path, bytes, file object or onnx.ModelProto) -> OnnxModule. `bind` maps graph input
    names to arrays treated as constants (the backend uses it for weights fed at run time). `input_shape`
    fixes the inputs' symbolic dimensions: a shape for a one-input model, or {input name: shape}; None in a
    shape leaves that dimension symbolic. Shape subgraphs then fold at import and the model takes that shape
    only.

    Raises (listing every offending node at once, each with its name, op type and the bad value):
    InvalidModelError (a cnnnative.Error, hence a ValueError) for a model that breaks the ONNX specification,
    UnsupportedError (a ValueError) for a valid model the engine cannot run, ModelFileError (an OSError and a
    cnnnative.Error) for a path that cannot be read, TypeError for a `src` of another kind; ValueError for an
    input_shape that does not fit the model's inputs."""
    model = load_model_proto(src)
    prog = Program(model, bind, input_shape)
    if prog.invalid:  # found while folding constants: raised whatever the input shapes
        raise InvalidModelError(prog.invalid)
    shapes = prog.dry_shapes()
    if prog.fixed and shapes is not None and prog.all_fixed():
        known = prog.shape_values(shapes)  # every dimension fixed: fold the shape subgraphs at import
        if known:
            prog = Program(model, bind, input_shape, known)
            if prog.invalid:
                raise InvalidModelError(prog.invalid)
    module = OnnxModule(prog)
    shapes = shapes if validate else None
    if shapes is None:
        probs = prog.static_problems + prog.unknown_op_problems()
        if probs:
            raise UnsupportedError(probs)
        return module
    from ..graph import GraphBuilder
    builder = GraphBuilder(False)
    with builder:
        xs = [builder.input(name, s) for name, s in zip(prog.input_names, shapes)]
        module(*xs)
    return module
