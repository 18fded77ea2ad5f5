"""cnnnative.functional: the reduce op family (re-exported by functional.py).

mean / sum / amax / max over given dims with keepdim (also as Tensor methods: x.mean(...), x.sum(...),
x.amax(...), x.max(...)), softmax / log_softmax on any dim (x.softmax(dim), x.log_softmax(dim)), and
adaptive_max_pool2d for the output sizes that are exact poolings (1x1, the global max, included).

Differences from PyTorch: the engine has no 0-d tensors, so reducing every dim without keepdim gives shape (1,);
max(x, dim) returns (values, indices) with indices None (the engine does not compute argmax indices)."""
from __future__ import annotations

from collections import namedtuple

from .graph import Tensor, current

__all__ = ["mean", "sum", "amax", "max", "softmax", "log_softmax", "adaptive_max_pool2d"]



def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))


def _dims(fn, x, dim):
    """dim (None, an int, or a sequence of ints; None or () = every dim) as a list of distinct axes in [0, rank)."""
    r = len(x.shape)
    if dim is None:
        dims = list(range(r))
    elif isinstance(dim, bool) or not isinstance(dim, (int, tuple, list)):
        raise TypeError(f"{fn}: dim must be an int, a tuple of ints or None, got {dim!r}")
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
        if not dims:
            dims = list(range(r))
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{fn}: dim must hold ints, got {dim!r}")
        if not -r <= d < r:
            raise ValueError(f"{fn}: dim {d} is out of range for a {r}-D tensor of shape {tuple(x.shape)} "
                             f"(expected [{-r}, {r - 1}])")
        d = d + r if d < 0 else d
        if d in out:
            raise ValueError(f"{fn}: dim {d} appears twice in {dim!r}")
        out.append(d)
    return sorted(out)


def _reduce(op, fn, x, dim, keepdim, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected a Tensor, got {type(x).__name__}")
    return _op(op, [x], {"axes": _dims(fn, x, dim), "keepdim": int(bool(keepdim))}, name=name)[0]


def mean(input, dim=None, keepdim: bool = False, *, dtype=None, name=None) -> Tensor:
    """torch.mean(input, dim, keepdim): the mean over `dim` (an int, a tuple, or None for all), summed in float64."""
    if dtype is not None:
        raise ValueError("mean: dtype is not supported (float32 only)")
    return _reduce("reduce_mean", "mean", input, dim, keepdim, name)


def sum(input, dim=None, keepdim: bool = False, *, dtype=None, name=None) -> Tensor:  # noqa: A001
    """torch.sum(input, dim, keepdim), summed in float64."""
    if dtype is not None:
        raise ValueError("sum: dtype is not supported (float32 only)")
    return _reduce("reduce_sum", "sum", input, dim, keepdim, name)


def amax(input, dim=(), keepdim: bool = False, *, name=None) -> Tensor:
    """torch.amax(input, dim, keepdim); the gradient is split evenly between tied maxima, as in PyTorch."""
    return _reduce("reduce_max", "amax", input, dim, keepdim, name)


MaxResult = namedtuple("max", ["values", "indices"])


def max(input, dim=None, keepdim: bool = False, *, name=None):  # noqa: A001
    """torch.max(input) -> the maximum; torch.max(input, dim, keepdim) -> (values, indices) with indices None
    (argmax indices are not computed). The gradient of values is split evenly between ties (amax's rule)."""
    if isinstance(dim, Tensor):
        raise ValueError("max: the elementwise maximum of two tensors is not supported by this function")
    if dim is None:
        return _reduce("reduce_max", "max", input, None, keepdim, name)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"max: dim must be an int, got {dim!r}")
    return MaxResult(_reduce("reduce_max", "max", input, dim, keepdim, name), None)


def _softmax_dim(fn, x, dim, stacklevel=3):
    r = len(x.shape)
    if dim is None:  # PyTorch's legacy implicit choice
        import warnings
        warnings.warn(f"Implicit dimension choice for {fn} has been deprecated. Change the call to include dim=X "
                      "as an argument.", stacklevel=stacklevel)
        dim = 0 if r in (0, 1, 3) else 1
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{fn}: dim must be an int, got {dim!r}")
    if not -r <= dim < r:
        raise ValueError(f"{fn}: dim {dim} is out of range for a {r}-D tensor of shape {tuple(x.shape)} "
                         f"(expected [{-r}, {r - 1}])")
    return dim + r if dim < 0 else dim


def softmax(input, dim=None, _stacklevel=3, dtype=None, *, name=None) -> Tensor:
    """F.softmax(input, dim) over any dim (the row softmax op for dim 1 of a 2-D input, softmax_axis otherwise)."""
    if dtype is not None:
        raise ValueError("softmax: dtype is not supported (float32 only)")
    d = _softmax_dim("softmax", input, dim)
    if len(input.shape) == 2 and d == 1:
        return _op("softmax", [input], name=name)[0]
    return _op("softmax_axis", [input], {"axis": d}, name=name)[0]


def log_softmax(input, dim=None, _stacklevel=3, dtype=None, *, name=None) -> Tensor:
    """F.log_softmax(input, dim): x - max - log(sum exp(x - max)) over any dim, the sum in float64."""
    if dtype is not None:
        raise ValueError("log_softmax: dtype is not supported (float32 only)")
    return _op("log_softmax", [input], {"axis": _softmax_dim("log_softmax", input, dim)}, name=name)[0]


def adaptive_max_pool2d(input, output_size, return_indices: bool = False, *, name=None) -> Tensor:
    """F.adaptive_max_pool2d for output sizes that divide the input exactly (1 or (1, 1): the global max), which
    are max poolings with kernel = stride = input / output; other sizes are refused with the reason."""
    if return_indices:
        raise ValueError("adaptive_max_pool2d: return_indices=True is not supported")
    s = input.shape
    if len(s) != 4:
        raise ValueError(f"adaptive_max_pool2d: expected a 4-D input [N, C, H, W], got shape {tuple(s)}")
    o = [output_size, output_size] if isinstance(output_size, int) else list(output_size)
    if len(o) != 2:
        raise ValueError(f"adaptive_max_pool2d: output_size must be an int or (oh, ow), got {output_size!r}")
    o = [s[2 + i] if v is None else v for i, v in enumerate(o)]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in o):
        raise ValueError(f"adaptive_max_pool2d: output_size must hold positive ints, got {output_size!r}")
    if s[2] % o[0] or s[3] % o[1]:
        raise ValueError(f"adaptive_max_pool2d: output size {tuple(o)} does not divide the input's {s[2]}x{s[3]} "
                         "(only exact divisors, e.g. 1x1, are supported)")
    k = [s[2] // o[0], s[3] // o[1]]
    b = current()
    attrs = {"kernel": k, "stride": k, "padding": [0, 0], "dilation": [1, 1], "ceil_mode": 0,
             "training": int(b.training)}
    return _op("max_pool2d", [input], attrs, name=name)[0]


def _tensor_max(self, dim=None, keepdim=False):
    return max(self, dim, keepdim)


Tensor.mean = lambda self, dim=None, keepdim=False: mean(self, dim, keepdim)
Tensor.sum = lambda self, dim=None, keepdim=False: sum(self, dim, keepdim)
Tensor.amax = lambda self, dim=(), keepdim=False: amax(self, dim, keepdim)
Tensor.max = _tensor_max
Tensor.softmax = lambda self, dim: softmax(self, dim)
Tensor.log_softmax = lambda self, dim: log_softmax(self, dim)
