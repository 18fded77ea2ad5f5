"""The ONNX importer's infrastructure: every unsupported node listed and grouped by op type (each node checked
on its own, the outputs of failed nodes stood in for by inputs of the shapes onnx infers), `input_shape=` fixing
symbolic dimensions so that shape subgraphs fold at import (torch exports of both exporters, with dynamic
axes), and opsets brought into range by onnx.version_converter (11 to 21 checked against onnxruntime). Skips
without onnx; the torch cases skip without torch, the onnxruntime comparisons without onnxruntime."""
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cnnnative as cn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnnative.onnx as cno  # noqa: E402

rng = np.random.default_rng(0)


def _r(*s):
    return rng.standard_normal(s).astype(np.float32)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(m, x):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _unsupported(m, **kw):
    with pytest.raises(cno.UnsupportedError) as e:
        cno.import_model(m, **kw)
    return e.value


# ---------------------------------------------------------------------------------------------------
# 1. every unsupported node, grouped by op type


def test_unsupported_nodes_behind_each_other_are_all_listed():
    # Sin, Cos and Asin have no mapper; the Relus between them are fine and not reported
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="s1"), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Sin", ["b"], ["c"], name="s2"), helper.make_node("Cos", ["c"], ["d"], name="c1"),
             helper.make_node("Sin", ["d"], ["e"], name="s3"), helper.make_node("Sin", ["e"], ["f"], name="s4"),
             helper.make_node("Relu", ["f"], ["g"], name="r2"), helper.make_node("Asin", ["g"], ["y"], name="a1")]
    m = _model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 4, 4])])
    e = _unsupported(m)
    assert isinstance(e, ValueError)
    assert [p[0] for p in e.problems] == ["s1", "s2", "c1", "s3", "s4", "a1"], e.problems
    msg = str(e)
    assert "6 unsupported nodes, by op type:" in msg
    assert "  Sin: 4 nodes (first: s1, s2, s3, ...)" in msg
    assert "  Cos: 1 node (c1)" in msg and "  Asin: 1 node (a1)" in msg
    assert msg.index("Sin: 4") < msg.index("Cos: 1")  # most frequent first
    assert "details:\n  - node 's1' (Sin): operator not supported" in msg
    assert "  - node 's4' (Sin): operator not supported" in msg
    # symbolic shapes (no dry trace at import): the same list
    m = _model(nodes, [("x", ["N", 2, "H", "W"])], [("y", ["N", 2, "H", "W"])])
    assert [p[0] for p in _unsupported(m).problems] == ["s1", "s2", "c1", "s3", "s4", "a1"]
    # and at compile() with the shapes given by input_shape
    e = _unsupported(m, input_shape=(1, 2, 4, 4))
    assert [p[0] for p in e.problems] == ["s1", "s2", "c1", "s3", "s4", "a1"]


def test_nodes_after_a_failed_mapper_are_checked_on_their_own():
    # LRN size=4 (even) is unsupported; the Conv after it is fine, the Sins and the Softmax with a bad axis are
    # not: each is reported, its input standing in with the shape onnx infers for the LRN's output
    W = _r(3, 2, 3, 3)
    nodes = [helper.make_node("LRN", ["x"], ["l"], size=4, name="lrn"),
             helper.make_node("Conv", ["l", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sin", ["c"], ["s"], name="sin1"),
             helper.make_node("MaxPool", ["s"], ["p", "idx"], kernel_shape=[2, 2], name="pool"),
             helper.make_node("Sin", ["p"], ["y"], name="sin2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_empty_tensor_value_info("y"), helper.make_empty_tensor_value_info("idx")],
                          [numpy_helper.from_array(W, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    e = _unsupported(m)
    assert [(p[0], p[1]) for p in e.problems] == [("lrn", "LRN"), ("sin1", "Sin"), ("pool", "MaxPool"),
                                                  ("sin2", "Sin")], e.problems
    assert "size=4" in e.problems[0][2] and "Indices" in e.problems[2][2]
    assert "Sin: 2 nodes (sin1, sin2)" in str(e)


def test_values_without_an_inferred_shape_fall_back_to_unknown_operators():
    # a node of another domain: onnx infers no shape for its output, so the Relu after it is skipped (nothing
    # can stand in for its input) while the unknown Sin after that is still listed
    nodes = [helper.make_node("Foo", ["x"], ["a"], domain="com.example", name="foo"),
             helper.make_node("Relu", ["a"], ["b"], name="r"), helper.make_node("Sin", ["b"], ["y"], name="sin")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    e = _unsupported(m)
    assert [p[0] for p in e.problems] == ["foo", "sin"], e.problems
    assert "outside the default ONNX domain" in e.problems[0][2]


def test_one_problem_keeps_the_short_message():
    m = _model([helper.make_node("Sin", ["x"], ["y"], name="s")], [("x", [1, 4])], [("y", [1, 4])])
    msg = str(_unsupported(m))
    assert msg == "ONNX model: 1 unsupported node:\n  - node 's' (Sin): operator not supported", msg


def test_invalid_models_are_grouped_too():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1", bogus=1),
             helper.make_node("Relu", ["a"], ["y"], name="r2", bogus=2)]
    m = _model(nodes, [("x", [1, 4])], [("y", [1, 4])])
    with pytest.raises(cno.InvalidModelError) as e:
        cno.import_model(m)
    assert "Relu: 2 nodes (r1, r2)" in str(e.value) and "details:" in str(e.value)
    assert len(e.value.problems) == 2


# ---------------------------------------------------------------------------------------------------
# 2. input_shape=: symbolic dimensions fixed, shape subgraphs folded at import


def _shape_graph():
    """y = Reshape(x, Concat(Shape(x)[0], -1)) * Expand(2.0, Shape(x)[0:2]) ... on x [N, C, H, W]: a
    hand-built shape subgraph of Shape, Gather, Unsqueeze, Concat, Cast, Range, ConstantOfShape, Expand, Slice,
    Squeeze and arithmetic that folds once H and W are fixed."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),          # N (scalar)
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),                # [N]
        helper.make_node("Slice", ["sh", "one", "four"], ["chw"]),          # [C, H, W]
        helper.make_node("ReduceProd", ["chw"], ["k"], keepdims=1),         # [C*H*W]
        helper.make_node("Concat", ["n1", "k"], ["target"], axis=0),        # [N, C*H*W]
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["kf", "ax0"], ["kfs"]),
        helper.make_node("Range", ["zf", "kfs", "onef"], ["ramp"]),        # 0 .. C*H*W-1
        helper.make_node("Div", ["ramp", "kfs"], ["ramp01"]),
        helper.make_node("Shape", ["flat"], ["fsh"]),
        helper.make_node("ConstantOfShape", ["fsh"], ["ones"],
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Expand", ["ramp01", "fsh"], ["rampN"]),
        helper.make_node("Mul", ["flat", "ones"], ["half"]),
        helper.make_node("Add", ["half", "rampN"], ["y"]),
    ]
    inits = {"zero": np.array(0, np.int64), "ax0": i64(0), "one": i64(1), "four": i64(4),
             "zf": np.array(0, np.float32), "onef": np.array(1, np.float32)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_input_shape_folds_a_shape_subgraph():
    m = _shape_graph()
    x = _r(2, 3, 4, 5)
    want = x.reshape(2, -1) * 0.5 + np.arange(60, dtype=np.float32) / 60
    mod = cno.import_model(m, input_shape=(2, 3, 4, 5))
    assert mod.input_shapes == [(2, 3, 4, 5)] and mod.example_input_shape() == (2, 3, 4, 5)
    prog = mod._program
    # the shape arithmetic is gone at import: what is left maps onto engine ops
    assert {n.onnx_op for n in prog.nodes} <= {"Reshape", "Mul", "Add"}, [n.onnx_op for n in prog.nodes]
    np.testing.assert_allclose(mod.compile(x.shape).run(x), want, rtol=1e-5, atol=1e-6)
    # the batch left symbolic: folded at trace time, per batch (ReduceProd of a shape included)
    try:
        mod = cno.import_model(m, input_shape=(None, 3, 4, 5))
    except cno.UnsupportedError as e:
        _binary_ops_limit(e)
        return
    assert mod.input_shapes == [(None, 3, 4, 5)]
    x4 = _r(4, 3, 4, 5)
    y = mod.compile(x4.shape).run(x4)
    np.testing.assert_allclose(y, x4.reshape(4, -1) * 0.5 + np.arange(60, dtype=np.float32) / 60, rtol=1e-5,
                               atol=1e-6)


def _binary_ops_limit(e):
    """Without every dimension fixed, Shape-derived float values fold per trace, after the import made the
    model's constants its buffers: an activation times such a constant varying along an axis ([1, 60], [8])
    has no buffer to read. That is the one problem allowed, and the error says which dimensions to fix."""
    assert {p[1] for p in e.problems} <= {"Mul", "Add"}, e.problems
    assert all("folds at import once every input dimension is fixed" in p[2] and "input_shape=" in p[2]
               for p in e.problems), e.problems


def test_input_shape_is_checked_and_enforced():
    m = _shape_graph()
    with pytest.raises(ValueError, match="has 3 dimensions; the model declares 4"):
        cno.import_model(m, input_shape=(2, 3, 4))
    with pytest.raises(ValueError, match="dimension 1 is 4, but the model declares it as 3"):
        cno.import_model(m, input_shape=(2, 4, 4, 5))
    with pytest.raises(ValueError, match="not inputs of the model"):
        cno.import_model(m, input_shape={"z": (2, 3, 4, 5)})
    with pytest.raises(ValueError, match="is not a dimension"):
        cno.import_model(m, input_shape=(2, 3, 0, 5))
    with pytest.raises(TypeError):
        cno.import_model(m, input_shape=3)
    mod = cno.import_model(m, input_shape={"x": (2, 3, 4, 5)})
    with pytest.raises(ValueError, match=r"imported with input_shape \(2, 3, 4, 5\) and takes that shape only"):
        mod.compile((2, 3, 4, 6))
    two = _model([helper.make_node("Add", ["a", "b"], ["y"])], [("a", ["N", 4]), ("b", ["N", 4])], [("y", ["N", 4])])
    with pytest.raises(ValueError, match="pass input_shape as a dict"):
        cno.import_model(two, input_shape=(1, 4))
    mod = cno.import_model(two, input_shape={"a": (3, 4), "b": (3, 4)})
    assert mod.input_shapes == [(3, 4), (3, 4)]


def test_symbolic_dims_say_which_dimension_to_fix():
    mod = cno.import_model(_shape_graph())
    assert mod.input_shapes == [(None, 3, None, None)]
    with pytest.raises(ValueError) as e:
        mod.example_input_shape()
    msg = str(e.value)
    assert "input 'x' (None, 3, None, None) has symbolic dimensions 0 ('N'), 2 ('H'), 3 ('W')" in msg, msg
    assert "input_shape=(1, 3, H, W)" in msg and "--input-shape 1,3,H,W" in msg, msg


def _torch():
    return pytest.importorskip("torch")


def _export(model, x, dynamo, dynamic, opset=17):
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            kw = {}
            if dynamic:
                kw["dynamic_shapes"] = ({0: torch.export.Dim("N", max=64)},)
            return torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], **kw).model_proto
        f = io.BytesIO()
        kw = {"dynamic_axes": {"x": {0: "N", 2: "H", 3: "W"}}} if dynamic else {}
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=opset, input_names=["x"], **kw)
        return onnx.load_from_string(f.getvalue())


def _torch_modules():
    torch = _torch()
    nn = torch.nn

    class ViewHead(nn.Module):  # x.view(x.size(0), -1)
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            y = nn.functional.max_pool2d(y, 2)
            return self.fc(y.view(y.size(0), -1))

    class ShapeDependent(nn.Module):  # slicing, zeros, arange from the input's size; flatten(1) after
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(6 * 4 * 8, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            y = y[:, :, : y.shape[2] // 2]                                  # Slice with a shape-derived end
            z = torch.zeros(y.shape[0], 2, y.shape[2], y.shape[3])          # ConstantOfShape
            y = torch.cat([y, z], 1)                                        # torch.cat of a shape-derived tensor
            y = y * torch.arange(y.shape[3], dtype=torch.float32)           # Range
            return self.fc(y.flatten(1))

    return {"view": ViewHead, "shape_dependent": ShapeDependent}


@pytest.mark.parametrize("name", ["view", "shape_dependent"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_exports_with_input_shape(name, dynamo, dynamic):
    torch = _torch()
    torch.manual_seed(0)
    model = _torch_modules()[name]().eval()
    x = _r(2, 3, 8, 8)
    m = _export(model, torch.from_numpy(x), dynamo, dynamic)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    mod = cno.import_model(m, input_shape=(2, 3, 8, 8))
    y = mod.compile(x.shape).run(x)
    assert y.shape == want.shape and _rel(y, want) < 1e-5, _rel(y, want)
    assert _rel(y, _ort(m, x)) < 1e-5
    if dynamic:  # without input_shape: folded per trace, for any batch
        x3 = _r(3, 3, 8, 8)
        with torch.no_grad():
            want = model(torch.from_numpy(x3)).numpy()
        try:
            y = cno.import_model(m).compile(x3.shape).run(x3)
        except cno.UnsupportedError as e:
            _binary_ops_limit(e)
            return
        assert _rel(y, want) < 1e-5


def test_convert_cli_fixes_the_import(tmp_path):
    if getattr(cn, "save", None) is None:
        pytest.skip("this build has no cnnnative.save")
    src, dst = tmp_path / "m.onnx", tmp_path / "m.cnn"
    onnx.save(_shape_graph(), str(src))
    run = [sys.executable, "-m", "cnnnative", "convert", str(src), str(dst)]
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 1 and "--input-shape 1,3,H,W" in r.stderr, r.stderr
    r = subprocess.run(run + ["--input-shape", "2,3,4,5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x = _r(2, 3, 4, 5)
    sess = cn.load(str(dst)).compile((2, 3, 4, 5)) if hasattr(cn.load(str(dst)), "compile") else None
    if sess is not None:
        np.testing.assert_allclose(sess.run(x), x.reshape(2, -1) * 0.5 + np.arange(60, dtype=np.float32) / 60,
                                   rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# 3. opsets


def _small_cnn_onnx():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
                          nn.Softmax(dim=1)).eval()
    x = _r(2, 3, 8, 8)
    return _export(model, torch.from_numpy(x), False, False, opset=11), x


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_opsets_through_version_converter(opset):
    # exported at opset 11 and converted up (version_converter cannot bring Relu down from 14)
    from onnx import version_converter
    m, x = _small_cnn_onnx()
    mc = version_converter.convert_version(m, opset) if opset != 11 else m
    assert mc.opset_import[0].version == opset
    mod = cno.import_model(mc)
    assert mod.opset == opset
    assert _rel(mod.compile(x.shape).run(x), _ort(mc, x)) < 1e-5


def test_opset_below_range_is_converted():
    W = _r(4, 2, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, 2, 5, 5])], [("y", [1, 4, 5, 5])], {"W": W}, opset=3)
    mod = cno.import_model(m)
    assert mod.opset >= 6 and mod._program.source_opset == 3
    x = _r(1, 2, 5, 5)
    from onnx.reference import ReferenceEvaluator
    want = ReferenceEvaluator(_model(nodes, [("x", [1, 2, 5, 5])], [("y", [1, 4, 5, 5])], {"W": W})).run(
        None, {"x": x})[0]
    assert _rel(mod.compile(x.shape).run(x), want) < 1e-5


def test_opset_newer_than_onnx_knows_is_named():
    newest = onnx.defs.onnx_opset_version()
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])])
    m.opset_import[0].version = newest + 5
    e = _unsupported(m)
    assert f"opset {newest + 5} is newer than this onnx package knows ({newest})" in str(e), str(e)


# ---------------------------------------------------------------------------------------------------
# 4. a ResNet-style model from the dynamo exporter


def test_dynamo_resnet_style():
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.block, self.pool, self.fc = Block(8), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))

    torch.manual_seed(0)
    net = Net().eval()
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    x = _r(2, 3, 16, 16)
    m = _export(net, torch.from_numpy(x), True, True)
    try:
        mod = cno.import_model(m)
    except cno.UnsupportedError as e:
        if {p[1] for p in e.problems} == {"ReduceMean"}:
            pytest.skip("ReduceMean is not mapped in this checkout (ops-reduce)")
        raise
    assert _rel(mod.compile(x.shape).run(x), _ort(m, x)) < 1e-5


def test_opset_conversion_failure_is_named(monkeypatch):
    from onnx import version_converter

    def fail(model, target):
        raise RuntimeError("adapter_lookup: No Adapter From Version $5 for Foo")
    monkeypatch.setattr(version_converter, "convert_version", fail)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])], opset=5)
    e = _unsupported(m)
    assert "opset 5 is outside the importer's range" in str(e) and "No Adapter From Version $5" in str(e), str(e)


def test_constants_expanded_to_full_shape_are_affines():
    # a per-channel constant written at the activation's full shape (as an Expand to Shape(x) folds to) is a
    # per-channel affine; one that would grow the result (a batch of 2 from 1) maps as the broadcasting op
    from cnnnative.onnx._base import AFFINE
    per_channel = np.broadcast_to(np.array([0.5, 2.0], np.float32).reshape(1, 2, 1, 1), (1, 2, 3, 3)).copy()
    grow = np.full((2, 1, 1, 1), 1.5, np.float32)
    for const in (per_channel, grow):
        m = _model([helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                   [("x", [1, 2, 3, 3])], [("y", None)], {"c": const})
        mod = cno.import_model(m)
        assert mod._program.nodes[0].op == AFFINE
        x = _r(1, 2, 3, 3)
        y = mod.compile(x.shape).run(x)
        np.testing.assert_allclose(y, np.maximum(x * const, 0), rtol=1e-6)
