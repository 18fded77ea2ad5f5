"""pad and pad_grad: check_op against np.pad (forward) and the crop (backward), with finite differences in
float64, for symmetric, one-sided, asymmetric and non-zero-valued pads; the native cpu kernel against the
reference one on larger tensors (both run natively, not on reference kernels); F.pad / nn.ZeroPad2d /
nn.ConstantPad2d against torch; attribute and shape errors. Then the compile pass fold_pad: an nn model
ZeroPad2d -> Conv2d (or -> AvgPool2d) compiled with optimize=True has no pad node and gives the results of
optimize=False, in inference and in training; pads it must not fold (non-zero value, two readers, an
asymmetric pad the conv cannot express, a kept output, ceil_mode pooling) stay and still compute the same.
Last, the cpu kernels in every activation layout (plain, nhwc, nChw16c, nChw8c) against the reference backend,
and a pad between two convolutions trained in the blocked layout with no reorder next to it."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from cnnnative import nn
from cnnnative.nn import functional as F
from opcheck import assert_close, check_op, run_backward, run_forward


def pad_ref(x, pads, value=0.0):
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


CASES = {  # name: (x shape, pads [top, left, bottom, right], value)
    "symmetric": ((2, 3, 4, 5), [1, 1, 1, 1], 0.0),
    "asymmetric": ((1, 2, 3, 4), [0, 2, 1, 3], 0.0),
    "rows_only": ((2, 2, 3, 3), [2, 0, 1, 0], 0.0),
    "none": ((1, 2, 3, 3), [0, 0, 0, 0], 0.0),
    "value": ((2, 3, 3, 4), [1, 2, 2, 1], -1.5),
    "one_pixel": ((1, 1, 1, 1), [3, 1, 0, 2], 0.25),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pad(name):
    xs, pads, value = CASES[name]
    x = np.random.default_rng(sum(map(ord, name))).standard_normal(xs).astype(np.float32)
    check_op("pad", [x], {"pads": pads, "value": value}, numpy_ref=lambda x: [pad_ref(x, pads, value)])


@pytest.mark.parametrize("pads", [[1, 2, 3, 4], [0, 5, 0, 0], [7, 0, 2, 1]])
def test_cpu_kernel_against_reference(pads):
    """Big enough for the threaded path; values and gradients bit for bit (both only copy)."""
    rng = np.random.default_rng(sum(pads))
    x = rng.standard_normal((3, 40, 17, 23)).astype(np.float32)
    attrs = {"pads": pads, "value": 0.5}
    y = run_forward("pad", [x], attrs)[0]
    assert (y == run_forward("pad", [x], attrs, backend="reference")[0]).all()
    assert (y == pad_ref(x, pads, 0.5)).all()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = run_backward("pad", [x], attrs, [dy], [0])[0]
    assert (dx == run_backward("pad", [x], attrs, [dy], [0], backend="reference")[0]).all()
    t, l, b, r = pads
    assert (dx == dy[:, :, t:t + x.shape[2], l:l + x.shape[3]]).all()


def test_cpu_kernels_are_native_and_allocate_nothing():
    g = _core.Graph()
    xi = g.add_input("x", [2, 3, 5, 5])
    y = g.add_node("pad", [xi], {"pads": [1, 2, 0, 1]}, "pad")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[xi], strict=True)
    impls = {k["op"]: k["impl"] for k in s.kernels()}
    assert impls["pad"] == "native" and impls["pad_grad"] == "native"
    x, dy = np.ones((2, 3, 5, 5), np.float32), np.ones((2, 3, 6, 8), np.float32)
    s.run([x, dy])
    before = _core.allocation_count()
    s.run([x, dy])
    assert _core.allocation_count() == before
    assert (s.fetch(1) == 1).all() and s.fetch(0).sum() == x.sum()


@pytest.mark.parametrize("xs, attrs, pattern", [
    ((2, 4, 5), {"pads": [1, 1, 1, 1]}, r"x must be 4-D \[N, C, H, W\], got \[2, 4, 5\]"),
    ((2, 4, 5, 5), {}, r"missing attribute 'pads' \(\[top, left, bottom, right\], integers >= 0\)"),
    ((2, 4, 5, 5), {"pads": [1, 1]}, r"attribute 'pads' must be 4 integers \[top, left, bottom, right\] in "
                                     r"\[0, 2\^31-1\], got \[1, 1\]"),
    ((2, 4, 5, 5), {"pads": [1, -1, 1, 1]}, r"attribute 'pads' must be 4 integers .* got \[1, -1, 1, 1\]"),
])
def test_errors_name_node(xs, attrs, pattern):
    g = _core.Graph()
    xi = g.add_input("x", list(xs))
    with pytest.raises(_core.Error, match=r"op 'pad' \(node 'stem\.pad'\): " + pattern):
        g.add_node("pad", [xi], attrs, "stem.pad")


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    dy = g.add_input("dy", [2, 4, 3, 9])
    with pytest.raises(_core.Error, match=r"op 'pad_grad' \(node 'p/grad'\): dy \[2, 4, 3, 9\] is too small for pads "
                                          r"\[2, 0, 1, 0\] \(the cropped dx would be \[2, 4, 0, 9\]\)"):
        g.add_node("pad_grad", [dy], {"pads": [2, 0, 1, 0]}, "p/grad")


# ---- the Python front end ----

class _Padded(nn.Module):
    def __init__(self, pad, value):
        super().__init__()
        self.pad, self.value = pad, value

    def forward(self, x):
        return F.pad(x, self.pad, value=self.value)


def test_functional_pad_argument_order():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = _Padded((1, 2, 3, 4), 2.0).compile(x.shape).run(x)  # (left, right, top, bottom)
    assert (y == np.pad(x, ((0, 0), (0, 0), (3, 4), (1, 2)), constant_values=2.0)).all()
    y = _Padded((2, 1), None).compile(x.shape).run(x)  # last dim only
    assert (y == np.pad(x, ((0, 0), (0, 0), (0, 0), (2, 1)))).all()


@pytest.mark.parametrize("pad, kw, pattern", [
    ((1, 1, 1), {}, "pairs"),
    ((1, 1), {"mode": "circular"}, "'circular' is not supported"),
    ((3, 3), {"mode": "reflect"}, "must be less than its size"),
])
def test_functional_pad_errors(pad, kw, pattern):
    class M(nn.Module):
        def forward(self, x):
            return F.pad(x, pad, **kw)
    with pytest.raises(ValueError, match=pattern):
        M().compile((1, 2, 3, 3))


def test_module_errors_and_repr():
    with pytest.raises(ValueError, match=r"padding must be an int or 4 ints"):
        nn.ZeroPad2d((1, 2))
    with pytest.raises(ValueError, match=r"padding must be an int or 4 ints"):
        nn.ConstantPad2d(-1, 0.0)
    assert repr(nn.ZeroPad2d(2)) == "ZeroPad2d(padding=(2, 2, 2, 2))"
    assert repr(nn.ConstantPad2d((1, 0, 2, 3), 1.5)) == "ConstantPad2d(padding=(1, 0, 2, 3), value=1.5)"


@pytest.mark.parametrize("make", ["zero_int", "zero_tuple", "constant", "functional"])
def test_against_torch(make):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(len(make))
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    ours, theirs = {
        "zero_int": (nn.ZeroPad2d(2), torch.nn.ZeroPad2d(2)),
        "zero_tuple": (nn.ZeroPad2d((1, 0, 3, 2)), torch.nn.ZeroPad2d((1, 0, 3, 2))),
        "constant": (nn.ConstantPad2d((0, 2, 1, 1), -0.5), torch.nn.ConstantPad2d((0, 2, 1, 1), -0.5)),
        "functional": (_Padded((2, 1, 0, 3), 1.25), lambda t: torch.nn.functional.pad(t, (2, 1, 0, 3), value=1.25)),
    }[make]
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    y = ours.compile(x.shape).run(x)
    assert y.shape == tuple(ty.shape)
    assert (y == ty.detach().numpy()).all()
    # the gradient, through the pad node the module emitted
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    left, right, top, bottom = ours.padding if hasattr(ours, "padding") else ours.pad
    dx = run_backward("pad", [x], {"pads": [top, left, bottom, right]}, [dy], [0])[0]
    assert (dx == tx.grad.numpy()).all()


# ---- the compile pass fold_pad ----

def _ops(session):
    return [e.split()[0] for e in session.schedule()]


def _fold_summary(session):
    (rec,) = [p for p in session.passes() if p["name"] == "fold_pad"]
    return rec


class _Net(nn.Module):
    """pad -> conv (or avg pool); `extra` adds a second conv reading the pad's output."""

    def __init__(self, pad, value=0.0, layer="conv", extra=False, pool_kw=None):
        super().__init__()
        self.pad = nn.ConstantPad2d(pad, value)
        pool_kw = {"stride": 1, **(pool_kw or {})}
        self.layer = nn.Conv2d(3, 4, 3, padding=1) if layer == "conv" else nn.AvgPool2d(3, **pool_kw)
        self.extra = nn.Conv2d(3, 4, 3, padding=1) if extra else None

    def forward(self, x):
        p = self.pad(x)
        y = self.layer(p)
        return y + self.extra(p) if self.extra is not None else y


def _pair(seed, build):
    nn.manual_seed(seed)
    a = build()
    nn.manual_seed(seed)
    return a, build()


X = np.random.default_rng(7).standard_normal((2, 3, 9, 8)).astype(np.float32)


def test_zeropad_conv_folds_in_inference():
    model = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(3, 4, 3, padding=0), nn.ReLU())
    folded = model.compile(X.shape)
    plain = model.compile(X.shape, optimize=False)
    assert "pad" not in _ops(folded) and "pad" in _ops(plain)
    rec = _fold_summary(folded)
    assert rec["ran"] and rec["summary"].startswith("1 pads folded")
    assert not _fold_summary(plain)["ran"]
    assert_close(folded.run(X), plain.run(X), 1e-5, 1e-5, "folded vs unfolded")


@pytest.mark.parametrize("layer", ["conv", "conv_stride", "avg_pool"])
def test_zeropad_folds_in_training(layer):
    """ZeroPad2d -> Conv2d(padding=0) (or AvgPool2d): a few SGD steps give the same losses and weights folded
    (optimize=True) and unfolded (optimize=False), the gradient flowing through the folded pad to a conv."""
    def build():  # a 1x1 conv first, so the pad's input needs a gradient (pad_grad when unfolded)
        if layer == "avg_pool":
            tail = [nn.ZeroPad2d(1), nn.AvgPool2d(3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9 * 8, 5)]
        elif layer == "conv_stride":
            tail = [nn.ZeroPad2d((1, 1, 2, 2)), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                    nn.Linear(4 * 7 * 5, 5)]
        else:
            tail = [nn.ZeroPad2d(1), nn.Conv2d(4, 4, 3, padding=0), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9 * 8, 5)]
        return nn.Sequential(nn.Conv2d(3, 4, 1), *tail)
    a, b = _pair(3, build)
    sa = a.compile(X.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    sb = b.compile(X.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1), optimize=False)
    assert "pad" not in _ops(sa) and "pad_grad" not in _ops(sa)
    assert "pad" in _ops(sb) and "pad_grad" in _ops(sb)
    labels = np.array([1, 3], np.int32)
    for _ in range(3):
        la, lb = sa.step(X, labels), sb.step(X, labels)
        assert abs(la - lb) <= 1e-5 * max(1.0, abs(lb)), (la, lb)
    for k, v in b.state_dict().items():
        assert_close(a.state_dict()[k], v, 1e-4, 1e-5, k)


@pytest.mark.parametrize("case", ["value_one", "two_readers", "asymmetric", "ceil_mode", "no_count_pad"])
def test_pads_that_do_not_fold(case):
    pad, value = (1, 1, 1, 1), 0.0
    if case == "value_one":
        value = 1.0
    elif case == "asymmetric":
        pad = (0, 1, 1, 0)  # left 0, right 1: the conv's symmetric padding cannot express it
    net = {
        "value_one": lambda: _Net(pad, value),
        "two_readers": lambda: _Net(pad, value, extra=True),
        "asymmetric": lambda: _Net(pad, value),
        "ceil_mode": lambda: _Net(pad, value, layer="pool", pool_kw={"ceil_mode": True, "stride": 2}),
        "no_count_pad": lambda: _Net(pad, value, layer="pool", pool_kw={"count_include_pad": False}),
    }[case]()
    s = net.compile(X.shape)
    assert _ops(s).count("pad") == 1, _ops(s)
    assert _fold_summary(s)["summary"] == ("0 pads folded into convolution or pooling padding, 0 merged into a "
                                           "following pad, 1 pads left")
    assert_close(s.run(X), net.compile(X.shape, optimize=False).run(X), 1e-5, 1e-5, case)


def test_kept_pad_output_is_not_folded():
    """A pad whose output is a graph output stays, though only a conv reads it."""
    g = _core.Graph()
    xi = g.add_input("x", list(X.shape))
    wi = g.add_input("w", [4, 3, 3, 3])
    (p,) = g.add_node("pad", [xi], {"pads": [1, 1, 1, 1]}, "pad")
    (y,) = g.add_node("conv2d", [p, wi], {}, "conv")
    g.set_outputs([p, y])
    s = _core.Session(g, _core.ParamStore([]), "infer")
    assert [e.split()[0] for e in s.schedule()].count("pad") == 1
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    s.run([X, w])
    assert (s.fetch(0) == pad_ref(X, [1, 1, 1, 1])).all()


def test_asymmetric_pad_with_unread_trailing_rows_folds():
    """pad bottom/right beyond top/left folds when no conv window reads the extra rows (TF 'same' exports)."""
    nn.manual_seed(0)
    model = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, stride=2))  # 9x9 -> 10x10 -> 4x4
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 9)).astype(np.float32)
    folded, plain = model.compile(x.shape), model.compile(x.shape, optimize=False)
    assert "pad" not in _ops(folded)
    assert_close(folded.run(x), plain.run(x), 1e-5, 1e-5, "folded vs unfolded")


def test_chained_pads_fold_into_one_conv():
    nn.manual_seed(0)
    model = nn.Sequential(nn.ZeroPad2d(1), nn.ZeroPad2d((2, 2, 0, 0)), nn.Conv2d(3, 4, 3))
    folded, plain = model.compile(X.shape), model.compile(X.shape, optimize=False)
    assert "pad" not in _ops(folded) and _ops(folded).count("conv2d") == 1
    assert _fold_summary(folded)["summary"].startswith("1 pads folded into convolution or pooling padding, 1 merged")
    assert_close(folded.run(X), plain.run(X), 1e-5, 1e-5, "folded vs unfolded")


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_chained_pads_with_one_value_merge_into_one(mode):
    """pad -> pad with the same value (the ONNX importer pads H, then W) writes the tensor once; pads with
    different values stay apart."""
    def build(v2):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.ConstantPad2d((0, 0, 1, 2), 1.5), nn.ConstantPad2d((3, 1, 0, 0), v2)
                self.conv = nn.Conv2d(3, 4, 3)

            def forward(self, x):
                return self.conv(self.b(self.a(x)))
        return Net
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 7)).astype(np.float32)
    for v2, merged in ((1.5, True), (0.0, False)):
        a, b = _pair(0, build(v2))
        if mode == "infer":
            s, ref = a.compile(x.shape), b.compile(x.shape, optimize=False)
            assert _ops(s).count("pad") == (1 if merged else 2), _ops(s)
            assert_close(s.run(x), ref.run(x), 1e-5, 1e-5, f"value {v2}")
        else:
            s = a.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), loss="mse")
            ref = b.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), loss="mse", optimize=False)
            # the forward pass (the default training compile may rerun a pad in the backward pass)
            assert _ops(s)[:s.num_forward_steps].count("pad") == (1 if merged else 2), _ops(s)
            t = np.random.default_rng(6).standard_normal(s.output_shape).astype(np.float32)
            for _ in range(2):
                assert abs(s.step(x, t) - ref.step(x, t)) < 1e-4
            for k, v in b.state_dict().items():
                assert_close(a.state_dict()[k], v, 1e-4, 1e-5, k)


# ---- the cpu kernels in every activation layout ----
# A pad follows its input's layout, so a one-node graph (test_layouts._single) runs it plain: the input goes
# through a reorder node built into the graph (the layout pass keeps its from/to), which puts the pad (or, for
# the gradient, pad_grad on the same dy) in the layout under test.

LAYOUT_IDS = {"plain": 0, "nhwc": 1, "nChw16c": 2, "nChw8c": 3}


def _after_reorder(op, x, attrs, layout):
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    a = g.add_node("reorder", [xi], {"from": 0, "to": LAYOUT_IDS[layout]}, "to_layout")[0]
    g.set_outputs(g.add_node(op, [a], attrs, "node"))
    s = _core.Session(g, _core.ParamStore([]), "infer", layout="plain")
    s.run([x])
    k = [k for k in s.kernels() if k["op"] == op]
    assert len(k) == 1 and k[0]["impl"] == "native", s.kernels()
    assert k[0]["in_layouts"] == k[0]["out_layouts"] == [layout], k  # no reorder between them
    return s.fetch(0)


@pytest.mark.parametrize("layout", list(LAYOUT_IDS))
@pytest.mark.parametrize("c", [5, 20])
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_cpu_kernels_in_every_layout_match_reference(layout, c, value):
    """C = 5 and 20 leave padding lanes in the last channel block of nChw16c / nChw8c."""
    from test_layouts import _single
    x = np.random.default_rng(c).standard_normal((2, c, 4, 5)).astype(np.float32)
    attrs = {"pads": [1, 2, 3, 0], "value": value}
    ref_y, (ref_dx,) = _single("pad", [x], attrs, "plain", "reference", [0], dys_seed=c)
    dy = np.random.default_rng(c).standard_normal(ref_y.shape).astype(np.float32)  # _single's dy
    np.testing.assert_array_equal(ref_dx, dy[:, :, 1:5, 2:7])
    np.testing.assert_array_equal(_after_reorder("pad", x, attrs, layout), ref_y)
    np.testing.assert_array_equal(_after_reorder("pad_grad", dy, {"pads": attrs["pads"]}, layout), ref_dx)


def _conv_pad_conv(layout, backend, c, value):
    """x [2, 3, 6, 6] -> conv (c channels) -> pad (value, unfoldable) -> conv (8 channels) -> y, with the
    gradients of sum(y * dy) w.r.t. x and both weights."""
    r = np.random.default_rng(c)
    w1 = (r.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (r.standard_normal((8, c, 3, 3)) * 0.2).astype(np.float32)
    x = r.standard_normal((2, 3, 6, 6)).astype(np.float32)
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    w1i, w2i = g.add_input("w1", list(w1.shape)), g.add_input("w2", list(w2.shape))
    h = g.add_node("conv2d", [xi, w1i], {"padding": [1, 1]}, "conv1")[0]
    p = g.add_node("pad", [h], {"pads": [0, 0, 1, 1], "value": value}, "pad")[0]
    y = g.add_node("conv2d", [p, w2i], {"stride": [2, 2]}, "conv2")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, layout=layout, grad_of=y,
                      wrt=[xi, w1i, w2i])
    dy = r.standard_normal((2, 8, 3, 3)).astype(np.float32)
    s.run([x, w1, w2, dy])
    return s, [s.fetch(i) for i in range(4)]


@pytest.mark.parametrize("c", [20, 32])
def test_no_reorder_around_a_pad_between_blocked_convolutions(c):
    """A pad (value 1.5, so fold_pad keeps it) between two convolutions, trained in the blocked layout: the pad
    and pad_grad run in the layout the convolutions read and write (no reorder next to them) and the outputs
    and gradients match the reference backend; with c = 20 the second convolution reads the padding lanes the
    pad wrote."""
    s, got = _conv_pad_conv("blocked", "cpu", c, 1.5)
    _, want = _conv_pad_conv("plain", "reference", c, 1.5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    ks = {k["op"]: k for k in s.kernels()}
    blocked = ks["pad"]["in_layouts"][0]
    assert blocked in ("nChw16c", "nChw8c"), ks["pad"]
    for op in ("pad", "pad_grad"):
        assert ks[op]["in_layouts"] == ks[op]["out_layouts"] == [blocked], ks[op]
    sched = s.schedule()
    pad_at = [i for i, e in enumerate(sched) if e.split()[0] in ("pad", "pad_grad")]
    assert len(pad_at) == 2, sched
    for i in pad_at:  # the neighbours of pad and pad_grad are convolutions, not reorders
        assert not sched[i - 1].startswith("reorder") and not sched[i + 1].startswith("reorder"), sched
