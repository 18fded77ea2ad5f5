"""Layout rules of concat / split, conv_transpose2d, upsample_nearest2d, lrn, adaptive_avg_pool2d, dropout and the
native avg_pool2d configuration:
each op forward and backward in every non-plain layout against the reference backend (plain), channel counts
that are not multiples of the block (so concat / split pieces straddle blocks and padding lanes exist), and the
concat-heavy models (DenseNet, GoogLeNet, U-Net) compiled with reorders only at the graph edges and the same
outputs / training steps as layout="plain"."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative.session import Session

from test_layouts import _reorders, _single

LAYOUTS = ["nChw16c", "nChw8c", "nhwc"]


def _n(r, shape, scale=1.0):
    return r.standard_normal(shape) * scale


CASES = {
    # concat along C: aligned (16 + 32), straddling blocks (24 + 32 + 5: pieces at channel 24 and 56), one input
    "concat_aligned": ("concat", lambda r: [_n(r, (2, 16, 3, 4)), _n(r, (2, 32, 3, 4))], {"axis": 1}, [0, 1]),
    "concat_straddle": ("concat", lambda r: [_n(r, (2, 24, 3, 3)), _n(r, (2, 32, 3, 3)), _n(r, (2, 5, 3, 3))],
                        {"axis": 1}, [0, 1, 2]),
    "concat_small": ("concat", lambda r: [_n(r, (3, 3, 2, 5)), _n(r, (3, 7, 2, 5)), _n(r, (3, 1, 2, 5))], {"axis": 1},
                     [0, 1, 2]),
    "concat_one": ("concat", lambda r: [_n(r, (2, 20, 3, 3))], {"axis": 1}, [0]),
    "concat_h": ("concat", lambda r: [_n(r, (2, 20, 2, 3)), _n(r, (2, 20, 4, 3))], {"axis": 2}, [0, 1]),
    "concat_w": ("concat", lambda r: [_n(r, (2, 6, 3, 2)), _n(r, (2, 6, 3, 5))], {"axis": -1}, [0, 1]),
    "concat_n": ("concat", lambda r: [_n(r, (1, 12, 3, 3)), _n(r, (2, 12, 3, 3))], {"axis": 0}, [0, 1]),
    "deconv_unet": ("conv_transpose2d", lambda r: [_n(r, (2, 32, 4, 4)), _n(r, (32, 16, 2, 2), 0.2), _n(r, 16)],
                    {"stride": [2, 2]}, [0, 1, 2]),
    "deconv_c5": ("conv_transpose2d", lambda r: [_n(r, (2, 5, 4, 4)), _n(r, (5, 20, 3, 3), 0.2)],
                  {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, [0, 1]),
    "deconv_grouped": ("conv_transpose2d", lambda r: [_n(r, (2, 16, 3, 3)), _n(r, (16, 6, 3, 3), 0.2), _n(r, 24)],
                       {"stride": [1, 1], "padding": [1, 1], "groups": 4}, [0, 1, 2]),
    "upsample": ("upsample_nearest2d", lambda r: [_n(r, (2, 20, 3, 4))], {"scale": [2, 3]}, [0]),
    "lrn_size5": ("lrn", lambda r: [_n(r, (2, 20, 3, 3))], {"size": 5, "alpha": 0.5, "beta": 0.75, "k": 1.0}, [0]),
    "lrn_size4": ("lrn", lambda r: [_n(r, (2, 21, 5, 3))], {"size": 4, "alpha": 0.8, "beta": 0.75, "k": 1.0}, [0]),
    "adaptive_divisible": ("adaptive_avg_pool2d", lambda r: [_n(r, (2, 20, 6, 6))], {"output": [3, 2]}, [0]),
    "adaptive_native": ("adaptive_avg_pool2d", lambda r: [_n(r, (2, 20, 7, 5))], {"output": [3, 4]}, [0]),
    "adaptive_upsizing": ("adaptive_avg_pool2d", lambda r: [_n(r, (2, 9, 3, 3))], {"output": [5, 5]}, [0]),
    "avg_pool_native": ("avg_pool2d", lambda r: [_n(r, (2, 20, 8, 7))],
                        {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "ceil_mode": 1}, [0]),
    "dropout": ("dropout", lambda r: [_n(r, (2, 20, 5, 3))], {"p": 0.4, "training": 1}, [0]),
    "dropout_eval": ("dropout", lambda r: [_n(r, (2, 20, 5, 3))], {"p": 0.4, "training": 0}, [0]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_in_layout_matches_reference(case, layout):
    op, make, attrs, wrt = CASES[case]
    arrays = make(np.random.default_rng(len(case)))
    ref_y, ref_g = _single(op, arrays, attrs, "plain", "reference", wrt)
    y, grads = _single(op, arrays, attrs, layout, "cpu", wrt)
    np.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-4)
    for i, (a, b) in enumerate(zip(grads, ref_g)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=f"d input {wrt[i]}")


def test_dropout_mask_is_the_same_in_every_layout():
    x = np.random.default_rng(0).standard_normal((2, 21, 4, 3)).astype(np.float32) + 3.0  # no zero inputs
    ys = {lay: _single("dropout", [x], {"p": 0.5, "training": 1}, lay, "cpu", [], grad=False)[0]
          for lay in ["plain"] + LAYOUTS}
    for lay in LAYOUTS:
        np.testing.assert_array_equal(ys[lay], ys["plain"], err_msg=lay)
    assert 0.3 < np.mean(ys["plain"] == 0) < 0.7


def _chain(layout, backend):
    """conv (20 ch) -> concat with conv (12 ch) -> deconv -> lrn -> upsample -> adaptive pool -> dropout -> split
    by the backward: every new rule on one path, pieces straddling blocks."""
    from cnnnative import _core
    r = np.random.default_rng(3)
    g = _core.Graph()
    x = g.add_input("x", [2, 3, 6, 6], "float32")
    ws = [r.standard_normal(s).astype(np.float32) * 0.3 for s in [(20, 3, 3, 3), (12, 3, 3, 3), (32, 16, 2, 2)]]
    wi = [g.add_input(f"w{i}", list(w.shape), "float32") for i, w in enumerate(ws)]
    a = g.add_node("conv2d", [x, wi[0]], {"padding": [1, 1]}, "a")[0]
    b = g.add_node("conv2d", [x, wi[1]], {"padding": [1, 1]}, "b")[0]
    c = g.add_node("concat", [a, b], {"axis": 1}, "cat")[0]
    d = g.add_node("conv_transpose2d", [c, wi[2]], {"stride": [2, 2]}, "up")[0]
    e = g.add_node("lrn", [d], {"size": 3, "alpha": 0.5}, "lrn")[0]
    f = g.add_node("upsample_nearest2d", [e], {"scale": [2, 2]}, "ups")[0]
    h = g.add_node("adaptive_avg_pool2d", [f], {"output": [5, 7]}, "pool")[0]
    y = g.add_node("dropout", [h], {"p": 0.3, "training": 1}, "drop")[0]
    g.set_outputs([y])
    feeds = [r.standard_normal((2, 3, 6, 6)).astype(np.float32)] + ws
    dy = r.standard_normal((2, 16, 5, 7)).astype(np.float32)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, layout=layout, grad_of=[y],
                      wrt=[x] + wi)
    s.run(feeds + [dy])
    return [s.fetch(i) for i in range(5)], s


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chain_of_new_ops_stays_in_layout(layout):
    ref, _ = _chain("plain", "reference")
    got, s = _chain(layout, "cpu")
    for i, (a, b) in enumerate(zip(got, ref)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4, err_msg=f"output {i}")
    # reorders only at the edges: dy in, the fetched output and the input gradient out (plus the input itself
    # where the stem convs read the 3-channel x in nhwc)
    assert len(_reorders(s)) <= 4, _reorders(s)


# ---- whole models: reorders only at the graph edges, same results as layout="plain" ----

def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Compiled only (kernels are built on the first run): name -> (builder, input shape, loss, max reorders infer,
# max reorders train). U-Net's 1-channel logits are reordered to plain for the fetch / the loss, and the loss
# gradient back; before the concat / deconvolution rules DenseNet-121 inference had 119 reorders, GoogLeNet 52.
FULL = {
    "densenet121": (lambda: cn.models.densenet121(seed=0), (1, 3, 64, 64), "cross_entropy", 0, 0),
    "googlenet": (lambda: cn.models.googlenet(seed=0), (1, 3, 64, 64), "cross_entropy", 0, 0),
    "unet": (lambda: cn.models.unet(seed=0), (1, 1, 32, 32), "mse", 1, 2),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_models_compile_with_reorders_only_at_the_edges(name):
    build, shape, loss, max_infer, max_train = FULL[name]
    m = build()
    assert len(_reorders(Session(m, shape, layout="nChw16c"))) <= max_infer
    train = Session(m, shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), loss=loss, layout="nChw16c")
    assert len(_reorders(train)) <= max_train


class _InceptionNet(cn.nn.Module):
    """Stem conv, one GoogLeNet Inception module (branches of 16 + 24 + 8 + 8 channels: the last two straddle
    nChw16c blocks), its ceil-mode max pool, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = cn.models.BasicConv2d(3, 32, kernel_size=3, padding=1)
        self.inc = cn.models.Inception(32, 16, 16, 24, 16, 8, 8)
        self.pool = cn.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg = cn.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = cn.nn.Linear(56, 10)

    def forward(self, x):
        return self.fc(self.avg(self.pool(self.inc(self.stem(x)))).flatten(1))


# name: (builder, input shape, loss, max reorders infer, max reorders train). The inception net's pooled [N, 56, 1, 1]
# is not byte-identical to plain in nChw16c (56 channels), so flatten reads a plain copy and its gradient goes back.
SMALL = {
    "densenet": (lambda: cn.models.DenseNet(32, (3, 2), 64, 4, 0.0, 10, True, 3), (2, 3, 8, 8), "cross_entropy", 0, 0),
    "inception": (_InceptionNet, (2, 3, 9, 9), "cross_entropy", 1, 2),
    "unet": (lambda: cn.models.UNet(in_channels=2, num_classes=1, depth=2, base=16), (2, 2, 16, 16), "mse", 1, 2),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_models_same_output_and_training_as_plain(name):
    build, shape, loss, max_infer, max_train = SMALL[name]
    x = _x(shape)
    res = {}
    for lay in ("plain", "nChw16c"):
        cn.nn.manual_seed(0)
        m = build()
        inf = Session(m, shape, layout=lay)
        s = Session(m, shape, mode="train", loss=loss, optimizer=cn.optim.SGD(lr=0.01, momentum=0.9), layout=lay)
        if lay != "plain":
            assert len(_reorders(inf)) <= max_infer, _reorders(inf)
            assert len(_reorders(s)) <= max_train, _reorders(s)
        y = (np.arange(shape[0]) % 10).astype(np.int32) if loss == "cross_entropy" else _x(s.output_shape, 1)
        out, losses = inf.run(x), [s.step(x, y)]
        before = cn.allocation_count()
        losses.append(s.step(x, y))
        inf.run(x)
        assert cn.allocation_count() == before  # kernels allocate nothing per run
        res[lay] = (out, losses, {k: np.array(v, copy=True) for k, v in m.state_dict().items()})
    np.testing.assert_allclose(res["nChw16c"][0], res["plain"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["nChw16c"][1], res["plain"][1], rtol=1e-4)
    for k, v in res["plain"][2].items():
        np.testing.assert_allclose(res["nChw16c"][2][k], v, rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "googlenet"])
def test_full_models_same_output_as_plain(name):
    m = FULL[name][0]()
    x = _x((2, 3, 64, 64))
    blocked = Session(m, x.shape, layout="nChw16c")
    np.testing.assert_allclose(blocked.run(x), Session(m, x.shape, layout="plain").run(x), rtol=1e-3, atol=1e-4)
