"""cnnnative.nn: modules of the resize op family (re-exported by nn.py): Upsample (every mode of
functional.interpolate, align_corners both ways, sizes or any scale factor), UpsamplingNearest2d and
UpsamplingBilinear2d (align_corners=True), with PyTorch's arguments and repr."""
from __future__ import annotations

import math
import numbers

from . import _fn_resize
from .graph import current
from .nn import Module, _is_int

__all__ = ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]


class Upsample(Module):
    """torch.nn.Upsample: functional.interpolate with the module's size / scale_factor / mode / align_corners.
    Modes 'nearest', 'nearest-exact', 'bilinear' and 'area' of 4-D inputs. align_corners (True or False) only with
    'bilinear': torch allows it for its interpolating modes (linear, bilinear, bicubic, trilinear), of which the
    engine has bilinear, and raises for the others, as this does; size and scale_factor are checked here."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if mode not in _fn_resize._MODES:
            raise ValueError(f"Upsample: mode={mode!r} is not supported; one of "
                             f"{', '.join(map(repr, _fn_resize._MODES))}")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        if align_corners is not None and mode != "bilinear":
            raise ValueError(f"Upsample: align_corners can only be set with mode='bilinear' (got mode={mode!r})")
        if size is not None:
            sizes = list(size) if isinstance(size, (list, tuple)) else [size]
            if len(sizes) not in (1, 2) or not all(_is_int(v) and v >= 1 for v in sizes):
                raise ValueError(f"Upsample: size must be an int or 2 ints (H, W), each >= 1, got {size!r}")
        else:
            factors = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor]
            if len(factors) not in (1, 2) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                     and math.isfinite(v) and v > 0 for v in factors):
                raise ValueError(f"Upsample: scale_factor must be a number or 2 (for H and W), finite and > 0, got "
                                 f"{scale_factor!r}")
        self.size = tuple(size) if isinstance(size, list) else size
        self.scale_factor = (tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (list, tuple))
                             else float(scale_factor) if scale_factor is not None else None)
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, x):
        return _fn_resize.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                                      self.recompute_scale_factor, name=current().scope_name())

    def extra_repr(self):
        what = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
