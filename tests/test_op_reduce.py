"""The reduce family: reduce_mean / reduce_sum / reduce_max over axes with keepdim (and their backward),
softmax_axis / log_softmax on any axis, global max pooling; the functional / nn API against torch; ONNX import
of ReduceMean / ReduceSum / ReduceMax / Softmax / LogSoftmax (attribute and input forms), export round trips,
and models exported by both torch exporters."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import cnnnative as cn
import cnnnative.onnx as cno
from cnnnative import _core, nn
from cnnnative import functional as F

from opcheck import assert_close, check_op, run_backward, run_forward


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# torch models through both exporters


def _torch():
    return pytest.importorskip("torch")


def _export(model, x, dynamo, opset=None):
    torch = _torch()
    model.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            prog = torch.onnx.export(model, (torch.from_numpy(x),), dynamo=True, opset_version=opset or 18,
                                     verbose=False)
            prog.save(f) if hasattr(prog, "save") else None
            if not f.getvalue():
                import onnx
                onnx.save(prog.model_proto, f)
        else:
            torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, opset_version=opset or 17,
                              input_names=["x"], output_names=["y"])
    return f.getvalue()


def _ort(data, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _check_torch_export(model, x, dynamo, opset=None, tol=1e-4):
    torch = _torch()
    data = _export(model, x, dynamo, opset)
    mod = cno.import_model(data)
    got = mod.compile(x.shape).run(x)
    want = _ort(data, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == ref.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))
    return mod


@pytest.mark.parametrize("pool", ["avg", pytest.param("max", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_adaptive_pool_1x1_imports(dynamo, pool):
    """torch's dynamo exporter writes ReduceMean(axes=[2, 3], keepdims=1) for AdaptiveAvgPool2d((1, 1)) (and
    ReduceMax for AdaptiveMaxPool2d((1, 1))): it imports as the engine's global pooling, as GlobalAveragePool
    (GlobalMaxPool) does."""
    torch = _torch()
    tnn = torch.nn
    torch.manual_seed(0)
    p = tnn.AdaptiveAvgPool2d((1, 1)) if pool == "avg" else tnn.AdaptiveMaxPool2d((1, 1))
    m = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU(), p, tnn.Flatten(), tnn.Linear(8, 4))
    x = _r(2, 3, 9, 7)
    mod = _check_torch_export(m, x, dynamo)
    ops = [e.split()[0] for e in mod.compile(x.shape).schedule()]
    assert ("global_avg_pool" if pool == "avg" else "max_pool2d") in ops
    assert not {"reduce_mean", "reduce_max"} & set(ops)


# ---------------------------------------------------------------------------------------------------
# the ops: fast kernel vs numpy and reference, float64 finite differences, fast backward vs reference

REDUCE_CASES = [
    ((2, 3, 4, 5), [2, 3], 1),   # global average pooling's shape, innermost run
    ((2, 3, 4, 5), [1], 0),      # over channels: innermost kept (lanes)
    ((2, 3, 4, 5), [0, 2], 1),   # alternating reduced / kept dims
    ((2, 3, 4, 5), [-1], 0),
    ((3, 7), [0, 1], 0),         # everything: shape [1]
    ((4, 1, 6), [1], 1),         # a size-1 axis only: a copy
    ((2, 300, 3), [0, 2], 0),    # more than one lane block
    ((5,), [0], 1),
]


def _np_reduce(fn, axes, keep):
    def ref(x):
        y = fn(x, axis=tuple(axes), keepdims=bool(keep))
        return [np.reshape(y, (1,)) if np.ndim(y) == 0 else y]
    return ref


@pytest.mark.parametrize("shape,axes,keep", REDUCE_CASES)
@pytest.mark.parametrize("op,fn", [("reduce_mean", np.mean), ("reduce_sum", np.sum), ("reduce_max", np.max)])
def test_reduce_ops(op, fn, shape, axes, keep):
    x = _r(*shape, seed=len(shape) + sum(axes))
    check_op(op, [x], {"axes": axes, "keepdim": keep}, _np_reduce(fn, axes, keep))


def test_reduce_sums_in_float64():
    """A float accumulator stops growing at 2^24: the sum of 2^24 + 2^12 ones must be exact."""
    x = np.ones((1, 1, 4097, 4096), np.float32)
    got = run_forward("reduce_sum", [x], {"axes": [2, 3], "keepdim": 0})[0]
    assert got.shape == (1, 1) and got[0, 0] == float(x.size)


@pytest.mark.parametrize("op,fn", [("reduce_mean", np.mean), ("reduce_sum", np.sum), ("reduce_max", np.max)])
@pytest.mark.parametrize("shape,axes", [((3, 200001), [1]), ((1, 2, 300, 500), [0, 1, 2, 3])])
def test_few_long_runs_are_cut_into_pieces(op, fn, shape, axes):
    """Few outputs of long runs are summed in parallel pieces, combined in a fixed order (the thread count
    does not change the result)."""
    x = _r(*shape, seed=2)
    got = check_op(op, [x], {"axes": axes, "keepdim": 0}, _np_reduce(fn, axes, 0), grad=False, rtol=1e-5)[0]
    threads = cn.get_num_threads()
    try:
        cn.set_num_threads(1)
        assert np.array_equal(run_forward(op, [x], {"axes": axes, "keepdim": 0})[0], got)
    finally:
        cn.set_num_threads(threads)
    dy = _r(*got.shape, seed=3)
    fast = run_backward(op, [x], {"axes": axes, "keepdim": 0}, [dy], [0])[0]
    ref = run_backward(op, [x], {"axes": axes, "keepdim": 0}, [dy], [0], backend="reference")[0]
    assert_close(fast, ref, 1e-6, 1e-7, f"{op} backward")


@pytest.mark.parametrize("shape,axes", [((2, 3, 4), [2]), ((3, 4, 5), [1]), ((2, 2, 3), [0, 2])])
def test_reduce_max_gradient_splits_ties_like_torch_amax(shape, axes):
    torch = _torch()
    x = np.round(_r(*shape, seed=3)).astype(np.float32)  # many ties
    dy = _r(*[1 if i in axes else d for i, d in enumerate(shape)], seed=4)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.amax(xt, dim=axes, keepdim=True).backward(torch.tensor(dy, dtype=torch.float64))
    for backend in ("cpu", "reference"):
        dx = run_backward("reduce_max", [x], {"axes": axes, "keepdim": 1}, [dy], [0], backend=backend)[0]
        assert_close(dx, xt.grad.numpy(), 1e-6, 1e-6, f"{backend} {shape} {axes}")


def _np_softmax(x, axis, log):
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return (x - m - np.log(s)) if log else e / s


@pytest.mark.parametrize("op", ["softmax_axis", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((3, 5), 1), ((3, 5), 0), ((2, 4, 3, 3), 1), ((2, 3, 4), -1),
                                        ((2, 300, 2), 0), ((6,), 0)])
def test_softmax_any_axis(op, shape, axis):
    x = _r(*shape, seed=5) * 3
    check_op(op, [x], {"axis": axis}, lambda x: [_np_softmax(x, axis, op == "log_softmax")])


@pytest.mark.parametrize("op", ["softmax_axis", "log_softmax"])
def test_softmax_long_rows(op):
    """Rows longer than one chunk of the vectorized row kernel (4096)."""
    x = _r(2, 10000, seed=6) * 4
    check_op(op, [x], {"axis": 1}, lambda x: [_np_softmax(x, 1, op == "log_softmax")], grad=False)
    dy = _r(2, 10000, seed=7)
    fast = run_backward(op, [x], {"axis": 1}, [dy], [0])[0]
    ref = run_backward(op, [x], {"axis": 1}, [dy], [0], backend="reference")[0]
    assert_close(fast, ref, 1e-4, 1e-6, op)


def _graph_error(op, shapes, attrs):
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(s), "float32") for i, s in enumerate(shapes)]
    g.add_node(op, ids, attrs, "node")


@pytest.mark.parametrize("op,shapes,attrs,msg", [
    ("reduce_mean", [(2, 3)], {"axes": [2], "keepdim": 0}, r"axis 2 is out of range for a rank-2 tensor"),
    ("reduce_sum", [(2, 3)], {"axes": [1, -1], "keepdim": 0}, r"repeats axis 1"),
    ("reduce_max", [(2, 3)], {"axes": [], "keepdim": 0}, r"at least one axis"),
    ("reduce_max", [(2, 3)], {"keepdim": 0}, r"missing attribute 'axes'"),
    ("reduce_mean", [(2, 3)], {"axes": [0], "keepdim": 2}, r"'keepdim' must be 0 or 1"),
    ("log_softmax", [(2, 3)], {"axis": 2}, r"axis 2 is out of range"),
    ("softmax_axis_grad", [(2, 3), (3, 2)], {"axis": 1}, r"expects \(dy, y\) of one shape"),
    ("reduce_sum_grad", [(2, 2)], {"axes": [1], "keepdim": 0, "input_shape": [2, 3]}, r"dy must be \[2\]"),
    ("reduce_max_grad", [(2,), (2, 3), (3,)], {"axes": [1], "keepdim": 0}, r"dy and y must be \[2\]"),
])
def test_bad_attributes_name_the_node(op, shapes, attrs, msg):
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'node'\): .*{msg}"):
        _graph_error(op, shapes, attrs)


# ---------------------------------------------------------------------------------------------------
# functional / nn against torch


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.sm = nn.Softmax(dim=2)
        self.lsm = nn.LogSoftmax(dim=1)
        self.gmp = nn.AdaptiveMaxPool2d((1, 1))
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        y = self.conv(x)
        a = y.mean((2, 3))
        b = F.amax(y, dim=(2, 3))
        c = y.sum(3).max(2).values
        d = self.lsm(y).mean(dim=(-1, -2), keepdim=True).flatten(1)
        e = F.sum(self.sm(y), dim=3, keepdim=True).amax((2, 3))
        f = self.gmp(y).flatten(1)
        g = F.log_softmax(F.softmax(y.mean(1), dim=-1), 1).max(dim=1, keepdim=True)[0]  # [N, 1, W]
        return self.fc(F.cat([a + b + c + d + e + f, g.sum(2)], 1))


def _torch_net(torch):
    tnn, tF = torch.nn, torch.nn.functional

    class T(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(3, 4, 3, padding=1)
            self.sm = tnn.Softmax(dim=2)
            self.lsm = tnn.LogSoftmax(dim=1)
            self.gmp = tnn.AdaptiveMaxPool2d((1, 1))
            self.fc = tnn.Linear(5, 5)

        def forward(self, x):
            y = self.conv(x)
            a = y.mean((2, 3))
            b = torch.amax(y, dim=(2, 3))
            c = y.sum(3).max(2).values
            d = self.lsm(y).mean(dim=(-1, -2), keepdim=True).flatten(1)
            e = torch.sum(self.sm(y), dim=3, keepdim=True).amax((2, 3))
            f = self.gmp(y).flatten(1)
            g = tF.log_softmax(tF.softmax(y.mean(1), dim=-1), 1).max(dim=1, keepdim=True)[0]
            return self.fc(torch.cat([a + b + c + d + e + f, g.sum(2)], 1))
    return T()


def test_functional_and_modules_match_torch_in_eval_and_one_training_step():
    torch = _torch()
    cn.manual_seed(0)
    ours = _Net()
    ref = _torch_net(torch).double()
    ref.load_state_dict({k: torch.from_numpy(np.array(v, np.float64)) for k, v in ours.state_dict().items()})
    x = _r(4, 3, 6, 5, seed=8)
    with torch.no_grad():
        want = ref(torch.from_numpy(x).double()).numpy()
    got = ours.compile(x.shape).run(x)
    assert_close(got, want, 1e-4, 1e-5, "eval")
    labels = np.array([0, 3, 1, 4], np.int32)
    sess = ours.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    sess.step(x, labels)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt.zero_grad()
    tF = torch.nn.functional
    tF.cross_entropy(ref(torch.from_numpy(x).double()), torch.from_numpy(labels).long()).backward()
    opt.step()
    sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert_close(np.array(v), sd[k].numpy(), 1e-4, 1e-5, f"{k} after one step")


def test_module_reprs_and_bad_arguments():
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(nn.LogSoftmax(dim=-1)) == "LogSoftmax(dim=-1)"
    assert repr(nn.AdaptiveMaxPool2d(1)) == "AdaptiveMaxPool2d(output_size=1)"
    with pytest.raises(ValueError, match="return_indices"):
        nn.AdaptiveMaxPool2d(1, return_indices=True)

    class Bad(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    for fn, err, msg in [
        (lambda x: x.mean(4), ValueError, r"mean: dim 4 is out of range for a 4-D tensor"),
        (lambda x: x.sum((1, -3)), ValueError, r"sum: dim 1 appears twice"),
        (lambda x: x.amax("a"), TypeError, r"amax: dim must be an int"),
        (lambda x: F.softmax(x, 7), ValueError, r"softmax: dim 7 is out of range"),
        (lambda x: F.adaptive_max_pool2d(x, 4), ValueError, r"does not divide the input's 6x5"),
        (lambda x: F.max(x, (1, 2)), TypeError, r"max: dim must be an int"),
    ]:
        with pytest.raises(err, match=msg):
            Bad(fn).compile((2, 3, 6, 5))


# ---------------------------------------------------------------------------------------------------
# ONNX


class _Export(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        a = F.softmax(y, dim=1).mean((2, 3), keepdim=True)
        b = F.log_softmax(y, dim=2).sum(dim=3, keepdim=True).amax(2, keepdim=True)
        c = y.amax(dim=(2, 3), keepdim=True)
        return (a + b + c).flatten(1)


@pytest.fixture
def any_axis_softmax(monkeypatch):
    """ONNX Softmax is still mapped by _ops_math.map_softmax (last axis only) in _importer.HANDLERS; this family's
    map_softmax_any takes every axis and every opset's semantics, and replaces it once HANDLERS drops its entry."""
    from cnnnative.onnx import _importer, _ops_reduce
    monkeypatch.setitem(_importer.HANDLERS, "Softmax", _ops_reduce.map_softmax_any)


def test_export_round_trip(any_axis_softmax):
    cn.manual_seed(1)
    m = _Export()
    x = _r(2, 3, 5, 4, seed=9)
    want = m.compile(x.shape).run(x)
    proto = cno.export_model(m, input_shape=x.shape)
    ops = {n.op_type for n in proto.graph.node}
    assert {"ReduceMean", "ReduceSum", "ReduceMax", "Softmax", "LogSoftmax"} <= ops
    back = cno.import_model(proto)
    assert_close(back.compile(x.shape).run(x), want, 1e-5, 1e-6, "round trip")
    assert_close(_ort(proto.SerializeToString(), x), want, 1e-4, 1e-5, "onnxruntime")


def _model(nodes, x_shape, y_shape, opset, inits=()):
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x_shape))],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_shape)],
                     initializer=[onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


def _import_vs_ort(m, x):
    data = m.SerializeToString()
    got = cno.import_model(data).compile(x.shape).run(x)
    want = _ort(data, x)
    if want.ndim == 0:
        want = want.reshape(1)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert_close(got, want, 1e-5, 1e-6, "import vs onnxruntime")


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
@pytest.mark.parametrize("opset", [11, 13, 17, 18])
@pytest.mark.parametrize("axes,keep", [([2, 3], 1), ([2, 3], 0), ([1], 0), ([0, -1], 1), (None, 0), (None, 1)])
def test_onnx_reduce_forms(op, opset, axes, keep):
    onnx = pytest.importorskip("onnx")
    x = _r(2, 3, 4, 5, seed=10)
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    ins, inits, kw = ["x"], [], {"keepdims": keep}
    if axes is not None:
        if as_input:
            ins.append("axes")
            inits.append(("axes", np.array(axes, np.int64)))
        else:
            kw["axes"] = axes
    m = _model([onnx.helper.make_node(op, ins, ["y"], **kw)], x.shape, None, opset, inits)
    _import_vs_ort(m, x)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum"])
def test_onnx_noop_with_empty_axes(op):
    onnx = pytest.importorskip("onnx")
    x = _r(2, 3, 4, seed=11)
    opset = 13 if op == "ReduceSum" else 18
    m = _model([onnx.helper.make_node(op, ["x"], ["y"], keepdims=0, noop_with_empty_axes=1)], x.shape, None, opset)
    _import_vs_ort(m, x)


def test_onnx_reduce_mean_2_3_is_global_average_pooling():
    onnx = pytest.importorskip("onnx")
    x = _r(2, 3, 4, 5, seed=12)
    m = _model([onnx.helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)], x.shape, None, 17)
    assert [e.split()[0] for e in cno.import_model(m).compile(x.shape).schedule()] == ["global_avg_pool"]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -1), (13, 1), (13, -1), (17, 0), (17, 2)])
def test_onnx_softmax_forms(op, opset, axis, any_axis_softmax):
    onnx = pytest.importorskip("onnx")
    x = _r(2, 3, 4, 5, seed=13) * 2
    m = _model([onnx.helper.make_node(op, ["x"], ["y"], axis=axis)], x.shape, None, opset)
    _import_vs_ort(m, x)


class _TorchReduce:
    @staticmethod
    def make(torch):
        tnn, tF = torch.nn, torch.nn.functional

        class M(tnn.Module):
            def __init__(self):
                super().__init__()
                self.conv = tnn.Conv2d(3, 4, 3, padding=1)

            def forward(self, x):
                y = self.conv(x)
                a = tF.log_softmax(y, dim=1).mean((2, 3), keepdim=True)
                b = torch.amax(y, dim=3, keepdim=True).sum(2, keepdim=True)
                c = tF.softmax(y, dim=-1).sum(dim=(2, 3), keepdim=True)
                return (a + b + c).flatten(1)
        return M()


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_torch_exported_reductions_and_softmaxes(dynamo):
    torch = _torch()
    torch.manual_seed(0)
    _check_torch_export(_TorchReduce.make(torch), _r(2, 3, 6, 5, seed=14), dynamo)
