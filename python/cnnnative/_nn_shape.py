"""cnnnative.nn: modules of the shape op family (re-exported by nn.py): ChannelShuffle, the reflection and
replication pads of 1, 2 and 3 spatial dims (torch's ReflectionPad1d/2d/3d, ReplicationPad1d/2d/3d), and
Permute (torchvision.ops.Permute, which ConvNeXt's blocks use)."""
from __future__ import annotations

import numbers

from . import _fn_shape
from .graph import current
from .nn import Module

__all__ = ["ChannelShuffle", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
           "ReplicationPad2d", "ReplicationPad3d", "Permute"]


class ChannelShuffle(Module):
    """torch.nn.ChannelShuffle(groups): x [N, C, *] -> the channels regrouped (ShuffleNet)."""

    def __init__(self, groups: int):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be an int >= 1, got {groups!r}")
        self.groups = int(groups)

    def forward(self, x):
        return _fn_shape.channel_shuffle(x, self.groups, name=current().scope_name() or None)

    def extra_repr(self):
        return f"groups={self.groups}"


class _PadNd(Module):
    mode = "reflect"
    dims = 2

    def __init__(self, padding):
        super().__init__()
        n = 2 * self.dims
        pads = (padding,) * n if isinstance(padding, numbers.Integral) else tuple(padding)
        if len(pads) != n or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) and p >= 0
                                     for p in pads):
            raise ValueError(f"{type(self).__name__}: padding must be an int or {n} ints >= 0, got {padding!r}")
        self.padding = tuple(int(p) for p in pads)

    def forward(self, x):
        if x.dim() not in (self.dims + 1, self.dims + 2):
            raise ValueError(f"layer '{current().scope_name()}' ({type(self).__name__}): expects a "
                             f"{self.dims + 1}-D or {self.dims + 2}-D input, got {list(x.shape)}")
        return _fn_shape.pad_nd(x, self.padding, self.mode, name=current().scope_name() or None)

    def extra_repr(self):
        return f"{self.padding}"


class ReflectionPad1d(_PadNd):
    mode, dims = "reflect", 1


class ReflectionPad2d(_PadNd):
    mode, dims = "reflect", 2


class ReflectionPad3d(_PadNd):
    mode, dims = "reflect", 3


class ReplicationPad1d(_PadNd):
    mode, dims = "replicate", 1


class ReplicationPad2d(_PadNd):
    mode, dims = "replicate", 2


class ReplicationPad3d(_PadNd):
    mode, dims = "replicate", 3


class Permute(Module):
    """torchvision.ops.Permute(dims): x.permute(*dims) as a layer (ConvNeXt's channels-last blocks)."""

    def __init__(self, dims):
        super().__init__()
        self.dims = [int(d) for d in dims]

    def forward(self, x):
        return _fn_shape.permute(x, self.dims, name=current().scope_name() or None)

    def extra_repr(self):
        return f"dims={self.dims}"
