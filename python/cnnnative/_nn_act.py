"""cnnnative.nn: modules of the act op family (re-exported by nn.py), with torch.nn's names, arguments and
extra_repr: ReLU6, Hardtanh, Hardsigmoid, Hardswish, SiLU, GELU, Mish, ELU, Softplus, PReLU."""
from __future__ import annotations

import warnings

import numpy as np

from . import _fn_act as F
from ._params import Parameter
from .graph import current
from .nn import Module

__all__ = ["ReLU6", "Hardtanh", "Hardsigmoid", "Hardswish", "SiLU", "GELU", "Mish", "ELU", "Softplus", "PReLU"]


class _Inplace(Module):
    """inplace is accepted as in PyTorch (nn.SiLU(inplace=True)) and changes nothing: the engine decides itself
    where an activation overwrites its input (the memory planner), so the numbers are the same either way."""
    _fn = None

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        return type(self)._fn(x, name=current().scope_name())

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU6(_Inplace):
    _fn = staticmethod(F.relu6)


class Hardsigmoid(_Inplace):
    _fn = staticmethod(F.hardsigmoid)

    def extra_repr(self):
        return ""  # torch's Hardsigmoid does not show inplace


class Hardswish(_Inplace):
    _fn = staticmethod(F.hardswish)

    def extra_repr(self):
        return ""  # torch's Hardswish does not show inplace


class SiLU(_Inplace):
    _fn = staticmethod(F.silu)


class Mish(_Inplace):
    _fn = staticmethod(F.mish)


class Hardtanh(Module):
    """torch.nn.Hardtanh: x clamped to [min_val, max_val]; min_value / max_value are torch's deprecated names for
    them (used, with torch's DeprecationWarning)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 min_value: float | None = None, max_value: float | None = None):
        super().__init__()
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and rename to `min_val`", DeprecationWarning,
                          stacklevel=2)
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and rename to `max_val`", DeprecationWarning,
                          stacklevel=2)
            max_val = max_value
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
        self.min_val, self.max_val, self.inplace = min_val, max_val, bool(inplace)

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val, name=current().scope_name())

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate, name=current().scope_name())

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ELU(Module):
    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha, self.inplace = alpha, bool(inplace)

    def forward(self, x):
        return F.elu(x, self.alpha, name=current().scope_name())

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Softplus(Module):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        if beta == 0:
            raise ValueError("Softplus: beta must not be 0")
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold, name=current().scope_name())

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    """torch.nn.PReLU(num_parameters=1, init=0.25): a learned slope for x < 0, shared (num_parameters=1) or one
    per channel (axis 1 of the input)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        if isinstance(num_parameters, bool) or not isinstance(num_parameters, (int, np.integer)) \
                or num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be a positive int, got {num_parameters!r}")
        self.num_parameters = int(num_parameters)
        self.init = float(init)
        self.weight = Parameter(np.full(self.num_parameters, self.init, np.float32))

    def forward(self, x):
        c = x.shape[1] if x.dim() >= 2 else 1
        if self.num_parameters not in (1, c):
            raise ValueError(f"layer '{current().scope_name()}' (PReLU): num_parameters={self.num_parameters} "
                             f"does not match the {c} channels of input {list(x.shape)}")
        return F.prelu(x, self._tensor("weight"), name=current().scope_name())

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
