"""cnnnative.functional: the shape op family (re-exported by functional.py).

Data movement of activations of any rank up to 6 and the batched matrix product, with PyTorch's names and
arguments: permute / transpose (engine op `transpose`), slicing with steps (`x[:, ::2]`, narrow: engine op
`slice`), chunk / split (the engine's `split` in inference graphs; one `slice` per piece in training graphs,
since `split` has no gradient rule), channel_shuffle (reshape, transpose, reshape), pad_nd (F.pad's constant,
reflect and replicate modes on any axes: engine op `pad_nd`) and matmul (numpy/torch broadcasting, 1-D
operands: engine op `matmul`). Tensor methods are attached here: permute, transpose, t, narrow, chunk, split,
__getitem__ and __matmul__."""
from __future__ import annotations

import numbers

from .graph import Tensor, current

__all__ = ["permute", "transpose", "narrow", "chunk", "split", "channel_shuffle", "pad_nd", "matmul", "bmm"]

MAX_RANK = 6


def _op(op, inputs, attrs=None, name=None):
    b = current()
    return b.op(op, inputs, attrs, name or b.node_name(op))


def _where(name):
    return f"layer '{name}': " if name else ""


def _dim(d, rank, fn, name=None, what="dim"):
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise TypeError(f"{_where(name)}{fn}: {what} must be an int, got {d!r}")
    d = int(d)
    if not -rank <= d < rank:
        raise IndexError(f"{_where(name)}{fn}: {what} {d} out of range for a tensor of rank {rank} "
                         f"(expected {-rank} .. {rank - 1})")
    return d + rank if d < 0 else d


def _check_rank(x, fn, name=None):
    if not isinstance(x, Tensor):
        raise TypeError(f"{_where(name)}{fn}: expected a traced Tensor, got {type(x).__name__}")
    if x.dim() > MAX_RANK:
        raise ValueError(f"{_where(name)}{fn}: tensors of rank <= {MAX_RANK} are supported, got {list(x.shape)}")


# ---- permute / transpose ----

def permute(x, *dims, name=None) -> Tensor:
    """torch.permute(x, dims) / x.permute(*dims): y.shape[i] = x.shape[dims[i]]."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    _check_rank(x, "permute", name)
    r = x.dim()
    if len(dims) != r:
        raise ValueError(f"{_where(name)}permute: dims {tuple(dims)} must name each of the {r} dims of "
                         f"{list(x.shape)} once")
    perm = [_dim(d, r, "permute", name) for d in dims]
    if sorted(perm) != list(range(r)):
        raise ValueError(f"{_where(name)}permute: dims {tuple(dims)} repeat a dim")
    if perm == list(range(r)):
        return x
    return _op("transpose", [x], {"perm": perm}, name=name)[0]


def transpose(x, dim0, dim1, *, name=None) -> Tensor:
    """torch.transpose(x, dim0, dim1): swaps two dims."""
    _check_rank(x, "transpose", name)
    r = x.dim()
    a, b = _dim(dim0, r, "transpose", name, "dim0"), _dim(dim1, r, "transpose", name, "dim1")
    perm = list(range(r))
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, perm, name=name)


def _t(x):
    if x.dim() > 2:
        raise ValueError(f"t(): expects a tensor of rank <= 2, got {list(x.shape)}")
    return x if x.dim() < 2 else transpose(x, 0, 1)


# ---- slicing ----

def _slice(x, starts, steps, sizes, name=None):
    if list(sizes) == list(x.shape) and all(s == 0 for s in starts) and all(s == 1 for s in steps):
        return x
    return _op("slice", [x], {"starts": [int(v) for v in starts], "steps": [int(v) for v in steps],
                              "sizes": [int(v) for v in sizes]}, name=name)[0]


def narrow(x, dim, start, length, *, name=None) -> Tensor:
    """torch.narrow(x, dim, start, length): x[..., start:start+length, ...] along dim (start may be negative)."""
    _check_rank(x, "narrow", name)
    r = x.dim()
    d = _dim(dim, r, "narrow", name)
    n = x.shape[d]
    start, length = int(start), int(length)
    if start < 0:
        start += n
    if not (0 <= start and length >= 1 and start + length <= n):
        raise IndexError(f"{_where(name)}narrow: start {start} and length {length} leave dim {d} of size {n} "
                         "(empty results are not supported)")
    starts, sizes = [0] * r, list(x.shape)
    starts[d], sizes[d] = start, length
    return _slice(x, starts, [1] * r, sizes, name)


def _getitem(x, idx):
    """x[idx] for ints, slices with positive steps, Ellipsis and None (new axes), as torch indexes."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if sum(i is Ellipsis for i in idx) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    r = x.dim()
    if n_real > r:
        raise IndexError(f"too many indices for a tensor of rank {r} ({list(x.shape)}): {n_real}")
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (r - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (r - sum(1 for i in expanded if i is not None)))
    starts, steps, sizes, out_shape = [], [], [], []
    d = 0
    for i in expanded:
        if i is None:
            out_shape.append(1)
            continue
        n = x.shape[d]
        if isinstance(i, slice):
            step = 1 if i.step is None else int(i.step)
            if step <= 0:
                raise ValueError(f"step must be greater than zero, got {step} (dim {d})")
            start, stop, _ = i.indices(n)
            size = max(0, (stop - start + step - 1) // step)
            if size == 0:
                raise IndexError(f"index {i} of dim {d} (size {n}) selects nothing (empty tensors are not "
                                 "supported)")
            starts.append(start)
            steps.append(step)
            sizes.append(size)
            out_shape.append(size)
        elif isinstance(i, numbers.Integral) and not isinstance(i, bool):
            k = int(i)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for dim {d} with size {n}")
            starts.append(k + n if k < 0 else k)
            steps.append(1)
            sizes.append(1)
        else:
            raise TypeError(f"unsupported index {i!r} (ints, slices, ... and None are supported)")
        d += 1
    y = _slice(x, starts, steps, sizes)
    return y if list(y.shape) == out_shape else y.reshape(out_shape if out_shape else [1])


# ---- chunk / split ----

def _pieces(x, sizes, d, fn, name):
    if len(sizes) == 1:
        return (x,)
    b = current()
    if not b.training:  # the engine's split: one pass over x
        return tuple(_op("split", [x], {"axis": d, "sizes": [int(s) for s in sizes]}, name=name))
    outs, start = [], 0  # training: split has no gradient rule; slices have one each
    for k, s in enumerate(sizes):
        starts, sz = [0] * x.dim(), list(x.shape)
        starts[d], sz[d] = start, s
        outs.append(_slice(x, starts, [1] * x.dim(), sz, f"{name}_{k}" if name else None))
        start += s
    return tuple(outs)


def chunk(x, chunks, dim=0, *, name=None):
    """torch.chunk(x, chunks, dim): pieces of ceil(n / chunks) along dim (the last may be smaller; fewer
    pieces than chunks when n does not fill them, as torch)."""
    _check_rank(x, "chunk", name)
    d = _dim(dim, x.dim(), "chunk", name)
    if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise ValueError(f"{_where(name)}chunk: chunks must be an int >= 1, got {chunks!r}")
    n = x.shape[d]
    size = -(-n // int(chunks))
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    return _pieces(x, sizes, d, "chunk", name)


def split(x, split_size_or_sections, dim=0, *, name=None):
    """torch.split(x, split_size_or_sections, dim): pieces of split_size (the last may be smaller) or of the
    listed sizes, which must sum to x's size along dim."""
    _check_rank(x, "split", name)
    d = _dim(dim, x.dim(), "split", name)
    n = x.shape[d]
    s = split_size_or_sections
    if isinstance(s, numbers.Integral) and not isinstance(s, bool):
        if s < 1:
            raise ValueError(f"{_where(name)}split: split_size must be >= 1, got {s}")
        sizes = [int(s)] * (n // s) + ([n % s] if n % s else [])
    else:
        try:
            sizes = [int(v) for v in s]
        except TypeError:
            raise TypeError(f"{_where(name)}split: split_size_or_sections must be an int or a list of ints, "
                            f"got {s!r}") from None
        if any(v < 1 for v in sizes) or sum(sizes) != n:
            raise ValueError(f"{_where(name)}split: sections {sizes} must be >= 1 and sum to {n}, the size of "
                             f"dim {d} of {list(x.shape)}")
    return _pieces(x, sizes, d, "split", name)


# ---- channel shuffle ----

def channel_shuffle(x, groups, *, name=None) -> Tensor:
    """F.channel_shuffle / nn.ChannelShuffle (ShuffleNet): x [N, C, *] viewed as [N, groups, C / groups, *],
    the two group dims swapped, viewed back: a reshape, a transpose and a reshape."""
    _check_rank(x, "channel_shuffle", name)
    s = list(x.shape)
    if len(s) < 3:
        raise ValueError(f"{_where(name)}channel_shuffle: expects x [N, C, *] of rank >= 3, got {s}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1 or s[1] % groups:
        raise ValueError(f"{_where(name)}channel_shuffle: groups must be an int >= 1 dividing the {s[1]} "
                         f"channels, got {groups!r}")
    g = int(groups)
    if g == 1 or g == s[1]:
        return x
    rest = 1
    for v in s[2:]:
        rest *= v
    b = current()
    base = name or b.node_name("channel_shuffle")
    y = b.op("reshape", [x], {"shape": [s[0], g, s[1] // g, rest]}, f"{base}.view")[0]
    y = b.op("transpose", [y], {"perm": [0, 2, 1, 3]}, f"{base}.transpose")[0]
    return b.op("reshape", [y], {"shape": s}, f"{base}.view_back")[0]


# ---- pad ----

_MODES = {"constant": 0, "reflect": 1, "replicate": 2}


def pad_nd(x, pad, mode: str = "constant", value=None, *, name=None) -> Tensor:
    """torch.nn.functional.pad in every mode but 'circular' on any rank <= 6: pad = (before, after) pairs from
    the last dim backwards, amounts >= 0 (negative ones crop, as torch, in constant mode only). reflect
    needs each amount < the dim's size. Runs as the engine op `pad_nd`."""
    _check_rank(x, "pad", name)
    if mode not in _MODES:
        raise ValueError(f"{_where(name)}pad: mode must be one of {', '.join(_MODES)}, got {mode!r}"
                         + (" ('circular' is not supported)" if mode == "circular" else ""))
    try:
        amounts = [int(p) for p in pad]
    except TypeError:
        raise TypeError(f"{_where(name)}pad: pad must be a sequence of ints, got {pad!r}") from None
    r = x.dim()
    if len(amounts) % 2 or len(amounts) // 2 > r:
        raise ValueError(f"{_where(name)}pad: pad must hold pairs (before, after) for at most the {r} dims of "
                         f"{list(x.shape)}, got {len(amounts)} values")
    if value is not None and mode != "constant":
        raise ValueError(f"{_where(name)}pad: value applies to mode='constant' only, got mode={mode!r}")
    before, after = [0] * r, [0] * r
    for k in range(len(amounts) // 2):
        before[r - 1 - k], after[r - 1 - k] = amounts[2 * k], amounts[2 * k + 1]
    if min(amounts, default=0) < 0:
        if mode != "constant":
            raise ValueError(f"{_where(name)}pad: negative amounts (cropping) only in mode='constant', got "
                             f"{tuple(amounts)}")
        starts = [max(0, -b) for b in before]
        sizes = [n - max(0, -b) - max(0, -a) for n, b, a in zip(x.shape, before, after)]
        if min(sizes) < 1:
            raise ValueError(f"{_where(name)}pad: amounts {tuple(amounts)} crop {list(x.shape)} to nothing")
        x = _slice(x, starts, [1] * r, sizes, name)
        before, after = [max(0, b) for b in before], [max(0, a) for a in after]
    if mode == "reflect":
        for d in range(r):
            if before[d] >= x.shape[d] or after[d] >= x.shape[d]:
                raise ValueError(f"{_where(name)}pad: reflect padding ({before[d]}, {after[d]}) of dim {d} must be "
                                 f"less than its size {x.shape[d]} ({list(x.shape)})")
    if not any(before) and not any(after):
        return x
    attrs = {"pads": before + after, "mode": _MODES[mode], "value": 0.0 if value is None else float(value)}
    return _op("pad_nd", [x], attrs, name=name)[0]


# ---- matmul ----

def matmul(a, b, *, name=None) -> Tensor:
    """torch.matmul(a, b) / a @ b: batched with broadcasting of the batch dims; a 1-D a is a row vector and a
    1-D b a column vector, their dim removed from the result (as torch). Both operands may be activations."""
    for t, w in ((a, "a"), (b, "b")):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_where(name)}matmul: {w} must be a traced Tensor, got {type(t).__name__}")
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        raise ValueError(f"{_where(name)}matmul: both operands need rank >= 1, got {sa} and {sb}")
    if max(len(sa), len(sb)) > MAX_RANK:
        raise ValueError(f"{_where(name)}matmul: ranks <= {MAX_RANK} are supported, got {sa} and {sb}")
    a2 = a if len(sa) > 1 else a.reshape([1, sa[0]])
    b2 = b if len(sb) > 1 else b.reshape([sb[0], 1])
    ka, kb = list(a2.shape)[-1], list(b2.shape)[-2]
    if ka != kb:
        raise ValueError(f"{_where(name)}matmul: inner dimensions differ: {sa} @ {sb} ({ka} vs {kb})")
    y = _op("matmul", [a2, b2], {}, name=name)[0]
    ys = list(y.shape)
    if len(sa) == 1:
        del ys[-2]
    if len(sb) == 1:
        del ys[-1]
    return y if ys == list(y.shape) else y.reshape(ys if ys else [1])


def bmm(a, b, *, name=None) -> Tensor:
    """torch.bmm: [B, M, K] @ [B, K, N] (no broadcasting)."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"{_where(name)}bmm: expects [B, M, K] and [B, K, N], got {list(a.shape)} and "
                         f"{list(b.shape)}")
    return matmul(a, b, name=name)


# ---- Tensor methods ----

def _split_method(self, split_size_or_sections, dim=0):
    return split(self, split_size_or_sections, dim)


def _chunk_method(self, chunks, dim=0):
    return chunk(self, chunks, dim)


Tensor.permute = permute
Tensor.transpose = transpose
Tensor.t = _t
Tensor.narrow = narrow
Tensor.chunk = _chunk_method
Tensor.split = _split_method
Tensor.__getitem__ = _getitem
Tensor.__matmul__ = matmul
Tensor.matmul = matmul
