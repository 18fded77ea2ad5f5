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
    """max(x, 0). inplace (torch's) changes nothing: the memory planner decides what runs in place."""
    return _op("relu", [x], name=name)[0]


def sigmoid(x: Tensor, *, name=None) -> Tensor:
    return _op("sigmoid", [x], name=name)[0]


def tanh(x: Tensor, *, name=None) -> Tensor:
    return _op("tanh", [x], name=name)[0]


def leaky_relu(x: Tensor, negative_slope: float = 0.01, inplace: bool = False, *, name=None) -> Tensor:
    return _op("leaky_relu", [x], {"negative_slope": float(negative_slope)}, name=name)[0]


def same_pads(kernel_size, dilation) -> tuple:
    """padding='same' as torch computes it: (left, right, top, bottom) summing to dilation * (kernel - 1) per dim,
    the odd one after."""
    (kh, kw), (dh, dw) = _pair(kernel_size), _pair(dilation)
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return tw // 2, tw - tw // 2, th // 2, th - th // 2


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, name=None) -> Tensor:
    """torch.nn.functional.conv2d; padding an int, (pad_h, pad_w), 'valid' or 'same' (stride 1)."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"conv2d: Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
        if padding == "valid":
            padding = 0
        else:
            if _pair(stride) != [1, 1]:
                raise ValueError("conv2d: padding='same' is not supported for strided convolutions")
            left, right, top, bottom = same_pads(weight.shape[2:], dilation)
            if (left, top) != (right, bottom):  # an even kernel: torch pads the extra row / column after
                b = current()
                x = pad(x, (left, right, top, bottom), name=b.node_name("pad") if name is None else f"{name}.pad")
                left = top = 0
            padding = (top, left)
    attrs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation), "groups": int(groups)}
    ins = [x, weight] + ([bias] if bias is not None else [])
    return _op("conv2d", ins, attrs, name=name)[0]


def linear(x, weight, bias=None, *, name=None) -> Tensor:
    """torch.nn.functional.linear: y = x W^T + b over the last axis of an x of any rank >= 1."""
    s = list(x.shape)
    ins = [weight] + ([bias] if bias is not None else [])
    if len(s) == 2:
        return _op("linear", [x] + ins, name=name)[0]
    x2 = x.reshape(-1, s[-1]) if len(s) > 2 else x.reshape(1, s[0])
    y = _op("linear", [x2] + ins, name=name)[0]
    return y.reshape(*(s[:-1] + [int(weight.shape[0])]))


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
    """PyTorch's adaptive average pooling: output bin i covers input rows floor(i*H/oh) .. ceil((i+1)*H/oh).
    output_size: int, (oh, ow), with None keeping that input dim. 1x1 runs as global_avg_pool and an exact
    divisor as avg_pool2d (the same numbers); anything else (including oh > H) as adaptive_avg_pool2d."""
    if x.dim() != 4:
        raise ValueError(f"adaptive_avg_pool2d: expected x [N, C, H, W], got {list(x.shape)}")
    h, w = x.shape[2], x.shape[3]
    size = [output_size, output_size] if output_size is None or isinstance(output_size, int) else list(output_size)
    oh, ow = (int(s) if s is not None else d for s, d in zip(size, (h, w)))
    if (oh, ow) == (1, 1):
        return _op("global_avg_pool", [x], name=name)[0]
    if oh > 0 and ow > 0 and h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow), name=name)
    return _op("adaptive_avg_pool2d", [x], {"output": [oh, ow]}, name=name)[0]


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     name=None) -> Tensor:
    """Transposed convolution (torch argument order); weight [C_in, K/groups, R, S], bias [K]."""
    attrs = {"stride": _pair(stride), "padding": _pair(padding), "output_padding": _pair(output_padding),
             "dilation": _pair(dilation), "groups": int(groups)}
    ins = [x, weight] + ([bias] if bias is not None else [])
    return _op("conv_transpose2d", ins, attrs, name=name)[0]


def local_response_norm(x, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *,
                        name=None) -> Tensor:
    """x / (k + alpha/size * sum over `size` neighbouring channels of x^2)^beta, as torch."""
    attrs = {"size": int(size), "alpha": float(alpha), "beta": float(beta), "k": float(k)}
    return _op("lrn", [x], attrs, name=name)[0]


def pad(x, pad, mode: str = "constant", value=None, *, name=None) -> Tensor:
    """torch.nn.functional.pad for a 4-D x [N, C, H, W] in constant mode: pad = (left, right) or (left, right,
    top, bottom), amounts >= 0, filled with value (default 0). Runs as the engine's `pad` op, which the
    compile pass fold_pad folds into a following convolution's (or average pooling's) padding when the value is
    0 and that layer computes the same with its own padding (session.passes() shows it); a pad followed by a
    pad with the same value merges into it. Other modes, ranks, negative amounts or padding of N and C raise ValueError."""
    where = f"layer '{name}': " if name else ""
    if mode != "constant" or x.dim() != 4 or len(pad) not in (2, 4) or min(int(p) for p in pad) < 0:
        from ._fn_shape import pad_nd  # reflect / replicate, other ranks, cropping: the general pad op
        return pad_nd(x, pad, mode, value, name=name)
    if x.dim() != 4:
        raise ValueError(f"{where}pad: expected x [N, C, H, W], got {list(x.shape)}")
    try:
        amounts = [int(p) for p in pad]
    except TypeError:
        raise ValueError(f"{where}pad: pad must be a sequence of ints (left, right[, top, bottom]), got {pad!r}") \
            from None
    if len(amounts) not in (2, 4):
        raise ValueError(f"{where}pad: pad must hold 2 or 4 amounts (left, right[, top, bottom]: only the two "
                         f"spatial dims are padded), got {len(amounts)}")
    if min(amounts) < 0:
        raise ValueError(f"{where}pad: amounts must be >= 0 (cropping is not supported), got {tuple(amounts)}")
    left, right, top, bottom = amounts + [0] * (4 - len(amounts))
    v = 0.0 if value is None else float(value)
    if not any(amounts):
        return x
    return _op("pad", [x], {"pads": [top, left, bottom, right], "value": v}, name=name)[0]


def cat(tensors, dim: int = 0, *, name=None) -> Tensor:
    """Concatenates tensors of one rank along dim (torch.cat; the default dim is torch's, 0)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    rank = tensors[0].dim()
    axis = dim + rank if dim < 0 else dim
    if not 0 <= axis < rank:
        raise ValueError(f"cat: dim {dim} out of range for tensors of rank {rank}")
    if len(tensors) == 1:
        return tensors[0]
    return _op("concat", tensors, {"axis": int(axis)}, name=name)[0]


concat = cat


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5,
               track_running_stats=True, *, sync=False, name=None) -> Tensor:
    """sync=True (SyncBatchNorm): in a data-parallel training session the batch statistics are the whole job's
    (cnnnative.distributed); elsewhere it is plain batch normalization."""
    attrs = {"eps": float(eps), "momentum": float(momentum), "training": int(training),
             "track_running_stats": int(track_running_stats)}
    if sync and training:
        attrs["sync"] = 1
    return _op("batch_norm", [x, weight, bias, running_mean, running_var], attrs, name=name)[0]


def dropout(x, p: float = 0.5, training: bool = True, *, name=None) -> Tensor:
    if not training or p == 0:
        return x
    return _op("dropout", [x], {"p": float(p), "training": 1}, name=name)[0]


def softmax(x, dim: int = 1, *, name=None) -> Tensor:
    if dim not in (1, -1) or x.dim() != 2:
        raise ValueError(f"softmax: only dim=1 of a 2-D tensor is supported, got dim={dim} for shape {x.shape}")
    return _op("softmax", [x], name=name)[0]


def _mean_only(fn, reduction):
    if reduction != "mean":
        raise ValueError(f"{fn}: only reduction='mean' is supported, got {reduction!r}")


def cross_entropy(logits, labels, reduction: str = "mean", *, name=None) -> Tensor:
    _mean_only("cross_entropy", reduction)
    return _op("softmax_cross_entropy", [logits, labels], name=name or "loss")[0]


def _same_shape(fn, a, b):
    if a.shape != b.shape:
        raise ValueError(f"{fn}: input {list(a.shape)} and target {list(b.shape)} must have one shape")


def mse_loss(input, target, reduction: str = "mean", *, name=None) -> Tensor:
    """mean((input - target)^2) over every element, as a [1] tensor."""
    _mean_only("mse_loss", reduction)
    _same_shape("mse_loss", input, target)
    return _op("mse_loss", [input, target], name=name or "loss")[0]


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean", *, name=None) -> Tensor:
    """mean(max(x, 0) - x*t + log(1 + exp(-|x|))) over every element (torch's stable form), as a [1] tensor."""
    _mean_only("binary_cross_entropy_with_logits", reduction)
    _same_shape("binary_cross_entropy_with_logits", input, target)
    return _op("bce_with_logits", [input, target], name=name or "loss")[0]


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)


def add(a, b, *, name=None) -> Tensor:
    return _op("add", [a, b], name=name)[0]


# op families defined in their own modules
from ._fn_act import *  # noqa: E402,F401,F403
from ._fn_binary import *  # noqa: E402,F401,F403
from ._fn_norm import *  # noqa: E402,F401,F403
from ._fn_reduce import *  # noqa: E402,F401,F403
from ._fn_resize import *  # noqa: E402,F401,F403
from ._fn_shape import *  # noqa: E402,F401,F403
