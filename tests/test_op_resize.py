"""resize2d and resize2d_grad (ops/resize.cpp): check_op against a numpy reference built as dense interpolation
matrices (y = A_h x A_w^T, so dx = A_h^T dy A_w), with float64 finite differences, over every coordinate mode and
rounding, up and down, sizes of 1, steps that are not in / out (PyTorch's 1 / scale_factor); the cpu kernel against
the reference on a threaded size; errors naming the node. Then F.interpolate / nn.Upsample / UpsamplingBilinear2d
/ UpsamplingNearest2d against torch (values and gradients, a training step), and ONNX: hand-built Resize /
Upsample nodes (opsets 9-19) against onnxruntime, torch.onnx.export (TorchScript and dynamo) imported and
compared with onnxruntime, and cnnnative's export imported back."""
import math

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from cnnnative import nn
from cnnnative.nn import functional as F
from opcheck import assert_close, check_op, run_backward, run_forward

NEAREST, LINEAR = 0, 1
ASYM, HALF, ALIGN, PT_HALF, TF_NN = 0, 1, 2, 3, 4
FLOOR, RPF, RPC, CEIL = 0, 1, 2, 3


def _axis_matrix(n, m, mode, coord, rounding, r, offset, dt):
    """[m, n]: row o holds the weights output o gives the inputs, coordinates in dt (float32 as the kernels)."""
    o = np.arange(m).astype(dt)
    r, half = dt(r), dt(0.5)
    if coord == ASYM:
        s = r * o
    elif coord == ALIGN:
        s = (dt(n - 1) / dt(m - 1)) * o if m > 1 else np.zeros(m, dt)
    elif coord == PT_HALF and m == 1:
        s = np.zeros(m, dt)
    elif coord == TF_NN:
        s = r * (o + half)
    else:
        s = r * (o + half) - half
    s = (s + dt(offset)).astype(dt) if offset else s.astype(dt)
    a = np.zeros((m, n))
    if mode == NEAREST:
        f = np.floor(s)
        d = s - f
        up = {FLOOR: np.zeros(m, bool), RPF: d > 0.5, RPC: d >= 0.5, CEIL: d > 0}[rounding]
        idx = np.clip(f.astype(np.int64) + up, 0, n - 1)
        a[np.arange(m), idx] = 1
        return a
    s = np.maximum(s, 0)
    i0 = np.minimum(s.astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    l1 = (s - i0.astype(dt)).astype(np.float64)
    np.add.at(a, (np.arange(m), i0), 1 - l1)
    np.add.at(a, (np.arange(m), i1), l1)
    return a


def _matrices(xs, attrs, dt=np.float32):
    oh, ow = attrs["size"]
    mode, coord, rnd = attrs.get("mode", LINEAR), attrs.get("coord", HALF), attrs.get("nearest", FLOOR)
    ah = _axis_matrix(xs[2], oh, mode, coord, rnd, attrs.get("rh", xs[2] / oh), attrs.get("offset_h", 0.0), dt)
    aw = _axis_matrix(xs[3], ow, mode, coord, rnd, attrs.get("rw", xs[3] / ow), attrs.get("offset_w", 0.0), dt)
    return ah, aw


def resize_ref(x, attrs):
    ah, aw = _matrices(x.shape, attrs)
    return np.einsum("ph,nchw,qw->ncpq", ah, x, aw)


CASES = {  # name: (x shape, attrs)
    "linear_up2": ((1, 2, 3, 4), {"size": [6, 8]}),
    "linear_down": ((2, 1, 7, 5), {"size": [3, 2]}),
    "linear_odd": ((1, 2, 4, 3), {"size": [7, 5]}),
    "linear_scale_step": ((1, 2, 3, 4), {"size": [5, 6], "rh": 1 / 1.7, "rw": 1 / 1.6}),
    "align_corners": ((1, 2, 4, 3), {"size": [7, 8], "coord": ALIGN}),
    "align_corners_to_1": ((1, 1, 4, 3), {"size": [1, 5], "coord": ALIGN}),
    "pytorch_half_pixel_1": ((1, 1, 4, 3), {"size": [1, 4], "coord": PT_HALF}),
    "half_pixel_1": ((1, 1, 4, 3), {"size": [1, 2], "coord": HALF}),
    "linear_asymmetric": ((1, 2, 3, 3), {"size": [6, 7], "coord": ASYM}),
    "nearest_floor": ((1, 2, 4, 3), {"size": [6, 7], "mode": NEAREST, "coord": ASYM}),
    "nearest_down": ((1, 2, 7, 6), {"size": [3, 4], "mode": NEAREST, "coord": ASYM}),
    "nearest_exact": ((1, 2, 4, 3), {"size": [6, 7], "mode": NEAREST, "coord": HALF, "nearest": RPC}),
    "nearest_rpf": ((1, 2, 3, 4), {"size": [6, 5], "mode": NEAREST, "coord": HALF, "nearest": RPF}),
    "nearest_ceil": ((1, 2, 4, 3), {"size": [6, 5], "mode": NEAREST, "coord": ASYM, "nearest": CEIL}),
    "nearest_tf": ((1, 2, 4, 3), {"size": [7, 5], "mode": NEAREST, "coord": TF_NN}),
    "nearest_align": ((1, 2, 4, 3), {"size": [7, 5], "mode": NEAREST, "coord": ALIGN, "nearest": RPF}),
    "offset": ((1, 2, 4, 3), {"size": [6, 5], "offset_h": 0.25, "offset_w": -0.3}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_resize(name):
    xs, attrs = CASES[name]
    x = np.random.default_rng(sum(map(ord, name))).standard_normal(xs).astype(np.float32)
    check_op("resize2d", [x], attrs, numpy_ref=lambda x: [resize_ref(x, attrs)])


def test_backward_is_the_transposed_matrices():
    xs, attrs = (2, 3, 5, 4), {"size": [9, 7], "rh": 1 / 1.9, "rw": 1 / 1.75}
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    dy = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    dx = run_backward("resize2d", [x], attrs, [dy], [0])[0]
    ah, aw = _matrices(xs, attrs)
    assert_close(dx, np.einsum("ph,ncpq,qw->nchw", ah, dy, aw), 1e-5, 1e-5, "dx")


@pytest.mark.parametrize("attrs", [{"size": [41, 37]}, {"size": [19, 13], "coord": ALIGN},
                                   {"size": [45, 29], "mode": NEAREST, "coord": ASYM, "rh": 1 / 1.5, "rw": 0.8}])
def test_cpu_kernel_against_reference(attrs):
    """Big enough for the threaded paths: the same arithmetic as the reference, so equal values."""
    rng = np.random.default_rng(len(attrs))
    x = rng.standard_normal((3, 20, 23, 17)).astype(np.float32)
    y = run_forward("resize2d", [x], attrs)[0]
    assert_close(y, run_forward("resize2d", [x], attrs, backend="reference")[0], 1e-6, 1e-6, "y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = run_backward("resize2d", [x], attrs, [dy], [0])[0]
    assert_close(dx, run_backward("resize2d", [x], attrs, [dy], [0], backend="reference")[0], 1e-5, 1e-5, "dx")


def test_cpu_kernels_are_native_and_allocate_nothing():
    g = _core.Graph()
    xi = g.add_input("x", [2, 3, 5, 5])
    y = g.add_node("resize2d", [xi], {"size": [8, 7]}, "rs")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[xi], strict=True)
    impls = {k["op"]: k["impl"] for k in s.kernels()}
    assert impls["resize2d"] == "native" and impls["resize2d_grad"] == "native"
    x, dy = np.ones((2, 3, 5, 5), np.float32), np.ones((2, 3, 8, 7), np.float32)
    s.run([x, dy])
    before = _core.allocation_count()
    s.run([x, dy])
    assert _core.allocation_count() == before
    assert_close(s.fetch(0), np.ones((2, 3, 8, 7)), 1e-6, 1e-6, "y")
    assert_close(s.fetch(1).sum(), 2 * 3 * 8 * 7, 1e-5, 1e-5, "sum of dx")  # every output spreads a weight of 1


@pytest.mark.parametrize("xs, attrs, pattern", [
    ((2, 4, 5), {"size": [3, 3]}, r"x must be 4-D \[N, C, H, W\], got \[2, 4, 5\]"),
    ((2, 4, 5, 5), {}, r"missing attribute 'size' \(\[OH, OW\], integers >= 1\)"),
    ((2, 4, 5, 5), {"size": [3, 0]}, r"attribute 'size' must be 2 integers \[OH, OW\] in \[1, 2\^31-1\], got \[3, 0\]"),
    ((2, 4, 5, 5), {"size": [3, 3], "mode": 2}, r"attribute 'mode' must be 0 \(nearest\) or 1 \(linear\), got 2"),
    ((2, 4, 5, 5), {"size": [3, 3], "coord": 7}, r"attribute 'coord' must be 0 \(asymmetric\), .*got 7"),
    ((2, 4, 5, 5), {"size": [3, 3], "nearest": -1}, r"attribute 'nearest' must be 0 \(floor\), .*got -1"),
    ((2, 4, 5, 5), {"size": [3, 3], "rh": -1.0}, r"attribute 'rh' \(input step per output step\) must be a finite "
                                                 r"number > 0, got -1"),
])
def test_errors_name_node(xs, attrs, pattern):
    g = _core.Graph()
    xi = g.add_input("x", list(xs))
    with pytest.raises(_core.Error, match=r"op 'resize2d' \(node 'head\.up'\): " + pattern):
        g.add_node("resize2d", [xi], attrs, "head.up")


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    dy = g.add_input("dy", [2, 4, 3, 9])
    with pytest.raises(_core.Error, match=r"op 'resize2d_grad' \(node 'r/grad'\): dy expects \[2, 4, 6, 8\] for "
                                          r"input_shape \[2, 4, 3, 4\], got \[2, 4, 3, 9\]"):
        g.add_node("resize2d_grad", [dy], {"size": [6, 8], "input_shape": [2, 4, 3, 4]}, "r/grad")


# ---- the Python front end, against torch ----

class _Interp(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x):
        return F.interpolate(x, **self.kw)


TORCH_CASES = [  # F.interpolate keywords
    {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
    {"size": (13, 9), "mode": "bilinear", "align_corners": False},
    {"size": (13, 9), "mode": "bilinear", "align_corners": True},
    {"size": (3, 2), "mode": "bilinear"},
    {"size": (1, 1), "mode": "bilinear", "align_corners": True},
    {"scale_factor": 1.7, "mode": "bilinear"},
    {"scale_factor": (1.5, 0.6), "mode": "bilinear"},
    {"scale_factor": 1.7, "mode": "bilinear", "recompute_scale_factor": True},
    {"scale_factor": 0.37, "mode": "bilinear", "align_corners": True},
    {"scale_factor": 2, "mode": "nearest"},
    {"scale_factor": 3, "mode": "nearest"},
    {"scale_factor": 1.5, "mode": "nearest"},
    {"scale_factor": 0.7, "mode": "nearest"},
    {"scale_factor": 2.3, "mode": "nearest"},
    {"scale_factor": 1 / 3, "mode": "nearest"},
    {"size": (11, 7), "mode": "nearest"},
    {"size": (3, 2), "mode": "nearest"},
    {"scale_factor": 1.5, "mode": "nearest-exact"},
    {"size": (11, 4), "mode": "nearest-exact"},
    {"scale_factor": 0.6, "mode": "nearest-exact"},
    {"size": (3, 2), "mode": "area"},
]


@pytest.mark.parametrize("kw", TORCH_CASES, ids=[str(i) for i in range(len(TORCH_CASES))])
def test_interpolate_against_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(str(kw)))
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, **kw)
    model = _Interp(**kw)
    y = model.compile(x.shape).run(x)
    assert y.shape == tuple(ty.shape)
    exact = kw["mode"].startswith("nearest")
    assert_close(y, ty.detach().numpy(), 0 if exact else 1e-5, 0 if exact else 1e-6, "y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    from cnnnative.onnx._exporter import trace_records
    (op, _, attrs, _, _), = trace_records(model, x.shape)[0].records  # the one node interpolate emitted
    dx = run_backward(op, [x], attrs, [dy], [0])[0]
    assert_close(dx, tx.grad.numpy(), 1e-5, 1e-5, "dx")


def _ops_of(module, shape):
    return [e.split()[0] for e in module.compile(shape).schedule()]


def test_integer_nearest_keeps_the_oneDNN_op():
    assert "upsample_nearest2d" in _ops_of(_Interp(scale_factor=2), (1, 2, 4, 4))
    assert "upsample_nearest2d" in _ops_of(nn.Upsample(size=(12, 8)), (1, 2, 4, 4))
    assert "resize2d" in _ops_of(_Interp(scale_factor=1.5), (1, 2, 4, 4))
    assert "resize2d" in _ops_of(nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 4, 4))


@pytest.mark.parametrize("make", ["bilinear", "bilinear_ac", "upsampling_bilinear", "upsampling_nearest", "exact"])
def test_modules_train_like_torch(make):
    """conv -> upsample -> conv, one SGD step: the same loss and weights as torch."""
    torch = pytest.importorskip("torch")
    ours_up, theirs_up = {
        "bilinear": (nn.Upsample(scale_factor=1.5, mode="bilinear"),
                     torch.nn.Upsample(scale_factor=1.5, mode="bilinear")),
        "bilinear_ac": (nn.Upsample(size=(9, 11), mode="bilinear", align_corners=True),
                        torch.nn.Upsample(size=(9, 11), mode="bilinear", align_corners=True)),
        "upsampling_bilinear": (nn.UpsamplingBilinear2d(scale_factor=2), torch.nn.UpsamplingBilinear2d(scale_factor=2)),
        "upsampling_nearest": (nn.UpsamplingNearest2d(size=(7, 9)), torch.nn.UpsamplingNearest2d(size=(7, 9))),
        "exact": (nn.Upsample(scale_factor=1.4, mode="nearest-exact"),
                  torch.nn.Upsample(scale_factor=1.4, mode="nearest-exact")),
    }[make]
    assert repr(ours_up) == repr(theirs_up)
    nn.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), ours_up, nn.Conv2d(4, 2, 3, padding=1))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), theirs_up, torch.nn.Conv2d(4, 2, 3, padding=1))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 5)).astype(np.float32)
    with torch.no_grad():
        ty = theirs(torch.tensor(x))
    t = np.random.default_rng(3).standard_normal(tuple(ty.shape)).astype(np.float32)
    s = ours.compile(x.shape, mode="train", loss="mse", optimizer=cn.optim.SGD(lr=0.1))
    loss = s.step(x, t)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    tl = torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(t))
    tl.backward()
    opt.step()
    assert abs(loss - tl.item()) <= 1e-5 * max(1.0, abs(tl.item()))
    for k, v in theirs.state_dict().items():
        assert_close(ours.state_dict()[k], v.numpy(), 1e-4, 1e-5, k)


@pytest.mark.parametrize("kw, pattern", [
    ({"scale_factor": 2, "mode": "bicubic"}, r"mode='bicubic' is not supported"),
    ({"scale_factor": 2, "mode": "nearest", "align_corners": True}, r"align_corners can only be set with "
                                                                     r"mode='bilinear'"),
    ({"mode": "bilinear"}, r"give exactly one of size and scale_factor"),
    ({"size": 4, "scale_factor": 2, "mode": "bilinear"}, r"give exactly one of size and scale_factor"),
    ({"size": (4, 0), "mode": "bilinear"}, r"size must hold integers >= 1"),
    ({"scale_factor": -1.0, "mode": "bilinear"}, r"scale_factor must be finite and > 0"),
    ({"scale_factor": 0.1, "mode": "bilinear"}, r"makes the input \[6, 5\] an empty output \[0, 0\]"),
    ({"scale_factor": 2, "mode": "bilinear", "antialias": True}, r"antialias=True is not supported"),
])
def test_interpolate_errors(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _Interp(**kw).compile((1, 2, 6, 5))


def test_upsample_module_errors():
    with pytest.raises(ValueError, match=r"mode='trilinear' is not supported"):
        nn.Upsample(scale_factor=2, mode="trilinear")
    with pytest.raises(ValueError, match=r"give exactly one of size and scale_factor"):
        nn.Upsample(mode="bilinear")
    with pytest.raises(ValueError, match=r"align_corners can only be set with mode='bilinear'"):
        nn.Upsample(scale_factor=2, align_corners=False)


# ---- ONNX ----

def _ort_run(model_proto, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _resize_model(onnx, xs, opset, *, op="Resize", scales=None, sizes=None, attr_scales=False, **attrs):
    h, T = onnx.helper, onnx.TensorProto
    inits, ins = [], ["x"]
    if op == "Upsample":
        if attr_scales:
            attrs["scales"] = [float(s) for s in scales]
        else:
            inits.append(onnx.numpy_helper.from_array(np.array(scales, np.float32), "scales"))
            ins.append("scales")
    else:
        inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), "roi"))  # empty (required in opset 11)
        ins.append("roi")
        if scales is not None:
            inits.append(onnx.numpy_helper.from_array(np.array(scales, np.float32), "scales"))
            ins.append("scales")
        else:
            ins += ["", "sizes"] if opset >= 13 else ["scales0", "sizes"]
            if opset < 13:
                inits.append(onnx.numpy_helper.from_array(np.zeros(0, np.float32), "scales0"))
            inits.append(onnx.numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
    node = h.make_node(op, ins, ["y"], name="rs", **attrs)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, list(xs))],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 15 else 8
    return m


ONNX_CASES = [  # (opset, op, kwargs of _resize_model)
    (13, "Resize", {"scales": [1, 1, 2, 2], "mode": "linear", "coordinate_transformation_mode": "half_pixel"}),
    (13, "Resize", {"scales": [1, 1, 1.5, 0.75], "mode": "linear",
                    "coordinate_transformation_mode": "pytorch_half_pixel"}),
    (11, "Resize", {"sizes": [2, 3, 9, 4], "mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    (13, "Resize", {"sizes": [2, 3, 1, 7], "mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    (13, "Resize", {"scales": [1, 1, 2, 2], "mode": "linear", "coordinate_transformation_mode": "asymmetric"}),
    (18, "Resize", {"sizes": [2, 3, 11, 9], "mode": "linear"}),
    (19, "Resize", {"scales": [1, 1, 1.6, 1.4], "mode": "linear",
                    "coordinate_transformation_mode": "half_pixel_symmetric"}),
    (13, "Resize", {"scales": [1, 1, 1.5, 1.5], "mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                    "nearest_mode": "floor"}),
    (13, "Resize", {"sizes": [2, 3, 11, 3], "mode": "nearest"}),
    (13, "Resize", {"scales": [1, 1, 2.5, 0.6], "mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                    "nearest_mode": "round_prefer_ceil"}),
    (11, "Resize", {"scales": [1, 1, 1.75, 1.25], "mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                    "nearest_mode": "ceil"}),
    (13, "Resize", {"sizes": [2, 3, 9, 7], "mode": "nearest", "coordinate_transformation_mode": "align_corners",
                    "nearest_mode": "round_prefer_floor"}),
    (13, "Resize", {"scales": [1, 1, 2, 3], "mode": "nearest",
                    "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
    (9, "Upsample", {"scales": [1, 1, 2, 2], "mode": "linear"}),
    (9, "Upsample", {"scales": [1, 1, 1.5, 2.5], "mode": "nearest"}),
    (7, "Upsample", {"scales": [1, 1, 2, 3], "mode": "linear", "attr_scales": True}),
]


@pytest.mark.parametrize("opset, op, kw", ONNX_CASES, ids=[str(i) for i in range(len(ONNX_CASES))])
def test_onnx_import_against_onnxruntime(opset, op, kw):
    onnx = pytest.importorskip("onnx")
    from cnnnative.onnx import import_model
    x = np.random.default_rng(opset).standard_normal((2, 3, 6, 4)).astype(np.float32)
    m = _resize_model(onnx, x.shape, opset, op=op, **kw)
    want = _ort_run(m, x)
    got = import_model(m).compile(x.shape).run(x)
    assert got.shape == want.shape
    assert_close(got, want, 1e-4, 1e-5, "y")


@pytest.mark.parametrize("kw, pattern", [
    ({"scales": [1, 1, 2, 2], "mode": "cubic"}, r"mode='cubic'"),
    ({"scales": [1, 2, 2, 2], "mode": "linear"}, r"only the H and W"),
    ({"scales": [1, 1, 2, 2], "mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     r"tf_crop_and_resize"),
])
def test_onnx_import_unsupported(kw, pattern):
    onnx = pytest.importorskip("onnx")
    from cnnnative.onnx import UnsupportedError, import_model
    m = _resize_model(onnx, (1, 2, 4, 4), 13, **kw)
    with pytest.raises(UnsupportedError, match=pattern):
        import_model(m).compile((1, 2, 4, 4))


class _Head(nn.Module):
    """A segmentation-head pattern: conv, bilinear resize to a size, conv; and a scale-factor resize."""

    def __init__(self, up):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = up
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(self.up(self.conv(x)))


EXPORT_CASES = {
    "bilinear_size": lambda: nn.Upsample(size=(13, 11), mode="bilinear", align_corners=False),
    "bilinear_ac": lambda: nn.Upsample(size=(9, 8), mode="bilinear", align_corners=True),
    "bilinear_scale": lambda: nn.Upsample(scale_factor=1.5, mode="bilinear"),
    "nearest_scale": lambda: nn.Upsample(scale_factor=1.5),
    "nearest_exact": lambda: nn.Upsample(size=(10, 7), mode="nearest-exact"),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_onnx_export_round_trip(name):
    pytest.importorskip("onnx")
    from cnnnative.onnx import export_model, import_model
    nn.manual_seed(0)
    model = _Head(EXPORT_CASES[name]())
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 5)).astype(np.float32)
    want = model.compile(x.shape).run(x)
    proto = export_model(model, input_shape=x.shape)
    assert "Resize" in [n.op_type for n in proto.graph.node]
    assert_close(_ort_run(proto, x), want, 1e-4, 1e-5, "onnxruntime on the export")
    x1 = x[:1]
    assert_close(_ort_run(proto, x1), want[:1], 1e-4, 1e-5, "onnxruntime, another batch size")
    assert_close(import_model(proto).compile(x.shape).run(x), want, 1e-5, 1e-6, "imported back")


TORCH_EXPORT_CASES = {
    "bilinear_size": {"size": (13, 11), "mode": "bilinear", "align_corners": False},
    "bilinear_ac": {"size": (9, 8), "mode": "bilinear", "align_corners": True},
    "bilinear_scale2": {"scale_factor": 2.0, "mode": "bilinear", "align_corners": False},
    "nearest_scale": {"scale_factor": 1.5, "mode": "nearest"},
}


# the dynamo exporter takes seconds per model: one case in the quick run (the FCN / LRASPP head's), the rest slow
_EXPORTS = [pytest.param(n, d, id=f"{n}-{'dynamo' if d else 'torchscript'}",
                         marks=[pytest.mark.slow] if d and n != "bilinear_size" else [])
            for n in TORCH_EXPORT_CASES for d in (False, True)]


@pytest.mark.parametrize("name, dynamo", _EXPORTS)
def test_import_torch_onnx_export(name, dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from cnnnative.onnx import import_model
    kw = TORCH_EXPORT_CASES[name]

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.nn.functional.interpolate(self.conv(x), **kw)

    torch.manual_seed(0)
    m = M().eval()
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 5)).astype(np.float32)
    path = tmp_path / "m.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(m, (torch.tensor(x),), str(path), dynamo=True)
        else:
            torch.onnx.export(m, (torch.tensor(x),), str(path), dynamo=False, opset_version=17)
    proto = onnx.load(str(path))
    want = _ort_run(proto, x)
    with torch.no_grad():
        assert_close(want, m(torch.tensor(x)).numpy(), 1e-4, 1e-5, "onnxruntime vs torch")
    got = import_model(proto).compile(x.shape).run(x)
    assert_close(got, want, 1e-4, 1e-5, "cnnnative vs onnxruntime")
    assert math.isfinite(float(np.abs(got).sum()))
