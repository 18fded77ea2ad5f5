"""ONNX mappers and exporters of the reduce family: ReduceMean / ReduceSum / ReduceMax (axes as an attribute, or
as input 1 from opset 18 on — ReduceSum from 13 —, keepdims, noop_with_empty_axes), LogSoftmax and Softmax on any
axis (opset < 13: the input coerced to 2-D at `axis`, the ONNX semantics of that time), and the exporters of the
engine ops reduce_mean / reduce_sum / reduce_max, softmax_axis, log_softmax.

ReduceMean over the two spatial axes of a 4-D tensor (what torch's dynamo exporter writes for
AdaptiveAvgPool2d((1, 1))) and ReduceMax over them run as the engine's global pooling ops (global_avg_pool, a
whole-image max_pool2d), which have layout-aware kernels and fuse into the graph like GlobalAveragePool."""
from __future__ import annotations

import numpy as np

from ._base import Invalid, int_vector, norm_axis
from ._emit import NodeContext
from ._registry import exports, imports

_ENGINE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max"}


def _reduce_axes(ctx: NodeContext, rank):
    """The normalized, sorted axes a ReduceX node reduces over, or None for "no reduction" (an identity)."""
    op = ctx.node.onnx_op
    axes_input = ctx.opset >= (13 if op == "ReduceSum" else 18)
    if axes_input:
        if "axes" in ctx.node.attrs:
            raise Invalid(f"{op} takes axes as input 1 from opset {13 if op == 'ReduceSum' else 18} on, not as an "
                          "attribute")
        c = ctx.constant(1, "axes") if ctx.has(1) else None
        axes = None if c is None else int_vector(c, "axes")
    else:
        a = ctx.attr("axes")
        axes = None if a is None else [int(v) for v in a]
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return None
        return list(range(rank))
    norm = sorted(norm_axis(a, rank, "axes") for a in axes)
    if len(set(norm)) != len(norm):
        raise Invalid(f"axes={axes} repeat an axis")
    return norm


def map_reduce(ctx: NodeContext):
    op = ctx.node.onnx_op
    x = ctx.tensor(0, "data")
    s = list(x.shape)
    r = len(s)
    keep = int(ctx.attr("keepdims", 1))
    if keep not in (0, 1):
        raise Invalid(f"keepdims={keep}: must be 0 or 1")
    axes = _reduce_axes(ctx, r)
    if axes is None:
        return x
    kept = [1 if i in axes else d for i, d in enumerate(s)] if keep else [d for i, d in enumerate(s) if i not in axes]
    if all(s[a] == 1 for a in axes):  # nothing to reduce: a reshape
        return ctx.reshape(x, kept)
    if r == 4 and axes == [2, 3] and op in ("ReduceMean", "ReduceMax"):
        if op == "ReduceMean":
            y = ctx.op("global_avg_pool", [x])
        else:
            attrs = {"kernel": s[2:], "stride": s[2:], "training": int(ctx.builder.training)}
            y = ctx.op("max_pool2d", [x], attrs, n_out=True)[0]
        return ctx.reshape(y, kept)
    eng = _ENGINE[op]
    ctx.need(eng)
    return ctx.op(eng, [x], {"axes": axes, "keepdim": keep})


imports("ReduceMean", "ReduceSum", "ReduceMax", engine_ops=())(map_reduce)


def map_softmax_any(ctx: NodeContext):
    """Softmax / LogSoftmax. Opset < 13: the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])] and
    normalized along the second dimension (axis defaults to 1); from 13 on: along `axis` (default -1)."""
    log = ctx.node.onnx_op == "LogSoftmax"
    x = ctx.tensor(0, "input")
    s = list(x.shape)
    r = len(s)
    legacy = ctx.opset < 13
    axis = norm_axis(ctx.attr("axis", 1 if legacy else -1), r)
    if legacy:
        s2 = [int(np.prod(s[:axis])), int(np.prod(s[axis:]))]
    elif int(np.prod(s[axis + 1:])) == 1:
        s2 = [int(np.prod(s[:axis])), s[axis]]
    else:
        s2 = None
    if s2 is None:
        ctx.need("log_softmax" if log else "softmax_axis")
        return ctx.op("log_softmax" if log else "softmax_axis", [x], {"axis": axis})
    x2 = ctx.reshape(x, s2)
    if log:
        ctx.need("log_softmax")
        y = ctx.op("log_softmax", [x2], {"axis": 1})
    else:
        y = ctx.op("softmax", [x2])
    return ctx.reshape(y, s)


imports("Softmax", "LogSoftmax")(map_softmax_any)


# ---------------------------------------------------------------------------------------------------
# exporters (opset 17: ReduceMean / ReduceMax take axes as an attribute, ReduceSum as input 1)

def _int(v, default):
    v = default if v is None else v
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def _export_reduce(onnx_op):
    def export(ex, ins, attrs, outs, name, I, O):
        xs = ex.shape(ins[0])
        r = len(xs)
        axes = sorted(int(a) + r if int(a) < 0 else int(a) for a in attrs["axes"])
        keep = _int(attrs.get("keepdim"), 0)
        if 0 in axes and xs[0] != 1:
            ex.batch_specific.append(name)
        squeeze_all = not keep and len(axes) == r  # the engine's [1] where ONNX gives a 0-d tensor
        kw = {"keepdims": 1 if squeeze_all else keep}
        ins_ = [I[0]]
        if onnx_op == "ReduceSum":
            ins_.append(ex.const(f"{name}.axes", np.array(axes, np.int64)))
        else:
            kw["axes"] = axes
        if not squeeze_all:
            ex.node(onnx_op, ins_, O, name, **kw)
            return
        mid = f"{O[0]}.keep"
        ex.node(onnx_op, ins_, [mid], name, **kw)
        shp = ex.const(f"{name}.shape", np.array([1], np.int64))
        ex.node("Reshape", [mid, shp], O, f"{name}/reshape")
    return export


exports("reduce_mean")(_export_reduce("ReduceMean"))
exports("reduce_sum")(_export_reduce("ReduceSum"))
exports("reduce_max")(_export_reduce("ReduceMax"))


@exports("softmax_axis")
def export_softmax_axis(ex, ins, attrs, outs, name, I, O):
    ex.node("Softmax", I, O, name, axis=_int(attrs.get("axis"), -1))


@exports("log_softmax")
def export_log_softmax(ex, ins, attrs, outs, name, I, O):
    ex.node("LogSoftmax", I, O, name, axis=_int(attrs.get("axis"), -1))
