"""cnnnative.nn: modules of the norm op family (re-exported by nn.py): LayerNorm, LayerNorm2d (torchvision's, as
ConvNeXt uses it: over the channels of NCHW, one op without transposes), GroupNorm, InstanceNorm1d/2d. PyTorch's
names, arguments, parameters (weight ones, bias zeros) and state_dict keys."""
from __future__ import annotations

import numpy as np

from . import _fn_norm as F
from ._params import Parameter
from .graph import current
from .nn import Module, _int_arg

__all__ = ["LayerNorm", "LayerNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]


def _affine_params(module, affine: bool, bias: bool, n: int) -> None:
    """weight (ones) and bias (zeros) of n channels when affine, the bias left None with bias=False (torch's
    keyword); both None without affine."""
    if affine:
        module.weight = Parameter(np.ones(n))
        if bias:
            module.bias = Parameter(np.zeros(n))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class LayerNorm(Module):
    """torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        ns = F._normalized_shape(normalized_shape)
        if not ns or any(d < 1 for d in ns):
            raise ValueError(f"{type(self).__name__}: normalized_shape must be positive sizes, got {ns}")
        self.normalized_shape = tuple(ns)
        self.eps = F._eps(type(self).__name__, eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _affine(self):
        w = self._tensor("weight") if self.weight is not None else None
        b = self._tensor("bias") if self.bias is not None else None
        return w, b

    def forward(self, x):
        w, b = self._affine()
        return F.layer_norm(x, self.normalized_shape, w, b, self.eps, name=current().scope_name())

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LayerNorm2d(LayerNorm):
    """torchvision.models.convnext.LayerNorm2d(num_channels, eps): LayerNorm over the channels of an [N, C, H, W]
    input at every pixel (torchvision permutes to NHWC and back; here it is one op). ConvNeXt builds it with
    eps=1e-6."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__(normalized_shape, eps, elementwise_affine, bias)
        if len(self.normalized_shape) != 1:
            raise ValueError(f"LayerNorm2d: normalized_shape must be the channel count, got {self.normalized_shape}")

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f"layer '{current().scope_name()}' (LayerNorm2d): expected an input [N, "
                             f"{self.normalized_shape[0]}, ...], got {list(x.shape)}")
        w, b = self._affine()
        return F.layer_norm2d(x, w, b, self.eps, name=current().scope_name())


class GroupNorm(Module):
    """torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, *, bias=True) (bias=False: a weight and
    no bias, as torch)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 bias: bool = True):
        super().__init__()
        self.num_groups = _int_arg("GroupNorm", "num_groups", num_groups)
        self.num_channels = _int_arg("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.eps = F._eps("GroupNorm", eps)
        self.affine = bool(affine)
        _affine_params(self, self.affine, bias, self.num_channels)

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"layer '{current().scope_name()}' (GroupNorm): expected an input [N, "
                             f"{self.num_channels}, ...], got {list(x.shape)}")
        w = self._tensor("weight") if self.weight is not None else None
        b = self._tensor("bias") if self.bias is not None else None
        return F.group_norm(x, self.num_groups, w, b, self.eps, name=current().scope_name())

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Module):
    _rank = 4

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, *, bias: bool = True):
        super().__init__()
        name = type(self).__name__
        if track_running_stats:
            raise ValueError(f"{name}: track_running_stats=True is not supported (instance norm here always "
                             "normalizes with each sample's own statistics); use track_running_stats=False")
        self.num_features, self.momentum = _int_arg(name, "num_features", num_features), momentum
        self.eps = F._eps(name, eps)
        self.affine, self.track_running_stats = bool(affine), False
        _affine_params(self, self.affine, bias, self.num_features)

    def forward(self, x):
        if x.dim() != self._rank or x.shape[1] != self.num_features:
            dims = ", ".join(["N", str(self.num_features)] + ["L"] * (self._rank == 3) + ["H", "W"] * (self._rank == 4))
            raise ValueError(f"layer '{current().scope_name()}' ({type(self).__name__}): expected an input [{dims}], "
                             f"got {list(x.shape)}")
        w = self._tensor("weight") if self.weight is not None else None
        b = self._tensor("bias") if self.bias is not None else None
        return F.instance_norm(x, weight=w, bias=b, eps=self.eps, name=current().scope_name())

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """torch.nn.InstanceNorm1d for batched [N, C, L] inputs (track_running_stats=False only)."""
    _rank = 3


class InstanceNorm2d(_InstanceNorm):
    """torch.nn.InstanceNorm2d for batched [N, C, H, W] inputs (track_running_stats=False only)."""
    _rank = 4
