"""Prepared weights (docs/ARCHITECTURE.md, "Prepared weights"): inference kernels keep conv weights reordered
and BatchNorm folded, rebuilt only when the ParamStore's version moved. Every way of changing the weights
between runs must be seen: each test changes them, runs the already-warm session and compares it with a
freshly compiled one (and the reference backend). Also: runs stay allocation-free, copies are not tracked,
and a write the version cannot see (through np.asarray) is caught by CNNNATIVE_CHECK_PREPARED."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn
from cnnnative.session import Session
from test_fusion import resnet_stack

TOL = dict(rtol=1e-4, atol=1e-4)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _warm(net, x, **kw):
    s = Session(net, x.shape, **kw)
    before = s.run(x)
    np.testing.assert_array_equal(s.run(x), before)  # second run: from the prepared weights
    return s, before


def _check_follows(s, net, x, before):
    after = s.run(x)
    assert not np.allclose(before, after, **TOL), "the change did not change the output"
    np.testing.assert_allclose(after, Session(net, x.shape).run(x), **TOL)
    np.testing.assert_allclose(after, Session(net, x.shape, backend="reference").run(x), **TOL)
    return after


def test_prepared_bytes_and_scratch():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    rep = Session(net, x.shape).memory_report()
    train = Session(net, x.shape, mode="train").memory_report()
    assert rep["prepared_bytes"] > 0  # every fused conv keeps its folded weights
    assert train["prepared_bytes"] == 0  # training reorders per step (the weights change every step)
    assert rep["persistent_bytes"] >= rep["param_bytes"] + rep["buffer_bytes"] + rep["prepared_bytes"]


WRITES = {
    "setitem": lambda net: net[3].conv2.weight.__setitem__(Ellipsis, net[3].conv2.weight * 0.5),
    "inplace_op": lambda net: net[0].weight.__imul__(-1.0),
    "subview": lambda net: net[3].conv1.weight[0].__setitem__(Ellipsis, 0.3),
    "reshape_view": lambda net: net[4].conv1.weight.reshape(-1).__setitem__(slice(0, 2000), 0.5),
    "copyto": lambda net: np.copyto(net[4].downsample[0].weight, 0.1),
    "ufunc_out": lambda net: np.add(net[0].weight, 1.0, out=net[0].weight),
    "ufunc_at": lambda net: np.add.at(net[0].weight.reshape(-1), [0, 1, 2], 1.0),
    "fill": lambda net: net[3].conv1.weight.fill(0.01),
    "flat": lambda net: net[3].conv1.weight.flat.__setitem__(slice(0, 100), 0.0),
    "bn_running_var": lambda net: net[1].running_var.__imul__(4.0),
    "bn_running_mean": lambda net: net[3].bn1.running_mean.__iadd__(1.0),
    "bn_gamma": lambda net: net[1].weight.__imul__(-1.0),
    "conv_bias": lambda net: net[0].bias.__iadd__(0.5),
    "state_dict_value": lambda net: net.state_dict()["3.bn2.bias"].__iadd__(0.7),
}


@pytest.mark.parametrize("how", sorted(WRITES))
def test_direct_writes_are_seen(how):
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    WRITES[how](net)
    _check_follows(s, net, x, before)


def test_assigning_a_new_parameter_is_seen():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    w = net[3].conv2.weight
    net[3].conv2.weight = nn.Parameter(np.full(w.shape, 0.05, np.float32))
    assert net[3].conv2.weight is w and np.all(w == np.float32(0.05))  # still the store's view
    _check_follows(s, net, x, before)


def test_load_state_dict_is_seen():
    net, other = resnet_stack(seed=0), resnet_stack(seed=7)
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    net.load_state_dict({k: np.array(v) for k, v in other.state_dict().items()})
    after = _check_follows(s, net, x, before)
    np.testing.assert_allclose(after, Session(other, x.shape).run(x), **TOL)


def test_training_session_sharing_the_store_is_seen():
    net = resnet_stack()
    x = _x((4, 3, 12, 12))
    s, before = _warm(net, x)
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.5, momentum=0.9))
    y = np.array([0, 1, 2, 3], np.int32)
    for _ in range(2):
        train.step(x, y)
        before = _check_follows(s, net, x, before)


def test_bn_running_stats_updated_by_training_are_seen():
    net = resnet_stack()
    x = _x((4, 3, 12, 12))
    s, before = _warm(net, x)
    params = {k: np.array(v) for k, v in net.named_parameters()}
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.0))
    train.step(x * 3 + 1, np.array([0, 1, 2, 3], np.int32))
    for k, v in net.named_parameters():  # lr=0: only the running statistics moved
        np.testing.assert_array_equal(v, params[k])
    _check_follows(s, net, x, before)


def test_a_failed_training_step_still_bumps():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    store = net._ensure_store()
    train = Session(net, x.shape, mode="train")
    v = store.version
    with pytest.raises(ValueError):
        train.step(x, np.array([0, 99], np.int32))  # label out of range
    assert store.version > v


def test_version_moves_only_on_writes():
    net = resnet_stack()
    store = net._ensure_store()
    v = store.version
    w = net[0].weight
    _ = w * 2, w.sum(), np.abs(w), w.copy(), np.array(w), w[0], w.reshape(-1)
    assert store.version == v
    c = w.copy()
    c[...] = 1  # a copy owns its memory: not tracked
    assert store.version == v
    assert isinstance(w * 2, nn.Parameter) and isinstance(net[1].running_var, cn.nn.Buffer)
    w[0, 0, 0, 0] = 1.0
    assert store.version == v + 1
    nn.Parameter(w)[0, 0, 0, 0] = 2.0  # a Parameter made from a view shares its memory: tracked
    assert store.version == v + 2 and w[0, 0, 0, 0] == 2.0


def test_no_allocation_per_run_when_weights_change():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape)
    s.run(x)
    before = cn.allocation_count()
    for i in range(3):
        net[0].weight[...] *= 1.01
        s.run(x)
    assert cn.allocation_count() == before


def test_layouts_and_unfused_convs_follow():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    for kw in (dict(optimize=False), dict(layout="nhwc"), dict(layout="plain"), dict(layout="nChw8c")):
        s = Session(net, x.shape, **kw)
        before = s.run(x)
        net[3].conv1.weight[...] *= -1.0
        after = s.run(x)
        assert not np.allclose(before, after, **TOL)
        np.testing.assert_allclose(after, Session(net, x.shape, backend="reference").run(x), **TOL)


class Deconv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 16, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return self.bn(self.up(self.conv(x)))


def test_grouped_conv_and_conv_transpose_follow():
    nn.manual_seed(3)
    net = Deconv()
    x = _x((2, 4, 8, 8))
    s, before = _warm(net, x)
    net.up.weight[...] *= 0.5
    net.conv.weight[:, 0] = 0.2
    _check_follows(s, net, x, before)


def test_float64_reference_session_follows():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape, backend="reference")
    s._s  # noqa: B018
    g = _core.Session(s.graph, net._ensure_store(), "infer", backend="reference", compute="float64")
    g.run([x.astype(np.float64)])
    before = g.fetch(0)
    net[0].weight[...] *= 2.0
    g.run([x.astype(np.float64)])
    after = g.fetch(0)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, Session(net, x.shape, backend="reference").run(x), **TOL)


def test_loaded_model_file_follows(tmp_path):
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    cn.io.save(net, tmp_path / "m.cnn", input_shape=x.shape)
    gm = cn.io.load(tmp_path / "m.cnn")
    s = gm.compile(x.shape)
    before = s.run(x)
    gm.state_dict()["0.weight"][...] *= -1.0
    after = s.run(x)
    assert not np.allclose(before, after, **TOL)
    np.testing.assert_allclose(after, gm.compile(x.shape).run(x), **TOL)


def test_cached_matches_per_call_preparation_exactly():
    """The fast path (prepared once) against the slow one (prepared every run): same kernels, same bits."""
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    for kw in ({}, dict(optimize=False), dict(layout="nhwc")):
        cached, percall = Session(net, x.shape, **kw), Session(net, x.shape, cache_weights=False, **kw)
        for i in range(3):
            np.testing.assert_array_equal(cached.run(x), percall.run(x))
            net[1].running_var[...] *= 1.5  # changes between runs: both follow, identically


def test_linear_weights_are_prepared_and_follow():
    nn.manual_seed(5)
    net = nn.Sequential(nn.Linear(256, 300), nn.ReLU(), nn.Linear(300, 64))
    x = _x((16, 256))
    s, before = _warm(net, x)
    assert s.memory_report()["prepared_bytes"] > 0  # oneDNN's blocked inner-product weights
    net[0].weight[:10] *= -2.0
    after = _check_follows(s, net, x, before)
    net[2].bias[...] += 1.0
    np.testing.assert_allclose(s.run(x), after + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s.run(x), Session(net, x.shape, cache_weights=False).run(x))


def test_lenet_follows():
    m = cn.models.lenet5(seed=1)
    x = _x((4, 1, 28, 28))
    s, before = _warm(m, x)
    m.fc1.weight[...] *= 0.5
    m.conv2.weight[...] *= -1.0
    _check_follows(s, m, x, before)


@pytest.mark.skipif(not cn.has_bf16(), reason="needs AVX512-BF16")
def test_bfloat16_inference_follows():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape, dtype="bfloat16")
    before = s.run(x)
    np.testing.assert_array_equal(s.run(x), before)
    net[3].conv2.weight[...] *= -1.0
    net[1].running_var[...] *= 3.0
    after = s.run(x)
    assert not np.allclose(before, after, rtol=5e-2, atol=5e-2)
    np.testing.assert_array_equal(after, Session(net, x.shape, dtype="bfloat16").run(x))
    np.testing.assert_array_equal(after, Session(net, x.shape, dtype="bfloat16", cache_weights=False).run(x))
