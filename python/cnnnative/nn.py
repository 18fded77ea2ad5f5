"""cnnnative.nn: PyTorch-style modules. A module holds numpy parameters and buffers and writes its
forward() as in PyTorch; compile() traces forward() into a C++ graph and returns a Session. After the
first compile every parameter is a numpy view of the model's ParamStore (one flat block), shared by all
sessions compiled from the model."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import _core
from . import functional as F
from .graph import GraphBuilder, Tensor, current

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "Linear", "BatchNorm2d", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Dropout", "Flatten", "Identity",
           "functional", "manual_seed"]

functional = F

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seeds parameter initialization (like torch.manual_seed for init)."""
    global _rng
    _rng = np.random.default_rng(int(seed))


class Parameter(np.ndarray):
    """A trainable float32 array (marks module attributes as parameters)."""

    def __new__(cls, data):
        return np.ascontiguousarray(data, dtype=np.float32).view(cls)


def _kaiming_uniform(shape, fan_in):
    # torch's default for Conv/Linear weights: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return Parameter(_rng.uniform(-bound, bound, size=shape))


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_store", None)

    # ---- attribute registration ----
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError("call super().__init__() in the module's __init__ before assigning attributes")
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if key in d and name in d[key]:
                return d[key][name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def register_buffer(self, name: str, value) -> None:
        self._buffers[name] = np.ascontiguousarray(value, dtype=np.float32)

    def add_module(self, name: str, module: "Module") -> None:
        self._modules[name] = module

    # ---- traversal ----
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        return iter(m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for mname, m in self.named_modules(prefix):
            for bname, b in m._buffers.items():
                yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ---- state ----
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        self._ensure_store()
        sd = OrderedDict()
        for mname, m in self.named_modules():
            for n, p in m._parameters.items():
                sd[f"{mname}.{n}" if mname else n] = p
            for n, b in m._buffers.items():
                sd[f"{mname}.{n}" if mname else n] = b
            for n, v in getattr(m, "_extra_state", {}).items():
                sd[f"{mname}.{n}" if mname else n] = v
        return sd

    def load_state_dict(self, state: dict, strict: bool = True):
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mis = [f"{k}: expected {own[k].shape}, got {np.shape(state[k])}"
               for k in own if k in state and tuple(np.shape(state[k])) != own[k].shape]
        if mis or (strict and (missing or unexpected)):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(unexpected))
            if mis:
                parts.append("mis-shaped: " + "; ".join(mis))
            raise ValueError("load_state_dict: " + " | ".join(parts))
        for k, arr in own.items():
            if k in state:
                src = np.asarray(state[k])
                if not np.all(np.isfinite(src)) and arr.dtype.kind == "f":
                    raise ValueError(f"load_state_dict: {k} holds non-finite values")
                np.copyto(arr, src, casting="unsafe")
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    def _ensure_store(self):
        """Moves every parameter and buffer into one ParamStore (flat blocks) and replaces the
        module attributes by numpy views of it. Re-done when the set of parameters changed."""
        params = list(self.named_parameters())
        bufs = list(self.named_buffers())
        sig = [(n, p.shape, True) for n, p in params] + [(n, b.shape, False) for n, b in bufs]
        st = self.__dict__.get("_store")
        if st is not None and st[1] == sig:
            return st[0]
        store = _core.ParamStore([(n, list(s), t) for n, s, t in sig])
        for mname, m in self.named_modules():
            for n in list(m._parameters):
                full = f"{mname}.{n}" if mname else n
                view = store.array(full)
                view[...] = m._parameters[n]
                m._parameters[n] = view.view(Parameter)
            for n in list(m._buffers):
                full = f"{mname}.{n}" if mname else n
                view = store.array(full)
                view[...] = m._buffers[n]
                m._buffers[n] = view
        object.__setattr__(self, "_store", (store, sig))
        return store

    # ---- modes ----
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # ---- tracing ----
    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args):
        b = current()
        name = getattr(self, "_trace_name", None)
        with b.scope(name if name is not None else b.scope_name()):
            return self.forward(*args)

    def _tensor(self, attr: str) -> Tensor:
        """The traced value of one of this module's parameters or buffers."""
        b = current()
        full = f"{self._trace_name}.{attr}" if self._trace_name else attr
        if attr in self._parameters:
            return b.param(full, self._parameters[attr].shape, True)
        return b.param(full, self._buffers[attr].shape, False)

    def trace(self, input_shape, training: bool) -> tuple[GraphBuilder, Tensor, Tensor]:
        for name, m in self.named_modules():
            object.__setattr__(m, "_trace_name", name)
        b = GraphBuilder(training)
        with b:
            x = b.input("x", input_shape)
            y = self(x)
        if not isinstance(y, Tensor):
            raise TypeError(f"forward() must return one Tensor, got {type(y).__name__}")
        return b, x, y

    def compile(self, input_shape, mode: str = "infer", optimizer=None, loss: str = "cross_entropy",
                seed: int = 0, backend: str = "cpu", plan_memory: bool = True):
        """Compiles the model for one input shape: mode 'infer' (eval behaviour of BN/dropout) or
        'train' (one step = forward, loss, backward, optimizer update). Returns a Session."""
        from .session import Session
        return Session(self, input_shape, mode=mode, optimizer=optimizer, loss=loss, seed=seed,
                       backend=backend, plan_memory=plan_memory)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")


class Sequential(Module):
    def __init__(self, *mods):
        super().__init__()
        if len(mods) == 1 and isinstance(mods[0], (OrderedDict, dict)):
            for k, m in mods[0].items():
                self.add_module(k, m)
        else:
            for i, m in enumerate(mods):
                self.add_module(str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError("Conv2d: only padding_mode='zeros' is supported")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups = _pair(padding), _pair(dilation), int(groups)
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _kaiming_uniform((out_channels, in_channels // groups, *self.kernel_size), fan_in)
        if bias:
            self.bias = _kaiming_uniform((out_channels,), fan_in)
        else:
            self.bias = None

    def forward(self, x):
        b = current()
        return F.conv2d(x, self._tensor("weight"), self._tensor("bias") if "bias" in self._parameters else None,
                        self.stride, self.padding, self.dilation, self.groups, name=b.scope_name())

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", groups={self.groups}" if self.groups > 1 else "")
                + ("" if "bias" in self._parameters else ", bias=False"))


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = _kaiming_uniform((out_features, in_features), in_features)
        if bias:
            self.bias = _kaiming_uniform((out_features,), in_features)

    def forward(self, x):
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"layer '{current().scope_name()}' (Linear): expected input [N, {self.in_features}], "
                             f"got {list(x.shape)}")
        return F.linear(x, self._tensor("weight"), self._tensor("bias") if "bias" in self._parameters else None,
                        name=current().scope_name())

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class BatchNorm2d(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        if not affine:
            raise ValueError("BatchNorm2d: affine=False is not supported")
        if not track_running_stats:
            raise ValueError("BatchNorm2d: track_running_stats=False is not supported")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.weight = Parameter(np.ones(num_features))
        self.bias = Parameter(np.zeros(num_features))
        self.register_buffer("running_mean", np.zeros(num_features))
        self.register_buffer("running_var", np.ones(num_features))
        object.__setattr__(self, "_extra_state", {"num_batches_tracked": np.zeros((), np.int64)})

    def forward(self, x):
        b = current()
        return F.batch_norm(x, self._tensor("running_mean"), self._tensor("running_var"), self._tensor("weight"),
                            self._tensor("bias"), training=b.training, momentum=self.momentum, eps=self.eps,
                            name=b.scope_name())

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            name=current().scope_name())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode, self.count_include_pad = padding, ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            name=current().scope_name())


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size, name=current().scope_name())


class _Act(Module):
    _fn = None

    def forward(self, x):
        return type(self)._fn(x, name=current().scope_name())


class ReLU(_Act):
    _fn = staticmethod(F.relu)

    def __init__(self, inplace: bool = False):
        super().__init__()


class Sigmoid(_Act):
    _fn = staticmethod(F.sigmoid)


class Tanh(_Act):
    _fn = staticmethod(F.tanh)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope, name=current().scope_name())


class Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, training=current().training, name=current().scope_name())


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Identity(Module):
    def forward(self, x):
        return x
