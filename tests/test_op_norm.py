"""layer_norm and group_norm (LayerNorm, LayerNorm2d, GroupNorm, InstanceNorm): check_op against numpy for a
range of shapes, axes, groups and with/without affine parameters (forward, float64 finite differences of the
reference backward, fast backward vs reference); the cpu kernels (oneDNN layer_normalization over the last dims,
native otherwise) against the reference on larger tensors and with a large mean; the nn / functional API against
torch in eval and through one SGD step; ONNX round trips and imports of both torch exporters' output compared
with onnxruntime; bad arguments."""
import io
import warnings

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from cnnnative import nn
from cnnnative.nn import functional as F
from opcheck import assert_close, check_op, run_backward, run_forward


def ln_ref(x, w=None, b=None, axis=-1, num_axes=None, eps=1e-5):
    r = x.ndim
    axis %= r
    k = r - axis if num_axes is None else num_axes
    dims = tuple(range(axis, axis + k))
    mu = x.mean(axis=dims, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=dims, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    pshape = x.shape[axis:axis + k] + (1,) * (r - axis - k)
    if w is not None:
        y = y * w.reshape(pshape)
    if b is not None:
        y = y + b.reshape(pshape)
    return [y, mu, 1 / np.sqrt(var + eps)]


def gn_ref(x, groups, w=None, b=None, eps=1e-5):
    N, C = x.shape[:2]
    xg = x.reshape(N, groups, -1)
    mu = xg.mean(axis=2, keepdims=True)
    var = ((xg - mu) ** 2).mean(axis=2, keepdims=True)
    y = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    pshape = (C,) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * w.reshape(pshape)
    if b is not None:
        y = y + b.reshape(pshape)
    return [y, mu.reshape(N, groups), 1 / np.sqrt(var.reshape(N, groups) + eps)]


def _rng(name):
    return np.random.default_rng(sum(map(ord, name)))


LN_CASES = {  # name: (x shape, axis, num_axes, affine inputs (0, 1 = weight, 2 = weight + bias), eps)
    "last": ((4, 10), 1, 1, 2, 1e-5),
    "last3d": ((2, 3, 8), 2, 1, 2, 1e-5),
    "last_two": ((2, 3, 4), 1, 2, 2, 1e-3),
    "no_affine": ((3, 7), 1, 1, 0, 1e-5),
    "weight_only": ((2, 6), 1, 1, 1, 1e-5),
    "all": ((2, 3), 0, 2, 2, 1e-5),
    "channels": ((2, 5, 3, 4), 1, 1, 2, 1e-6),
    "channels_no_affine": ((2, 4, 2, 3), 1, 1, 0, 1e-5),
    "middle": ((2, 3, 4, 5), 1, 2, 1, 1e-5),
    "one_value": ((3, 1), 1, 1, 2, 1e-5),
}


@pytest.mark.parametrize("name", list(LN_CASES))
def test_layer_norm(name):
    xs, axis, k, naff, eps = LN_CASES[name]
    rng = _rng(name)
    x = rng.standard_normal(xs).astype(np.float32)
    ps = xs[axis:axis + k]
    params = [(1 + 0.5 * rng.standard_normal(ps)).astype(np.float32), rng.standard_normal(ps).astype(np.float32)]
    ins = [x] + params[:naff]
    attrs = {"axis": axis, "num_axes": k, "eps": eps}
    check_op("layer_norm", ins, attrs, numpy_ref=lambda x, *p: ln_ref(x, *p, axis=axis, num_axes=k, eps=eps))


GN_CASES = {  # name: (x shape, groups, affine inputs)
    "groups": ((2, 6, 3, 4), 3, 2),
    "instance": ((2, 4, 3, 3), 4, 2),
    "one_group": ((2, 4, 2, 3), 1, 2),
    "no_affine": ((2, 6, 2, 2), 2, 0),
    "weight_only": ((1, 4, 3, 2), 2, 1),
    "rank3": ((2, 4, 5), 2, 2),
    "rank2": ((3, 6), 3, 2),
}


@pytest.mark.parametrize("name", list(GN_CASES))
def test_group_norm(name):
    xs, G, naff = GN_CASES[name]
    rng = _rng(name)
    x = rng.standard_normal(xs).astype(np.float32)
    C = xs[1]
    params = [(1 + 0.5 * rng.standard_normal(C)).astype(np.float32), rng.standard_normal(C).astype(np.float32)]
    check_op("group_norm", [x] + params[:naff], {"groups": G, "eps": 1e-5},
             numpy_ref=lambda x, *p: gn_ref(x, G, *p))


def _impls(op, xs, attrs, naff):
    g = _core.Graph()
    ids = [g.add_input("x", list(xs))]
    ps = list(xs[attrs["axis"]:attrs["axis"] + attrs["num_axes"]]) if op == "layer_norm" else [xs[1]]
    ids += [g.add_input(f"p{i}", ps) for i in range(naff)]
    y = g.add_node(op, ids, attrs, "n")
    g.set_outputs(y[:1])
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y[:1], wrt=ids, strict=True)
    return {k["op"]: k["impl"] for k in s.kernels()}


def test_cpu_kernel_kinds():
    last = _impls("layer_norm", (8, 32), {"axis": 1, "num_axes": 1, "eps": 1e-5}, 2)
    assert last["layer_norm"].startswith("onednn:layer_normalization"), last
    assert last["layer_norm_grad"] == "native"
    chan = _impls("layer_norm", (2, 8, 3, 3), {"axis": 1, "num_axes": 1, "eps": 1e-5}, 2)
    assert chan["layer_norm"] == "native" and chan["layer_norm_grad"] == "native"
    gn = _impls("group_norm", (2, 8, 3, 3), {"groups": 2, "eps": 1e-5}, 2)
    assert gn["group_norm"] == "native" and gn["group_norm_grad"] == "native"


LARGE = [  # op, x shape, attrs, affine inputs
    ("layer_norm", (64, 768), {"axis": 1, "num_axes": 1, "eps": 1e-5}, 2),
    ("layer_norm", (48, 700), {"axis": 1, "num_axes": 1, "eps": 1e-6}, 0),
    ("layer_norm", (4, 96, 14, 15), {"axis": 1, "num_axes": 1, "eps": 1e-6}, 2),
    ("layer_norm", (3, 5, 20, 30), {"axis": 1, "num_axes": 2, "eps": 1e-5}, 1),
    ("group_norm", (2, 8, 64, 72), {"groups": 2, "eps": 1e-5}, 2),  # rows of 18432 values: several chunks
    ("group_norm", (4, 32, 9, 9), {"groups": 32, "eps": 1e-5}, 0),
]


@pytest.mark.parametrize("case", range(len(LARGE)))
def test_cpu_vs_reference_large(case):
    op, xs, attrs, naff = LARGE[case]
    rng = np.random.default_rng(case)
    x = (3 + 2 * rng.standard_normal(xs)).astype(np.float32)
    ps = list(xs[attrs["axis"]:attrs["axis"] + attrs["num_axes"]]) if op == "layer_norm" else [xs[1]]
    ins = [x] + [rng.standard_normal(ps).astype(np.float32) for _ in range(naff)]
    fast = run_forward(op, ins, attrs)
    ref = run_forward(op, ins, attrs, backend="reference")
    for k in range(3):
        assert_close(fast[k], ref[k], 2e-5, 2e-5, f"{op} output {k}")
    dy = rng.standard_normal(xs).astype(np.float32)
    wrt = list(range(len(ins)))
    gf = run_backward(op, ins, attrs, [dy], wrt)
    gr = run_backward(op, ins, attrs, [dy], wrt, backend="reference", compute="float64")
    for i in wrt:
        scale = np.abs(gr[i]).max()
        assert_close(gf[i], gr[i], 1e-4, 1e-5 * scale, f"{op} d(input {i})")


@pytest.mark.parametrize("op, xs, attrs", [
    ("layer_norm", (16, 512), {"axis": 1, "num_axes": 1}),
    ("layer_norm", (2, 64, 6, 6), {"axis": 1, "num_axes": 1}),
    ("group_norm", (2, 16, 40, 40), {"groups": 4}),
])
def test_large_mean_statistics(op, xs, attrs):
    """Values 1e4 + N(0, 1): the statistics still match float64 (no E[x^2] - E[x]^2 cancellation)."""
    x = (1e4 + np.random.default_rng(3).standard_normal(xs)).astype(np.float32)
    y, mean, rstd = run_forward(op, [x], {**attrs, "eps": 1e-5})
    if op == "layer_norm":
        ry, rm, rv = ln_ref(x.astype(np.float64), axis=attrs["axis"], num_axes=attrs["num_axes"])
    else:
        ry, rm, rv = gn_ref(x.astype(np.float64), attrs["groups"])
    assert_close(mean, rm, 3e-7, 0, "mean")  # a few float ulps (oneDNN sums in float)
    assert_close(rstd, rv, 1e-4, 0, "rstd")
    assert_close(y, ry, 1e-3, 2e-3, "y")  # x itself is quantized to ~1e-3 at 1e4


def test_no_allocation_after_first_run():
    for op, xs, attrs in [("layer_norm", (4, 8, 5, 5), {"axis": 1, "num_axes": 1}),
                          ("layer_norm", (6, 40), {"axis": 1}), ("group_norm", (2, 8, 5, 5), {"groups": 4})]:
        g = _core.Graph()
        xi = g.add_input("x", list(xs))
        y = g.add_node(op, [xi], attrs, "n")
        g.set_outputs(y[:1])
        s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y[:1], wrt=[xi])
        x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
        s.run([x, np.ones(xs, np.float32)])
        before = _core.allocation_count()
        s.run([x, np.ones(xs, np.float32)])
        assert _core.allocation_count() == before, op


# ---------------------------------------------------------------------------------------------------
# nn / functional against torch

def _torch():
    return pytest.importorskip("torch")


class _Net(nn.Module):
    """conv -> LayerNorm2d -> GroupNorm -> InstanceNorm2d(affine) -> LayerNorm over the last dim -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ln2d = nn.LayerNorm2d(8, eps=1e-6)
        self.gn = nn.GroupNorm(4, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm(6)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x):
        x = self.ln(self.inorm(self.gn(self.ln2d(self.conv(x)))))
        return self.fc(F.flatten(x, 1))


def _torch_net():
    torch = _torch()

    class LayerNorm2d(torch.nn.LayerNorm):  # torchvision.models.convnext.LayerNorm2d
        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.ln2d = LayerNorm2d(8, eps=1e-6)
            self.gn = torch.nn.GroupNorm(4, 8)
            self.inorm = torch.nn.InstanceNorm2d(8, affine=True)
            self.ln = torch.nn.LayerNorm(6)
            self.fc = torch.nn.Linear(8 * 6 * 6, 5)

        def forward(self, x):
            x = self.ln(self.inorm(self.gn(self.ln2d(self.conv(x)))))
            return self.fc(torch.flatten(x, 1))

    return Net()


def _pair(seed=0):
    torch = _torch()
    cn.manual_seed(seed)
    ours = _Net()
    rng = np.random.default_rng(seed)
    sd = {k: (np.array(v) + 0.3 * rng.standard_normal(np.shape(v))).astype(np.float32)
          for k, v in ours.state_dict().items()}
    ours.load_state_dict(sd)
    ref = _torch_net()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return ours, ref, sd


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def test_modules_match_torch_eval_and_training_step():
    torch = _torch()
    ours, ref, before = _pair()
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    x = np.random.default_rng(5).standard_normal((4, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ty = ref(torch.from_numpy(x)).numpy()
    assert _rel(ours.compile(x.shape).run(x), ty) < 1e-5
    labels = np.array([0, 3, 1, 4], np.int32)
    sess = ours.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    loss = sess.step(x, labels)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    tl = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(labels).long())
    tl.backward()
    grads = {k: p.grad.numpy().copy() for k, p in ref.named_parameters()}
    opt.step()
    assert abs(loss - tl.item()) <= 1e-5 * abs(tl.item())
    sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        # the step moved each parameter by -lr * grad: compare the moves. (gn.bias gets a zero gradient: the
        # instance norm after it removes any per-channel shift.)
        move, tmove = np.array(v) - before[k], sd[k].numpy() - before[k]
        assert np.abs(move - tmove).max() <= 1e-4 * np.abs(tmove).max() + 1e-7, (k, np.abs(grads[k]).max())


def test_functional_matches_torch():
    torch = _torch()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    w6, b6 = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    tx = torch.from_numpy(x)
    cases = [
        (lambda t, W, B: F.layer_norm(t, (4, 5)), lambda t: torch.nn.functional.layer_norm(t, (4, 5))),
        (lambda t, W, B: F.group_norm(t, 3, W, B, 1e-3),
         lambda t: torch.nn.functional.group_norm(t, 3, torch.from_numpy(w6), torch.from_numpy(b6), 1e-3)),
        (lambda t, W, B: F.instance_norm(t), lambda t: torch.nn.functional.instance_norm(t)),
        (lambda t, W, B: F.layer_norm2d(t, W, B),
         lambda t: torch.nn.functional.layer_norm(t.permute(0, 2, 3, 1), (6,), torch.from_numpy(w6),
                                                  torch.from_numpy(b6), 1e-6).permute(0, 3, 1, 2)),
    ]
    for ours, theirs in cases:
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(w6)
                self.b = nn.Parameter(b6)

            def forward(self, t):
                return ours(t, self._tensor("w"), self._tensor("b"))
        y = M().compile(x.shape).run(x)
        assert_close(y, theirs(tx).numpy(), 1e-5, 1e-5, "functional")


def test_module_reprs_and_parameters():
    assert repr(nn.LayerNorm(10)) == "LayerNorm((10,), eps=1e-05, elementwise_affine=True)"
    assert repr(nn.LayerNorm2d(8, eps=1e-6)) == "LayerNorm2d((8,), eps=1e-06, elementwise_affine=True)"
    assert repr(nn.GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True)"
    assert repr(nn.InstanceNorm2d(3)) == ("InstanceNorm2d(3, eps=1e-05, momentum=0.1, affine=False, "
                                          "track_running_stats=False)")
    assert sorted(nn.LayerNorm([2, 3], bias=False).state_dict()) == ["weight"]
    assert list(nn.LayerNorm(4, elementwise_affine=False).state_dict()) == []
    assert list(nn.InstanceNorm2d(3).state_dict()) == []
    assert nn.GroupNorm(2, 4).state_dict()["weight"].shape == (4,)


# ---------------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("make, pattern", [
    (lambda: nn.GroupNorm(3, 8), r"num_channels \(8\) must be divisible by num_groups \(3\)"),
    (lambda: nn.InstanceNorm2d(4, track_running_stats=True), r"track_running_stats=True is not supported"),
    (lambda: nn.LayerNorm(4, eps=-1.0), r"eps must be a finite float >= 0"),
])
def test_module_argument_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("module, xs, pattern", [
    (lambda: nn.LayerNorm(5), (2, 4), r"layer_norm: normalized_shape \[5\] must be the last dims of the input "
                                      r"\[2, 4\]"),
    (lambda: nn.GroupNorm(2, 4), (2, 6, 3, 3), r"\(GroupNorm\): expected an input \[N, 4, \.\.\.\], got \[2, 6, 3, 3\]"),
    (lambda: nn.InstanceNorm2d(4), (2, 4, 3), r"expected an input \[N, 4, H, W\], got \[2, 4, 3\]"),
    (lambda: nn.LayerNorm2d(4), (2, 3, 5, 5), r"expected an input \[N, 4, \.\.\.\], got \[2, 3, 5, 5\]"),
])
def test_input_shape_errors(module, xs, pattern):
    with pytest.raises(ValueError, match=pattern):
        module().compile(xs)


@pytest.mark.parametrize("op, xs, attrs, extra, pattern", [
    ("layer_norm", (2, 4), {"axis": 2}, [], r"attribute 'axis' must be in \[0, 1\] for x \[2, 4\], got 2"),
    ("layer_norm", (2, 4), {"axis": 1, "num_axes": 2}, [], r"attribute 'num_axes' must be in \[1, 1\] for axis 1"),
    ("layer_norm", (2, 4), {"axis": 1}, [(3,)], r"weight must be \[4\] for x \[2, 4\], got \[3\]"),
    ("layer_norm", (2, 4), {"axis": 1, "eps": -1.0}, [], r"eps must be a finite float >= 0"),
    ("group_norm", (2, 6, 3), {"groups": 4}, [], r"groups must be >= 1 and divide the 6 channels"),
    ("group_norm", (2, 6, 3), {}, [], r"missing integer attribute 'groups'"),
    ("group_norm", (6,), {"groups": 1}, [], r"x must be \[N, C, \.\.\.\] \(at least 2-D\), got \[6\]"),
    ("group_norm", (2, 6, 3), {"groups": 2}, [(6,), (5,)], r"bias must be \[6\] for x \[2, 6, 3\], got \[5\]"),
])
def test_op_errors_name_node(op, xs, attrs, extra, pattern):
    g = _core.Graph()
    ids = [g.add_input("x", list(xs))] + [g.add_input(f"p{i}", list(s)) for i, s in enumerate(extra)]
    with pytest.raises(cn.Error, match=rf"op '{op}' \(node 'bad'\): " + pattern):
        g.add_node(op, ids, attrs, "bad")


# ---------------------------------------------------------------------------------------------------
# ONNX

def _onnx():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnnnative import onnx as cno
    return cno, ort


def _ort_run(data, x):
    _, ort = _onnx()
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_onnx_round_trip():
    """LayerNorm / GroupNorm / InstanceNorm export and import back; LayerNorm2d exports as Transpose,
    LayerNormalization, Transpose (checked with onnxruntime), which imports once the engine maps Transpose."""
    cno, _ = _onnx()
    from cnnnative.onnx import _registry
    ours = _pair()[0]
    x = np.random.default_rng(7).standard_normal((3, 3, 6, 6)).astype(np.float32)
    proto = cno.export_model(ours, None, x.shape)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LayerNormalization") == 2 and ops.count("InstanceNormalization") == 2, ops
    assert ops.count("Transpose") == 2 and "GroupNormalization" not in ops, ops
    want = ours.compile(x.shape).run(x)
    assert _rel(_ort_run(proto.SerializeToString(), x), want) < 1e-5

    class NoTranspose(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gn, self.inorm, self.ln, self.fc = ours.conv, ours.gn, ours.inorm, ours.ln, ours.fc
            self.gn1 = nn.GroupNorm(1, 8, affine=False)

        def forward(self, x):
            x = self.ln(self.inorm(self.gn1(self.gn(self.conv(x)))))
            return self.fc(F.flatten(x, 1))
    m = NoTranspose()
    proto2 = cno.export_model(m, None, x.shape)
    want2 = m.compile(x.shape).run(x)
    assert _rel(_ort_run(proto2.SerializeToString(), x), want2) < 1e-5
    back = cno.import_model(proto2)
    assert _rel(back.compile(x.shape).run(x), want2) < 1e-5
    if "Transpose" not in _registry.IMPORTERS:
        pytest.skip("this build imports no Transpose of activations (LayerNorm2d's export)")
    back = cno.import_model(proto)
    assert _rel(back.compile(x.shape).run(x), want) < 1e-5


def _torch_export(model, x, dynamo):
    torch = _torch()
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    f = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = dict(dynamo=True, opset_version=18) if dynamo else dict(dynamo=False, opset_version=17)
        torch.onnx.export(model, (torch.from_numpy(x),), f, input_names=["x"], output_names=["y"], **kw)
    return f.getvalue()


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("which", ["layer_norm", "group_norm", "instance_norm"])
def test_import_torch_export(which, dynamo):
    torch = _torch()
    cno, _ = _onnx()
    torch.manual_seed(0)
    m = {"layer_norm": lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm(6)),
         "group_norm": lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8)),
         "instance_norm": lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                                                      torch.nn.InstanceNorm2d(4, affine=True))}[which]()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    data = _torch_export(m, x, dynamo)
    want = _ort_run(data, x)
    got = cno.import_model(data).compile(x.shape).run(x)
    assert _rel(got, want) <= 1e-4


def _model(node, inits, xs, opset, extra_outputs=()):
    import onnx
    from onnx import helper
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(xs))],
                          [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                           for o in ["y", *extra_outputs]],
                          [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [18, 21])
def test_import_group_normalization(opset):
    cno, _ = _onnx()
    from onnx import helper
    rng = np.random.default_rng(opset)
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    C = 6
    inits = {"s": (1 + rng.standard_normal(C)).astype(np.float32), "b": rng.standard_normal(C).astype(np.float32)}
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=6, epsilon=1e-4)
    m = _model(node, inits, x.shape, opset)
    y = cno.import_model(m).compile(x.shape).run(x)
    assert_close(y, gn_ref(x.astype(np.float64), 6, inits["s"], inits["b"], 1e-4)[0], 1e-5, 1e-5, "GN")
    if opset == 21:  # per-channel scale with 3 groups
        node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)
        y = cno.import_model(_model(node, inits, x.shape, 21)).compile(x.shape).run(x)
        assert_close(y, gn_ref(x.astype(np.float64), 3, inits["s"], inits["b"])[0], 1e-5, 1e-5, "GN21")
    else:  # opset 18 scales per group: refused with the reason
        g3 = {"s": inits["s"][:3], "b": inits["b"][:3]}
        node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)
        with pytest.raises(ValueError, match=r"scales per group .* export at opset 21"):
            cno.import_model(_model(node, g3, x.shape, 18))


def test_import_layer_normalization_axis_and_statistics_outputs():
    cno, _ = _onnx()
    from onnx import helper
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    inits = {"s": rng.standard_normal((4, 5)).astype(np.float32)}
    ry, rm, _ = ln_ref(x.astype(np.float64), inits["s"], axis=2, eps=1e-3)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-2, epsilon=1e-3)
    y = cno.import_model(_model(node, inits, x.shape, 17)).compile(x.shape).run(x)
    assert_close(y, ry, 1e-5, 1e-5, "y")
    node = helper.make_node("LayerNormalization", ["x", "s"], ["t", "y"], axis=-2, epsilon=1e-3)  # y: the Mean
    mean = cno.import_model(_model(node, inits, x.shape, 17)).compile(x.shape).run(x)
    assert_close(mean, rm, 1e-6, 1e-6, "mean")
    node = helper.make_node("LayerNormalization", ["x", "s"], ["t", "", "y"], axis=2, epsilon=1e-3)  # InvStdDev
    rstd = cno.import_model(_model(node, inits, x.shape, 17)).compile(x.shape).run(x)
    assert_close(rstd, ln_ref(x.astype(np.float64), axis=2, eps=1e-3)[2], 1e-5, 0, "rstd")


@pytest.mark.parametrize("op, xs, attrs", [
    ("layer_norm", (64, 300), {"axis": 1, "num_axes": 1}),
    ("layer_norm", (4, 32, 12, 12), {"axis": 1, "num_axes": 1}),
    ("group_norm", (2, 8, 48, 48), {"groups": 2}),
])
def test_in_place_and_thread_count_independent(op, xs, attrs):
    """relu -> norm (the norm may overwrite relu's output) and the gradients, bitwise the same at 1 and 3 threads,
    and equal to the reference backend."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs).astype(np.float32)
    dy = rng.standard_normal(xs).astype(np.float32)
    ps = list(xs[1:2]) if op == "group_norm" or attrs["axis"] == 1 and len(xs) == 4 else list(xs[1:])
    w = rng.standard_normal(ps).astype(np.float32)

    saved = cn.get_num_threads()

    def run(backend, threads):
        g = _core.Graph()
        xi, wi = g.add_input("x", list(xs)), g.add_input("w", ps)
        r = g.add_node("relu", [xi], {}, "relu")
        y = g.add_node(op, [r[0], wi], {**attrs, "eps": 1e-5}, "n")
        g.set_outputs(y[:1])
        cn.set_num_threads(threads)
        try:
            s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=y[:1], wrt=[xi, wi])
            s.run([x, w, dy])
            return [s.fetch(i) for i in range(3)]
        finally:
            cn.set_num_threads(saved)
    one, three = run("cpu", 1), run("cpu", 3)
    for a, b in zip(one, three):
        assert (a == b).all()
    for k, (a, b) in enumerate(zip(one, run("reference", 1))):
        assert_close(a, b, 1e-4, 1e-4 * np.abs(b).max(), f"{op} fetch {k}")
