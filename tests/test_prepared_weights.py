"""Prepared weights (docs/ARCHITECTURE.md, "Prepared weights"): inference kernels keep conv weights reordered
and BatchNorm folded, rebuilt only when the ParamStore's version moved. Every way of changing the weights
between runs must be seen: each test changes them (inside `with cn.no_grad():`, through load_state_dict, a
training session, ...), runs the already-warm session and compares it with a freshly compiled one (and the
reference backend). Every write outside the edit context is refused (read-only arrays) and leaves the
session's output as it was. Also: runs stay allocation-free, reads and copies do not move the version."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn
from cnnnative.session import Session
from test_fusion import BasicBlock, resnet_stack

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
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01)).memory_report()
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
def test_direct_writes_are_refused_outside_and_seen_inside_the_context(how):
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    snapshot = {k: np.array(v) for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="read-only"):
        WRITES[how](net)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)
    np.testing.assert_array_equal(s.run(x), before)
    with cn.no_grad():
        WRITES[how](net)
    _check_follows(s, net, x, before)


@pytest.mark.parametrize("how", ["setitem", "subview", "bn_running_var"])
def test_model_edit_is_the_same_context(how):
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    with net.edit():
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
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01))
    v = store.version
    with pytest.raises(ValueError):
        train.step(x, np.array([0, 99], np.int32))  # label out of range
    assert store.version > v


def test_plain_arrays_made_from_a_parameter_are_read_only_and_weights_changed_covers_raw_writes():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    raw = np.asarray(net[3].conv2.weight)  # a plain ndarray over the store: read-only as its source
    assert type(raw) is np.ndarray and not raw.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        raw *= 0.5
    # a plain view taken inside the context keeps the writeable flag it was made with (numpy copies the flag
    # into a new view): a write through it after the context is behind the library's back, like a write
    # through a raw pointer, and needs weights_changed()
    with cn.no_grad():
        raw = np.asarray(net[3].conv2.weight)
    assert raw.flags.writeable and not net[3].conv2.weight.flags.writeable
    raw *= 0.5
    net[3].weights_changed()  # on the submodule that owns the weight: enough
    _check_follows(s, net, x, before)


def test_version_moves_only_when_an_edit_context_is_left():
    net = resnet_stack()
    store = net._ensure_store()
    v = store.version
    w = net[0].weight
    _ = w * 2, w.sum(), np.abs(w), w.copy(), np.array(w), w[0], w.reshape(-1)
    assert store.version == v
    c = w.copy()
    c[...] = 1  # a copy owns its memory: writeable, not the model's
    assert c.flags.writeable and store.version == v
    assert isinstance(w * 2, nn.Parameter) and isinstance(net[1].running_var, cn.nn.Buffer)
    with cn.no_grad():
        w[0, 0, 0, 0] = 1.0
        nn.Parameter(w)[0, 0, 0, 0] = 2.0  # a Parameter made from a parameter is a view of it
        assert store.version == v  # the version moves when the context is left, once
    assert store.version == v + 1 and w[0, 0, 0, 0] == 2.0


def test_no_allocation_per_run_when_weights_change():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape)
    s.run(x)
    before = cn.allocation_count()
    for i in range(3):
        with cn.no_grad():
            net[0].weight[...] *= 1.01
        s.run(x)
    assert cn.allocation_count() == before


def test_layouts_and_unfused_convs_follow():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    for kw in (dict(optimize=False), dict(layout="nhwc"), dict(layout="plain"), dict(layout="nChw8c")):
        s = Session(net, x.shape, **kw)
        before = s.run(x)
        with cn.no_grad():
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
    with cn.no_grad():
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
    with cn.no_grad():
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
    assert all(not v.flags.writeable for v in gm.state_dict().values() if v.dtype == np.float32)
    with pytest.raises(ValueError, match="read-only"):
        gm.state_dict()["0.weight"][...] *= -1.0
    np.testing.assert_array_equal(s.run(x), before)
    with cn.no_grad():
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
            with cn.no_grad():
                net[1].running_var[...] *= 1.5  # changes between runs: both follow, identically


def test_linear_weights_are_prepared_and_follow():
    nn.manual_seed(5)
    net = nn.Sequential(nn.Linear(256, 300), nn.ReLU(), nn.Linear(300, 64))
    x = _x((16, 256))
    s, before = _warm(net, x)
    assert s.memory_report()["prepared_bytes"] > 0  # oneDNN's blocked inner-product weights
    with cn.no_grad():
        net[0].weight[:10] *= -2.0
    after = _check_follows(s, net, x, before)
    with cn.no_grad():
        net[2].bias[...] += 1.0
    np.testing.assert_allclose(s.run(x), after + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s.run(x), Session(net, x.shape, cache_weights=False).run(x))


def test_lenet_follows():
    m = cn.models.lenet5(seed=1)
    x = _x((4, 1, 28, 28))
    s, before = _warm(m, x)
    with cn.no_grad():
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
    with cn.no_grad():
        net[3].conv2.weight[...] *= -1.0
        net[1].running_var[...] *= 3.0
    after = s.run(x)
    assert not np.allclose(before, after, rtol=5e-2, atol=5e-2)
    np.testing.assert_array_equal(after, Session(net, x.shape, dtype="bfloat16").run(x))
    np.testing.assert_array_equal(after, Session(net, x.shape, dtype="bfloat16", cache_weights=False).run(x))


# ---- explicit ownership: read-only by default, writeable inside the edit context ----
def _handed_out(net, state_dict=True):
    """Every way the library hands out a model's parameters and buffers (state_dict() makes the store)."""
    out = [("attr", net[0].weight), ("attr", net[1].running_var)]
    if state_dict:
        out += [(f"state_dict {k}", v) for k, v in net.state_dict().items() if v.dtype == np.float32]
    out += [(f"named_parameters {k}", v) for k, v in net.named_parameters()]
    out += [(f"named_buffers {k}", v) for k, v in net.named_buffers()]
    out += [("parameters", p) for p in net.parameters()] + [("buffers", b) for b in net.buffers()]
    store = net._store_record().store if net._store_record() is not None else None
    if store is not None:
        out += [(f"ParamStore.array {n}", store.array(n)) for n in store.names()]
    return out


def _views(w):
    """Views of views of a handed-out array, each made from the one before where it can be."""
    v0 = w[0]
    return [v0, v0[1], w.T, w.T[1:], w.reshape(-1), w.reshape(-1)[3:7], w.ravel(), w[None], w[:, :1].squeeze(1),
            nn.Parameter(w), nn.Parameter(w)[1:], w.view(np.float32)]


@pytest.mark.parametrize("compiled", [False, True])
def test_every_handed_out_array_is_read_only_outside_and_writeable_inside(compiled):
    nn.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), BasicBlock(16, 16))
    if compiled:
        Session(net, (2, 3, 12, 12)).run(_x((2, 3, 12, 12)))
    else:
        assert net._store_record() is None
    arrays = _handed_out(net, state_dict=compiled)
    assert net._store_record() is None or compiled  # no store made: these are the arrays the modules built
    assert len(arrays) > 20
    for what, a in arrays:
        assert not a.flags.writeable, what
        with pytest.raises(ValueError, match="read-only"):
            a.reshape(-1)[0] = 1.0
        base = a
        while isinstance(base, np.ndarray):  # no ndarray under it takes a write either (p.base[...] = x)
            assert not base.flags.writeable, what
            base = base.base
    with cn.no_grad():
        assert all(a.flags.writeable for _, a in arrays)
        made_inside = [net[0].weight[1], net[3].bn2.bias[:2]]
        assert all(v.flags.writeable for v in made_inside)
    assert not any(a.flags.writeable for _, a in arrays)
    assert not any(v.flags.writeable for v in made_inside)  # views made inside turn read-only too


def test_views_of_views_follow_the_context_and_write_the_model():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    w = net[3].conv1.weight
    views = _views(w)
    for v in views:
        assert not v.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            v[...] = 0
    np.testing.assert_array_equal(s.run(x), before)
    with cn.no_grad():
        assert all(v.flags.writeable for v in views)
        views[1][...] = 0.25  # w[0][1]
        assert np.all(w[0, 1] == 0.25)
        views[3][...] = -0.5  # w.T[1:]: w[..., 1:]
        assert np.all(w[..., 1:] == -0.5) and np.all(w[0, 1, :, 0] == 0.25)
        views[5][...] = 2.0  # w.reshape(-1)[3:7]
        views[10][-1] = 7.0  # nn.Parameter(w)[1:]: w[-1]
    assert not any(v.flags.writeable for v in views)
    assert np.all(w.reshape(-1)[3:7] == 2.0) and np.all(w[-1] == 7.0)
    _check_follows(s, net, x, before)


def test_a_run_inside_the_context_sees_the_writes_made_in_it():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    with cn.no_grad():
        net[3].conv2.weight[...] *= -1.0
        first = s.run(x)  # the prepared weights are rebuilt on every run while a context is open
        np.testing.assert_allclose(first, Session(net, x.shape).run(x), **TOL)
        net[1].running_var[...] *= 4.0
        second = s.run(x)
        assert not np.allclose(first, second, **TOL)
        np.testing.assert_allclose(second, Session(net, x.shape).run(x), **TOL)
    np.testing.assert_array_equal(s.run(x), second)


def test_nested_contexts_stay_writeable_until_the_outermost_is_left():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    store = net._ensure_store()
    w = net[0].weight
    v = store.version
    with cn.no_grad():
        with net.edit():
            w[...] *= 2.0
        assert w.flags.writeable and store.version == v + 1  # every exit bumps: prepared weights rebuilt
        mid = s.run(x)
        with cn.no_grad():
            w[...] *= -1.0
        assert w.flags.writeable
        w[0] = 0.0
    assert not w.flags.writeable and store.version >= v + 2
    assert not np.allclose(mid, before, **TOL)
    _check_follows(s, net, x, mid)


def test_an_exception_inside_restores_read_only_and_keeps_the_writes_made():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    store = net._ensure_store()
    v = store.version

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with cn.no_grad():
            with cn.no_grad():
                net[3].conv2.weight[...] *= -1.0
                raise Boom()
    assert not cn._params.editing()
    assert not net[3].conv2.weight.flags.writeable and store.version > v
    with pytest.raises(ValueError, match="read-only"):
        net[3].conv2.weight[...] = 0
    _check_follows(s, net, x, before)  # the write made before the exception is in the prepared weights


def test_arrays_taken_before_compile():
    nn.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 5))
    w, b, rv = net[0].weight, net[4].bias, net[1].running_var
    wv = w[0]  # a view taken before compile, too
    for a in (w, b, rv, wv):
        assert not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        w[...] = 0
    with cn.no_grad():  # before compile: these are the model's arrays, writeable in the context
        wv[...] = 0.5
        b[...] = 3.0
        rv[...] = 4.0
    assert not any(a.flags.writeable for a in (w, b, rv, wv))
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape)
    assert np.all(net[0].weight[0] == 0.5) and np.all(net[4].bias == 3.0) and np.all(net[1].running_var == 4.0)
    before = s.run(x)
    # compile moved the parameters into the model's ParamStore: the arrays taken before are no longer the
    # model's, so they stay read-only for good (a write to them could not reach the model) and say why
    with cn.no_grad():
        for a in (w, b, rv, wv):
            assert not a.flags.writeable
        with pytest.raises(ValueError, match=r"read-only: this array is no longer the model's parameter.*take the "
                                             r"parameter again"):
            w[...] = 0
        with pytest.raises(ValueError, match="read-only: this array is no longer the model's parameter"):
            w *= 2.0
        with pytest.raises(ValueError, match="read-only"):
            wv[...] = 0
        net[4].bias[...] = -3.0  # the attribute, taken again, is the store's view
    np.testing.assert_allclose(s.run(x), before - 6.0, rtol=1e-5, atol=1e-4)


def test_contexts_are_process_wide_across_threads():
    """numpy's writeable flag is per array: a context open in one thread makes the arrays writeable in all of
    them, and they turn read-only when the last context of any thread is left."""
    import threading

    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    w = net[0].weight
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def editor():
        with cn.no_grad():
            entered.set()
            release.wait(30)
        done.set()

    t = threading.Thread(target=editor)
    t.start()
    assert entered.wait(30)
    try:
        assert w.flags.writeable  # open in the other thread: writeable here too
        with cn.no_grad():  # a context of this thread overlapping the other's
            w[...] *= -1.0
        assert w.flags.writeable  # the other thread's context is still open
    finally:
        release.set()
        t.join(30)
    assert done.is_set() and not w.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        w[...] = 0
    _check_follows(s, net, x, before)


def test_contexts_entered_and_left_by_many_threads_end_read_only():
    import threading

    net = resnet_stack()
    arrays = [a for _, a in _handed_out(net)]
    barrier = threading.Barrier(4)
    errors = []

    def worker(i):
        try:
            barrier.wait(30)
            for _ in range(50):
                with cn.no_grad():
                    net[3 + i % 2].bn1.running_mean[i] += 1.0  # distinct elements: no lost updates
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    before = np.array(net[3].bn1.running_mean), np.array(net[4].bn1.running_mean)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not cn._params.editing() and not any(a.flags.writeable for a in arrays)
    np.testing.assert_array_equal(net[3].bn1.running_mean[[0, 2]], before[0][[0, 2]] + 50)
    np.testing.assert_array_equal(net[4].bn1.running_mean[[1, 3]], before[1][[1, 3]] + 50)


def test_library_writers_need_no_context():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s, before = _warm(net, x)
    nn.init.constant_(net[1].weight, -1.0)  # the init functions write as torch's do (under no_grad)
    assert not net[1].weight.flags.writeable
    before = _check_follows(s, net, x, before)
    net.load_state_dict({k: np.array(v) * 0.5 if v.dtype == np.float32 else v for k, v in net.state_dict().items()})
    before = _check_follows(s, net, x, before)
    net[0].weight = nn.Parameter(np.full(net[0].weight.shape, 0.01, np.float32))  # copied into the store
    net[1].running_var = np.full(net[1].running_var.shape, 2.0, np.float32)
    _check_follows(s, net, x, before)
    assert not any(a.flags.writeable for _, a in _handed_out(net))


def test_optimizer_updates_read_only_parameters_and_state_dict_round_trips():
    net = resnet_stack()
    x = _x((4, 3, 12, 12))
    y = np.array([0, 1, 2, 3], np.int32)
    s, before = _warm(net, x)
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.Adam(lr=1e-2))
    start = {k: np.array(v) for k, v in net.state_dict().items()}
    for _ in range(2):
        train.step(x, y)
    assert not any(a.flags.writeable for _, a in _handed_out(net))
    assert any(not np.array_equal(v, start[k]) for k, v in net.state_dict().items())
    _check_follows(s, net, x, before)
    # round trip: into a fresh model (its arrays read-only too), compiled: same outputs
    other = resnet_stack(seed=9)
    other.load_state_dict({k: np.array(v) for k, v in net.state_dict().items()})
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, net.state_dict()[k], err_msg=k)
        assert v.dtype != np.float32 or not v.flags.writeable
    np.testing.assert_array_equal(Session(other, x.shape).run(x), s.run(x))


def test_copies_of_a_module_own_read_only_arrays():
    import copy
    import pickle

    net = resnet_stack()
    Session(net, (2, 3, 12, 12))
    for c in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        arrays = [a for _, a in _handed_out(c)]
        assert arrays and not any(a.flags.writeable for a in arrays)
        with cn.no_grad():
            c[0].bias[...] = 9.0
        assert not np.any(net[0].bias == 9.0)  # independent of the original


def test_no_grad_is_exported_documented_and_a_decorator():
    assert cn.no_grad is nn.no_grad and "read-only" in cn.no_grad.__doc__ and "thread" in cn.no_grad.__doc__
    net = resnet_stack()

    @cn.no_grad()
    def zero_bias(model):
        model[0].bias[...] = 0

    zero_bias(net)
    assert np.all(net[0].bias == 0) and not net[0].bias.flags.writeable
