"""The binary op family: binary_add / binary_sub / binary_mul / binary_div with NumPy broadcasting, binary_scalar
(x op number, kinds add sub rsub mul div rdiv) and sum_to (the gradient of a broadcast operand): check_op (numpy,
reference kernel, float64 finite differences, fast backward) over same shapes, SE-style [N,C,1,1] operands on
either side, rank-changing broadcasts and both operands stretched; the native cpu kernels against the reference
ones on tensors big enough for the threaded paths (bit for bit); shape and attribute errors naming the node.
Python: the Tensor operators and functional add/sub/mul/div against torch in eval and in one SGD training step
(a parameter multiplied in by broadcast included); bad operands. ONNX: a cnnnative model exported and imported
back; tiny torch modules (SE block, SiLU as x * sigmoid(x), scalars, a constant of another shape) exported by
both torch exporters, imported and compared with onnxruntime."""
import numpy as np
import pytest

import cnnnative as cn
import cnnnative.onnx  # noqa: F401 (cn.onnx)
from cnnnative import _core
from cnnnative import nn
from cnnnative.nn import functional as F
from opcheck import assert_close, check_op, run_forward

NP = {"binary_add": np.add, "binary_sub": np.subtract, "binary_mul": np.multiply, "binary_div": np.divide}

SHAPES = {  # name: (a shape, b shape)
    "same": ((2, 3, 2, 2), (2, 3, 2, 2)),
    "se_right": ((2, 3, 2, 3), (2, 3, 1, 1)),
    "se_left": ((2, 3, 1, 1), (2, 3, 3, 2)),
    "channel": ((2, 3, 2, 2), (3, 1, 1)),
    "both": ((3, 1, 4), (2, 1)),
    "rank": ((4,), (2, 3, 4)),
    "one": ((1,), (2, 3)),
}


def _operands(op, sa, sb, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if op == "binary_div":  # away from 0
        b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))
    return a, b.astype(np.float32)


@pytest.mark.parametrize("op", list(NP))
@pytest.mark.parametrize("name", list(SHAPES))
def test_binary(op, name):
    sa, sb = SHAPES[name]
    a, b = _operands(op, sa, sb, len(name) + len(op))
    check_op(op, [a, b], {}, numpy_ref=lambda a, b: [NP[op](a, b)])


SCALAR_REF = {0: lambda x, v: x + v, 1: lambda x, v: x - v, 2: lambda x, v: v - x, 3: lambda x, v: x * v,
              4: lambda x, v: x / v, 5: lambda x, v: v / x}


@pytest.mark.parametrize("kind", sorted(SCALAR_REF))
@pytest.mark.parametrize("value", [2.5, -0.75])
def test_binary_scalar(kind, value):
    rng = np.random.default_rng(kind)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    if kind == 5:
        x = (np.sign(x) * (0.5 + np.abs(x))).astype(np.float32)
    check_op("binary_scalar", [x], {"kind": kind, "value": value},
             numpy_ref=lambda x: [SCALAR_REF[kind](x, value)])


def _sum_to_ref(x, shape, scale=1.0):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    return (x.sum(axis=axes, keepdims=True).reshape(shape) * scale,)


@pytest.mark.parametrize("xs, shape, scale", [
    ((2, 3, 4, 5), [2, 3, 1, 1], 1.0),
    ((2, 3, 4, 5), [3, 1, 1], -1.0),
    ((2, 3, 4, 5), [1, 3, 1, 5], 0.5),
    ((2, 3, 4), [4], 1.0),
    ((2, 3, 4), [1], 2.0),
    ((2, 3, 4), [2, 3, 4], -1.0),
])
def test_sum_to(xs, shape, scale):
    x = np.random.default_rng(len(shape)).standard_normal(xs).astype(np.float32)
    check_op("sum_to", [x], {"shape": shape, "scale": scale}, numpy_ref=lambda x: _sum_to_ref(x, shape, scale))


@pytest.mark.parametrize("sa, sb", [((4, 64, 30, 30), (4, 64, 1, 1)), ((4, 64, 1, 1), (4, 64, 30, 30)),
                                    ((3, 70000), (70000,)), ((8, 40, 33, 17), (40, 1, 17)), ((2, 300, 400), (1,))])
def test_cpu_kernels_against_reference(sa, sb):
    """Threaded native paths: forward bit for bit; sum_to (float64 accumulation in one order) bit for bit."""
    a, b = _operands("binary_div", sa, sb, 3)
    for op in NP:
        y = run_forward(op, [a, b])[0]
        assert (y == run_forward(op, [a, b], backend="reference")[0]).all(), op
        assert_close(y, NP[op](a, b), 1e-6, 1e-6, op)
    out = np.broadcast_shapes(sa, sb)
    x = np.random.default_rng(0).standard_normal(out).astype(np.float32)
    for target in (sa, sb):
        attrs = {"shape": list(target), "scale": 1.0}
        y = run_forward("sum_to", [x], attrs)[0]
        assert (y == run_forward("sum_to", [x], attrs, backend="reference")[0]).all(), target
        assert_close(y, _sum_to_ref(x.astype(np.float64), list(target))[0], 1e-5, 1e-4, "sum_to")


def test_kernels_are_native():
    g = _core.Graph()
    a = g.add_input("a", [2, 3, 4, 4])
    b = g.add_input("b", [2, 3, 1, 1])
    y = g.add_node("binary_mul", [a, b], {}, "mul")
    z = g.add_node("binary_scalar", y, {"kind": 5, "value": 2.0}, "rdiv")
    g.set_outputs(z)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=z, wrt=[a, b], strict=True)
    impls = {k["op"]: k["impl"] for k in s.kernels()}
    assert {impls[k] for k in ("binary_mul", "binary_scalar", "sum_to", "binary_div")} == {"native"}, impls


@pytest.mark.parametrize("op, ins, attrs, pattern", [
    ("binary_add", [(2, 3), (4,)], {}, r"op 'binary_add' \(node 'n'\): shapes \[2, 3\] and \[4\] do not broadcast"),
    ("binary_mul", [(2, 3)], {}, r"expects 2 inputs"),
    ("binary_scalar", [(2, 3)], {"kind": 7, "value": 1.0}, r"attribute 'kind' must be 0 add, .* got 7"),
    ("binary_scalar", [(2, 3)], {"value": 1.0}, r"attribute 'kind' .* got none"),
    ("sum_to", [(2, 3)], {}, r"missing attribute 'shape'"),
    ("sum_to", [(2, 3)], {"shape": [2, 2]}, r"cannot sum \[2, 3\] to \[2, 2\]"),
    ("sum_to", [(2, 3)], {"shape": [1, 2, 3]}, r"cannot sum \[2, 3\] to \[1, 2, 3\]"),
])
def test_errors_name_the_node(op, ins, attrs, pattern):
    g = _core.Graph()
    ids = [g.add_input(f"i{k}", list(s)) for k, s in enumerate(ins)]
    with pytest.raises(cn.Error, match=pattern):
        g.add_node(op, ids, attrs, "n")


# ---- Python API ----

class _Arith(nn.Module):
    """Every operator form on an SE-like pattern; `gamma` a [C, 1, 1] parameter multiplied in by broadcast."""

    def __init__(self, c=4, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.fc1 = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(np.linspace(0.5, 1.5, c, dtype=np.float32).reshape(c, 1, 1))
        self.head = nn.Linear(c * 16, classes)

    def forward(self, x):
        x = self.conv(x)
        s = F.sigmoid(self.fc1(F.adaptive_avg_pool2d(x, 1)))
        x = s * x                  # [N, C, 1, 1] * [N, C, H, W]
        x = x * F.sigmoid(x)       # SiLU
        x = 1 - x / 6 + 3
        x = x * 0.5 - (-x) / (x * x + 2)
        x = 2 / (x * x + 1) + x
        x = self._tensor("gamma") * x
        x = F.add(x, x * 0.5, alpha=0.5)
        x = F.sub(x, 0.25) + F.mul(x, 2.0) - F.div(x, 4.0)
        return self.head(x.flatten(1))


class _TorchArith:
    def __init__(self, ours):
        import torch

        class M(torch.nn.Module):
            def __init__(s):
                super().__init__()
                s.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
                s.fc1 = torch.nn.Conv2d(4, 4, 1)
                s.gamma = torch.nn.Parameter(torch.ones(4, 1, 1))
                s.head = torch.nn.Linear(64, 5)

            def forward(s, x):
                x = s.conv(x)
                sc = torch.sigmoid(s.fc1(torch.nn.functional.adaptive_avg_pool2d(x, 1)))
                x = sc * x
                x = x * torch.sigmoid(x)
                x = 1 - x / 6 + 3
                x = x * 0.5 - (-x) / (x * x + 2)
                x = 2 / (x * x + 1) + x
                x = s.gamma * x
                x = torch.add(x, x * 0.5, alpha=0.5)
                x = torch.sub(x, 0.25) + torch.mul(x, 2.0) - torch.div(x, 4.0)
                return s.head(x.flatten(1))

        self.m = M()
        sd = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
        self.m.load_state_dict(sd)


def test_operators_against_torch_eval():
    torch = pytest.importorskip("torch")
    ours = _Arith()
    ref = _TorchArith(ours).m
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = ours.compile(x.shape).run(x)
    with torch.no_grad():
        ty = ref(torch.from_numpy(x)).numpy()
    assert_close(y, ty, 1e-4, 1e-5, "eval")


def test_training_step_against_torch():
    torch = pytest.importorskip("torch")
    ours = _Arith()
    ref = _TorchArith(ours).m
    o = cn.optim.SGD(lr=0.1)
    t = torch.optim.SGD(ref.parameters(), lr=0.1)
    sess = ours.compile((4, 3, 4, 4), mode="train", optimizer=o)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    lab = rng.integers(0, 5, 4).astype(np.int32)
    loss = sess.step(x, lab)
    tl = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(lab).long())
    tl.backward()
    t.step()
    assert abs(loss - tl.item()) <= 1e-4 * abs(tl.item())
    sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert_close(np.array(v), sd[k].numpy(), 1e-4, 1e-5, k)


class _Scaled(nn.Module):
    """x * gamma with gamma a Parameter read through the builder's named arrays (GraphBuilder.named_arrays)."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(np.array([[[0.5]], [[2.0]], [[-1.0]]], np.float32))

    def forward(self, x):
        return self._tensor("gamma") * x + F.rsub(x, 1.0, alpha=2.0)


def test_parameter_operand_trains():
    torch = pytest.importorskip("torch")
    m = _Scaled()
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 2)).astype(np.float32)
    y = m.compile(x.shape).run(x)
    assert_close(y, np.array(m.gamma) * x + (1 - 2 * x), 1e-6, 1e-6, "gamma * x")
    tg = torch.tensor(np.array(m.gamma), requires_grad=True)
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1.0), loss="mse")
    tgt = np.zeros_like(x)
    sess.step(x, tgt)
    tl = torch.nn.functional.mse_loss(tg * torch.from_numpy(x) + (1 - 2 * torch.from_numpy(x)), torch.from_numpy(tgt))
    tl.backward()
    assert_close(np.array(m.gamma), (tg - tg.grad).detach().numpy(), 1e-5, 1e-6, "gamma after a step")


def test_same_shape_add_stays_engine_add():
    """x + y of one shape is the engine's `add` (the inference fusion matches it); other forms are binary_*."""
    b = cn.graph.GraphBuilder(False)
    with b:
        x = b.input("x", (1, 2, 3, 3))
        p = b.input("p", (1, 2, 1, 1))
        y = (x + x) - p * x / 2.0
    b.graph.set_outputs([y.vid])
    s = _core.Session(b.graph, _core.ParamStore([]), "infer", strict=True)
    assert sorted(k["op"] for k in s.kernels()) == ["add", "binary_mul", "binary_scalar", "binary_sub"]
    xv = np.random.default_rng(7).standard_normal((1, 2, 3, 3)).astype(np.float32)
    pv = np.random.default_rng(8).standard_normal((1, 2, 1, 1)).astype(np.float32)
    s.run([xv, pv])
    assert_close(s.fetch(0), 2 * xv - pv * xv / 2, 1e-6, 1e-6, "x + x - p * x / 2")


def test_bad_operands():
    b = cn.graph.GraphBuilder(False)
    with b:
        x = b.input("x", (2, 3, 4))
        with pytest.raises(ValueError, match=r"add \(\+\): shapes \[2, 3, 4\] and \[5\] do not broadcast"):
            x + b.input("y", (5,))
        with pytest.raises(TypeError, match=r"a constant array \[4\] with different values .* self._tensor\(name\)"):
            x * np.arange(4, dtype=np.float32)
        with pytest.raises(TypeError, match=r"expects a Tensor, a real number or a float array, got str"):
            x - "1"
        with pytest.raises(ValueError, match=r"rounding_mode='floor' is not supported"):
            F.div(x, 2.0, rounding_mode="floor")
        with pytest.raises(TypeError, match=r"alpha must be a real number"):
            F.add(x, x, alpha="2")
        y = x * np.full((1, 3, 1), 2.0, np.float32)  # a uniform constant: one scalar node
        assert y.shape == (2, 3, 4)
        z = x + np.full((5, 1, 1, 1), 1.0, np.float32)  # grows the result: a fill of its shape
        assert z.shape == (5, 2, 3, 4)
        w = np.float32(3.0) * x  # numpy scalar on the left
        assert w.shape == (2, 3, 4)
        gamma = np.arange(3, dtype=np.float32).reshape(3, 1)  # a module's array the builder knows by name
        b.named_arrays = {id(gamma): ("block.gamma", True)}
        v = gamma * x
        assert v.shape == (2, 3, 4) and "block.gamma" in b.params


# ---- ONNX ----

def test_onnx_round_trip(tmp_path, broadcast_handlers):
    pytest.importorskip("onnx")
    ours = _Arith()
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = ours.compile(x.shape).run(x)
    path = str(tmp_path / "m.onnx")
    cn.onnx.export_model(ours, path, x.shape)
    back = cn.onnx.import_model(path, validate=False)
    assert_close(back.compile(x.shape).run(x), y, 1e-5, 1e-6, "round trip")
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {sess.get_inputs()[0].name: x})[0], y, 1e-4, 1e-5, "onnxruntime")


def test_onnx_sum_to_export(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    import onnx
    from onnx import helper
    from cnnnative.onnx._ops_binary import export_sum_to

    class Ex:
        def __init__(self):
            self.nodes, self.inits, self.taken, self.batch_specific = [], [], set(), []

        def shape(self, vid):
            return [2, 3, 4]

        def const(self, hint, arr):
            self.inits.append(onnx.numpy_helper.from_array(np.asarray(arr), hint))
            return hint

        def node(self, op, ins, outs, name, **attrs):
            self.nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))

    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    for shape, scale in (([3, 1], -1.0), ([1, 3, 4], 1.0), ([4], 2.0)):
        ex = Ex()
        export_sum_to(ex, [0], {"shape": shape, "scale": scale}, [1], "s", ["x"], ["y"])
        g = helper.make_graph(ex.nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], ex.inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert_close(sess.run(None, {"x": x})[0], _sum_to_ref(x.astype(np.float64), shape, scale)[0], 1e-5, 1e-5,
                     str(shape))


@pytest.fixture
def broadcast_handlers(monkeypatch):
    """The importer's Add/Sub/Mul/Div/Sum handlers delegating to this family's mappers (the edit the report
    proposes for _ops_math); a no-op once they do."""
    from cnnnative.onnx import _base, _importer
    from cnnnative.onnx import _ops_binary as ob
    for t in ("Add", "Sub", "Mul", "Div"):
        monkeypatch.setitem(_importer.HANDLERS, t, ob.map_binary)
    monkeypatch.setitem(_importer.HANDLERS, "Sum", ob.map_sum)
    affine = _importer.HANDLERS[_base.AFFINE]

    def map_affine(ctx):  # the per-channel affine where it applies, else the broadcasting one
        try:
            return affine(ctx)
        except _base.Unsupported:
            return ob.map_affine_broadcast(ctx)
    monkeypatch.setitem(_importer.HANDLERS, _base.AFFINE, map_affine)


def _torch_module():
    import torch

    class SE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
            self.fc1 = torch.nn.Conv2d(6, 3, 1)
            self.fc2 = torch.nn.Conv2d(3, 6, 1)
            self.register_buffer("c", torch.tensor([[0.5], [1.0], [2.0], [4.0], [-1.0]]))  # [5, 1]: along H

        def forward(self, x):
            x = self.conv(x)
            x = x * torch.sigmoid(x)                     # SiLU
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(torch.nn.functional.avg_pool2d(x, 5)))))
            x = s * x                                    # SE
            y = 1 - x / 6 + 3
            z = 2.0 / (x * x + 1.0)
            return y * z - x * self.c + s / (s * s + 1) - s

    return SE().eval()


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_torch_onnx_export_imports(tmp_path, dynamo, broadcast_handlers):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    m = _torch_module()
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)
    path = str(tmp_path / "t.onnx")
    with torch.no_grad():
        torch.onnx.export(m, (torch.from_numpy(x),), path, dynamo=dynamo, opset_version=17 if not dynamo else 18,
                          input_names=["x"], output_names=["y"])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x})[0]
    ours = cn.onnx.import_model(path)
    y = ours.compile(x.shape).run(x)
    assert_close(y, expected, 1e-4, 1e-5, f"dynamo={dynamo}")


def test_onnx_mappers_directly(broadcast_handlers):
    """Hand-made graphs: Add of two broadcasting tensors, Div of a scalar constant by a tensor, Sub with the
    constant first, Mul by a uniform constant that grows the result, Sum of three broadcasting tensors."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper, numpy_helper
    T = onnx.TensorProto.FLOAT
    inits = [numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.full((2, 1, 1, 1), 1.5, np.float32), "grow"),
             numpy_helper.from_array(np.array([2.0], np.float32), "two")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Add", ["x", "p"], ["a"]),
             helper.make_node("Div", ["three", "a"], ["d"]),
             helper.make_node("Sub", ["two", "d"], ["s"]),
             helper.make_node("Mul", ["s", "grow"], ["m"]),
             helper.make_node("Sum", ["m", "p", "x"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", T, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = (np.random.default_rng(6).random((1, 2, 3, 3)) + 0.5).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    y = cn.onnx.import_model(model).compile(x.shape).run(x)
    assert_close(y, expected, 1e-5, 1e-6, "mappers")


def _importer_delegates():
    import inspect

    from cnnnative.onnx import _ops_math
    return "map_binary" in inspect.getsource(_ops_math.map_mul_div)


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_constant_of_several_axes_is_a_buffer(tmp_path, dynamo):
    """Constants that vary along more than one axis (no per-channel affine): model buffers read by binary ops,
    saved with the model. Needs the importer edit that makes _ops_math delegate to this family."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    if not _importer_delegates():
        pytest.skip("the importer's Add/Sub/Mul/Div handlers do not delegate to _ops_binary yet")

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.register_buffer("pos", torch.randn(1, 1, 4, 5, generator=g))   # varies along H and W
            self.register_buffer("bias", torch.randn(3, 1, 5, generator=g))     # along C and W
            self.register_buffer("den", torch.rand(3, 4, 1, generator=g) + 0.5)

        def forward(self, x):
            return (x * self.pos + self.bias) / self.den - self.bias / (x * x + 1) + (self.pos - x)

    x = np.random.default_rng(9).standard_normal((2, 3, 4, 5)).astype(np.float32)
    path = str(tmp_path / "c.onnx")
    with torch.no_grad():
        torch.onnx.export(M().eval(), (torch.from_numpy(x),), path, dynamo=dynamo, input_names=["x"],
                          output_names=["y"])
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = cn.onnx.import_model(path)
    assert_close(ours.compile(x.shape).run(x), expected, 1e-5, 1e-6, "several-axis constants")
    assert any(v.shape in ((1, 1, 4, 5), (3, 1, 5), (3, 4, 1)) for v in ours.state_dict().values())
    back = tmp_path / "back.onnx"
    cn.onnx.export_model(ours, str(back), x.shape)
    again = cn.onnx.import_model(str(back))
    assert_close(again.compile(x.shape).run(x), expected, 1e-5, 1e-6, "exported again")
