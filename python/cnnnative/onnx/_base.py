"""What every part of the ONNX importer shares: the two failure kinds a node can have (Invalid: it breaks
the ONNX specification; Unsupported: the engine cannot run it), the importer's node record, and the shape
arithmetic of ONNX (broadcasting, axes, Reshape/Squeeze/Slice arguments) that both constant folding and the
op mappers use. Every size computed at import is checked against the folding budget before anything is
allocated (check_budget)."""
from __future__ import annotations

import numpy as np

from .. import _core
from . import _common
from ._common import MAX_LIST

# ops the importer creates while rewriting the graph; '$' cannot start an ONNX op type that reaches a handler
# (default-domain op types that are not identifiers are reported as unknown operators)
LINEAR, AFFINE = "$Linear", "$Affine"


class Unsupported(Exception):
    """Raised by a handler: the node cannot be expressed with engine ops (the reason is the message)."""


class Invalid(Exception):
    """Raised by a handler or a fold: the node breaks the ONNX specification (the reason is the message)."""


class Node:
    """One node of the importer's graph: an ONNX node, or one the rewrites made (LINEAR, AFFINE). `op` is what
    selects the mapper, `onnx_op` the ONNX op type named in messages."""
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "onnx_op")

    def __init__(self, op, name, inputs, outputs, attrs, onnx_op=None):
        self.op, self.name, self.inputs, self.outputs, self.attrs = op, name, list(inputs), list(outputs), attrs
        self.onnx_op = onnx_op or op  # the ONNX op type, for messages

    def __repr__(self):
        return f"Node({self.op}, {self.name!r}, {self.inputs} -> {self.outputs})"


def engine_ops() -> set:
    return set(_core.op_names())


def type_name(onnx, t):
    return onnx.TensorProto.DataType.Name(t) if t in onnx.TensorProto.DataType.values() else str(t)


def fmt_bytes(n):
    return f"{n / 2 ** 20:.1f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.1f} GiB"


def numel(dims):
    n = 1
    for d in dims:
        n *= int(d)
    return n


def dtype_of(onnx, data_type):
    """numpy dtype of a TensorProto data type, or None when it is not one."""
    if data_type == 0:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(data_type)))
    except Exception:  # an unknown or unmappable type number
        return None


def check_budget(shape, itemsize, what="the result"):
    """Unsupported when a constant of `shape` would exceed the folding budget (read from _common at each call,
    so that tests can lower it)."""
    n = numel(shape)
    max_elements, max_bytes = _common.FOLD_MAX_ELEMENTS, _common.FOLD_MAX_BYTES
    if n > max_elements or n * itemsize > max_bytes:
        raise Unsupported(f"{what} would hold {n} elements ({fmt_bytes(n * itemsize)}); constants computed at "
                          f"import are limited to {max_elements} elements and {fmt_bytes(max_bytes)}")


def norm_axis(axis, rank, name="axis", inclusive=False):
    """axis normalized to [0, rank) ([0, rank] when inclusive), or Invalid."""
    a = int(axis)
    hi = rank if inclusive else rank - 1
    if not -rank <= a <= hi:
        raise Invalid(f"{name}={a} is out of range for a rank-{rank} tensor ([{-rank}, {hi}])")
    return a + rank if a < 0 else a


def int_vector(v, what):
    """A constant holding integers (shape, axes, pads, ...) as a list of Python ints."""
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise Invalid(f"{what} must hold integers, got dtype {a.dtype}")
    if a.ndim > 1:
        raise Invalid(f"{what} must be 1-D, got shape {list(a.shape)}")
    if a.size > MAX_LIST:
        raise Unsupported(f"{what} holds {a.size} values (at most {MAX_LIST})")
    return [int(x) for x in a.reshape(-1)]


def scalar_value(v, what):
    a = np.asarray(v)
    if a.size != 1:
        raise Invalid(f"{what} must be a single value, got shape {list(a.shape)}")
    return a.reshape(-1)[0]


def broadcast_shapes(*shapes):
    """numpy's multidirectional broadcasting of shapes, computed on the shapes only."""
    r = max(len(s) for s in shapes)
    out = []
    for i in range(r):
        ds = {int(s[len(s) - r + i]) for s in shapes if len(s) - r + i >= 0}
        ds.discard(1)
        if len(ds) > 1:
            raise Invalid(f"shapes {[list(s) for s in shapes]} do not broadcast together")
        out.append(ds.pop() if ds else 1)
    return out


def axes_arg(node, ins, k):
    """Axes of Squeeze/Unsqueeze/ReduceX: input k (opset 13+) or attribute 'axes'."""
    if len(ins) > k and ins[k] is not None:
        return int_vector(ins[k], "axes")
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def unsqueezed_shape(shape, axes):
    r = len(shape) + len(axes)
    axes = [norm_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes={axes} repeat an axis")
    out = list(shape)
    for a in sorted(axes):
        out.insert(a, 1)
    return out


def squeezed_shape(shape, axes):
    r = len(shape)
    if axes is None:
        return [d for d in shape if d != 1]
    axes = [norm_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes={axes} repeat an axis")
    for a in axes:
        if shape[a] != 1:
            raise Invalid(f"Squeeze of axis {a} whose size is {shape[a]}, not 1")
    return [d for i, d in enumerate(shape) if i not in set(axes)]


def reshape_target(in_shape, shape, allowzero):
    """ONNX Reshape's output shape (0 copies the input's dim unless allowzero, one -1 inferred), checked."""
    t = int_vector(shape, "shape")
    if any(v < -1 for v in t):
        raise Invalid(f"shape {t}: values must be >= -1")
    if t.count(-1) > 1:
        raise Invalid(f"shape {t} has more than one -1")
    if allowzero and 0 in t and -1 in t:
        raise Invalid(f"shape {t}: with allowzero=1, 0 and -1 cannot both appear")
    if not allowzero:
        if any(v == 0 and i >= len(in_shape) for i, v in enumerate(t)):
            raise Invalid(f"shape {t} copies (0) a dimension beyond the input's rank {len(in_shape)}")
        t = [in_shape[i] if v == 0 else v for i, v in enumerate(t)]
    total = numel(in_shape)
    if -1 in t:
        known = numel(v for v in t if v != -1)
        if known == 0 or total % known:
            raise Invalid(f"cannot reshape {list(in_shape)} ({total} elements) to {t}")
        t[t.index(-1)] = total // known
    if numel(t) != total:
        raise Invalid(f"cannot reshape {list(in_shape)} ({total} elements) to {t}")
    return t


def slice_bounds(dim, start, end, step):
    """ONNX Slice clamping for one axis (step 1 or -1 paths as python slicing)."""
    return slice(*slice(int(start) if abs(start) < 2 ** 62 else (dim if start > 0 else -dim - 1),
                        int(end) if abs(end) < 2 ** 62 else (dim if end > 0 else -dim - 1),
                        int(step)).indices(dim))


def slice_args(node, ins, rank):
    if len(ins) > 1:  # opset 10+
        starts = int_vector(ins[1], "starts")
        ends = int_vector(ins[2], "ends") if len(ins) > 2 and ins[2] is not None else None
        if ends is None:
            raise Invalid("missing ends")
        axes = int_vector(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
        steps = int_vector(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else None
    else:
        starts, ends = list(node.attrs.get("starts", [])), list(node.attrs.get("ends", []))
        axes, steps = node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, rank, "axes") for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise Invalid(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes {axes} repeat an axis")
    if 0 in steps:
        raise Invalid(f"steps {steps}: a step of 0")
    return starts, ends, axes, steps


def other_domain(n):
    return n.op != n.onnx_op and not n.op.startswith(("?", "$"))


def unknown_reason(n):
    return "operators outside the default ONNX domain are not supported" if other_domain(n) \
        else "operator not supported"


def classify_failure(n, e, invalid, unsupported):
    """Appends node n's failure `e` to the invalid or the unsupported problems."""
    if isinstance(e, Invalid):
        invalid.append((n.name, n.onnx_op, str(e)))
    elif isinstance(e, Unsupported):
        unsupported.append((n.name, n.onnx_op, str(e)))
    elif isinstance(e, _core.Error):
        unsupported.append((n.name, n.onnx_op, f"the engine rejects it: {e}"))
    else:  # a bug of the importer: still one of the documented errors, naming the node
        invalid.append((n.name, n.onnx_op, f"internal error of the importer (please report it): "
                        f"{type(e).__name__}: {str(e)[:300]}"))
