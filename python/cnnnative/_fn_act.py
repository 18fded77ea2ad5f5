"""cnnnative.functional: the act op family (re-exported by functional.py): relu6, hardtanh, clamp / clip,
hardsigmoid, hardswish, silu, gelu, mish, elu, softplus, prelu, erf, with torch.nn.functional's names and
arguments. Engine ops (ops/activations.cpp): `clip` (min, max), `hardsigmoid` (alpha, beta), `hardswish`, `silu`,
`gelu` (approximate: 0 erf, 1 tanh), `mish`, `elu` (alpha), `softplus` (beta, threshold), `erf`, `prelu` (x,
weight [C] or [1]). `inplace=True` is accepted and means nothing more (the compiler writes in place when it can).
Also attaches Tensor.clamp / Tensor.clip."""
from __future__ import annotations

import math
import numbers

from .graph import Tensor, current

__all__ = ["relu6", "hardtanh", "clamp", "clip", "hardsigmoid", "hardswish", "silu", "gelu", "mish", "elu",
           "softplus", "prelu", "erf"]


def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))[0]


def _tensor(x, fn):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected a Tensor, got {type(x).__name__}")
    return x


def _number(v, what, fn, finite=True):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {what} must be a number, got {type(v).__name__}")
    v = float(v)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{fn}: {what} must be {'finite' if finite else 'a number, not NaN'}, got {v}")
    return v


def _clip(x, lo, hi, fn, name):
    attrs = {}
    if lo is not None and lo != -math.inf:
        attrs["min"] = lo
    if hi is not None and hi != math.inf:
        attrs["max"] = hi
    return _op("clip", [_tensor(x, fn)], attrs, name)


def relu6(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _clip(x, 0.0, 6.0, "relu6", name)


def hardtanh(x: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False, *, name=None) -> Tensor:
    lo = _number(min_val, "min_val", "hardtanh", finite=False)
    hi = _number(max_val, "max_val", "hardtanh", finite=False)
    if lo > hi:
        raise ValueError(f"hardtanh: min_val ({lo}) cannot be greater than max_val ({hi})")
    return _clip(x, lo, hi, "hardtanh", name)


def clamp(x: Tensor, min=None, max=None, *, name=None) -> Tensor:  # noqa: A002 (torch's argument names)
    """torch.clamp with number bounds (min > max gives max everywhere, as torch). The gradient passes strictly
    inside (min, max), as hardtanh's; torch's clamp also passes it at the bounds themselves."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    for v, what in ((min, "min"), (max, "max")):
        if isinstance(v, Tensor):
            raise TypeError(f"clamp: tensor {what} is not supported (numbers only)")
    lo = None if min is None else _number(min, "min", "clamp", finite=False)
    hi = None if max is None else _number(max, "max", "clamp", finite=False)
    return _clip(x, lo, hi, "clamp", name)


clip = clamp


def hardsigmoid(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _op("hardsigmoid", [_tensor(x, "hardsigmoid")], {"alpha": 1.0 / 6.0, "beta": 0.5}, name)


def hardswish(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _op("hardswish", [_tensor(x, "hardswish")], None, name)


def silu(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _op("silu", [_tensor(x, "silu")], None, name)


def gelu(x: Tensor, approximate: str = "none", *, name=None) -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _op("gelu", [_tensor(x, "gelu")], {"approximate": int(approximate == "tanh")}, name)


def mish(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _op("mish", [_tensor(x, "mish")], None, name)


def elu(x: Tensor, alpha: float = 1.0, inplace: bool = False, *, name=None) -> Tensor:
    return _op("elu", [_tensor(x, "elu")], {"alpha": _number(alpha, "alpha", "elu")}, name)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0, *, name=None) -> Tensor:
    b = _number(beta, "beta", "softplus")
    if b == 0:
        raise ValueError("softplus: beta must not be 0")
    t = _number(threshold, "threshold", "softplus", finite=False)
    return _op("softplus", [_tensor(x, "softplus")], {"beta": b, "threshold": t}, name)


def prelu(x: Tensor, weight: Tensor, *, name=None) -> Tensor:
    """y = x > 0 ? x : weight[c] * x over channels c (axis 1); weight [C] or [1] (one slope shared)."""
    _tensor(x, "prelu")
    if not isinstance(weight, Tensor):
        raise TypeError(f"prelu: weight must be a Tensor, got {type(weight).__name__}")
    c = x.shape[1] if x.dim() >= 2 else 1
    if weight.dim() != 1 or weight.shape[0] not in (1, c):
        raise ValueError(f"prelu: weight {list(weight.shape)} must be [1] or [{c}] (one slope per channel of input "
                         f"{list(x.shape)})")
    return _op("prelu", [x, weight], None, name)


def erf(x: Tensor, *, name=None) -> Tensor:
    """torch.erf (ONNX Erf)."""
    return _op("erf", [_tensor(x, "erf")], None, name)


def _clamp_method(self, min=None, max=None):  # noqa: A002
    return clamp(self, min, max)


Tensor.clamp = _clamp_method
Tensor.clip = _clamp_method
