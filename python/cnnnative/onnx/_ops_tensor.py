"""Op mappers of shape and data movement: Concat, Flatten, Reshape, Squeeze/Unsqueeze, Identity, Pad,
Resize/Upsample (nearest, integer factors), Slice."""
from __future__ import annotations

import math

import numpy as np

from . import _common
from ._base import (Invalid, Unsupported, int_vector, norm_axis, numel, reshape_target, slice_args, slice_bounds,
                    squeezed_shape, unsqueezed_shape)
from ._common import MAX_DIM
from ._emit import NodeContext


def map_concat(ctx: NodeContext):
    ts = [ctx.tensor(k, f"input {k}") for k in range(len(ctx.node.inputs)) if ctx.node.inputs[k]]
    if not ts:
        raise Invalid("no inputs")
    if ctx.attr("axis") is None:
        raise Invalid("the required attribute axis is missing")
    r = len(ts[0].shape)
    axis = norm_axis(ctx.attr("axis"), r)
    for t in ts[1:]:
        if len(t.shape) != r or any(d != e for i, (d, e) in enumerate(zip(t.shape, ts[0].shape)) if i != axis):
            raise Invalid(f"inputs of shapes {[list(t.shape) for t in ts]} differ outside axis {axis}")
    if len(ts) == 1:
        return ts[0]
    ctx.need("concat")
    return ctx.op("concat", ts, {"axis": axis})


def map_flatten(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    s = list(x.shape)
    axis = norm_axis(ctx.attr("axis", 1), len(s), inclusive=True)
    if axis == 1 and len(s) > 2:
        return ctx.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    return ctx.reshape(x, [int(np.prod(s[:axis])), int(np.prod(s[axis:]))])


def map_reshape(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    shape = ctx.constant(1, "shape")
    if shape is None:
        shape = ctx.attr("shape")  # opset < 5
        if shape is None:
            raise Invalid("missing the shape")
        shape = np.asarray(shape, np.int64)
    allowzero = int(ctx.attr("allowzero", 0))
    t = int_vector(shape, "shape")
    if allowzero and 0 in t:
        raise Unsupported("allowzero=1 with a 0 in the shape (zero-size tensors)")
    s = list(x.shape)
    if not allowzero:
        if any(v == 0 and i >= len(s) for i, v in enumerate(t)):
            raise Invalid(f"shape {t} copies (0) a dimension beyond the input's rank {len(s)}")
        t = [s[i] if v == 0 else v for i, v in enumerate(t)]
    rest = numel(s[1:])
    # [N, -1] / [0, -1] / [declared batch, rest]: a flatten, whatever batch the model is compiled for
    if len(t) == 2 and len(s) >= 2 and t[1] in (-1, rest) and t[0] in (s[0], ctx.trace.prog.declared_batch):
        return x if len(s) == 2 else ctx.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    return ctx.reshape(x, reshape_target(s, t, 1))


def map_squeeze_unsqueeze(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    axes = ctx.constant(1, "axes") if ctx.has(1) else ctx.attr("axes")
    axes = None if axes is None else int_vector(np.asarray(axes, np.int64) if isinstance(axes, list) else axes,
                                                "axes")
    if ctx.node.op == "Unsqueeze":
        if axes is None:
            raise Invalid("missing axes")
        return ctx.reshape(x, unsqueezed_shape(list(x.shape), axes))
    return ctx.reshape(x, squeezed_shape(list(x.shape), axes))


def map_identity(ctx: NodeContext):
    v = ctx.vals[0]
    return v if v is not None else ctx.tensor(0)


def map_pad(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    mode = ctx.attr("mode", "constant")
    if mode != "constant":  # reflect / edge: the general pad op
        from ._ops_shape import map_pad_general
        return map_pad_general(ctx)
    r = len(x.shape)
    if ctx.opset < 11:
        pads, value = ctx.attr("pads", ctx.attr("paddings")), float(ctx.attr("value", 0.0))
        pads = None if pads is None else np.asarray(pads, np.int64)
        axes = None
    else:
        pads = ctx.constant(1, "pads")
        v = ctx.constant(2, "constant_value")
        if v is not None and np.asarray(v).dtype.kind not in "biuf":
            raise Unsupported(f"constant_value of dtype {np.asarray(v).dtype}")
        value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
        axes = ctx.constant(3, "axes")
    if pads is None:
        raise Invalid("missing pads")
    pads = int_vector(pads, "pads")
    axes = list(range(r)) if axes is None else [norm_axis(a, r, "axes") for a in int_vector(axes, "axes")]
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes {axes} repeat an axis")
    n = len(axes)
    if len(pads) != 2 * n:
        raise Invalid(f"pads {pads} should hold {2 * n} values (2 per padded axis)")
    for i, ax in enumerate(axes):
        size = x.shape[ax] + pads[i] + pads[n + i]
        if size < 0:
            raise Invalid(f"pads {pads} give axis {ax} of size {x.shape[ax]} a negative size {size}")
        if size == 0:
            raise Unsupported(f"pads {pads} give axis {ax} size 0 (the engine has no zero-size tensors)")
        if size > MAX_DIM or max(abs(pads[i]), abs(pads[n + i])) > MAX_DIM:
            raise Unsupported(f"pads {pads} exceed the engine's limits ({MAX_DIM} per dimension)")
    before, after = dict(zip(axes, pads[:n])), dict(zip(axes, pads[n:]))
    if r == 4 and min(pads) >= 0 and not any(before.get(a, 0) or after.get(a, 0) for a in (0, 1)):
        # the spatial dims of an NCHW tensor: the engine's pad op, which the compile pass fold_pad folds into a
        # following conv's or average pool's padding when the value is 0
        t, left, b, right = before.get(2, 0), before.get(3, 0), after.get(2, 0), after.get(3, 0)
        if not (t or left or b or right):
            return x
        ctx.need("pad")
        return ctx.op("pad", [x], {"pads": [t, left, b, right], "value": value})
    for i, ax in enumerate(axes):  # other ranks and axes, and crops: concat with `fill` tensors
        x = ctx.pad(x, ax, pads[i], pads[n + i], value)
    return x


def _nearest_index(out, n, s, coord_mode, mode):
    o = np.arange(out, dtype=np.float64)
    if coord_mode in ("half_pixel", "half_pixel_symmetric"):
        src = (o + 0.5) / s - 0.5
    elif coord_mode == "pytorch_half_pixel":
        src = (o + 0.5) / s - 0.5 if out > 1 else np.zeros_like(o)
    elif coord_mode == "align_corners":
        src = o * (n - 1) / (out - 1) if out > 1 else np.zeros_like(o)
    elif coord_mode == "asymmetric":
        src = o / s
    elif coord_mode == "tf_half_pixel_for_nn":
        src = (o + 0.5) / s
    else:
        return None
    f = np.floor(src)
    d = src - f
    if mode == "round_prefer_floor":
        idx = np.where(d > 0.5, f + 1, f)
    elif mode == "round_prefer_ceil":
        idx = np.where(d >= 0.5, f + 1, f)
    elif mode == "floor":
        idx = f
    elif mode == "ceil":
        idx = np.ceil(src)
    else:
        return None
    return np.clip(idx, 0, n - 1).astype(np.int64)


_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def map_resize(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    s = list(x.shape)
    r = len(s)
    from ._ops_resize import _resize_args  # the opset-dependent inputs and attributes, shared with the general mapper
    op = ctx.node.op
    mode, coord_mode, nearest_mode, scales, sizes = _resize_args(ctx, x)
    if mode != "nearest":
        raise Unsupported(f"mode={mode!r} (only 'nearest')")
    if not (op == "Upsample" or ctx.opset < 11):
        if coord_mode not in _COORD_MODES:
            raise Invalid(f"coordinate_transformation_mode={coord_mode!r}: one of {', '.join(_COORD_MODES)}")
        if nearest_mode not in _NEAREST_MODES:
            raise Invalid(f"nearest_mode={nearest_mode!r}: one of {', '.join(_NEAREST_MODES)}")
        if int(ctx.attr("antialias", 0)):
            raise Unsupported("antialias=1")
    axes = ctx.attr("axes")
    axes = list(range(r)) if axes is None else [norm_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes {axes} repeat an axis")
    if scales is not None and np.size(scales) == 0:
        scales = None
    if sizes is not None and np.size(sizes) == 0:
        sizes = None
    if scales is not None and sizes is not None:
        raise Invalid("both scales and sizes are given (one of them must be empty or absent)")
    full = [1.0] * r
    if scales is not None:
        a_ = np.asarray(scales)
        if a_.dtype.kind not in "iuf" or a_.ndim > 1:
            raise Invalid(f"scales must be a 1-D float tensor, got {a_.dtype} {list(a_.shape)}")
        vals = [float(v) for v in a_.reshape(-1)]
        if len(vals) != len(axes):
            raise Invalid(f"scales {vals} do not match the {len(axes)} axes {axes}")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise Invalid(f"scales {vals}: each must be a finite number > 0")
        for a, v in zip(axes, vals):
            full[a] = v
        outs = [int(math.floor(n * f)) for n, f in zip(s, full)]
    elif sizes is not None:
        vals = int_vector(sizes, "sizes")
        if len(vals) != len(axes):
            raise Invalid(f"sizes {vals} do not match the {len(axes)} axes {axes}")
        if any(v < 0 for v in vals):
            raise Invalid(f"sizes {vals} are negative")
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy not in ("stretch", "not_larger", "not_smaller"):
            raise Invalid(f"keep_aspect_ratio_policy={policy!r}: one of stretch, not_larger, not_smaller")
        ratios = [v / s[a] for a, v in zip(axes, vals)]
        if policy in ("not_larger", "not_smaller"):
            rr = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [rr] * len(axes)
        for a, v in zip(axes, ratios):
            full[a] = v
        outs = [int(round(n * f)) if policy != "stretch" else n for n, f in zip(s, full)]
        if policy == "stretch":
            for a, v in zip(axes, vals):
                outs[a] = v
    else:
        raise Unsupported("neither scales nor sizes is given")
    if r != 4 or full[0] != 1 or full[1] != 1:
        raise Unsupported(f"scales {full} on a rank-{r} tensor (only the H and W of [N, C, H, W])")
    max_size = min(MAX_DIM, _common.FOLD_MAX_ELEMENTS)
    if any(o < 1 or o > max_size for o in outs):
        raise Unsupported(f"output size {outs} (dimensions 1 to {max_size} are supported)")
    ints = []
    for n, f, o in zip(s[2:], full[2:], outs[2:]):
        if f < 1 or f != int(f) or o != n * int(f):
            raise Unsupported(f"scale {f} (output {o} from {n}); only integer upsampling factors are supported")
        idx = _nearest_index(o, n, int(f), coord_mode, nearest_mode)
        if idx is None or not np.array_equal(idx, np.arange(o) // int(f)):
            raise Unsupported(f"coordinate_transformation_mode={coord_mode!r} with nearest_mode={nearest_mode!r} "
                              f"does not replicate pixels for scale {int(f)}")
        ints.append(int(f))
    if ints == [1, 1]:
        return x
    ctx.need("upsample_nearest2d")
    return ctx.op("upsample_nearest2d", [x], {"scale": ints})


def map_slice(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    s = list(x.shape)
    vals = [ctx.constant(k) for k in range(1, len(ctx.node.inputs))] if ctx.opset >= 10 else []
    starts, ends, axes, steps = slice_args(ctx.node, [None] + vals, len(s))
    if any(int(step) != 1 for step in steps):  # steps: the general slice op
        from ._ops_shape import map_slice_general
        return map_slice_general(ctx)
    y = x
    for st, en, ax, step in zip(starts, ends, axes, steps):
        sl = slice_bounds(s[ax], st, en, 1)
        y = ctx.crop(y, ax, sl.start, max(0, sl.stop - sl.start))
    return y
