"""cnnnative.nn: modules of the reduce op family (re-exported by nn.py): Softmax, LogSoftmax (any dim) and
AdaptiveMaxPool2d (output sizes that divide the input: 1x1, the global max, included)."""
from __future__ import annotations

from . import _fn_reduce as _F
from .graph import current
from .nn import Module, _is_int, _output_size

__all__ = ["Softmax", "LogSoftmax", "AdaptiveMaxPool2d"]


class Softmax(Module):
    """torch.nn.Softmax(dim=None): softmax over `dim` (None: PyTorch's legacy implicit choice, with its warning)."""

    def __init__(self, dim=None):
        super().__init__()
        if dim is not None and not _is_int(dim):
            raise TypeError(f"Softmax: dim must be an int or None, got {type(dim).__name__} {dim!r}")
        self.dim = dim

    def forward(self, x):
        return _F.softmax(x, self.dim, name=current().scope_name())

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """torch.nn.LogSoftmax(dim=None): log-softmax over `dim`."""

    def __init__(self, dim=None):
        super().__init__()
        if dim is not None and not _is_int(dim):
            raise TypeError(f"LogSoftmax: dim must be an int or None, got {type(dim).__name__} {dim!r}")
        self.dim = dim

    def forward(self, x):
        return _F.log_softmax(x, self.dim, name=current().scope_name())

    def extra_repr(self):
        return f"dim={self.dim}"


class AdaptiveMaxPool2d(Module):
    """torch.nn.AdaptiveMaxPool2d(output_size, return_indices=False) for output sizes that divide the input
    exactly (a max pooling with kernel = stride = input / output; (1, 1) is the global max pooling)."""

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        if return_indices:
            raise ValueError("AdaptiveMaxPool2d: return_indices=True is not supported")
        self.output_size = _output_size("AdaptiveMaxPool2d", output_size)
        self.return_indices = return_indices

    def forward(self, x):
        return _F.adaptive_max_pool2d(x, self.output_size, name=current().scope_name())

    def extra_repr(self):
        return f"output_size={self.output_size}"
