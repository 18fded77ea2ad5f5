"""cnnnative.nn: PyTorch-style modules. A module holds numpy parameters and buffers and writes its
forward() as in PyTorch; compile() traces forward() into a C++ graph and returns a Session. After the
first compile every parameter is a numpy view of the model's ParamStore (one flat block), shared by all
sessions compiled from the model."""
from __future__ import annotations

import contextlib
import math
import threading
import types
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import _core
from . import functional as F
from ._params import Buffer, Parameter, TrackedArray
from .graph import GraphBuilder, Tensor, current

__all__ = ["Module", "Parameter", "Buffer", "Sequential", "ModuleList", "Conv2d", "ConvTranspose2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "BatchNorm2d", "LocalResponseNorm", "Upsample", "ReLU",
           "Sigmoid", "Tanh", "LeakyReLU", "Dropout", "Flatten", "Identity", "functional", "init", "manual_seed",
           "no_init"]

functional = F

# Parameter initialization draws from a generator per thread: manual_seed(s) gives the calling thread its
# own generator seeded with s, so a builder given seed=s (models.py) draws the same numbers whatever other
# threads do, and never moves another thread's stream. A thread that never called manual_seed draws from
# one process-wide default generator (seeded with 0 at import, shared by all such threads).
_default_rng = np.random.default_rng(0)
_init_state = threading.local()  # .rng: this thread's generator once seeded; .skip: inside no_init()


def _rng() -> np.random.Generator:
    """The generator initialization draws from in the calling thread."""
    g = getattr(_init_state, "rng", None)
    return _default_rng if g is None else g


def manual_seed(seed: int) -> None:
    """Seeds parameter initialization for the calling thread (like torch.manual_seed for init, but per
    thread): the modules this thread builds next draw from a generator seeded with `seed`; other threads'
    draws are unaffected. Threads that never call it share a process-wide default generator (seed 0)."""
    _init_state.rng = np.random.default_rng(int(seed))


def _skip_init() -> bool:
    return getattr(_init_state, "skip", False)


@contextlib.contextmanager
def no_init():
    """Modules built inside (in this thread) draw no initial values: weights are left zero (lazily
    allocated) and the init functions do nothing, so building VGG-16 costs nothing. For counting parameters
    or loading a state_dict right after (as torch's skip_init / meta-device construction)."""
    prev, _init_state.skip = _skip_init(), True
    try:
        yield
    finally:
        _init_state.skip = prev


def _uniform(shape, bound):
    if _skip_init():
        return np.zeros(shape, np.float32)
    # float64 draws rounded to float32: the numbers every earlier version drew for a seed
    return _rng().uniform(-bound, bound, size=shape).astype(np.float32)


def _kaiming_uniform(shape, fan_in):
    # torch's default for Conv/Linear weights: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return Parameter(_uniform(shape, bound))


# ---- torch.nn.init counterparts: fill a parameter in place from the seeded generator ----
def _fans(t):
    # torch's _calculate_fan_in_and_fan_out: dims 1 and 0 times the receptive field, whatever the layer
    # (so a ConvTranspose2d weight [C_in, K/groups, R, S] has fan_in = K/groups * R * S)
    if t.ndim < 2:
        raise ValueError(f"init: fan in/out needs a tensor with at least 2 dims, got shape {t.shape}")
    rf = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * rf, t.shape[0] * rf


def _gain(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv2d", "sigmoid", "conv_transpose2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + (0.01 if param is None else param) ** 2))
    raise ValueError(f"init: unsupported nonlinearity {nonlinearity!r}")


def _fill(t, values):
    if not _skip_init():
        t[...] = values
    return t


def _normal(shape, mean, std):
    if _skip_init():
        return np.zeros(shape, np.float32)
    return _rng().standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)


def _init_uniform_(tensor, a=0.0, b=1.0):
    return _fill(tensor, _uniform(tensor.shape, (b - a) / 2) + np.float32((a + b) / 2))


def _init_normal_(tensor, mean=0.0, std=1.0):
    return _fill(tensor, _normal(tensor.shape, mean, std))


def _init_trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """normal(mean, std) truncated to [a, b] (absolute bounds, as torch); out-of-range draws are redrawn."""
    v = _normal(tensor.shape, mean, std)
    bad = (v < a) | (v > b)
    while bad.any():
        v[bad] = _normal(int(bad.sum()), mean, std)
        bad = (v < a) | (v > b)
    return _fill(tensor, v)


def _init_kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan = _fans(tensor)[0 if mode == "fan_in" else 1]
    return _fill(tensor, _uniform(tensor.shape, _gain(nonlinearity, a) * math.sqrt(3.0 / fan)))


def _init_kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan = _fans(tensor)[0 if mode == "fan_in" else 1]
    return _init_normal_(tensor, 0.0, _gain(nonlinearity, a) / math.sqrt(fan))


init = types.SimpleNamespace(
    uniform_=_init_uniform_, normal_=_init_normal_, trunc_normal_=_init_trunc_normal_, constant_=_fill,
    zeros_=lambda t: _fill(t, 0.0), ones_=lambda t: _fill(t, 1.0), kaiming_uniform_=_init_kaiming_uniform_,
    kaiming_normal_=_init_kaiming_normal_, calculate_gain=_gain)
init.__doc__ = ("In-place initializers named as torch.nn.init's, drawing from the generator seeded by "
                "manual_seed (same distributions as torch, not the same numbers).")


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
        old = self._parameters.get(name)
        if (isinstance(value, Parameter) and isinstance(old, TrackedArray) and old._cn_store is not None
                and value is not old and value.shape == old.shape):
            # a parameter already in a ParamStore: the new values go into the store (compiled sessions see them),
            # the attribute stays the store's view
            old[...] = value
            return
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

    def apply(self, fn):
        """Calls fn(module) on every submodule, children first, then self (as torch's Module.apply)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

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
        self.weights_changed()
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    def weights_changed(self) -> None:
        """Tells compiled sessions that parameters or buffers changed, so inference sessions rebuild the
        weights they keep prepared (reordered, BatchNorm folded). Writes through the arrays this module hands
        out (attributes, state_dict() values) do this by themselves; call it after writing through a plain
        ndarray made from one (np.asarray(p), p.view(np.ndarray), torch.from_numpy(p), a memoryview)."""
        stores = {}  # the stores this module's arrays live in (a submodule holds no _store of its own)
        st = self.__dict__.get("_store")
        if st is not None:
            stores[id(st[0])] = st[0]
        for a in list(self.parameters()) + list(self.buffers()):
            s = getattr(a, "_cn_store", None)
            if s is not None:
                stores[id(s)] = s
        for s in stores.values():
            s.touch()

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
                seed: int = 0, backend: str = "cpu", plan_memory: bool = True, optimize: bool = True,
                layout: str = "auto", recompute="none", dtype: str = "float32", cache_weights: bool = True,
                winograd: bool = True, deterministic=None, max_arena_bytes=None):
        """Compiles the model for one input shape: mode 'infer' (eval behaviour of BN/dropout) or
        'train' (one step = forward, loss, backward, optimizer update). optimize: fuse conv/BN/add/ReLU
        chains in inference; layout: 'auto' (oneDNN's blocked layouts between capable kernels) or
        'plain' (NCHW everywhere), for comparison. recompute (training): 'none'; 'cheap' recomputes
        BN/ReLU/add outputs in the backward pass instead of keeping them; 'segments' (or True) keeps only
        segment boundaries (e.g. ResNet block outputs) and recomputes the rest - about half the training
        memory of 'none' for one extra forward pass. dtype='bfloat16' (inference, CPUs with AVX512-BF16):
        activations between convolutions, BN, pooling and eltwise ops are stored and computed in bfloat16
        (float32 accumulation; inputs, outputs and weights stay float32) - about twice as fast, outputs
        within ~1e-2 relative of float32. cache_weights: inference keeps weights prepared (reordered, BN
        folded) between runs, rebuilt when they change (False: every run, for comparison). winograd: 3x3
        stride-1 convolutions between 64+-channel activations run as Winograd F(4x4, 3x3) on AVX-512 CPUs
        (about half the time, relative differences ~1e-5; False: direct convolution). deterministic:
        training results independent of the thread count (default: cn.use_deterministic_algorithms).
        max_arena_bytes: refuse (cn.Error) a session needing more memory than this (default: the machine's
        physical memory). Returns a Session."""
        from .session import Session
        return Session(self, input_shape, mode=mode, optimizer=optimizer, loss=loss, seed=seed,
                       backend=backend, plan_memory=plan_memory, optimize=optimize, layout=layout,
                       recompute=recompute, dtype=dtype, cache_weights=cache_weights,
                       winograd=winograd, deterministic=deterministic, max_arena_bytes=max_arena_bytes)

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


class ModuleList(Module):
    """Holds submodules in a list, named "0", "1", ... (as torch.nn.ModuleList); it has no forward()."""

    def __init__(self, modules=None):
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


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


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d: weight [in_channels, out_channels/groups, R, S], output size
    (H-1)*stride - 2*padding + dilation*(R-1) + output_padding + 1. Init as torch: kaiming_uniform(a=sqrt(5))
    whose fan_in is weight.size(1)*R*S = out_channels/groups*R*S (torch's fan rule), bias U(+-1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError("ConvTranspose2d: only padding_mode='zeros' is supported")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.output_padding, self.dilation, self.groups = _pair(output_padding), _pair(dilation), int(groups)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than either "
                             f"stride {self.stride} or dilation {self.dilation}")
        fan_in = out_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _kaiming_uniform((in_channels, out_channels // groups, *self.kernel_size), fan_in)
        if bias:
            self.bias = _kaiming_uniform((out_channels,), fan_in)

    def forward(self, x):
        b = current()
        return F.conv_transpose2d(x, self._tensor("weight"),
                                  self._tensor("bias") if "bias" in self._parameters else None, self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation, name=b.scope_name())

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + (f", output_padding={self.output_padding}" if any(self.output_padding)
                                             else "")
                + (f", groups={self.groups}" if self.groups > 1 else "")
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


class LocalResponseNorm(Module):
    """torch.nn.LocalResponseNorm: x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k, name=current().scope_name())

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Upsample(Module):
    """torch.nn.Upsample for mode='nearest' with integer scale factors (or a size that is an integer
    multiple of the input); anything else is a clear error at compile."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is supported, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        self.size, self.scale_factor, self.mode = size, scale_factor, mode

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, name=current().scope_name())

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


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
    """torch.nn.AdaptiveAvgPool2d(output_size): any output size (an int, (oh, ow), None keeps that dim);
    1x1 runs as a global average, an exact divisor as avg_pool2d, anything else as adaptive_avg_pool2d."""

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
