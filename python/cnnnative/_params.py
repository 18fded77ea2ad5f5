"""Parameter ownership: the arrays the library hands out for parameters and buffers are read-only numpy views.

Inference sessions keep weights prepared from the ParamStore (reordered into oneDNN's blocked layout, BatchNorm
folded into the convolution) and rebuild them only when the store's version moved (docs/ARCHITECTURE.md,
"Prepared weights"). So every write must be one the library knows about. The arrays handed out — module
attributes (model.conv1.weight), state_dict() values, parameters()/buffers(), ParamStore.array(), GraphModule
tensors — are `Parameter`/`Buffer` views with numpy's WRITEABLE flag off, and every view derived from one
(w[0], w.T, w.reshape(-1), Parameter(w)) is registered too (weak references, __array_finalize__). Writes go:
  - through the library: load_state_dict, the optimizer (in C++), init functions, compile (all bump the version);
  - inside `with cn.no_grad():` (or `with model.edit():`, the same context): entering it makes every registered
    array writeable, leaving it makes them read-only again and bumps the version of every store they view,
    also when the block raised; contexts nest (the arrays stay writeable until the outermost one is left).
A write anywhere else is numpy's own "ValueError: assignment destination is read-only", never a stale weight
(ufunc.at, which numpy 2.4 lets write a read-only array, is refused by Parameter/Buffer themselves). An
inference run inside the context bumps the version first: writes made in the context are seen by runs in it.

Possible because the memory under every handed-out view stays writeable (the store's block, or for a
parameter made before the first compile, an array that owns its memory): numpy lets a view's WRITEABLE flag
be set back to True only while its base is writeable.

Threads: numpy's flag belongs to the array, not to a thread, so the context is process-wide: while any thread
is inside one, the arrays are writeable from every thread, and they turn read-only when the last context (of
any thread) is left. Entering and leaving are serialized by a lock; writes racing with a run of a session on
the same model are the caller's to order, as in PyTorch.

Arrays made before the store existed: the first compile (or state_dict()) moves a model's parameters into one
ParamStore and installs views of it as the module attributes; the arrays it replaced (and views of them) are
retired: read-only for good, even inside the context, since writes to them could no longer reach the model
(item assignment says so in its error). Take the attribute again after compiling.

Not covered: a plain ndarray made from a view while the context is open (np.asarray(p), p.view(np.ndarray),
a memoryview, torch.from_numpy) keeps the writeable flag it was made with; writes through it after the
context, or through raw pointers from C++, need Module.weights_changed() (or ParamStore.touch()) afterwards.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

_lock = threading.RLock()
_depth = 0  # edit contexts open now, all threads together
_live: dict = {}  # id(array) -> weakref of every registered (handed-out or derived) array


class _Root:
    """What a family of arrays (one handed-out array and every view derived from it) views: `store` (the
    ParamStore object, None before the first compile) and whether it was retired."""

    __slots__ = ("store", "retired")

    def __init__(self, store=None):
        self.store = store
        self.retired = False


def _forget(ref, key=None):
    if _live.get(key) is ref:
        _live.pop(key, None)


def _register(a) -> None:
    """Registers `a` (under the lock): the contexts flip its flag; read-only now unless a context is open."""
    key = id(a)
    _live[key] = weakref.ref(a, functools.partial(_forget, key=key))
    if a._cn_root.retired or _depth == 0:
        if a.flags.writeable:
            a.flags.writeable = False
    elif not a.flags.writeable:
        _set_writeable(a)


def _set_writeable(a) -> None:
    try:
        a.flags.writeable = True
    except ValueError:  # its base was made read-only by someone else: it stays read-only (writes raise)
        pass


def _registered():
    return [a for a in (r() for r in list(_live.values())) if a is not None]


def _retired(a) -> bool:
    root = getattr(a, "_cn_root", None)
    return root is not None and root.retired


_RETIRED = ("this array is no longer the model's parameter: compile() or state_dict() moved the model's "
            "parameters into its ParamStore after it was taken; take the parameter again from the module "
            "(e.g. model.fc.weight) and write it inside `with cn.no_grad():`")


class _Owned(np.ndarray):
    """Base of Parameter and Buffer: a float32 array the library owns the writes of (read-only outside an edit
    context). Views derived from a registered array share its root and are registered too; results of
    arithmetic (w * 2, w.copy()) are new memory: writeable arrays of the same class, not registered."""

    _cn_root = None

    def __array_finalize__(self, obj):
        root = getattr(obj, "_cn_root", None)
        # a view of obj's memory joins its family; results of arithmetic are wrapped from new memory (numpy
        # finalizes them with the input as obj): not ours
        if root is None or self.flags.owndata or not np.may_share_memory(self, obj):
            self._cn_root = None
            return
        self._cn_root = root
        with _lock:
            _register(self)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        # numpy's ufunc.at does not check the WRITEABLE flag (numpy 2.4): refuse it as every other write is.
        # The rest is numpy's own (it checks out= arrays itself): run on plain views, which keep the flags.
        written = (inputs[0],) if method == "at" else out or ()
        for o in written:
            if isinstance(o, np.ndarray) and not o.flags.writeable:
                if _retired(o):
                    raise ValueError(f"output array is read-only: {_RETIRED}")
                if method == "at":
                    raise ValueError(f"{ufunc.__name__}.at: output array is read-only")
        args = tuple(x.view(np.ndarray) if isinstance(x, _Owned) else x for x in inputs)
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, _Owned) else o for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if method == "at":
            return None
        if out is not None:  # in-place operators must return the original objects
            return out[0] if len(out) == 1 else out
        cls = type(self)  # results are new memory: arrays of the same class, not registered (as numpy's default)

        def wrap(r):
            return r.view(cls) if type(r) is np.ndarray else r

        return tuple(wrap(r) for r in result) if isinstance(result, tuple) else wrap(result)

    def __setitem__(self, key, value):
        try:
            super().__setitem__(key, value)
        except ValueError as e:
            if _retired(self) and not self.flags.writeable:
                raise ValueError(f"{e}: {_RETIRED}") from None
            raise


class Parameter(_Owned):
    """A trainable float32 array (marks module attributes as parameters); read-only outside
    `with cn.no_grad():`. Parameter(p) of a parameter or buffer array is a view of it (shares its memory);
    of a writeable float32 C-contiguous ndarray that owns its memory, a view of that array (as torch's
    Parameter(t) shares t's storage); of anything else, a float32 copy."""

    def __new__(cls, data):
        return _make(cls, data)


class Buffer(_Owned):
    """A non-trainable float32 array (BatchNorm's running statistics), read-only like a Parameter; made from
    data as Parameter(data)."""

    def __new__(cls, data):
        return _make(cls, data)


def _alive(a) -> bool:
    root = getattr(a, "_cn_root", None)
    return root is not None and not root.retired


def _make(cls, data):
    if isinstance(data, _Owned) and _alive(data) and data.dtype == np.float32 and data.flags.c_contiguous:
        return data.view(cls)  # registered by __array_finalize__: same memory, same root
    # A copy, unlike torch's Parameter(t): the caller's array stays writeable, and after a compile moved the
    # parameter into the store its writes could no longer reach the model, so sharing would lose them silently.
    return adopt(_hidden(np.array(data, dtype=np.float32, order="C")).view(cls))


def _hidden(owner: np.ndarray) -> np.ndarray:
    """A read-only ndarray over owner's memory whose base is a memoryview, not a writeable ndarray: views of it
    (the handed-out arrays) can still be made writeable by the edit context, but `p.base[...] = x` is numpy's
    read-only error instead of a write behind the store's version."""
    h = np.asarray(memoryview(owner))
    h.flags.writeable = False
    return h


def adopt(a, store=None):
    """Makes `a` (a Parameter or Buffer without a root: a fresh view, or the result of arithmetic assigned to a
    module) a handed-out array of its own: registered, read-only outside an edit context. Returns a."""
    if _alive(a):
        return a
    a._cn_root = _Root(store)
    with _lock:
        _register(a)
    return a


def track(array: np.ndarray, store, trainable: bool):
    """A handed-out view of `array` (memory of `store`, writeable): a Parameter when trainable, else a Buffer.
    ParamStore.array() (C++) returns this."""
    v = _hidden(array).view(Parameter if trainable else Buffer)
    return adopt(v, store)


def store_of(a):
    """The ParamStore a handed-out array views, or None (before the first compile, or not one of ours)."""
    root = getattr(a, "_cn_root", None)
    return None if root is None or root.retired else root.store


def in_store(a) -> bool:
    return store_of(a) is not None


def write(dst, src) -> None:
    """Library writes (load_state_dict, init, compile, assigning a Parameter to a store-backed attribute):
    src into dst, whatever dst's flag, through a transient writeable alias. The caller bumps the version."""
    if not isinstance(dst, _Owned) or dst.flags.writeable:
        dst[...] = src
        return
    w = dst.view(np.ndarray)  # a plain view: not registered; its base (the store's block) is writeable
    w.flags.writeable = True
    w[...] = src


def retire(arrays=(), store=None) -> None:
    """Retires the roots of `arrays` (module attributes compile replaced by views of a new store) and every
    root viewing `store` (a model's previous store): their arrays turn read-only for good."""
    with _lock:
        roots = {id(r): r for r in (getattr(a, "_cn_root", None) for a in arrays) if r is not None}
        for a in _registered():
            r = a._cn_root
            if store is not None and r.store is store:
                roots[id(r)] = r
        if not roots:
            return
        for r in roots.values():
            r.retired = True
        for a in _registered():
            if id(a._cn_root) in roots and a.flags.writeable:
                a.flags.writeable = False


def editing() -> bool:
    """True while an edit context is open (in any thread)."""
    return _depth > 0


def _enter() -> None:
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            for a in _registered():
                if not a._cn_root.retired and not a.flags.writeable:
                    _set_writeable(a)


def _exit() -> None:
    global _depth
    with _lock:
        _depth -= 1
        stores = {}
        for a in _registered():
            r = a._cn_root
            if r.retired:
                continue
            if r.store is not None:
                stores[id(r.store)] = r.store
            if _depth == 0 and a.flags.writeable:
                a.flags.writeable = False
    for s in stores.values():
        s.touch()


class no_grad:
    """Context (and decorator) for editing parameters and buffers in place, as PyTorch code does under
    `torch.no_grad()`:

        with cn.no_grad():
            model.fc.weight[...] = 0
            model.bn.running_var *= 2

    Outside it, the arrays the library hands out (module attributes, state_dict() values, parameters(),
    buffers(), and views of them) are read-only: a write is numpy's "assignment destination is read-only"
    ValueError. Inside, they are writeable; leaving (also by an exception) makes them read-only again and bumps
    the parameter version, so compiled inference sessions rebuild their prepared weights at their next run
    (a run inside the context rebuilds them too). Contexts nest. Process-wide: numpy's writeable flag is per
    array, not per thread, so while any thread is inside, every thread may write; the arrays turn read-only
    when the last one is left. cnnnative never records gradients outside a training step, so inference needs
    no context (and leaving one costs the next inference run a rebuild of its prepared weights).
    Module.edit() returns this context."""

    def __enter__(self):
        _enter()
        return self

    def __exit__(self, *exc):
        _exit()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        return wrapped
