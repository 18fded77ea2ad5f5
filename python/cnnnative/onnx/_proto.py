"""Reading an ONNX model safely: a path (a regular file of at most 2 GiB, never a FIFO or device), bytes, a
file object or a ModelProto; external data only from files inside the model's folder, each reference checked
before it is read; TensorProtos and attributes decoded after checking that their data has exactly the size
their dims and type say; model-local functions inlined within MAX_NODES. Everything here raises the public
errors (ModelFileError, InvalidModelError, UnsupportedError) or, per tensor or attribute, Invalid/Unsupported
for the caller to attribute to a node."""
from __future__ import annotations

import errno
import os
import stat

import numpy as np

from . import _common
from ._base import Invalid, Unsupported, dtype_of, fmt_bytes, numel
from ._common import (MAX_ELEMENTS, MAX_FILE_BYTES, MAX_LIST, MAX_NAME, MAX_NODES, InvalidModelError, ModelFileError,
                      UnsupportedError, require_onnx)


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


def tensor_array(onnx, t, what, budget=None):
    """numpy value of a TensorProto after checking it: known data type, non-negative dims, data of exactly
    the size the dims say, no external or segmented data (external data is read by load_model_proto from
    the model's folder). Raises Invalid / Unsupported naming `what`."""
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise Invalid(f"{what} has negative dimensions {dims}")
    if len(dims) > 64:
        raise Unsupported(f"{what} has rank {len(dims)}")
    n = numel(dims)
    if n > MAX_ELEMENTS:
        raise Unsupported(f"{what} has {n} elements (at most {MAX_ELEMENTS})")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise Unsupported(f"{what} keeps its data in an external file, which is read only when the model is "
                          "imported from its path (the file must lie in the model's folder)")
    if t.HasField("segment"):
        raise Unsupported(f"{what} is a segment of a tensor (segmented tensors are not supported)")
    dtype = dtype_of(onnx, t.data_type)
    if dtype is None:
        raise Invalid(f"{what} has data type {t.data_type}, which is not a tensor data type")
    if budget is not None and n * dtype.itemsize > budget:
        raise Unsupported(f"{what} holds {n} elements ({fmt_bytes(n * dtype.itemsize)}), more than the "
                          f"{fmt_bytes(budget)} allowed here")
    if t.HasField("raw_data"):
        if dtype.kind == "O":
            raise Invalid(f"{what} is a string tensor in raw_data (strings go to string_data)")
        need = _raw_bytes_needed(onnx, t, n, dtype)
        if len(t.raw_data) != need:
            raise Invalid(f"{what} has raw_data of {len(t.raw_data)} bytes; its dims {dims} and data type "
                          f"{dtype} need {need}")
    else:
        field, need = _typed_values_needed(onnx, t, n)
        k = len(getattr(t, field))
        if k != need:
            raise Invalid(f"{what} has {k} values in {field}; its dims {dims} and data type {dtype} need {need}")
    try:
        a = onnx.numpy_helper.to_array(t)
    except Exception as e:  # a mismatch the checks above do not model (a rare packed or float8 layout)
        raise Invalid(f"{what} cannot be decoded: {type(e).__name__}: {str(e)[:200]}") from None
    a = np.asarray(a)
    if a.size != n:
        raise Invalid(f"{what} holds {a.size} values, its dims {dims} need {n}")
    return a


def _text(b, what):
    if len(b) > MAX_NAME:
        raise Unsupported(f"{what} is {len(b)} bytes long (at most {MAX_NAME})")
    return b.decode("utf-8", "replace")


def implied_type(onnx, a):
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


def attr_value(onnx, a, long_ok=False):
    """Python value of an AttributeProto: float, int, str, list, numpy array (tensors, checked), or the proto
    itself for graphs and other kinds no supported operator reads. Lists are bounded by MAX_LIST unless
    long_ok (a Constant's value_ints / value_floats, bounded by the folding budget instead)."""
    A = onnx.AttributeProto
    t = a.type or implied_type(onnx, a)
    what = f"attribute {a.name!r}"
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return _text(a.s, what)
    if t in (A.FLOATS, A.INTS, A.STRINGS):
        seq = a.floats if t == A.FLOATS else a.ints if t == A.INTS else a.strings
        limit = _common.FOLD_MAX_ELEMENTS if long_ok else MAX_LIST
        if len(seq) > limit:
            raise Unsupported(f"{what} holds {len(seq)} values (at most {limit})")
        if t == A.STRINGS:
            return [_text(s, what) for s in seq]
        if long_ok and len(seq) > MAX_LIST:
            return np.array(seq, np.float32 if t == A.FLOATS else np.int64)
        return [float(v) for v in seq] if t == A.FLOATS else [int(v) for v in seq]
    if t == A.TENSOR:
        return tensor_array(onnx, a.t, f"{what} (a tensor)", _common.FOLD_MAX_BYTES)
    if t == A.UNDEFINED:
        raise Invalid(f"{what} has no type and no value")
    return a  # GRAPH(S), TENSORS, SPARSE_TENSOR(S), TYPE_PROTO(S): kept as protos


def constant_value(attrs):
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
    raise Unsupported("only tensor, float(s) and int(s) constants are supported "
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
        dtype = dtype_of(onnx, t.data_type)
        if dtype is None or dtype.kind == "O" or any(d < 0 for d in t.dims):
            raise InvalidModelError([(name, "external data", f"data type {t.data_type} / dims {list(t.dims)} "
                                      "cannot be stored externally")])
        n = numel(t.dims)
        if n > MAX_ELEMENTS:
            raise UnsupportedError([(name, "external data", f"{n} elements (at most {MAX_ELEMENTS})")])
        need = _raw_bytes_needed(onnx, t, n, dtype)
        if length is not None and length != need:
            raise InvalidModelError([(name, "external data", f"length {length} bytes, its dims {list(t.dims)} and "
                                      f"type need {need}")])
        total += need
        if total > budget:
            raise UnsupportedError([(name, "external data", f"the external data add up to more than this machine's "
                                     f"memory ({fmt_bytes(budget)})")])
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


def model_opset(model):
    versions = {int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")}
    if len(versions) > 1:
        raise InvalidModelError([(None, "opset", f"the default domain is imported at several versions "
                                  f"{sorted(versions)}")])
    v = versions.pop() if versions else 0
    if v < 0 or v > 10000:
        raise InvalidModelError([(None, "opset", f"version {v} of the default domain")])
    return v


def inline_functions(onnx, model):
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


# ---------------------------------------------------------------------------------------------------
# the ONNX tool the importer uses on a validated graph: onnx.version_converter (in a child process)

_CONVERT_TARGET = 17  # what version_converter brings an opset outside the importer's range to


def max_opset(onnx):
    """The newest opset of the default domain this onnx package knows."""
    return int(onnx.defs.onnx_opset_version())


def convert_opset(onnx, model, opset):
    """(model converted by onnx.version_converter to an opset the importer handles, None) or (None, why).
    Run only on a graph whose names and structure were checked."""
    newest = max_opset(onnx)
    if opset > newest:
        return None, (f"opset {opset} is newer than this onnx package knows ({newest}); onnx.version_converter "
                      "cannot convert it (upgrade onnx, or export the model at an opset in [6, "
                      f"{newest}])")
    target = min(_CONVERT_TARGET, newest)
    import onnx.version_converter

    def convert(data):
        return onnx.version_converter.convert_version(_parse(onnx, data), target).SerializeToString()
    data, why = _isolated(convert, model.SerializeToString())
    if data is None:
        return None, (f"opset {opset} is outside the importer's range [6, {newest}], and onnx.version_converter "
                      f"could not convert it to opset {target}: {why}")
    return _parse(onnx, data), None


def _isolated(fn, data):
    """(fn(data), None) computed in a forked child, or (None, why): onnx's C++ (the version converter runs
    its shape inference) aborts the process on some hostile graphs (an assertion), which must not take the
    importing process down. In-process where there is no fork()."""
    if not hasattr(os, "fork"):
        try:
            return fn(data), None
        except Exception as e:  # noqa: BLE001 - the reason, reported
            return None, (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    import warnings
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a process with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            try:
                out = b"\0" + fn(data)
            except BaseException as e:  # noqa: BLE001 - sent to the parent
                out = b"\1" + (str(e).strip().splitlines() or [type(e).__name__])[0][:300].encode("utf-8", "replace")
            with os.fdopen(w, "wb") as f:
                f.write(out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if out[:1] == b"\0":
        return out[1:], None
    if out[:1] == b"\1":
        return None, out[1:].decode("utf-8", "replace")
    return None, f"it crashed on this model (wait status {status})"

