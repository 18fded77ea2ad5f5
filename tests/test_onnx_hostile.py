"""cnnnative.onnx.import_model on hostile and broken models: each must raise one of the documented errors
(cnnnative.onnx.InvalidModelError, a cnnnative.Error, for a model that breaks the ONNX specification;
UnsupportedError for a valid one the engine cannot run; ModelFileError, an OSError and a cnnnative.Error, for
a path that cannot be read) naming the node and the bad value, quickly and without large allocations. The
models are built with onnx.helper; where onnxruntime refuses a model, so does the importer. Allocation-heavy
cases run under a cap on the address space of this process, so that a regression fails with MemoryError
instead of exhausting the machine."""
import contextlib
import os
import resource
import threading
import time

import numpy as np
import pytest

import cnnnative as cn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnnative.onnx as cno  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="uses Linux's /proc and FIFOs")
H = helper
DOCUMENTED = ("InvalidModelError", "UnsupportedError", "ModelFileError")


def _vi(name, shape, t=TensorProto.FLOAT):
    return H.make_tensor_value_info(name, t, shape)


def _model(nodes, inputs, outputs, inits=(), opset=17, **kw):
    """A ModelProto; inputs/outputs are (name, shape) pairs, inits {name: array}. Not checked: many are
    invalid on purpose."""
    inits = inits.items() if isinstance(inits, dict) else inits
    g = H.make_graph(nodes, "g", [_vi(n, s) for n, s in inputs], [_vi(n, s) for n, s in outputs],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return H.make_model(g, opset_imports=[H.make_opsetid("", opset)], **kw)


def _error(src, **kw):
    """The exception import_model(src) raises (the test fails when it accepts the model)."""
    try:
        cno.import_model(src, **kw)
    except Exception as e:  # noqa: BLE001 - the type is what is tested
        return e
    pytest.fail("import_model accepted the model")


def _rejects(src, kind, *words, **kw):
    """import_model(src) raises `kind` (a documented error: a ValueError), whose message holds every word."""
    e = _error(src, **kw)
    assert type(e).__name__ == kind, f"{type(e).__name__}: {e}"
    assert isinstance(e, ValueError), type(e).__mro__
    for w in words:
        assert w in str(e), f"{w!r} not in: {e}"
    assert "internal error" not in str(e), str(e)
    return e


def _vsize():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _memory_cap(extra=768 << 20):
    """Caps this process's address space at its current size + `extra` while the block runs: an allocation
    beyond it raises MemoryError at once instead of swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vsize() + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _quick(fn, seconds=3.0):
    t0 = time.perf_counter()
    with _memory_cap():
        out = fn()
    dt = time.perf_counter() - t0
    assert dt < seconds, f"took {dt:.1f} s"
    return out


def _ones(*s):
    return np.ones(s, np.float32)


# ---------------------------------------------------------------------------------------------------
# the reported cases


def test_maxpool_strides_zero():
    m = _model([H.make_node("MaxPool", ["x"], ["y"], name="pool1", kernel_shape=[2, 2], strides=[0, 0])],
               [("x", [1, 1, 4, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "pool1", "MaxPool", "strides=[0, 0]")


def test_softmax_axis_out_of_range():
    m = _model([H.make_node("Softmax", ["x"], ["y"], name="sm", axis=10)], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'sm' (Softmax)", "axis=10")
    # without declared shapes the same check runs at compile(), with the same error type
    m = _model([H.make_node("Softmax", ["x"], ["y"], name="sm", axis=10)], [("x", None)], [("y", None)])
    mod = cno.import_model(m)
    with pytest.raises(cn.Error, match="axis=10"):
        mod.compile((1, 4))


def test_gather_index_out_of_range():
    m = _model([H.make_node("Gather", ["s", "i"], ["g"], name="gat"), H.make_node("Reshape", ["x", "g"], ["y"])],
               [("x", [1, 4])], [("y", None)], {"s": np.array([1, 4], np.int64), "i": np.array([5], np.int64)})
    _rejects(m, "InvalidModelError", "'gat' (Gather)", "indices [5] out of range")
    m.graph.input[0].type.tensor_type.ClearField("shape")  # caught at import without input shapes too
    _rejects(m, "InvalidModelError", "'gat' (Gather)", "indices [5] out of range")
    _rejects(m, "InvalidModelError", "'gat' (Gather)", "indices [5] out of range", validate=False)
    m = _model([H.make_node("Gather", ["s", "i"], ["g"], name="gat", axis=3),
                H.make_node("Reshape", ["x", "g"], ["y"])],
               [("x", [1, 4])], [("y", None)], {"s": np.array([1, 4], np.int64), "i": np.array([0], np.int64)})
    _rejects(m, "InvalidModelError", "'gat' (Gather)", "axis=3")


def test_concat_without_axis():
    m = _model([H.make_node("Concat", ["x", "x"], ["y"], name="cat")], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'cat' (Concat)", "axis")


def test_conv_stride_beyond_engine_limits():
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="c1", strides=[2 ** 40, 2 ** 40])],
               [("x", [1, 1, 4, 4])], [("y", None)], {"w": _ones(1, 1, 2, 2)})
    _rejects(m, "UnsupportedError", "'c1' (Conv)", "strides=[1099511627776")
    # the largest the engine takes runs (output 1x1)
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="c1", strides=[2 ** 31 - 1, 2 ** 31 - 1])],
               [("x", [1, 1, 4, 4])], [("y", None)], {"w": _ones(1, 1, 2, 2)})
    out = cno.import_model(m).compile((1, 1, 4, 4)).run(_ones(1, 1, 4, 4))
    np.testing.assert_array_equal(out, np.full((1, 1, 1, 1), 4, np.float32))


def test_range_folding_is_bounded_before_allocating():
    m = _model([H.make_node("Range", ["a", "b", "c"], ["r"], name="rng"), H.make_node("Reshape", ["x", "r"], ["y"])],
               [("x", [1, 4])], [("y", None)],
               {"a": np.array(0, np.int64), "b": np.array(2 ** 29, np.int64), "c": np.array(1, np.int64)})
    assert len(m.SerializeToString()) < 300
    _quick(lambda: _rejects(m, "UnsupportedError", "'rng' (Range)", "536870912 elements"), 1.0)
    m.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.array(0, np.int64), "c"))
    _rejects(m, "InvalidModelError", "'rng' (Range)", "delta is 0")
    # Tile is not folded at all: nothing is computed from its huge repeats
    m = _model([H.make_node("Tile", ["v", "r"], ["big"], name="ti"), H.make_node("Reshape", ["x", "big"], ["y"])],
               [("x", [1, 4])], [("y", None)], {"v": np.ones(4, np.int64), "r": np.array([2 ** 40], np.int64)})
    _quick(lambda: _rejects(m, "UnsupportedError", "'ti' (Tile)", "operator not supported"))


def test_duplicate_graph_outputs():
    m = _model([H.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", None), ("y", None)])
    _rejects(m, "InvalidModelError", "graph output 'y'", "listed twice")


def test_flatten_axis_out_of_range():
    m = _model([H.make_node("Flatten", ["x"], ["y"], name="fl", axis=10)], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'fl' (Flatten)", "axis=10")


def test_pool_pads_not_smaller_than_kernel():
    for op in ("MaxPool", "AveragePool"):
        m = _model([H.make_node(op, ["x"], ["y"], name="p", kernel_shape=[2, 2], pads=[3, 3, 3, 3])],
                   [("x", [1, 1, 4, 4])], [("y", None)])
        _rejects(m, "InvalidModelError", f"'p' ({op})", "pads=[3, 3, 3, 3]", "smaller than the kernel")


def test_refused_where_onnxruntime_refuses():
    """Models the old importer accepted although onnxruntime refuses them. (A graph output listed twice, also
    refused, is accepted by onnxruntime 1.32 and onnx.checker 1.23.)"""
    ort = pytest.importorskip("onnxruntime")
    cases = [
        _model([H.make_node("Flatten", ["x"], ["y"], axis=10)], [("x", [1, 4])], [("y", None)]),
        _model([H.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[3, 3, 3, 3])],
               [("x", [1, 1, 4, 4])], [("y", None)]),
    ]
    for m in cases:
        with pytest.raises(Exception, match="axis|Pad should be smaller than kernel"):
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        _rejects(m, "InvalidModelError")


# ---------------------------------------------------------------------------------------------------
# attribute ranges


@pytest.mark.parametrize("op,attrs,words", [
    ("MaxPool", dict(kernel_shape=[0, 2]), ["kernel_shape=[0, 2]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[0, 1]), ["dilations=[0, 1]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[-1, 0, 0, 0]), ["pads=[-1, 0, 0, 0]"]),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[1]), ["strides=[1] has 1 values for 2 spatial axes"]),
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="MIDDLE"), ["auto_pad='MIDDLE'"]),
    ("AveragePool", dict(kernel_shape=[2, 2], pads=[0, 0, 0]), ["pads=[0, 0, 0]"]),
    ("LRN", dict(size=0), ["size=0"]),
    ("Pad", dict(mode="mirror"), ["mode='mirror'"]),
])
def test_static_attribute_ranges(op, attrs, words):
    ins = ["x"] + (["pads"] if op == "Pad" else [])
    m = _model([H.make_node(op, ins, ["y"], name="n1", **attrs)], [("x", [1, 2, 4, 4])], [("y", None)],
               {"pads": np.zeros(8, np.int64)} if op == "Pad" else {})
    _rejects(m, "InvalidModelError", f"'n1' ({op})", *words)


def test_conv_shape_dependent_ranges():
    x = [("x", [1, 4, 5, 5])]
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="cv", group=3)], x, [("y", None)], {"w": _ones(6, 4, 3, 3)})
    _rejects(m, "InvalidModelError", "'cv' (Conv)", "group=3")
    m = _model([H.make_node("Conv", ["x", "w", "b"], ["y"], name="cv")], x, [("y", None)],
               {"w": _ones(6, 4, 3, 3), "b": _ones(5)})
    _rejects(m, "InvalidModelError", "'cv' (Conv)", "B [5] must be [6]")
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="cv", kernel_shape=[2, 2])], x, [("y", None)],
               {"w": _ones(6, 4, 3, 3)})
    _rejects(m, "InvalidModelError", "kernel_shape=[2, 2] disagrees")
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="cv", dilations=[4, 4])], x, [("y", None)],
               {"w": _ones(6, 4, 3, 3)})
    _rejects(m, "InvalidModelError", "'cv' (Conv)", "output would be empty")
    m = _model([H.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", output_shape=[9])], x, [("y", None)],
               {"w": _ones(4, 2, 3, 3)})
    _rejects(m, "InvalidModelError", "'ct' (ConvTranspose)", "output_shape=[9]")


def test_attribute_types_names_and_counts_follow_the_schema():
    bad_type = H.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2])
    bad_type.attribute.append(H.make_attribute("strides", 2))  # INT where INTS is expected
    m = _model([bad_type], [("x", [1, 1, 4, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'mp' (MaxPool)", "attribute 'strides' is INT", "takes INTS")
    m = _model([H.make_node("Relu", ["x"], ["y"], name="r", slope=2.0)], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'r' (Relu)", "attribute 'slope' is not defined")
    m = _model([H.make_node("Relu", ["x", "x"], ["y"], name="r")], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'r' (Relu)", "2 inputs")
    m = _model([H.make_node("Conv", ["x"], ["y"], name="c")], [("x", [1, 1, 4, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'c' (Conv)", "1 inputs")
    m = _model([H.make_node("Conv", ["", "w"], ["y"], name="c")], [("x", [1, 1, 4, 4])], [("y", None)],
               {"w": _ones(1, 1, 1, 1)})
    _rejects(m, "InvalidModelError", "'c' (Conv)", "input 0 (X) is required but empty")
    m = _model([H.make_node("Constant", [], ["y"], name="k")], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "'k' (Constant)", "exactly one value attribute")
    m = _model([H.make_node("Cast", ["s"], ["t"], name="cst", to=999), H.make_node("Reshape", ["x", "t"], ["y"])],
               [("x", [1, 4])], [("y", None)], {"s": np.array([4, 1], np.int64)})
    _rejects(m, "InvalidModelError", "'cst' (Cast)", "to=999")
    m = _model([H.make_node("Resize", ["x", "", "s"], ["y"], name="rs")], [("x", [1, 1, 2, 2])], [("y", None)],
               {"s": np.array([1, 1, 2, 2], np.float32)}, opset=9)
    _rejects(m, "InvalidModelError", "'rs' (Resize)", "not defined in opset 9")


def test_folded_shape_arithmetic_is_checked():
    x = [("x", [2, 3, 4])]
    cases = [
        ("Reshape", {"s": np.array([5, -1], np.int64)}, "cannot reshape [2, 3, 4] (24 elements) to [5, -1]"),
        ("Reshape", {"s": np.array([-1, -1], np.int64)}, "more than one -1"),
        ("Reshape", {"s": np.array([2, -2, 12], np.int64)}, "values must be >= -1"),
        ("Reshape", {"s": np.array([2.0, 12.0], np.float32)}, "must hold integers"),
    ]
    for op, inits, words in cases:
        m = _model([H.make_node(op, ["x", "s"], ["y"], name="rs")], x, [("y", None)], inits)
        _rejects(m, "InvalidModelError", f"'rs' ({op})", words)
    m = _model([H.make_node("Squeeze", ["x", "a"], ["y"], name="sq")], x, [("y", None)], {"a": np.array([7])})
    _rejects(m, "InvalidModelError", "'sq' (Squeeze)", "axes=7")
    m = _model([H.make_node("Unsqueeze", ["x", "a"], ["y"], name="us")], x, [("y", None)], {"a": np.array([1, 1])})
    _rejects(m, "InvalidModelError", "'us' (Unsqueeze)", "repeat an axis")
    m = _model([H.make_node("Transpose", ["s"], ["t"], name="tr", perm=[0, 0]),
                H.make_node("Reshape", ["x", "t"], ["y"])], x, [("y", None)], {"s": np.ones((2, 2), np.int64)})
    _rejects(m, "InvalidModelError", "'tr' (Transpose)", "perm=[0, 0]")
    m = _model([H.make_node("Slice", ["x", "a", "b", "c", "d"], ["y"], name="sl")], x, [("y", None)],
               {"a": np.array([0]), "b": np.array([1]), "c": np.array([1]), "d": np.array([0])})
    _rejects(m, "InvalidModelError", "'sl' (Slice)", "a step of 0")
    m = _model([H.make_node("Div", ["a", "b"], ["c"], name="dv"), H.make_node("Reshape", ["x", "c"], ["y"])], x,
               [("y", None)], {"a": np.array([24]), "b": np.array([0])})
    _rejects(m, "InvalidModelError", "'dv' (Div)", "integer division by zero")


# ---------------------------------------------------------------------------------------------------
# folding budget: sizes are computed before anything is allocated


@pytest.mark.parametrize("make", ["ConstantOfShape", "Expand", "Where", "Mul", "Resize"])
def test_folding_budget(make):
    i64 = np.int64
    if make == "ConstantOfShape":
        nodes = [H.make_node("ConstantOfShape", ["sh"], ["big"], name="cos")]
        inits = {"sh": np.array([2 ** 20, 2 ** 20], i64)}
        words = ["'cos' (ConstantOfShape)", "1099511627776 elements"]
    elif make == "Expand":
        nodes = [H.make_node("Expand", ["v", "sh"], ["big"], name="ex")]
        inits = {"v": np.ones(1, np.float32), "sh": np.array([2 ** 16, 2 ** 16], i64)}
        words = ["'ex' (Expand)", "4294967296 elements"]
    elif make == "Where":  # [N, 1] x [1, N] broadcasting
        nodes = [H.make_node("Where", ["c", "a", "b"], ["big"], name="wh")]
        inits = {"c": np.ones((1, 1), bool), "a": np.ones((1 << 16, 1), np.float32),
                 "b": np.ones((1, 1 << 16), np.float32)}
        words = ["'wh' (Where)", "4294967296 elements"]
    elif make == "Mul":
        nodes = [H.make_node("Mul", ["a", "b"], ["big"], name="mu")]
        inits = {"a": np.ones((1 << 16, 1), np.float32), "b": np.ones((1, 1 << 16), np.float32)}
        words = ["'mu' (Mul)", "4294967296 elements"]
    else:  # Resize of a computed tensor: the output size is checked before any index table
        m = _model([H.make_node("Resize", ["x", "", "s"], ["y"], name="rz")], [("x", [1, 1, 2, 2])],
                   [("y", None)], {"s": np.array([1, 1, 1e9, 1e9], np.float32)})
        _quick(lambda: _rejects(m, "UnsupportedError", "'rz' (Resize)", "output size"))
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([1, 1, np.inf, 2], np.float32), "s"))
        _rejects(m, "InvalidModelError", "'rz' (Resize)", "finite")
        return
    m = _model(nodes + [H.make_node("Shape", ["big"], ["s"]), H.make_node("Reshape", ["x", "s"], ["y"])],
               [("x", [1, 4])], [("y", None)], inits)
    _quick(lambda: _rejects(m, "UnsupportedError", *words))


def test_folding_total_budget(monkeypatch):
    """Each constant within the budget, all of them together beyond it: a chain of Concats doubling a vector
    (with the real budget this needs 1 GiB before it stops: the limits are lowered here to keep it cheap)."""
    from cnnnative.onnx import _common  # the importer reads its limits from there at each use
    monkeypatch.setattr(_common, "FOLD_MAX_ELEMENTS", 1 << 20)
    monkeypatch.setattr(_common, "FOLD_MAX_BYTES", 4 << 20)
    monkeypatch.setattr(_common, "FOLD_MAX_TOTAL_BYTES", 6 << 20)
    nodes, prev = [], "v"
    for k in range(28):  # 2^10 -> 2^38 elements if nothing stopped it
        nodes.append(H.make_node("Concat", [prev, prev], [f"c{k}"], name=f"cat{k}", axis=0))
        prev = f"c{k}"
    nodes += [H.make_node("Shape", [prev], ["s"]), H.make_node("Reshape", ["x", "s"], ["y"])]
    m = _model(nodes, [("x", [1, 4])], [("y", None)], {"v": np.ones(1 << 10, np.float32)})
    _quick(lambda: _rejects(m, "UnsupportedError", "'cat9' (Concat)", "add up to more than 6.0 MiB"), 1.0)


# ---------------------------------------------------------------------------------------------------
# graph structure


def test_graph_structure():
    x, y = [("x", [1, 4])], [("y", None)]
    m = _model([H.make_node("Relu", ["nope"], ["y"], name="r")], x, y)
    _rejects(m, "InvalidModelError", "'r' (Relu)", "input 'nope' is not defined")
    m = _model([H.make_node("Relu", ["x"], ["y"], name="a"), H.make_node("Relu", ["x"], ["y"], name="b")], x, y)
    _rejects(m, "InvalidModelError", "'b' (Relu)", "output 'y' is also an output of node 'a'")
    m = _model([H.make_node("Relu", ["x"], ["x"], name="a")], x, [("x", None)])
    _rejects(m, "InvalidModelError", "'a' (Relu)", "output 'x' is also a graph input")
    m = _model([H.make_node("Relu", ["x"], ["y"])], x, [("z", None)])
    _rejects(m, "InvalidModelError", "graph output 'z'", "not defined")
    m = _model([H.make_node("Relu", ["x"], ["y"])], x, [])
    _rejects(m, "InvalidModelError", "no outputs")
    m = _model([H.make_node("Add", ["x", "b"], ["a"], name="n1"), H.make_node("Relu", ["a"], ["b"], name="n2"),
                H.make_node("Relu", ["b"], ["y"])], x, y)
    _rejects(m, "InvalidModelError", "cycle", "'n1'", "'n2'")
    m = _model([H.make_node("Relu", ["x"], ["y"])], x + x, y)
    _rejects(m, "InvalidModelError", "graph input 'x'", "listed twice")
    m = _model([H.make_node("Add", ["x", "w"], ["y"])], x, y, [("w", _ones(4)), ("w", _ones(4))])
    _rejects(m, "InvalidModelError", "initializer 'w'", "defined twice")
    # a missing initializer: a weight nothing defines
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="c")], [("x", [1, 1, 4, 4])], y)
    _rejects(m, "InvalidModelError", "'c' (Conv)", "input 'w' is not defined")


def test_unsorted_graph_is_sorted():
    m = _model([H.make_node("Relu", ["a"], ["y"]), H.make_node("Sigmoid", ["x"], ["a"])], [("x", [2, 3])],
               [("y", None)])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    out = cno.import_model(m).compile(x.shape).run(x)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x)), rtol=1e-6)
    # one error for a hostile op type that names an importer-internal op
    for op in ("$Linear", "$Affine", "Linear", "Affine"):
        m = _model([H.make_node(op, ["x"], ["y"], name="h")], [("x", [2, 3])], [("y", None)])
        _rejects(m, "UnsupportedError", f"'h' ({op})", "operator not supported")


def test_functions():
    f = H.make_function("local", "F", ["x"], ["y"], [H.make_node("F", ["x"], ["y"], domain="local")],
                        [H.make_opsetid("", 17), H.make_opsetid("local", 1)])
    g = H.make_graph([H.make_node("F", ["x"], ["y"], domain="local")], "g", [_vi("x", [1])], [_vi("y", [1])])
    m = H.make_model(g, functions=[f], opset_imports=[H.make_opsetid("", 17), H.make_opsetid("local", 1)])
    _rejects(m, "InvalidModelError", "calls itself")
    # F0 calls F1 twice, F1 calls F2 twice, ...: 2^40 nodes once inlined
    fs = []
    for k in range(40):
        body = [H.make_node("Relu", ["x"], ["y"])] if k == 39 else \
            [H.make_node(f"F{k + 1}", ["x"], ["t"], domain="local"), H.make_node(f"F{k + 1}", ["t"], ["y"], domain="local")]
        fs.append(H.make_function("local", f"F{k}", ["x"], ["y"], body, [H.make_opsetid("", 17), H.make_opsetid("local", 1)]))
    g = H.make_graph([H.make_node("F0", ["x"], ["y"], domain="local")], "g", [_vi("x", [1])], [_vi("y", [1])])
    m = H.make_model(g, functions=fs, opset_imports=[H.make_opsetid("", 17), H.make_opsetid("local", 1)])
    _quick(lambda: _rejects(m, "UnsupportedError", "more than 1048576 nodes"))


# ---------------------------------------------------------------------------------------------------
# names, dimensions, initializers


def test_names():
    m = _model([H.make_node("Relu", ["x"], ["y"], name="rr")], [("x", [1, 4])], [("y", None)])
    b = m.SerializeToString()
    i = b.index(b"rr")
    _rejects(b[:i] + b"\xff\xfe" + b[i + 2:], "InvalidModelError", "not valid UTF-8")
    m = _model([H.make_node("Relu", ["x"], ["y"], name="r" * 100000)], [("x", [1, 4])], [("y", None)])
    e = _rejects(m, "UnsupportedError", "100000 characters")
    assert len(str(e)) < 1000  # the message does not repeat the name
    m = _model([H.make_node("Relu", ["x"], ["y"], name="a\0b")], [("x", [1, 4])], [("y", None)])
    _rejects(m, "InvalidModelError", "NUL")


def test_dimensions():
    relu = [H.make_node("Relu", ["x"], ["y"])]
    # negative and zero dims of a graph input are unknown (as a dim_param; onnxruntime reads -1 so)
    for d in (-1, 0):
        mod = cno.import_model(_model(relu, [("x", [d, 4])], [("y", None)]))
        assert mod.input_shapes == [(None, 4)]
        np.testing.assert_array_equal(mod.compile((3, 4)).run(-_ones(3, 4)), np.zeros((3, 4), np.float32))
    # dims whose product overflows 64 bits: refused before anything is computed from them
    m = _model(relu, [("x", [2 ** 40, 2 ** 40, 2 ** 40])], [("y", None)])
    _quick(lambda: _rejects(m, "UnsupportedError", "input 'x'", "exceeds the engine's limits"))
    m = _model(relu, [("x", [1, 2 ** 31])], [("y", None)])
    _rejects(m, "UnsupportedError", "input 'x'", "2147483648")
    # an initializer with negative, huge or zero dims
    w = numpy_helper.from_array(_ones(2, 2), "w")
    conv = [H.make_node("Conv", ["x", "w"], ["y"], name="c")]
    for dims, kind, words in (([-1, 2], "InvalidModelError", "negative dimensions"),
                              ([2 ** 62, 2 ** 62], "UnsupportedError", "elements"),
                              ([2 ** 20, 2 ** 20], "InvalidModelError", "raw_data of 16 bytes")):
        t = onnx.TensorProto()
        t.CopyFrom(w)
        del t.dims[:]
        t.dims.extend(dims)
        m = _model(conv, [("x", [1, 1, 4, 4])], [("y", None)])
        m.graph.initializer.append(t)
        _quick(lambda: _rejects(m, kind, "initializer 'w'", words))
    m = _model(conv, [("x", [1, 1, 4, 4])], [("y", None)], {"w": np.ones((1, 1, 0, 3), np.float32)})
    _rejects(m, "UnsupportedError", "'c' (Conv)", "is empty [1, 1, 0, 3]")


def test_initializer_data_of_the_wrong_size():
    conv = [H.make_node("Conv", ["x", "w"], ["y"], name="c")]
    w = numpy_helper.from_array(_ones(1, 1, 3, 3), "w")
    short = onnx.TensorProto()
    short.CopyFrom(w)
    short.raw_data = w.raw_data[:-4]
    m = _model(conv, [("x", [1, 1, 4, 4])], [("y", None)])
    m.graph.initializer.append(short)
    _rejects(m, "InvalidModelError", "initializer 'w'", "raw_data of 32 bytes", "need 36")
    typed = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 1, 3, 3], float_data=[1.0] * 5)
    m = _model(conv, [("x", [1, 1, 4, 4])], [("y", None)])
    m.graph.initializer.append(typed)
    _rejects(m, "InvalidModelError", "initializer 'w'", "5 values in float_data")
    bad_type = onnx.TensorProto()
    bad_type.CopyFrom(w)
    bad_type.data_type = 77
    m = _model(conv, [("x", [1, 1, 4, 4])], [("y", None)])
    m.graph.initializer.append(bad_type)
    _rejects(m, "InvalidModelError", "initializer 'w'", "data type 77")


# ---------------------------------------------------------------------------------------------------
# files and external data


def _conv_with_external(tmp_path, location, offset=None, length=None, write=True):
    w = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    m = _model([H.make_node("Conv", ["x", "w"], ["y"], name="c")], [("x", [1, 1, 3, 3])], [("y", None)])
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        if v is not None:
            t.external_data.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    m.graph.initializer.append(t)
    if write:
        (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + w.tobytes())
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return p, w


def test_external_data(tmp_path):
    (tmp_path / "sub").mkdir()
    p, w = _conv_with_external(tmp_path / "sub", "weights.bin", offset=8, length=36)
    x = np.ones((1, 1, 3, 3), np.float32)
    assert float(cno.import_model(p).compile(x.shape).run(x)[0, 0, 0, 0]) == w.sum()
    # the same model as bytes or a file object cannot say where its data is
    _rejects(p.read_bytes(), "UnsupportedError", "external data 'w'", "external file 'weights.bin'")
    # outside the model's folder: .., absolute, a symlink leading out
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 8 + w.tobytes())
    for loc in ("../secret.bin", str(secret), "sub2/../../secret.bin"):
        p, _ = _conv_with_external(tmp_path / "sub", loc, offset=8, length=36)
        _rejects(p, "InvalidModelError", "external data 'w'", "model's folder")
    os.symlink(secret, tmp_path / "sub" / "link.bin")
    p, _ = _conv_with_external(tmp_path / "sub", "link.bin", offset=8, length=36)
    _rejects(p, "InvalidModelError", "external data 'w'", "leads outside the model's folder")
    # lengths and offsets must fit the file and the tensor
    p, _ = _conv_with_external(tmp_path / "sub", "weights.bin", offset=8, length=2 ** 40)
    _quick(lambda: _rejects(p, "InvalidModelError", "length 1099511627776 bytes", "need 36"))
    p, _ = _conv_with_external(tmp_path / "sub", "weights.bin", offset=2 ** 40)
    _rejects(p, "InvalidModelError", "beyond the end")
    p, _ = _conv_with_external(tmp_path / "sub", "weights.bin", offset=-8)
    _rejects(p, "InvalidModelError", "negative offset")
    p, _ = _conv_with_external(tmp_path / "sub", "missing.bin", write=False)
    _rejects(p, "InvalidModelError", "cannot open 'missing.bin'")


def test_files(tmp_path):
    e = _rejects(str(tmp_path / "nope.onnx"), "ModelFileError", "nope.onnx", "no such file")
    assert isinstance(e, OSError) and isinstance(e, cn.Error) and e.errno == 2
    e = _rejects(tmp_path, "ModelFileError", "is a folder")
    assert isinstance(e, OSError)
    # a FIFO is not read (reading one would block until a writer comes); if it were, the writer below
    # unblocks the test after 5 s
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)

    def unblock():
        time.sleep(5)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    threading.Thread(target=unblock, daemon=True).start()
    t0 = time.perf_counter()
    _rejects(fifo, "ModelFileError", "not a regular file")
    assert time.perf_counter() - t0 < 2
    # a truncated file: every prefix of a valid model imports or raises a documented error
    m = _model([H.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                H.make_node("Relu", ["c"], ["y"])], [("x", ["N", 1, 5, 5])], [("y", None)], {"w": _ones(2, 1, 3, 3)})
    b = m.SerializeToString()
    kinds = set()
    for k in range(len(b)):
        try:
            cno.import_model(b[:k])
            kinds.add("accepted")  # a prefix that ends between fields can be a valid model
        except Exception as e:  # noqa: BLE001
            assert type(e).__name__ in DOCUMENTED and "internal error" not in str(e), (k, type(e).__name__, str(e))
            kinds.add(type(e).__name__)
    assert kinds <= {"InvalidModelError", "accepted"} and "InvalidModelError" in kinds
    _rejects(b"\x08\x07garbage" * 5, "InvalidModelError", "not a readable ONNX model")


def test_opset_versions():
    relu = [H.make_node("Relu", ["x"], ["y"])]
    for v in (-1, 123456):
        _rejects(_model(relu, [("x", [1, 4])], [("y", None)], opset=v), "InvalidModelError", f"version {v}")
