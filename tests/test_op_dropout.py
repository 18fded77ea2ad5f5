"""dropout (attrs p, training): y = x * mask / (1 - p) with a counter-based mask, and dropout_grad."""
import numpy as np
import pytest

from cnnnative import _core
from opcheck import check_op


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _session(shape, attrs, backend="cpu", seed=0, name="drop", mode="infer"):
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    outs = g.add_node("dropout", [x], attrs, name)
    g.set_outputs(outs)
    kw = dict(grad_of=[outs[0]], wrt=[x]) if mode == "grad" else {}
    return _core.Session(g, _core.ParamStore([]), mode, backend=backend, seed=seed, **kw)


def _run(s, *feeds):
    s.run(list(feeds))
    return [s.fetch(i) for i in range(len(s.fetches))]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fast_equals_reference_exactly(p):
    x = _x((3, 7, 11))
    a, b = _session(x.shape, {"p": p}, "cpu", seed=7), _session(x.shape, {"p": p}, "reference", seed=7)
    for _ in range(2):  # steps 0 and 1
        ya, ma = _run(a, x)
        yb, mb = _run(b, x)
        assert ma.dtype == np.uint8 and ma.shape == x.shape
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(ya, yb)


def test_output_is_masked_and_scaled():
    p = 0.3
    x = _x((4, 50), seed=1)
    y, m = _run(_session(x.shape, {"p": p}), x)
    assert set(np.unique(m)) <= {0, 1}
    np.testing.assert_allclose(y, x * m / (1 - p), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_mask_mean_is_keep_probability(p):
    shape = (400, 500)
    _, m = _run(_session(shape, {"p": p}, seed=3), np.ones(shape, np.float32))
    assert abs(m.mean() - (1 - p)) < 0.005  # 200k draws: std of the mean < 0.0012


def test_large_tensor_parallel_matches_reference_and_threads():
    shape = (300, 400)
    x = _x(shape, seed=2)
    y_ref, m_ref = _run(_session(shape, {"p": 0.4}, "reference", seed=11), x)
    old = _core.get_num_threads()
    try:
        for t in (1, max(2, old)):
            _core.set_num_threads(t)
            y, m = _run(_session(shape, {"p": 0.4}, "cpu", seed=11), x)
            np.testing.assert_array_equal(m, m_ref)
            np.testing.assert_array_equal(y, y_ref)
    finally:
        _core.set_num_threads(old)


def test_masks_differ_per_step_and_repeat_per_seed():
    x = np.ones((20, 30), np.float32)
    s1, s2 = _session(x.shape, {"p": 0.5}, seed=5), _session(x.shape, {"p": 0.5}, seed=5)
    m1_step0 = _run(s1, x)[1]
    m1_step1 = _run(s1, x)[1]
    m2_step0 = _run(s2, x)[1]
    assert (m1_step0 != m1_step1).any()
    np.testing.assert_array_equal(m1_step0, m2_step0)
    m_other_seed = _run(_session(x.shape, {"p": 0.5}, seed=6), x)[1]
    assert (m_other_seed != m1_step0).any()


def test_masks_differ_per_node():
    g = _core.Graph()
    x = g.add_input("x", [20, 30])
    ya, ma = g.add_node("dropout", [x], {"p": 0.5}, "drop1")
    yb, mb = g.add_node("dropout", [x], {"p": 0.5}, "drop2")
    g.set_outputs([ma, mb])
    s = _core.Session(g, _core.ParamStore([]), "infer", seed=0)
    s.run([np.ones((20, 30), np.float32)])
    assert (s.fetch(0) != s.fetch(1)).any()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_p_zero_is_identity(backend):
    x = _x((5, 6), seed=4)
    y, m = _run(_session(x.shape, {"p": 0.0}, backend), x)
    np.testing.assert_array_equal(m, np.ones_like(m))
    np.testing.assert_array_equal(y, x)
    y, m = _run(_session(x.shape, {"p": 0}, backend), x)  # an int attribute works too
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_eval_mode_copies(backend):
    x = _x((3, 4), seed=5)
    s = _session(x.shape, {"p": 0.5, "training": 0}, backend)
    assert len(s.fetches) == 1
    (y,) = _run(s, x)
    np.testing.assert_array_equal(y, x)


def test_dropout_grad_matches_numpy():
    rng = np.random.default_rng(6)
    dy = rng.standard_normal((4, 9)).astype(np.float32)
    mask = (rng.random((4, 9)) > 0.25).astype(np.uint8)
    check_op("dropout_grad", [dy, mask], {"p": 0.25}, numpy_ref=lambda dy, m: [dy * m / 0.75], grad=False)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_gradient_through_dropout_uses_the_runs_mask(backend):
    p = 0.4
    x = _x((6, 8), seed=7)
    dy = _x((6, 8), seed=8)
    s = _session(x.shape, {"p": p}, backend, seed=9, mode="grad")
    for _ in range(2):
        y, m, dx = _run(s, x, dy)
        np.testing.assert_allclose(dx, dy * m / (1 - p), rtol=1e-6, atol=0)
        np.testing.assert_allclose(y, x * m / (1 - p), rtol=1e-6, atol=0)


def test_runs_in_place_after_another_op():
    g = _core.Graph()
    x = g.add_input("x", [8, 16])
    (h,) = g.add_node("relu", [x], {}, "act")
    y, m = g.add_node("dropout", [h], {"p": 0.5}, "drop")
    g.set_outputs([y, m])
    xv = _x((8, 16), seed=10)
    for backend in ("cpu", "reference"):
        s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, seed=1)
        assert s.memory_report()["num_inplace"] >= 1
        s.run([xv])
        np.testing.assert_allclose(s.fetch(0), np.maximum(xv, 0) * s.fetch(1) / 0.5, rtol=1e-6, atol=0)


@pytest.mark.parametrize("attrs,msg", [({"p": 1.0}, r"p must be in \[0, 1\), got 1"),
                                       ({"p": -0.1}, r"p must be in \[0, 1\), got -0.1"),
                                       ({"p": 0.5, "training": 2}, r"training must be 0 or 1, got 2")])
def test_bad_attributes(attrs, msg):
    g = _core.Graph()
    x = g.add_input("x", [2, 3])
    with pytest.raises(_core.Error, match=r"op 'dropout' \(node 'drop'\): " + msg):
        g.add_node("dropout", [x], attrs, "drop")
