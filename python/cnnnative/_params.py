"""Tracked numpy views of a ParamStore: every write through them bumps the store's version.

Inference sessions keep weights prepared from the store (reordered into oneDNN's blocked layout, BatchNorm
folded into the convolution) and rebuild them only when the store's version moved (docs/ARCHITECTURE.md,
"Prepared weights"). The arrays the library hands out for parameters and buffers (module attributes,
state_dict() values, ParamStore.array()) are instances of the classes here; each write they can see bumps
the version of the store they view:
  - item assignment, on the array or on any view derived from it (p[...] = v, p[0] = v, p.T[1:] = v);
  - in-place operators and every ufunc writing into one (p *= 2, np.add(a, b, out=p), np.add.at(p, i, v));
  - numpy functions that write into an argument or take out= (np.copyto(p, v), np.put, np.place, np.putmask,
    np.fill_diagonal, np.put_along_axis, np.dot(..., out=p), ...);
  - the writing methods fill, put, sort, partition, byteswap(inplace=True), setfield, and access to the
    escape hatches .flat, .data, .ctypes (counted as a write when touched).
Not seen: writes through a plain ndarray made from a view (np.asarray(p), p.view(np.ndarray), memoryview or
buffer-protocol consumers such as torch.from_numpy). After such a write call Module.weights_changed() (or
ParamStore.touch()).
"""
from __future__ import annotations

import numpy as np

# numpy functions that write into their first argument
_WRITERS = {np.copyto, np.put, np.place, np.putmask, np.fill_diagonal, np.put_along_axis}


def _touch(a) -> None:
    s = getattr(a, "_cn_store", None)
    if s is not None:
        s.touch()


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, TrackedArray) else x


class TrackedArray(np.ndarray):
    """A float32 array; when it views a ParamStore (after the first compile), writes bump its version."""

    _cn_store = None

    def __array_finalize__(self, obj):
        # views derived from a tracked array carry its store; copies (own memory) do not
        self._cn_store = None if self.flags.owndata else getattr(obj, "_cn_store", None)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        _touch(self)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        written = [o for o in (out or ()) if isinstance(o, TrackedArray)]
        if method == "at" and isinstance(inputs[0], TrackedArray):
            written.append(inputs[0])
        args = tuple(_plain(x) for x in inputs)
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        for w in written:
            _touch(w)
        if method == "at":
            return None
        if out is not None:  # in-place operators must return the original objects
            return out[0] if len(out) == 1 else tuple(out)
        # results keep the subclass (as ndarray's default does), without a store: they are new memory
        cls = type(self)

        def wrap(r):
            if isinstance(r, np.ndarray) and not isinstance(r, TrackedArray):
                r = r.view(cls)
                r._cn_store = None
            return r

        return tuple(wrap(r) for r in result) if isinstance(result, tuple) else wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        if func in _WRITERS and args and isinstance(args[0], TrackedArray):
            _touch(args[0])
        out = kwargs.get("out")
        for o in (out if isinstance(out, tuple) else (out,)):
            if isinstance(o, TrackedArray):
                _touch(o)
        return result

    def fill(self, value):
        super().fill(value)
        _touch(self)

    def put(self, *a, **k):
        super().put(*a, **k)
        _touch(self)

    def sort(self, *a, **k):
        super().sort(*a, **k)
        _touch(self)

    def partition(self, *a, **k):
        super().partition(*a, **k)
        _touch(self)

    def setfield(self, *a, **k):
        super().setfield(*a, **k)
        _touch(self)

    def byteswap(self, inplace=False):
        r = super().byteswap(inplace)
        if inplace:
            _touch(self)
        return r

    @property
    def flat(self):
        _touch(self)
        return super().flat

    @flat.setter
    def flat(self, value):
        np.ndarray.flat.__set__(self, value)
        _touch(self)

    @property
    def data(self):
        _touch(self)
        return super().data

    @property
    def ctypes(self):
        _touch(self)
        return super().ctypes


class Parameter(TrackedArray):
    """A trainable float32 array (marks module attributes as parameters)."""

    def __new__(cls, data):
        a = np.ascontiguousarray(data, dtype=np.float32).view(cls)
        if isinstance(data, TrackedArray) and np.may_share_memory(a, data):  # Parameter(view): still tracked
            a._cn_store = data._cn_store
        return a


class Buffer(TrackedArray):
    """A non-trainable float32 array of a ParamStore (BatchNorm running statistics)."""


def track(array: np.ndarray, store, trainable: bool) -> TrackedArray:
    """A tracked view of `array` (memory of `store`): Parameter when trainable, else Buffer."""
    v = array.view(Parameter if trainable else Buffer)
    v._cn_store = store
    return v
