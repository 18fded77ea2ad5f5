"""cnnnative.nn: PyTorch-style modules. A module holds numpy parameters and buffers and writes its
forward() as in PyTorch; compile() traces forward() into a C++ graph (every module's `training` set to the
compile mode meanwhile) and returns a Session. After the first compile every parameter is a numpy view of the
model's ParamStore (one flat block), shared by all sessions compiled from the model, and from its submodules
(model.features) or Sequential slices compiled after it. Parameters and buffers are read-only outside
`with cn.no_grad():` (= `with model.edit():`); see cnnnative._params."""
from __future__ import annotations

import contextlib
import itertools
import math
import operator
import re
import threading
import types
from collections import abc
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import _core
from . import functional as F
from . import _params
from ._params import Buffer, Parameter, no_grad
from .graph import GraphBuilder, Tensor, current

__all__ = ["Module", "Parameter", "Buffer", "Sequential", "ModuleList", "ModuleDict", "Conv2d", "ConvTranspose2d",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "BatchNorm2d", "SyncBatchNorm", "LocalResponseNorm",
           "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Dropout", "Flatten", "Identity", "functional", "init",
           "manual_seed", "no_init", "no_grad"]

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


def _write(dst, src) -> None:
    """A library write into a parameter or buffer (whatever its read-only flag), then the version bump."""
    _params.write(dst, src)
    store = _params.store_of(dst)
    if store is not None:
        store.touch()


def _fill(t, values):
    # the init functions write as torch's do (under no_grad): parameters need no edit context for them
    if not _skip_init():
        _write(t, values)
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


# ---- module structure: registration rules, the store record, the guard of compiled sessions ----
def _typename(v) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _check_name(kind: str, name) -> None:
    """torch's rules for registered names: a non-empty str without '.' (TypeError / KeyError otherwise)."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
    if "." in name:
        raise KeyError(f"{kind} name can't contain \".\", got: {name}")
    if name == "":
        raise KeyError(f"{kind} name can't be empty string \"\"")


_in_store = _params.in_store


def _as_buffer(value):
    """A buffer's array: a read-only Buffer, float32, C-contiguous (the store's format): the same object when it
    already is one the library hands out, else a view of `value` (a writeable float32 ndarray owning its memory,
    as torch's register_buffer keeps the tensor) or a copy."""
    if isinstance(value, Buffer) and _params.in_store(value):
        return value
    return Buffer(value)


# Every change to a module's registered parameters, buffers or submodules takes a new value from this counter:
# a compiled session compares it with the value it last saw and, when it moved, re-checks its model's
# structure before running (one integer comparison per run otherwise).
_epochs = itertools.count(1)
_epoch = 0


def _structure_changed() -> None:
    global _epoch
    _epoch = next(_epochs)


class _StoreRecord:
    """What Module._ensure_store() made: the ParamStore, its entries (name, shape, trainable) and the array
    objects it installed in the modules (views of the store), to tell later whether they are still the ones."""

    __slots__ = ("store", "sig", "arrays")

    def __init__(self, store, sig, arrays):
        self.store, self.sig, self.arrays = store, sig, arrays


# Every array Module._ensure_store() installs is one entry of its store: the view carries the entry's name
# (_cn_entry), so that a module whose arrays all are such views of one store (a submodule or a Sequential slice of a
# compiled model: torchvision's model.features) compiles onto that store, sharing it with the model's sessions,
# instead of moving the arrays into a store of its own (which would leave the model's sessions on memory that is no
# longer the model's). An array the store moved into a new one (a containing model compiled with a structure of its
# own) points to its successor (_cn_moved_to), so that a session of the old store says why it can no longer run.
def _entry_of(a):
    """(store, entry name) of an array installed by Module._ensure_store() in a live store, else None."""
    store = _params.store_of(a)
    name = getattr(a, "_cn_entry", None) if store is not None else None
    return None if name is None else (store, name)


def _mark(a, attr: str, value) -> None:
    try:
        setattr(a, attr, value)
    except AttributeError:  # a plain ndarray (not one the library hands out): nothing to remember
        pass


def _moves(a):
    """The arrays _ensure_store() moved `a` into, in order (each move marks the old array with its successor)."""
    for _ in range(64):
        a = getattr(a, "_cn_moved_to", None)
        if a is None:
            return
        yield a


def _moved(old, new) -> bool:
    """Whether `new` is where _ensure_store() moved `old` (through any number of moves)."""
    return any(a is new for a in _moves(old))


def _latest(a):
    """The array `a` lives in now: the last one _ensure_store() moved it into, or itself."""
    last = a
    for last in _moves(a):
        pass
    return last


def _structure(model) -> list:
    """The registered structure of a model as compiled: every module, parameter and buffer by name, with the
    objects themselves (compared by identity)."""
    out = []
    for path, m in model.named_modules():
        out.append((("module", path), m))
        d = m.__dict__
        for kind in ("_parameters", "_buffers"):
            for k, v in d[kind].items():
                out.append(((kind[1:-1], f"{path}.{k}" if path else k), v))
    return out


def _describe(old: list, new: list) -> str:
    """What changed between two _structure() lists. Arrays only moved into another store (a model holding them
    compiled since, see _ensure_store) are named as moved when nothing else changed (else they are a consequence of
    the change, which is what is named)."""
    o, n = dict(old), dict(new)
    what, moved = [], []
    for key, v in old:
        if key not in n:
            what.append(f"{key[0]} '{key[1] or '(model)'}' removed")
        elif n[key] is not v:
            if key[0] != "module" and _moved(v, n[key]):
                moved.append(f"{key[0]} '{key[1]}' moved")
            else:
                what.append(f"{key[0]} '{key[1] or '(model)'}' replaced")
    what += [f"{key[0]} '{key[1]}' added" for key, _ in new if key not in o]
    tail = ""
    if not what and moved:
        what = moved
        tail = ("; a model holding these modules was compiled since and moved them into its parameter store, and a "
                "session keeps the store it was compiled with")
    if not what:
        what = ["modules reordered"]
    return ", ".join(what[:6]) + (f" and {len(what) - 6} more" if len(what) > 6 else "") + tail


class StructureWatch:
    """What a compiled session checks before each run: that its model's registered structure is still the one
    it was compiled from. check() returns None while it is (one integer comparison unless some module's
    structure changed since the last look), else a description of the change (a module, parameter or buffer
    added, removed or replaced), for good."""

    __slots__ = ("_model", "_structure", "_seen", "_why")

    def __init__(self, model):
        self._model = model
        self._structure = _structure(model)
        self._seen = _epoch
        self._why = None

    def check(self):
        if self._why is None and self._seen != _epoch:
            seen = _epoch
            now = _structure(self._model)
            old = self._structure
            if len(now) == len(old) and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(now, old)):
                self._seen = seen
            else:
                self._why = _describe(old, now)
                self._model = self._structure = None
        return self._why


# errors raised while a module's forward() is traced (the core's shape errors, the layers' own checks) that get the
# module path and class of the innermost module tracing them (exactly these types: their constructor takes the
# message alone)
_LOCATABLE = (ValueError, TypeError, IndexError, _core.Error)
_NODE = re.compile(r"\(node '([^']*)'\)")


def _label(path: str, cls: str) -> str:
    return f"layer '{path}' ({cls})" if path else f"model ({cls})"


def _locate(msg: str, path: str, cls: str) -> str:
    """msg led by the module it came from: "layer 'layer2.0.conv1' (Conv2d): <msg>" ("model (<Class>): <msg>" for
    the model itself). A message naming its layer already keeps its words (its class added where it lacks one)."""
    if msg.startswith("layer '' ("):  # a layer's own check, traced as the model itself
        return "model " + msg[len("layer '' "):]
    named = f"layer '{path}': "
    if path and msg.startswith(named):
        return f"{_label(path, cls)}: {msg[len(named):]}"
    if msg.startswith("layer '"):
        return msg
    return f"{_label(path, cls)}: {msg}"


def locate_node_error(msg: str, model) -> str:
    """A core error naming a graph node ("op 'conv2d' (node 'layer2.0.conv1/grad_weights'): ..."), raised while a
    session is compiled, led by the module the node came from: node names are module paths, with ".<op>" for the
    ops a forward() calls itself and "/<suffix>" for the nodes the compiler derives (gradients, fused nodes).
    Unchanged when no module is found or the message already names its layer."""
    m = _NODE.search(msg)
    if m is None or msg.startswith("layer '"):
        return msg
    node = m.group(1).split("/")[0]
    best = None
    for path, mod in model.named_modules():
        if path and (node == path or node.startswith(path + ".")) and (best is None or len(path) > len(best[0])):
            best = (path, mod)
    if best is None:
        return msg
    return f"{_label(best[0], type(best[1]).__name__)}: {msg}"


# the modules' training flags are set for the mode being traced and restored after (Module.trace): one trace at a
# time, so that two threads tracing one model in different modes neither see nor restore each other's flags
_trace_lock = threading.RLock()


class Module:
    """Base class of all layers and models, with torch.nn.Module's rules for attributes: assigning a
    Parameter registers a parameter, a Module a submodule, and an array to a registered buffer replaces the
    buffer; None keeps a registered slot (as None, left out of state_dict and of the graph); a plain value
    for a parameter or submodule slot is a TypeError; `del` removes any of them."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_store", None)

    def __getstate__(self):
        # copy.deepcopy / pickle: the copy's arrays own their memory (a ParamStore is not copied); its first
        # compile gives it a store of its own
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # the copied arrays own new memory: they become this copy's own read-only parameters and buffers
        for kind in ("_parameters", "_buffers"):
            d = self.__dict__.get(kind, {})
            for k, v in d.items():
                if isinstance(v, np.ndarray) and not _params.in_store(v):
                    d[k] = _params.adopt(v) if isinstance(v, (Parameter, Buffer)) else Buffer(v)

    # ---- attribute registration ----
    def _forget(self, name, *kinds) -> None:
        d = self.__dict__
        if name in d:
            object.__delattr__(self, name)
        for kind in kinds:
            if name in d[kind]:
                del d[kind][name]
                _structure_changed()
        if "_buffers" in kinds:
            d.get("_non_persistent_buffers_set", set()).discard(name)

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            old = params.get(name)
            if _in_store(old) and not _in_store(value) and value is not old and value.shape == old.shape:
                # the parameter is a view of the model's ParamStore: the new values go into the store (compiled
                # sessions see them) and the attribute stays the store's view
                _write(old, value)
                return
            self._forget(name, "_buffers", "_modules")
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as parameter '{name}' "
                                "(cnnnative.nn.Parameter or None expected)")
            self.register_parameter(name, None)
        else:
            modules = d.get("_modules")
            if isinstance(value, Module):
                if modules is None:
                    raise AttributeError("cannot assign module before Module.__init__() call")
                self._forget(name, "_parameters", "_buffers")
                modules[name] = value
                _structure_changed()
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(f"cannot assign '{_typename(value)}' as child module '{name}' "
                                    "(cnnnative.nn.Module or None expected)")
                modules[name] = None
                _structure_changed()
            else:
                buffers = d.get("_buffers")
                if buffers is not None and name in buffers:
                    if value is not None and not isinstance(value, (np.ndarray, np.generic)):
                        raise TypeError(f"cannot assign '{_typename(value)}' as buffer '{name}' "
                                        "(numpy.ndarray or None expected)")
                    self._set_buffer(name, value)
                else:
                    object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if key in d and name in d[key]:
                return d[key][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if key in d and name in d[key]:
                self._forget(name, key)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        d = self.__dict__
        names = set(super().__dir__())
        for key in ("_parameters", "_buffers", "_modules"):
            names.update(d.get(key, ()))
        return sorted(names)

    def _set_buffer(self, name, value) -> None:
        old = self._buffers.get(name)
        if (value is not None and _in_store(old) and not _in_store(value) and value is not old
                and np.shape(value) == old.shape):
            _write(old, value)  # as for parameters: into the store, the attribute stays its view
            return
        self._buffers[name] = None if value is None else _as_buffer(value)
        _structure_changed()

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Registers a buffer: a float32 array that is not trained (BatchNorm's running statistics). Buffers go
        into the parameter store and the graph as parameters do; persistent=False keeps it out of state_dict()
        (and load_state_dict) only. None registers the name with no array (left out of everything)."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, (np.ndarray, np.generic)):
            raise TypeError(f"cannot assign '{_typename(tensor)}' object to buffer '{name}' "
                            "(numpy.ndarray or None required)")
        self._set_buffer(name, tensor)
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param) -> None:
        """Registers a Parameter (or None: the name stays a parameter slot with no array, as a missing bias)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_typename(param)}' object to parameter '{name}' "
                            "(cnnnative.nn.Parameter or None required)")
        if param is not None:
            if param.dtype != np.float32 or not param.flags.c_contiguous:
                param = Parameter(param)  # the store's format (a Parameter made by arithmetic may be neither)
            _params.adopt(param)  # a Parameter made by arithmetic (w * 2) becomes read-only, as every other
        self._parameters[name] = param
        _structure_changed()

    def add_module(self, name: str, module: "Module | None") -> None:
        """Registers a submodule (or None) under `name`, as attribute assignment does."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        if not isinstance(name, str):
            raise TypeError(f"module name should be a string. Got {type(name).__name__}")
        if "_modules" not in self.__dict__:
            raise AttributeError("cannot assign module before Module.__init__() call")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        _check_name("module", name)
        self._modules[name] = module
        _structure_changed()

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The submodule at a dotted path ("layer1.0.conv1"); "" is the module itself."""
        m = self
        for part in target.split(".") if target else []:
            sub = m._modules.get(part) if isinstance(m, Module) else None
            if sub is None:
                raise AttributeError(f"{type(m).__name__} has no submodule '{part}' (in '{target}')")
            m = sub
        return m

    # ---- traversal ----
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(name, module) for this module and every submodule, depth first; a module reachable by several
        names is given once (under the first) unless remove_duplicate=False."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        if remove_duplicate:
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        """(name, module) of the direct submodules, each module once; None slots are skipped."""
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, kind, prefix, recurse, remove_duplicate):
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for mname, m in mods:
            for k, v in m.__dict__[kind].items():
                if v is None or id(v) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(v))
                yield (f"{mname}.{k}" if mname else k), v

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(name, Parameter) of this module and (recurse) its submodules; an array shared by several modules
        (tied weights) is given once, under its first name."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(name, array) of the buffers, persistent or not."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
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
    def state_dict(self, *, destination=None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, np.ndarray]":
        """Parameters, persistent buffers and BN's num_batches_tracked by name, as torch orders them (each
        module's own, then its children's); a module or array reachable by several names is listed under
        each. The values are the store's views, read-only: write them inside `with cn.no_grad():` (or use
        load_state_dict); take np.array(v) for a copy."""
        self._ensure_tracked()
        sd = OrderedDict() if destination is None else destination
        self._save_to(sd, prefix)
        return sd

    def _save_to(self, sd, prefix: str) -> None:
        d = self.__dict__
        for n, p in d["_parameters"].items():
            if p is not None:
                sd[prefix + n] = p
        skip = d.get("_non_persistent_buffers_set", ())
        for n, b in d["_buffers"].items():
            if b is not None and n not in skip:
                sd[prefix + n] = b
        for n, v in d.get("_extra_state", {}).items():
            sd[prefix + n] = v
        for n, m in d["_modules"].items():
            if m is not None:
                m._save_to(sd, f"{prefix}{n}.")

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
        # every tensor converted and checked before the first one is written: a bad one leaves the model as it was
        ready, bad = {}, []
        for k, arr in own.items():
            if k not in state:
                continue
            src = state[k]
            if not isinstance(src, np.ndarray):
                try:
                    src = np.asarray(src)
                except Exception as e:
                    bad.append(f"{k}: not an array ({type(state[k]).__name__}: {e})")
                    continue
            if arr.dtype.kind == "f":
                if src.dtype.kind != "f" or src.dtype.itemsize not in (2, 4, 8):
                    bad.append(f"{k}: dtype {src.dtype}, expected float16/float32/float64")
                    continue
                with np.errstate(over="ignore", invalid="ignore"):
                    conv = src.astype(arr.dtype)
                if not np.isfinite(conv).all():
                    i = np.unravel_index(int(np.argmin(np.isfinite(conv))), conv.shape) if conv.ndim else ()
                    bad.append(f"{k}: holds values that are not finite in {arr.dtype} (e.g. {src[i]!r} at "
                               f"{list(i)})")
                    continue
            else:  # integer counters (BatchNorm's num_batches_tracked)
                if src.dtype.kind not in "iu" or (src.size and (src.min() < 0 or src.max() > np.iinfo(arr.dtype).max)):
                    bad.append(f"{k}: must hold non-negative integers that fit {arr.dtype}, got {src.dtype}")
                    continue
                conv = src.astype(arr.dtype)
            ready[k] = conv
        if bad:
            raise ValueError("load_state_dict: nothing was loaded: " + "; ".join(bad))
        for k, conv in ready.items():
            _params.write(own[k], conv)
        self.weights_changed()
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    def edit(self):
        """`with model.edit():` — the edit context, cn.no_grad() by another name: inside it the parameters and
        buffers the library hands out are writeable (of every model: the context is process-wide), and leaving
        it makes them read-only again and bumps the version, so inference sessions rebuild prepared weights."""
        return no_grad()

    def weights_changed(self) -> None:
        """Tells compiled sessions that parameters or buffers changed, so inference sessions rebuild the
        weights they keep prepared (reordered, BatchNorm folded). load_state_dict, the optimizer, the init
        functions and leaving `with cn.no_grad():` do this by themselves; call it after writing behind the
        library's back: through raw pointers (C++, ctypes) or through a plain ndarray made from a parameter
        while an edit context was open (np.asarray(p), p.view(np.ndarray), torch.from_numpy(p), a memoryview)
        and written after it closed."""
        stores = {}  # the stores this module's arrays live in (a submodule holds no _store of its own)
        rec = self._store_record()
        if rec is not None:
            stores[id(rec.store)] = rec.store
        for a in list(self.parameters()) + list(self.buffers()):
            s = _params.store_of(a)
            if s is not None:
                stores[id(s)] = s
        for s in stores.values():
            s.touch()

    def _store_record(self):
        st = self.__dict__.get("_store")
        if st is None or isinstance(st, _StoreRecord):
            return st
        # (store, entries) as io.GraphModule sets it: the arrays it installed are views of that store
        store, sig = st
        arrays = [a for _, a in self.named_parameters()] + [a for _, a in self.named_buffers()]
        if len(arrays) != len(sig):
            arrays = [None] * len(sig)
        rec = _StoreRecord(store, [(n, tuple(s), bool(t)) for n, s, t in sig],
                           [a if _params.store_of(a) is store else None for a in arrays])
        object.__setattr__(self, "_store", rec)
        return rec

    def _ensure_tracked(self) -> None:
        """Puts the arrays into a store unless every one already is a view of one (a submodule of a compiled
        model keeps its parent's store: its state_dict() must not move them)."""
        for a in itertools.chain(self.parameters(), self.buffers()):
            if not _in_store(a):
                self._ensure_store()
                return

    def _ensure_store(self):
        """The ParamStore this module's sessions run on, every parameter and buffer (non-persistent ones too: the
        graph reads them) a numpy view of it:
          - the store it made before, while the module's arrays are still the views it installed;
          - else the store of another module all of them already are installed views of: a submodule (or a
            Sequential slice holding the same module objects) of a compiled model shares the model's store, so
            its sessions and the model's see each other's updates and neither moves the other's arrays (its
            traced graph names them by that store's entries, see _name_tensors);
          - else a new store (flat blocks) with the current values, whose views replace the module attributes.
            The arrays replaced (and handed out before) keep the old memory: writes to them no longer reach the
            model, so they are retired, read-only for good (see cnnnative._params); sessions compiled on the old
            store (this module's, or another model's holding the same arrays) refuse to run (StructureWatch)."""
        entries = [(n, a, True) for n, a in self.named_parameters()] + \
                  [(n, a, False) for n, a in self.named_buffers()]
        sig = [(n, tuple(a.shape), t) for n, a, t in entries]
        rec = self._store_record()
        if rec is not None and rec.sig == sig and all(a is b for (_, a, _), b in zip(entries, rec.arrays)):
            self._name_tensors(by_entry=False)
            return rec.store
        shared = self._shared_store(entries)
        if shared is not None and (rec is None or shared is not rec.store):
            if rec is not None:  # its own store holds none of its arrays any more (a model holding it moved them)
                object.__setattr__(self, "_store", None)
            self._name_tensors(by_entry=False)
            return shared
        store = _core.ParamStore([(n, list(s), t) for n, s, t in sig])
        views = {}
        for n, a, _ in entries:
            view = store.array(n)  # a read-only Parameter (trainable entries) or Buffer over the store
            _params.write(view, a)
            view._cn_entry = n
            _mark(a, "_cn_moved_to", view)
            views[id(a)] = view
        for m in self.modules():
            for kind in ("_parameters", "_buffers"):
                d = m.__dict__[kind]
                for k, v in d.items():
                    if v is not None:
                        d[k] = views[id(v)]
        object.__setattr__(self, "_store", _StoreRecord(store, sig, [views[id(a)] for _, a, _ in entries]))
        # the replaced arrays (and this model's previous store) are no longer the model's memory: writes to them
        # would be lost, so they turn read-only for good
        _params.retire([a for _, a, _ in entries], rec.store if rec is not None else None)
        store.touch()
        _structure_changed()  # the arrays are new objects: sessions of other models holding them re-check
        self._name_tensors(by_entry=False)
        return store

    @staticmethod
    def _shared_store(entries):
        """The store every array of `entries` is an installed view of (each its own entry), or None."""
        store, names = None, set()
        for _, a, _ in entries:
            e = _entry_of(a)
            if e is None or (store is not None and e[0] is not store) or e[1] in names:
                return None
            store = e[0]
            names.add(e[1])
        return store

    def _name_tensors(self, by_entry: bool = True) -> None:
        """Names each module for tracing (its path in this module) and each of its parameters/buffers for the
        graph: by the store entry it is a view of (by_entry: what a graph compiled on that store must call it;
        for a module on its own store that is its first name here, for a submodule sharing a model's store the
        model's name), else by its first name here (what state_dict() calls it), so a module or array reachable
        by several names is one graph parameter. _ensure_store() leaves the names state_dict() gives (the ONNX
        exporter's); trace() and every graph built for a store name by entry."""
        first = {}
        for n, a in itertools.chain(self.named_parameters(), self.named_buffers()):
            if id(a) not in first:
                e = _entry_of(a) if by_entry else None
                first[id(a)] = n if e is None else e[1]
        for path, m in self.named_modules():
            object.__setattr__(m, "_trace_name", path)
            names = {}
            for kind in ("_parameters", "_buffers"):
                for k, v in m.__dict__[kind].items():
                    if v is not None:
                        names[k] = first[id(v)]
            object.__setattr__(m, "_tensor_names", names)

    # ---- modes ----
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        object.__setattr__(self, "training", mode)
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- tracing ----
    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args):
        b = current()
        name = getattr(self, "_trace_name", None)
        path = name if name is not None else b.scope_name()
        with b.scope(path):
            try:
                return self.forward(*args)
            except _LOCATABLE as e:
                if type(e) not in _LOCATABLE or getattr(e, "_cn_located", False):
                    raise
                located = type(e)(_locate(str(e), path, type(self).__name__))
                located._cn_located = True
                raise located.with_traceback(e.__traceback__) from None

    def _tensor(self, attr: str) -> Tensor:
        """The traced value of one of this module's parameters or buffers."""
        b = current()
        if attr in self._parameters:
            a, trainable = self._parameters[attr], True
        elif attr in self._buffers:
            a, trainable = self._buffers[attr], False
        else:
            raise AttributeError(f"layer '{b.scope_name()}' ({type(self).__name__}) has no parameter or buffer "
                                 f"'{attr}'")
        if a is None:
            raise ValueError(f"layer '{b.scope_name()}' ({type(self).__name__}): '{attr}' is None")
        full = self.__dict__.get("_tensor_names", {}).get(attr)
        if full is None:
            full = f"{self._trace_name}.{attr}" if self._trace_name else attr
        return b.param(full, a.shape, trainable)

    @contextlib.contextmanager
    def _training_as(self, training: bool):
        """Every module's `training` flag set to `training` inside (as model.train(training) would set them), each
        restored to what it was when left, also on an exception."""
        saved = [(m, m.__dict__.get("training", True)) for m in self.modules()]
        try:
            for m, _ in saved:
                object.__setattr__(m, "training", bool(training))
            yield
        finally:
            for m, was in saved:
                object.__setattr__(m, "training", was)

    def trace(self, input_shape, training: bool, by_entry: bool = True) -> tuple[GraphBuilder, Tensor, Tensor]:
        """Traces forward() for one input shape, in training mode or not. While forward() runs, every module's
        `training` is `training` (PyTorch's semantics of compiling for that mode: `F.dropout(x, p,
        training=self.training)` and `if self.training:` branches follow the mode, as the built-in Dropout and
        BatchNorm2d do); afterwards each module's flag is what it was before (model.train()/eval() unchanged).
        by_entry: the graph names parameters by the store entries they are views of (what a session on that store
        needs); False: by their names in this module (state_dict()'s, for a file of this module alone)."""
        with _trace_lock, self._training_as(training):
            return self._trace(input_shape, training, by_entry)

    def _trace(self, input_shape, training: bool, by_entry: bool = True) -> tuple[GraphBuilder, Tensor, Tensor]:
        self._name_tensors(by_entry)
        b = GraphBuilder(training)
        with b:
            x = b.input("x", input_shape)
            y = self(x)
        if not isinstance(y, Tensor):
            raise TypeError(f"forward() must return one Tensor, got {type(y).__name__}")
        return b, x, y

    def compile(self, input_shape=None, mode: str = "infer", optimizer=None, loss: str | None = None,
                seed: int = 0, backend: str = "cpu", plan_memory: bool = True, optimize: bool = True,
                layout: str = "auto", recompute=None, dtype: str = "float32", cache_weights: bool = True,
                winograd: bool = True, deterministic=None, max_arena_bytes=None, strict: bool = False,
                dump_passes=None, device=None, tf32: bool = True, cuda_graphs: bool = True,
                distributed: bool = False, memory_budget=None, calibration=None,
                calibration_method: str = "minmax", batch_pieces: bool = True):
        """Compiles the model for one input shape: mode 'infer' (eval behaviour of BN/dropout) or
        'train' (one step = forward, loss, backward, optimizer update). input_shape: the full shape (N, C, H, W),
        or a batch size N for a model that declares its input shape (an `input_shape` attribute (1, C, H, W), as
        the zoo models do), or None for the declared shape itself. mode='train' needs an optimizer
        (cn.optim.SGD/Adam/AdamW); loss ('cross_entropy' by default, 'mse', 'bce_with_logits') and optimizer
        apply to training only (given with mode='infer', a ValueError). optimize: fuse conv/BN/add/ReLU
        chains in inference; layout: 'auto' (oneDNN's blocked layouts between capable kernels) or
        'plain' (NCHW everywhere), for comparison. recompute (training): None/'auto' (the default) plans
        'none', 'cheap' and 'lean' and takes the smallest arena (more recomputation only for at least 1/16 less;
        memory_report()['recompute'] says which; 'lean' for the ResNets). 'lean': BN/ReLU/add outputs, convolutions and pooling of few flops per output byte ('lean:<flops per
        byte>' sets the threshold; 'lean' = 80) and every other multi-reader value (ResNet block outputs) are
        recomputed in the backward pass instead of kept - ResNet-50 b16: about 0.4x the arena of 'none' for a
        few % of step time; 'none' (or False) keeps every activation the backward pass reads; 'cheap' recomputes
        BN/ReLU/add outputs only; 'segments' (or True) keeps only segment boundaries (e.g. ResNet block
        outputs) and recomputes the rest - about a third of the memory of 'none' for one extra forward pass.
        memory_budget (training, bytes): picks the least recomputation (none, cheap, lean at rising
        thresholds, segments) whose arena + parameters, buffers, gradients and optimizer state fit; cn.Error
        naming the smallest reachable size when none does (give recompute or memory_budget, not both). dtype='bfloat16' (inference, CPUs with AVX512-BF16):
        activations between convolutions, BN, pooling and eltwise ops are stored and computed in bfloat16
        (float32 accumulation; inputs, outputs and weights stay float32) - about twice as fast, outputs
        within ~1e-2 relative of float32. cache_weights: inference keeps weights prepared (reordered, BN
        folded) between runs, rebuilt when they change (False: every run, for comparison). winograd: 3x3
        stride-1 convolutions between 64+-channel activations run as Winograd F(4x4, 3x3) on AVX-512 CPUs
        (about half the time, relative differences ~1e-5; False: direct convolution). deterministic:
        training results independent of the thread count (default: cn.use_deterministic_algorithms).
        max_arena_bytes: refuse (cn.Error) a session needing more memory than this (default: the machine's
        physical memory). strict: refuse (cn.Error) a session in which a node would run an op's naive
        reference kernel on the cpu backend (by default that warns once; session.kernels() lists what runs
        each node). dump_passes: a folder to write the graph into after each compile pass. device: 'cpu'
        (default) or 'cuda' (the GPU backend: cuDNN/cuBLAS, one device arena; numpy in and out as on the CPU; raises
        cn.Error saying what is missing on a machine without GPU, driver or libraries). tf32 (cuda): float32
        convolutions and matrix products may use TF32 tensor cores (PyTorch's default for cuDNN); False: full
        float32. cuda_graphs (cuda): after the first run, each run's kernels are recorded once as CUDA graphs and
        replayed. distributed (mode='train', under mpirun; cnnnative.distributed): every step averages the
        gradients over the processes before the update (docs/distributed.md). Returns a Session. forward() is traced
        with every module's `training` set to the mode (True for 'train', False for 'infer'; each restored after),
        so `self.training` in user code follows the mode as the built-in Dropout and BatchNorm2d do. The session
        shares the model's parameters and buffers (one ParamStore; a submodule or Sequential slice of a compiled
        model shares that model's store, so their sessions see each other's updates); it refuses to run (cn.Error)
        once a module, parameter or buffer of the model was added, removed or replaced: compile again. Plain attributes a forward() reads (a stride, a flag) are
        traced as constants at compile, as torch.jit.trace does. dtype='int8' (inference): int8 post-training
        quantization calibrated on `calibration` (an iterable of input batches) with `calibration_method`
        ('minmax', 'percentile', 'entropy'); the same as cnnnative.quantize(model, calibration).compile(...).
        batch_pieces (inference, cpu, automatic thread count): on a machine other processes keep busy, a run may
        split its batch into pieces that single-threaded workers take as they become free, when the model treats
        samples independently and that runs faster (session.batch_pieces tells what the last run did). Training
        (cpu, float32, 2+ threads): a small model (at most 2^20 parameters) that treats samples independently up
        to its mean loss (no BatchNorm or Dropout in training mode) runs each step as one equal piece of the batch
        per thread (at least 8 samples each), every piece's forward and backward pass on one thread, and averages
        the pieces' gradients before the update; results equal a whole-batch step's to float rounding. False:
        always the whole batch."""
        from .session import Session
        if dtype == "int8":
            if mode != "infer":
                raise ValueError("compile: dtype='int8' is post-training quantization for inference; it cannot "
                                 f"train (mode={mode!r}): train in float32, then quantize")
            if calibration is None:
                raise ValueError("compile: dtype='int8' needs calibration data: compile(..., dtype='int8', "
                                 "calibration=batches) with an iterable of input batches (or cnnnative.quantize)")
            unsupported = [k for k, v, d in (("optimize", optimize, True), ("layout", layout, "auto"),
                                             ("cache_weights", cache_weights, True),
                                             ("recompute", recompute not in (None, False, "none", "auto"), False),
                                             ("memory_budget", memory_budget, None),
                                             ("deterministic", bool(deterministic), False),
                                             ("distributed", distributed, False)) if v != d]
            if unsupported:
                raise ValueError(f"compile: dtype='int8' does not take {', '.join(unsupported)} (the int8 session "
                                 "needs the fused, nhwc int8 kernels)")
            from .quantize import quantize
            q = quantize(self, calibration, method=calibration_method)
            if input_shape is None:
                input_shape = q.input_shape
            return q.compile(input_shape, backend=backend, plan_memory=plan_memory, seed=seed, winograd=winograd,
                             max_arena_bytes=max_arena_bytes, strict=strict, dump_passes=dump_passes, device=device,
                             tf32=tf32, cuda_graphs=cuda_graphs, batch_pieces=batch_pieces)
        if calibration is not None:
            raise ValueError(f"compile: calibration applies to dtype='int8' only, got dtype={dtype!r}")
        return Session(self, input_shape, mode=mode, optimizer=optimizer, loss=loss, seed=seed,
                       backend=backend, plan_memory=plan_memory, optimize=optimize, layout=layout,
                       recompute=recompute, dtype=dtype, cache_weights=cache_weights,
                       winograd=winograd, deterministic=deterministic, max_arena_bytes=max_arena_bytes,
                       strict=strict, dump_passes=dump_passes, device=device, tf32=tf32, cuda_graphs=cuda_graphs,
                       distributed=distributed, memory_budget=memory_budget, batch_pieces=batch_pieces)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")


def _renumber(module: Module, mods) -> None:
    """Re-registers `mods` as module's children "0", "1", ... (after an insert or a delete)."""
    d = module._modules
    d.clear()
    for i, m in enumerate(mods):
        d[str(i)] = m
    _structure_changed()


def _position(module: Module, idx) -> int:
    n = len(module._modules)
    i = operator.index(idx)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {idx} is out of range")
    return i


class _Indexed(Module):
    """What Sequential and ModuleList share: submodules addressed by position (negative counts from the end),
    assignment and deletion by position or slice (deletion renumbers "0", "1", ...), len, iteration, pop."""

    def _key(self, idx) -> str:
        return list(self._modules)[_position(self, idx)]

    def __setitem__(self, idx, module):
        setattr(self, self._key(idx), module)

    def __delitem__(self, idx):
        for k in list(self._modules)[idx] if isinstance(idx, slice) else [self._key(idx)]:
            delattr(self, k)
        _renumber(self, list(self._modules.values()))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def pop(self, idx):
        m = self[idx]
        del self[idx]
        return m


class Sequential(_Indexed):
    """torch.nn.Sequential: runs its modules in order. Built from modules (named "0", "1", ...) or from one
    OrderedDict (their names). Indexing is by position; a slice is a Sequential keeping the names; insert,
    del and pop renumber the modules "0", "1", ... as torch's deletion does."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (OrderedDict, dict)):
            for k, m in args[0].items():
                self.add_module(k, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._key(idx)]

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index: int, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        n = len(self._modules)
        i = operator.index(index)
        if not -n <= i <= n:
            raise IndexError(f"index {index} is out of range")
        mods = list(self._modules.values())
        mods.insert(i + n if i < 0 else i, module)
        _renumber(self, mods)
        return self

    def extend(self, modules) -> "Sequential":
        for m in modules:
            self.append(m)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(_Indexed):
    """Holds submodules in a list, named "0", "1", ... (as torch.nn.ModuleList); it has no forward().
    Indexing is by position (negative counts from the end; a slice is a ModuleList); insert follows
    list.insert (torch's fails on negative indices); insert, del and pop renumber."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self += modules

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._key(idx)]

    def __iadd__(self, modules) -> "ModuleList":
        return self.extend(modules)

    def __add__(self, other) -> "ModuleList":
        return ModuleList(list(self) + list(other))

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        if not isinstance(modules, abc.Iterable):
            raise TypeError(f"ModuleList.extend should be called with an iterable, but got {type(modules).__name__}")
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        mods = list(self._modules.values())
        mods.insert(operator.index(index), module)
        _renumber(self, mods)


class ModuleDict(Module):
    """Holds submodules by name (as torch.nn.ModuleDict), in insertion order; it has no forward(). Keys follow
    the rules of module names (str, no '.', not empty, not an existing attribute such as 'keys')."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]
        _structure_changed()

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def clear(self) -> None:
        self._modules.clear()
        _structure_changed()

    def pop(self, key: str) -> Module:
        m = self[key]
        del self[key]
        return m

    def update(self, modules) -> None:
        """Adds (or replaces) modules from a mapping, a ModuleDict or an iterable of (key, module) pairs."""
        if not isinstance(modules, abc.Iterable):
            raise TypeError("ModuleDict.update should be called with an iterable of key/value pairs, but got "
                            f"{type(modules).__name__}")
        if isinstance(modules, (abc.Mapping, ModuleDict)):
            for k, m in modules.items():
                self[k] = m
            return
        for j, pair in enumerate(modules):
            if not isinstance(pair, abc.Iterable):
                raise TypeError(f"ModuleDict update sequence element #{j} should be Iterable; is "
                                f"{type(pair).__name__}")
            pair = list(pair)
            if len(pair) != 2:
                raise ValueError(f"ModuleDict update sequence element #{j} has length {len(pair)}; 2 is required")
            self[pair[0]] = pair[1]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_arg(layer: str, name: str, v, low: int = 1) -> int:
    """A size argument: an int (not a bool or a float: TypeError, as torch's tensor constructors) >= low."""
    if not _is_int(v):
        raise TypeError(f"{layer}: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < low:
        raise ValueError(f"{layer}: {name} must be {'a positive int' if low == 1 else f'>= {low}'}, got {v}")
    return int(v)


# torch's wording for each pair argument's lower bound (its convolution and pooling kernels' checks)
_PAIR_RULES = {"kernel_size": (1, "kernel size should be greater than zero"),
               "stride": (1, "non-positive stride is not supported"),
               "padding": (0, "negative padding is not supported"),
               "dilation": (1, "non-positive dilation is not supported"),
               "output_padding": (0, "negative output_padding is not supported")}


def _pair(layer: str, name: str, v) -> tuple:
    """A (H, W) argument: an int (both) or 2 ints, each at least the bound of _PAIR_RULES[name]."""
    vals = (v, v) if _is_int(v) else tuple(v) if isinstance(v, (tuple, list)) else None
    if vals is None or not all(_is_int(x) for x in vals):
        raise TypeError(f"{layer}: {name} must be an int or a tuple of 2 ints, got {v!r}")
    if len(vals) != 2:
        raise ValueError(f"{layer}: {name} must be an int or 2 ints (for H and W), got {v!r}")
    low, msg = _PAIR_RULES[name]
    if min(vals) < low:
        raise ValueError(f"{layer}: {msg}, got {name}={v!r}")
    return int(vals[0]), int(vals[1])


def _channels_and_groups(layer: str, in_channels, out_channels, groups) -> tuple:
    cin, cout = _int_arg(layer, "in_channels", in_channels), _int_arg(layer, "out_channels", out_channels)
    if not _is_int(groups):
        raise TypeError(f"{layer}: groups must be an int, got {type(groups).__name__} {groups!r}")
    if groups < 1:
        raise ValueError(f"{layer}: groups must be a positive integer, got {groups}")
    if cin % groups:
        raise ValueError(f"{layer}: in_channels must be divisible by groups, got in_channels={cin}, groups={groups}")
    if cout % groups:
        raise ValueError(f"{layer}: out_channels must be divisible by groups, got out_channels={cout}, "
                         f"groups={groups}")
    return cin, cout, int(groups)


def _expect_channels(module, x, c: int, what: str) -> None:
    """c channels on axis 1 of a convolution's or batch norm's input, or cn.Error in torch's terms (the rank is the
    op's to check: batch_norm also takes [N, C])."""
    name = current().scope_name()
    if x.dim() >= 2 and x.shape[1] != c:
        raise _core.Error(f"layer '{name}' ({type(module).__name__}): {what}, expected input{list(x.shape)} to have "
                          f"{c} channels, but got {x.shape[1]} channels instead")


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
    """torch.nn.Conv2d. padding: an int, (pad_h, pad_w), 'valid' (none) or 'same' (stride 1 only: the output has
    the input's size; with an even kernel the extra row and column go after, as torch pads). padding_mode:
    'zeros', 'reflect' or 'replicate' (those two pad first, then convolve unpadded, as torch); 'circular' is not
    supported."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        layer = type(self).__name__
        self.in_channels, self.out_channels, self.groups = _channels_and_groups(layer, in_channels, out_channels,
                                                                               groups)
        self.kernel_size, self.stride = _pair(layer, "kernel_size", kernel_size), _pair(layer, "stride", stride)
        self.dilation = _pair(layer, "dilation", dilation)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{layer}: padding_mode must be one of {{{', '.join(map(repr, _PADDING_MODES))}}}, but "
                             f"got padding_mode={padding_mode!r}")
        if padding_mode == "circular":
            raise ValueError(f"{layer}: padding_mode='circular' is not supported ('zeros', 'reflect' and 'replicate' "
                             "are)")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{layer}: Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{layer}: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding = padding
            self._pads = F.same_pads(self.kernel_size, self.dilation) if padding == "same" else (0, 0, 0, 0)
        else:
            self.padding = _pair(layer, "padding", padding)
            ph, pw = self.padding
            self._pads = (pw, pw, ph, ph)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _kaiming_uniform((self.out_channels, self.in_channels // self.groups, *self.kernel_size),
                                       fan_in)
        if bias:
            self.bias = _kaiming_uniform((self.out_channels,), fan_in)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        b = current()
        _expect_channels(self, x, self.in_channels,
                         f"given groups={self.groups}, weight of size {list(self.weight.shape)}")
        left, right, top, bottom = self._pads
        pad = (top, left)
        if self.padding_mode != "zeros" and any(self._pads):
            x = F.pad(x, self._pads, mode=self.padding_mode, name=b.node_name("pad"))
            pad = (0, 0)
        elif (left, top) != (right, bottom):  # 'same' with an even kernel: one more row / column after
            x = F.pad(x, self._pads, name=b.node_name("pad"))
            pad = (0, 0)
        return F.conv2d(x, self._tensor("weight"), self._tensor("bias") if self.bias is not None else None,
                        self.stride, pad, self.dilation, self.groups, name=b.scope_name())

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
                + (f", padding={self.padding}" if self.padding not in ((0, 0), "valid") else "")
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (f", groups={self.groups}" if self.groups > 1 else "")
                + ("" if self.bias is not None else ", bias=False")
                + (f", padding_mode={self.padding_mode}" if self.padding_mode != "zeros" else ""))


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d: weight [in_channels, out_channels/groups, R, S], output size
    (H-1)*stride - 2*padding + dilation*(R-1) + output_padding + 1. Init as torch: kaiming_uniform(a=sqrt(5))
    whose fan_in is weight.size(1)*R*S = out_channels/groups*R*S (torch's fan rule), bias U(+-1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__()
        layer = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'{layer}: Only "zeros" padding mode is supported for ConvTranspose2d, got '
                             f"padding_mode={padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = _channels_and_groups(layer, in_channels, out_channels,
                                                                               groups)
        self.kernel_size, self.stride = _pair(layer, "kernel_size", kernel_size), _pair(layer, "stride", stride)
        self.padding, self.dilation = _pair(layer, "padding", padding), _pair(layer, "dilation", dilation)
        self.output_padding = _pair(layer, "output_padding", output_padding)
        self.padding_mode = padding_mode
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"{layer}: output padding must be smaller than either stride or dilation, got "
                             f"output_padding={self.output_padding}, stride={self.stride}, dilation={self.dilation}")
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _kaiming_uniform((self.in_channels, self.out_channels // self.groups, *self.kernel_size),
                                       fan_in)
        if bias:
            self.bias = _kaiming_uniform((self.out_channels,), fan_in)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        b = current()
        _expect_channels(self, x, self.in_channels,
                         f"given transposed=1, weight of size {list(self.weight.shape)}")
        return F.conv_transpose2d(x, self._tensor("weight"),
                                  self._tensor("bias") if self.bias is not None else None, self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation, name=b.scope_name())

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
                + (f", padding={self.padding}" if any(self.padding) else "")
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (f", output_padding={self.output_padding}" if any(self.output_padding) else "")
                + (f", groups={self.groups}" if self.groups > 1 else "")
                + ("" if self.bias is not None else ", bias=False"))


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        layer = type(self).__name__
        self.in_features = _int_arg(layer, "in_features", in_features)
        self.out_features = _int_arg(layer, "out_features", out_features)
        self.weight = _kaiming_uniform((self.out_features, self.in_features), self.in_features)
        if bias:
            self.bias = _kaiming_uniform((self.out_features,), self.in_features)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        if x.dim() < 1 or x.shape[-1] != self.in_features:  # as torch: over the last axis of any rank
            raise ValueError(f"layer '{current().scope_name()}' ({type(self).__name__}): expected input "
                             f"[..., {self.in_features}], got {list(x.shape)}")
        return F.linear(x, self._tensor("weight"), self._tensor("bias") if self.bias is not None else None,
                        name=current().scope_name())

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _eps_arg(layer: str, eps) -> float:
    try:
        v = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{layer}: eps must be a float, got {eps!r}") from None
    if not 0 <= v < math.inf:
        raise ValueError(f"{layer}: eps must be a finite float >= 0, got {eps!r}")
    return v


class BatchNorm2d(Module):
    """torch.nn.BatchNorm2d with affine=True and track_running_stats=True (the others are refused, as are
    momentum=None, torch's cumulative average, and bias=False)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *, bias=True):
        super().__init__()
        layer = type(self).__name__
        if not affine:
            raise ValueError(f"{layer}: affine=False is not supported")
        if not track_running_stats:
            raise ValueError(f"{layer}: track_running_stats=False is not supported")
        if not bias:
            raise ValueError(f"{layer}: bias=False is not supported")
        if momentum is None:
            raise ValueError(f"{layer}: momentum=None (a cumulative moving average) is not supported; give a "
                             "momentum in [0, 1]")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.floating, np.integer)) \
                or not 0 <= momentum <= 1:
            raise ValueError(f"{layer}: momentum must be a number in [0, 1], got {momentum!r}")
        self.num_features = _int_arg(layer, "num_features", num_features)
        self.eps, self.momentum = _eps_arg(layer, eps), float(momentum)
        self.affine, self.track_running_stats = True, True
        self.weight = Parameter(np.ones(self.num_features))
        self.bias = Parameter(np.zeros(self.num_features))
        self.register_buffer("running_mean", np.zeros(self.num_features))
        self.register_buffer("running_var", np.ones(self.num_features))
        object.__setattr__(self, "_extra_state", {"num_batches_tracked": np.zeros((), np.int64)})

    def forward(self, x):
        b = current()
        _expect_channels(self, x, self.num_features, f"running_mean of {self.num_features} elements")
        return F.batch_norm(x, self._tensor("running_mean"), self._tensor("running_var"), self._tensor("weight"),
                            self._tensor("bias"), training=b.training, momentum=self.momentum, eps=self.eps,
                            sync=self._sync, name=b.scope_name())

    _sync = False

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine=True, bias=True, "
                "track_running_stats=True")


class SyncBatchNorm(BatchNorm2d):
    """torch.nn.SyncBatchNorm: batch normalization whose training statistics are computed over the whole
    data-parallel job's batch (every process's shard), not each process's own: in a distributed training
    session (cnnnative.distributed) the per-channel sums are all-reduced in the forward pass (two exchanges of
    C + 1 doubles) and the backward pass (one of 2C + 1), so N processes x batch B train exactly as one process
    x batch N*B. The running statistics come out identical on every process. In a single process, in
    inference and in model files it is BatchNorm2d. process_group is not supported (the whole job
    synchronizes). convert_sync_batchnorm(module) replaces every BatchNorm2d of a model, as torch's does."""

    _sync = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, *, bias=True):
        if process_group is not None:
            raise ValueError("SyncBatchNorm: process_group is not supported (the whole job synchronizes)")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias=bias)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Returns `module` with every BatchNorm2d replaced by a SyncBatchNorm holding the same parameters and
        running statistics (in place for children; a BatchNorm2d passed itself is returned converted), as
        torch.nn.SyncBatchNorm.convert_sync_batchnorm."""
        if process_group is not None:
            raise ValueError("SyncBatchNorm.convert_sync_batchnorm: process_group is not supported")
        if type(module) is BatchNorm2d:
            new = cls(module.num_features, module.eps, module.momentum)
            with no_grad():
                for k in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, k)[...] = getattr(module, k)
            new._extra_state["num_batches_tracked"] = np.array(module._extra_state["num_batches_tracked"])
            new.train(module.training)
            return new
        for name, child in list(module._modules.items()):
            converted = cls.convert_sync_batchnorm(child)
            if converted is not child:
                setattr(module, name, converted)
        return module


class LocalResponseNorm(Module):
    """torch.nn.LocalResponseNorm: x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size = _int_arg(type(self).__name__, "size", size)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k, name=current().scope_name())

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def _pool_args(module, kernel_size, stride, padding, dilation=1):
    """A pooling's kernel_size, stride (None or (): the kernel's), padding and dilation, checked as torch's kernels
    check them; kept as given (an int stays an int, as torch keeps them and shows them in its repr)."""
    layer = type(module).__name__
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel_size
    k, p, d = _pair(layer, "kernel_size", kernel_size), _pair(layer, "padding", padding), _pair(layer, "dilation",
                                                                                                 dilation)
    _pair(layer, "stride", stride)
    for pi, ki, di in zip(p, k, d):
        if 2 * pi > (ki - 1) * di + 1:
            raise ValueError(f"{layer}: pad should be at most half of effective kernel size, but got pad={pi}, "
                             f"kernel_size={ki} and dilation={di}")
    return kernel_size, stride, padding, dilation


def _flag(layer: str, name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_, int, np.integer)):
        raise TypeError(f"{layer}: {name} must be a bool, got {type(v).__name__} {v!r}")
    return bool(v)


class MaxPool2d(Module):
    """torch.nn.MaxPool2d (return_indices=True is not supported)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        layer = type(self).__name__
        if _flag(layer, "return_indices", return_indices):
            raise ValueError(f"{layer}: return_indices=True is not supported")
        self.return_indices = False
        self.kernel_size, self.stride, self.padding, self.dilation = _pool_args(self, kernel_size, stride, padding,
                                                                                dilation)
        self.ceil_mode = _flag(layer, "ceil_mode", ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            name=current().scope_name())

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """torch.nn.AvgPool2d. divisor_override (every window's sum divided by it) is supported where every window's
    own divisor is kernel_size's area: ceil_mode=False with count_include_pad=True or padding 0."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        layer = type(self).__name__
        self.kernel_size, self.stride, self.padding, _ = _pool_args(self, kernel_size, stride, padding)
        self.ceil_mode = _flag(layer, "ceil_mode", ceil_mode)
        self.count_include_pad = _flag(layer, "count_include_pad", count_include_pad)
        if divisor_override is not None:
            divisor_override = _int_arg(layer, "divisor_override", divisor_override)
            if self.ceil_mode or (not self.count_include_pad and any(self.padding)):
                raise ValueError(f"{layer}: divisor_override is supported with ceil_mode=False and "
                                 "count_include_pad=True (or padding 0) only")
        self.divisor_override = divisor_override

    def forward(self, x):
        b = current()
        name = b.scope_name()
        y = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                         name=name if self.divisor_override is None else b.node_name("avg_pool2d"))
        if self.divisor_override is None:
            return y
        # every window was divided by the kernel's area: the sum divided by the override instead
        kh, kw = _pair(type(self).__name__, "kernel_size", self.kernel_size)
        area = kh * kw
        return F.mul(y, area / self.divisor_override, name=name)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _output_size(layer: str, v):
    """An adaptive pool's output_size: an int, or 2 of int / None (None keeps that input dim)."""
    vals = (v, v) if _is_int(v) or v is None else tuple(v) if isinstance(v, (tuple, list)) else None
    if vals is None or len(vals) != 2 or not all(s is None or _is_int(s) for s in vals):
        raise TypeError(f"{layer}: output_size must be an int or 2 ints (None keeps that dim), got {v!r}")
    if any(s is not None and s < 1 for s in vals):
        raise ValueError(f"{layer}: output_size must be positive, got {v!r}")
    return v if _is_int(v) or v is None else tuple(vals)


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d(output_size): any output size (an int, (oh, ow), None keeps that dim);
    1x1 runs as a global average, an exact divisor as avg_pool2d, anything else as adaptive_avg_pool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size, name=current().scope_name())

    def extra_repr(self):
        return f"output_size={self.output_size}"


_INPLACE_DOC = """ inplace is accepted as in PyTorch (nn.ReLU(inplace=True)) and changes nothing: the engine decides
    itself where an activation overwrites its input (the memory planner reuses buffers whose last reader is done;
    inference fuses the activation into the convolution before it), so the numbers are the same either way."""


class _Act(Module):
    _fn = None

    def forward(self, x):
        return type(self)._fn(x, name=current().scope_name())


class ReLU(_Act):
    __doc__ = "torch.nn.ReLU: max(x, 0)." + _INPLACE_DOC
    _fn = staticmethod(F.relu)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = _flag(type(self).__name__, "inplace", inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(_Act):
    _fn = staticmethod(F.sigmoid)


class Tanh(_Act):
    _fn = staticmethod(F.tanh)


class LeakyReLU(Module):
    __doc__ = "torch.nn.LeakyReLU: x for x >= 0, negative_slope * x below." + _INPLACE_DOC

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = _flag(type(self).__name__, "inplace", inplace)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope, name=current().scope_name())

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Dropout(Module):
    __doc__ = ("torch.nn.Dropout: in training, zeroes each element with probability p and scales the rest by "
               "1/(1-p); the identity in inference. p=1 (everything dropped) is not supported." + _INPLACE_DOC)

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        layer = type(self).__name__
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p <= 1:
            raise ValueError(f"{layer}: dropout probability has to be between 0 and 1, but got {p!r}")
        if p == 1:
            raise ValueError(f"{layer}: p=1 (every element dropped) is not supported; p must be in [0, 1)")
        self.p = float(p)
        self.inplace = _flag(layer, "inplace", inplace)

    def forward(self, x):
        return F.dropout(x, self.p, training=current().training, name=current().scope_name())

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        layer = type(self).__name__
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not _is_int(v):
                raise TypeError(f"{layer}: {name} must be an int, got {type(v).__name__} {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    def forward(self, x):
        return x


class ConstantPad2d(Module):
    """torch.nn.ConstantPad2d(padding, value): pads the last two dims of x [N, C, H, W] with value; padding is
    an int (all four sides) or (left, right, top, bottom), each >= 0. A zero pad read only by a Conv2d (or
    an AvgPool2d counting its padding) is folded into that layer's padding at compile when that layer computes
    the same with its own padding (session.passes(): fold_pad)."""

    def __init__(self, padding, value: float):
        super().__init__()
        pads = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        if len(pads) != 4 or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in pads):
            raise ValueError(f"{type(self).__name__}: padding must be an int or 4 ints (left, right, top, bottom) "
                             f">= 0, got {padding!r}")
        self.padding = tuple(int(p) for p in pads)
        self.value = float(value)

    def forward(self, x):
        return F.pad(x, self.padding, value=self.value, name=current().scope_name())

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ZeroPad2d(ConstantPad2d):
    """torch.nn.ZeroPad2d(padding): ConstantPad2d with value 0."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"padding={self.padding}"


__all__ += ["ConstantPad2d", "ZeroPad2d"]


# modules of the op families defined in their own files (they import Module from here: keep this at the end)
from ._nn_act import *  # noqa: E402,F401,F403
from ._nn_binary import *  # noqa: E402,F401,F403
from ._nn_norm import *  # noqa: E402,F401,F403
from ._nn_reduce import *  # noqa: E402,F401,F403
from ._nn_resize import *  # noqa: E402,F401,F403
from ._nn_shape import *  # noqa: E402,F401,F403
from . import _nn_act, _nn_binary, _nn_norm, _nn_reduce, _nn_resize, _nn_shape  # noqa: E402

__all__ += (_nn_act.__all__ + _nn_binary.__all__ + _nn_norm.__all__ + _nn_reduce.__all__ + _nn_resize.__all__
            + _nn_shape.__all__)
