"""cnnnative.functional: the binary op family (re-exported by functional.py): add / sub / mul / div / rsub / neg with
NumPy broadcasting, and the Tensor operators + - * / (and their reflected forms, unary -) attached to Tensor here.

Operands: traced Tensors; Python numbers (a number is an attribute of one `binary_scalar` node: `x * 0.5`, `1 - x`,
`x / 6`); numpy constants whose values are all equal (a number again, or a `fill` of the constant's shape when it
broadcasts the result larger); and a module's own Parameter or Buffer arrays while it is traced (`x * self.gamma`,
a graph parameter, trained when it is a Parameter) when the builder knows the arrays' names (GraphBuilder.named_arrays:
id(array) -> (name, trainable)). Two tensors of one shape add with the engine's `add` (what the inference fusion
matches: conv + add + relu); other shapes with binary_add / binary_sub / binary_mul / binary_div."""
from __future__ import annotations

import numbers

import numpy as np

from .graph import Tensor

__all__ = ["add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "rsub", "neg", "negative"]

# binary_scalar's attribute "kind": x op value
_KIND = {"add": 0, "sub": 1, "rsub": 2, "mul": 3, "div": 4, "rdiv": 5}
_OPS = {"add": "binary_add", "sub": "binary_sub", "mul": "binary_mul", "div": "binary_div"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _node(b, op, inputs, attrs=None, name=None):
    return b.op(op, inputs, attrs or {}, name or b.node_name(op))[0]


def _broadcast(a, b, what):
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise ValueError(f"{what}: shapes {list(a)} and {list(b)} do not broadcast together (NumPy rules: trailing "
                         "dimensions equal or 1)") from None


def _check_tensor(t, what):
    if not t.dtype.startswith("float"):
        raise TypeError(f"{what}: expects float tensors, got a {t.dtype} tensor {list(t.shape)}")


def _operand(b, v, what):
    """A Tensor, a float (a number or a uniform constant, with the constant's shape), or TypeError."""
    if isinstance(v, Tensor):
        _check_tensor(v, what)
        return v, None
    if isinstance(v, bool) or (isinstance(v, numbers.Number) and not isinstance(v, numbers.Real)):
        raise TypeError(f"{what}: expects a Tensor, a real number or a float array, got {type(v).__name__} {v!r}")
    if isinstance(v, numbers.Real):
        return float(v), ()
    if isinstance(v, np.ndarray):
        named = getattr(b, "named_arrays", None) or {}
        if id(v) in named:
            key, trainable = named[id(v)]
            return b.param(key, v.shape, trainable), None
        if v.dtype.kind not in "fiu" or v.size == 0:
            raise TypeError(f"{what}: a constant operand must be a non-empty real array, got dtype {v.dtype} "
                            f"{list(v.shape)}")
        flat = v.reshape(-1)
        if np.all(flat == flat[0]):
            return float(flat[0]), tuple(v.shape)
        raise TypeError(f"{what}: a constant array {list(v.shape)} with different values is an operand only as a "
                        "parameter or buffer of the module being traced: register it (self.register_buffer(name, "
                        "array) or an nn.Parameter) and read it in forward() as self._tensor(name)")
    raise TypeError(f"{what}: expects a Tensor, a real number or a float array, got {type(v).__name__}")


def _binary(kind, x, y, name=None):
    """x <kind> y for kind add/sub/mul/div, either operand a Tensor, a number or an array (see the module doc)."""
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        raise TypeError(f"{kind}: at least one operand must be a traced Tensor, got {type(x).__name__} and "
                        f"{type(y).__name__}")
    b = (x if isinstance(x, Tensor) else y).b
    what = f"{kind} ({_SYMBOL[kind]})"
    a, sa = _operand(b, x, what)
    c, sc = _operand(b, y, what)
    if isinstance(a, Tensor) and isinstance(c, Tensor):
        _broadcast(a.shape, c.shape, what)
        if kind == "add" and a.shape == c.shape and a.dtype == c.dtype:
            return _node(b, "add", [a, c], name=name)
        return _node(b, _OPS[kind], [a, c], name=name)
    t, v, shape, rev = (a, c, sc, False) if isinstance(a, Tensor) else (c, a, sa, True)
    out = _broadcast(t.shape, shape, what)
    if out != t.shape:  # a uniform constant that makes the result larger: a filled tensor of its shape
        f = _node(b, "fill", [], {"shape": [int(d) for d in shape], "value": v})
        return _node(b, _OPS[kind], [f, t] if rev else [t, f], name=name)
    k = {"add": "add", "mul": "mul", "sub": "rsub" if rev else "sub", "div": "rdiv" if rev else "div"}[kind]
    return _node(b, "binary_scalar", [t], {"kind": _KIND[k], "value": v}, name=name)


def _scaled(kind, other, alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"{kind}: alpha must be a real number, got {type(alpha).__name__} {alpha!r}")
    if alpha == 1:
        return other
    if isinstance(other, Tensor):
        return _binary("mul", other, float(alpha))
    if isinstance(other, numbers.Real) and not isinstance(other, bool):
        return float(other) * float(alpha)
    return np.asarray(other, np.float64) * float(alpha)


def add(input, other, *, alpha=1, name=None) -> Tensor:
    """torch.add: input + alpha * other (broadcasting)."""
    return _binary("add", input, _scaled("add", other, alpha), name=name)


def sub(input, other, *, alpha=1, name=None) -> Tensor:
    """torch.sub: input - alpha * other (broadcasting)."""
    return _binary("sub", input, _scaled("sub", other, alpha), name=name)


subtract = sub


def rsub(input, other, *, alpha=1, name=None) -> Tensor:
    """torch.rsub: other - alpha * input."""
    return _binary("sub", other, _scaled("rsub", input, alpha), name=name)


def mul(input, other, *, name=None) -> Tensor:
    """torch.mul: input * other (broadcasting)."""
    return _binary("mul", input, other, name=name)


multiply = mul


def div(input, other, *, rounding_mode=None, name=None) -> Tensor:
    """torch.div: input / other (broadcasting); rounding_mode None only (true division)."""
    if rounding_mode is not None:
        raise ValueError(f"div: rounding_mode={rounding_mode!r} is not supported (only None: true division)")
    return _binary("div", input, other, name=name)


divide = div
true_divide = div


def neg(input, *, name=None) -> Tensor:
    """torch.neg: -input."""
    if not isinstance(input, Tensor):
        raise TypeError(f"neg: expects a Tensor, got {type(input).__name__}")
    _check_tensor(input, "neg")
    return _node(input.b, "binary_scalar", [input], {"kind": _KIND["mul"], "value": -1.0}, name=name)


negative = neg


def _add(self, other):
    return _binary("add", self, other)


def _radd(self, other):
    return _binary("add", other, self)


def _sub(self, other):
    return _binary("sub", self, other)


def _rsub(self, other):
    return _binary("sub", other, self)


def _mul(self, other):
    return _binary("mul", self, other)


def _rmul(self, other):
    return _binary("mul", other, self)


def _truediv(self, other):
    return _binary("div", self, other)


def _rtruediv(self, other):
    return _binary("div", other, self)


Tensor.__add__ = _add
Tensor.__radd__ = _radd
Tensor.__sub__ = _sub
Tensor.__rsub__ = _rsub
Tensor.__mul__ = _mul
Tensor.__rmul__ = _rmul
Tensor.__truediv__ = _truediv
Tensor.__rtruediv__ = _rtruediv
Tensor.__neg__ = neg
Tensor.add = add
Tensor.sub = sub
Tensor.mul = mul
Tensor.div = div
Tensor.neg = neg
# numpy must hand `array * tensor` to Tensor.__rmul__ rather than broadcast over the Tensor as an object
Tensor.__array_ufunc__ = None
