"""Activation layouts on the cpu backend (core/layout.cpp): nChw16c / nhwc between layout-capable kernels,
explicit reorders where they meet plain-only ones, plain graph inputs/outputs. Every layout must agree with
the reference backend (always plain) for inference, training steps and single-op gradients; buffers are sized
by layout (blocked layouts pad C); steps allocate nothing."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn
from cnnnative.session import Session

from test_fusion import resnet_stack

LAYOUTS = ["auto", "nChw8c", "nhwc"]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _labels(n, k, seed=0):
    return np.random.default_rng(seed).integers(0, k, n).astype(np.int32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lenet_training_steps_match_reference(layout):
    x, y = _x((16, 1, 28, 28)), _labels(16, 10)
    res = {}
    for backend, lay in (("reference", "plain"), ("cpu", layout)):
        m = cn.models.lenet5(seed=0)
        s = Session(m, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), backend=backend, layout=lay)
        res[backend] = ([s.step(x, y) for _ in range(3)], {k: v.copy() for k, v in m.state_dict().items()})
    np.testing.assert_allclose(res["cpu"][0], res["reference"][0], rtol=1e-4)
    for k, v in res["reference"][1].items():
        np.testing.assert_allclose(res["cpu"][1][k], v, rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_resnet_block_training_step_matches_reference(layout):
    x, y = _x((4, 3, 12, 12)), _labels(4, 5)
    res = {}
    for backend, lay in (("reference", "plain"), ("cpu", layout)):
        net = resnet_stack(seed=1)
        s = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), backend=backend, layout=lay)
        losses = [s.step(x, y) for _ in range(2)]
        res[backend] = (losses, {k: np.array(v, copy=True) for k, v in net.state_dict().items()})
    np.testing.assert_allclose(res["cpu"][0], res["reference"][0], rtol=1e-4)
    for k, v in res["reference"][1].items():
        np.testing.assert_allclose(res["cpu"][1][k], v, rtol=2e-3, atol=2e-5, err_msg=k)


@pytest.mark.parametrize("layout", LAYOUTS + ["plain"])
@pytest.mark.parametrize("optimize", [True, False])
def test_resnet_inference_matches_reference(layout, optimize):
    net = resnet_stack(seed=2)
    x = _x((3, 3, 12, 12))
    s = Session(net, x.shape, layout=layout, optimize=optimize)
    np.testing.assert_allclose(s.run(x), Session(net, x.shape, backend="reference").run(x), rtol=1e-4, atol=1e-4)


def _reorders(sess):
    return [e.split()[1] for e in sess.schedule() if e.startswith("reorder ")]


def test_reorders_only_at_the_edges():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    for mode in ("infer", "train"):
        opt = {"optimizer": cn.optim.SGD(lr=0.01)} if mode == "train" else {}
        assert _reorders(Session(net, x.shape, mode=mode, layout="plain", **opt)) == []
        # the stem conv reads the plain 3-channel input (oneDNN's choice); every 16/32-channel activation is
        # nChw16c; the pooled [N, 32, 1, 1] is byte-identical to plain, so flatten reads it without a reorder
        assert _reorders(Session(net, x.shape, mode=mode, layout="nChw16c", **opt)) == []
        # nhwc: the input is reordered once (3 channels: nhwc differs from plain)
        assert _reorders(Session(net, x.shape, mode=mode, layout="nhwc", **opt)) == ["x@nhwc"]
    # LeNet: the plain-only flatten gets a plain copy of pool2's output; conv2 (6 input channels) reads plain
    lenet = Session(cn.models.lenet5(), (4, 1, 28, 28), layout="nChw16c")
    assert _reorders(lenet) == ["pool1@plain", "pool2@plain"]


def test_lenet_training_reorders_only_where_the_bytes_differ():
    # The default (auto) LeNet-5 b32 training step: conv2 (oneDNN) writes nChw16c and pool2 follows it. With 16
    # channels nChw16c is byte for byte nhwc, so oneDNN's weight gradient reads pool2's gradient as nhwc without a
    # copy, and the native data gradient (the batch in the lanes, from 16 images) reads it as it is, not in plain.
    # What is left: pool1's 6-channel output in nhwc for that weight gradient, pool2's output in plain for the
    # plain-only flatten, and flatten's gradient back in nChw16c for pool2's gradient.
    m = cn.models.lenet5(seed=0)
    s = Session(m, (32, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), batch_pieces=False)
    assert sorted(_reorders(s)) == ["flatten/grad@nChw16c", "pool1@nhwc", "pool2@plain"]
    # (pool1's nhwc copy stays: with 6 channels nhwc and nChw16c differ; test_lenet_training_steps_match_reference
    # runs the same model at b16 in every layout against the reference backend)


def test_blocked_layout_pads_channels_and_sizes_buffers_by_layout():
    m = cn.models.lenet5(seed=0)
    shape = (8, 1, 28, 28)
    plain = Session(m, shape, layout="plain", optimize=False).memory_report()
    blocked = Session(m, shape, layout="nChw16c", optimize=False).memory_report()
    # conv1's 6 channels are padded to 16 in nChw16c: [8, 16, 28, 28] floats instead of [8, 6, 28, 28]
    assert blocked["naive_bytes"] - plain["naive_bytes"] >= 8 * 10 * 28 * 28 * 4
    x = _x(shape)
    ref = Session(m, shape, backend="reference").run(x)
    for lay in ("nChw16c", "nChw8c", "nhwc", "auto"):
        np.testing.assert_allclose(Session(m, shape, layout=lay).run(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["auto", "nhwc"])
def test_steps_allocate_nothing_with_layouts(layout):
    net = resnet_stack()
    x, y = _x((2, 3, 12, 12)), _labels(2, 5)
    s = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), layout=layout)
    s.step(x, y)
    i = Session(net, x.shape, layout=layout)
    i.run(x)
    before = cn.allocation_count()
    for _ in range(3):
        s.step(x, y)
        i.run(x)
    assert cn.allocation_count() == before


def test_plain_only_op_between_capable_ones():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            # count_include_pad with a ceil-mode window past the padded border: the native kernel (any layout)
            self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.drop = nn.Dropout(0.3)  # layout-capable, seeded: same mask as the reference
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = self.conv1(x).reshape(4, 16, 8, 8)  # reshape: reference kernel only, plain-only
            x = self.drop(self.conv2(self.avg(x).relu()).relu())
            return self.fc(self.pool(x).flatten(1))

    x, y = _x((4, 3, 8, 8)), _labels(4, 4)
    res = {}
    for backend, lay in (("reference", "plain"), ("cpu", "blocked")):
        nn.manual_seed(0)
        net = Net()
        s = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1), backend=backend, layout=lay, seed=3)
        res[backend] = ([s.step(x, y) for _ in range(2)], net.state_dict()["conv1.weight"].copy())
        if backend == "cpu":
            assert any(r.startswith("conv1@plain") for r in _reorders(s))
    np.testing.assert_allclose(res["cpu"][0], res["reference"][0], rtol=1e-4)
    np.testing.assert_allclose(res["cpu"][1], res["reference"][1], rtol=1e-3, atol=1e-5)


def test_unknown_layout_is_a_clear_error():
    with pytest.raises(cn.Error, match=r"unknown layout 'nchw16' \(auto, blocked, nChw16c, nChw8c, nhwc, plain\)"):
        Session(cn.models.lenet5(), (1, 1, 28, 28), layout="nchw16")


# ---- single ops in every layout, forward and backward, against the reference backend ----

_LAYOUT_ID = {"nhwc": 1, "nChw16c": 2, "nChw8c": 3}


def _single(op, arrays, attrs, layout, backend, wrt, dys_seed=0, grad=True):
    """One node run alone (forward, and with grad the gradients wrt inputs `wrt`). In a non-plain layout its
    activation inputs (4-D, the batch and spatial dims of input 0) arrive through `reorder` nodes into that
    layout and a 4-D output leaves through one, so an op whose layout rule follows its input runs in the layout
    under test, not plain, and so does its backward op (the output gradient arrives in that layout)."""
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(a.shape), "float32") for i, a in enumerate(arrays)]
    args = list(ids)
    x0 = arrays[0].shape
    if backend == "cpu" and layout in _LAYOUT_ID and len(x0) == 4:
        for i, a in enumerate(arrays):
            if a.ndim == 4 and a.shape[0] == x0[0] and a.shape[2:] == x0[2:]:
                args[i] = g.add_node("reorder", [ids[i]], {"from": 0, "to": _LAYOUT_ID[layout]}, f"to_{layout}{i}")[0]
    outs = g.add_node(op, args, attrs, "node")
    if args != ids and len(g.shape(outs[0])) == 4:
        outs = g.add_node("reorder", [outs[0]], {"from": _LAYOUT_ID[layout], "to": 0}, "to_plain") + outs[1:]
    g.set_outputs(outs[:1])
    fwd = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, layout=layout)
    feeds = [a.astype(np.float32) for a in arrays]
    fwd.run(feeds)
    y = fwd.fetch(0)
    if not grad:
        return y, []
    dy = np.random.default_rng(dys_seed).standard_normal(y.shape).astype(np.float32)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, layout=layout, grad_of=outs[:1],
                      wrt=[ids[i] for i in wrt])
    s.run(feeds + [dy])
    return y, [s.fetch(1 + j) for j in range(len(wrt))]


def _bn_inputs(rng, c):
    return [rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c), rng.uniform(-0.3, 0.3, c), rng.uniform(0.5, 2, c)]


CASES = {
    "conv_c6": ("conv2d", lambda r: [r.standard_normal((2, 6, 7, 7)), r.standard_normal((20, 6, 3, 3)), r.standard_normal(20)],
                {"padding": [1, 1]}, [0, 1, 2]),
    "conv_c32_stride2": ("conv2d", lambda r: [r.standard_normal((2, 32, 8, 8)), r.standard_normal((16, 32, 3, 3)) * 0.2],
                         {"padding": [1, 1], "stride": [2, 2]}, [0, 1]),
    "conv_grouped": ("conv2d", lambda r: [r.standard_normal((2, 16, 6, 6)), r.standard_normal((16, 4, 3, 3))],
                     {"padding": [1, 1], "groups": 4}, [0, 1]),
    "max_pool": ("max_pool2d", lambda r: [r.standard_normal((2, 20, 7, 7))],
                 {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "training": 1}, [0]),
    "avg_pool_ceil": ("avg_pool2d", lambda r: [r.standard_normal((2, 16, 7, 7))],
                      {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": 1}, [0]),
    "global_avg_pool": ("global_avg_pool", lambda r: [r.standard_normal((2, 24, 5, 5))], {}, [0]),
    "batch_norm_train": ("batch_norm", lambda r: [r.standard_normal((3, 20, 4, 4))] + _bn_inputs(r, 20),
                         {"training": 1, "eps": 1e-5, "momentum": 0.1}, [0, 1, 2]),
    "relu": ("relu", lambda r: [r.standard_normal((2, 18, 5, 5))], {}, [0]),
    "leaky_relu": ("leaky_relu", lambda r: [r.standard_normal((2, 16, 5, 5))], {"negative_slope": 0.2}, [0]),
    "add": ("add", lambda r: [r.standard_normal((2, 10, 3, 3)), r.standard_normal((2, 10, 3, 3))], {}, [0, 1]),
}


@pytest.mark.parametrize("layout", ["nChw16c", "nChw8c", "nhwc"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_single_op_in_layout_matches_reference(case, layout):
    op, make, attrs, wrt = CASES[case]
    arrays = make(np.random.default_rng(len(case)))
    ref_y, ref_g = _single(op, arrays, attrs, "plain", "reference", wrt)
    y, grads = _single(op, arrays, attrs, layout, "cpu", wrt)
    np.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-4)
    for i, (a, b) in enumerate(zip(grads, ref_g)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=f"d input {wrt[i]}")


def test_reorder_op_reference_kernel_round_trips():
    x = _x((2, 5, 3, 4))
    for to in (1, 2, 3):  # nhwc, nChw16c, nChw8c
        g = _core.Graph()
        i = g.add_input("x", list(x.shape))
        a = g.add_node("reorder", [i], {"from": 0, "to": to}, "a")[0]
        b = g.add_node("reorder", [a], {"from": to, "to": 0}, "b")
        g.set_outputs(b)
        for backend in ("reference", "cpu"):
            s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, layout="plain")
            s.run([x])
            np.testing.assert_array_equal(s.fetch(0), x)


@pytest.mark.parametrize("trailing", [True, False])
@pytest.mark.parametrize("layout,backend", [("auto", "cpu"), ("plain", "cpu"), ("nhwc", "cpu"), ("auto", "reference")])
def test_explicit_reorder_nodes_in_a_built_graph_keep_their_layouts(layout, backend, trailing):
    # A graph built by hand with reorder nodes: the pass must treat their `from`/`to` as the layouts of their
    # input and output (it used to take the output as plain, so the BN below read blocked data as NCHW, or,
    # with layout='plain', wrote a blocked output into a plain-sized buffer).
    from cnnnative import _core
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    mean, var = rng.standard_normal(5).astype(np.float32), rng.random(5).astype(np.float32) + 0.5
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    store = _core.ParamStore([("w", [5], True), ("b", [5], True), ("m", [5], False), ("v", [5], False)])
    ps = [g.add_param(n, [5], t) for n, t in (("w", True), ("b", True), ("m", False), ("v", False))]
    blocked = g.add_node("reorder", [xi], {"from": 0, "to": 2}, "to_blocked")[0]
    y = g.add_node("batch_norm", [blocked, *ps], {"training": 0, "eps": 1e-5}, "bn")[0]
    g.set_outputs([g.add_node("reorder", [y], {"from": 2, "to": 0}, "to_plain")[0] if trailing else y])
    with cn.no_grad():
        for name, val in (("w", 1.5), ("b", 0.25)):
            store.array(name)[...] = val
        store.array("m")[...] = mean
        store.array("v")[...] = var
    s = _core.Session(g, store, "infer", layout=layout, backend=backend)
    s.run([x])
    want = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5) * 1.5 + 0.25
    np.testing.assert_allclose(s.fetch(0), want, rtol=1e-5, atol=1e-5)
