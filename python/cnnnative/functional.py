"""Functional ops for use inside forward() while tracing (cnnnative.nn.functional), named as in
torch.nn.functional. Each adds one node to the graph being built."""
from __future__ import annotations

from .graph import Tensor, current


def _pair(v):
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))


def relu(x: Tensor, inplace: bool = False, *, name=None) -> Tensor:
    return _op("relu", [x], name=name)[0]


def sigmoid(x: Tensor, *, name=None) -> Tensor:
    return _op("sigmoid", [x], name=name)[0]


def tanh(x: Tensor, *, name=None) -> Tensor:
    return _op("tanh", [x], name=name)[0]


def leaky_relu(x: Tensor, negative_slope: float = 0.01, inplace: bool = False, *, name=None) -> Tensor:
    return _op("leaky_relu", [x], {"negative_slope": float(negative_slope)}, name=name)[0]


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, name=None) -> Tensor:
    attrs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation), "groups": int(groups)}
    ins = [x, weight] + ([bias] if bias is not None else [])
    return _op("conv2d", ins, attrs, name=name)[0]


def linear(x, weight, bias=None, *, name=None) -> Tensor:
    return _op("linear", [x, weight] + ([bias] if bias is not None else []), name=name)[0]


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, name=None) -> Tensor:
    b = current()
    attrs = {"kernel": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size),
             "padding": _pair(padding), "dilation": _pair(dilation), "ceil_mode": int(ceil_mode),
             "training": int(b.training)}
    return _op("max_pool2d", [x], attrs, name=name)[0]


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *, name=None) -> Tensor:
    attrs = {"kernel": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size),
             "padding": _pair(padding), "ceil_mode": int(ceil_mode), "count_include_pad": int(count_include_pad)}
    return _op("avg_pool2d", [x], attrs, name=name)[0]


def adaptive_avg_pool2d(x, output_size, *, name=None) -> Tensor:
    oh, ow = _pair(output_size) if output_size is not None else list(x.shape[2:])
    h, w = x.shape[2], x.shape[3]
    if (oh, ow) == (1, 1):
        return _op("global_avg_pool", [x], name=name)[0]
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow), name=name)
    raise ValueError(f"adaptive_avg_pool2d: output {oh}x{ow} must divide the input {h}x{w} "
                     "(general adaptive pooling is not implemented yet)")


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5,
               track_running_stats=True, *, name=None) -> Tensor:
    attrs = {"eps": float(eps), "momentum": float(momentum), "training": int(training),
             "track_running_stats": int(track_running_stats)}
    return _op("batch_norm", [x, weight, bias, running_mean, running_var], attrs, name=name)[0]


def dropout(x, p: float = 0.5, training: bool = True, *, name=None) -> Tensor:
    if not training or p == 0:
        return x
    return _op("dropout", [x], {"p": float(p), "training": 1}, name=name)[0]


def softmax(x, dim: int = 1, *, name=None) -> Tensor:
    if dim not in (1, -1) or x.dim() != 2:
        raise ValueError(f"softmax: only dim=1 of a 2-D tensor is supported, got dim={dim} for shape {x.shape}")
    return _op("softmax", [x], name=name)[0]


def cross_entropy(logits, labels, *, name=None) -> Tensor:
    return _op("softmax_cross_entropy", [logits, labels], name=name or "loss")[0]


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)


def add(a, b, *, name=None) -> Tensor:
    return _op("add", [a, b], name=name)[0]
