"""ONNX import/export of the norm op family (registered in _registry): LayerNormalization (opset 17),
InstanceNormalization, GroupNormalization (opset 18: scale and bias per group; opset 21: per channel) to the engine
ops layer_norm / group_norm, and back.

Import: the normalized dims of LayerNormalization are x.shape[axis:]; its optional Mean and InvStdDev outputs are
the engine op's mean and rstd outputs (same shapes). InstanceNormalization is group_norm with one channel per
group. GroupNormalization-18's per-group scale and bias (the ONNX 1.16 fix made them per channel in opset 21) are
imported only when they are per channel anyway (num_groups = C); otherwise the error says to export at opset 21.

Export (opset 17): layer_norm over the last dims -> LayerNormalization (a Scale of ones when the node has no
weight); over other dims (layer_norm2d: the channels of NCHW) -> Transpose (normalized dims last),
LayerNormalization, Transpose back. group_norm with groups = C -> InstanceNormalization; other groups ->
Reshape [N, G, -1], InstanceNormalization (scale 1, bias 0), Reshape back, then Mul / Add by the per-channel
weight and bias reshaped to [C, 1, ...] (GroupNormalization needs opset 18, and 18's form is deprecated).

WEIGHT_SLOTS: the inputs of these ONNX ops that are module parameters (trainable) at import; the importer's
_assign_params must treat them like Conv's weights (see the report: _importer.py reads _registry.WEIGHT_SLOTS)."""
from __future__ import annotations

import numpy as np

from . import _registry
from ._base import Invalid, Unsupported, norm_axis
from ._emit import NodeContext
from ._registry import exports, imports

WEIGHT_SLOTS = {"LayerNormalization": {1: True, 2: True}, "InstanceNormalization": {1: True, 2: True},
                "GroupNormalization": {1: True, 2: True}}
if isinstance(getattr(_registry, "WEIGHT_SLOTS", None), dict):
    _registry.WEIGHT_SLOTS.update(WEIGHT_SLOTS)


def _eps(ctx, default=1e-5):
    eps = float(ctx.attr("epsilon", default))
    if not eps >= 0 or not np.isfinite(eps):
        raise Invalid(f"epsilon={eps}: must be a finite number >= 0")
    return eps


def _param(ctx, k, what, shape):
    t = ctx.tensor(k, what)
    if list(t.shape) != list(shape):
        if int(np.prod(t.shape)) == int(np.prod(shape)):
            return ctx.reshape(t, shape)
        raise Unsupported(f"{what} {list(t.shape)} is not of the normalized shape {list(shape)} (broadcast "
                          "scales are not supported)")
    return t


@imports("LayerNormalization", engine_ops=("layer_norm",))
def map_layer_norm(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    s = list(x.shape)
    axis = norm_axis(ctx.attr("axis", -1), len(s))
    ns = s[axis:]
    ins = [x, _param(ctx, 1, "Scale", ns)]
    if ctx.has(2):
        ins.append(_param(ctx, 2, "B", ns))
    y, mean, rstd = ctx.op("layer_norm", ins, {"axis": axis, "num_axes": len(s) - axis, "eps": _eps(ctx)},
                           n_out=True)
    return [y, mean, rstd][:max(1, len(ctx.node.outputs))]


def _group_norm(ctx, x, groups, scale_k, bias_k, per_group):
    s = list(x.shape)
    if len(s) < 2:
        raise Invalid(f"X must be [N, C, ...], got {s}")
    C = s[1]
    if groups < 1 or C % groups:
        raise Invalid(f"num_groups={groups} does not divide the {C} channels of X {s}")
    ins = [x]
    if per_group and groups != C:
        raise Unsupported(f"GroupNormalization-{ctx.opset} scales per group (scale and bias of {groups} values "
                          f"for {C} channels), which the engine does not do; export at opset 21 (per-channel "
                          "scale) or as InstanceNormalization")
    for k, what in ((scale_k, "scale"), (bias_k, "B" if scale_k == 1 else "bias")):
        if ctx.has(k):
            ins.append(_param(ctx, k, what, [C]))
    if len(ins) == 2:
        raise Invalid("scale is given without a bias")
    return ctx.op("group_norm", ins, {"groups": int(groups), "eps": _eps(ctx)})


@imports("InstanceNormalization", engine_ops=("group_norm",))
def map_instance_norm(ctx: NodeContext):
    x = ctx.tensor(0, "input")
    if len(x.shape) < 3:
        raise Invalid(f"input must be [N, C, D1, ...], got {list(x.shape)}")
    return _group_norm(ctx, x, x.shape[1], 1, 2, False)


@imports("GroupNormalization", engine_ops=("group_norm",))
def map_group_norm(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    if ctx.attr("num_groups") is None:
        raise Invalid("missing attribute num_groups")
    if int(ctx.attr("stash_type", 1)) != 1:
        raise Unsupported(f"stash_type={ctx.attr('stash_type')} (statistics in float32 or better only)")
    return _group_norm(ctx, x, int(ctx.attr("num_groups")), 1, 2, ctx.opset < 21)


# ---- export ----

def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def _tmp(ex, hint):
    """A fresh value name for an intermediate of a multi-node export."""
    n, k = hint, 1
    while n in ex.taken:
        n, k = f"{hint}_{k}", k + 1
    ex.taken.add(n)
    return n


def _scale_bias(ex, ins, I, name, shape):
    """The Scale / B names for a normalization node: the node's weight and bias, or constants 1 and 0."""
    scale = I[1] if len(ins) > 1 else ex.const(f"{name}.scale", np.ones(shape, np.float32))
    bias = I[2] if len(ins) > 2 else ex.const(f"{name}.bias", np.zeros(shape, np.float32))
    return scale, bias


@exports("layer_norm")
def export_layer_norm(ex, ins, attrs, outs, name, I, O):
    s = ex.shape(ins[0])
    r = len(s)
    axis = int(_first(attrs.get("axis", r - 1)))
    k = int(_first(attrs.get("num_axes", r - axis)))
    eps = float(attrs.get("eps", 1e-5))
    ns = s[axis:axis + k]
    scale, bias = _scale_bias(ex, ins, I, name, ns)
    lin = [I[0], scale] + ([I[2]] if len(ins) > 2 else [])
    if axis + k == r:
        ex.node("LayerNormalization", lin, O[:1], name, axis=axis, epsilon=eps)
        return
    perm = list(range(axis)) + list(range(axis + k, r)) + list(range(axis, axis + k))
    inv = [perm.index(d) for d in range(r)]
    t_in, t_out = _tmp(ex, f"{name}.last"), _tmp(ex, f"{name}.last_out")
    ex.node("Transpose", [I[0]], [t_in], f"{name}.to_last", perm=perm)
    ex.node("LayerNormalization", [t_in] + lin[1:], [t_out], name, axis=r - k, epsilon=eps)
    ex.node("Transpose", [t_out], O[:1], f"{name}.back", perm=inv)


@exports("group_norm")
def export_group_norm(ex, ins, attrs, outs, name, I, O):
    s = ex.shape(ins[0])
    C, G = s[1], int(_first(attrs["groups"]))
    eps = float(attrs.get("eps", 1e-5))
    if G == C:
        scale, bias = _scale_bias(ex, ins, I, name, [C])
        ex.node("InstanceNormalization", [I[0], scale, bias], O[:1], name, epsilon=eps)
        return
    grouped = ex.const(f"{name}.grouped", np.array([0, G, -1], np.int64))
    back = ex.const(f"{name}.shape", np.array([0] + s[1:], np.int64))
    ones, zeros = (ex.const(f"{name}.{k}", v) for k, v in (("ones", np.ones(G, np.float32)),
                                                           ("zeros", np.zeros(G, np.float32))))
    gx, normed = _tmp(ex, f"{name}.grouped_x"), _tmp(ex, f"{name}.normed")
    ex.node("Reshape", [I[0], grouped], [gx], f"{name}.group")
    ex.node("InstanceNormalization", [gx, ones, zeros], [normed], name, epsilon=eps)
    if len(ins) == 1:
        ex.node("Reshape", [normed, back], O[:1], f"{name}.ungroup")
        return
    ungrouped, w = _tmp(ex, f"{name}.ungrouped"), _tmp(ex, f"{name}.w")
    ex.node("Reshape", [normed, back], [ungrouped], f"{name}.ungroup")
    per_c = ex.const(f"{name}.param_shape", np.array([C] + [1] * (len(s) - 2), np.int64))
    ex.node("Reshape", [I[1], per_c], [w], f"{name}.w_shape")
    last = O[0] if len(ins) == 2 else _tmp(ex, f"{name}.scaled")
    ex.node("Mul", [ungrouped, w], [last], f"{name}.mul")
    if len(ins) > 2:
        b = _tmp(ex, f"{name}.b")
        ex.node("Reshape", [I[2], per_c], [b], f"{name}.b_shape")
        ex.node("Add", [last, b], O[:1], f"{name}.add")
