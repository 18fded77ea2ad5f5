"""ONNX import/export of the resize op family (registered in _registry).

Import: Resize (opsets 10-21) and Upsample (7, 9) on the H and W of an [N, C, H, W] tensor, mode nearest or
linear, coordinate_transformation_mode half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners,
asymmetric, tf_half_pixel_for_nn, every nearest_mode, scales or sizes (with keep_aspect_ratio_policy and axes),
roi ignored (it only matters for tf_crop_and_resize). map_resize first asks the integer-factor mapper
(_ops_tensor.map_resize: nearest replication, the upsample_nearest2d op) and takes what it refuses onto resize2d.
Export: resize2d as Resize (opset 17): `sizes` built from the input's own N and C (Shape -> Slice -> Concat, so
the batch stays dynamic) when the step is in / out, `scales` when PyTorch's 1 / scale_factor step differs."""
from __future__ import annotations

import math

import numpy as np

from . import _common
from ._base import Invalid, Unsupported, int_vector, norm_axis
from ._common import MAX_DIM
from ._emit import NodeContext
from ._registry import exports, imports
from .. import _fn_resize as R

_COORDS = {"half_pixel": R.HALF_PIXEL, "half_pixel_symmetric": R.HALF_PIXEL, "asymmetric": R.ASYMMETRIC,
           "align_corners": R.ALIGN_CORNERS, "pytorch_half_pixel": R.PYTORCH_HALF_PIXEL,
           "tf_half_pixel_for_nn": R.TF_HALF_PIXEL_FOR_NN}
_ROUNDING = {"floor": R.FLOOR, "round_prefer_floor": R.ROUND_PREFER_FLOOR, "round_prefer_ceil": R.ROUND_PREFER_CEIL,
             "ceil": R.CEIL}


def _resize_args(ctx: NodeContext, x):
    """(mode, coord name, nearest_mode, scales or None, sizes or None) of a Resize / Upsample node."""
    op = ctx.node.op
    mode = ctx.attr("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if op == "Upsample" or ctx.opset < 11:
        if mode == "bilinear":  # Upsample-7's name for linear
            mode = "linear"
        scales = ctx.attr("scales") if (op == "Upsample" and ctx.opset < 9) else ctx.constant(1, "scales")
        return mode, "asymmetric", "floor", scales, None
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    return mode, coord, nearest, ctx.constant(2, "scales"), ctx.constant(3, "sizes")


@imports("Resize", "Upsample", engine_ops=("upsample_nearest2d", "resize2d"))
def map_resize(ctx: NodeContext):
    """Resize / Upsample: the integer-factor nearest mapper first, this one for what it refuses."""
    from ._ops_tensor import map_resize as map_integer_nearest
    try:
        return map_integer_nearest(ctx)
    except Unsupported as e:
        first = e
    try:
        return map_resize_general(ctx)
    except Unsupported as e:
        raise Unsupported(f"{e}") from first


def map_resize_general(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    s = list(x.shape)
    r = len(s)
    mode, coord, nearest, scales, sizes = _resize_args(ctx, x)
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"mode={mode!r} (only 'nearest' and 'linear')")
    if coord == "tf_crop_and_resize":
        raise Unsupported("coordinate_transformation_mode='tf_crop_and_resize'")
    if coord not in _COORDS:
        raise Invalid(f"coordinate_transformation_mode={coord!r}: one of {', '.join(_COORDS)}, tf_crop_and_resize")
    if mode == "nearest" and nearest not in _ROUNDING:
        raise Invalid(f"nearest_mode={nearest!r}: one of {', '.join(_ROUNDING)}")
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
    full = [1.0] * r  # the scale per axis (output / input), as ONNX defines the coordinate transforms with it
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
        # the output size in float32 arithmetic, as onnxruntime computes it
        with np.errstate(over="ignore"):
            prods = [float(np.float32(n) * np.float32(f)) for n, f in zip(s, full)]
        if not all(math.isfinite(p) and p < 2 ** 62 for p in prods):
            raise Unsupported(f"output size {prods} from scales {vals} (dimensions 1 to {MAX_DIM} are supported)")
        outs = [int(math.floor(p)) for p in prods]
    elif sizes is not None:
        vals = int_vector(sizes, "sizes")
        if len(vals) != len(axes):
            raise Invalid(f"sizes {vals} do not match the {len(axes)} axes {axes}")
        if any(v < 1 for v in vals):
            raise Unsupported(f"sizes {vals} (every output dimension must be >= 1)")
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy not in ("stretch", "not_larger", "not_smaller"):
            raise Invalid(f"keep_aspect_ratio_policy={policy!r}: one of stretch, not_larger, not_smaller")
        ratios = [v / s[a] for a, v in zip(axes, vals)]
        if policy != "stretch":
            rr = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [rr] * len(axes)
        outs = list(s)
        for a, v, q in zip(axes, vals, ratios):
            full[a] = q
            outs[a] = v if policy == "stretch" else int(math.floor(s[a] * q + 0.5))
    else:
        raise Unsupported("neither scales nor sizes is given")
    if r != 4 or outs[0] != s[0] or outs[1] != s[1] or full[0] != 1 or full[1] != 1:
        raise Unsupported(f"scales {full} on a rank-{r} tensor (only the H and W of [N, C, H, W] are resized)")
    max_size = min(MAX_DIM, _common.FOLD_MAX_ELEMENTS)
    if any(o < 1 or o > max_size for o in outs):
        raise Unsupported(f"output size {outs} (dimensions 1 to {max_size} are supported)")
    if int(ctx.attr("antialias", 0)) and mode == "linear" and min(full[2:]) < 1:
        raise Unsupported("antialias=1 when downsampling")
    if int(ctx.attr("exclude_outside", 0)) and mode == "linear":
        raise Unsupported("exclude_outside=1 with mode='linear'")
    attrs = {"mode": R.NEAREST if mode == "nearest" else R.LINEAR, "coord": _COORDS[coord], "size": outs[2:],
             "rh": 1.0 / full[2], "rw": 1.0 / full[3]}
    if mode == "nearest":
        attrs["nearest"] = _ROUNDING[nearest]
    if coord == "align_corners" and scales is not None:
        # ONNX's align_corners divides by the unrounded output length n * scale - 1 (n - 1 over m - 1 only when
        # n * scale is the integer m): the same line through the origin, so asymmetric with that step
        for k, key in ((2, "rh"), (3, "rw")):
            span = s[k] * full[k] - 1
            if span > 0 and not math.isclose(span, outs[k] - 1, rel_tol=1e-12):
                attrs["coord"] = R.ASYMMETRIC
        if attrs["coord"] == R.ASYMMETRIC:
            for k, key in ((2, "rh"), (3, "rw")):
                span = s[k] * full[k] - 1
                attrs[key] = (s[k] - 1) / span if span > 0 else 1.0  # span <= 0: one output pixel, o = 0
    if coord == "half_pixel_symmetric":
        for k, key in ((2, "offset_h"), (3, "offset_w")):
            adjustment = outs[k] / (full[k] * s[k])
            attrs[key] = s[k] / 2 * (1 - adjustment)
    ctx.need("resize2d")
    return ctx.op("resize2d", [x], attrs)


_CODE_COORD = {R.ASYMMETRIC: "asymmetric", R.HALF_PIXEL: "half_pixel", R.ALIGN_CORNERS: "align_corners",
               R.PYTORCH_HALF_PIXEL: "pytorch_half_pixel", R.TF_HALF_PIXEL_FOR_NN: "tf_half_pixel_for_nn"}
_CODE_ROUNDING = {v: k for k, v in _ROUNDING.items()}


def _one(v, default):
    if v is None:
        return default
    return v[0] if isinstance(v, (list, tuple)) else v


def _fresh(ex, hint):
    """A value name no other value of the exported graph has."""
    n, k = hint, 1
    while n in ex.taken:
        n, k = f"{hint}_{k}", k + 1
    ex.taken.add(n)
    return n


@exports("resize2d")
def export_resize2d(ex, ins, attrs, outs, name, I, O):
    xs, ys = ex.shape(ins[0]), ex.shape(outs[0])
    mode = int(_one(attrs.get("mode"), R.LINEAR))
    coord = int(_one(attrs.get("coord"), R.HALF_PIXEL))
    if float(_one(attrs.get("offset_h"), 0.0)) or float(_one(attrs.get("offset_w"), 0.0)):
        ex.problems.append((name, "resize2d", "a shifted source coordinate (half_pixel_symmetric) needs opset 19"))
        return
    kw = {"mode": "nearest" if mode == R.NEAREST else "linear",
          "coordinate_transformation_mode": _CODE_COORD[coord]}
    if mode == R.NEAREST:
        kw["nearest_mode"] = _CODE_ROUNDING[int(_one(attrs.get("nearest"), R.FLOOR))]
    steps = [float(_one(attrs.get(k), n / m)) for k, n, m in (("rh", xs[2], ys[2]), ("rw", xs[3], ys[3]))]
    by_size = coord == R.ALIGN_CORNERS or all(math.isclose(st, n / m, rel_tol=1e-12)
                                              for st, n, m in zip(steps, xs[2:], ys[2:]))
    if by_size:
        shp, nc, sizes = _fresh(ex, f"{name}.shape"), _fresh(ex, f"{name}.nc"), _fresh(ex, f"{name}.sizes")
        ex.node("Shape", [I[0]], [shp], f"{name}.shape")
        ex.node("Slice", [shp, ex.const(f"{name}.zero", np.array([0], np.int64)),
                          ex.const(f"{name}.two", np.array([2], np.int64))], [nc], f"{name}.nc")
        ex.node("Concat", [nc, ex.const(f"{name}.hw", np.array(ys[2:], np.int64))], [sizes], f"{name}.sizes",
                axis=0)
        ex.node("Resize", [I[0], "", "", sizes], O, name, **kw)
        return
    sc = np.array([1.0, 1.0, 1.0 / steps[0], 1.0 / steps[1]], np.float32)
    got = [int(math.floor(float(np.float32(n) * f))) for n, f in zip(xs[2:], sc[2:])]
    if got != list(ys[2:]):
        ex.problems.append((name, "resize2d", f"scales {sc[2:].tolist()} (the steps {steps}) give an output "
                                              f"{got} in float32, not {list(ys[2:])}"))
        return
    ex.node("Resize", [I[0], "", ex.const(f"{name}.scales", sc)], O, name, **kw)
