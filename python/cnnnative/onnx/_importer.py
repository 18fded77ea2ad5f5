"""ONNX -> cnnnative. `import_model` reads a ModelProto once and returns an OnnxModule: a cnnnative Module
whose parameters and buffers are the model's initializers (names sanitized) and whose forward() replays
the ONNX graph through engine ops while a model is traced, so `compile(input_shape)` works for any
input shape the graph allows.

At import (numpy, once):
  - the file and the graph are validated before anything is computed from them: a regular file of at most
    2 GiB, external data only from files inside the model's folder, every name defined once and every input
    defined, no cycle (an unsorted graph is sorted), input/output/attribute counts and types as the ONNX
    schema of the model's opset says, attribute values in their ranges, initializer sizes matching their
    data (InvalidModelError); sizes beyond the engine's limits are UnsupportedError;
  - Constant nodes and nodes whose inputs are all constants are evaluated (shape arithmetic, weight
    preprocessing such as ConstantOfShape or Transpose of a weight), each result's size checked against the
    folding budget before it is allocated;
  - Gemm and MatMul with a constant right operand become `Linear` (weight stored [OUT, IN], alpha and
    beta folded); Add/Sub/Mul/Div with one constant operand become `Affine` (y = x * scale + shift with
    scale/shift varying along at most one axis); Sub of two tensors becomes Add(a, Affine(b, -1));
  - an Affine right after a Conv, ConvTranspose, Linear or BatchNormalization whose output nothing else
    reads is folded into that node's weights (exact per-channel algebra); chains of Affines merge; the
    rest run as an eval-mode batch_norm with mean 0, var 1, eps 0, i.e. exactly x * scale + shift;
  - a constant-mode zero Pad read only by Convs is folded into their pads;
  - when the model declares its input shapes, a dry trace checks every node, so one error lists every
    invalid (InvalidModelError) or unsupported (UnsupportedError) node, op type and attribute at once.
While tracing (per input shape): auto_pad and asymmetric pads are resolved against the real sizes (pads
that the engine's symmetric padding cannot express exactly become explicit pads: concat with a `fill`
constant), Shape-derived arithmetic folds to constants, 1-D convs/pools run as 2-D with H = 1.
It never imports onnx at `import cnnnative` time, and never writes to the ModelProto it is given."""
from __future__ import annotations

import errno
import math
import os
import stat
from collections import Counter

import numpy as np

from .. import _core
from .. import nn
from ..graph import Tensor, current
from ._common import (FOLD_MAX_BYTES, FOLD_MAX_ELEMENTS, FOLD_MAX_TOTAL_BYTES, FOLDABLE_OPS, MAX_DIM, MAX_ELEMENTS,
                      MAX_FILE_BYTES, MAX_LIST, MAX_NAME, MAX_NODE_IO, MAX_NODES, SUPPORTED_OPS, InvalidModelError,
                      ModelFileError, UnsupportedError, require_onnx, sanitize)

_NEG_BIG = -3.4028234663852886e38  # max-pool padding value (-FLT_MAX)
_MIN_OPSET = 6
# ops the importer creates while rewriting the graph; '$' cannot start an ONNX op type that reaches a handler
# (default-domain op types that are not identifiers are reported as unknown operators)
_LINEAR, _AFFINE = "$Linear", "$Affine"


class _Unsupported(Exception):
    """Raised by a handler: the node cannot be expressed with engine ops (the reason is the message)."""


class _Invalid(Exception):
    """Raised by a handler or a fold: the node breaks the ONNX specification (the reason is the message)."""


class _Node:
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "src")

    def __init__(self, op, name, inputs, outputs, attrs, src=None):
        self.op, self.name, self.inputs, self.outputs, self.attrs = op, name, list(inputs), list(outputs), attrs
        self.src = src or op  # the ONNX op type, for messages

    def __repr__(self):
        return f"_Node({self.op}, {self.name!r}, {self.inputs} -> {self.outputs})"


def _engine_ops() -> set:
    return set(_core.op_names())


def _type_name(onnx, t):
    return onnx.TensorProto.DataType.Name(t) if t in onnx.TensorProto.DataType.values() else str(t)


def _fmt_bytes(n):
    return f"{n / 2 ** 20:.1f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.1f} GiB"


# ---------------------------------------------------------------------------------------------------
# tensors and attributes of the ModelProto


def _numel(dims):
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _dtype_of(onnx, data_type):
    """numpy dtype of a TensorProto data type, or None when it is not one."""
    if data_type == 0:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(data_type)))
    except Exception:  # an unknown or unmappable type number
        return None


def _raw_bytes_needed(onnx, t, n, dtype):
    name = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in onnx.TensorProto.DataType.values() else ""
    if name in ("INT4", "UINT4", "FLOAT4E2M1"):
        return (n + 1) // 2
    if name in ("INT2", "UINT2"):
        return (n + 3) // 4
    return n * dtype.itemsize


_TYPED_FIELD = {"FLOAT": ("float_data", 1), "COMPLEX64": ("float_data", 2), "DOUBLE": ("double_data", 1),
                "COMPLEX128": ("double_data", 2), "INT64": ("int64_data", 1), "UINT32": ("uint64_data", 1),
                "UINT64": ("uint64_data", 1), "STRING": ("string_data", 1)}


def _typed_values_needed(onnx, t, n):
    """(typed field, values it must hold) of a TensorProto without raw_data, as onnx.proto says per type."""
    name = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in onnx.TensorProto.DataType.values() else ""
    if name in _TYPED_FIELD:
        f, k = _TYPED_FIELD[name]
        return f, n * k
    if name in ("INT4", "UINT4", "FLOAT4E2M1"):
        return "int32_data", (n + 1) // 2
    if name in ("INT2", "UINT2"):
        return "int32_data", (n + 3) // 4
    return "int32_data", n  # the 8- and 16-bit types, bool and the float8s


def _tensor_array(onnx, t, what, budget=None):
    """numpy value of a TensorProto after checking it: known data type, non-negative dims, data of exactly
    the size the dims say, no external or segmented data (external data is read by load_model_proto from
    the model's folder). Raises _Invalid / _Unsupported naming `what`."""
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise _Invalid(f"{what} has negative dimensions {dims}")
    if len(dims) > 64:
        raise _Unsupported(f"{what} has rank {len(dims)}")
    n = _numel(dims)
    if n > MAX_ELEMENTS:
        raise _Unsupported(f"{what} has {n} elements (at most {MAX_ELEMENTS})")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise _Unsupported(f"{what} keeps its data in an external file, which is read only when the model is "
                           "imported from its path (the file must lie in the model's folder)")
    if t.HasField("segment"):
        raise _Unsupported(f"{what} is a segment of a tensor (segmented tensors are not supported)")
    dtype = _dtype_of(onnx, t.data_type)
    if dtype is None:
        raise _Invalid(f"{what} has data type {t.data_type}, which is not a tensor data type")
    if budget is not None and n * dtype.itemsize > budget:
        raise _Unsupported(f"{what} holds {n} elements ({_fmt_bytes(n * dtype.itemsize)}), more than the "
                           f"{_fmt_bytes(budget)} allowed here")
    if t.HasField("raw_data"):
        if dtype.kind == "O":
            raise _Invalid(f"{what} is a string tensor in raw_data (strings go to string_data)")
        need = _raw_bytes_needed(onnx, t, n, dtype)
        if len(t.raw_data) != need:
            raise _Invalid(f"{what} has raw_data of {len(t.raw_data)} bytes; its dims {dims} and data type "
                           f"{dtype} need {need}")
    else:
        field, need = _typed_values_needed(onnx, t, n)
        k = len(getattr(t, field))
        if k != need:
            raise _Invalid(f"{what} has {k} values in {field}; its dims {dims} and data type {dtype} need {need}")
    try:
        a = onnx.numpy_helper.to_array(t)
    except Exception as e:  # a mismatch the checks above do not model (a rare packed or float8 layout)
        raise _Invalid(f"{what} cannot be decoded: {type(e).__name__}: {str(e)[:200]}") from None
    a = np.asarray(a)
    if a.size != n:
        raise _Invalid(f"{what} holds {a.size} values, its dims {dims} need {n}")
    return a


def _text(b, what):
    if len(b) > MAX_NAME:
        raise _Unsupported(f"{what} is {len(b)} bytes long (at most {MAX_NAME})")
    return b.decode("utf-8", "replace")


def _implied_type(onnx, a):
    """Attribute type of an IR-1 attribute whose `type` is unset: the field that holds a value."""
    A = onnx.AttributeProto
    for field, t in (("floats", A.FLOATS), ("ints", A.INTS), ("strings", A.STRINGS), ("tensors", A.TENSORS),
                     ("graphs", A.GRAPHS)):
        if len(getattr(a, field)):
            return t
    for field, t in (("f", A.FLOAT), ("i", A.INT), ("s", A.STRING), ("t", A.TENSOR), ("g", A.GRAPH)):
        if a.HasField(field):
            return t
    return A.UNDEFINED


def _attr_value(onnx, a, long_ok=False):
    """Python value of an AttributeProto: float, int, str, list, numpy array (tensors, checked), or the proto
    itself for graphs and other kinds no supported operator reads. Lists are bounded by MAX_LIST unless
    long_ok (a Constant's value_ints / value_floats, bounded by the folding budget instead)."""
    A = onnx.AttributeProto
    t = a.type or _implied_type(onnx, a)
    what = f"attribute {a.name!r}"
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return _text(a.s, what)
    if t in (A.FLOATS, A.INTS, A.STRINGS):
        seq = a.floats if t == A.FLOATS else a.ints if t == A.INTS else a.strings
        limit = FOLD_MAX_ELEMENTS if long_ok else MAX_LIST
        if len(seq) > limit:
            raise _Unsupported(f"{what} holds {len(seq)} values (at most {limit})")
        if t == A.STRINGS:
            return [_text(s, what) for s in seq]
        if long_ok and len(seq) > MAX_LIST:
            return np.array(seq, np.float32 if t == A.FLOATS else np.int64)
        return [float(v) for v in seq] if t == A.FLOATS else [int(v) for v in seq]
    if t == A.TENSOR:
        return _tensor_array(onnx, a.t, f"{what} (a tensor)", FOLD_MAX_BYTES)
    if t == A.UNDEFINED:
        raise _Invalid(f"{what} has no type and no value")
    return a  # GRAPH(S), TENSORS, SPARSE_TENSOR(S), TYPE_PROTO(S): kept as protos


def _constant_value(attrs):
    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], np.int64)
    raise _Unsupported("only tensor, float(s) and int(s) constants are supported "
                       f"(got attribute {', '.join(attrs) or 'none'})")


# ---------------------------------------------------------------------------------------------------
# reading a model: path, bytes, file object or ModelProto


def _file_error(path, e):
    why = {errno.ENOENT: "no such file", errno.EISDIR: "is a folder, not a file", errno.EACCES: "permission denied",
           errno.ENOTDIR: "a part of the path is not a folder"}.get(e.errno, e.strerror or str(e))
    return ModelFileError(f"ONNX model file {path!r}: {why}", e.errno, path)


def _read_regular_file(path, what, limit):
    """Bytes of a regular file (never a FIFO, device or folder), at most `limit` of them."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _file_error(path, e) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ModelFileError(f"{what} {path!r}: is a folder, not a file", errno.EISDIR, path)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{what} {path!r}: not a regular file", errno.EINVAL, path)
        if st.st_size > limit:
            raise InvalidModelError([(path, "model", f"{what} is {st.st_size} bytes, more than an ONNX model can be "
                                      f"({limit} bytes: protobuf's limit); large weights go to external data")])
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = None
            return _read_limited(f, limit, what)
    except OSError as e:
        if isinstance(e, ModelFileError):
            raise
        raise _file_error(path, e) from None
    finally:
        if fd is not None:
            os.close(fd)


def _read_limited(f, limit, what):
    """All of a binary file object's bytes, read in chunks (a read(limit) would reserve `limit` bytes at once);
    InvalidModelError beyond `limit`."""
    chunks, n = [], 0
    while True:
        b = f.read(1 << 24)
        if not b:
            return b"".join(chunks)
        if not isinstance(b, (bytes, bytearray)):
            raise TypeError(f"import_model: the file object gave {type(b).__name__}, not bytes (open it in 'rb' mode)")
        n += len(b)
        if n > limit:
            raise InvalidModelError([(None, "model", f"{what} holds more than {limit} bytes, more than an ONNX model "
                                      "can be (protobuf's limit); large weights go to external data")])
        chunks.append(b)


def _parse(onnx, data):
    if len(data) > MAX_FILE_BYTES:
        raise InvalidModelError([(None, "model", f"{len(data)} bytes, more than protobuf's 2 GiB limit")])
    m = onnx.ModelProto()
    try:
        m.ParseFromString(bytes(data))
    except Exception as e:  # protobuf DecodeError and friends: a malformed file
        raise InvalidModelError([(None, "model", f"not a readable ONNX model: {type(e).__name__}: {e}")]) from None
    return m


def _all_tensor_attrs(g):
    """TensorProtos held by Constant-like attributes of the graph's nodes (not of subgraphs)."""
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors


def _external_info(t, name):
    info = {}
    for e in t.external_data:
        if not isinstance(e.key, str) or not isinstance(e.value, str):
            raise InvalidModelError([(name, "external data", "a key or value that is not valid UTF-8")])
        if e.key in ("location", "offset", "length", "checksum", "basepath"):
            info[e.key] = e.value
    loc = info.get("location", "")
    try:
        offset = int(info.get("offset", 0) or 0)
        length = None if info.get("length") in (None, "") else int(info["length"])
    except ValueError:
        raise InvalidModelError([(name, "external data", f"offset/length {info.get('offset')!r}/"
                                  f"{info.get('length')!r} are not integers")]) from None
    if offset < 0 or (length is not None and length < 0):
        raise InvalidModelError([(name, "external data", f"negative offset {offset} or length {length}")])
    return loc, offset, length


def _resolve_external(base, loc, name):
    """Absolute path of an external data file: a relative path inside the model's folder (symlinks resolved),
    else InvalidModelError."""
    if not loc or "\0" in loc:
        raise InvalidModelError([(name, "external data", "no file name ('location')")])
    norm = loc.replace("\\", "/")
    if os.path.isabs(loc) or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") \
            or ".." in norm.split("/"):
        raise InvalidModelError([(name, "external data", f"location {loc!r} is not a relative path inside the "
                                  "model's folder")])
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, norm))
    if os.path.commonpath([root, path]) != root or path == root:
        raise InvalidModelError([(name, "external data", f"location {loc!r} leads outside the model's folder")])
    return path


def _phys_mem():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def _load_external_data(onnx, m, base):
    """Reads the external data of initializers and Constant tensors into raw_data, checking each reference
    first: a relative path inside `base`, a regular file, offset/length inside it, exactly the bytes the
    tensor's dims and type need. `base` None (bytes or a file object): any external reference is refused."""
    tensors = list(m.graph.initializer) + list(_all_tensor_attrs(m.graph))
    for f in m.functions:
        tensors += list(_all_tensor_attrs(f))
    total, budget = 0, _phys_mem()
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        name = t.name if isinstance(t.name, str) and t.name else "<unnamed tensor>"
        loc, offset, length = _external_info(t, name)
        if base is None:
            raise UnsupportedError([(name, "external data", f"the data is in the external file {loc!r}; import the "
                                     "model from its path so that the file is looked up in the model's folder")])
        path = _resolve_external(base, loc, name)
        dtype = _dtype_of(onnx, t.data_type)
        if dtype is None or dtype.kind == "O" or any(d < 0 for d in t.dims):
            raise InvalidModelError([(name, "external data", f"data type {t.data_type} / dims {list(t.dims)} "
                                      "cannot be stored externally")])
        n = _numel(t.dims)
        if n > MAX_ELEMENTS:
            raise UnsupportedError([(name, "external data", f"{n} elements (at most {MAX_ELEMENTS})")])
        need = _raw_bytes_needed(onnx, t, n, dtype)
        if length is not None and length != need:
            raise InvalidModelError([(name, "external data", f"length {length} bytes, its dims {list(t.dims)} and "
                                      f"type need {need}")])
        total += need
        if total > budget:
            raise UnsupportedError([(name, "external data", f"the external data add up to more than this machine's "
                                     f"memory ({_fmt_bytes(budget)})")])
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise InvalidModelError([(name, "external data", f"cannot open {loc!r}: {e.strerror or e}")]) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidModelError([(name, "external data", f"{loc!r} is not a regular file")])
            if offset + need > st.st_size:
                raise InvalidModelError([(name, "external data", f"{need} bytes at offset {offset} lie beyond the end "
                                          f"of {loc!r} ({st.st_size} bytes)")])
            f.seek(offset)
            data = f.read(need)
        if len(data) != need:
            raise InvalidModelError([(name, "external data", f"{loc!r} ended early")])
        t.raw_data = data
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]


def load_model_proto(src):
    """A ModelProto from a path, bytes, a file object or a ModelProto (returned as is). A path's external data
    is read from files inside the path's folder (see _load_external_data); bytes and file objects cannot
    reference external data. Raises ModelFileError (an OSError and a cnnnative.Error) for a path that
    cannot be read, InvalidModelError for a malformed model, TypeError for another kind of `src`."""
    onnx = require_onnx()
    if isinstance(src, onnx.ModelProto):
        return src
    base = None
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        data = _read_regular_file(path, "ONNX model file", MAX_FILE_BYTES)
        base = os.path.dirname(os.path.abspath(path))
    elif hasattr(src, "read"):
        data = _read_limited(src, MAX_FILE_BYTES, "the file object")
    else:
        raise TypeError(f"import_model: expected a path, bytes or onnx.ModelProto, got {type(src).__name__}")
    m = _parse(onnx, data)
    _load_external_data(onnx, m, base)
    return m


# ---------------------------------------------------------------------------------------------------
# validation of the graph's structure and of each node against its ONNX schema


def _model_opset(model):
    versions = {int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")}
    if len(versions) > 1:
        raise InvalidModelError([(None, "opset", f"the default domain is imported at several versions "
                                  f"{sorted(versions)}")])
    v = versions.pop() if versions else 0
    if v < 0 or v > 10000:
        raise InvalidModelError([(None, "opset", f"version {v} of the default domain")])
    return v


def _inline_functions(onnx, model):
    """Model-local functions inlined, after checking that they do not call themselves and that inlining
    stays within MAX_NODES nodes (a chain of functions each calling the next twice grows exponentially)."""
    funcs = {}
    for f in model.functions:
        key = (f.domain, f.name)
        if key in funcs:
            raise InvalidModelError([(f.name, "function", f"defined twice in domain {f.domain!r}")])
        funcs[key] = f
    sizes, state = {}, {}
    for root in funcs:
        if root in state:
            continue
        stack, state[root] = [(root, 0)], 1
        while stack:
            key, i = stack[-1]
            nodes = funcs[key].node
            if i < len(nodes):
                stack[-1] = (key, i + 1)
                callee = (nodes[i].domain, nodes[i].op_type)
                if callee in funcs:
                    if state.get(callee) == 1:
                        chain = " -> ".join(k[1] for k, _ in stack) + f" -> {callee[1]}"
                        raise InvalidModelError([(callee[1], "function", f"calls itself ({chain})")])
                    if callee not in state:
                        state[callee] = 1
                        stack.append((callee, 0))
            else:
                stack.pop()
                state[key] = 2
                sizes[key] = min(MAX_NODES + 1, sum(sizes.get((n.domain, n.op_type), 1) for n in nodes))
    total = sum(sizes.get((n.domain, n.op_type), 1) for n in model.graph.node)
    if total > MAX_NODES:
        raise UnsupportedError([(None, "graph", f"inlining the model's functions gives more than {MAX_NODES} nodes")])
    from onnx import inliner
    try:
        return inliner.inline_local_functions(model)
    except Exception as e:  # the inliner rejects a malformed function
        raise InvalidModelError([(None, "function", f"cannot inline the model's functions: "
                                  f"{type(e).__name__}: {str(e)[:300]}")]) from None


def _check_names(g):
    """Names of everything in the graph: valid UTF-8, no NUL, at most MAX_NAME characters. Returns
    (invalid, unsupported) problem lists."""
    inv, uns = [], []

    def bad(s):
        """(is it invalid, reason) for a bad name, None for a good one."""
        if not isinstance(s, str):  # protobuf hands over a string field that is not valid UTF-8 as bytes
            return True, "is not valid UTF-8"
        if len(s) > MAX_NAME:
            return False, f"has {len(s)} characters (at most {MAX_NAME})"
        if "\0" in s:
            return True, "holds a NUL character"
        return None

    def show(s):
        s = s.decode("utf-8", "replace") if isinstance(s, bytes) else s
        return s if len(s) <= 60 else s[:60] + "..."

    for kind, names in (("graph input", [v.name for v in g.input]), ("graph output", [v.name for v in g.output]),
                        ("initializer", [t.name for t in g.initializer]),
                        ("initializer", [t.values.name for t in g.sparse_initializer])):
        for s in names:
            b = bad(s)
            if b:
                (inv if b[0] else uns).append((show(s), kind, f"the name {b[1]}"))
    for k, n in enumerate(g.node):
        label = n.name if bad(n.name) is None else f"#{k}"
        op = n.op_type if bad(n.op_type) is None else "?"
        fields = [("name", n.name), ("op_type", n.op_type), ("domain", n.domain)]
        fields += [(f"input {i}", v) for i, v in enumerate(n.input)]
        fields += [(f"output {i}", v) for i, v in enumerate(n.output)]
        fields += [("an attribute name", a.name) for a in n.attribute]
        for field, s in fields:
            b = bad(s)
            if b:
                (inv if b[0] else uns).append((label, op, f"{field} {show(s)!r} {b[1]}"))
                break
    return inv, uns


def _node_names(g):
    names, seen = [], set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _check_structure(g, names, defined_outside):
    """SSA form and order: every value defined once, every non-empty node input and every graph output
    defined, no cycle. Returns (invalid problems, node order): the nodes topologically sorted, keeping the
    file's order where it already is one (ONNX requires a sorted graph; an unsorted one is accepted, as by
    onnxruntime)."""
    inv = []
    seen_in = set()
    for vi in g.input:
        if vi.name in seen_in:
            inv.append((vi.name, "graph input", "listed twice"))
        seen_in.add(vi.name)
        if not vi.name:
            inv.append(("", "graph input", "an empty name"))
    seen_init = set()
    for t in g.initializer:
        if t.name in seen_init:
            inv.append((t.name, "initializer", "defined twice"))
        seen_init.add(t.name)
        if not t.name:
            inv.append(("", "initializer", "an empty name"))
    for t in g.sparse_initializer:
        seen_init.add(t.values.name)
    defined = seen_in | seen_init | set(defined_outside)
    producer = {}
    for k, n in enumerate(g.node):
        if len(n.input) > MAX_NODE_IO or len(n.output) > MAX_NODE_IO:
            inv.append((names[k], n.op_type, f"{len(n.input)} inputs and {len(n.output)} outputs (at most "
                        f"{MAX_NODE_IO} each)"))
        for o in n.output:
            if not o:
                continue
            if o in producer:
                inv.append((names[k], n.op_type, f"output {o!r} is also an output of node {names[producer[o]]!r} "
                            "(each value is defined once)"))
            elif o in defined:
                kind = "a graph input" if o in seen_in else "an initializer"
                inv.append((names[k], n.op_type, f"output {o!r} is also {kind} (each value is defined once)"))
            else:
                producer[o] = k
    for k, n in enumerate(g.node):
        for i in n.input:
            if i and i not in defined and i not in producer:
                inv.append((names[k], n.op_type, f"input {i!r} is not defined (no graph input, initializer or node "
                            "output has that name)"))
    if not g.output:
        inv.append((None, "graph", "the graph has no outputs"))
    seen_out = set()
    for vi in g.output:
        if vi.name in seen_out:
            inv.append((vi.name, "graph output", "listed twice"))
        seen_out.add(vi.name)
        if vi.name not in defined and vi.name not in producer:
            inv.append((vi.name, "graph output", "is not defined (no graph input, initializer or node output has "
                        "that name)"))
    if inv:
        return inv, None
    # Kahn's algorithm, smallest original index first: the file's order when it is already sorted
    import heapq
    deps = [set() for _ in g.node]
    users = [[] for _ in g.node]
    for k, n in enumerate(g.node):
        for i in n.input:
            p = producer.get(i) if i and i not in defined else None
            if p is not None and p not in deps[k]:
                deps[k].add(p)
                users[p].append(k)
    indeg = [len(d) for d in deps]
    ready = [k for k, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(g.node):
        stuck = [names[k] for k in range(len(g.node)) if indeg[k] > 0]
        shown = ", ".join(repr(s) for s in stuck[:8]) + (f" and {len(stuck) - 8} more" if len(stuck) > 8 else "")
        inv.append((None, "graph", f"the graph has a cycle through the nodes {shown}"))
        return inv, None
    return inv, order


_SCHEMAS = {}


def _schema(onnx, op, opset):
    key = (op, opset)
    if key not in _SCHEMAS:
        try:
            _SCHEMAS[key] = onnx.defs.get_schema(op, opset or onnx.defs.onnx_opset_version(), "")
        except Exception:  # no such operator (at this opset)
            _SCHEMAS[key] = None
    return _SCHEMAS[key]


def _schema_problems(onnx, n, schema, types):
    """Counts of inputs/outputs, required inputs, attribute names, types and presence, as the schema says."""
    out = []
    sig = f"{n.op_type}-{schema.since_version}"
    ni, no = len(n.input), len(n.output)
    if not schema.min_input <= ni <= schema.max_input:
        out.append(f"{ni} inputs; {sig} takes {schema.min_input} to {schema.max_input}")
    if not schema.min_output <= no <= schema.max_output:
        out.append(f"{no} outputs; {sig} has {schema.min_output} to {schema.max_output}")
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for kind, formal, actual in (("input", schema.inputs, n.input), ("output", schema.outputs, n.output)):
        for k, v in enumerate(actual):
            if not v and k < len(formal) and formal[k].option == single:
                out.append(f"{kind} {k} ({formal[k].name}) is required but empty")
    for name, t in types.items():
        a = schema.attributes.get(name)
        if a is None:
            out.append(f"attribute {name!r} is not defined for {sig}")
        elif int(a.type.value) != int(t):
            want = onnx.AttributeProto.AttributeType.Name(int(a.type.value))
            got = onnx.AttributeProto.AttributeType.Name(int(t)) if t in onnx.AttributeProto.AttributeType.values() \
                else str(t)
            out.append(f"attribute {name!r} is {got}; {sig} takes {want}")
    for name, a in schema.attributes.items():
        if a.required and name not in types:
            out.append(f"required attribute {name!r} is missing")
    if n.op_type == "Constant" and sum(1 for k in types if k.startswith("value") or k == "sparse_value") != 1:
        out.append(f"a Constant sets exactly one value attribute, got {sorted(types) or 'none'}")
    return out


_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "")  # "" is NOTSET (as for onnxruntime)
_POOLS = ("MaxPool", "AveragePool")


def _attr_problems(op, a, opset):
    """Ranges of attribute values that do not depend on shapes: (invalid reasons, unsupported reasons)."""
    inv, uns = [], []

    def ints(name, lo, hi=MAX_DIM):
        v = a.get(name)
        if v is None:
            return
        vals = list(v) if isinstance(v, (list, np.ndarray)) else [v]
        shown = vals if isinstance(v, (list, np.ndarray)) else v
        if any(int(x) < lo for x in vals):
            inv.append(f"{name}={shown}: " + ("each value" if shown is vals else "the value") + f" must be >= {lo}")
        elif any(int(x) > hi for x in vals):
            uns.append(f"{name}={shown}: values above {hi} exceed the engine's limits")

    def choice(name, allowed, default):
        v = a.get(name, default)
        if v not in allowed:
            inv.append(f"{name}={v!r}: one of {', '.join(x for x in allowed if x)}")

    if op in ("Conv", "ConvTranspose") + _POOLS:
        for name in ("kernel_shape", "strides", "dilations"):
            ints(name, 1)
        ints("pads", 0)
        if op in ("Conv", "ConvTranspose"):
            ints("group", 1)
        if op == "ConvTranspose":
            ints("output_padding", 0)
            ints("output_shape", 1)
        choice("auto_pad", _AUTO_PADS, "NOTSET")
        ks = a.get("kernel_shape")
        sd = len(ks) if ks is not None else len(a["strides"]) if a.get("strides") is not None else None
        if ks is not None and not ks:
            inv.append("kernel_shape is empty")
        if sd:
            for name in ("strides", "dilations") + (("output_padding",) if op == "ConvTranspose" else ()):
                if a.get(name) is not None and len(a[name]) != sd:
                    inv.append(f"{name}={list(a[name])} has {len(a[name])} values for {sd} spatial axes")
            if a.get("pads") is not None and len(a["pads"]) != 2 * sd:
                inv.append(f"pads={list(a['pads'])} has {len(a['pads'])} values for {sd} spatial axes (2 per axis)")
            elif op in _POOLS and ks and a.get("pads") is not None and not inv:
                p = list(a["pads"])
                bad = [i for i in range(sd) if p[i] >= ks[i] or p[sd + i] >= ks[i]]
                if bad:
                    inv.append(f"pads={p} with kernel_shape={list(ks)}: each pad must be smaller than the kernel "
                               "(padding a whole window is meaningless; onnxruntime refuses it too)")
    elif op == "LRN":
        ints("size", 1)
    elif op == "Pad":
        choice("mode", ("constant", "reflect", "edge", "wrap"), "constant")
    elif op == "Resize":
        choice("mode", ("nearest", "linear", "cubic"), "nearest")
    elif op == "Upsample":
        choice("mode", ("nearest", "linear", "bilinear"), "nearest")
        sc = a.get("scales")
        if sc is not None and not all(math.isfinite(s) and s >= 1 for s in sc):
            inv.append(f"scales={list(sc)}: each must be a finite number >= 1")
    elif op == "Dropout" and "ratio" in a:
        if not 0 <= a["ratio"] < 1:
            inv.append(f"ratio={a['ratio']}: must be in [0, 1)")
    elif op in ("Squeeze", "Unsqueeze") and isinstance(a.get("axes"), list):
        if len(set(a["axes"])) != len(a["axes"]):
            inv.append(f"axes={a['axes']} repeat an axis")
    elif op == "Slice" and opset < 10 and "starts" in a and "ends" in a:
        if len(a["starts"]) != len(a["ends"]) or ("axes" in a and len(a["axes"]) != len(a["starts"])):
            inv.append(f"starts, ends and axes differ in length ({a.get('starts')}, {a.get('ends')}, {a.get('axes')})")
    return inv, uns


# ---------------------------------------------------------------------------------------------------
# constant folding (numpy), used at import for constant subgraphs and while tracing for Shape arithmetic.
# Every result's size is computed and checked against the folding budget before anything is allocated.


def _budget(shape, itemsize, what="the result"):
    n = _numel(shape)
    if n > FOLD_MAX_ELEMENTS or n * itemsize > FOLD_MAX_BYTES:
        raise _Unsupported(f"{what} would hold {n} elements ({_fmt_bytes(n * itemsize)}); constants computed at "
                           f"import are limited to {FOLD_MAX_ELEMENTS} elements and {_fmt_bytes(FOLD_MAX_BYTES)}")


def _axis(axis, rank, name="axis", inclusive=False):
    """axis normalized to [0, rank) ([0, rank] when inclusive), or _Invalid."""
    a = int(axis)
    hi = rank if inclusive else rank - 1
    if not -rank <= a <= hi:
        raise _Invalid(f"{name}={a} is out of range for a rank-{rank} tensor ([{-rank}, {hi}])")
    return a + rank if a < 0 else a


def _int_vector(v, what):
    """A constant holding integers (shape, axes, pads, ...) as a list of Python ints."""
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise _Invalid(f"{what} must hold integers, got dtype {a.dtype}")
    if a.ndim > 1:
        raise _Invalid(f"{what} must be 1-D, got shape {list(a.shape)}")
    if a.size > MAX_LIST:
        raise _Unsupported(f"{what} holds {a.size} values (at most {MAX_LIST})")
    return [int(x) for x in a.reshape(-1)]


def _scalar(v, what):
    a = np.asarray(v)
    if a.size != 1:
        raise _Invalid(f"{what} must be a single value, got shape {list(a.shape)}")
    return a.reshape(-1)[0]


def _broadcast(*shapes):
    """numpy's multidirectional broadcasting of shapes, computed on the shapes only."""
    r = max(len(s) for s in shapes)
    out = []
    for i in range(r):
        ds = {int(s[len(s) - r + i]) for s in shapes if len(s) - r + i >= 0}
        ds.discard(1)
        if len(ds) > 1:
            raise _Invalid(f"shapes {[list(s) for s in shapes]} do not broadcast together")
        out.append(ds.pop() if ds else 1)
    return out


def _axes_arg(node, ins, k):
    """Axes of Squeeze/Unsqueeze/ReduceX: input k (opset 13+) or attribute 'axes'."""
    if len(ins) > k and ins[k] is not None:
        return _int_vector(ins[k], "axes")
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def _unsqueezed_shape(shape, axes):
    r = len(shape) + len(axes)
    axes = [_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise _Invalid(f"axes={axes} repeat an axis")
    out = list(shape)
    for a in sorted(axes):
        out.insert(a, 1)
    return out


def _squeezed_shape(shape, axes):
    r = len(shape)
    if axes is None:
        return [d for d in shape if d != 1]
    axes = [_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise _Invalid(f"axes={axes} repeat an axis")
    for a in axes:
        if shape[a] != 1:
            raise _Invalid(f"Squeeze of axis {a} whose size is {shape[a]}, not 1")
    return [d for i, d in enumerate(shape) if i not in set(axes)]


def _reshape_target(in_shape, shape, allowzero):
    """ONNX Reshape's output shape (0 copies the input's dim unless allowzero, one -1 inferred), checked."""
    t = _int_vector(shape, "shape")
    if any(v < -1 for v in t):
        raise _Invalid(f"shape {t}: values must be >= -1")
    if t.count(-1) > 1:
        raise _Invalid(f"shape {t} has more than one -1")
    if allowzero and 0 in t and -1 in t:
        raise _Invalid(f"shape {t}: with allowzero=1, 0 and -1 cannot both appear")
    if not allowzero:
        if any(v == 0 and i >= len(in_shape) for i, v in enumerate(t)):
            raise _Invalid(f"shape {t} copies (0) a dimension beyond the input's rank {len(in_shape)}")
        t = [in_shape[i] if v == 0 else v for i, v in enumerate(t)]
    total = _numel(in_shape)
    if -1 in t:
        known = _numel(v for v in t if v != -1)
        if known == 0 or total % known:
            raise _Invalid(f"cannot reshape {list(in_shape)} ({total} elements) to {t}")
        t[t.index(-1)] = total // known
    if _numel(t) != total:
        raise _Invalid(f"cannot reshape {list(in_shape)} ({total} elements) to {t}")
    return t


def _slice_bounds(dim, start, end, step):
    """ONNX Slice clamping for one axis (step 1 or -1 paths as python slicing)."""
    return slice(*slice(int(start) if abs(start) < 2 ** 62 else (dim if start > 0 else -dim - 1),
                        int(end) if abs(end) < 2 ** 62 else (dim if end > 0 else -dim - 1),
                        int(step)).indices(dim))


def _slice_args(node, ins, rank):
    if len(ins) > 1:  # opset 10+
        starts = _int_vector(ins[1], "starts")
        ends = _int_vector(ins[2], "ends") if len(ins) > 2 and ins[2] is not None else None
        if ends is None:
            raise _Invalid("missing ends")
        axes = _int_vector(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
        steps = _int_vector(ins[4], "steps") if len(ins) > 4 and ins[4] is not None else None
    else:
        starts, ends = list(node.attrs.get("starts", [])), list(node.attrs.get("ends", []))
        axes, steps = node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [_axis(a, rank, "axes") for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise _Invalid(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if len(set(axes)) != len(axes):
        raise _Invalid(f"axes {axes} repeat an axis")
    if 0 in steps:
        raise _Invalid(f"steps {steps}: a step of 0")
    return starts, ends, axes, steps


def _np_dtype(onnx, to):
    dt = _dtype_of(onnx, to)
    if dt is None:
        raise _Invalid(f"to={to} is not a tensor data type")
    return dt


def _fold(node, ins):
    """numpy value(s) of a node whose inputs are all constants (a traced tensor only for Shape)."""
    onnx = require_onnx()
    op, a = node.op, node.attrs
    if op in ("Identity", "Shape"):
        if not ins or ins[0] is None:
            raise _Invalid("missing input")
    if op == "Identity":
        return [ins[0]]
    if op == "Shape":
        s = np.array(ins[0].shape, np.int64)
        r = len(s)
        start, end = int(a.get("start", 0)), int(a.get("end", r))
        start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
        return [s[min(max(0, start), r):min(max(0, end), r)]]
    if op == "Cast":
        x = np.asarray(ins[0])
        dt = _np_dtype(onnx, a.get("to", 0))
        _budget(x.shape, dt.itemsize)
        if dt.kind == "O" or x.dtype.kind == "O":
            raise _Unsupported("Cast from or to strings")
        with np.errstate(all="ignore"):
            return [x.astype(dt)]
    if op == "ConstantOfShape":
        shape = _int_vector(ins[0], "shape")
        if any(d < 0 for d in shape):
            raise _Invalid(f"shape {shape} has negative dimensions")
        v = a.get("value")
        v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
        if v.size != 1:
            raise _Invalid(f"value must hold one element, got {v.size}")
        _budget(shape, v.dtype.itemsize)
        return [np.full(shape, v[0], v.dtype)]
    if op == "Gather":
        x, idx = np.asarray(ins[0]), np.asarray(ins[1])
        if x.ndim == 0:
            raise _Invalid("Gather of a scalar")
        ax = _axis(a.get("axis", 0), x.ndim)
        if idx.dtype.kind not in "iu":
            raise _Invalid(f"indices must be integers, got dtype {idx.dtype}")
        n = x.shape[ax]
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise _Invalid(f"indices {idx.reshape(-1)[:8].tolist()} out of range for axis {ax} of size {n}")
        _budget(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]), x.dtype.itemsize)
        return [np.take(x, idx.astype(np.int64), axis=ax)]
    if op == "Unsqueeze":
        x = np.asarray(ins[0])
        axes = _axes_arg(node, ins, 1)
        if axes is None:
            raise _Invalid("missing axes")
        return [x.reshape(_unsqueezed_shape(x.shape, axes))]
    if op == "Squeeze":
        x = np.asarray(ins[0])
        return [x.reshape(_squeezed_shape(x.shape, _axes_arg(node, ins, 1)))]
    if op == "Concat":
        xs = [np.asarray(v) for v in ins if v is not None]
        if not xs:
            raise _Invalid("no inputs")
        r = xs[0].ndim
        if "axis" not in a:
            raise _Invalid("missing the required attribute axis")
        if r == 0:
            raise _Invalid("Concat of scalars")
        ax = _axis(a["axis"], r)
        for v in xs[1:]:
            if v.ndim != r or any(d != e for i, (d, e) in enumerate(zip(v.shape, xs[0].shape)) if i != ax):
                raise _Invalid(f"inputs of shapes {[list(v.shape) for v in xs]} differ outside axis {ax}")
        shape = list(xs[0].shape)
        shape[ax] = sum(v.shape[ax] for v in xs)
        _budget(shape, max(v.dtype.itemsize for v in xs))
        return [np.concatenate(xs, axis=ax)]
    if op == "Reshape":
        x = np.asarray(ins[0])
        if len(ins) < 2 or ins[1] is None:
            raise _Invalid("missing the shape input")
        return [x.reshape(_reshape_target(x.shape, ins[1], a.get("allowzero", 0)))]
    if op == "Flatten":
        x = np.asarray(ins[0])
        ax = _axis(a.get("axis", 1), x.ndim, inclusive=True)
        return [x.reshape(_numel(x.shape[:ax]), _numel(x.shape[ax:]))]
    if op == "Transpose":
        x = np.asarray(ins[0])
        perm = a.get("perm")
        if perm is not None and sorted(int(p) for p in perm) != list(range(x.ndim)):
            raise _Invalid(f"perm={list(perm)} is not a permutation of the {x.ndim} axes")
        return [np.ascontiguousarray(np.transpose(x, perm))]
    if op == "Slice":
        x = np.asarray(ins[0])
        starts, ends, axes, steps = _slice_args(node, ins, x.ndim)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax] = _slice_bounds(x.shape[ax], s, e, st)
        return [x[tuple(sl)]]
    if op == "Range":
        if len(ins) != 3 or any(v is None for v in ins):
            raise _Invalid("Range takes start, limit and delta")
        start, limit, delta = (_scalar(v, k) for v, k in zip(ins, ("start", "limit", "delta")))
        dt = np.asarray(ins[0]).dtype
        if dt.kind not in "iuf":
            raise _Invalid(f"Range of dtype {dt}")
        vals = [float(v) for v in (start, limit, delta)]
        if not all(math.isfinite(v) for v in vals):
            raise _Invalid(f"start, limit, delta = {vals}: not finite")
        if delta == 0:
            raise _Invalid("delta is 0")
        if dt.kind in "iu":
            s_, l_, d_ = int(start), int(limit), int(delta)
            n = max(-((s_ - l_) // d_), 0)  # ceil((limit - start) / delta), exactly
        else:
            n = max(math.ceil((vals[1] - vals[0]) / vals[2]), 0)
        _budget([n], dt.itemsize)
        if dt.kind in "iu":
            return [(np.arange(n, dtype=np.int64) * int(delta) + int(start)).astype(dt)]
        return [(start + np.arange(n, dtype=np.float64) * delta).astype(dt)]
    if op == "Expand":
        x = np.asarray(ins[0])
        shape = _int_vector(ins[1], "shape")
        if any(d < 0 for d in shape):
            raise _Invalid(f"shape {shape} has negative dimensions")
        out = _broadcast(x.shape, shape)
        _budget(out, x.dtype.itemsize)
        return [np.array(np.broadcast_to(x, out))]
    if op == "Where":
        if len(ins) != 3 or any(v is None for v in ins):
            raise _Invalid("Where takes condition, X and Y")
        c, x, y = (np.asarray(v) for v in ins)
        if c.dtype != bool:
            raise _Invalid(f"the condition must be bool, got dtype {c.dtype}")
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise _Unsupported(f"Where of dtypes {x.dtype} and {y.dtype}")
        out = _broadcast(c.shape, x.shape, y.shape)
        _budget(out, max(x.dtype.itemsize, y.dtype.itemsize))
        return [np.where(c, x, y)]
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Max", "Min"):
        xs = [np.asarray(v) for v in ins if v is not None]
        if len(xs) < (1 if op in ("Max", "Min") else 2):
            raise _Invalid(f"{len(xs)} inputs")
        if any(v.dtype.kind not in "biuf" for v in xs):
            raise _Unsupported(f"{op} of dtypes {[str(v.dtype) for v in xs]}")
        out = _broadcast(*[v.shape for v in xs])
        _budget(out, 8)
        x, y = xs[0], xs[-1]
        with np.errstate(all="ignore"):
            if op == "Div" and x.dtype.kind in "iu" and y.dtype.kind in "iu":
                if np.any(y == 0):
                    raise _Invalid("integer division by zero")
                return [np.trunc(x / y).astype(np.result_type(x, y))]
            if op in ("Max", "Min"):
                f = np.maximum if op == "Max" else np.minimum
                res = xs[0]
                for v in xs[1:]:
                    res = f(res, v)
                return [np.asarray(res)]
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal}[op]
            return [np.asarray(f(x, y)).astype(np.result_type(x, y) if op != "Equal" else bool)]
    if op in ("Neg", "Sqrt", "Reciprocal", "Floor", "Ceil"):
        f = {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Floor": np.floor,
             "Ceil": np.ceil}[op]
        x = np.asarray(ins[0])
        if x.dtype.kind != "f" and not (op == "Neg" and x.dtype.kind == "i"):
            raise _Invalid(f"{op} of dtype {x.dtype}")
        with np.errstate(all="ignore"):
            return [np.asarray(f(x)).astype(x.dtype)]
    raise _Unsupported(f"no constant folding for {op}")


# ---------------------------------------------------------------------------------------------------
# the program: a rewritten graph plus the table of constants held by the module


def _varying_axes(shape):
    return [i for i, d in enumerate(shape) if d != 1]


def _affine_layout(scale, shift):
    """(d, axis_from_end, ndim, scale_vec, shift_vec) of y = x*scale + shift, or a reason string."""
    s = np.ones((), np.float64) if scale is None else np.asarray(scale, np.float64)
    t = np.zeros((), np.float64) if shift is None else np.asarray(shift, np.float64)
    try:
        full = _broadcast(s.shape, t.shape)
    except _Invalid:
        return "scale and shift constants do not broadcast together"
    ax = _varying_axes(full)
    if len(ax) > 1:
        return (f"the constant operand {list(full)} varies along more than one axis (the engine has no "
                "general broadcasting elementwise ops, only per-channel affines)")
    s, t = np.broadcast_to(s, full).reshape(-1), np.broadcast_to(t, full).reshape(-1)
    if not ax:
        return 1, None, len(full), s[:1].copy(), t[:1].copy()
    return int(full[ax[0]]), len(full) - ax[0], len(full), s.copy(), t.copy()


class _Program:
    """The importable graph. run(xs) replays it under the current GraphBuilder."""

    def __init__(self, model, bind=None):
        onnx = require_onnx()
        if not model.HasField("graph"):
            raise InvalidModelError([(None, "model", "no graph (an empty or non-ONNX file?)")])
        self.opset = _model_opset(model)
        self.static_problems = []  # unsupported: (name, op, why)
        self.invalid = []          # invalid: (name, op, why), raised by import_model
        self.failed = set()        # outputs of nodes that could not be parsed or folded (their readers are skipped)
        self.folded_bytes = 0
        if self.opset and self.opset < _MIN_OPSET:
            self.static_problems.append((None, "model", f"opset {self.opset} is older than {_MIN_OPSET}"))
        if model.functions:
            model = _inline_functions(onnx, model)
        g = model.graph
        if len(g.node) > MAX_NODES:
            raise UnsupportedError([(None, "graph", f"{len(g.node)} nodes (at most {MAX_NODES})")])
        inv, uns = _check_names(g)
        if inv or uns:
            raise InvalidModelError(inv) if inv else UnsupportedError(uns)
        names = _node_names(g)
        inv, order = _check_structure(g, names, list(bind or {}))
        if inv:
            raise InvalidModelError(inv)
        self.consts = {}
        for t in g.initializer:
            try:
                self.consts[t.name] = _tensor_array(onnx, t, "the tensor")
            except _Invalid as e:
                self.invalid.append((t.name, "initializer", str(e)))
            except _Unsupported as e:
                self.static_problems.append((t.name, "initializer", str(e)))
                self.failed.add(t.name)
        for t in g.sparse_initializer:
            self.static_problems.append((t.values.name, "sparse_initializer", "sparse initializers are not supported"))
            self.failed.add(t.values.name)
        for k, v in (bind or {}).items():
            self.consts[k] = np.asarray(v)
        self.inputs = []  # (name, dims with None for symbolic ones, elem type)
        for vi in g.input:
            if vi.name in self.consts or vi.name in self.failed:
                continue
            tt = vi.type.tensor_type
            # dim_value <= 0 counts as unknown, as a dim_param does (onnxruntime reads -1 so; the engine has no
            # zero-size tensors)
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tt.shape.dim] if tt.HasField("shape") else None
            self.inputs.append((vi.name, dims, tt.elem_type))
            if tt.elem_type not in (onnx.TensorProto.FLOAT, 0) and vi.HasField("type"):
                self.static_problems.append((vi.name, "input", "graph input of type "
                                             f"{_type_name(onnx, tt.elem_type)} (only float32 inputs)"))
            known = [d for d in (dims or []) if d is not None]
            if any(d > MAX_DIM for d in known) or _numel(known) > MAX_ELEMENTS:
                self.static_problems.append((vi.name, "input", f"declared shape {dims} exceeds the engine's limits "
                                             f"(dimensions up to {MAX_DIM}, {MAX_ELEMENTS} elements)"))
        self.input_names = [n for n, _, _ in self.inputs]
        self.output_names = [o.name for o in g.output]
        nodes = []
        for i in order:
            n, name = g.node[i], names[i]
            node = self._parse_node(onnx, n, name)
            if node is not None:
                nodes.append(node)
        if self.invalid:
            raise InvalidModelError(self.invalid)
        self.nodes = nodes
        self._fold_constants()
        self._canonicalize()
        self._fold_pads()
        self._fold_affines()
        self._merge_affines()
        self._assign_params()
        self.declared_batch = None
        if self.inputs and self.inputs[0][1]:
            self.declared_batch = self.inputs[0][1][0]

    def _parse_node(self, onnx, n, name):
        """_Node of a NodeProto after checking its attributes against the schema and their static ranges;
        None for a Constant (its value goes to self.consts) or a node that failed (problem recorded)."""
        default = n.domain in ("", "ai.onnx")
        attrs, types = {}, {}
        try:
            for a in n.attribute:
                if a.name in attrs:
                    raise _Invalid(f"attribute {a.name!r} is given twice")
                types[a.name] = a.type or _implied_type(onnx, a)
                attrs[a.name] = _attr_value(onnx, a, long_ok=default and n.op_type == "Constant")
        except (_Invalid, _Unsupported) as e:
            (self.invalid if isinstance(e, _Invalid) else self.static_problems).append((name, n.op_type, str(e)))
            self.failed.update(o for o in n.output if o)
            return None
        if not default:  # reported when the graph is replayed or checked
            return _Node(f"{n.domain}.{n.op_type}", name, n.input, n.output, attrs, n.op_type)
        schema = _schema(onnx, n.op_type, self.opset)
        if schema is not None:
            probs = _schema_problems(onnx, n, schema, types)
        elif n.op_type in _KNOWN_OPS and _schema(onnx, n.op_type, 0) is not None:
            probs = [f"{n.op_type} is not defined in opset {self.opset} (it appeared in opset "
                     f"{onnx.defs.get_schema(n.op_type).since_version})"]
        else:
            probs = []
        inv, uns = _attr_problems(n.op_type, attrs, self.opset) if not probs else ([], [])
        probs += inv
        if probs or uns:
            if probs:
                self.invalid.extend((name, n.op_type, p) for p in probs)
            else:
                self.static_problems.extend((name, n.op_type, p) for p in uns)
            self.failed.update(o for o in n.output if o)
            return None
        if n.op_type == "Constant":
            try:
                v = _constant_value(attrs)
                _budget(v.shape, v.dtype.itemsize, "the constant")
                self.consts[n.output[0]] = v
            except _Unsupported as e:
                self.static_problems.append((name, "Constant", str(e)))
                self.failed.add(n.output[0])
            return None
        op = n.op_type if n.op_type.isidentifier() else "?" + n.op_type  # never an internal op's name
        return _Node(op, name, n.input, n.output, attrs, n.op_type)

    # ---- graph helpers ----
    def _uses(self):
        c = Counter(i for n in self.nodes for i in n.inputs if i)
        c.update(self.output_names)
        return c

    def _producers(self):
        return {o: n for n in self.nodes for o in n.outputs if o}

    def _derive(self, orig, value, suffix, uses):
        """Name for a rewritten constant: the original name when nothing else reads it."""
        if orig and uses[orig] <= 1 and orig not in self.output_names:
            self.consts[orig] = value
            return orig
        name = self._fresh((orig or "const") + "_" + suffix)
        self.consts[name] = value
        return name

    def _fresh(self, base):
        """A value name used nowhere in the graph yet."""
        if not hasattr(self, "_taken"):
            self._taken = set(self.consts) | set(self.input_names) | set(self.output_names)
            for n in self.nodes:
                self._taken.update(n.inputs)
                self._taken.update(n.outputs)
        name, k = base, 1
        while name in self._taken or name in self.consts:
            name, k = f"{base}{k}", k + 1
        self._taken.add(name)
        return name

    def _const(self, name):
        return self.consts.get(name) if name else None

    # ---- passes ----
    def _fold_constants(self):
        keep = []
        for n in self.nodes:
            ins = [i for i in n.inputs if i]
            if n.op in _FOLDABLE and ins and all(i in self.consts for i in ins):
                try:
                    outs = _fold(n, [self.consts[i] if i else None for i in n.inputs])
                    self.count_folded(outs)
                except Exception as e:  # noqa: BLE001 - classified by node_failed
                    self.node_failed(n, e)
                    continue
                for o, v in zip(n.outputs, outs):
                    if o:
                        self.consts[o] = np.asarray(v)
            else:
                keep.append(n)
        self.nodes = keep

    def count_folded(self, outs):
        """Adds folded values to the running total, which FOLD_MAX_TOTAL_BYTES bounds."""
        self.folded_bytes += sum(np.asarray(v).nbytes for v in outs if isinstance(v, np.ndarray))
        if self.folded_bytes > FOLD_MAX_TOTAL_BYTES:
            raise _Unsupported(f"the constants computed at import add up to more than "
                               f"{_fmt_bytes(FOLD_MAX_TOTAL_BYTES)}")

    def node_failed(self, n, e, invalid=None, unsupported=None):
        """Records why node n failed (an _Invalid, _Unsupported, engine error or anything else: an internal
        error, reported as such) and marks its outputs failed so that their readers are skipped."""
        invalid = self.invalid if invalid is None else invalid
        unsupported = self.static_problems if unsupported is None else unsupported
        if isinstance(e, MemoryError):
            raise e
        _classify(n, e, invalid, unsupported)
        self.failed.update(o for o in n.outputs if o)

    def _legacy_broadcast(self, n, ranks):
        """Opset < 7 binary ops: with broadcast=1 and `axis`, B aligns at `axis` rather than at the end;
        reshape the constant operand so numpy broadcasting says the same. Returns a problem or None."""
        if self.opset >= 7 or n.op not in ("Add", "Sub", "Mul", "Div") or not n.attrs.get("broadcast", 0) \
                or "axis" not in n.attrs or n.inputs[1] not in self.consts:
            return None
        r = ranks.get(n.inputs[0])
        c = np.asarray(self.consts[n.inputs[1]])
        if r is None:
            return "legacy broadcast with axis=... on a tensor of unknown rank"
        axis = int(n.attrs["axis"])
        axis = axis + r if axis < 0 else axis
        name = self._fresh(n.inputs[1] + "__bcast")
        self.consts[name] = c.reshape(c.shape + (1,) * (r - axis - c.ndim))
        n.inputs[1] = name
        return None

    def _canonicalize(self):
        out = []
        uses = self._uses()
        ranks = self._ranks() if self.opset < 7 else {}
        for n in self.nodes:
            ins = n.inputs
            why = self._legacy_broadcast(n, ranks)
            if why:
                self.static_problems.append((n.name, n.src, why))
            if self.opset < 7 and int(n.attrs.get("is_test", 1)) == 0 and n.op in ("BatchNormalization", "Dropout"):
                self.static_problems.append((n.name, n.src, "is_test=0 (training behaviour)"))
            if n.op == "Gemm" and len(ins) >= 2 and ins[1] in self.consts and not n.attrs.get("transA", 0):
                lin = self._gemm_as_linear(n, uses)
                if lin is not None:
                    out.append(lin)
                    continue
            if n.op == "MatMul" and len(ins) == 2 and ins[1] in self.consts and ins[0] not in self.consts:
                B = np.asarray(self.consts[ins[1]])
                if B.ndim in (1, 2) and B.dtype.kind == "f":
                    W = B.reshape(1, -1) if B.ndim == 1 else B.T
                    wname = self._derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
                    out.append(_Node(_LINEAR, n.name, [ins[0], wname, ""], n.outputs, {"vector": int(B.ndim == 1)},
                                     "MatMul"))
                    continue
            if n.op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
                ca, cb = ins[0] in self.consts, ins[1] in self.consts
                if ca != cb:
                    k = 1 if cb else 0
                    c = np.asarray(self.consts[ins[k]])
                    if c.dtype.kind == "f":
                        c = c.astype(np.float64)
                        x = ins[1 - k]
                        scale = shift = None
                        if n.op == "Add":
                            shift = c
                        elif n.op == "Sub":
                            scale, shift = (None, -c) if k == 1 else (-np.ones_like(c), c)
                        elif n.op == "Mul":
                            scale = c
                        elif k == 1:  # x / c
                            scale = 1.0 / c
                        if scale is not None or shift is not None:
                            out.append(_Node(_AFFINE, n.name, [x], n.outputs, {"scale": scale, "shift": shift,
                                                                                  "from": n.op}, n.src))
                            continue
                elif not ca and n.op == "Sub":  # a - b = a + (-1) * b
                    neg = self._fresh(n.outputs[0] + "__neg")
                    out.append(_Node(_AFFINE, n.name + ".neg", [ins[1]], [neg],
                                     {"scale": np.array(-1.0), "shift": None, "from": "Sub"}, "Sub"))
                    out.append(_Node("Add", n.name, [ins[0], neg], n.outputs, {}, "Sub"))
                    continue
            out.append(n)
        self.nodes = out

    def _gemm_as_linear(self, n, uses):
        """Gemm(A, B const[, C]) -> Linear(A, W [OUT, IN], bias [OUT]) with alpha/beta folded, or None."""
        ins = n.inputs
        B = np.asarray(self.consts[ins[1]])
        if B.ndim != 2 or B.dtype.kind != "f":
            return None
        alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
        wname = ins[1]
        if not n.attrs.get("transB", 0) or alpha != 1.0:
            W = (B if n.attrs.get("transB", 0) else B.T).astype(np.float64) * alpha
            wname = self._derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
        out_features = self.consts[wname].shape[0]
        bname = ins[2] if len(ins) > 2 else ""
        if bname in self.consts:
            c = np.asarray(self.consts[bname], np.float64) * beta
            if c.ndim == 2 and c.shape[0] > 1 and c.shape[1] == out_features:
                # a per-row C [M, N]: added after the product (the model is then fixed to M rows)
                if beta != 1.0:
                    bname = self._derive(bname, c.astype(np.float32), "b", uses)
                return _Node(_LINEAR, n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1}, "Gemm")
            if not (c.size in (1, out_features) and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1))):
                return None
            if beta != 1.0 or c.shape != (out_features,):
                bname = self._derive(bname, np.broadcast_to(c.reshape(-1), (out_features,)).astype(np.float32),
                                     "b", uses)
        elif bname and beta != 1.0:
            return None
        return _Node(_LINEAR, n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1}, "Gemm")

    def _fold_pads(self):
        consumers = {}
        for n in self.nodes:
            for k, i in enumerate(n.inputs):
                consumers.setdefault(i, []).append((n, k))
        drop = set()
        for p in self.nodes:
            if p.op != "Pad" or p.attrs.get("mode", "constant") != "constant" or p.outputs[0] in self.output_names:
                continue
            pads = p.attrs.get("pads") if self.opset < 11 else self._const(p.inputs[1] if len(p.inputs) > 1 else "")
            value = p.attrs.get("value", 0.0) if self.opset < 11 else (
                self._const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else 0.0)
            if pads is None or value is None or (len(p.inputs) > 3 and p.inputs[3]):
                continue
            pads = [int(v) for v in np.asarray(pads).reshape(-1)]
            r = len(pads) // 2
            if float(np.asarray(value).reshape(-1)[0] if np.size(value) else 0.0) != 0.0 or r < 3 or min(pads) < 0 \
                    or pads[0] or pads[1] or pads[r] or pads[r + 1]:
                continue
            cons = consumers.get(p.outputs[0], [])
            if not cons or any(c.op != "Conv" or k != 0 or c.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                               for c, k in cons):
                continue
            sp = pads[2:r] + pads[r + 2:]
            for c, _ in cons:
                cur = list(c.attrs.get("pads") or [0] * (2 * (r - 2)))
                if c.attrs.get("auto_pad", "NOTSET") == "VALID":
                    cur = [0] * (2 * (r - 2))
                c.attrs["pads"] = [a + b for a, b in zip(cur, sp)]
                c.attrs["auto_pad"] = "NOTSET"
                c.inputs[0] = p.inputs[0]
            drop.add(id(p))
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _ranks(self):
        r = {name: (len(d) if d is not None else None) for name, d, _ in self.inputs}
        for k, v in self.consts.items():
            r[k] = np.ndim(v)
        same = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "BatchNormalization", "Conv", "ConvTranspose", "MaxPool",
                "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Dropout", "Identity", _AFFINE,
                "Concat", "Resize", "Upsample", "Pad", "Softmax", "Sum", "Slice", "Add", _LINEAR}
        for n in self.nodes:
            x = r.get(n.inputs[0]) if n.inputs else None
            if n.op in same:
                out = x
            elif n.op in ("Flatten", "Gemm"):
                out = 2
            elif n.op == "MatMul":
                out = x
            elif n.op == "Reshape" and len(n.inputs) > 1 and n.inputs[1] in self.consts:
                out = int(np.size(self.consts[n.inputs[1]]))
            else:
                out = None
            if n.op == _LINEAR and n.attrs.get("vector") and out is not None:
                out -= 1
            for o in n.outputs:
                r[o] = out
        return r

    def _fold_affines(self):
        ranks = self._ranks()
        uses = self._uses()
        prod = self._producers()
        drop = set()
        for a in self.nodes:
            if a.op != _AFFINE:
                continue
            p = prod.get(a.inputs[0])
            if p is None or id(p) in drop or uses[a.inputs[0]] != 1 or a.inputs[0] in self.output_names:
                continue
            if not self._fold_into(p, a, ranks, uses):
                continue
            drop.add(id(a))
            p.outputs[0] = a.outputs[0]
            prod[a.outputs[0]] = p
            ranks[a.outputs[0]] = ranks.get(a.inputs[0])
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _fold_into(self, p, a, ranks, uses):
        """Folds Affine `a` into producer `p` when exact; returns whether it did."""
        c = self.consts
        ins = p.inputs
        if p.op in ("Conv", "ConvTranspose"):
            if len(ins) < 2 or ins[1] not in c or (len(ins) > 2 and ins[2] and ins[2] not in c):
                return False
            W = np.asarray(c[ins[1]], np.float64)
            g = int(p.attrs.get("group", 1))
            C = W.shape[0] if p.op == "Conv" else W.shape[1] * g
            rank, axis = W.ndim, 1
        elif p.op == _LINEAR:
            if ins[1] not in c or (ins[2] and ins[2] not in c):
                return False
            W = np.asarray(c[ins[1]], np.float64)
            C, rank = W.shape[0], ranks.get(ins[0])
            axis = None if rank is None else rank - 1
            if p.attrs.get("vector"):
                return False
        elif p.op == "BatchNormalization":
            if len(ins) < 5 or any(i not in c for i in ins[1:5]) or len([o for o in p.outputs if o]) > 1:
                return False
            C, rank = np.size(c[ins[1]]), ranks.get(ins[0])
            axis = 1
        else:
            return False
        vecs = []
        for v, dflt in ((a.attrs["scale"], 1.0), (a.attrs["shift"], 0.0)):
            if v is None:
                vecs.append(np.full(C, dflt))
                continue
            v = np.asarray(v, np.float64)
            if v.size == 1 and v.ndim <= (rank if rank is not None else 2):
                vecs.append(np.full(C, v.reshape(-1)[0]))
                continue
            if rank is None or axis is None or v.ndim > rank:
                return False
            shape = (1,) * (rank - v.ndim) + v.shape
            if _varying_axes(shape) != [axis] or shape[axis] != C:
                return False
            vecs.append(v.reshape(-1))
        s, t = vecs
        if p.op == "Conv":
            Wn = W * s.reshape((-1,) + (1,) * (W.ndim - 1))
            b = np.asarray(c[ins[2]], np.float64) if len(ins) > 2 and ins[2] else np.zeros(C)
        elif p.op == "ConvTranspose":
            g = int(p.attrs.get("group", 1))
            k = W.shape[2:]
            Wn = (W.reshape((g, W.shape[0] // g, W.shape[1]) + k)
                  * s.reshape((g, 1, W.shape[1]) + (1,) * len(k))).reshape(W.shape)
            b = np.asarray(c[ins[2]], np.float64) if len(ins) > 2 and ins[2] else np.zeros(C)
        elif p.op == _LINEAR:
            Wn = W * s[:, None]
            b = np.asarray(c[ins[2]], np.float64) if ins[2] else np.zeros(C)
        else:  # BatchNormalization: y' = (s*scale) * xhat + (s*B + t)
            Wn = np.asarray(c[ins[1]], np.float64) * s
            b = np.asarray(c[ins[2]], np.float64)
        bn = b * s + t
        new_w = self._derive(ins[1], Wn.astype(np.float32), "folded", uses)
        bias_slot = 2
        old_b = ins[bias_slot] if len(ins) > bias_slot else ""
        if old_b:
            new_b = self._derive(old_b, bn.astype(np.float32), "folded", uses)
        else:
            # a new bias, named after the weight ("conv1.weight" -> "conv1.bias")
            new_b = self._fresh(ins[1][:-len(".weight")] + ".bias" if ins[1].endswith(".weight")
                                else ins[1] + "_bias")
            c[new_b] = bn.astype(np.float32)
        p.inputs = list(ins) + [""] * (3 - len(ins)) if len(ins) < 3 else list(ins)
        p.inputs[1], p.inputs[bias_slot] = new_w, new_b
        uses[new_w] = uses[new_b] = 1
        return True

    def _merge_affines(self):
        uses = self._uses()
        prod = self._producers()
        drop = set()
        for a in self.nodes:
            if a.op != _AFFINE:
                continue
            p = prod.get(a.inputs[0])
            if p is None or p.op != _AFFINE or id(p) in drop or uses[a.inputs[0]] != 1 \
                    or a.inputs[0] in self.output_names:
                continue
            s1 = 1.0 if p.attrs["scale"] is None else np.asarray(p.attrs["scale"], np.float64)
            t1 = 0.0 if p.attrs["shift"] is None else np.asarray(p.attrs["shift"], np.float64)
            s2 = 1.0 if a.attrs["scale"] is None else np.asarray(a.attrs["scale"], np.float64)
            t2 = 0.0 if a.attrs["shift"] is None else np.asarray(a.attrs["shift"], np.float64)
            try:
                full = _broadcast(*[np.shape(v) for v in (s1, t1, s2, t2)])
            except _Invalid:
                continue
            if len(_varying_axes(full)) > 1:  # the merged constant would vary along several axes
                continue
            s, t = np.asarray(s1 * s2), np.asarray(t1 * s2 + t2)
            if isinstance(_affine_layout(s, t), str):
                continue
            a.attrs = {"scale": s, "shift": t, "from": a.attrs["from"]}
            a.inputs[0] = p.inputs[0]
            drop.add(id(p))
            prod[a.outputs[0]] = a
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _assign_params(self):
        """Constants read as weights become module parameters (trainable) or buffers (BN statistics,
        affine constants); the rest (shapes, scales, pads) stay Python constants."""
        slots = {"Conv": {1: True, 2: True}, "ConvTranspose": {1: True, 2: True}, _LINEAR: {1: True, 2: True},
                 "Gemm": {1: True, 2: True}, "BatchNormalization": {1: True, 2: True, 3: False, 4: False}}
        self.params = {}       # onnx name -> (key, shape, trainable)
        self.param_values = []  # (key, float32 array, trainable)
        taken = set()
        for n in self.nodes:
            for k, trainable in slots.get(n.op, {}).items():
                name = n.inputs[k] if k < len(n.inputs) else ""
                if not name or name not in self.consts or name in self.params:
                    continue
                v = np.asarray(self.consts[name])
                if v.dtype.kind != "f":
                    self.static_problems.append((n.name, n.src, f"weight {name!r} has dtype {v.dtype} (float only)"))
                    continue
                if v.size == 0:
                    self.static_problems.append((n.name, n.src, f"weight {name!r} is empty {list(v.shape)}"))
                    continue
                key = sanitize(name, taken)
                self.params[name] = (key, tuple(v.shape), trainable)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), trainable))
        for n in self.nodes:
            if n.op != _AFFINE:
                continue
            lay = _affine_layout(n.attrs["scale"], n.attrs["shift"])
            if isinstance(lay, str):
                n.attrs["problem"] = lay
                continue
            d, afe, ndim, s, t = lay
            base = sanitize(n.name, taken)
            keys = []
            for suffix, v in (("weight", s), ("bias", t), ("running_mean", np.zeros(d)), ("running_var", np.ones(d))):
                key = sanitize(f"{base}.{suffix}", taken)
                self.params[f"\0{key}"] = (key, (d,), False)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), False))
                keys.append(f"\0{key}")
            n.attrs.update(d=d, afe=afe, ndim=ndim, keys=keys)
        # the module holds the weights; keep no second copy unless a node also reads one as a constant
        as_const = {i for n in self.nodes for k, i in enumerate(n.inputs) if i and k not in slots.get(n.op, {})}
        for name in self.params:
            if name in self.consts and name not in as_const and name not in self.output_names:
                del self.consts[name]

    # ---- checks ----
    def unknown_op_problems(self):
        have = _engine_ops()
        probs = []
        for n in self.nodes:
            h = _HANDLERS.get(n.op)
            if h is None:
                if n.op not in _FOLDABLE:  # a foldable op on a computed tensor is reported when traced
                    probs.append((n.name, n.src, _unknown_reason(n)))
                continue
            missing = [e for e in _NEEDS.get(n.op, ()) if e not in have]
            if missing:
                probs.append((n.name, n.src, f"needs the engine op {missing[0]!r}, which this build of cnnnative "
                              "lacks"))
        return probs

    def dry_shapes(self):
        """Input shapes to validate with (symbolic batch -> 1), or None when a dimension is unknown."""
        shapes = []
        for k, (name, dims, _) in enumerate(self.inputs):
            if dims is None:
                return None
            dims = [1 if (d is None and i == 0) else d for i, d in enumerate(dims)]
            if any(d is None for d in dims) or len(dims) == 0:
                return None
            shapes.append(dims)
        return shapes

    # ---- replay ----
    def run(self, xs):
        """Emits the graph under the current GraphBuilder; returns the outputs (Tensor or numpy constant).
        Raises InvalidModelError listing every node that breaks the ONNX specification for these input
        shapes, else UnsupportedError listing every node that could not be emitted."""
        b = current()
        if len(xs) != len(self.input_names):
            raise ValueError(f"this ONNX model takes {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(xs)}")
        tr = _Trace(self, b)
        for name, x in zip(self.input_names, xs):
            if not isinstance(x, Tensor):
                raise TypeError(f"input {name!r}: expected a traced Tensor, got {type(x).__name__}")
            tr.env[name] = x
        problems, invalid = list(self.static_problems), list(self.invalid)
        poisoned = set(self.failed)
        for node in self.nodes:
            if any(i in poisoned for i in node.inputs if i):
                poisoned.update(o for o in node.outputs if o)
                if node.op not in _HANDLERS and node.op not in _FOLDABLE and not _other_domain(node):
                    problems.append((node.name, node.src, "operator not supported"))
                continue
            try:
                outs = tr.node(node)
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - classified: invalid, unsupported, engine error, internal
                _classify(node, e, invalid, problems)
                poisoned.update(o for o in node.outputs if o)
                continue
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for o, v in zip(node.outputs, outs):
                if o:
                    tr.env[o] = v
        if invalid:
            raise InvalidModelError(invalid)
        if problems:
            raise UnsupportedError(problems)
        res = []
        for o in self.output_names:
            v = tr.env.get(o)
            if v is None:
                if o in self.consts:
                    v = np.asarray(self.consts[o])
                elif o in self.params:
                    v = tr.tensor(o)
                else:
                    raise InvalidModelError([(o, "graph output", "is produced by no node")])
            res.append(v)
        return res


def _other_domain(n):
    return n.op != n.src and not n.op.startswith(("?", "$"))


def _unknown_reason(n):
    return "operators outside the default ONNX domain are not supported" if _other_domain(n) \
        else "operator not supported"


def _classify(n, e, invalid, unsupported):
    """Appends node n's failure `e` to the invalid or the unsupported problems."""
    if isinstance(e, _Invalid):
        invalid.append((n.name, n.src, str(e)))
    elif isinstance(e, _Unsupported):
        unsupported.append((n.name, n.src, str(e)))
    elif isinstance(e, _core.Error):
        unsupported.append((n.name, n.src, f"the engine rejects it: {e}"))
    else:  # a bug of the importer: still one of the documented errors, naming the node
        invalid.append((n.name, n.src, f"internal error of the importer (please report it): "
                        f"{type(e).__name__}: {str(e)[:300]}"))



class _Trace:
    def __init__(self, prog: _Program, builder):
        self.p, self.b, self.env = prog, builder, {}
        self.folded_bytes = 0

    def tensor(self, name):
        v = self.env.get(name)
        if isinstance(v, Tensor):
            return v
        if name in self.p.params:
            key, shape, trainable = self.p.params[name]
            return self.b.param(key, shape, trainable)
        return None

    def node(self, node):
        h = _HANDLERS.get(node.op)
        vals = [self.value(i) for i in node.inputs]
        if node.op in _FOLDABLE and any(v is not None for v in vals) and \
                all(v is None or isinstance(v, np.ndarray) for v in vals):
            outs = [np.asarray(v) for v in _fold(node, vals)]
            self.folded_bytes += sum(v.nbytes for v in outs)
            if self.folded_bytes > FOLD_MAX_TOTAL_BYTES:
                raise _Unsupported(f"the constants computed while tracing add up to more than "
                                   f"{_fmt_bytes(FOLD_MAX_TOTAL_BYTES)}")
            return outs
        if node.op == "Shape" and vals and isinstance(vals[0], Tensor):
            return _fold(node, vals)
        if h is None:
            if node.op in _FOLDABLE and not _other_domain(node):
                raise _Unsupported("supported on constants only (folded at import); here an input is computed "
                                   "from the model input")
            raise _Unsupported(_unknown_reason(node))
        return h(_Ctx(self, node, vals))

    def value(self, name):
        if not name:
            return None
        if name in self.env:
            return self.env[name]
        if name in self.p.consts:
            return np.asarray(self.p.consts[name])
        if name in self.p.params:
            return self.tensor(name)
        raise _Invalid(f"input {name!r} is not produced by any node")


class _Ctx:
    """What a handler sees of one node: its attributes, inputs as tensors or constants, and an emitter."""

    def __init__(self, tr: _Trace, node: _Node, vals):
        self.tr, self.node, self.vals, self.k = tr, node, vals, 0
        self.b = tr.b

    @property
    def opset(self):
        return self.tr.p.opset

    def attr(self, name, default=None):
        return self.node.attrs.get(name, default)

    def ints(self, name, default, n):
        v = self.node.attrs.get(name)
        if v is None:
            return [default] * n
        v = [int(x) for x in v]
        if len(v) != n:
            raise _Invalid(f"attribute {name}={v} has {len(v)} values, expected {n}")
        return v

    def has(self, k):
        return k < len(self.node.inputs) and bool(self.node.inputs[k])

    def t(self, k, what="input"):
        """Input k as a traced tensor (a weight held by the module is a tensor too)."""
        name = self.node.inputs[k] if k < len(self.node.inputs) else ""
        v = self.vals[k] if k < len(self.vals) else None
        if isinstance(v, Tensor):
            return v
        t = self.tr.tensor(name) if name else None
        if t is not None:
            return t
        if v is None:
            raise _Unsupported(f"missing {what}")
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1 and v.size and np.all(v == v.flat[0]) \
                and "fill" in _engine_ops():
            return self.op("fill", [], {"shape": [int(d) for d in v.shape], "value": float(v.flat[0])})
        raise _Unsupported(f"{what} {name!r} is a constant here; the engine needs it computed from the model "
                           "input (constant tensors are only supported as weights, or when all values are equal)")

    def c(self, k, what="input"):
        """Input k as a numpy constant (None when absent)."""
        if not self.has(k):
            return None
        v = self.vals[k]
        if isinstance(v, np.ndarray):
            return v
        name = self.node.inputs[k]
        if name in self.tr.p.consts:
            return np.asarray(self.tr.p.consts[name])
        raise _Unsupported(f"{what} {name!r} must be a constant (an initializer or computable from shapes)")

    def need(self, *ops):
        have = _engine_ops()
        for op in ops:
            if op not in have:
                raise _Unsupported(f"needs the engine op {op!r}, which this build of cnnnative lacks")

    def op(self, op, inputs, attrs=None, n_out=None):
        """Emits engine op `op`. Integer attributes and the shapes it gives are kept within the engine's limits
        (MAX_DIM per value, MAX_ELEMENTS per tensor), so that no size arithmetic of the core can overflow."""
        attrs = attrs or {}
        for k, v in attrs.items():
            vals = v if isinstance(v, (list, tuple)) else [v]
            if any(isinstance(x, (int, np.integer)) and abs(int(x)) > MAX_DIM for x in vals):
                raise _Unsupported(f"{op}: {k}={list(vals)} exceeds the engine's limit ({MAX_DIM})")
        if isinstance(attrs.get("shape"), (list, tuple)) and _numel(abs(int(d)) for d in attrs["shape"]) > MAX_ELEMENTS:
            raise _Unsupported(f"{op}: a tensor of shape {list(attrs['shape'])} exceeds the engine's limit "
                               f"({MAX_ELEMENTS} elements)")
        name = self.node.name if self.k == 0 else f"{self.node.name}:{op}{self.k}"
        self.k += 1
        outs = self.b.op(op, inputs, attrs, name)
        for t in outs:
            s = list(t.shape)
            if any(d < 1 or d > MAX_DIM for d in s) or _numel(s) > MAX_ELEMENTS:
                raise _Unsupported(f"{op} gives a tensor of shape {s}, beyond the engine's limits (dimensions 1 to "
                                   f"{MAX_DIM}, {MAX_ELEMENTS} elements)")
        return outs if n_out else outs[0]

    # ---- composite emitters ----
    def reshape(self, x, shape):
        shape = [int(s) for s in shape]
        if list(x.shape) == shape:
            return x
        return self.op("reshape", [x], {"shape": shape})

    def crop(self, x, axis, start, length):
        """x[..., start:start+length, ...] along axis (split)."""
        n = x.shape[axis]
        if start == 0 and length == n:
            return x
        if length <= 0:
            raise _Unsupported(f"the result would be empty along axis {axis}")
        self.need("split")
        parts = [(s, i) for i, s in enumerate((start, length, n - start - length)) if s > 0]
        outs = self.op("split", [x], {"axis": int(axis), "sizes": [s for s, _ in parts]}, n_out=True)
        return outs[[i for _, i in parts].index(1)]

    def pad(self, x, axis, before, after, value):
        """Explicit constant padding along axis: concat with `fill` tensors (negative amounts crop)."""
        if before < 0 or after < 0:
            n = x.shape[axis]
            x = self.crop(x, axis, max(0, -before), n - max(0, -before) - max(0, -after))
            before, after = max(0, before), max(0, after)
        if before == 0 and after == 0:
            return x
        self.need("fill", "concat")
        parts = []
        for amount, where in ((before, 0), (after, 1)):
            if amount:
                s = list(x.shape)
                s[axis] = amount
                f = self.op("fill", [], {"shape": s, "value": float(value)})
                parts.append((where, f))
        seq = [f for w, f in parts if w == 0] + [x] + [f for w, f in parts if w == 1]
        return self.op("concat", seq, {"axis": int(axis)})

    def batch_norm(self, x, w, b_, mean, var, eps, momentum, training):
        attrs = {"eps": float(eps), "momentum": float(momentum), "training": int(training),
                 "track_running_stats": 1}
        return self.op("batch_norm", [x, w, b_, mean, var], attrs, n_out=True)[0]


# ---------------------------------------------------------------------------------------------------
# handlers: one per supported ONNX op


def _spatial_pads(c: _Ctx, in_sp, k_eff, strides):
    sd = len(in_sp)
    auto = c.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = c.attr("pads")
        pads = [0] * (2 * sd) if pads is None else [int(p) for p in pads]
        if len(pads) != 2 * sd:
            raise _Invalid(f"pads={pads} should hold {2 * sd} values (2 per spatial axis)")
        if min(pads) < 0:
            raise _Invalid(f"negative pads {pads}")
        return list(zip(pads[:sd], pads[sd:]))
    if auto == "VALID":
        return [(0, 0)] * sd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, s, k in zip(in_sp, strides, k_eff):
            total = max((-(-i // s) - 1) * s + k - i, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return out
    raise _Invalid(f"auto_pad={auto!r}")


def _conv_out(n, k_eff, s, pb, pe):
    return (n + pb + pe - k_eff) // s + 1


def _pool_out(n, k_eff, s, pb, pe, ceil):
    num = n + pb + pe - k_eff
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + pb:
        o -= 1
    return o


def _to_2d(c, x, what):
    """[N, C, L] -> [N, C, 1, L] for 1-D ops; 4-D passes; others are unsupported."""
    r = len(x.shape)
    if r == 4:
        return x, False
    if r == 3:
        return c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]]), True
    raise _Unsupported(f"{r - 2}-D {what} (input {list(x.shape)}); only 1-D and 2-D are supported")


def h_conv(c: _Ctx):
    x, w = c.t(0, "X"), c.t(1, "W")
    bias = c.t(2, "B") if c.has(2) else None
    r = len(x.shape)
    if r not in (3, 4):
        raise _Unsupported(f"{r - 2}-D convolution (input {list(x.shape)}); only 1-D and 2-D are supported")
    if len(w.shape) != r:
        raise _Invalid(f"W {list(w.shape)} does not match X {list(x.shape)} (same rank expected)")
    sd = r - 2
    ks = list(w.shape[2:])
    if c.attr("kernel_shape") is not None and [int(k) for k in c.attr("kernel_shape")] != ks:
        raise _Invalid(f"kernel_shape={list(c.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    group = int(c.attr("group", 1))
    C, M = x.shape[1], w.shape[0]
    if group < 1 or C % group or M % group or w.shape[1] * group != C:
        raise _Invalid(f"group={group} with X {list(x.shape)} and W {list(w.shape)}: W must be [M, C/group, ...] "
                       "with C and M divisible by group")
    if bias is not None and list(bias.shape) != [M]:
        raise _Invalid(f"B {list(bias.shape)} must be [{M}] (one bias per output channel)")
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    pads = _spatial_pads(c, x.shape[2:], k_eff, strides)
    in_sp = list(x.shape[2:])
    outs = [_conv_out(n, k, s, pb, pe) for n, k, s, (pb, pe) in zip(in_sp, k_eff, strides, pads)]
    if min(outs) < 1:
        raise _Invalid(f"the output would be empty: X {list(x.shape)}, kernel {ks}, dilations {dil}, pads {pads}")
    one_d = sd == 1
    if one_d:
        x = c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = c.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, k_eff, pads, in_sp = [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, [1] + in_sp
    sym = []
    for ax, ((pb, pe), n, k, s) in enumerate(zip(pads, in_sp, k_eff, strides)):
        if pb == pe or _conv_out(n, k, s, pb, pb) == _conv_out(n, k, s, pb, pe):
            sym.append(pb)
        else:
            m = min(pb, pe)
            x = c.pad(x, 2 + ax, pb - m, pe - m, 0.0)
            sym.append(m)
    ins = [x, w] + ([bias] if bias is not None else [])
    y = c.op("conv2d", ins, {"stride": strides, "padding": sym, "dilation": dil, "groups": group})
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def h_conv_transpose(c: _Ctx):
    c.need("conv_transpose2d")
    x, w = c.t(0, "X"), c.t(1, "W")
    bias = c.t(2, "B") if c.has(2) else None
    r = len(x.shape)
    if r not in (3, 4) or len(w.shape) != r:
        raise _Unsupported(f"{r - 2}-D transposed convolution (X {list(x.shape)}, W {list(w.shape)}); "
                           "only 1-D and 2-D are supported")
    sd = r - 2
    ks = list(w.shape[2:])
    if c.attr("kernel_shape") is not None and [int(k) for k in c.attr("kernel_shape")] != ks:
        raise _Invalid(f"kernel_shape={list(c.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    opad = c.ints("output_padding", 0, sd)
    group = int(c.attr("group", 1))
    if group < 1 or x.shape[1] != w.shape[0] or w.shape[0] % group:
        raise _Invalid(f"group={group} with X {list(x.shape)} and W {list(w.shape)}: W must be [C, M/group, ...] "
                       "with C divisible by group")
    if bias is not None and list(bias.shape) != [w.shape[1] * group]:
        raise _Invalid(f"B {list(bias.shape)} must be [{w.shape[1] * group}] (one bias per output channel)")
    in_sp = list(x.shape[2:])
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_sp, ks, dil)]
    oshape = c.attr("output_shape")
    if oshape is not None:
        if len(oshape) < sd:
            raise _Invalid(f"output_shape={list(oshape)} has fewer values than the {sd} spatial axes")
        oshape = [int(v) for v in oshape][-sd:]
    auto = c.attr("auto_pad", "NOTSET") or "NOTSET"
    crops = []  # (start crop, end crop relative to the full output; negative end = extension)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        target = oshape or [i * s for i, s in zip(in_sp, strides)]
        for f, op_, t in zip(full, opad, target):
            total = f + op_ - t
            pb = total // 2 if auto == "SAME_UPPER" else total - total // 2
            crops.append((pb, f - pb - t))
    elif auto in ("NOTSET", "VALID"):
        pads = [0] * (2 * sd) if auto == "VALID" or c.attr("pads") is None else [int(p) for p in c.attr("pads")]
        if len(pads) != 2 * sd:
            raise _Invalid(f"pads={pads} should hold {2 * sd} values (2 per spatial axis)")
        for ax in range(sd):
            pb, pe = pads[ax], pads[sd + ax]
            if oshape is not None:
                crops.append((pb, full[ax] - pb - oshape[ax]))
            else:
                crops.append((pb, pe - opad[ax]))
    else:
        raise _Invalid(f"auto_pad={auto!r}")
    one_d = sd == 1
    if one_d:
        x = c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = c.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, crops = [1] + strides, [1] + dil, [(0, 0)] + crops
    padding, out_pad, extra = [], [], []
    for (cs, ce), s, d in zip(crops, strides, dil):
        if cs < 0:
            raise _Unsupported(f"pads/output_shape need {-cs} extra row(s) before the output")
        if 0 <= cs - ce < max(s, d):
            padding.append(cs), out_pad.append(cs - ce), extra.append((0, 0))
        elif ce >= 0:
            p = min(cs, ce)
            padding.append(p), out_pad.append(0), extra.append((cs - p, ce - p))
        else:
            raise _Unsupported(f"output_padding/output_shape extend the output by {-ce} beyond what the "
                               f"engine's output_padding (< stride {s} or dilation {d}) allows")
    ins = [x, w] + ([bias] if bias is not None else [])
    y = c.op("conv_transpose2d", ins, {"stride": strides, "padding": padding, "output_padding": out_pad,
                                       "dilation": dil, "groups": group})
    for ax, (s0, e0) in enumerate(extra):
        if s0 or e0:
            n = y.shape[2 + ax]
            y = c.crop(y, 2 + ax, s0, n - s0 - e0)
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def _pool(c: _Ctx, kind):
    x = c.t(0, "X")
    if kind == "max" and len(c.node.outputs) > 1 and c.node.outputs[1]:
        raise _Unsupported("the Indices output is not supported")
    r = len(x.shape)
    if r not in (3, 4):
        raise _Unsupported(f"{r - 2}-D pooling (input {list(x.shape)}); only 1-D and 2-D are supported")
    sd = r - 2
    ks = c.attr("kernel_shape")
    if ks is None or len(ks) != sd:
        raise _Invalid(f"kernel_shape={ks} for a {sd}-D input")
    ks = [int(k) for k in ks]
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    if kind == "avg" and any(d != 1 for d in dil):
        raise _Unsupported(f"dilations={dil} (the engine's average pooling has no dilation)")
    ceil = 1 if int(c.attr("ceil_mode", 0)) else 0
    cip = 1 if int(c.attr("count_include_pad", 0)) else 0
    if kind == "max" and int(c.attr("storage_order", 0)) != 0 and len(c.node.outputs) > 1:
        raise _Unsupported("storage_order=1")
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    in_sp = list(x.shape[2:])
    pads = _spatial_pads(c, in_sp, k_eff, strides)
    expect = [_pool_out(n, k, s, pb, pe, ceil) for n, k, s, (pb, pe) in zip(in_sp, k_eff, strides, pads)]
    if min(expect) < 1:
        raise _Invalid(f"kernel {ks} (dilations {dil}) does not fit input {list(x.shape)} with pads {pads}")
    x, one_d = _to_2d(c, x, "pooling")
    if one_d:
        ks, strides, dil, k_eff, pads, in_sp = [1] + ks, [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, \
            [1] + in_sp
    sym, crops = [], {}
    for ax, ((pb, pe), n, k, ke, s) in enumerate(zip(pads, in_sp, ks, k_eff, strides)):
        half = k // 2
        o = _pool_out(n, ke, s, pb, pe, ceil)
        if pb == pe and pb <= half:
            sym.append(pb)
            continue
        if pb != pe and pb <= half and _pool_out(n, ke, s, pb, pb, ceil) == o:
            end = (o - 1) * s + ke - 1  # padded coordinates of the last window's last cell
            if kind == "max" or not cip or min(end, n + pb + pe - 1) == min(end, n + 2 * pb - 1):
                sym.append(pb)
                continue
        p = max(pb, pe)  # symmetric max(pb, pe), then drop the leading windows (they are stride-aligned)
        if not ceil and p <= half and (p - pb) % s == 0 and (n + 2 * p - ke) // s + 1 >= (p - pb) // s + o:
            c.need("split")
            sym.append(p)
            crops[ax] = ((p - pb) // s, o)
            continue
        if kind == "avg" and not cip:
            raise _Unsupported(f"pads {list(pads[ax])} on axis {ax} with count_include_pad=0 cannot be "
                               "expressed with the engine's symmetric pool padding")
        m = min(pb, pe, half)
        x = c.pad(x, 2 + ax, pb - m, pe - m, _NEG_BIG if kind == "max" else 0.0)
        sym.append(m)
    attrs = {"kernel": ks, "stride": strides, "padding": sym, "ceil_mode": ceil}
    if kind == "max":
        attrs.update(dilation=dil, training=int(c.b.training))
        y = c.op("max_pool2d", [x], attrs, n_out=True)[0]
    else:
        attrs["count_include_pad"] = 1 if cip else 0
        y = c.op("avg_pool2d", [x], attrs)
    for ax, (start, length) in crops.items():
        y = c.crop(y, 2 + ax, start, length)
    got = list(y.shape[3:]) if one_d else list(y.shape[2:])
    if got != expect:
        raise _Unsupported(f"ceil_mode={ceil} with pads {pads}: the engine gives spatial size {got}, ONNX {expect}")
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def h_maxpool(c):
    return _pool(c, "max")


def h_avgpool(c):
    return _pool(c, "avg")


def h_global_avg(c: _Ctx):
    x = c.t(0, "X")
    x4, one_d = _to_2d(c, x, "global pooling")
    y = c.op("global_avg_pool", [x4])
    return c.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y


def h_global_max(c: _Ctx):
    x = c.t(0, "X")
    x4, one_d = _to_2d(c, x, "global pooling")
    h, w = x4.shape[2], x4.shape[3]
    y = c.op("max_pool2d", [x4], {"kernel": [h, w], "stride": [h, w], "training": int(c.b.training)}, n_out=True)[0]
    return c.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y


def h_batchnorm(c: _Ctx):
    x = c.t(0, "X")
    if int(c.attr("training_mode", 0)):
        raise _Unsupported("training_mode=1 (batch statistics as outputs); export the model in eval mode")
    if any(o for o in c.node.outputs[1:]):
        raise _Unsupported("the running-statistics outputs (training mode) are not supported")
    if int(c.attr("spatial", 1)) != 1:
        raise _Unsupported("spatial=0")
    params = [c.t(k, n) for k, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
    eps, mom = float(c.attr("epsilon", 1e-5)), float(c.attr("momentum", 0.9))
    r = len(x.shape)
    if r >= 2:
        for p, what in zip(params, ("scale", "B", "mean", "var")):
            if list(p.shape) != [x.shape[1]]:
                raise _Invalid(f"{what} {list(p.shape)} must be [{x.shape[1]}] (one value per channel of X "
                               f"{list(x.shape)})")
    if r in (2, 4):
        return c.batch_norm(x, *params, eps, 1.0 - mom, c.b.training)
    if r == 3:
        y = c.batch_norm(c.reshape(x, list(x.shape) + [1]), *params, eps, 1.0 - mom, c.b.training)
        return c.reshape(y, x.shape)
    raise _Unsupported(f"input of rank {r} (2-D, 3-D and 4-D are supported)")


def h_linear(c: _Ctx):
    x, w = c.t(0, "A"), c.t(1, "B")
    bias = c.t(2, "C") if c.has(2) else None
    post = None  # a computed Gemm C of the output's full shape is added after the product
    if bias is not None and int(np.prod(bias.shape)) != w.shape[0]:
        bias, post = None, bias
    if bias is not None and list(bias.shape) != [w.shape[0]]:
        bias = c.reshape(bias, [w.shape[0]])
    r = len(x.shape)
    if c.attr("gemm") and r != 2:
        raise _Invalid(f"A must be 2-D, got {list(x.shape)}")
    if r < 2:
        raise _Unsupported(f"a {r}-D left operand (only 2-D and batched N-D x 2-D products)")
    if x.shape[-1] != w.shape[1]:
        raise _Invalid(f"inner dimensions differ: {list(x.shape)} x weight of {w.shape[1]} inputs")
    x2 = x if r == 2 else c.reshape(x, [-1, x.shape[-1]])
    y = c.op("linear", [x2, w] + ([bias] if bias is not None else []))
    out = list(x.shape[:-1]) + ([] if c.attr("vector") else [w.shape[0]])
    y = c.reshape(y, out)
    if post is not None:
        if list(post.shape) != out:
            raise _Unsupported(f"C {list(post.shape)} neither a bias of {w.shape[0]} values nor of the output "
                               f"shape {out}")
        y = c.op("add", [y, post])
    return y


def h_gemm(c: _Ctx):
    if int(c.attr("transA", 0)):
        raise _Unsupported("transA=1 (the engine has no transpose; only A [M, K] is supported)")
    if not int(c.attr("transB", 0)) or float(c.attr("alpha", 1.0)) != 1.0:
        raise _Unsupported("B must be a constant when transB=0 or alpha != 1 (it is transposed/scaled at import)")
    if c.has(2) and float(c.attr("beta", 1.0)) != 1.0:
        raise _Unsupported("C must be a constant when beta != 1")
    x, w = c.t(0, "A"), c.t(1, "B")
    if len(x.shape) != 2 or len(w.shape) != 2:
        raise _Invalid(f"A and B must be 2-D, got {list(x.shape)} and {list(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise _Invalid(f"inner dimensions differ: A {list(x.shape)}, B^T {list(w.shape)}")
    ins = [x, w]
    if c.has(2):
        bias = c.t(2, "C")
        if int(np.prod(bias.shape)) != w.shape[0]:
            raise _Unsupported(f"C {list(bias.shape)} is not a bias of {w.shape[0]} values")
        ins.append(c.reshape(bias, [w.shape[0]]))
    return c.op("linear", ins)


def h_matmul(c: _Ctx):
    raise _Unsupported("MatMul of two computed tensors (only a constant 1-D/2-D right operand, as a linear layer)")


def _act(op, **attrs):
    def h(c: _Ctx):
        extra = {k: float(c.attr(k2, d)) for k, (k2, d) in attrs.items()}
        return c.op(op, [c.t(0, "X")], extra)
    return h


def h_affine(c: _Ctx):
    if "problem" in c.node.attrs:
        raise _Unsupported(c.node.attrs["problem"])
    x = c.t(0, "X")
    a = c.node.attrs
    s = list(x.shape)
    r = len(s)
    if a["ndim"] > r:
        raise _Unsupported(f"the constant operand has rank {a['ndim']} > the tensor's rank {r} (broadcast grows it)")
    keys = [c.tr.tensor(k) for k in a["keys"]]
    if a["afe"] is None:
        x2 = c.reshape(x, [int(np.prod(s)), 1])
    else:
        axis = r - a["afe"]
        if s[axis] != a["d"]:
            raise _Unsupported(f"the constant of size {a['d']} along axis {axis} would broadcast the tensor {s}")
        if axis == 1 and r in (2, 4):
            x2 = x
        else:
            x2 = c.reshape(x, [int(np.prod(s[:axis])), s[axis], int(np.prod(s[axis + 1:])), 1])
    y = c.batch_norm(x2, *keys, 0.0, 0.0, False)
    return c.reshape(y, s)


def _binary_tensors(c: _Ctx, what):
    for k in range(2):
        if not isinstance(c.vals[k], Tensor):
            v = c.vals[k]
            if isinstance(v, np.ndarray):
                raise _Unsupported(f"{what} with a constant of dtype {v.dtype} {list(v.shape)} "
                                   "(float constants only, varying along at most one axis)")
    return c.t(0, "A"), c.t(1, "B")


def h_add(c: _Ctx):
    a, b = _binary_tensors(c, "Add")
    if a.shape != b.shape:
        raise _Unsupported(f"broadcasting Add of two computed tensors {list(a.shape)} + {list(b.shape)} "
                           "(same shapes only)")
    return c.op("add", [a, b])


def h_sum(c: _Ctx):
    ts = [c.t(k, f"input {k}") for k in range(len(c.node.inputs))]
    if any(t.shape != ts[0].shape for t in ts):
        raise _Unsupported(f"Sum of differently shaped tensors {[list(t.shape) for t in ts]}")
    y = ts[0]
    for t in ts[1:]:
        y = c.op("add", [y, t])
    return y


def h_mul_div(c: _Ctx):
    _binary_tensors(c, c.node.op)
    if c.node.op == "Div" and isinstance(c.vals[0], np.ndarray):
        raise _Unsupported("a constant divided by a tensor (no reciprocal op)")
    raise _Unsupported(f"{c.node.op} of two computed tensors (only by constants: scalars or per-channel)")


def h_sub(c: _Ctx):
    _binary_tensors(c, "Sub")
    raise _Unsupported("Sub of two computed tensors of different shapes")


def h_softmax(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    r = len(s)
    legacy = c.opset < 13
    axis = _axis(c.attr("axis", 1 if legacy else -1), r)
    if legacy:  # coerced to 2-D [prod(:axis), prod(axis:)]
        shape2 = [int(np.prod(s[:axis])), int(np.prod(s[axis:]))]
    else:
        if int(np.prod(s[axis + 1:])) != 1:
            raise _Unsupported(f"axis={c.attr('axis', -1)} of a {s} tensor (the engine's softmax runs over the "
                               "last axis)")
        shape2 = [int(np.prod(s[:axis])), s[axis]]
    return c.reshape(c.op("softmax", [c.reshape(x, shape2)]), s)


def h_concat(c: _Ctx):
    ts = [c.t(k, f"input {k}") for k in range(len(c.node.inputs)) if c.node.inputs[k]]
    if not ts:
        raise _Invalid("no inputs")
    if c.attr("axis") is None:
        raise _Invalid("the required attribute axis is missing")
    r = len(ts[0].shape)
    axis = _axis(c.attr("axis"), r)
    for t in ts[1:]:
        if len(t.shape) != r or any(d != e for i, (d, e) in enumerate(zip(t.shape, ts[0].shape)) if i != axis):
            raise _Invalid(f"inputs of shapes {[list(t.shape) for t in ts]} differ outside axis {axis}")
    if len(ts) == 1:
        return ts[0]
    c.need("concat")
    return c.op("concat", ts, {"axis": axis})


def h_flatten(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    axis = _axis(c.attr("axis", 1), len(s), inclusive=True)
    if axis == 1 and len(s) > 2:
        return c.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    return c.reshape(x, [int(np.prod(s[:axis])), int(np.prod(s[axis:]))])


def h_reshape(c: _Ctx):
    x = c.t(0, "data")
    shape = c.c(1, "shape")
    if shape is None:
        shape = c.attr("shape")  # opset < 5
        if shape is None:
            raise _Invalid("missing the shape")
        shape = np.asarray(shape, np.int64)
    allowzero = int(c.attr("allowzero", 0))
    t = _int_vector(shape, "shape")
    if allowzero and 0 in t:
        raise _Unsupported("allowzero=1 with a 0 in the shape (zero-size tensors)")
    s = list(x.shape)
    if not allowzero:
        if any(v == 0 and i >= len(s) for i, v in enumerate(t)):
            raise _Invalid(f"shape {t} copies (0) a dimension beyond the input's rank {len(s)}")
        t = [s[i] if v == 0 else v for i, v in enumerate(t)]
    rest = _numel(s[1:])
    # [N, -1] / [0, -1] / [declared batch, rest]: a flatten, whatever batch the model is compiled for
    if len(t) == 2 and len(s) >= 2 and t[1] in (-1, rest) and t[0] in (s[0], c.tr.p.declared_batch):
        return x if len(s) == 2 else c.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    return c.reshape(x, _reshape_target(s, t, 1))


def h_squeeze_unsqueeze(c: _Ctx):
    x = c.t(0, "data")
    axes = c.c(1, "axes") if c.has(1) else c.attr("axes")
    axes = None if axes is None else _int_vector(np.asarray(axes, np.int64) if isinstance(axes, list) else axes,
                                                  "axes")
    if c.node.op == "Unsqueeze":
        if axes is None:
            raise _Invalid("missing axes")
        return c.reshape(x, _unsqueezed_shape(list(x.shape), axes))
    return c.reshape(x, _squeezed_shape(list(x.shape), axes))


def h_identity(c: _Ctx):
    v = c.vals[0]
    return v if v is not None else c.t(0)


def h_dropout(c: _Ctx):
    x = c.t(0, "data")
    if c.opset < 12:
        ratio = float(c.attr("ratio", 0.5))
        training = False
    else:
        r = c.c(1, "ratio")
        ratio = 0.5 if r is None else float(_scalar(r, "ratio"))
        t = c.c(2, "training_mode")
        training = bool(t is not None and _scalar(t, "training_mode"))
    if not 0 <= ratio < 1:
        raise _Invalid(f"ratio={ratio}: must be in [0, 1)")
    if training and ratio > 0:
        raise _Unsupported("training_mode=True: random masks cannot match another runtime's")
    y = x
    if c.b.training and ratio > 0:
        y = c.op("dropout", [x], {"p": ratio, "training": 1})
    outs = [y]
    if len(c.node.outputs) > 1 and c.node.outputs[1]:
        outs.append(np.broadcast_to(np.ones((), bool), x.shape))  # a view: no memory for any shape
    return outs


def h_lrn(c: _Ctx):
    x = c.t(0, "X")
    size = int(c.attr("size"))
    if size % 2 == 0:
        raise _Unsupported(f"size={size}: ONNX centres an even window differently from the engine "
                           "(odd sizes only)")
    c.need("lrn")
    x4, one_d = _to_2d(c, x, "LRN")
    y = c.op("lrn", [x4], {"size": size, "alpha": float(c.attr("alpha", 1e-4)), "beta": float(c.attr("beta", 0.75)),
                           "k": float(c.attr("bias", 1.0))})
    return c.reshape(y, x.shape) if one_d else y


def h_pad(c: _Ctx):
    x = c.t(0, "data")
    mode = c.attr("mode", "constant")
    if mode != "constant":
        raise _Unsupported(f"mode={mode!r} (only 'constant')")
    r = len(x.shape)
    if c.opset < 11:
        pads, value = c.attr("pads", c.attr("paddings")), float(c.attr("value", 0.0))
        pads = None if pads is None else np.asarray(pads, np.int64)
        axes = None
    else:
        pads = c.c(1, "pads")
        v = c.c(2, "constant_value")
        if v is not None and np.asarray(v).dtype.kind not in "biuf":
            raise _Unsupported(f"constant_value of dtype {np.asarray(v).dtype}")
        value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
        axes = c.c(3, "axes")
    if pads is None:
        raise _Invalid("missing pads")
    pads = _int_vector(pads, "pads")
    axes = list(range(r)) if axes is None else [_axis(a, r, "axes") for a in _int_vector(axes, "axes")]
    if len(set(axes)) != len(axes):
        raise _Invalid(f"axes {axes} repeat an axis")
    n = len(axes)
    if len(pads) != 2 * n:
        raise _Invalid(f"pads {pads} should hold {2 * n} values (2 per padded axis)")
    for i, ax in enumerate(axes):
        size = x.shape[ax] + pads[i] + pads[n + i]
        if size < 0:
            raise _Invalid(f"pads {pads} give axis {ax} of size {x.shape[ax]} a negative size {size}")
        if size == 0:
            raise _Unsupported(f"pads {pads} give axis {ax} size 0 (the engine has no zero-size tensors)")
        if size > MAX_DIM or max(abs(pads[i]), abs(pads[n + i])) > MAX_DIM:
            raise _Unsupported(f"pads {pads} exceed the engine's limits ({MAX_DIM} per dimension)")
    for i, ax in enumerate(axes):
        x = c.pad(x, ax, pads[i], pads[n + i], value)
    return x


def _nearest_index(out, n, s, ctm, mode):
    o = np.arange(out, dtype=np.float64)
    if ctm in ("half_pixel", "half_pixel_symmetric"):
        src = (o + 0.5) / s - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / s - 0.5 if out > 1 else np.zeros_like(o)
    elif ctm == "align_corners":
        src = o * (n - 1) / (out - 1) if out > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        src = o / s
    elif ctm == "tf_half_pixel_for_nn":
        src = (o + 0.5) / s
    else:
        return None
    f = np.floor(src)
    d = src - f
    if mode == "round_prefer_floor":
        idx = np.where(d > 0.5, f + 1, f)
    elif mode == "round_prefer_ceil":
        idx = np.where(d >= 0.5, f + 1, f)
    elif mode == "floor":
        idx = f
    elif mode == "ceil":
        idx = np.ceil(src)
    else:
        return None
    return np.clip(idx, 0, n - 1).astype(np.int64)


_CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def h_resize(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    r = len(s)
    op = c.node.op
    mode = c.attr("mode", "nearest")
    if mode != "nearest":
        raise _Unsupported(f"mode={mode!r} (only 'nearest')")
    if op == "Upsample" or c.opset < 11:
        ctm, nm = "asymmetric", "floor"
        scales = c.attr("scales") if (op == "Upsample" and c.opset < 9) else c.c(1, "scales")
        sizes = None
    else:
        ctm = c.attr("coordinate_transformation_mode", "half_pixel")
        nm = c.attr("nearest_mode", "round_prefer_floor")
        if ctm not in _CTMS:
            raise _Invalid(f"coordinate_transformation_mode={ctm!r}: one of {', '.join(_CTMS)}")
        if nm not in _NEAREST_MODES:
            raise _Invalid(f"nearest_mode={nm!r}: one of {', '.join(_NEAREST_MODES)}")
        scales = c.c(2, "scales")
        sizes = c.c(3, "sizes")
        if int(c.attr("antialias", 0)):
            raise _Unsupported("antialias=1")
    axes = c.attr("axes")
    axes = list(range(r)) if axes is None else [_axis(a, r, "axes") for a in axes]
    if len(set(axes)) != len(axes):
        raise _Invalid(f"axes {axes} repeat an axis")
    if scales is not None and np.size(scales) == 0:
        scales = None
    if sizes is not None and np.size(sizes) == 0:
        sizes = None
    if scales is not None and sizes is not None:
        raise _Invalid("both scales and sizes are given (one of them must be empty or absent)")
    full = [1.0] * r
    if scales is not None:
        a_ = np.asarray(scales)
        if a_.dtype.kind not in "iuf" or a_.ndim > 1:
            raise _Invalid(f"scales must be a 1-D float tensor, got {a_.dtype} {list(a_.shape)}")
        vals = [float(v) for v in a_.reshape(-1)]
        if len(vals) != len(axes):
            raise _Invalid(f"scales {vals} do not match the {len(axes)} axes {axes}")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise _Invalid(f"scales {vals}: each must be a finite number > 0")
        for a, v in zip(axes, vals):
            full[a] = v
        outs = [int(math.floor(n * f)) for n, f in zip(s, full)]
    elif sizes is not None:
        vals = _int_vector(sizes, "sizes")
        if len(vals) != len(axes):
            raise _Invalid(f"sizes {vals} do not match the {len(axes)} axes {axes}")
        if any(v < 0 for v in vals):
            raise _Invalid(f"sizes {vals} are negative")
        policy = c.attr("keep_aspect_ratio_policy", "stretch")
        if policy not in ("stretch", "not_larger", "not_smaller"):
            raise _Invalid(f"keep_aspect_ratio_policy={policy!r}: one of stretch, not_larger, not_smaller")
        ratios = [v / s[a] for a, v in zip(axes, vals)]
        if policy in ("not_larger", "not_smaller"):
            rr = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [rr] * len(axes)
        for a, v in zip(axes, ratios):
            full[a] = v
        outs = [int(round(n * f)) if policy != "stretch" else n for n, f in zip(s, full)]
        if policy == "stretch":
            for a, v in zip(axes, vals):
                outs[a] = v
    else:
        raise _Unsupported("neither scales nor sizes is given")
    if r != 4 or full[0] != 1 or full[1] != 1:
        raise _Unsupported(f"scales {full} on a rank-{r} tensor (only the H and W of [N, C, H, W])")
    if any(o < 1 or o > min(MAX_DIM, FOLD_MAX_ELEMENTS) for o in outs):
        raise _Unsupported(f"output size {outs} (dimensions 1 to {min(MAX_DIM, FOLD_MAX_ELEMENTS)} are supported)")
    ints = []
    for n, f, o in zip(s[2:], full[2:], outs[2:]):
        if f < 1 or f != int(f) or o != n * int(f):
            raise _Unsupported(f"scale {f} (output {o} from {n}); only integer upsampling factors are supported")
        idx = _nearest_index(o, n, int(f), ctm, nm)
        if idx is None or not np.array_equal(idx, np.arange(o) // int(f)):
            raise _Unsupported(f"coordinate_transformation_mode={ctm!r} with nearest_mode={nm!r} does not "
                               f"replicate pixels for scale {int(f)}")
        ints.append(int(f))
    if ints == [1, 1]:
        return x
    c.need("upsample_nearest2d")
    return c.op("upsample_nearest2d", [x], {"scale": ints})


def h_slice(c: _Ctx):
    x = c.t(0, "data")
    s = list(x.shape)
    vals = [c.c(k) for k in range(1, len(c.node.inputs))] if c.opset >= 10 else []
    starts, ends, axes, steps = _slice_args(c.node, [None] + vals, len(s))
    y = x
    for st, en, ax, step in zip(starts, ends, axes, steps):
        if int(step) != 1:
            raise _Unsupported(f"steps={int(step)} (only 1)")
        sl = _slice_bounds(s[ax], st, en, 1)
        y = c.crop(y, ax, sl.start, max(0, sl.stop - sl.start))
    return y


_HANDLERS = {
    "Conv": h_conv, "ConvTranspose": h_conv_transpose, "MaxPool": h_maxpool, "AveragePool": h_avgpool,
    "GlobalAveragePool": h_global_avg, "GlobalMaxPool": h_global_max, "BatchNormalization": h_batchnorm,
    _LINEAR: h_linear, "Gemm": h_gemm, "MatMul": h_matmul, "Relu": _act("relu"),
    "LeakyRelu": _act("leaky_relu", negative_slope=("alpha", 0.01)), "Sigmoid": _act("sigmoid"),
    "Tanh": _act("tanh"), "Softmax": h_softmax, _AFFINE: h_affine, "Add": h_add, "Sum": h_sum,
    "Sub": h_sub, "Mul": h_mul_div, "Div": h_mul_div, "Concat": h_concat, "Flatten": h_flatten,
    "Reshape": h_reshape, "Squeeze": h_squeeze_unsqueeze, "Unsqueeze": h_squeeze_unsqueeze,
    "Identity": h_identity, "Dropout": h_dropout, "LRN": h_lrn, "Pad": h_pad, "Resize": h_resize,
    "Upsample": h_resize, "Slice": h_slice,
}
_NEEDS = {"ConvTranspose": ("conv_transpose2d",), "LRN": ("lrn",), "Concat": ("concat",),
          "Resize": ("upsample_nearest2d",), "Upsample": ("upsample_nearest2d",), "Slice": ("split",),
          "Pad": ("fill", "concat")}
_FOLDABLE = set(FOLDABLE_OPS)
_KNOWN_OPS = set(SUPPORTED_OPS) | _FOLDABLE
assert set(SUPPORTED_OPS) <= set(_HANDLERS) | {"Constant"}


# ---------------------------------------------------------------------------------------------------
# the module


class OnnxModule(nn.Module):
    """An imported ONNX model. Parameters/buffers are the initializers (state_dict keys are the ONNX names
    with characters outside [A-Za-z0-9_.] replaced by '_'); forward(*inputs) replays the graph. compile()
    it like any module: `model.compile((8, 3, 32, 32))`. `input_names`, `output_names`, `input_shapes`
    (None for symbolic dims) and `opset` describe the source model."""

    def __init__(self, program: _Program):
        super().__init__()
        object.__setattr__(self, "_program", program)
        for key, arr, trainable in program.param_values:
            if trainable:
                self._parameters[key] = nn.Parameter(arr)
            else:
                self._buffers[key] = np.ascontiguousarray(arr, np.float32)
        program.param_values = []
        self.input_names = list(program.input_names)
        self.output_names = list(program.output_names)
        self.input_shapes = [tuple(d) if d is not None else None for _, d, _ in program.inputs]
        self.opset = program.opset

    @property
    def input_shape(self):
        """Declared shape of the first input (None for symbolic dims), or None."""
        return self.input_shapes[0] if self.input_shapes else None

    def example_input_shape(self, batch: int = 1):
        """The first input's declared shape with a symbolic batch replaced by `batch`."""
        s = self.input_shape
        if not s or any(d is None for d in s[1:]):
            raise ValueError(f"the ONNX model does not declare a complete input shape ({s}); pass input_shape")
        return (batch if s[0] is None else s[0],) + tuple(s[1:])

    def forward(self, *xs):
        outs = self._program.run(list(xs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def extra_repr(self):
        return (f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._program.nodes)}, "
                f"opset={self.opset}")


def import_model(src, bind=None, validate=True) -> OnnxModule:
    """ONNX model (path, bytes, file object or onnx.ModelProto) -> OnnxModule. `bind` maps graph input
    names to arrays treated as constants (the backend uses it for weights fed at run time).

    Raises (listing every offending node at once, each with its name, op type and the bad value):
    InvalidModelError (a cnnnative.Error, hence a ValueError) for a model that breaks the ONNX specification,
    UnsupportedError (a ValueError) for a valid model the engine cannot run, ModelFileError (an OSError and a
    cnnnative.Error) for a path that cannot be read, TypeError for a `src` of another kind."""
    model = load_model_proto(src)
    prog = _Program(model, bind)
    if prog.invalid:  # found while folding constants: raised whatever the input shapes
        raise InvalidModelError(prog.invalid)
    module = OnnxModule(prog)
    shapes = prog.dry_shapes() if validate else None
    if shapes is None:
        probs = prog.static_problems + prog.unknown_op_problems()
        if probs:
            raise UnsupportedError(probs)
        return module
    from ..graph import GraphBuilder
    b = GraphBuilder(False)
    with b:
        xs = [b.input(name, s) for name, s in zip(prog.input_names, shapes)]
        module(*xs)
    return module
