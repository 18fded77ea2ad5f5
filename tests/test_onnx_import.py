"""cnnnative.onnx.import_model: hand-built graphs against onnx's reference evaluator (folding, pads,
affines, shape arithmetic, errors), and models exported by torch.onnx.export (LeNet-5, a ResNet-18 twin at
CIFAR size, a small U-Net) against torch. Skips without onnx; the torch cases skip without torch."""
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cnnnative as cn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import cnnnative.onnx as cno  # noqa: E402

OPS = set(cn._core.op_names())
needs = {op: pytest.mark.skipif(op not in OPS, reason=f"engine op {op!r} not in this build")
         for op in ("concat", "split", "conv_transpose2d", "upsample_nearest2d", "lrn", "fill")}


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def _check(m, x, rtol=1e-5):
    """Compiles the imported model for x.shape and compares with onnx's reference evaluator."""
    mod = cno.import_model(m)
    ref = ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})[0]
    out = mod.compile(x.shape).run(x)
    assert out.shape == ref.shape
    assert _rel(out, ref) < rtol, _rel(out, ref)
    return mod


def _ops(mod, shape):
    b, _, _ = mod.trace(shape, training=False)
    return [s.split()[0] for s in b.graph.node_ops()]


def _schedule(mod, shape):
    """Ops of the compiled inference session (after the engine's fusion)."""
    return [e.split()[0] for e in mod.compile(shape).schedule()]


rng = np.random.default_rng(0)


def _r(*s):
    return rng.standard_normal(s).astype(np.float32)


def test_import_is_lazy():
    code = ("import sys, cnnnative, cnnnative.onnx; assert 'onnx' not in sys.modules, 'onnx imported'; "
            "import cnnnative.onnx.backend; assert 'onnx' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sources_and_malformed_input(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    for src in (m, m.SerializeToString(), str(p), p, io.BytesIO(m.SerializeToString())):
        mod = cno.import_model(src)
        x = _r(3, 4)
        np.testing.assert_array_equal(mod.compile(x.shape).run(x), np.maximum(x, 0))
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        cno.import_model(b"\x08\x07garbage" * 5)
    with pytest.raises(TypeError):
        cno.import_model(12)


@needs["fill"]
@needs["concat"]
@needs["split"]
def test_conv_asymmetric_pads_and_mul_fused_into_the_conv():
    W, B, S = _r(4, 3, 3, 3), _r(4), _r(1, 4, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[0, 1, 1, 2], strides=[2, 1]),
             helper.make_node("Mul", ["c", "S"], ["m"]),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("Flatten", ["p"], ["y"])]
    m = _model(nodes, [("x", ["N", 3, 9, 8])], [("y", ["N", 40])], {"W": W, "B": B, "S": S})
    mod = _check(m, _r(5, 3, 9, 8))
    sd = mod.state_dict()
    np.testing.assert_array_equal(sd["W"], W)  # the Mul is a batch_norm of its own (buffers) ...
    assert list(sd)[:2] == ["W", "B"] and "Mul_1.weight" in sd
    ops = _ops(mod, (5, 3, 9, 8))
    assert ops[ops.index("conv2d"):][:3] == ["conv2d", "batch_norm", "relu"]
    assert _schedule(mod, (5, 3, 9, 8)).count("batch_norm") == 0  # ... which the engine folds into the conv
    _check(m, _r(2, 3, 9, 8))  # another batch size


@needs["fill"]
@needs["concat"]
def test_auto_pad_same_and_zero_pad_folding():
    W = _r(6, 2, 3, 3)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"]),
             helper.make_node("Conv", ["xp", "W"], ["c"], strides=[2, 2]),
             helper.make_node("Conv", ["c", "W2"], ["d"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("AveragePool", ["d"], ["y"], kernel_shape=[3, 3], auto_pad="SAME_LOWER",
                              count_include_pad=1)]
    m = _model(nodes, [("x", [1, 2, 11, 10])], [("y", [1, 6, 3, 3])],
               {"W": W, "W2": _r(6, 6, 3, 3), "pads": np.array([0, 0, 1, 2, 0, 0, 1, 1], np.int64)})
    mod = _check(m, _r(1, 2, 11, 10))
    ops = _ops(mod, (1, 2, 11, 10))
    # the importer maps the Pad, and the second conv's asymmetric SAME_UPPER pads (rows, then columns), to the
    # engine's pad ...
    assert ops.count("conv2d") == 2 and ops.count("pad") == 3 and "concat" not in ops and "fill" not in ops
    sched = _schedule(mod, (1, 2, 11, 10))
    # ... and the compile pass fold_pad folds the first away (the others add a row / column the conv reads) and
    # merges those two into one
    assert sched.count("pad") == 1 and sched.count("conv2d") == 2


@needs["fill"]
@needs["concat"]
@pytest.mark.parametrize("opset", [9, 17])
def test_pads_the_engine_pad_op_expresses_and_the_others(opset):
    """Spatial pads of a 4-D tensor run as the engine's pad op (a non-zero value stays a pad node, a zero one
    before a conv is folded); a Pad of the channels keeps the concat-with-fill path for that axis."""
    W = _r(3, 5, 3, 3)
    cases = [([0, 0, 2, 1, 0, 0, 0, 3], 0.5, 0, 1), ([0, 0, 1, 1, 0, 0, 1, 1], 0.0, 0, 1),
             ([0, 1, 1, 1, 0, 2, 1, 1], 0.0, 1, 2)]  # the channels: concat with fill, then H and W: pads
    for pads, value, concats, engine_pads in cases:
        c_in = 2 + pads[1] + pads[5]
        pad = (helper.make_node("Pad", ["x"], ["xp"], pads=pads, value=value) if opset < 11 else
               helper.make_node("Pad", ["x", "pads", "v"], ["xp"]))
        nodes = [pad, helper.make_node("Conv", ["xp", "W"], ["y"])]
        inits = {"W": W[:, :c_in]}
        if opset >= 11:
            inits.update(pads=np.array(pads, np.int64), v=np.array(value, np.float32))
        h, w = 6 + pads[2] + pads[6] - 2, 5 + pads[3] + pads[7] - 2
        m = _model(nodes, [("x", [1, 2, 6, 5])], [("y", [1, 3, h, w])], inits, opset=opset)
        mod = _check(m, _r(1, 2, 6, 5))
        ops = _ops(mod, (1, 2, 6, 5))
        assert ops.count("pad") == engine_pads and ops.count("concat") >= concats, (pads, ops)
        assert _schedule(mod, (1, 2, 6, 5)).count("pad") == engine_pads * (value != 0), pads


@pytest.mark.parametrize("c", [5, 16])
def test_conv_same_pads_import_as_the_engine_pad(c):
    """TensorFlow "SAME" convolutions with stride 2 (pads [0, 0, 1, 1]: one more row and column after than
    before, both read by the last window): the importer pads with the engine's pad op (no concat / fill), which
    runs natively in the session's layout (no reference fallback: strict=True), and the model matches
    onnxruntime."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[0, 0, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])]
    m = _model(nodes, [("x", ["N", c, 12, 12])], [("y", ["N", 8, 3, 3])],
               {"W": _r(32, c, 3, 3) * 0.3, "W2": _r(8, 32, 3, 3) * 0.2})
    mod = cno.import_model(m)
    x = _r(2, c, 12, 12)
    ops = _ops(mod, x.shape)
    assert ops.count("pad") == 4 and "concat" not in ops and "fill" not in ops, ops  # rows and columns, twice
    s = mod.compile(x.shape, strict=True)
    sched = [e.split()[0] for e in s.schedule()]
    assert sched.count("pad") == 2, sched  # fold_pad cannot fold them (the extra row / column is read): merged
    got = s.run(x)
    want = _onnxruntime(m, x)
    assert got.shape == want.shape and _rel(got, want) < 1e-5, _rel(got, want)
    if c == 16:  # every activation blocked: the second conv's pads sit between two convs with no reorder
        first, second = [i for i, op in enumerate(sched) if op in ("conv2d", "fused_conv2d")]
        assert sched[first + 1:second] == ["pad"], sched


def test_gemm_matmul_and_bias_folding():
    W1, W2, b2 = _r(5, 7), _r(7, 3), _r(3)
    nodes = [helper.make_node("Gemm", ["x", "W1", "c1"], ["h"], alpha=0.5, beta=2.0, transB=0),
             helper.make_node("MatMul", ["h", "W2"], ["z"]),
             helper.make_node("Add", ["z", "b2"], ["s"]),
             helper.make_node("Softmax", ["s"], ["y"], axis=1)]
    m = _model(nodes, [("x", ["N", 5])], [("y", ["N", 3])], {"W1": W1, "c1": _r(1, 7), "W2": W2, "b2": b2})
    mod = _check(m, _r(4, 5))
    sd = mod.state_dict()
    assert sd["W1"].shape == (7, 5) and sd["W2"].shape == (3, 7)  # stored [OUT, IN]
    assert _ops(mod, (4, 5)) == ["linear", "linear", "softmax"]


def test_affines_without_a_producer():
    """(x - mean) / std on the input cannot fold into anything before it: an exact per-channel affine."""
    mean, std = _r(1, 3, 1, 1), np.abs(_r(1, 3, 1, 1)) + 0.5
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Mul", ["b", "two"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Sub", ["r", "c"], ["y"])]
    m = _model(nodes, [("x", ["N", 3, 4, 5])], [("y", ["N", 3, 4, 5])],
               {"mean": mean, "std": std, "two": np.array(2.0, np.float32)})
    mod = _check(m, _r(2, 3, 4, 5))
    assert _ops(mod, (2, 3, 4, 5)).count("batch_norm") == 2  # one merged affine + the -1 of the last Sub


def test_scalar_affine_after_a_conv_reaches_the_engine_fusion():
    """A scalar Mul and a per-channel Add after a Conv merge into one per-channel affine, a batch_norm that the
    engine's inference fusion folds into the conv: the compiled session runs one fused conv."""
    W, B = _r(5, 3, 3, 3), _r(5)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "half"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = _model(nodes, [("x", ["N", 3, 6, 6])], [("y", ["N", 5, 6, 6])],
               {"W": W, "B": B, "half": np.array(0.5, np.float32), "t": _r(1, 5, 1, 1)})
    mod = _check(m, _r(2, 3, 6, 6))
    assert _ops(mod, (2, 3, 6, 6)) == ["conv2d", "batch_norm", "relu"]
    assert [op for op in _schedule(mod, (2, 3, 6, 6)) if op != "reorder"] == ["fused_conv2d"]
    np.testing.assert_array_equal(mod.state_dict()["W"], W)


def _onnxruntime(m, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {m.graph.input[0].name: x})[0]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("after", ["BatchNormalization", "MulAdd", "ScalarMul"])
def test_batchnorm_or_affine_after_a_gemm_reaches_the_engine_fusion(after, bias):
    """A BatchNormalization, or Mul/Add by per-feature constants, after a Gemm: imported as linear ->
    batch_norm with the weights unchanged, which the engine's inference fusion folds into one fused_linear."""
    C, IN = 5, 6
    W, B = _r(C, IN), _r(C)
    inits = {"W": W, **({"B": B} if bias else {})}
    nodes = [helper.make_node("Gemm", ["x", "W"] + (["B"] if bias else []), ["p"], transB=1)]
    if after == "BatchNormalization":
        inits.update(g=_r(C), b=_r(C), mu=_r(C), var=np.abs(_r(C)) + 0.5)
        nodes.append(helper.make_node("BatchNormalization", ["p", "g", "b", "mu", "var"], ["q"], epsilon=1e-3))
    elif after == "MulAdd":
        inits.update(s=np.abs(_r(1, C)) + 0.5, t=_r(C))
        nodes += [helper.make_node("Mul", ["p", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["q"])]
    else:
        inits.update(s=np.array(-1.5, np.float32))
        nodes.append(helper.make_node("Mul", ["s", "p"], ["q"]))
    nodes.append(helper.make_node("Relu", ["q"], ["y"]))
    m = _model(nodes, [("x", ["N", IN])], [("y", ["N", C])], inits)
    x = _r(4, IN)
    mod = _check(m, x)
    np.testing.assert_allclose(mod.compile(x.shape).run(x), _onnxruntime(m, x), rtol=1e-5, atol=1e-5)
    sd = mod.state_dict()
    np.testing.assert_array_equal(sd["W"], W)  # nothing folded at import ...
    if bias:
        np.testing.assert_array_equal(sd["B"], B)
    else:
        assert not any(k.endswith("bias") and "W" in k for k in sd), list(sd)
    assert _ops(mod, x.shape) == ["linear", "batch_norm", "relu"]
    assert [op for op in _schedule(mod, x.shape) if op != "reorder"] == ["fused_linear"]  # ... the engine folds
    _check(m, _r(2, IN))  # another batch size


@needs["conv_transpose2d"]
def test_affines_fold_into_weights_where_the_engine_cannot():
    """After a ConvTranspose, a linear layer of a 3-D tensor, a BatchNormalization or a 1-D Conv the engine has
    no fusion for an affine (reshapes hide the 3-D linear and the 1-D conv from it), so import folds it into the
    weights: no batch_norm of its own, no extra state."""
    C = 4
    S, T = np.abs(_r(1, C, 1, 1)) + 0.5, _r(1, C, 1, 1)
    cases = {
        "ConvTranspose": ([helper.make_node("ConvTranspose", ["x", "W", "B"], ["p"], strides=[2, 2])],
                          ("x", ["N", 2, 5, 5]), {"W": _r(2, C, 3, 3), "B": _r(C)}, S, T),
        "MatMul": ([helper.make_node("MatMul", ["x", "W"], ["p"])],
                   ("x", ["N", 2, 6]), {"W": _r(6, C)}, S.reshape(C), T.reshape(C)),
        "BatchNormalization": ([helper.make_node("BatchNormalization", ["x", "g", "b", "mu", "var"], ["p"])],
                               ("x", ["N", C, 3, 3]), {"g": _r(C), "b": _r(C), "mu": _r(C),
                                                       "var": np.abs(_r(C)) + 0.5}, S, T),
        "Conv1d": ([helper.make_node("Conv", ["x", "W", "B"], ["p"], pads=[1, 1])],
                   ("x", ["N", 3, 7]), {"W": _r(C, 3, 3), "B": _r(C)}, S.reshape(1, C, 1), T.reshape(1, C, 1)),
    }
    for op, (nodes, x, inits, s, t) in cases.items():
        nodes = nodes + [helper.make_node("Mul", ["p", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x[0], TensorProto.FLOAT, x[1])],
                              [helper.make_empty_tensor_value_info("y")],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in {**inits, "s": s, "t": t}.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        shape = (3,) + tuple(x[1][1:])
        mod = _check(m, _r(*shape))
        want = sorted(inits) + (["W_bias"] if op == "MatMul" else [])  # the folded shift: a new bias
        assert sorted(mod.state_dict()) == want, (op, list(mod.state_dict()))
        assert _ops(mod, shape).count("batch_norm") == (op == "BatchNormalization"), (op, _ops(mod, shape))


def test_torch_style_dynamic_flatten_and_shape_arithmetic():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    m = _model(nodes, [("x", ["N", 2, 3, 3])], [("y", ["N", 4])],
               {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
                "W": _r(4, 18), "b": _r(4)})
    for n in (1, 3, 8):
        _check(m, _r(n, 2, 3, 3))


@needs["concat"]
@needs["split"]
@needs["upsample_nearest2d"]
def test_concat_slice_resize_sum():
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
             helper.make_node("Resize", ["s", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Sum", ["u", "u", "u"], ["t"]),
             helper.make_node("Concat", ["t", "x"], ["y"], axis=1)]
    m = _model(nodes, [("x", ["N", 4, 6, 6])], [("y", ["N", 6, 6, 6])],
               {"st": np.array([1, 0], np.int64), "en": np.array([3, 3], np.int64),
                "ax": np.array([1, 2], np.int64), "scales": np.array([1, 1, 2, 1], np.float32)})
    _check(m, _r(2, 4, 6, 6))


@needs["conv_transpose2d"]
def test_conv_transpose_pads_and_output_shape():
    W, B = _r(3, 2, 3, 3), _r(2)
    cases = [(dict(strides=[2, 2], pads=[1, 0, 0, 1]), 4), (dict(strides=[3, 2], output_shape=[10, 8]), 3),
             (dict(strides=[2, 2], auto_pad="SAME_UPPER"), 4), (dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                                                     output_padding=[1, 1]), 4),
             (dict(strides=[1, 1], pads=[2, 0, 0, 2], dilations=[2, 1]), 5)]
    for kw, hw in cases:
        g = helper.make_graph([helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], **kw)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, hw, hw])],
                              [helper.make_empty_tensor_value_info("y")],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        _check(m, _r(2, 3, hw, hw))


def test_one_error_lists_every_unsupported_node():
    nodes = [helper.make_node("Cos", ["x"], ["t"]),
             helper.make_node("Mul", ["t", "x"], ["m"]),
             helper.make_node("Resize", ["m", "", "sc"], ["r"], mode="linear"),
             helper.make_node("Conv", ["r", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sin", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])],
               {"sc": np.array([1, 1, 2, 2], np.float32), "W": _r(2, 2, 3, 3)})
    with pytest.raises(cno.UnsupportedError) as e:
        cno.import_model(m)
    assert isinstance(e.value, ValueError)
    ops = [p[1] for p in e.value.problems]
    assert ops == ["Cos", "Sin"], e.value.problems  # their consumers are checked on their own (and are fine)
    assert "Cos" in str(e.value) and "Sin" in str(e.value)
    # a node whose inputs are fine but whose attributes are not: reported alongside the others
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Resize", ["a", "", "sc"], ["r"], mode="cubic"),
             helper.make_node("LRN", ["x"], ["l"], size=4),
             helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_empty_tensor_value_info(o) for o in ("r", "l", "p", "idx")],
                          [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(cno.UnsupportedError) as e:
        cno.import_model(m)
    whys = " | ".join(p[2] for p in e.value.problems)
    assert len(e.value.problems) == 3 and "cubic" in whys and "size=4" in whys and "Indices" in whys, whys


def test_state_dict_names_training_and_reload():
    W = _r(4, 1, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "onnx::Conv_7", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn/scale", "bn/bias", "bn/mean", "bn/var"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1)]
    inits = {"onnx::Conv_7": W, "conv.bias": _r(4), "bn/scale": _r(4), "bn/bias": _r(4), "bn/mean": _r(4),
             "bn/var": np.abs(_r(4)) + 0.5, "fc.weight": _r(3, 4), "fc.bias": _r(3)}
    m = _model(nodes, [("x", ["N", 1, 6, 6])], [("y", ["N", 3])], inits)
    mod = _check(m, _r(2, 1, 6, 6))
    sd = mod.state_dict()
    assert list(sd) == ["onnx__Conv_7", "conv.bias", "bn_scale", "bn_bias", "fc.weight", "fc.bias", "bn_mean", "bn_var"]
    assert {n for n, _ in mod.named_parameters()} == {"onnx__Conv_7", "conv.bias", "bn_scale", "bn_bias",
                                                      "fc.weight", "fc.bias"}
    np.testing.assert_array_equal(sd["onnx__Conv_7"], W)
    # fine-tune it: a training step runs and moves the weights
    sess = mod.compile((4, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    loss = sess.step(_r(4, 1, 6, 6), np.array([0, 1, 2, 0], np.int32))
    assert np.isfinite(loss) and not np.array_equal(mod.state_dict()["onnx__Conv_7"], W)
    mod.load_state_dict({k: np.array(v) * 0 for k, v in sd.items()})
    assert not np.any(mod.state_dict()["fc.weight"])


def test_opset_11_to_current_roundtrip_of_one_graph():
    """The same conv/pool/softmax graph imports at every opset this onnx knows from 11 on."""
    x = _r(2, 3, 8, 8)
    for opset in range(11, onnx.defs.onnx_opset_version() + 1):
        nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("GlobalAveragePool", ["p"], ["g"]),
                 helper.make_node("Flatten", ["g"], ["f"]),
                 helper.make_node("Softmax", ["f"], ["y"], axis=1)]
        m = _model(nodes, [("x", ["N", 3, 8, 8])], [("y", ["N", 4])], {"W": _r(4, 3, 3, 3)}, opset=opset)
        _check(m, x)


# ---------------------------------------------------------------------------------------------------
# models exported by PyTorch

def _torch():
    return pytest.importorskip("torch")


def _export(model, x, **kw):
    """torch.onnx.export with the TorchScript exporter (the dynamo one needs onnxscript), opset 17."""
    torch = _torch()
    f = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of dynamo
        torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kw)
    return f.getvalue()


def _compare(model, x, batches=(2, 5), tol=1e-4, **kw):
    torch = _torch()
    data = _export(model, x, **kw)
    mod = cno.import_model(data)
    worst = 0.0
    for n in batches:
        xb = np.random.default_rng(n).standard_normal((n,) + x.shape[1:]).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(xb)).numpy()
        out = mod.compile(xb.shape).run(xb)
        assert out.shape == ref.shape
        worst = max(worst, _rel(out, ref))
    assert worst <= tol, worst
    return mod, worst


def _randomize_bn(model, seed=0):
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _lenet():
    torch = _torch()

    class TorchLeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = torch.nn.Conv2d(6, 16, 5)
            self.fc1 = torch.nn.Linear(400, 120)
            self.fc2 = torch.nn.Linear(120, 84)
            self.fc3 = torch.nn.Linear(84, 10)

        def forward(self, x):
            F = torch.nn.functional
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.view(x.size(0), -1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return TorchLeNet()


def _resnet18(num_classes=10):
    """torchvision's resnet18 structure (BasicBlock, [2, 2, 2, 2], 7x7 stem, max pool), written out."""
    torch = _torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, inplanes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    return _randomize_bn(ResNet18())


def _unet():
    torch = _torch()
    nn = torch.nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.mid = block(3, 8), block(8, 16), block(16, 32)
            self.pool = nn.MaxPool2d(2)
            self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
            self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            m = self.mid(self.pool(e2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
            return self.head(d1)

    torch.manual_seed(0)
    return _randomize_bn(UNet())


def test_torch_lenet5():
    mod, err = _compare(_lenet(), _r(1, 1, 28, 28))
    assert "fc1.weight" in mod.state_dict()


def test_torch_lenet5_weights_match_cnnnative_lenet():
    """An imported torch LeNet loads into cnnnative's own LeNet5 by name and gives the same outputs."""
    torch = _torch()
    t = _lenet()
    mod = cno.import_model(_export(t, _r(1, 1, 28, 28)))
    ours = cn.models.lenet5()
    ours.load_state_dict({k: np.array(v) for k, v in mod.state_dict().items()})
    x = _r(3, 1, 28, 28)
    with torch.no_grad():
        assert _rel(ours.compile(x.shape).run(x), t(torch.from_numpy(x)).numpy()) < 1e-4


def test_torch_resnet18_folded_bn():
    """Eval-mode export: torch folds each BN into its conv."""
    mod, err = _compare(_resnet18(), _r(1, 3, 32, 32), batches=(2,))
    assert "batch_norm" not in _ops(mod, (2, 3, 32, 32))


def test_torch_resnet18_with_bn_nodes():
    """Export without constant folding keeps BatchNormalization nodes: imported as batch_norm."""
    mod, err = _compare(_resnet18(), _r(1, 3, 32, 32), batches=(3,), do_constant_folding=False)
    assert _ops(mod, (3, 3, 32, 32)).count("batch_norm") == 20
    assert "batch_norm" not in _schedule(mod, (3, 3, 32, 32))  # the engine folds each into its conv


def _bn_as_mul_add(data):
    """The model with each BatchNormalization written as Mul and Add by per-channel constants (as some
    converters emit it)."""
    m = onnx.load_from_string(data)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type != "BatchNormalization":
            nodes.append(n)
            continue
        g, b, mu, var = (inits[i].astype(np.float64) for i in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        s = g / np.sqrt(var + eps)
        for k, v in (("s", s), ("t", b - mu * s)):
            m.graph.initializer.append(numpy_helper.from_array(v.astype(np.float32).reshape(-1, 1, 1), n.name + k))
        nodes += [helper.make_node("Mul", [n.input[0], n.name + "s"], [n.output[0] + "_m"]),
                  helper.make_node("Add", [n.output[0] + "_m", n.name + "t"], [n.output[0]])]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def test_torch_resnet18_with_bn_as_mul_add():
    """Mul/Add after each conv: merged into one affine per conv, a batch_norm the engine folds into it."""
    torch = _torch()
    t = _resnet18()
    mod = cno.import_model(_bn_as_mul_add(_export(t, _r(1, 3, 32, 32), do_constant_folding=False)))
    x = _r(2, 3, 32, 32)
    with torch.no_grad():
        assert _rel(mod.compile(x.shape).run(x), t(torch.from_numpy(x)).numpy()) < 1e-4
    assert _ops(mod, x.shape).count("batch_norm") == 20
    assert "batch_norm" not in _schedule(mod, x.shape)


@needs["conv_transpose2d"]
@needs["concat"]
def test_torch_unet():
    mod, err = _compare(_unet(), _r(1, 3, 16, 16), batches=(2, 3))
    ops = _ops(mod, (2, 3, 16, 16))
    assert ops.count("conv_transpose2d") == 2 and ops.count("concat") == 2


def test_engine_pad_exports_and_imports_back():
    """nn.ConstantPad2d / ZeroPad2d export as ONNX Pad (opset 17) and import back to the engine's pad, with
    equal outputs (and onnx's reference evaluator agreeing) at two batch sizes."""
    from cnnnative import nn
    nn.manual_seed(0)
    model = nn.Sequential(nn.ConstantPad2d((1, 2, 0, 3), 0.5), nn.Conv2d(3, 4, 3), nn.ZeroPad2d(1),
                          nn.Conv2d(4, 2, 3))
    proto = cno.export_model(model, None, (2, 3, 7, 6))
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node].count("Pad") == 2
    back = cno.import_model(proto)
    assert _ops(back, (2, 3, 7, 6)).count("pad") == 2
    assert _schedule(back, (2, 3, 7, 6)).count("pad") == 1  # the zero pad folds into the second conv
    for n in (2, 5):
        x = _r(n, 3, 7, 6)
        ref = model.compile(x.shape).run(x)
        assert _rel(back.compile(x.shape).run(x), ref) < 1e-6
        assert _rel(ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x})[0], ref) < 1e-5


@pytest.mark.parametrize("trans_a, trans_b, alpha, beta, c_shape, computed_b", [
    (1, 0, 1.0, 1.0, (5,), False), (1, 1, 0.5, 2.0, (4, 1), False), (0, 0, 1.0, 1.0, (1,), True),
    (1, 0, 2.0, 0.5, (4, 5), True), (0, 1, 1.0, 1.0, None, True)])
def test_gemm_general_forms(trans_a, trans_b, alpha, beta, c_shape, computed_b):
    """Gemm beyond a linear layer: transA, a B computed from the input, alpha/beta, C broadcast from [N], [M, 1],
    [1] or [M, N] (matmul with transposes, scaled, plus C)."""
    m_, k_, n_ = 4, 3, 5
    a_shape = (k_, m_) if trans_a else (m_, k_)
    b_shape = (n_, k_) if trans_b else (k_, n_)
    inits = {}
    nodes = []
    if computed_b:  # B = Tanh(x2) with x2 a reshape of the input's own values: B is computed, not a weight
        x_elems = int(np.prod(a_shape))
        inits["bs"] = np.array(b_shape, np.int64)
        inits["wb"] = _r(x_elems, int(np.prod(b_shape)))
        nodes += [helper.make_node("Reshape", ["x", "flat"], ["xf"]), helper.make_node("MatMul", ["xf", "wb"], ["bf"]),
                  helper.make_node("Tanh", ["bf"], ["bt"]), helper.make_node("Reshape", ["bt", "bs"], ["B"])]
        inits["flat"] = np.array([1, x_elems], np.int64)
    else:
        inits["B"] = _r(*b_shape)
    ins = ["x", "B"]
    if c_shape is not None:
        inits["C"] = _r(*c_shape)
        ins.append("C")
    nodes.append(helper.make_node("Gemm", ins, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta))
    m = _model(nodes, [("x", list(a_shape))], [("y", [m_, n_])], inits)
    _check(m, _r(*a_shape))
