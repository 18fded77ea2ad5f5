"""cnnnative.functional: the resize op family (re-exported by functional.py).

interpolate() with PyTorch's arguments and coordinate rules, for 4-D [N, C, H, W] inputs:
- 'nearest': source index floor(o * r), r = 1 / scale_factor when a scale factor is given (and
  recompute_scale_factor is not True), in / out otherwise, computed in float32 as PyTorch does;
- 'nearest-exact': floor((o + 0.5) * r) (half-pixel centres);
- 'bilinear': align_corners=False (the default): half-pixel, src = (o + 0.5) * r - 0.5 clamped at 0;
  align_corners=True: src = o * (in - 1) / (out - 1);
- 'area': adaptive average pooling to the output size (what PyTorch computes).
Nearest upsampling by integer factors runs on the upsample_nearest2d op (oneDNN, every layout); the rest on
resize2d (ops/resize.cpp)."""
from __future__ import annotations

import math

import numpy as np

from .graph import Tensor, current

__all__ = ["interpolate", "upsample", "upsample_nearest", "upsample_bilinear"]

_MODES = ("nearest", "nearest-exact", "bilinear", "area")
# resize2d's attribute encodings (ops/resize.hpp)
NEAREST, LINEAR = 0, 1
ASYMMETRIC, HALF_PIXEL, ALIGN_CORNERS, PYTORCH_HALF_PIXEL, TF_HALF_PIXEL_FOR_NN = 0, 1, 2, 3, 4
FLOOR, ROUND_PREFER_FLOOR, ROUND_PREFER_CEIL, CEIL = 0, 1, 2, 3


def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))


def _two(v, what, where):
    vals = list(v) if isinstance(v, (list, tuple)) else [v, v]
    if len(vals) != 2:
        raise ValueError(f"{where}interpolate: {what} must be one number or 2 (for H and W), got {v!r}")
    return vals


def _replicates(n, m, r):
    """Whether PyTorch's 'nearest' (floor(o * r) in float32, clamped) repeats each input pixel m // n times,
    so that the integer-factor op upsample_nearest2d computes the same."""
    if m % n:
        return False
    o = np.arange(m, dtype=np.float32)
    idx = np.minimum(np.floor(o * np.float32(r)).astype(np.int64), n - 1)
    return bool(np.array_equal(idx, np.arange(m) // (m // n)))


def interpolate(x, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False, *, name=None) -> Tensor:
    """torch.nn.functional.interpolate for x [N, C, H, W]: mode 'nearest', 'nearest-exact', 'bilinear' or 'area';
    exactly one of size (int or (oh, ow)) and scale_factor (number or (sh, sw), any positive value)."""
    where = f"layer '{name}': " if name else ""
    if mode not in _MODES:
        raise ValueError(f"{where}interpolate: mode={mode!r} is not supported for 4-D input; one of "
                         f"{', '.join(map(repr, _MODES))}")
    if x.dim() != 4:
        raise ValueError(f"{where}interpolate: expected x [N, C, H, W], got {list(x.shape)}")
    if align_corners is not None and mode != "bilinear":
        raise ValueError(f"{where}interpolate: align_corners can only be set with mode='bilinear' (got mode={mode!r})")
    if antialias:
        raise ValueError(f"{where}interpolate: antialias=True is not supported")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{where}interpolate: give exactly one of size and scale_factor")
    n = [int(x.shape[2]), int(x.shape[3])]
    if size is not None:
        sz = _two(size, "size", where)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sz):
            raise ValueError(f"{where}interpolate: size must hold integers >= 1, got {size!r}")
        out = [int(s) for s in sz]
        steps = [None, None]
    else:
        sf = _two(scale_factor, "scale_factor", where)
        try:
            sf = [float(s) for s in sf]
        except (TypeError, ValueError):
            raise ValueError(f"{where}interpolate: scale_factor must be numbers, got {scale_factor!r}") from None
        if not all(math.isfinite(s) and s > 0 for s in sf):
            raise ValueError(f"{where}interpolate: scale_factor must be finite and > 0, got {scale_factor!r}")
        out = [int(math.floor(d * s)) for d, s in zip(n, sf)]
        if min(out) < 1:
            raise ValueError(f"{where}interpolate: scale_factor {scale_factor!r} makes the input {n} an empty "
                             f"output {out}")
        # PyTorch steps by 1 / scale_factor unless asked to recompute it from the sizes
        steps = [None, None] if recompute_scale_factor else [1.0 / s for s in sf]
    if mode == "area":
        from .functional import adaptive_avg_pool2d
        return adaptive_avg_pool2d(x, tuple(out), name=name)
    r = [st if st is not None else d / o for st, d, o in zip(steps, n, out)]
    if mode == "nearest":
        # float32 step of PyTorch's kernel: float(1 / scale) or float(in) / out
        r32 = [np.float32(st) if st is not None else np.float32(d) / np.float32(o) for st, d, o in zip(steps, n, out)]
        if all(_replicates(d, o, rr) for d, o, rr in zip(n, out, r32)):
            return _op("upsample_nearest2d", [x], {"scale": [o // d for d, o in zip(n, out)]}, name=name)[0]
        attrs = {"mode": NEAREST, "coord": ASYMMETRIC, "nearest": FLOOR}
    elif mode == "nearest-exact":
        attrs = {"mode": NEAREST, "coord": HALF_PIXEL, "nearest": ROUND_PREFER_CEIL}
    elif align_corners:
        attrs = {"mode": LINEAR, "coord": ALIGN_CORNERS}
    else:
        attrs = {"mode": LINEAR, "coord": HALF_PIXEL}
    attrs.update(size=out, rh=float(r[0]), rw=float(r[1]))
    return _op("resize2d", [x], attrs, name=name)[0]


def upsample(x, size=None, scale_factor=None, mode: str = "nearest", align_corners=None, *, name=None) -> Tensor:
    """torch.nn.functional.upsample (deprecated there): interpolate."""
    return interpolate(x, size, scale_factor, mode, align_corners, name=name)


def upsample_nearest(x, size=None, scale_factor=None, *, name=None) -> Tensor:
    return interpolate(x, size, scale_factor, mode="nearest", name=name)


def upsample_bilinear(x, size=None, scale_factor=None, *, name=None) -> Tensor:
    """torch.nn.functional.upsample_bilinear: bilinear with align_corners=True."""
    return interpolate(x, size, scale_factor, mode="bilinear", align_corners=True, name=name)
