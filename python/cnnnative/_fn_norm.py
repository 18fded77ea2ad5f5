"""cnnnative.functional: the norm op family (re-exported by functional.py).

layer_norm (torch's F.layer_norm: over the last len(normalized_shape) dims), layer_norm2d (over dim 1 of an
[N, C, *] tensor, what torchvision's LayerNorm2d computes with two permutes, here one op and no transposes),
group_norm and instance_norm (torch's, without running statistics). All run the engine ops layer_norm /
group_norm (cpp/src/ops/norm.cpp), whose extra outputs (mean, var) only feed the backward pass."""
from __future__ import annotations

from .graph import Tensor, current

__all__ = ["layer_norm", "layer_norm2d", "group_norm", "instance_norm"]


def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))


def _eps(fn, eps):
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: eps must be a float, got {eps!r}") from None
    if not eps >= 0 or eps == float("inf"):
        raise ValueError(f"{fn}: eps must be a finite float >= 0, got {eps}")
    return eps


def _affine(fn, weight, bias, shape):
    if weight is None and bias is not None:
        raise ValueError(f"{fn}: a bias without a weight is not supported (pass a weight of ones)")
    ins = []
    for what, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {what} must be a traced Tensor (a module parameter), got {type(t).__name__}")
        if list(t.shape) != list(shape):
            raise ValueError(f"{fn}: {what} must have shape {list(shape)}, got {list(t.shape)}")
        ins.append(t)
    return ins


def _normalized_shape(v):
    if isinstance(v, int):
        return [int(v)]
    try:
        return [int(d) for d in v]
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {v!r}") from None


def layer_norm(input: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5, *, name=None) -> Tensor:
    """torch.nn.functional.layer_norm: normalizes over the last len(normalized_shape) dims, which must equal
    normalized_shape; weight and bias (optional) have shape normalized_shape."""
    ns = _normalized_shape(normalized_shape)
    s = list(input.shape)
    if not ns or len(ns) > len(s) or s[len(s) - len(ns):] != ns:
        raise ValueError(f"layer_norm: normalized_shape {ns} must be the last dims of the input {s}")
    ins = [input] + _affine("layer_norm", weight, bias, ns)
    attrs = {"axis": len(s) - len(ns), "num_axes": len(ns), "eps": _eps("layer_norm", eps)}
    return _op("layer_norm", ins, attrs, name=name)[0]


def layer_norm2d(input: Tensor, weight=None, bias=None, eps: float = 1e-6, *, name=None) -> Tensor:
    """Layer norm over the channels of an [N, C, *] tensor, per position: torchvision's LayerNorm2d (ConvNeXt),
    i.e. x.permute(0, 2, 3, 1) -> layer_norm over C -> permute back, as one op without transposes. weight and
    bias have shape [C]."""
    s = list(input.shape)
    if len(s) < 2:
        raise ValueError(f"layer_norm2d: expected an input [N, C, *], got {s}")
    ins = [input] + _affine("layer_norm2d", weight, bias, [s[1]])
    attrs = {"axis": 1, "num_axes": 1, "eps": _eps("layer_norm2d", eps)}
    return _op("layer_norm", ins, attrs, name=name)[0]


def group_norm(input: Tensor, num_groups: int, weight=None, bias=None, eps: float = 1e-5, *, name=None) -> Tensor:
    """torch.nn.functional.group_norm: input [N, C, *], C divisible by num_groups; weight and bias [C]."""
    s = list(input.shape)
    if len(s) < 2:
        raise ValueError(f"group_norm: expected an input [N, C, *], got {s}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or s[1] % num_groups:
        raise ValueError(f"group_norm: num_groups must be a positive int dividing the {s[1]} channels of the "
                         f"input {s}, got {num_groups!r}")
    ins = [input] + _affine("group_norm", weight, bias, [s[1]])
    return _op("group_norm", ins, {"groups": int(num_groups), "eps": _eps("group_norm", eps)}, name=name)[0]


def instance_norm(input: Tensor, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5, *, name=None) -> Tensor:
    """torch.nn.functional.instance_norm with the statistics of each sample's channel (use_input_stats=True);
    running statistics are not supported. input [N, C, *] (at least one spatial dim)."""
    if running_mean is not None or running_var is not None or not use_input_stats:
        raise ValueError("instance_norm: running statistics are not supported (use_input_stats=True, "
                         "running_mean=running_var=None only)")
    s = list(input.shape)
    if len(s) < 3:
        raise ValueError(f"instance_norm: expected an input [N, C, *] with at least one spatial dim, got {s}")
    ins = [input] + _affine("instance_norm", weight, bias, [s[1]])
    return _op("group_norm", ins, {"groups": s[1], "eps": _eps("instance_norm", eps)}, name=name)[0]
